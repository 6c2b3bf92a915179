#!/usr/bin/env bash
# `sipr run --workers 2` vs `--workers 1`, same run, same traffic (issue 20, point 5):
# stateful Record-Route calls (mode sf_rr), each call from its own UAC socket (-t un) so the
# kernel spreads them over the workers. Prints run.sh's tables: CPU-µs per call over the
# proxy's whole process tree (supervisor, workers, standby), the SIPp UAC and UAS CPU per
# call (they share the two cores with the proxy), the highest clean rate of the sweep.
#
#   benches/load/workers.sh [-r RATE] [-d SECONDS] [-n REPS] [-s "SWEEP RATES"] [-o OUTDIR]
#
# Defaults: 1000 cps x 10 s x 3 reps, sweep "1000 2000 3000 4000" (highest clean rate).
# Smoke run: benches/load/workers.sh -r 100 -d 3 -n 1 -s ""
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RATE=1000; DURATION=10; REPS=3; SWEEP="1000 2000 3000 4000"
OUTDIR=/tmp/sipr-workers-$(date +%Y%m%d-%H%M%S)
while getopts "r:d:n:s:o:h" opt; do
  case $opt in
    r) RATE=$OPTARG ;; d) DURATION=$OPTARG ;; n) REPS=$OPTARG ;; s) SWEEP=$OPTARG ;;
    o) OUTDIR=$OPTARG ;; *) sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2 ;;
  esac
done
"$HERE/run.sh" -p "sipr-w1 sipr-w2" -m sf_rr -r "$RATE" -d "$DURATION" -n "$REPS" \
  -s "$SWEEP" -o "$OUTDIR"
status=$?
echo "load now: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
