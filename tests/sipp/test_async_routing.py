"""Acceptance (issue 4): async routing through examples/billing_async.py with
the billing service of examples/billing_service.py, between real SIPp peers.

1. 20,000 calls at 500 cps, billing answering after 50 ms: 0 failed, and the
   handlers suspended at any time ~ rate x delay (25).
2. CANCEL while the handler awaits billing: 200 + 487 upstream, nothing
   downstream, the handler task cancelled.
3. Billing never answers: 503 "Billing Unavailable" at the 5 s route deadline,
   nothing left behind; a wrong SIPR_BILLING gives 500 or a startup error.
4. Flood at 3x capacity for 30 s: excess shed with 503, the process survives
   with bounded RSS, calls succeed again within 2 s.
5. (smaller) 5,000 suspended INVITEs in one worker: count and memory per
   suspended transaction; benches/suspend_scale.py runs the 50,000 of the issue.

Durations: point 1 takes 40 s and point 4 30 s + ~5 s (the issue's numbers);
the rest ~25 s together.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import EXAMPLES, ROOT, UdpPeer, free_port, header, sip_request, status_of
from tests.sipp.async_peers import (
    SCENARIOS,
    BillingService,
    MassInviter,
    ProbeCall,
    app_stats,
    options,
    rss_kb,
    wait_stats,
)
from tests.sipp.runner import Sipp, run_uac, start_uas

APP = EXAMPLES / "billing_async.py"
HOLD_APP = ROOT / "tests" / "apps" / "suspend_hold.py"

#: Highest clean rate of billing_async (billing 50 ms, SIPp uac/uas, 10 s runs)
#: measured on the 2-core box: 2,000 cps with 0 retransmissions; 2,500 and
#: 3,000 cps completed but with a few retransmissions (3 and 9). With other
#: load on the box the clean rate fell to 1,500 cps.
CAPACITY_CPS = 2000


@pytest.fixture
def billing():  # type: ignore[no-untyped-def]
    started: list[BillingService] = []

    def start(*args: str) -> BillingService:
        b = BillingService(*args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def _billing_proxy(sipr_factory, billing_addr: str, target: str, **env: str):  # type: ignore[no-untyped-def]
    return sipr_factory(APP, env={"SIPR_BILLING": billing_addr, "SIPR_TARGETS": target, **env})


# 1 ---------------------------------------------------------------------------


def test_20k_calls_500cps_billing_50ms(sipp: str, sipr_factory, billing) -> None:
    calls, rate, delay = 20_000, 500, 0.05
    bill = billing("--delay", str(delay))
    uas_port, uac_port = free_port(), free_port()
    uas = start_uas(sipp, uas_port)
    try:
        proxy = _billing_proxy(sipr_factory, bill.addr, f"sip:127.0.0.1:{uas_port}")
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                s = app_stats(proxy.tcp)
                samples.append((time.monotonic(), s["handlers-suspended"]))
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        start = time.monotonic()
        sampler.start()
        result = run_uac(sipp, proxy.udp, calls=calls, rate=rate, port=uac_port, timeout_s=100)
        stop.set()
        sampler.join(5)
        assert (result.successful, result.failed) == (calls, 0), result.output[-3000:]
        assert result.returncode == 0, result.output[-3000:]
        # Steady state: skip the first and last 3 s (ramp up, drain).
        end = start + calls / rate
        steady = [n for t, n in samples if start + 3 < t < end - 3]
        expected = rate * delay  # 25 (Little's law: arrival rate x time held)
        median = statistics.median(steady)
        near = sum(1 for n in steady if 0.5 * expected <= n <= 2 * expected)
        print(
            f"\n{calls} calls at {rate} cps: retransmissions {result.retransmissions}; "
            f"suspended handlers: median {median}, min {min(steady)}, max {max(steady)} "
            f"over {len(steady)} samples (expected ~{expected:.0f})"
        )
        assert 0.8 * expected <= median <= 1.4 * expected, steady
        assert near >= 0.8 * len(steady), steady
        s = wait_stats(proxy.tcp, lambda s: s["handlers-suspended"] == 0, 10)
        assert s["authorized"] == calls, s
        assert s["handlers-suspended"] == 0 and s["handlers-deadline_expired"] == 0, s
        assert s["overload_rejects"] == 0 and s["cancelled"] == 0, s
        assert proxy.alive()
    finally:
        uas.stop()


# 2 ---------------------------------------------------------------------------


def test_cancel_while_suspended(sipp: str, sipr_factory, billing) -> None:
    """The handler awaits billing (which never answers carol); the caller
    CANCELs after the 100 Trying: 200 for the CANCEL, 487 for the INVITE, the
    handler's await raises CancelledError, and nothing is sent downstream."""
    calls = 20
    bill = billing("--hang", "carol")
    downstream = UdpPeer()  # must receive nothing
    try:
        proxy = _billing_proxy(sipr_factory, bill.addr, f"sip:127.0.0.1:{downstream.port}")
        uac = Sipp(
            sipp, str(SCENARIOS / "uac_cancel_suspended.xml"), free_port(), calls=calls,
            remote=proxy.udp, rate=10, timeout_s=30, extra=("-s", "carol"),
        )  # fmt: skip
        r = uac.wait()
        assert (r.successful, r.failed) == (calls, 0), r.summary()
        assert downstream.recv(0.5) is None, "something was sent downstream"
        s = wait_stats(proxy.tcp, lambda s: s["cancelled"] >= calls, 5)
        assert s["cancelled"] == calls, s  # the handler's CancelledError, per call
        assert s["authorized"] == 0 and s["handlers-deadline_expired"] == 0, s
        assert s["handlers-suspended"] == 0 and s["pending"] == 1, s  # 1: this query
        assert s["requests_forwarded"] == 0 and s["requests_in-cancel"] == calls, s
        assert proxy.log().count("handler cancelled: INVITE") == calls
    finally:
        downstream.close()


