"""Issue 15, acceptance 3 and the media half of 1: calls through sipr with
their media through the real rtpengine daemon (userspace, 127.0.0.1).

- offer on the INVITE, answer in the 200 (via `@app.on_reply`), RTP relayed
  both ways, and rtpengine's session list empty after the BYE, a 486 and a
  CANCEL;
- rtpengine killed: calls move to the second instance; none left: 503; the
  control socket shows the dead one disabled, and enabled again once it is
  back;
- a late offer: the offer in the 200, the answer in the ACK.
"""

from __future__ import annotations

import os
import re
import struct
import time

import pytest

from sipr.rtpengine import RtpEngine
from tests.conftest import ROOT, UdpPeer, header, sip_answer, sip_request, status_of
from tests.integration.ctlkit import rpc
from tests.rtpenginekit import RtpEngineProc

APP = ROOT / "tests" / "apps" / "rtpengine_proxy.py"


def _port_min(n: int) -> int:
    return 20000 + ((os.getpid() * 3 + n) % 150) * 200


@pytest.fixture
def rtpengines():
    started: list[RtpEngineProc] = []

    def make(n: int = 1) -> list[RtpEngineProc]:
        for i in range(n):
            started.append(RtpEngineProc(_port_min(len(started) + i * 7)).start())
        return started[-n:]

    yield make
    for r in started:
        r.stop()


def sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def media_of(msg: bytes) -> tuple[str, int]:
    body = msg.split(b"\r\n\r\n", 1)[1].decode()
    host = re.search(r"^c=IN IP4 (\S+)", body, re.M)
    port = re.search(r"^m=audio (\d+)", body, re.M)
    assert host and port, body
    return host.group(1), int(port.group(1))


def rtp_packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + bytes(160)


class Call:
    """Caller and callee UDP sockets (SIP and RTP) around the proxy."""

    def __init__(self, proxy, callee: UdpPeer | None = None) -> None:
        self.proxy = proxy
        self.caller, self.callee = UdpPeer(), callee or UdpPeer()
        self.caller_rtp, self.callee_rtp = UdpPeer(), UdpPeer()
        self.call_id = os.urandom(8).hex()
        self.invite = b""
        self.relayed = b""

    def close(self) -> None:
        for p in (self.caller, self.callee, self.caller_rtp, self.callee_rtp):
            p.close()

    def send_invite(self) -> bytes:
        """INVITE through the proxy; returns it as the callee got it."""
        self.invite = sip_request(
            "INVITE",
            f"sip:bob@127.0.0.1:{self.callee.port}",
            port=self.caller.port,
            call_id=self.call_id,
            extra=f"Contact: <sip:alice@127.0.0.1:{self.caller.port}>\r\n"
            "Content-Type: application/sdp\r\n",
            body=sdp(self.caller_rtp.port),
        )
        self.caller.send(self.invite, self.proxy.udp)
        got = self.callee.recv(5.0)
        assert got is not None and got.startswith(b"INVITE"), got
        self.relayed = got
        return got

    def answer(self, status: int, reason: str, body: bytes = b"") -> None:
        extra = f"Contact: <sip:bob@127.0.0.1:{self.callee.port}>\r\n"
        resp = sip_answer(self.relayed, status, reason, "bob1", extra)
        if body:
            resp = resp.replace(
                b"Content-Length: 0\r\n\r\n",
                b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
            )
        self.callee.send(resp, self.proxy.udp)

    def caller_final(self, method: str = "INVITE") -> bytes:
        while True:
            data = self.caller.recv(5.0)
            assert data is not None, "the caller got no final answer"
            cseq = header(data, "CSeq") or ""
            if (status_of(data) or 0) >= 200 and cseq.endswith(method):
                return data

    def bye(self) -> bytes:
        """BYE from the caller along the Record-Route; the callee answers 200."""
        rr = header(self.relayed, "Record-Route")
        assert rr, self.relayed
        bye = sip_request(
            "BYE",
            f"sip:bob@127.0.0.1:{self.callee.port}",
            port=self.caller.port,
            call_id=self.call_id,
            extra=f"Route: {rr}\r\n",
        )
        # Same dialog: the INVITE's From tag, the callee's To tag.
        tag = header(self.invite, "From").split("tag=")[1]  # type: ignore[union-attr]
        bye = re.sub(rb"tag=a[0-9a-f]+", b"tag=" + tag.encode(), bye, count=1)
        bye = re.sub(rb"(\r\nTo: <[^>]+>)", rb"\1;tag=bob1", bye, count=1)
        bye = bye.replace(b"CSeq: 1 BYE", b"CSeq: 2 BYE")
        self.caller.send(bye, self.proxy.udp)
        got = self.callee.recv(5.0)
        assert got is not None and got.startswith(b"BYE"), got
        self.callee.send(sip_answer(got, 200, "OK", "bob1"), self.proxy.udp)
        return self.caller_final("BYE")


