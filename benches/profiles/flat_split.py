#!/usr/bin/env python3
"""Splits a perf profile's self time by the cost categories of benches/README.md (flat: by
the symbol a sample is in, no call stacks needed, so a release build without debug info and a
plain `perf record -p PID` will do).

usage: flat_split.py PERF.DATA [CPU_US_PER_CALL]

With CPU_US_PER_CALL (bench.sh's figure for the run) each share is also shown in µs per call.
Unlike classify.py (stacks), `malloc` called by the parser counts as the allocator here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

PERF_REPORT = ["perf", "report", "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none"]
out = subprocess.run([*PERF_REPORT, "-i", sys.argv[1]], capture_output=True, text=True).stdout
rules = [
    ("kernel (UDP send/receive, epoll, scheduling)", lambda d, s: "kernel" in d),
    ("Python cyclic GC", lambda d, s: "libpython" in d and "gc_" in s),
    ("Python interpreter and objects", lambda d, s: "libpython" in d or "_asyncio" in d),
    ("uvloop", lambda d, s: "loop.cpython" in d),
    ("allocator (mimalloc)", lambda d, s: re.search(r"\b_?mi_", s) is not None),
    ("Rust: serialising", lambda d, s: "sip::write" in s),
    (
        "Rust: parsing",
        lambda d, s: (
            re.search(r"sipr::sip::|core::str::converts::from_utf8|memchr|net::parser", s)
            is not None
        ),
    ),
    (
        "Rust: transaction layer and timers",
        lambda d, s: re.search(r"sipr::(transaction|timer)", s) is not None,
    ),
    (
        "Rust: proxy core and routing",
        lambda d, s: re.search(r"sipr::(proxy|core|dns|service|transport)", s) is not None,
    ),
    ("PyO3 bridge", lambda d, s: re.search(r"sipr::python|pyo3", s) is not None),
    ("libc (memcpy, syscalls' user side)", lambda d, s: "libc" in d or "vdso" in d),
    ("other Rust (hash tables, bytes, std)", lambda d, s: "_core" in d),
]
split, total = Counter(), 0.0
for line in out.splitlines():
    m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
    total += pct
    for name, rule in rules:
        if rule(dso, sym):
            split[name] += pct
            break
    else:
        split["other"] += pct
cpu = float(sys.argv[2]) if len(sys.argv) > 2 else None
print("| cost (perf, self time) | share |" + (" µs per call |" if cpu else ""))
print("|---|---|" + ("---|" if cpu else ""))
for name, pct in split.most_common():
    print(f"| {name} | {pct:.1f} % |" + (f" {pct / 100 * cpu:.1f} |" if cpu else ""))
