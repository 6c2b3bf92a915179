"""Acceptance (issue 6, point 3): 20,000 concurrent TCP connections to one
sipr, each sending an OPTIONS and getting its 200, all held open at once.

The per-connection memory figure belongs to benches/tcp_memory.py; here only a
generous bound catches a leak (or a per-connection buffer gone wild)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import ROOT, options_counters
from tests.tcp_crowd import Crowd, raise_fd_limit

PROXY = ROOT / "tests" / "apps" / "stateful_proxy.py"
CONNECTIONS = 20_000
# Descriptors sipr may open besides its connections after start-up (the
# stats query's own connection, lazily imported modules, ...).
FD_HEADROOM = 32
MAX_BYTES_PER_CONNECTION = 64 * 1024


def _fd_budget(pid: int) -> tuple[int, int]:
    """(hard open-files limit, descriptors open now) of process `pid`."""
    hard = 0
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            hard = int(line.split()[4])
    return hard, len(os.listdir(f"/proc/{pid}/fd"))


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _connections(addr: tuple[str, int]) -> int:
    """Open connections per the core, minus the stats query's own."""
    return options_counters(addr, "stats", "x-stat-")["connections"] - 1


def _wait_connections(addr: tuple[str, int], want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (n := _connections(addr)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


def test_20k_concurrent_tcp_connections_each_get_200(sipr_factory) -> None:
    # sipr raises its own soft limit to the hard one; the hard one is
    # inherited from here, and no unprivileged process can raise it.
    raise_fd_limit()
    proxy = sipr_factory(PROXY)
    pid = proxy.proc.pid
    hard, used = _fd_budget(pid)
    n = min(CONNECTIONS, hard - used - FD_HEADROOM)
    if n < CONNECTIONS:
        print(f"\nhard open-files limit {hard}: {n} connections, not {CONNECTIONS}")
    assert n >= CONNECTIONS - 100, f"hard open-files limit {hard} too low for this test"
    rss_before = _rss_bytes(pid)
    crowd = Crowd(proxy.tcp, n)
    try:
        opened = crowd.connect()
        assert (opened.ok, opened.errors) == (n, []), opened.errors
        assert _wait_connections(proxy.tcp, n, 20) == n
        answered = crowd.options()
        assert (answered.ok, answered.errors) == (n, []), answered.errors
        # Every connection is still open, now idle, and the core counts each.
        assert _connections(proxy.tcp) == n
        per_connection = (_rss_bytes(pid) - rss_before) / n
        print(f"\n{n} connections: RSS +{per_connection / 1024:.1f} KB per connection")
        assert per_connection < MAX_BYTES_PER_CONNECTION
        stats = options_counters(proxy.tcp, "stats", "x-stat-")
        assert stats["overload_rejects"] == 0 and stats["parse_errors"] == 0, stats
        assert stats["requests_in.options"] >= n, stats
        # Per transport: all of them TCP (plus this query's own connection).
        assert stats["connections.tcp"] == n + 1, stats
        assert stats["connections.tls"] == stats["connections.ws"] == 0, stats
    finally:
        crowd.close()
    # Closed by the peers: the core forgets every one of them.
    assert _wait_connections(proxy.tcp, 0, 30) == 0
    assert proxy.alive()
