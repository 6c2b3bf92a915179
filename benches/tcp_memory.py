"""Memory per idle TCP connection (issue 6, point 3): sipr and Kamailio side by
side, same clients, same run.

    python benches/tcp_memory.py [--count 19000] [--proxies sipr,kamailio]

For each proxy: start it with a TCP listener on 127.0.0.1 (sipr:
tests/apps/stateful_proxy.py; Kamailio: benches/kamailio_tcp_options.cfg,
TLSF allocator), warm it up with 1,000 connections that each send an OPTIONS
and close, then read its memory (PSS summed over every process of the proxy:
Kamailio keeps connections in shared memory across processes, so RSS would
count shared pages once per process). Then COUNT connections are opened
(tests/tcp_crowd.py: 4 client processes, source addresses 127.0.0.2-5) and
left idle -> memory; each sends one OPTIONS and reads its 200 -> memory; all
close -> memory. Kernel socket buffers are not process memory and are not
counted (see `ss -m`).

COUNT defaults to 19,000: this machine's hard open-files limit is 20,000 per
process, and an unprivileged process cannot raise it. Exits 1 if a step fails.
Anchor: SIP-router 3.0 used 4.5 KB per TCP connection.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, start_sipr, stop_process  # noqa: E402
from tests.tcp_crowd import Crowd, raise_fd_limit  # noqa: E402

APP = ROOT / "tests" / "apps" / "stateful_proxy.py"
KAMAILIO_CFG = ROOT / "benches" / "kamailio_tcp_options.cfg"


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def pss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-tln", f"sport = :{port}"], capture_output=True, text=True)
        if f":{port}" in out.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _settle(pid: int) -> int:
    """Memory once it stops moving (freed pages returned, lazy work done)."""
    last = pss_bytes(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = pss_bytes(pid)
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


def measure(name: str, pid: int, target: tuple[str, int], count: int, rounds: int) -> bool:
    warm = Crowd(target, 1000)
    ok = warm.connect().ok == 1000 and warm.options().ok == 1000
    warm.close()
    base = _settle(pid)
    for n in range(rounds):
        ok &= one_round(f"{name} #{n + 1}", pid, target, count, base)
    return ok


def one_round(name: str, pid: int, target: tuple[str, int], count: int, base: int) -> bool:
    crowd = Crowd(target, count)
    try:
        opened = crowd.connect()
        idle = _settle(pid)
        answered = crowd.options()
        used = _settle(pid)
    finally:
        crowd.close()
    closed = _settle(pid)
    ok = opened.ok == count and answered.ok == count
    print(
        f"{name:12} {count} connections: idle {(idle - base) / count / 1024:5.2f} KB/conn, "
        f"after one OPTIONS each {(used - base) / count / 1024:5.2f} KB/conn, "
        f"after close {(closed - base) / 1024 / 1024:+.1f} MB (base {base / 1024 / 1024:.1f} MB)"
    )
    if not ok:
        print(f"  FAILED: {opened.errors[:3] + answered.errors[:3]}")
    return ok


def run_sipr(count: int, rounds: int) -> bool:
    proxy = start_sipr(APP)
    try:
        return measure("sipr", proxy.proc.pid, proxy.tcp, count, rounds)
    finally:
        stop_process(proxy.proc)


def run_kamailio(count: int, rounds: int) -> bool:
    port = free_port()
    rundir = tempfile.mkdtemp(prefix="kamailio-tcpmem-")
    proc = subprocess.Popen(
        ["kamailio", "-DD", "-E", "-m", "512", "-M", "16", "-x", "tlsf", "-Y", rundir,
         "-P", f"{rundir}/kamailio.pid", "-f", str(KAMAILIO_CFG), "-l", f"tcp:127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port)
        return measure("kamailio", proc.pid, ("127.0.0.1", port), count, rounds)
    finally:
        stop_process(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=19_000)
    p.add_argument("--proxies", default="sipr,kamailio")
    p.add_argument("--rounds", type=int, default=2, help="the second shows reuse (or a leak)")
    args = p.parse_args()
    hard = raise_fd_limit()
    print(f"open-files limit {hard}; load {open('/proc/loadavg').read().split()[:3]}")
    ok = True
    for name in args.proxies.split(","):
        ok &= {"sipr": run_sipr, "kamailio": run_kamailio}[name](args.count, args.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
