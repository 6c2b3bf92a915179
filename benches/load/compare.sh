#!/usr/bin/env bash
# Issue 14's comparison table in one command: sipr and Kamailio alternately, same run, with the
# drain (bench.sh DRAIN_S, default 40 s, counts the CPU of deferred timer work to the calls).
#
#   benches/load/compare.sh [-n REPS] [-d SECONDS] [-o OUTDIR]
#
# Flows (each REPS x SECONDS per proxy, default 3 x 10 s, order flipped every repetition):
#   stateful Record-Route flow (run.sh mode sf_rr) at 1000 and 2500 cps,
#   stateless forward (mode default) at 1000 cps, TLS pair (mode tls) at 1000 cps.
# About 25 minutes with the defaults. Env as run.sh (SIPR, PYTHONPATH, SIPR_ARGS, KAMAILIO_ARGS,
# DRAIN_S, PROXIES="sipr kamailio"). Prints report.py's table; raw rows in OUTDIR/*/results.tsv.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPS=${REPS:-3}; DURATION=${DURATION:-10}; OUTDIR=${OUTDIR:-/tmp/sipr-compare-$(date +%Y%m%d-%H%M%S)}
while getopts "n:d:o:h" opt; do
  case $opt in
    n) REPS=$OPTARG ;; d) DURATION=$OPTARG ;; o) OUTDIR=$OPTARG ;;
    *) sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2 ;;
  esac
done
mkdir -p "$OUTDIR"
echo "# compare: reps=$REPS dur=${DURATION}s drain=${DRAIN_S:-40}s out=$OUTDIR load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$HERE/run.sh" -r 1000 -d "$DURATION" -n "$REPS" -m "sf_rr default tls" -o "$OUTDIR/r1000" >"$OUTDIR/r1000.txt" || exit 1
"$HERE/run.sh" -r 2500 -d "$DURATION" -n "$REPS" -m "sf_rr" -o "$OUTDIR/r2500" >"$OUTDIR/r2500.txt" || exit 1
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
echo "## CPU-µs per call, medians of $REPS × ${DURATION} s + drain (${DRAIN_S:-40} s), same run"
echo
python3 "$HERE/report.py" compare "$OUTDIR/r1000" "$OUTDIR/r2500"