# 3 ---------------------------------------------------------------------------


def test_deadline_answers_503_and_leaks_nothing(sipr_factory, billing) -> None:
    """50 INVITEs whose billing never answers: each gets 503 Billing
    Unavailable at the 5 s route deadline; afterwards no handler, pending
    request, transaction, proxy context or timer is left."""
    n, deadline = 50, 5.0
    bill = billing("--hang", "carol")
    downstream = UdpPeer()
    try:
        proxy = _billing_proxy(sipr_factory, bill.addr, f"sip:127.0.0.1:{downstream.port}")
        before = app_stats(proxy.tcp)
        inv = MassInviter(proxy.udp, n, "dl", user="bob", caller="carol")
        try:
            sent = time.monotonic()
            inv.send_all(rate=1000)
            time.sleep(1.0)
            s = app_stats(proxy.tcp)
            assert s["handlers-suspended"] == n, s
            assert inv.wait_finals(deadline + 3) == n
            waited = sorted(inv.final_at[i] - sent for i in range(n))
            assert set(inv.finals.values()) == {503}
            assert all(
                line.endswith("503 Billing Unavailable") for line in inv.final_lines.values()
            )
            assert deadline - 0.1 <= waited[0] and waited[-1] <= deadline + 1.0, waited
            # The INVITE transactions end T4 (5 s) after our ACKs (Timer I).
            s = wait_stats(
                proxy.tcp,
                lambda s: (
                    s["transactions-server"] <= 1
                    and s["transactions-client"] == 0
                    and s["transactions-contexts"] == 0
                    and s["timers"] == 0
                ),
                12,
            )
        finally:
            inv.close()
        print(f"\nfirst/last 503 after {waited[0]:.2f}/{waited[-1]:.2f} s; after: {s}")
        assert s["handlers-deadline_expired"] == n and s["handlers-suspended"] == 0, s
        assert s["handlers-running"] <= 1 and s["pending"] == 1, s  # 1: this query
        assert s["transactions-server"] <= 1 and s["transactions-client"] == 0, s
        assert s["transactions-contexts"] == 0 and s["timers"] == 0, s
        assert s["relays_waiting"] == 0 and s["requests_forwarded"] == 0, s
        assert s["connections"] <= before["connections"] + 1, s
        assert downstream.recv(0.1) is None
        assert proxy.log().count("route deadline reached for INVITE") == n
    finally:
        downstream.close()


