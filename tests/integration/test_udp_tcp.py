"""Issue 6: UDP <-> TCP. A relayed request too large for UDP goes over TCP
(RFC 3261 §18.1.1), back to UDP when TCP fails; a TCP caller reaches a UDP
callee with a double Record-Route (acceptance 2, TCP part) and the callee's
BYE comes back over the caller's connection. Real sockets on both sides; the
proxy is tests/apps/stateful_proxy.py."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import (
    ROOT,
    UdpPeer,
    free_port,
    header,
    options_counters,
    sip_answer,
    sip_request,
    status_of,
)

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"
BIG_BODY = b"v=0\r\n" + b"".join(b"a=x-pad:%04d%s\r\n" % (i, b"x" * 60) for i in range(24))


class TcpConn:
    """One SIP stream connection: reads whole messages (Content-Length framing)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5.0)
        self.buf = b""
        self.port = sock.getsockname()[1]

    @classmethod
    def connect(cls, addr: tuple[str, int]) -> TcpConn:
        return cls(socket.create_connection(addr, timeout=5.0))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(header(head + b"\r\n\r\n", "Content-Length") or 0)
        while len(rest) < length:
            self._fill()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def _fill(self) -> None:
        chunk = self.sock.recv(65535)
        assert chunk, f"connection closed; unread: {self.buf!r}"
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class DualPeer:
    """A UAS on one port for both UDP and (optionally) TCP, like a phone
    that listens on both transports."""

    def __init__(self, tcp: bool = True) -> None:
        self.port = free_port()
        self.udp = UdpPeer(port=self.port)
        self.listener: socket.socket | None = None
        if tcp:
            self.listener = socket.create_server(("127.0.0.1", self.port))
            self.listener.settimeout(5.0)

    def accept(self, timeout: float = 5.0) -> TcpConn | None:
        assert self.listener is not None
        self.listener.settimeout(timeout)
        try:
            sock, _ = self.listener.accept()
        except TimeoutError:
            return None
        return TcpConn(sock)

    def close(self) -> None:
        self.udp.close()
        if self.listener is not None:
            self.listener.close()


@pytest.fixture
def callee() -> Iterator[DualPeer]:
    p = DualPeer()
    yield p
    p.close()


def _values(msg: bytes, name: str) -> list[str]:
    """Every comma-separated value of every `name` header line, in order."""
    out = []
    for line in msg.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            out += [x.strip() for x in v.split(",")]
    return out


def _big_invite(uac: UdpPeer, ruri: str) -> bytes:
    return sip_request(
        "INVITE",
        ruri,
        port=uac.port,
        extra=f"Contact: <sip:alice@127.0.0.1:{uac.port}>\r\nContent-Type: application/sdp\r\n",
        body=BIG_BODY,
    )


def _final(uac: UdpPeer) -> bytes:
    """The first final response the UAC gets (provisionals skipped)."""
    while True:
        resp = uac.recv(5.0)
        assert resp is not None, "no final response"
        if (status_of(resp) or 0) >= 200:
            return resp


def test_large_request_over_udp_is_relayed_over_tcp(sipr_factory, callee: DualPeer) -> None:
    proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{callee.port}"})
    uac = UdpPeer()
    try:
        invite = _big_invite(uac, f"sip:bob@127.0.0.1:{callee.port}")
        assert len(invite) > 1500
        uac.send(invite, proxy.udp)
        conn = callee.accept()
        assert conn is not None, "the large INVITE did not come over TCP"
        relayed = conn.recv()
        assert relayed.startswith(b"INVITE ") and relayed.endswith(BIG_BODY)
        top_via = _values(relayed, "Via")[0]
        assert top_via.startswith(f"SIP/2.0/TCP 127.0.0.1:{proxy.tcp[1]};branch="), top_via
        # The dialog leaves over TCP and came in over UDP: both Record-Routes.
        assert _values(relayed, "Record-Route") == [
            f"<sip:127.0.0.1:{proxy.tcp[1]};transport=tcp;lr;r2=on>",
            f"<sip:127.0.0.1:{proxy.udp[1]};lr;r2=on>",
        ]
        conn.send(sip_answer(relayed, 200, "OK", "bob1"))
        ok = _final(uac)
        assert status_of(ok) == 200 and header(ok, "Call-ID") == header(invite, "Call-ID"), ok
        assert callee.udp.recv(0.3) is None, "a copy went over UDP too"
        conn.close()
    finally:
        uac.close()


