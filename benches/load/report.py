#!/usr/bin/env python3
"""Tables for the issue-14 targets (compare.sh, soak.sh, sweep.sh) from run.sh output.

usage: report.py compare OUTDIR [OUTDIR ...]   issue table: flow, sipr, Kamailio, ratio
       report.py soak OUTDIR                   per-minute CPU-µs/call, RSS and PSS per proxy
       report.py sweep OUTDIR                  per rate: success, CPU/call, SIPp CPU; best rate

Reads OUTDIR/results.tsv (bench.sh rows), OUTDIR/loads.tsv (load average before each run) and,
for soak, OUTDIR/runs/*.samples.tsv (sample.py) with the SIPp UAC's stat file of the run.
CPU figures are bench.sh's: the proxy's process tree from just before the SIPp run until the
drain (DRAIN_S, default 40 s) after it, divided by successful calls. Medians over repetitions.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import statistics
import sys
from collections import defaultdict

FLOWS = {
    "sf_rr": "stateful, Record-Route flow, `await req.relay(uas)`",
    "sf": "stateful, SIPp default flow, `@app.in_dialog` relays ACK/BYE",
    "default": "stateless, `req.forward(uas)`",
    "rr": "stateless, by Request-URI (`stateless_rr.py`)",
    "tls": "TLS pair (A -> TLS -> B), stateful RR flow",
    "async": "async (INVITE suspended ~1 ms), RR flow",
}


def rows_of(outdir: str) -> list[dict[str, str]]:
    path = os.path.join(outdir, "results.tsv")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def loads_of(outdir: str) -> dict[tuple[str, str, str], float]:
    path = os.path.join(outdir, "loads.tsv")
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return {
            (r["label"], r["rate"], r["rep"]): float(r["load1_before"])
            for r in csv.DictReader(fh, delimiter="\t")
        }


def num(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return float("nan")


def split_label(label: str) -> tuple[str, str]:
    """'sipr-sf_rr' -> ('sipr', 'sf_rr'); 'sweep-kamailio-sf_rr' -> ('kamailio', 'sf_rr')."""
    label = label.removeprefix("sweep-")
    for mode in sorted(FLOWS, key=len, reverse=True):
        if label.endswith("-" + mode):
            return label[: -len(mode) - 1], mode
    proxy, _, mode = label.rpartition("-")
    return proxy, mode


def compare(outdirs: list[str]) -> None:
    groups: dict[tuple[str, int], dict[str, list[dict[str, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    loads: list[float] = []
    for d in outdirs:
        load = loads_of(d)
        for r in rows_of(d):
            proxy, mode = split_label(r["label"])
            groups[(mode, int(r["rate"]))][proxy].append(r)
            got = load.get((r["label"], r["rate"], r["rep"]))
            if got is not None:
                loads.append(got)
    print(
        "| flow | rate cps | runs | sipr CPU-µs/call | Kamailio | ratio | failed sipr / Kamailio |"
    )
    print("|---|---|---|---|---|---|---|")
    for (mode, rate), by_proxy in groups.items():
        for proxy, runs in by_proxy.items():
            if proxy == "kamailio":
                continue
            ref = by_proxy.get("kamailio", [])
            a = [num(r, "proxy_cpu_us_per_call") for r in runs]
            b = [num(r, "proxy_cpu_us_per_call") for r in ref]
            fa = sum(int(num(r, "failed")) for r in runs)
            fb = sum(int(num(r, "failed")) for r in ref)
            ma = statistics.median(a) if a else float("nan")
            mb = statistics.median(b) if b else float("nan")
            ratio = f"{ma / mb:.2f}" if b and not fa else "inf" if fa else "n/a"
            name = FLOWS.get(mode, mode) + ("" if proxy == "sipr" else f" ({proxy})")
            spread_a = f" ({min(a):.0f}-{max(a):.0f})" if len(a) > 1 else ""
            spread_b = f" ({min(b):.0f}-{max(b):.0f})" if len(b) > 1 else ""
            print(
                f"| {name} | {rate} | {len(a)}/{len(b)} | **{ma:.0f}**{spread_a} | "
                f"**{mb:.0f}**{spread_b} | **{ratio}** | {fa} / {fb} |"
            )
    if loads:
        print(f"\nload average (1 min) before the runs: {min(loads):.2f}-{max(loads):.2f}")


def sipp_times(stat_csv: str) -> list[tuple[float, int]]:
    """(epoch, successful calls so far) per SIPp stat row."""
    out = []
    with open(stat_csv) as fh:
        header = fh.readline().rstrip("\n").split(";")
        cur, ok = header.index("CurrentTime"), header.index("SuccessfulCall(C)")
        for line in fh:
            f = line.rstrip("\n").split(";")
            if len(f) <= max(cur, ok):
                continue
            out.append((float(f[cur].split("\t")[-1]), int(f[ok])))
    return out


def calls_at(times: list[tuple[float, int]], t: float) -> int:
    best = 0
    for when, ok in times:
        if when > t:
            break
        best = ok
    return best


def soak(outdir: str) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    rows = {r["label"]: r for r in rows_of(outdir)}
    load = loads_of(outdir)
    for samples in sorted(glob.glob(os.path.join(outdir, "runs", "*.samples.tsv"))):
        run = samples.removesuffix(".samples.tsv")
        name = os.path.basename(run)
        label = re.sub(r"-r\d+-rep\d+$", "", name)
        stat = glob.glob(os.path.join(run, "*", "uac_stat.csv"))
        with open(samples) as fh:
            pts = [
                (
                    float(r["epoch"]),
                    int(r["ticks"]),
                    int(r["rss_kb"]),
                    int(r["pss_kb"]),
                    # controls (sample.py since phase 5; absent in older files)
                    int(r.get("sipp_ticks") or 0),
                    int(r.get("steal_ticks") or 0),
                )
                for r in csv.DictReader(fh, delimiter="\t")
            ]
        if not stat or len(pts) < 2:
            print(f"{name}: no samples or no SIPp stats")
            continue
        times = sipp_times(stat[0])
        start, end = times[0][0], times[-1][0]
        print(f"\n### {name}\n")
        print(
            "| minute | calls | CPU-µs/call | RSS MB (end of minute) | PSS MB "
            "| SIPp CPU-µs/call (control) | steal % of the host |"
        )
        print("|---|---|---|---|---|---|---|")
        per_minute = []
        rss_by_minute = []
        minute = 0
        while start + 60 * (minute + 1) <= end + 1:
            t0, t1 = start + 60 * minute, start + 60 * (minute + 1)
            p0 = min(pts, key=lambda p: abs(p[0] - t0))
            p1 = min(pts, key=lambda p: abs(p[0] - t1))
            calls = calls_at(times, p1[0]) - calls_at(times, p0[0])
            cpu_us = (p1[1] - p0[1]) * 1e6 / hz
            per = cpu_us / calls if calls else float("nan")
            per_minute.append(per)
            rss_by_minute.append(p1[2])
            rss_mb, pss_mb = p1[2] / 1024, p1[3] / 1024
            sipp = (p1[4] - p0[4]) * 1e6 / hz / calls if calls and p1[4] else float("nan")
            cpus = os.cpu_count() or 1
            steal = (p1[5] - p0[5]) / hz / (p1[0] - p0[0]) / cpus * 100 if p1[0] > p0[0] else 0.0
            print(
                f"| {minute + 1} | {calls} | {per:.0f} | {rss_mb:.0f} | {pss_mb:.0f} "
                f"| {sipp:.0f} | {steal:.1f} |"
            )
            minute += 1
        r = rows.get(label)
        if r is not None:
            print(
                "\nwhole run with the drain: "
                f"**{num(r, 'proxy_cpu_us_per_call'):.0f}** CPU-µs/call, "
                f"{int(num(r, 'success'))} calls, {int(num(r, 'failed'))} failed, "
                f"{r['retrans_uac']}/{r['retrans_uas']} retransmissions (UAC/UAS)"
            )
        peak = max(pts, key=lambda p: p[3])
        print(f"peak RSS {max(p[2] for p in pts) / 1024:.0f} MB, peak PSS {peak[3] / 1024:.0f} MB")
        if len(per_minute) >= 2:
            drift = per_minute[-1] / per_minute[0] - 1
            print(f"last minute vs first: {drift * 100:+.1f} % (acceptance: within 10 %)")
        if len(rss_by_minute) >= 3:
            growth = (rss_by_minute[-1] - rss_by_minute[1]) / 1024
            print(f"RSS change after minute 2 to the end: {growth:+.0f} MB")
        got = [v for k, v in load.items() if k[0] == label]
        if got:
            print(f"load average before: {got[0]:.2f}")


def sweep(outdir: str) -> None:
    by: dict[str, dict[int, dict[str, str]]] = defaultdict(dict)
    for r in rows_of(outdir):
        if r["label"].startswith("sweep-"):
            by[r["label"][6:]][int(r["rate"])] = r
    rates = sorted({rate for d in by.values() for rate in d})
    print(
        "cell: success % / proxy CPU-µs per call / SIPp UAC+UAS CPU in cores; ✗ = not "
        "sustainable (bench.sh: > SUST_FAIL_PCT failed, or generation < 95 % of the rate)\n"
    )
    print("| config | " + " | ".join(str(r) for r in rates) + " | highest clean rate |")
    print("|---|" + "---|" * len(rates) + "---|")
    best: dict[str, int] = {}
    for cfg, d in by.items():
        cells = []
        best[cfg] = 0
        for rate in rates:
            r = d.get(rate)
            if r is None:
                cells.append("-")
                continue
            # per second of call generation (wall_s also holds SIPp's wait for stuck calls)
            dur = num(r, "dur_s")
            sipp = (num(r, "uac_cpu_s") + num(r, "uas_cpu_s")) / dur if dur > 0 else float("nan")
            ok = r["sustainable"] == "yes"
            cells.append(
                f"{num(r, 'success_pct'):.2f}% / {num(r, 'proxy_cpu_us_per_call'):.0f} / "
                f"{sipp:.2f}" + ("" if ok else " ✗")
            )
            if ok:
                best[cfg] = max(best[cfg], rate)
        print(f"| {cfg} | " + " | ".join(cells) + f" | **{best[cfg] or '-'}** |")
    for cfg, rate in best.items():
        proxy, mode = split_label(cfg)
        ref = best.get(f"kamailio-{mode}")
        if proxy != "kamailio" and ref:
            print(
                f"\n{cfg}: {rate} cps vs Kamailio {ref} cps = **{rate / ref:.2f}x** (target 1.5x)"
            )


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in ("compare", "soak", "sweep"):
        print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
        return 2
    what, dirs = sys.argv[1], sys.argv[2:]
    if what == "compare":
        compare(dirs)
    elif what == "soak":
        soak(dirs[0])
    else:
        sweep(dirs[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
