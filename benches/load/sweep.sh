#!/usr/bin/env bash
# Issue 14's rate sweep: the stateful Record-Route flow in steps of 500 cps, 60 s per rate, one
# run per proxy and rate, each proxy's sweep stopping at its first rate with >= 0.1 % failed
# calls (bench.sh's rule; SUST_FAIL_PCT). Kamailio runs run-kamailio.sh's -m 1024.
# Reports SIPp's own CPU (UAC + UAS, in cores of the 2) beside each cell.
#
#   benches/load/sweep.sh [-f FROM] [-t TO] [-s STEP] [-d SECONDS] [-m MODE] [-o OUTDIR]
#                          (defaults 1000, 8000, 500, 60, sf_rr)
#
# Up to ~100 s per run (60 s + the 40 s drain). Env as run.sh.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FROM=1000; TO=8000; STEP=500; DURATION=60; MODE=sf_rr
OUTDIR=${OUTDIR:-/tmp/sipr-sweep-$(date +%Y%m%d-%H%M%S)}
while getopts "f:t:s:d:m:o:h" opt; do
  case $opt in
    f) FROM=$OPTARG ;; t) TO=$OPTARG ;; s) STEP=$OPTARG ;; d) DURATION=$OPTARG ;;
    m) MODE=$OPTARG ;; o) OUTDIR=$OPTARG ;;
    *) sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2 ;;
  esac
done
mkdir -p "$OUTDIR"
"$HERE/run.sh" -n 0 -d "$DURATION" -m "$MODE" -s "$(seq -s ' ' "$FROM" "$STEP" "$TO")" -o "$OUTDIR" \
  >"$OUTDIR/run.txt" || exit 1
echo "## sweep: $MODE, ${DURATION} s per rate, $FROM..$TO step $STEP"
python3 "$HERE/report.py" sweep "$OUTDIR"