def test_large_request_falls_back_to_udp_when_tcp_is_refused(sipr_factory) -> None:
    """RFC 3261 §18.1.1: if the TCP attempt fails, the request goes over UDP."""
    callee = DualPeer(tcp=False)
    uac = UdpPeer()
    try:
        proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{callee.port}"})
        invite = _big_invite(uac, f"sip:bob@127.0.0.1:{callee.port}")
        uac.send(invite, proxy.udp)
        relayed = callee.udp.recv(5.0)
        assert relayed is not None and relayed.startswith(b"INVITE ")
        assert relayed.endswith(BIG_BODY)
        top_via = _values(relayed, "Via")[0]
        assert top_via.startswith(f"SIP/2.0/UDP 127.0.0.1:{proxy.udp[1]};branch="), top_via
        assert _values(relayed, "Record-Route") == [f"<sip:127.0.0.1:{proxy.udp[1]};lr>"]
        callee.udp.send(sip_answer(relayed, 200, "OK", "bob1"), proxy.udp)
        assert status_of(_final(uac)) == 200
    finally:
        uac.close()
        callee.close()


@pytest.mark.parametrize("case", ["transport=udp", "small"])
def test_udp_kept_when_pinned_or_small(sipr_factory, callee: DualPeer, case: str) -> None:
    """An explicit transport=udp next hop keeps UDP whatever the size; a
    request within 1300 bytes stays on UDP."""
    pinned = ";transport=udp" if case == "transport=udp" else ""
    proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{callee.port}{pinned}"})
    uac = UdpPeer()
    try:
        ruri = f"sip:bob@127.0.0.1:{callee.port}"
        invite = _big_invite(uac, ruri) if pinned else sip_request("INVITE", ruri, port=uac.port)
        uac.send(invite, proxy.udp)
        relayed = callee.udp.recv(5.0)
        assert relayed is not None and relayed.startswith(b"INVITE ")
        assert _values(relayed, "Via")[0].startswith("SIP/2.0/UDP ")
        callee.udp.send(sip_answer(relayed, 486, "Busy Here", "bob1"), proxy.udp)
        assert status_of(_final(uac)) == 486
        assert callee.accept(0.2) is None, "a TCP connection was opened"
    finally:
        uac.close()


