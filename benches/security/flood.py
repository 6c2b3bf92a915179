"""The cost of a banned flood: SIPp sends OPTIONS from 127.0.0.3 at RATE/s
for SECONDS to sipr (FloodGuard limit 1000/1 s) or to Kamailio (pike +
htable ban, kamailio_pike.cfg); once the source is banned, the proxy's CPU
(all threads and children, from /proc) is read over the rest of the flood.

    python benches/security/flood.py --proxy sipr --rate 5000 --seconds 10
    python benches/security/flood.py --proxy kamailio --rate 5000 --seconds 10

Prints one line: proxy, rate, packets in the window, CPU %, CPU-µs per packet,
and the machine's load (figures from a busy machine are noisy: say so)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "apps" / "security_app.py"
SCENARIO = ROOT / "tests" / "sipp" / "scenarios_security" / "flood_options.xml"
KAMAILIO_CFG = Path(__file__).resolve().parent / "kamailio_pike.cfg"
FLOODER = "127.0.0.3"


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its children (Kamailio forks its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total


def start_proxy(kind: str, port: int, run_dir: str) -> subprocess.Popen[bytes]:
    if kind == "kamailio":
        exe = shutil.which("kamailio")
        if exe is None:
            sys.exit("kamailio is not installed")
        args = [exe, "-DD", "-E", "-m", "256", "-M", "16", "-x", "tlsf", "-Y", run_dir,
                "-P", f"{run_dir}/k.pid", "-f", str(KAMAILIO_CFG),
                "-A", f"LISTEN=udp:127.0.0.1:{port}"]  # fmt: skip
        env = dict(os.environ)
    else:
        args = [sys.executable, "-m", "sipr", "run", str(APP), "--listen",
                f"udp:127.0.0.1:{port}", "--no-ctl"]  # fmt: skip
        config = {"trusted": [], "flood": {"limit": 1000, "window": 1.0, "ban": 300},
                  "target": "sip:127.0.0.1:9"}  # fmt: skip
        env = {**os.environ, "SIPR_SECURITY": json.dumps(config), "SIPR_RUN_DIR": run_dir}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)  # both start within a second here; a bench, not a test
    if proc.poll() is not None:
        sys.exit(f"{kind} did not start")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", choices=("sipr", "kamailio"), default="sipr")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--port", type=int, default=5065)
    a = ap.parse_args()
    run_dir = tempfile.mkdtemp(prefix="sipr-flood-bench-")
    proxy = start_proxy(a.proxy, a.port, run_dir)
    flood: subprocess.Popen[bytes] | None = None
    try:
        flood = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIO), f"127.0.0.1:{a.port}", "-i", FLOODER, "-p", "0",
             "-r", str(a.rate), "-l", str(a.rate * 2), "-m", str(a.rate * a.seconds),
             "-nostdin", "-timeout", f"{a.seconds + 20}s"],
            cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.5)  # the ban comes within the first fifth of a second
        c0, t0 = cpu_seconds(proxy.pid), time.monotonic()
        time.sleep(max(1.0, a.seconds - 3.0))
        c1, t1 = cpu_seconds(proxy.pid), time.monotonic()
        flood.wait(a.seconds + 30)
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait()
        proxy.terminate()
        proxy.wait(15)
    window = t1 - t0
    share = (c1 - c0) / window
    packets = a.rate * window
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{a.proxy}\trate={a.rate}/s\twindow={window:.1f}s\tcpu={share * 100:.1f}%\t"
          f"{(c1 - c0) * 1e6 / packets:.2f} us/packet\tload {load}")  # fmt: skip


if __name__ == "__main__":
    main()
