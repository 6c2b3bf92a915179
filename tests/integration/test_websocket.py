"""Acceptance (issue 6, point 5): SIP over WebSocket (RFC 7118). A client made
with the `websockets` package registers over sipr's `ws:` listener; SIPp sends
an INVITE over UDP to that AoR, and the client receives it over its socket,
answers, and gets the ACK and BYE there; the same over `wss:` with a
certificate from a test CA. Refused handshakes and bad frames are checked with
a raw socket, which can break the protocol on purpose."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import (
    ROOT,
    UdpPeer,
    free_port,
    header,
    sip_request,
    start_sipr,
    status_of,
)
from tests.sipp.runner import Sipp
from tests.tls_peers import CertAuthority, client_context

APP = ROOT / "tests" / "apps" / "location_proxy.py"
LISTEN = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "ws:127.0.0.1:0")
# RFC 7118 clients cannot be reached at an address: their Via and Contact
# name a made-up host, and only their connection leads back to them.
FAKE_HOST = "df7jal23ls0d.invalid"
TIMEOUT = 10.0


def _register(aor_host: str, user: str = "bob") -> str:
    branch, tag = os.urandom(6).hex(), os.urandom(4).hex()
    return (
        f"REGISTER sip:{aor_host} SIP/2.0\r\n"
        f"Via: SIP/2.0/WS {FAKE_HOST};branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:{user}@{aor_host}>\r\n"
        f"From: <sip:{user}@{aor_host}>;tag={tag}\r\n"
        f"Call-ID: {os.urandom(8).hex()}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{FAKE_HOST};transport=ws>;expires=300\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def _response_to(request: str, status: int, reason: str, to_tag: str, body: str = "") -> str:
    """A UAS response: the request's Via, Record-Route, From, Call-ID and CSeq
    copied (RFC 3261 §8.2.6.2), a To tag, and our Contact."""
    head, _, _ = request.partition("\r\n\r\n")
    copied = [
        line
        for line in head.split("\r\n")[1:]
        if line.split(":", 1)[0].strip().lower()
        in ("via", "v", "record-route", "from", "f", "call-id", "i", "cseq")
    ]
    to = header(request.encode(), "To") or ""
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}", *copied, f"To: {to}"]
    lines.append(f"Contact: <sip:bob@{FAKE_HOST};transport=ws>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


async def _next_message(ws: ClientConnection) -> str:
    msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
    return msg if isinstance(msg, str) else msg.decode()


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
)


def _start(sipr_factory, scheme: str, tmp_path: Path):
    """sipr with a `ws:` or `wss:` listener (a certificate from a test CA);
    returns it, the WebSocket URL and the client's TLS context (None for ws)."""
    if scheme == "ws":
        proxy = sipr_factory(APP, listen=LISTEN)
        tls = None
    else:
        ca = CertAuthority(tmp_path)
        files = ca.issue("sipr", stem="sipr")
        proxy = sipr_factory(
            APP,
            listen=(*LISTEN[:2], "wss:127.0.0.1:0"),
            extra_args=("--tls-cert", str(files.cert), "--tls-key", str(files.key)),
        )
        tls = client_context(ca.pem)
    host, port = proxy.addrs[scheme]
    return proxy, f"{scheme}://{host}:{port}", tls


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_websocket_client_registers_and_receives_a_call_from_sipp(
    sipp: str, sipr_factory, tmp_path: Path, scheme: str
) -> None:
    proxy, url, tls = _start(sipr_factory, scheme, tmp_path)
    ws_host, ws_port = proxy.addrs[scheme]
    udp_host, udp_port = proxy.udp

    async def scenario() -> list[str]:
        async with connect(url, subprotocols=["sip"], ssl=tls) as ws:
            assert ws.subprotocol == "sip"
            await ws.send(_register(udp_host))
            reply = await _next_message(ws)
            assert status_of(reply.encode()) == 200, reply
            assert FAKE_HOST in (header(reply.encode(), "Contact") or "")

            uac = Sipp(
                sipp, "uac_rr.xml", free_port(), calls=1, remote=(udp_host, udp_port),
                timeout_s=30, extra=("-s", "bob"),
            )  # fmt: skip
            try:
                seen = []
                invite = await _next_message(ws)
                seen.append(invite.split("\r\n", 1)[0])
                assert invite.startswith("INVITE sip:bob@"), invite
                via = header(invite.encode(), "Via") or ""
                assert via.startswith(f"SIP/2.0/{scheme.upper()} {ws_host}:{ws_port}"), invite
                record_route = header(invite.encode(), "Record-Route") or ""
                assert f"transport={scheme};" in record_route, invite
                tag = os.urandom(4).hex()
                await ws.send(_response_to(invite, 200, "OK", tag, SDP))
                for method in ("ACK", "BYE"):
                    req = await _next_message(ws)
                    seen.append(req.split("\r\n", 1)[0])
                    assert req.startswith(f"{method} sip:bob@{FAKE_HOST}"), req
                if seen[-1].startswith("BYE"):
                    await ws.send(_response_to(req, 200, "OK", tag))
                result = await asyncio.to_thread(uac.wait)
                assert (result.successful, result.failed) == (1, 0), result.summary()
                return seen
            finally:
                uac.kill()

    seen = asyncio.run(scenario())
    assert [s.split(" ", 1)[0] for s in seen] == ["INVITE", "ACK", "BYE"]
    assert proxy.alive(), proxy.log()


