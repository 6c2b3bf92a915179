"""Scale benchmark (issue 4, point 5): 50,000 INVITEs suspended at once in one
worker, memory per suspended transaction (target <= 4 KB).

    python benches/suspend_scale.py [--count 50000] [--rate 10000] [--rounds 2]

Serves tests/apps/suspend_hold.py (`sipr run`, max_pending 60,000): every
INVITE's handler awaits one asyncio.Event. A raw UDP client sends COUNT
INVITEs with unique Call-IDs and branches, paced at RATE per second (the
proxy's 4 MB socket buffer is never overrun; INVITEs that got no 100 Trying
are retransmitted), until `handlers.suspended == COUNT`. RSS (/proc) before
and at that point gives the bytes per suspended transaction. `OPTIONS
sip:release@` then sets the event: every handler answers 480, the client ACKs,
the transactions end (Timer I, 5 s) and RSS is read again. A second round
shows whether the memory of the first is reused (no leak).

Exits 1 if a count is wrong or the per-transaction target is missed. Not a
test (about 20 s per round on 2 cores); tests/sipp/test_async_routing.py
asserts the same at 5,000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_sipr  # noqa: E402
from tests.sipp.async_peers import MassInviter, options, rss_kb, wait_stats  # noqa: E402

APP = ROOT / "tests" / "apps" / "suspend_hold.py"
TARGET_BYTES = 4096


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=10_000, help="INVITEs per second")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    n = args.count
    proxy = start_sipr(APP, env={"SIPR_MAX_PENDING": str(n + 10_000)})
    pid = proxy.proc.pid
    ok = True
    try:
        warm = MassInviter(proxy.udp, 1000, "warm")
        warm.send_all(args.rate)
        wait_stats(proxy.tcp, lambda s: s["held"] == 1000, 10, "stats")
        options(proxy.tcp, "release")
        warm.wait_finals(10)
        warm.close()
        wait_stats(proxy.tcp, lambda s: s["transactions-server"] <= 1, 15, "stats")
        base = rss_kb(pid)
        print(f"sipr pid {pid}: RSS after warm-up {base / 1024:.1f} MB")
        for rnd in range(args.rounds):
            inv = MassInviter(proxy.udp, n, f"s{rnd}")
            sent_in = inv.send_all(args.rate)
            time.sleep(1.0)
            resent = inv.resend_unacknowledged(args.rate)
            s = wait_stats(proxy.tcp, lambda s: s["handlers-suspended"] >= n, 30, "stats")
            peak = rss_kb(pid)
            per_txn = (peak - base) * 1024 / n
            counted = s["handlers-suspended"] == n and s["held"] == n
            t0 = time.monotonic()
            options(proxy.tcp, "release")
            answered = inv.wait_finals(60)
            answer_s = time.monotonic() - t0
            inv.close()
            d = wait_stats(
                proxy.tcp,
                lambda s: s["transactions-server"] <= 1 and s["handlers-suspended"] == 0,
                30,
                "stats",
            )
            after = rss_kb(pid)
            drained = d["transactions-server"] <= 1 and d["handlers-suspended"] == 0
            print(
                f"round {rnd + 1}: sent {n} in {sent_in:.1f} s (resent {resent}); "
                f"handlers.suspended {s['handlers-suspended']}, held {s['held']}, "
                f"server transactions {s['transactions-server']}; "
                f"RSS {base / 1024:.1f} -> {peak / 1024:.1f} MB = {per_txn:.0f} B per suspended "
                f"transaction (target {TARGET_BYTES}); released: {answered} answered "
                f"({sorted(set(inv.finals.values()))}) in {answer_s:.1f} s; "
                f"drained {drained}: RSS {after / 1024:.1f} MB"
            )
            ok &= counted and answered == n and drained and per_txn <= TARGET_BYTES
    finally:
        code = proxy.stop()
        ok &= code == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
