#!/usr/bin/env bash
# Issue 14's sustained run: the stateful Record-Route flow for 10 minutes per proxy, sipr then
# Kamailio (one run each, bench.sh's drain after), with CPU, RSS and PSS of the proxy's process
# tree sampled every 10 s (sample.py): per-minute CPU-µs per call and memory.
#
#   benches/load/soak.sh [-r RATE] [-d SECONDS] [-m MODE] [-o OUTDIR]   (default 2500, 600, sf_rr)
#
# ~23 minutes. Env as run.sh. Prints report.py's per-minute tables; raw samples in
# OUTDIR/runs/*.samples.tsv, SIPp stats in OUTDIR/runs/*/.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RATE=${RATE:-2500}; DURATION=${DURATION:-600}; MODE=${MODE:-sf_rr}
OUTDIR=${OUTDIR:-/tmp/sipr-soak-$(date +%Y%m%d-%H%M%S)}
while getopts "r:d:m:o:h" opt; do
  case $opt in
    r) RATE=$OPTARG ;; d) DURATION=$OPTARG ;; m) MODE=$OPTARG ;; o) OUTDIR=$OPTARG ;;
    *) sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2 ;;
  esac
done
SAMPLE_S=${SAMPLE_S:-10} "$HERE/run.sh" -r "$RATE" -d "$DURATION" -n 1 -m "$MODE" -o "$OUTDIR" \
  >"$OUTDIR.txt" || exit 1
echo "## soak: $MODE at $RATE cps for ${DURATION} s, drain ${DRAIN_S:-40} s"
python3 "$HERE/report.py" soak "$OUTDIR"