def _proxy(
    sipr_factory,
    engines: list[RtpEngineProc],
    callee_port: int | None = None,
    in_dialog: bool = False,
):
    env = {"SIPR_RTPENGINE": ",".join(e.url for e in engines)}
    if in_dialog:
        env["SIPR_IN_DIALOG"] = "1"
    if callee_port:
        env["SIPR_TARGET"] = f"sip:127.0.0.1:{callee_port}"
    return sipr_factory(APP, env=env)


def test_media_through_rtpengine_and_sessions_deleted(sipr_factory, rtpengines) -> None:
    (engine,) = rtpengines(1)
    proxy = _proxy(sipr_factory, [engine])
    call = Call(proxy)
    try:
        relayed = call.send_invite()
        # The callee is offered rtpengine's port, not the caller's.
        host_a, port_a = media_of(relayed)
        assert host_a == "127.0.0.1" and port_a != call.caller_rtp.port
        assert engine.calls() == [call.call_id]
        call.answer(200, "OK", sdp(call.callee_rtp.port))
        ok = call.caller_final()
        assert status_of(ok) == 200
        _, port_b = media_of(ok)
        assert port_b not in (call.callee_rtp.port, port_a)
        # RTP both ways through rtpengine, counted at each end.
        for seq in range(5):
            call.caller_rtp.send(rtp_packet(seq), ("127.0.0.1", port_b))
            call.callee_rtp.send(rtp_packet(100 + seq), ("127.0.0.1", port_a))
        to_callee = [call.callee_rtp.recv(2.0) for _ in range(5)]
        to_caller = [call.caller_rtp.recv(2.0) for _ in range(5)]
        assert all(p is not None and len(p) == 172 for p in to_callee), to_callee
        assert all(p is not None and len(p) == 172 for p in to_caller), to_caller
        totals = engine.command({"command": "query", "call-id": call.call_id})[b"totals"]
        assert totals[b"RTP"][b"packets"] >= 10, totals  # type: ignore[index]
        assert status_of(call.bye()) == 200
        assert engine.calls() == []
    finally:
        call.close()

    # A 486: the failure deletes the session.
    call = Call(proxy)
    try:
        call.send_invite()
        assert engine.calls() == [call.call_id]
        call.answer(486, "Busy Here")
        assert status_of(call.caller_final()) == 486
        assert engine.calls() == []
    finally:
        call.close()

    # A CANCEL after 180: the callee's 487 deletes it.
    call = Call(proxy)
    try:
        call.send_invite()
        call.answer(180, "Ringing")
        cancel = call.invite.split(b"\r\n\r\n")[0].replace(b"INVITE sip:", b"CANCEL sip:", 1)
        cancel = cancel.replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
        cancel = re.sub(rb"Content-Type: [^\r]+\r\n", b"", cancel)
        cancel = re.sub(rb"Content-Length: \d+", b"Content-Length: 0", cancel) + b"\r\n\r\n"
        call.caller.send(cancel, proxy.udp)
        got = call.callee.recv(5.0)
        assert got is not None and got.startswith(b"CANCEL"), got
        call.callee.send(sip_answer(got, 200, "OK", "bob1"), proxy.udp)
        call.answer(487, "Request Terminated")
        assert status_of(call.caller_final()) == 487
        assert engine.calls() == []
    finally:
        call.close()
    show = rpc(proxy.ctl, "rtpengine.show")
    assert [r["state"] for r in show] == ["enabled"]
    assert show[0]["commands"] >= 6


def _call_id_for(engines: list[RtpEngineProc], index: int) -> str:
    """A Call-ID the set's weighted hash sends to `engines[index]` first."""
    picker = RtpEngine([e.url for e in engines])
    while True:
        cid = os.urandom(8).hex()
        if picker._pick(cid)[0] is picker.nodes[index]:
            return cid