def _headers(msg: str, name: str) -> list[str]:
    """Every value of header `name`, comma lists split (our URIs hold no commas)."""
    head = msg.partition("\r\n\r\n")[0]
    values = []
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            values += [x.strip() for x in v.split(",")]
    return values


def _request(method: str, uri: str, dialog: dict[str, str], cseq: int, routes=(), body="") -> str:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/WS {FAKE_HOST};branch=z9hG4bK{os.urandom(6).hex()}",
        "Max-Forwards: 70",
        *[f"Route: {r}" for r in routes],
        f"From: {dialog['from']}",
        f"To: {dialog['to']}",
        f"Call-ID: {dialog['call_id']}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:carol@{FAKE_HOST};transport=ws>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def test_websocket_client_calls_a_udp_phone(sipp: str, sipr_factory, udp_peer: UdpPeer) -> None:
    """The other direction: WS caller -> sipr -> SIPp UAS over UDP, double
    Record-Route; the ACK and BYE follow the route set back through sipr."""
    proxy = sipr_factory(APP, listen=LISTEN)
    ws_host, ws_port = proxy.addrs["ws"]
    uas_port = free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=1, timeout_s=30)
    try:
        udp_peer.send(
            sip_request(
                "REGISTER", "sip:alice@127.0.0.1", port=udp_peer.port,
                extra=f"Contact: <sip:alice@127.0.0.1:{uas_port}>\r\nExpires: 60\r\n",
            ),
            proxy.udp,
        )  # fmt: skip
        assert status_of(udp_peer.recv()) == 200

        async def call() -> tuple[str, str]:
            async with connect(f"ws://{ws_host}:{ws_port}", subprotocols=["sip"]) as ws:
                dialog = {
                    "from": f"<sip:carol@{ws_host}>;tag={os.urandom(4).hex()}",
                    "to": "<sip:alice@127.0.0.1>",
                    "call_id": os.urandom(8).hex(),
                }
                await ws.send(_request("INVITE", "sip:alice@127.0.0.1", dialog, 1, body=SDP))
                while (status := status_of((final := await _next_message(ws)).encode())) < 200:
                    pass
                assert status == 200, final
                record_route = _headers(final, "Record-Route")
                dialog["to"] = header(final.encode(), "To") or ""
                remote = (header(final.encode(), "Contact") or "").strip("<>")
                routes = list(reversed(record_route))
                await ws.send(_request("ACK", remote, dialog, 1, routes))
                await ws.send(_request("BYE", remote, dialog, 2, routes))
                bye_answer = await _next_message(ws)
                return " ".join(record_route), bye_answer

        record_route, bye_answer = asyncio.run(call())
        assert status_of(bye_answer.encode()) == 200, bye_answer
        assert "transport=ws" in record_route and "flow=" in record_route, record_route
        r = uas.wait()
        assert (r.successful, r.failed) == (1, 0), r.summary()
    finally:
        uas.kill()