def test_tcp_caller_udp_callee_double_record_route_and_bye_back(
    sipr_factory, callee: DualPeer
) -> None:
    """TCP caller -> sipr -> UDP callee: the INVITE carries two Record-Routes
    (UDP side first, then TCP); ACK and BYE follow them through the core; the
    callee's BYE over UDP reaches the caller over its own TCP connection."""
    proxy = sipr_factory(PROXY)  # routes by Request-URI
    caller = TcpConn.connect(proxy.tcp)
    try:
        call_id = os.urandom(8).hex()
        ruri = f"sip:bob@127.0.0.1:{callee.port}"
        invite = sip_request(
            "INVITE",
            ruri,
            via="SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{branch}",
            port=caller.port,
            branch=f"inv{call_id}",
            call_id=call_id,
            extra=f"Contact: <sip:alice@127.0.0.1:{caller.port};transport=tcp>\r\n",
        )
        caller.send(invite)
        relayed = callee.udp.recv(5.0)
        assert relayed is not None and relayed.startswith(f"INVITE {ruri} ".encode()), relayed
        vias = _values(relayed, "Via")
        assert vias[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{proxy.udp[1]};branch="), vias
        assert vias[1].startswith(f"SIP/2.0/TCP 127.0.0.1:{caller.port};"), vias
        rr_udp = f"<sip:127.0.0.1:{proxy.udp[1]};lr;r2=on>"
        rr_tcp = f"<sip:127.0.0.1:{proxy.tcp[1]};transport=tcp;lr;r2=on>"
        assert _values(relayed, "Record-Route") == [rr_udp, rr_tcp]

        # The callee answers over UDP (RFC 3261 §12.1.1: Record-Route copied).
        contact = f"Contact: <sip:bob@127.0.0.1:{callee.port}>\r\n"
        copied_rr = f"Record-Route: {rr_udp}, {rr_tcp}\r\n"
        callee.udp.send(sip_answer(relayed, 200, "OK", "bob1", contact + copied_rr), proxy.udp)
        ok = caller.recv()
        while status_of(ok) == 100:
            ok = caller.recv()
        assert status_of(ok) == 200 and header(ok, "Call-ID") == call_id, ok
        assert _values(ok, "Record-Route") == [rr_udp, rr_tcp]
        assert len(_values(ok, "Via")) == 1

        # The caller's route set is the Record-Route reversed (§12.1.2).
        alice = f"<sip:alice@127.0.0.1>;tag=ainv{call_id}"  # as sip_request tags it
        dialog = f"From: {alice}\r\nTo: <{ruri}>;tag=bob1\r\nCall-ID: {call_id}\r\n"
        ack = (
            f"ACK sip:bob@127.0.0.1:{callee.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{caller.port};branch=z9hG4bKack{call_id}\r\n"
            f"Route: {rr_tcp}, {rr_udp}\r\nMax-Forwards: 70\r\n{dialog}"
            "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        )
        caller.send(ack.encode())
        got_ack = callee.udp.recv(5.0)
        assert got_ack is not None and got_ack.startswith(b"ACK "), got_ack
        assert _values(got_ack, "Route") == [], "our own Routes were not consumed"

        # The callee hangs up over UDP; the BYE follows the Record-Route.
        bye = (
            f"BYE sip:alice@127.0.0.1:{caller.port};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{callee.port};branch=z9hG4bKbye{call_id};rport\r\n"
            f"Route: {rr_udp}, {rr_tcp}\r\nMax-Forwards: 70\r\n"
            f"From: <{ruri}>;tag=bob1\r\nTo: {alice}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        callee.udp.send(bye.encode(), proxy.udp)
        got_bye = caller.recv()
        assert got_bye.startswith(b"BYE "), got_bye
        bye_vias = _values(got_bye, "Via")
        assert bye_vias[0].startswith(f"SIP/2.0/TCP 127.0.0.1:{proxy.tcp[1]};"), bye_vias
        assert bye_vias[1].startswith(f"SIP/2.0/UDP 127.0.0.1:{callee.port};"), bye_vias
        assert _values(got_bye, "Route") == []
        caller.send(sip_answer(got_bye, 200, "OK", "unused"))
        bye_ok = callee.udp.recv(5.0)
        assert status_of(bye_ok) == 200 and header(bye_ok, "CSeq") == "1 BYE", bye_ok
        # No connection was opened towards the caller: its own was reused.
        assert options_counters(proxy.tcp, "stats", "x-stat-")["connections"] == 2
    finally:
        caller.close()


def test_refused_tcp_next_hop_fails_over_at_once(sipr_factory, callee: DualPeer) -> None:
    """A TCP next hop that refuses the connection is a transport error (RFC
    3261 §16.9): the branch ends as 503 at once, and the route's serial
    failover reaches the second target long before Timer B (32 s) would."""
    refused = free_port(socket.SOCK_STREAM)
    targets = f"sip:127.0.0.1:{refused};transport=tcp,sip:127.0.0.1:{callee.port}"
    proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": targets})
    uac = UdpPeer()
    try:
        invite = sip_request("INVITE", f"sip:bob@127.0.0.1:{callee.port}", port=uac.port)
        uac.send(invite, proxy.udp)
        relayed = callee.udp.recv(5.0)
        assert relayed is not None and relayed.startswith(b"INVITE "), relayed
        callee.udp.send(sip_answer(relayed, 200, "OK", "bob1"), proxy.udp)
        assert status_of(_final(uac)) == 200
        assert options_counters(proxy.tcp, "stats", "x-stat-")["send_errors"] >= 1
    finally:
        uac.close()
