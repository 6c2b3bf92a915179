"""Suspension, deadlines, loop-stall detection, periodic jobs and work queues."""

import time

import pytest

from tests.conftest import ROOT, UdpPeer, header, sip_request, status_of

APP = ROOT / "tests" / "apps" / "async_behaviours.py"


@pytest.fixture(scope="module")
def server():
    from tests.conftest import start_sipr

    s = start_sipr(APP)
    yield s
    assert s.stop() == 0, s.log()


def ask(server, peer: UdpPeer, user: str, method: str = "OPTIONS", timeout: float = 3.0, **kw):
    req = sip_request(method, uri=f"sip:{user}@127.0.0.1", port=peer.port, **kw)
    peer.send(req, server.udp)
    while True:
        resp = peer.recv(timeout)
        if resp is None or (status_of(resp) or 0) >= 200:
            return resp


def wait_for_log(server, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return True
        time.sleep(0.02)
    return False


def test_deadline_answers_configured_reply(server, udp_peer: UdpPeer) -> None:
    start = time.monotonic()
    resp = ask(server, udp_peer, "never", call_id="deadline-1")
    elapsed = time.monotonic() - start
    assert status_of(resp) == 503
    assert resp is not None and b"503 Route Deadline" in resp
    assert 0.4 < elapsed < 2.0
    assert wait_for_log(server, "route deadline reached for OPTIONS (Call-ID deadline-1)")


def test_per_request_deadline_override(server, udp_peer: UdpPeer) -> None:
    assert status_of(ask(server, udp_peer, "long")) == 200


def test_suspended_invite_gets_100_trying_then_answer(server, udp_peer: UdpPeer) -> None:
    udp_peer.send(sip_request("INVITE", uri="sip:long@127.0.0.1", port=udp_peer.port), server.udp)
    first = udp_peer.recv()
    assert status_of(first) == 100  # sent by Rust after 200 ms without an answer
    final = udp_peer.recv()
    assert status_of(final) == 200


def test_blocking_handler_is_reported_with_name_and_call_id(server, udp_peer: UdpPeer) -> None:
    assert status_of(ask(server, udp_peer, "block", call_id="stall-1")) == 200
    assert wait_for_log(server, "event loop blocked for")
    line = next(ln for ln in server.log().splitlines() if "event loop blocked" in ln)
    assert "handler route" in line and "Call-ID stall-1" in line


def test_every_runs_periodically(server, udp_peer: UdpPeer) -> None:
    first = int(header(ask(server, udp_peer, "ticks") or b"", "X-Ticks") or 0)
    deadline = time.monotonic() + 3
    seen = first
    while seen < first + 3 and time.monotonic() < deadline:
        seen = int(header(ask(server, udp_peer, "ticks") or b"", "X-Ticks") or 0)
    assert seen >= first + 3  # a 50 ms job ran at least three more times


def test_work_queue_is_bounded_and_drained(server, udp_peer: UdpPeer) -> None:
    statuses = [status_of(ask(server, udp_peer, "queue", call_id=f"q{i}")) for i in range(3)]
    assert statuses[:2] == [202, 202]
    assert statuses[2] in (202, 503)  # the bound is 2: a third may find it full
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        resp = ask(server, udp_peer, "processed")
        done = (header(resp, "X-Done") or "").split(",") if resp else []
        if "q0" in done and "q1" in done:
            break
        time.sleep(0.02)
    assert "q0" in done and "q1" in done


def test_stats_report_handlers_and_transactions(server, udp_peer: UdpPeer) -> None:
    resp = ask(server, udp_peer, "stats")
    assert resp is not None and status_of(resp) == 200
    assert header(resp, "X-handlers-running") == "1"
    assert header(resp, "X-transactions-server") is not None
