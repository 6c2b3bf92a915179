"""Runtime configuration (issue 7, acceptance 2): settings changed while sipr
runs take effect without a restart. Set from inside the app
(`app.config.set`, tests/apps/runtime_proxy.py `OPTIONS sip:cfg@`)."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import UdpPeer, header, sip_request, status_of
from tests.integration.ctlkit import sipr_ctl
from tests.integration.runtime_kit import APP, ask, cfg_set, wait_for_log

INVITE_SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def _final_for(peer: UdpPeer, call_ids: set[str], timeout: float) -> tuple[str, int]:
    """The first final response (>= 200) to one of `call_ids` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = peer.recv(max(0.05, deadline - time.monotonic()))
        status = status_of(data)
        if data and status and status >= 200 and header(data, "Call-ID") in call_ids:
            return header(data, "Call-ID") or "", status
    raise AssertionError(f"no final response for {call_ids} in {timeout}s")


def _copies(peer: UdpPeer, call_id: str) -> int:
    """INVITEs for `call_id` the silent callee has received so far."""
    n = 0
    while (data := peer.recv(0.05)) is not None:
        n += data.startswith(b"INVITE ") and header(data, "Call-ID") == call_id
    return n


def _set_with_ctl(proxy, name: str, value: str) -> str:  # type: ignore[no-untyped-def]
    done = sipr_ctl("--ctl", str(proxy.ctl), "--json", "cfg.set", name, value)
    assert done.returncode == 0, done.stderr
    got = sipr_ctl("--ctl", str(proxy.ctl), "--json", "cfg.get", name)
    assert got.returncode == 0, got.stderr
    return str(json.loads(got.stdout))


@pytest.mark.parametrize("setter", ["app", "ctl"])
def test_cfg_set_t1_shortens_the_invite_timeout_of_new_transactions(
    sipr_factory, setter: str
) -> None:
    """The callee never answers. INVITE A is relayed with the default T1
    (0.5 s: Timer B 32 s); then tm.t1 is set to 0.02 s (from the app, or with
    `sipr ctl cfg.set`) and INVITE B, sent later, times out first (Timer B =
    64*T1 = 1.28 s) with 408, retransmitted at the new, shorter intervals,
    while A still waits: the new value applies to new transactions, without
    restart."""
    set_value = cfg_set if setter == "app" else None
    callee, caller = UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(
            APP,
            env={"SIPR_TARGET": f"sip:127.0.0.1:{callee.port}"},
            extra_args=("--drain-timeout", "0.5"),
        )
        assert cfg_set(proxy.tcp, "tm.t1", "0.5") == "0.5"

        def invite(call_id: str) -> None:
            caller.send(
                sip_request(
                    "INVITE",
                    f"sip:bob@127.0.0.1:{proxy.udp[1]}",
                    port=caller.port,
                    call_id=call_id,
                    extra="Content-Type: application/sdp\r\n",
                    body=INVITE_SDP,
                ),
                proxy.udp,
            )

        invite("call-a")
        assert _copies(callee, "call-a") >= 1
        if set_value is not None:
            assert set_value(proxy.tcp, "tm.t1", "0.02") == "0.02"
        else:
            assert _set_with_ctl(proxy, "tm.t1", "0.02") == "0.02"
        invite("call-b")
        assert _final_for(caller, {"call-a", "call-b"}, timeout=15) == ("call-b", 408)
        # Timer A doubled from 20 ms: several copies of B within its 1.28 s.
        assert _copies(callee, "call-b") >= 4
    finally:
        callee.close()
        caller.close()


def test_cfg_set_errors_name_the_setting_and_change_nothing(sipr_factory) -> None:
    proxy = sipr_factory(APP)
    cases = {
        "nope=1": "no such setting: 'nope'",
        "tm.t1=abc": "tm.t1: expected a number, got 'abc'",
        "tm.t1=0": "tm.t1 must be at least 0.001",
        "core.max_pending=0": "core.max_pending must be at least 1",
        "core.max_pending=1.5": "core.max_pending: expected an integer",
        "core.default_reply=100": "core.default_reply must be at least 200",
        "log.level=loud": "log.level must be one of debug, info, warning, error",
    }
    for setting, error in cases.items():
        resp = ask(proxy.tcp, "cfg", f"X-Set: {setting}\r\n")
        assert status_of(resp) == 400, resp
        assert error in resp.split(b"\r\n", 1)[0].decode(), resp
    assert cfg_set(proxy.tcp, "tm.t1", "0.5") == "0.5"
    assert cfg_set(proxy.tcp, "log.level", "INFO") == "info"


