"""Helpers for the stateful acceptance tests: the proxy's counters and CPU
time from /proc. (SIPp itself: tests/sipp/runner.py.)"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tests.conftest import header, options_counters
from tests.sipp.runner import SCENARIOS, Sipp, SippStats


def sipr_stats(addr: tuple[str, int]) -> dict[str, int]:
    """The proxy's counters (`OPTIONS sip:stats@proxy` of tests/apps/stateful_proxy.py)."""
    return options_counters(addr, "stats", "x-stat-")


def wait_drained(addr: tuple[str, int], timeout: float) -> dict[str, int]:
    """Polls (over TCP, see `sipr_stats`) until no transaction, proxy context or
    timer is left but the one of the stats request being answered."""
    deadline = time.monotonic() + timeout
    while True:
        s = sipr_stats(addr)
        if (
            s["transactions.server"] <= 1
            and s["transactions.client"] == 0
            and s["transactions.contexts"] == 0
            and s["timers"] == 0
        ):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"transactions did not drain in {timeout}s: {s}")
        # The previous query's Timer J (0 over TCP) fires at the next whole
        # second (coarse timers): poll slower than that.
        time.sleep(1.1)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` in ns (schedstat: exact, not ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def cpu_ticks_ms(pid: int) -> float:
    """utime+stime of `pid` from /proc/PID/stat, in ms (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def count_in(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


__all__ = ["SCENARIOS", "Sipp", "SippStats", "cpu_ns", "cpu_ticks_ms", "header", "sipr_stats"]
