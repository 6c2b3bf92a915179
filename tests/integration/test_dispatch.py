"""Handler errors, default answers, overload and API semantics, end to end."""

import pytest

from tests.conftest import ROOT, UdpPeer, header, sip_request, status_of

APP = ROOT / "tests" / "apps" / "behaviours.py"


@pytest.fixture(scope="module", params=["loop", "thread"])
def server(request):
    """thread: UDP read by the core's reader thread, every request here
    reaching Python through the ingress queue (docs/decisions/0019)."""
    from tests.conftest import start_sipr

    s = start_sipr(APP, env={"SIPR_UDP_READER": request.param})
    yield s
    assert s.stop() == 0, s.log()


def ask(server, peer: UdpPeer, user: str, **kw) -> bytes | None:
    peer.send(sip_request("OPTIONS", uri=f"sip:{user}@127.0.0.1", port=peer.port, **kw), server.udp)
    return peer.recv()


def test_handler_exception_answers_500_and_logs_call_id(server, udp_peer: UdpPeer) -> None:
    resp = ask(server, udp_peer, "raise", call_id="boom-call-id")
    assert status_of(resp) == 500
    # The log line naming the Call-ID arrives on stderr soon after.
    import time

    deadline = time.monotonic() + 5
    while "boom-call-id" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "route handler failed (Call-ID boom-call-id)" in server.log()


def test_handler_without_action_gets_default_answer(server, udp_peer: UdpPeer) -> None:
    assert status_of(ask(server, udp_peer, "silent")) == 404


def test_second_final_answer_raises_transaction_error(server, udp_peer: UdpPeer) -> None:
    assert status_of(ask(server, udp_peer, "twice")) == 200
    assert udp_peer.recv(0.3) is None  # exactly one answer went out


def test_request_attributes(server, udp_peer: UdpPeer) -> None:
    resp = ask(server, udp_peer, "headers", extra="s: hello world\r\n")
    assert resp is not None and status_of(resp) == 200
    assert header(resp, "X-Method") == "OPTIONS"
    assert header(resp, "X-Subject") == "hello world"
    assert header(resp, "X-Vias") == "1"
    assert header(resp, "X-Source") == "UDP:127.0.0.1"
    assert header(resp, "X-CSeq") == "1"
    assert (header(resp, "X-From-Tag") or "").startswith("a")


def test_overload_is_answered_503_with_retry_after_before_python(server) -> None:
    peers = [UdpPeer() for _ in range(6)]
    try:
        for p in peers[:4]:  # max_pending=4: these four suspend for a second
            p.send(sip_request("OPTIONS", uri="sip:hang@127.0.0.1", port=p.port), server.udp)
        extra = peers[4]
        extra.send(sip_request("OPTIONS", uri="sip:hang@127.0.0.1", port=extra.port), server.udp)
        resp = extra.recv()
        assert status_of(resp) == 503
        assert resp is not None and header(resp, "Retry-After") == "7"
        # When the suspended handlers answer, capacity is back.
        for p in peers[:4]:
            assert status_of(p.recv()) == 200
        after = peers[5]
        after.send(sip_request("OPTIONS", uri="sip:ok@127.0.0.1", port=after.port), server.udp)
        assert status_of(after.recv()) == 200
    finally:
        for p in peers:
            p.close()
