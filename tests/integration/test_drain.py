"""SIGTERM drain (issue 7, acceptance 4): new transactions are refused with
503 + Retry-After while the calls in flight complete, then sipr exits 0
within the drain bound; a second signal exits at once."""

from __future__ import annotations

import re
import signal
import time

from tests.conftest import UdpPeer, free_port, header, sip_request, status_of
from tests.integration.runtime_kit import APP, cfg_set, wait_for, wait_for_log
from tests.sipp.peers import sipr_stats
from tests.sipp.runner import Sipp


def test_sigterm_during_sipp_calls_completes_them_and_exits_0(sipp: str, sipr_factory) -> None:
    """60 calls at 30 cps; the callee answers each 2 s after ringing, so when
    the last INVITE has reached sipr most calls wait on the callee. SIGTERM
    then: a new INVITE is refused with 503 + Retry-After, every call in
    flight is answered, ACKed and hung up through sipr (BYE in dialog), both
    SIPp ends count 0 failed calls, and sipr exits 0 within the bound."""
    calls, drain_timeout = 60, 8.0
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(sipp, "uas_rr_slow.xml", uas_port, calls=calls, timeout_s=60)
    try:
        proxy = sipr_factory(
            APP,
            env={"SIPR_TARGET": f"sip:127.0.0.1:{uas_port}"},
            extra_args=("--drain-timeout", str(drain_timeout)),
        )
        assert cfg_set(proxy.tcp, "core.retry_after", "7") == "7"
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.udp, rate=30, timeout_s=60
        )
        wait_for(
            lambda: sipr_stats(proxy.tcp).get("requests_in.invite", 0) >= calls,
            timeout=30,
            what="every INVITE to reach sipr",
        )
        sent = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        line = wait_for_log(proxy, "shutting down")
        waiting = re.search(r"(\d+) server and (\d+) client", line)
        assert waiting and int(waiting.group(2)) >= 10, line  # calls were in flight

        late = UdpPeer()
        try:
            late.send(
                sip_request("INVITE", f"sip:bob@127.0.0.1:{proxy.udp[1]}", port=late.port),
                proxy.udp,
            )
            refused = late.recv(5.0)
        finally:
            late.close()
        assert status_of(refused) == 503, refused
        assert header(refused, "Retry-After") == "7"

        code = proxy.proc.wait(drain_timeout + 10)
        took = time.monotonic() - sent
        r = uac.wait()
        assert (r.successful, r.failed) == (calls, 0), r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (calls, 0), u.summary()
        assert code == 0, proxy.log()
        assert took < drain_timeout + 2, f"exited after {took:.1f}s:\n{proxy.log()}"
        drained = wait_for_log(proxy, "drained in")
        print(f"\n{line}\n{drained}; exit after {took:.1f}s")
    finally:
        uas.kill()


def _invite_to_silent_callee(proxy, caller: UdpPeer) -> None:  # type: ignore[no-untyped-def]
    caller.send(
        sip_request("INVITE", f"sip:bob@127.0.0.1:{proxy.udp[1]}", port=caller.port), proxy.udp
    )
    assert status_of(caller.recv(5.0)) == 100


def test_drain_timeout_bounds_the_wait_for_a_call_never_answered(sipr_factory) -> None:
    callee, caller = UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(
            APP,
            env={"SIPR_TARGET": f"sip:127.0.0.1:{callee.port}"},
            extra_args=("--drain-timeout", "1"),
        )
        _invite_to_silent_callee(proxy, caller)
        sent = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(10) == 0, proxy.log()
        assert time.monotonic() - sent < 4
        assert "drain timeout (1s): exiting with" in proxy.log()
    finally:
        callee.close()
        caller.close()


def test_second_signal_exits_at_once(sipr_factory) -> None:
    callee, caller = UdpPeer(), UdpPeer()
    try:
        proxy = sipr_factory(
            APP,
            env={"SIPR_TARGET": f"sip:127.0.0.1:{callee.port}"},
            extra_args=("--drain-timeout", "60"),
        )
        _invite_to_silent_callee(proxy, caller)
        proxy.proc.send_signal(signal.SIGINT)
        wait_for_log(proxy, "shutting down")
        proxy.proc.send_signal(signal.SIGINT)
        assert proxy.proc.wait(10) == 1, proxy.log()
        assert "second signal" in proxy.log()
    finally:
        callee.close()
        caller.close()