def test_websocket_client_calls_another_websocket_client(sipr_factory) -> None:
    """Browser to browser: both sides are reachable only over their own
    connection, so each of our two Record-Route values names its side's."""
    proxy = sipr_factory(APP, listen=LISTEN)
    url = "ws://{}:{}".format(*proxy.addrs["ws"])
    domain = proxy.udp[0]

    async def call() -> list[str]:
        async with (
            connect(url, subprotocols=["sip"]) as caller,
            connect(url, subprotocols=["sip"]) as callee,
        ):
            await callee.send(_register(domain))
            assert status_of((await _next_message(callee)).encode()) == 200
            dialog = {
                "from": f"<sip:carol@{domain}>;tag={os.urandom(4).hex()}",
                "to": f"<sip:bob@{domain}>",
                "call_id": os.urandom(8).hex(),
            }
            await caller.send(_request("INVITE", f"sip:bob@{domain}", dialog, 1, body=SDP))
            invite = await _next_message(callee)
            assert invite.startswith("INVITE "), invite
            await callee.send(_response_to(invite, 200, "OK", os.urandom(4).hex(), SDP))
            while (status := status_of((final := await _next_message(caller)).encode())) < 200:
                pass
            assert status == 200, final
            flows = re.findall(r";flow=([^;>]+)", final)
            assert len(flows) == 2 and flows[0] != flows[1], final
            dialog["to"] = header(final.encode(), "To") or ""
            remote = (header(final.encode(), "Contact") or "").strip("<>")
            routes = list(reversed(_headers(final, "Record-Route")))
            await caller.send(_request("ACK", remote, dialog, 1, routes))
            await caller.send(_request("BYE", remote, dialog, 2, routes))
            ack, bye = await _next_message(callee), await _next_message(callee)
            await callee.send(_response_to(bye, 200, "OK", "unused"))
            bye_answer = await _next_message(caller)
            return [ack.split(" ", 1)[0], bye.split(" ", 1)[0], bye_answer.split("\r\n", 1)[0]]

    assert asyncio.run(call()) == ["ACK", "BYE", "SIP/2.0 200 OK"]


def test_call_to_a_websocket_client_that_disconnected_fails_at_once(
    sipr_factory, udp_peer: UdpPeer
) -> None:
    """sipr cannot connect to a WebSocket client: once its connection is gone,
    a call to its still-registered contact fails right away instead of
    waiting for Timer B."""
    proxy = sipr_factory(APP, listen=LISTEN)
    host, port = proxy.addrs["ws"]

    async def register_and_leave() -> None:
        async with connect(f"ws://{host}:{port}", subprotocols=["sip"]) as ws:
            await ws.send(_register(proxy.udp[0]))
            assert status_of((await _next_message(ws)).encode()) == 200
        # Leaving the block completed the close handshake: sipr has dropped it.

    asyncio.run(register_and_leave())
    udp_peer.send(sip_request("INVITE", f"sip:bob@{proxy.udp[0]}", port=udp_peer.port), proxy.udp)
    statuses = []
    while not statuses or statuses[-1] < 200:
        resp = udp_peer.recv(timeout=TIMEOUT)
        assert resp is not None, f"no final answer; got {statuses}"
        statuses.append(status_of(resp) or 0)
    # The branch failed 503 (transport error); relayed upstream as 500 (RFC 3261 §16.7 step 6).
    assert statuses[-1] == 500, (statuses, proxy.log())


