"""Acceptance 4 of issue 15: `@app.on_reply` and `relay(..., on_reply=fn)`
change the 180 and 200 of a relayed INVITE (the caller sees the change); an
app without a response handler hands no response to Python (its counters
say so). Caller and callee are UDP sockets on 127.0.0.1."""

from __future__ import annotations

from tests.conftest import (
    ROOT,
    UdpPeer,
    header,
    options_counters,
    sip_answer,
    sip_request,
    status_of,
)

APP = ROOT / "tests" / "apps" / "onreply_proxy.py"
SDP = b"v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def _call(proxy, caller: UdpPeer, callee: UdpPeer, final: int = 200) -> list[bytes]:
    """INVITE through the proxy; the callee answers 180 then `final`. Returns
    what the caller received, 100 Trying left out."""
    invite = sip_request(
        "INVITE",
        f"sip:bob@127.0.0.1:{callee.port}",
        port=caller.port,
        extra="Contact: <sip:alice@127.0.0.1>\r\nContent-Type: application/sdp\r\n",
        body=SDP,
    )
    caller.send(invite, proxy.udp)
    relayed = callee.recv(5.0)
    assert relayed is not None and relayed.startswith(b"INVITE"), relayed
    callee.send(sip_answer(relayed, 180, "Ringing", "callee1"), proxy.udp)
    reason = "OK" if final == 200 else "Busy Here"
    callee.send(sip_answer(relayed, final, reason, "callee1"), proxy.udp)
    got: list[bytes] = []
    while len(got) < 2:
        data = caller.recv(5.0)
        assert data is not None, f"caller got {[status_of(g) for g in got]}"
        if status_of(data) != 100:
            got.append(data)
    return got


def _counters(proxy) -> dict[str, int]:
    return options_counters(proxy.tcp, "stats", "x-stat-")


def test_app_on_reply_marks_180_and_200(sipr_factory) -> None:
    caller, callee = UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(
            APP, env={"SIPR_TARGET": f"sip:127.0.0.1:{callee.port}", "SIPR_ONREPLY": "app"}
        )
        ringing, ok = _call(proxy, caller, callee)
        assert (status_of(ringing), status_of(ok)) == (180, 200)
        assert header(ringing, "X-Seen") == "180 INVITE"
        assert header(ok, "X-Seen") == "200 INVITE"
        assert _counters(proxy)["onreply.handed"] == 2
    finally:
        caller.close()
        callee.close()


def test_relay_on_reply_async_changes_headers_and_body(sipr_factory) -> None:
    caller, callee = UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(
            APP, env={"SIPR_TARGET": f"sip:127.0.0.1:{callee.port}", "SIPR_ONREPLY": "relay"}
        )
        ringing, ok = _call(proxy, caller, callee)
        assert (status_of(ringing), status_of(ok)) == (180, 200)
        assert header(ringing, "X-Relay-Seen") == "180"
        assert header(ok, "X-Relay-Seen") == "200"
        body = ok.split(b"\r\n\r\n", 1)[1]
        assert body == b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
        assert header(ok, "Content-Length") == str(len(body))
        # A failure passes through the handler too, and still goes upstream.
        ringing, busy = _call(proxy, caller, callee, final=486)
        assert status_of(busy) == 486 and header(busy, "X-Relay-Seen") == "486"
        c = _counters(proxy)
        assert c["onreply.handed"] == 4
    finally:
        caller.close()
        callee.close()


def test_without_on_reply_no_response_reaches_python(sipr_factory) -> None:
    caller, callee = UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(APP, env={"SIPR_TARGET": f"sip:127.0.0.1:{callee.port}"})
        for _ in range(3):
            ringing, ok = _call(proxy, caller, callee)
            assert (status_of(ringing), status_of(ok)) == (180, 200)
            assert header(ok, "X-Seen") is None and header(ok, "X-Relay-Seen") is None
        c = _counters(proxy)
        assert c["responses_in.1xx"] >= 3 and c["responses_in.2xx"] >= 3, c
        # The onreply service was never registered: no response was held or
        # handed to Python.
        assert c["onreply.handed"] == 0 and c["onreply.watched"] == 0, c
    finally:
        caller.close()
        callee.close()