def test_max_pending_and_retry_after_change_the_overload_answer(sipr_factory) -> None:
    """core.max_pending=1 with one request held by its handler: the next one
    is refused by the core with 503 and the Retry-After just set."""
    proxy = sipr_factory(APP)
    assert cfg_set(proxy.tcp, "core.max_pending", "1") == "1"
    assert cfg_set(proxy.tcp, "core.retry_after", "9") == "9"
    holder, other = UdpPeer(), UdpPeer()
    try:
        holder.send(
            sip_request("OPTIONS", "sip:hold@127.0.0.1", port=holder.port, extra="X-Hold: 2\r\n"),
            proxy.udp,
        )
        # The held request is in the app once its handler has answered nothing yet;
        # the next request, over the bound, is answered by the core at once.
        refused = None
        deadline = time.monotonic() + 5
        while refused is None and time.monotonic() < deadline:
            other.send(sip_request("OPTIONS", "sip:version@127.0.0.1", port=other.port), proxy.udp)
            resp = other.recv(1.0)
            if status_of(resp) == 503:
                refused = resp
        assert refused is not None, "no 503 while the only pending slot was held"
        assert header(refused, "Retry-After") == "9"
        assert status_of(holder.recv(5.0)) == 200
    finally:
        holder.close()
        other.close()


def test_default_reply_and_route_deadline_apply_to_the_next_request(sipr_factory) -> None:
    proxy = sipr_factory(APP)
    assert status_of(ask(proxy.tcp, "silent")) == 404
    assert cfg_set(proxy.tcp, "core.default_reply", "486") == "486"
    assert status_of(ask(proxy.tcp, "silent")) == 486
    assert cfg_set(proxy.tcp, "tm.route_deadline", "0.2") == "0.2"
    # The handler would wait 5 s; its route deadline cancels it and answers 500.
    assert status_of(ask(proxy.tcp, "hold", "X-Hold: 5\r\n")) == 500


def test_stall_threshold_lowered_at_runtime_reports_a_shorter_block(sipr_factory) -> None:
    """A handler blocks the loop 0.18 s: under the default threshold (0.2 s)
    that is never a stall; with watchdog.stall_threshold set to 0.02 it is.
    (Tried a few times: the watchdog may still be in its previous, idle
    round while a single block passes.)"""
    proxy = sipr_factory(APP)
    assert cfg_set(proxy.tcp, "watchdog.stall_threshold", "0.02") == "0.02"
    blocked: list[str] = []
    for _ in range(10):
        resp = ask(proxy.tcp, "block", "X-Block: 0.18\r\n")
        assert status_of(resp) == 200
        try:
            line = wait_for_log(proxy, "event loop blocked", timeout=0.5)
        except AssertionError:
            continue
        blocked.append(line)
        break
    assert blocked, proxy.log()
    assert "Call-ID " in blocked[0] and "handler route" in blocked[0]


def test_cfg_list_names_every_setting_with_its_value_and_type(sipr_factory) -> None:
    proxy = sipr_factory(APP, extra_args=("--drain-timeout", "3", "--log-level", "warning"))
    done = sipr_ctl("--ctl", str(proxy.ctl), "--json", "cfg.list")
    assert done.returncode == 0, done.stderr
    settings = {s["name"]: s for s in json.loads(done.stdout)}
    assert set(settings) == {
        "tm.t1",
        "tm.t2",
        "tm.t4",
        "tm.timer_c",
        "tm.route_deadline",
        "core.max_pending",
        "core.retry_after",
        "core.default_reply",
        "log.level",
        "watchdog.stall_threshold",
        "shutdown.drain_timeout",
        "dns.blocklist_time",
        "dns.failover_timeout",
    }
    assert all(s["description"] for s in settings.values())
    assert settings["dns.failover_timeout"]["value"] == 5.0
    assert settings["tm.t1"]["value"] == 0.5 and settings["tm.t1"]["type"] == "float"
    assert settings["tm.timer_c"]["value"] == 181.0
    assert settings["core.max_pending"]["value"] == 10_000
    assert settings["core.max_pending"]["type"] == "int"
    assert settings["log.level"]["value"] == "warning"
    assert settings["shutdown.drain_timeout"]["value"] == 3.0
    refused = sipr_ctl("--ctl", str(proxy.ctl), "cfg.set", "tm.t2", "-1")
    assert refused.returncode != 0 and "tm.t2 must be at least 0.001" in refused.stderr


def test_serving_sets_the_collector_for_a_proxy(sipr_factory) -> None:
    """Decision 0064: once serving, what startup made is frozen out of the
    collector's walks and young collections come every 10,000 allocations."""
    from sipr._gc import SERVING

    proxy = sipr_factory(APP)
    resp = ask(proxy.tcp, "gc")
    assert status_of(resp) == 200, resp
    assert header(resp, "X-GC-Threshold") == ",".join(map(str, SERVING))
    assert int(header(resp, "X-GC-Frozen") or "0") > 10_000