def test_handshake_without_sip_subprotocol_is_refused(sipr_factory) -> None:
    proxy = sipr_factory(APP, listen=LISTEN)
    host, port = proxy.addrs["ws"]

    async def attempt(subprotocols: list[str] | None) -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}:{port}", subprotocols=subprotocols):
                pass
        return refused.value.response.status_code

    assert asyncio.run(attempt(None)) == 400
    assert asyncio.run(attempt(["chat"])) == 400


def _raw_handshake(addr: tuple[str, int]) -> socket.socket:
    """Opens a WebSocket with the `sip` subprotocol by hand; returns the socket."""
    s = socket.create_connection(addr, timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert head.split(b"\r\n\r\n", 1)[1] == b""
    return s


def _read_until_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def test_unmasked_client_frame_closes_the_connection(sipr_factory) -> None:
    proxy = sipr_factory(APP, listen=LISTEN)
    s = _raw_handshake(proxy.addrs["ws"])
    with s:
        payload = _register("127.0.0.1").encode()
        # A text frame without the mask bit: forbidden from a client (RFC 6455 §5.1).
        s.sendall(struct.pack("!BBH", 0x81, 126, len(payload)) + payload)
        data = _read_until_eof(s)
    # The server's close frame: opcode 8, status 1002 (protocol error), then EOF.
    assert data[:1] == b"\x88", data
    assert struct.unpack("!H", data[2:4])[0] == 1002, data
    assert proxy.alive(), proxy.log()


def test_message_over_the_sip_size_limit_closes_with_1009(sipr_factory) -> None:
    proxy = sipr_factory(APP, listen=LISTEN)
    s = _raw_handshake(proxy.addrs["ws"])
    with s:
        # Only the header of a masked 16 MB binary frame: refused before any payload.
        s.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 16 << 20) + os.urandom(4))
        data = _read_until_eof(s)
    assert data[:1] == b"\x88", data
    assert struct.unpack("!H", data[2:4])[0] == 1009, data


def test_ping_is_answered_and_close_is_echoed(sipr_factory) -> None:
    proxy = sipr_factory(APP, listen=LISTEN)
    s = _raw_handshake(proxy.addrs["ws"])
    mask = os.urandom(4)

    def masked(opcode: int, payload: bytes) -> bytes:
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body

    with s:
        s.sendall(masked(0x9, b"hb"))
        assert s.recv(4) == b"\x8a\x02hb"
        s.sendall(masked(0x8, struct.pack("!H", 1000)))
        data = _read_until_eof(s)
    assert data == b"\x88\x02" + struct.pack("!H", 1000), data


def test_wss_listener_without_a_certificate_is_refused_at_start() -> None:
    with pytest.raises(RuntimeError, match="wss: listener needs a certificate"):
        start_sipr(APP, listen=("wss:127.0.0.1:0",))


def test_quiet_client_is_pinged_and_dropped_only_when_it_stops_answering(sipr_factory) -> None:
    """With a 1 s connection lifetime, a quiet WebSocket client is pinged
    instead of dropped; answering keeps it; a ping left unanswered closes it."""
    proxy = sipr_factory(APP, listen=LISTEN, extra_args=("--tcp-connection-lifetime", "1"))
    s = _raw_handshake(proxy.addrs["ws"])
    mask = os.urandom(4)
    with s:
        for _ in range(2):
            assert s.recv(2) == b"\x89\x00"  # an empty ping
            s.sendall(bytes([0x8A, 0x80]) + mask)  # our empty, masked pong
        assert s.recv(2) == b"\x89\x00"
        data = _read_until_eof(s)  # no pong this time
    assert data[:1] == b"\x88" and struct.unpack("!H", data[2:4])[0] == 1001, data
