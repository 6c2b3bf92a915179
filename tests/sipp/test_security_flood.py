"""Issue 17 acceptance 1 and 6: flood bans in the core (Kamailio `pike`) and
a SIPVicious-style scan, with SIPp and raw sockets from 127.0.0.x sources
(nothing trusted: the default trust of loopback is switched off)."""

from __future__ import annotations

import time

from tests.conftest import free_port
from tests.integration.ctlkit import rpc
from tests.sipp.peers import cpu_ns
from tests.sipp.securitykit import (
    UdpFrom,
    bans,
    log_lines,
    process_load,
    sipp_at,
    start,
    stats,
    wait_for,
)

FLOODER, CALLER, SCANNER = "127.0.0.3", "127.0.0.2", "127.0.0.4"
FLOOD_RATE, FLOOD_SECONDS = 5000, 5
CALL_RATE, CALLS = 100, 600
BAN_SECONDS = 8.0


def test_flood_is_banned_while_calls_from_elsewhere_complete(sipp: str, sipr_factory) -> None:
    uas_port = free_port()
    sipr = start(
        sipr_factory,
        {
            "trusted": [],
            # 300 requests/s from the caller (INVITE, ACK, BYE at 100 cps)
            # stay well under; the flood trips it in a fifth of a second.
            "flood": {"limit": 1000, "window": 1.0, "ban": BAN_SECONDS},
            "target": f"sip:127.0.0.1:{uas_port}",
        },
    )
    uas = sipp_at(sipp, "uas_answer.xml", "127.0.0.1", port=uas_port, calls=CALLS, timeout_s=60)
    caller = sipp_at(
        sipp, "uac_call.xml", CALLER, calls=CALLS, rate=CALL_RATE, remote=sipr.udp, timeout_s=60
    )
    base = stats(sipr, "requests_in.OPTIONS")["requests_in.OPTIONS"]
    flooder = sipp_at(
        sipp,
        "flood_options.xml",
        FLOODER,
        calls=FLOOD_RATE * FLOOD_SECONDS,
        rate=FLOOD_RATE,
        remote=sipr.udp,
        timeout_s=FLOOD_SECONDS + 30,
        extra=("-l", str(FLOOD_RATE * 2)),
    )
    try:
        first = wait_for(
            lambda: (
                stats(sipr, "requests_in.OPTIONS")["requests_in.OPTIONS"] > base and time.time()
            ),
            10,
            "the first flood request",
            every=0.01,
        )
        ban = wait_for(lambda: bans(sipr).get(FLOODER), 5, "the flood ban")
        banned_after = ban["since"]
        answered = stats(sipr, "requests_in.OPTIONS")["requests_in.OPTIONS"] - base
        # CPU while the flood is being dropped (and the calls go on).
        time.sleep(0.3)
        drops0, cpu0, t0 = stats(sipr)["security.banned_drops"], cpu_ns(sipr.proc.pid), time.time()
        time.sleep(2.0)
        drops1, cpu1, t1 = stats(sipr)["security.banned_drops"], cpu_ns(sipr.proc.pid), time.time()
        assert flooder.proc.poll() is None, "the flood ended before the CPU was measured"
        flood_result = flooder.wait()
        calls = caller.wait()
        uas.wait()
    finally:
        for p in (flooder, caller, uas):
            p.kill()
    cpu_share = (cpu1 - cpu0) / 1e9 / (t1 - t0)
    dropped_rate = (drops1 - drops0) / (t1 - t0)
    print(
        f"\nflood from {FLOODER}: {answered} requests answered before the ban; "
        f"banned {ban['detail']}; dropped {dropped_rate:.0f}/s while banned; sipr CPU "
        f"{cpu_share * 100:.1f}% of a core (calls at {CALL_RATE} cps included); "
        f"flooder created {flood_result.created}; load {process_load()}"
    )
    assert calls.successful == CALLS and calls.failed == 0, calls.summary()
    assert ban["reason"] == "flood"
    assert answered <= FLOOD_RATE, "banned after more than a second's worth of flood"
    assert banned_after - first < 1.0
    assert dropped_rate > 0.5 * FLOOD_RATE, "the flooder did not keep up its rate"
    assert cpu_share < 0.20
    # The ban expires when configured, logged once each way.
    wait_for(lambda: FLOODER not in bans(sipr), BAN_SECONDS + 5, "the ban to expire")
    wait_for(lambda: log_lines(sipr, f"ban of {FLOODER} lifted"), 5, "the lift log line")
    assert len(log_lines(sipr, f"banned {FLOODER} ")) == 1, sipr.log()[-3000:]
    probe = UdpFrom(FLOODER)
    try:
        assert probe.ask(sipr.udp) == 200
    finally:
        probe.close()
    s = stats(sipr, "security.")
    assert s["security.bans.flood"] == 1
    assert s["security.banned_drops"] >= drops1


def test_scanner_sweep_is_banned_with_one_log_line(sipr_factory) -> None:
    """svmap/svwar style: OPTIONS to a sweep of ports, then REGISTERs for
    extensions 100-199, all with the `friendly-scanner` User-Agent, slowly
    enough that the flood detection alone would not catch it."""
    sipr = start(sipr_factory, {"trusted": [], "flood": {"limit": 1000}, "target": "sip:x"})
    host, port = sipr.udp
    scanner = UdpFrom(SCANNER)
    answers = 0
    sent = 0
    try:
        ua = "User-Agent: friendly-scanner\r\n"
        for p in [port - 2, port - 1, port, port + 1, port + 2]:
            scanner.request((host, p), "OPTIONS", uri=f"sip:100@{host}:{p}", extra=ua)
            sent += p == port
        for ext in range(100, 200):
            scanner.request((host, port), "REGISTER", uri=f"sip:{ext}@{host}", extra=ua)
            sent += 1
        while scanner.recv(0.5) is not None:
            answers += 1
        ban = wait_for(lambda: bans(sipr).get(SCANNER), 5, "the scanner ban")
        # A regular request from the banned address gets no answer either.
        assert scanner.ask(sipr.udp, "OPTIONS", timeout=0.5) is None
    finally:
        scanner.close()
    assert answers == 0, "the scanner got answers"
    assert ban["reason"] == "scanner" and "friendly-scanner" in ban["detail"]
    assert ban["dropped"] == sent - 1, ban  # every packet after the first: unparsed
    wait_for(lambda: log_lines(sipr, f"banned {SCANNER} "), 5, "the ban log line")
    time.sleep(0.5)  # a second housekeeping round: still one line
    lines = log_lines(sipr, SCANNER)
    assert len(lines) == 1, lines
    assert stats(sipr, "security.")["security.bans.scanner"] == 1
    # ban.remove lets it in again at once.
    assert rpc(sipr.ctl, "ban.remove", SCANNER)["removed"] is True
    probe = UdpFrom(SCANNER)
    try:
        assert probe.ask(sipr.udp) == 200
    finally:
        probe.close()