def test_failover_disable_and_return(sipr_factory, rtpengines) -> None:
    first, second = rtpengines(2)
    callee = UdpPeer()
    proxy = _proxy(sipr_factory, [first, second], callee.port)
    try:
        first.kill()
        # A call whose hash picks the dead instance moves to the second one.
        call = Call(proxy, callee)
        call.call_id = _call_id_for([first, second], 0)
        call.send_invite()
        assert second.calls() == [call.call_id]
        call.answer(486, "Busy Here")
        assert status_of(call.caller_final()) == 486
        for p in (call.caller, call.caller_rtp, call.callee_rtp):
            p.close()
        states = {r["url"]: r["state"] for r in rpc(proxy.ctl, "rtpengine.show")}
        assert states == {first.url: "disabled", second.url: "enabled"}, states
        # None left: the route turns RtpEngineError into 503.
        second.kill()
        caller = UdpPeer()
        try:
            caller.send(
                sip_request(
                    "INVITE", f"sip:bob@127.0.0.1:{callee.port}", port=caller.port,
                    extra="Content-Type: application/sdp\r\n", body=sdp(4000),
                ),
                proxy.udp,
            )  # fmt: skip
            while (status := status_of(caller.recv(5.0))) == 100:
                pass
            assert status == 503
        finally:
            caller.close()
        # The first comes back (same control port): the recheck enables it.
        first.start()
        deadline = time.monotonic() + 10
        while True:
            states = {r["url"]: r["state"] for r in rpc(proxy.ctl, "rtpengine.show")}
            if states[first.url] == "enabled":
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        stats = rpc(proxy.ctl, "stats.get")
        assert stats.get("rtpengine.default.errors", 0) >= 1, stats
    finally:
        callee.close()


def test_late_offer_answered_in_the_ack(sipr_factory, rtpengines) -> None:
    """INVITE without SDP: the 200 carries the offer (rewritten through
    rtpengine in `on_reply`), the ACK the answer (rewritten in the route)."""
    (engine,) = rtpengines(1)
    proxy = _proxy(sipr_factory, [engine], in_dialog=True)
    call = Call(proxy)
    try:
        call.invite = sip_request(
            "INVITE", f"sip:bob@127.0.0.1:{call.callee.port}", port=call.caller.port,
            call_id=call.call_id, extra=f"Contact: <sip:alice@127.0.0.1:{call.caller.port}>\r\n",
        )  # fmt: skip
        call.caller.send(call.invite, proxy.udp)
        call.relayed = call.callee.recv(5.0) or b""
        assert call.relayed.startswith(b"INVITE") and engine.calls() == [], call.relayed
        call.answer(200, "OK", sdp(call.callee_rtp.port))
        ok = call.caller_final()
        _, offered = media_of(ok)
        assert offered != call.callee_rtp.port and engine.calls() == [call.call_id]
        # The ACK with the caller's answer, along the Record-Route.
        rr = header(call.relayed, "Record-Route")
        tag = header(call.invite, "From").split("tag=")[1]  # type: ignore[union-attr]
        ack = sip_request(
            "ACK", f"sip:bob@127.0.0.1:{call.callee.port}", port=call.caller.port,
            call_id=call.call_id,
            extra=f"Route: {rr}\r\nContent-Type: application/sdp\r\n",
            body=sdp(call.caller_rtp.port),
        )  # fmt: skip
        ack = re.sub(rb"tag=a[0-9a-f]+", b"tag=" + tag.encode(), ack, count=1)
        ack = re.sub(rb"(\r\nTo: <[^>]+>)", rb"\1;tag=bob1", ack, count=1)
        call.caller.send(ack, proxy.udp)
        got = call.callee.recv(5.0)
        assert got is not None and got.startswith(b"ACK"), got
        host, answered = media_of(got)
        assert host == "127.0.0.1" and answered not in (call.caller_rtp.port, offered), got
        totals = engine.command({"command": "query", "call-id": call.call_id})
        assert len(totals[b"tags"]) == 2, totals  # type: ignore[arg-type]
        assert status_of(call.bye()) == 200
        assert engine.calls() == []
    finally:
        call.close()
