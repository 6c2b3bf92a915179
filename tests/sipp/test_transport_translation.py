"""Acceptance (issue 6, point 2, TCP part) with SIPp on both sides: a TCP
caller reaches a UDP callee through the proxy, and back, call after call. The
single-call details (both Record-Route entries, Vias, the callee's BYE over
the caller's connection) are checked in tests/integration/test_udp_tcp.py."""

from __future__ import annotations

from tests.conftest import ROOT, free_port
from tests.sipp.peers import sipr_stats
from tests.sipp.runner import Sipp

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"


def test_sipp_tcp_caller_udp_callee_1000_calls(sipp: str, sipr_factory) -> None:
    """1,000 INVITE/ACK/BYE calls, SIPp UAC over TCP, SIPp UAS over UDP. The UAC
    follows the double Record-Route, so every ACK and BYE crosses the
    transport boundary in the core's loose routing."""
    calls, rate = 1_000, 200
    uas_port, uac_port = free_port(), free_port()
    uas = Sipp(sipp, "uas_rr.xml", uas_port, calls=calls, timeout_s=60)
    try:
        proxy = sipr_factory(PROXY, env={"SIPR_TARGETS": f"sip:127.0.0.1:{uas_port}"})
        uac = Sipp(
            sipp, "uac_rr.xml", uac_port, calls=calls, remote=proxy.tcp, rate=rate,
            transport="t1", timeout_s=60,
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed, r.returncode) == (calls, 0, 0), r.summary()
        u = uas.wait()
        assert (u.successful, u.failed) == (calls, 0), u.summary()
        s = sipr_stats(proxy.tcp)
        assert s["requests_in.ack"] >= calls and s["requests_in.bye"] >= calls, s
        # One INVITE and one BYE client transaction per call, plus the ACKs.
        assert s["requests_forwarded"] - s["requests_in.ack"] == 2 * calls, s
        assert s["parse_errors"] == 0 and s["send_errors"] == 0, s
        assert proxy.alive()
    finally:
        uas.kill()
