#!/usr/bin/env python3
"""Splits a profile (collapsed stacks: `inferno-collapse-perf` or `py-spy -f raw`) into the
cost categories of benches/README.md, "Where a call's CPU goes".

usage: classify.py FOLDED [CPU_US_PER_CALL]
       classify.py FOLDED --detail CATEGORY-PREFIX    (the top stacks of a category, by leaf)
       classify.py PYSPY_FOLDED --python              (py-spy: split of the Python-level time)

perf sees CPU time in every frame but no Python function; py-spy (wall-clock samples of the
running thread) names Python functions. So the CPU split comes from perf, and `--python` splits
perf's Python share (interpreter, asyncio, GC) by py-spy's samples that end in Python code (no
Rust or kernel frame at the leaf): which Python frame nearest the leaf they are in.

A sample goes to the first category (in the order below) that has a frame in its stack, so
`malloc` under the parser counts as parsing and a `sendto` made by a timer counts as sending.
With CPU_US_PER_CALL (bench.sh's figure for the run), shares are also shown as µs per call.
Idle samples (epoll_wait with nothing to do, the watchdog thread's sleep) are left out of py-spy
profiles, which sample wall-clock time; perf samples CPU time only.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

# Phase 1: a frame anywhere in the stack decides (first rule that matches wins).
STACK_RULES: list[tuple[str, str]] = [
    ("idle", r"clock_nanosleep|pthread_cond_timedwait|_watchdog\.py|Watchdog\._run"),
    ("Python GC", r"gc_collect|collect_with_callback"),
    ("Rust: parse", r"Message::parse|parse_inbound|sip::(via|uri|nameaddr|scan|lines|header)::"),
    ("Rust: serialise", r"sip::write|build_forward|build_response|strip_top_via|core::fmt::"),
    ("kernel: UDP send (incl. loopback delivery)", r"sendto|sendmmsg|udp_sendmsg"),
    ("kernel: UDP receive", r"recvmmsg|udp_recvmsg"),
    ("kernel: epoll / wake-ups", r"epoll_wait|do_epoll|select\.epoll|EpollSelector\.select"),
    ("Rust: timers, expiry of held transactions", r"Core::on_timer|__pymethod_on_timer__"),
    ("Rust: timer queue (schedule / cancel)", r"TimerQueue|TimerFd|timerfd"),
    ("Rust: transaction layer", r"sipr::transaction::"),
    ("Rust: proxy core", r"sipr::proxy::|sipr::core::"),
]
# Phase 2: otherwise the frame nearest the leaf that matches one of these decides.
LEAF_RULES: list[tuple[str, str]] = [
    ("bridge: PyO3 objects and calls", r"sipr::python::|pyo3::"),
    (
        "Python: route handler",
        r"\((stateful_app|stateless|stateless_rr|async_app|registrar_app)\.py",
    ),
    ("Python: server dispatch", r"\(sipr/(server|_deadlines|logs)\.py"),
    (
        "asyncio: tasks, futures, loop",
        r"\(asyncio/|^_asyncio|task_step|task_wakeup|TaskStepMethWrapper|future_|FutureObj_|"
        r"TaskObj_|enter_task|leave_task|register_task|FutureIter",
    ),
]
STACK = [(name, re.compile(pat)) for name, pat in STACK_RULES]
LEAF = [(name, re.compile(pat)) for name, pat in LEAF_RULES]
PYTHON = re.compile(r"^_?Py|^PyEval|\.py:\d+\)|libpython")


def classify(stack: str) -> str:
    for name, pat in STACK:
        if pat.search(stack):
            return name
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, pat in LEAF:
            if pat.search(frame):
                return name
    if any(PYTHON.search(f) for f in frames):
        return "CPython interpreter (other)"
    if any(f.endswith("_[k]") for f in frames):
        return "kernel: other"
    return "other"


def detail(path: str, prefix: str) -> int:
    """The heaviest leaf-side frame chains (4 frames) of one category."""
    chains: Counter[str] = Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack and classify(stack).startswith(prefix):
                chains[" <- ".join(reversed(stack.split(";")[-4:]))] += int(float(n))
                total += int(float(n))
    for chain, n in chains.most_common(25):
        print(f"{100 * n / max(total, 1):5.1f} %  {chain[:220]}")
    return 0


NATIVE_LEAF = re.compile(
    r"sipr::|_RN|bytes::|alloc::|core::|hashbrown|pyo3|sendto|recvmmsg|epoll_wait|__libc_recv"
)
PY_FRAME = re.compile(r"^(?P<fn>[^ ]+) \((?P<file>[^:]+\.py):\d+\)$")


def python_split(path: str) -> int:
    """Which Python code the interpreter's time goes to (py-spy --native samples)."""
    groups = [
        (
            "route handler (the app)",
            re.compile(r"(stateful_app|stateless|async_app|registrar_app)\.py$"),
        ),
        (
            "server dispatch (_dispatch, _run, deadlines)",
            re.compile(r"sipr/(server|_deadlines|logs)\.py$"),
        ),
        ("asyncio loop, tasks, futures", re.compile(r"(asyncio/|selectors\.py)")),
    ]
    counts: Counter[str] = Counter()
    with open(path) as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            idle = ("_watchdog", "clock_nanosleep", "pthread_cond_wait")
            if not stack or any(w in f for f in frames for w in idle):
                continue
            leaf_side = []
            for f in reversed(frames):
                if PY_FRAME.match(f):
                    break
                leaf_side.append(f)
            if any(NATIVE_LEAF.search(f) for f in leaf_side):
                continue  # Rust or a syscall at the leaf: perf's categories count it
            if any("_asynciomodule" in f or "getpid" in f for f in leaf_side):
                counts["asyncio loop, tasks, futures"] += int(float(n))
                continue
            for f in reversed(frames):
                m = PY_FRAME.match(f)
                if m is None:
                    continue
                name = next((g for g, pat in groups if pat.search(m["file"])), None)
                if name is not None:
                    counts[name] += int(float(n))
                    break
            else:
                counts["other Python"] += int(float(n))
    total = sum(counts.values()) or 1
    print("| Python-level time (py-spy) | share |")
    print("|---|---|")
    for name, k in counts.most_common():
        print(f"| {name} | {100 * k / total:.1f} % |")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[2] == "--python":
        return python_split(sys.argv[1])
    if len(sys.argv) == 4 and sys.argv[2] == "--detail":
        return detail(sys.argv[1], sys.argv[3])
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 2
    per_call = float(sys.argv[2]) if len(sys.argv) == 3 else None
    counts: Counter[str] = Counter()
    with open(sys.argv[1]) as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack:
                counts[classify(stack)] += int(float(n))
    counts.pop("idle", None)
    total = sum(counts.values()) or 1
    head = "| category | share |" + (" µs/call |" if per_call else "")
    print(head)
    print("|---|---|" + ("---|" if per_call else ""))
    for name, n in counts.most_common():
        row = f"| {name} | {100 * n / total:.1f} % |"
        if per_call:
            row += f" {per_call * n / total:.0f} |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
