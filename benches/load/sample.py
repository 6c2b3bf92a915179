#!/usr/bin/env python3
"""Samples a proxy's process tree while bench.sh measures it (soak runs).

usage: sample.py BENCH_SH_PID PORT INTERVAL_S OUT.tsv

Finds the proxy that bench.sh started (the child of BENCH_SH_PID that is the
owner of UDP PORT, or its ancestor), then every INTERVAL_S seconds appends one
row: epoch time, CPU ticks of the tree (utime+stime+cutime+cstime, as bench.sh
counts them), RSS and PSS summed over the tree (kB), process count, and two
controls: the CPU ticks of the SIPp processes (the same calls' other ends: if
their CPU per call moves with the proxy's, the machine changed, not the proxy)
and the host's steal ticks (/proc/stat: time the hypervisor gave away). Stops when
the proxy or bench.sh ends. It is not a descendant of the proxy, so its own
CPU is never charged to it.
"""

from __future__ import annotations

import os
import sys
import time


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(root: int) -> list[int]:
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def udp_owner_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if int(f[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f[9])
        except OSError:
            continue
    return inodes


def find_proxy(bench_pid: int, port: int) -> int | None:
    """The child of bench.sh whose tree holds the socket bound to `port`."""
    inodes = udp_owner_inodes(port)
    if not inodes:
        return None
    for child in children_map().get(bench_pid, []):
        for pid in tree(child):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return child
    return None


def ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15])


def sipp_ticks() -> int:
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as fh:
                if fh.read().strip() != "sipp":
                    continue
            total += ticks(int(name))
        except OSError:
            continue
    return total


def steal_ticks() -> int:
    with open("/proc/stat") as fh:
        f = fh.readline().split()
    return int(f[8]) if len(f) > 8 else 0


def memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    bench_pid, port = int(sys.argv[1]), int(sys.argv[2])
    interval, out = float(sys.argv[3]), sys.argv[4]
    root = None
    while root is None:
        if not os.path.exists(f"/proc/{bench_pid}"):
            return 1
        root = find_proxy(bench_pid, port)
        if root is None:
            time.sleep(0.2)
    with open(out, "w") as fh:
        fh.write("epoch\tticks\trss_kb\tpss_kb\tnprocs\tsipp_ticks\tsteal_ticks\n")
        next_at = time.monotonic()
        while os.path.exists(f"/proc/{root}"):
            total_ticks = rss = pss = n = 0
            for pid in tree(root):
                try:
                    total_ticks += ticks(pid)
                    r, p = memory_kb(pid)
                except OSError:
                    continue
                rss, pss, n = rss + r, pss + p, n + 1
            fh.write(
                f"{time.time():.3f}\t{total_ticks}\t{rss}\t{pss}\t{n}"
                f"\t{sipp_ticks()}\t{steal_ticks()}\n"
            )
            fh.flush()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