def test_unreachable_billing_answers_500_with_call_id(sipr_factory) -> None:
    """SIPR_BILLING pointing at a closed port: authorize() raises, the caller
    gets 500 at once (not a hang), and the log names the Call-ID."""
    closed = free_port()
    proxy = _billing_proxy(sipr_factory, f"127.0.0.1:{closed}", f"sip:127.0.0.1:{free_port()}")
    peer = UdpPeer()
    try:
        start = time.monotonic()
        peer.send(sip_request("INVITE", port=peer.port, call_id="nobilling-1"), proxy.udp)
        resp = peer.recv(3.0)
        while resp is not None and (status_of(resp) or 0) < 200:
            resp = peer.recv(3.0)
        assert status_of(resp) == 500, resp
        assert time.monotonic() - start < 1.0
        deadline = time.monotonic() + 3
        while "route handler failed (Call-ID nobilling-1)" not in proxy.log():
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.05)
        assert "ConnectionRefusedError" in proxy.log()
    finally:
        peer.close()


def test_malformed_billing_setting_fails_at_startup() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sipr", "run", str(APP), "--listen", "udp:127.0.0.1:0"],
        env={**os.environ, "SIPR_BILLING": "billing.example.net"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "SIPR_BILLING must be HOST:PORT" in lines[0], out.stderr


# 4 ---------------------------------------------------------------------------


def test_ack_for_overload_503_is_absorbed(sipr_factory, billing) -> None:
    """The core's stateless 503 is ACKed hop by hop: the ACK must end in the
    core, not reach the route handler (which would relay it downstream)."""
    bill = billing("--hang", "alice")
    downstream = UdpPeer()
    peer = UdpPeer()
    try:
        proxy = _billing_proxy(
            sipr_factory, bill.addr, f"sip:127.0.0.1:{downstream.port}",
            SIPR_MAX_PENDING="1", SIPR_ROUTE_DEADLINE="1",
        )  # fmt: skip
        peer.send(sip_request("INVITE", port=peer.port, call_id="held"), proxy.udp)
        time.sleep(0.2)  # held: billing never answers alice
        peer.send(sip_request("INVITE", port=peer.port, call_id="shed", branch="shed1"), proxy.udp)
        shed = None
        while shed is None or header(shed, "Call-ID") != "shed":
            shed = peer.recv(2.0)
            assert shed is not None
        assert status_of(shed) == 503 and header(shed, "Retry-After") == "5"
        time.sleep(1.5)  # the held one reaches its deadline: no longer overloaded
        ack = sip_request("ACK", port=peer.port, call_id="shed", branch="shed1").replace(
            b"To: <sip:sipr@127.0.0.1>", f"To: {header(shed, 'To')}".encode()
        )
        peer.send(ack, proxy.udp)
        assert downstream.recv(1.0) is None, "the ACK of our own 503 was relayed"
        s = app_stats(proxy.tcp)
        assert s["requests_in-ack"] == 1 and s["requests_forwarded"] == 0, s
    finally:
        downstream.close()
        peer.close()


def _answer(peer: UdpPeer, req: bytes, status: int = 200) -> None:
    """A UAS's response to `req` (Vias, From, To, Call-ID, CSeq copied) to
    the top Via's address."""
    head = req.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    keep = [
        ln
        for ln in head[1:]
        if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
    ]
    via = next(ln for ln in keep if ln.lower().startswith("via"))
    host, port = via.split()[2].split(";")[0].rsplit(":", 1)
    resp = f"SIP/2.0 {status} OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
    peer.send(resp.encode(), (host, int(port)))


def test_in_dialog_requests_get_headroom_beyond_the_bound(sipr_factory, billing) -> None:
    """At max_pending (1 here) a new INVITE is shed with 503, but a BYE of an
    admitted call (To tag) is still routed: refusing it would leave the call
    up. In-dialog requests are shed only beyond twice the bound."""
    bill = billing("--hang", "alice")
    downstream, peer = UdpPeer(), UdpPeer()
    try:
        proxy = _billing_proxy(
            sipr_factory, bill.addr, f"sip:127.0.0.1:{downstream.port}",
            SIPR_MAX_PENDING="1", SIPR_ROUTE_DEADLINE="2",
        )  # fmt: skip
        peer.send(sip_request("INVITE", port=peer.port, call_id="held"), proxy.udp)
        time.sleep(0.2)
        peer.send(sip_request("INVITE", port=peer.port, call_id="new"), proxy.udp)
        bye = sip_request("BYE", port=peer.port, call_id="up").replace(
            b"To: <sip:sipr@127.0.0.1>", b"To: <sip:sipr@127.0.0.1>;tag=callee1"
        )
        peer.send(bye, proxy.udp)
        relayed = downstream.recv(2.0)
        assert relayed is not None and relayed.startswith(b"BYE "), relayed
        _answer(downstream, relayed)
        got = {}
        while len(got) < 2 and (resp := peer.recv(2.0)) is not None:
            if (status_of(resp) or 0) >= 200:
                got[header(resp, "Call-ID")] = status_of(resp)
        assert got == {"new": 503, "up": 200}, got
    finally:
        downstream.close()
        peer.close()


def _counts(workdir) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The last row of SIPp's -trace_counts file (messages per scenario line)."""
    for f in workdir.glob("*_counts.csv"):
        rows = list(csv.reader(f.open(), delimiter=";"))
        return {k: int(v) for k, v in zip(rows[0], rows[-1], strict=False) if v.isdigit()}
    return {}


#: RSS bound for the flood: ~40 MB at start plus every call admitted in the
#: 30 s (Timer L/J = 64*T1 = 32 s: the INVITE and BYE transactions and their
#: proxy context linger that long), ~6 KB per call; ~3,000 cps are admitted
#: while shedding (90,000 calls, ~540 MB measured). Shed INVITEs cost nothing.
FLOOD_RSS_LIMIT_MB = 768


def test_flood_3x_capacity(sipp: str, sipr_factory, billing) -> None:
    """3x capacity offered for 30 s with max_pending 200: the excess gets 503
    (stateless, from Rust), admitted calls complete (their BYEs are not shed),
    the process survives with bounded memory, and calls succeed again at most
    2 s after the flood."""
    rate, seconds = 3 * CAPACITY_CPS, 30
    bill = billing("--delay", "0.05")
    uas_port, uac_port = free_port(), free_port()
    uas = start_uas(sipp, uas_port)
    probe = None
    try:
        proxy = _billing_proxy(
            sipr_factory, bill.addr, f"sip:127.0.0.1:{uas_port}", SIPR_MAX_PENDING="200"
        )
        pid = proxy.proc.pid
        rss_start = rss_kb(pid)
        start = time.monotonic()
        uac = Sipp(
            sipp, str(SCENARIOS / "uac_call_or_503.xml"), uac_port, calls=rate * seconds,
            remote=proxy.udp, rate=rate, timeout_s=seconds + 30,
            extra=("-trace_counts", "-l", str(rate * 3)),
        )  # fmt: skip
        rss = []
        while time.monotonic() < start + seconds:
            assert proxy.alive(), proxy.log()[-3000:]
            rss.append(rss_kb(pid))
            time.sleep(0.5)
        flood_end = time.monotonic()
        # Normal calls right after: the first success must come within 2 s.
        probe = ProbeCall(proxy.udp)
        outcomes = []
        while time.monotonic() < flood_end + 5:
            status = probe.call(timeout=0.5)
            outcomes.append((round(time.monotonic() - flood_end, 2), status))
            if status == 200:
                break
        recovered = outcomes[-1][0] if outcomes[-1][1] == 200 else None
        after = [probe.call(timeout=1.0) for _ in range(5)]
        r = uac.wait()
        counts = _counts(uac.workdir)
        assert proxy.alive()
        s = app_stats(proxy.tcp)
        created, shed = r.created, counts.get("3_503_Recv", 0)
        completed = counts.get("7_200_Recv", 0)
        print(
            f"\nflood: offered {created} calls in {seconds} s ({created / seconds:.0f} cps, "
            f"capacity ~{CAPACITY_CPS}); 503 {shed}, completed {completed}, failed {r.failed}; "
            f"RSS {rss_start // 1024} -> max {max(rss) // 1024} MB "
            f"({(max(rss) - rss_start) * 1024 / max(completed, 1):.0f} B per completed call); "
            f"overload_rejects {s['overload_rejects']}; recovered after {recovered} s {outcomes}"
        )
        assert created >= 0.9 * rate * seconds, r.summary()  # SIPp did offer 3x
        # Saturated, the proxy admits ~1.5x its clean rate and sheds the rest.
        assert shed >= 0.25 * created, (counts, r.summary())
        # Goodput is a benchmark figure, not a test one; this floor only shows the
        # proxy keeps admitting work under flood instead of shedding everything
        # (a quiet 2-core box completes ~0.5x capacity, CI saw 0.48x).
        assert completed >= 0.2 * CAPACITY_CPS * seconds, (counts, r.summary())
        # Every call got its 503 or completed; none failed (no BYE was shed).
        assert shed + completed >= 0.999 * created, (counts, r.summary())
        # The failures allowed are stray 200s ("7_200_Unexp"): an ACK that waited
        # in the saturated proxy longer than T1 let the UAS retransmit its 200,
        # which a proxy must pass on (RFC 3261 §16.7) and which this scenario,
        # having sent its BYE already, cannot place.
        assert r.failed <= 0.001 * created, r.summary()
        assert r.failed == counts.get("7_200_Unexp", 0), counts
        assert s["overload_rejects"] >= shed, s
        assert max(rss) <= FLOOD_RSS_LIMIT_MB * 1024, rss
        assert recovered is not None and recovered <= 2.0, outcomes
        assert after == [200] * 5, after
    finally:
        if probe is not None:
            probe.close()
        uas.stop()


# 5 ---------------------------------------------------------------------------

#: Target of the issue: at most 4 KB per suspended transaction (task,
#: coroutines, Request, server transaction, 100 Trying, deadline entry).
SUSPENDED_BYTES_LIMIT = 4096


def test_5k_suspended_invites_memory(sipr_factory) -> None:
    """5,000 INVITEs held by handlers awaiting one event (the 50,000 of the
    issue: benches/suspend_scale.py). Counts, RSS per suspended transaction,
    all answered after the release, and a second round reuses the memory."""
    n = 5000
    proxy = sipr_factory(HOLD_APP)
    pid = proxy.proc.pid
    warm = MassInviter(proxy.udp, 1000, "warm")
    try:  # warm-up: allocator pools, tables, code paths
        warm.send_all(rate=10_000)
        wait_stats(proxy.tcp, lambda s: s["held"] == 1000, 10, "stats")
        assert options(proxy.tcp, "release") == 200
        assert warm.wait_finals(10) == 1000
    finally:
        warm.close()
    wait_stats(proxy.tcp, lambda s: s["transactions-server"] <= 1, 10, "stats")
    rss0 = rss_kb(pid)
    per_txn = []
    for rnd in range(2):
        inv = MassInviter(proxy.udp, n, f"r{rnd}")
        try:
            inv.send_all(rate=10_000)
            time.sleep(0.5)
            inv.resend_unacknowledged(rate=10_000)  # only if a datagram was lost
            s = wait_stats(proxy.tcp, lambda s: s["handlers-suspended"] >= n, 10, "stats")
            assert s["handlers-suspended"] == n and s["held"] == n, s
            assert s["pending"] == n + 1 and s["transactions-server"] == n + 1, s
            rss = rss_kb(pid)
            per_txn.append((rss - rss0) * 1024 / n)
            assert options(proxy.tcp, "release") == 200
            assert inv.wait_finals(15) == n
            assert set(inv.finals.values()) == {480}
        finally:
            inv.close()
        s = wait_stats(
            proxy.tcp,
            lambda s: s["transactions-server"] <= 1 and s["handlers-suspended"] == 0,
            12,
            "stats",
        )
        assert s["transactions-server"] <= 1 and s["pending"] == 1, s
        assert s["handlers-suspended"] == 0 and s["held"] == 0, s
    rss_end = rss_kb(pid)
    print(
        f"\n{n} suspended: {per_txn[0]:.0f} B per transaction (RSS {rss0} kB -> "
        f"+{per_txn[0] * n / 1024:.0f} kB); second round +{per_txn[1] * n / 1024:.0f} kB over "
        f"the same base; after both: {rss_end} kB"
    )
    assert per_txn[0] <= SUSPENDED_BYTES_LIMIT, per_txn
    # Memory freed by the first round is reused by the second (no leak): the
    # second holds the same 5,000 within 25% of the first round's growth.
    assert per_txn[1] <= 1.25 * per_txn[0], per_txn
    assert rss_end - rss0 <= 1.25 * per_txn[0] * n / 1024, (rss0, rss_end)
