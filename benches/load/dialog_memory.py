#!/usr/bin/env python3
"""Memory per open dialog: N calls held up at once through sipr
(dialog_app.py: track_dialog + accounting) or Kamailio
(kamailio_dialog_acc.cfg: dialog + acc), measured as the growth of the
proxy's memory (sipr: RSS; Kamailio: PSS summed over its processes, which
counts its shared memory once) between before the calls and once all N are
confirmed and their INVITE transactions have ended (Timer L / wt_timer).

    benches/load/dialog_memory.py sipr -n 50000 -r 1000
    benches/load/dialog_memory.py kamailio -n 50000 -r 1000

Uses 127.0.0.1 ports 35060 (proxy, --port), 35070 (SIPp UAC), 35090 (SIPp
UAS); stops everything it started. Needs `sipr` (or SIPR=...), sipp, kamailio, sqlite3.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("BENCH_DIR", HERE.parent.parent.parent / "shared" / "bench"))


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return [pid] + [d for k in kids for d in tree(k)]


def sipp_current(stat: Path) -> int:
    if not stat.exists():
        return 0
    rows = list(csv.reader(stat.open(), delimiter=";"))
    if len(rows) < 2:
        return 0
    row = dict(zip(rows[0], rows[-1], strict=False))
    return int(row.get("CurrentCall", "0") or 0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("proxy", choices=("sipr", "kamailio"))
    ap.add_argument("-n", type=int, default=50_000, help="dialogs held open")
    ap.add_argument("-r", type=int, default=1000, help="call rate")
    ap.add_argument("--settle", type=float, default=40.0, help="seconds for transactions to end")
    ap.add_argument("--port", type=int, default=35060, help="proxy port (UAC +10, UAS +30)")
    args = ap.parse_args()
    if not (SHARED / "scenarios" / "uac_rr.xml").is_file():
        sys.exit(f"no SIPp scenarios in {SHARED}/scenarios: set BENCH_DIR to the shared bench")
    work = Path(tempfile.mkdtemp(prefix="sipr-dlgmem-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.proxy == "sipr":
            sipr = os.environ.get("SIPR") or shutil.which("sipr")
            env = {
                **os.environ,
                "SIPR_ACC": f"sqlite:///{work / 'acc.db'}",
                "XDG_DATA_HOME": str(work / "data"),
                "SIPR_RUN_DIR": str(work),
                "SIPR_NEXT_HOP": f"sip:127.0.0.1:{args.port + 30}",
            }
            cmd = [
                sipr,
                "run",
                str(HERE / "dialog_app.py"),
                "--listen",
                f"udp:127.0.0.1:{args.port}",
                "--ctl",
                str(work / "sipr.ctl"),
            ]
        else:
            db = work / "acc.db"
            schema = "CREATE TABLE version (table_name VARCHAR(32), table_version INTEGER);\n"
            schema += Path("/usr/share/kamailio/db_sqlite/acc-create.sql").read_text()
            subprocess.run(["sqlite3", str(db)], input=schema.encode(), check=True)
            shutil.copy(SHARED / "kamailio" / "common.inc", work / "common.inc")
            shutil.copy(HERE / "kamailio_dialog_acc.cfg", work / "dialog_acc.cfg")
            env = dict(os.environ)
            cmd = [
                "kamailio", "-DD", "-E", "-m", "1024", "-M", "16", "-Y", str(work),
                "-P", str(work / "k.pid"), "-x", "tlsf", "-f", str(work / "dialog_acc.cfg"),
                "-A", f'DBURL="sqlite://{db}"',
            ]  # fmt: skip
        proxy = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "proxy.log", "wb")
        )
        procs.append(proxy)
        uas = subprocess.Popen(
            ["sipp", "-sf", str(SHARED / "scenarios" / "uas_rr.xml"), "-i", "127.0.0.1",
             "-p", str(args.port + 30), "-nostdin", "-bind_local", "-buff_size", "8388608"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(uas)
        time.sleep(3)
        pids = tree(proxy.pid)
        before = rss_kb(proxy.pid) if args.proxy == "sipr" else pss_kb(pids)
        stat = work / "uac.csv"
        uac = subprocess.Popen(
            ["sipp", "-sf", str(SHARED / "scenarios" / "uac_rr.xml"), f"127.0.0.1:{args.port}",
             "-i", "127.0.0.1", "-p", str(args.port + 10), "-m", str(args.n), "-r", str(args.r),
             "-l", str(args.n + 10), "-d", "1200000", "-nostdin", "-trace_stat", "-stf",
             str(stat), "-fd", "1", "-buff_size", "8388608"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(uac)
        deadline = time.monotonic() + args.n / args.r * 3 + 60
        while sipp_current(stat) < args.n and time.monotonic() < deadline:
            time.sleep(1)
        up = sipp_current(stat)
        time.sleep(args.settle)
        pids = tree(proxy.pid)
        after = rss_kb(proxy.pid) if args.proxy == "sipr" else pss_kb(pids)
        result = {
            "proxy": args.proxy,
            "calls_up": up,
            "memory_before_kb": before,
            "memory_after_kb": after,
            "bytes_per_dialog": round((after - before) * 1024 / max(up, 1)),
            "load": os.getloadavg()[0],
        }
        if args.proxy == "sipr":
            ctl = subprocess.run(
                [sipr, "ctl", "--ctl", str(work / "sipr.ctl"), "--json", "dlg.stats"],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            if ctl.returncode != 0:
                print(f"dlg.stats failed: {ctl.stderr.strip()}", file=sys.stderr)
            else:
                s = json.loads(ctl.stdout)
                result["confirmed"] = s["confirmed"]
                result["core_bytes_per_dialog"] = s["bytes_per_dialog"]
        print(json.dumps(result))
        if up == 0:
            log = (work / "proxy.log").read_text(errors="replace")[-2000:]
            print(f"no call came up; the proxy's log ends:\n{log}", file=sys.stderr)
            return 1
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL if p is not procs[0] else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
