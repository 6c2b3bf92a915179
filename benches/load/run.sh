#!/usr/bin/env bash
# sipr vs Kamailio, same SIPp traffic, same run: CPU-µs per call and completion.
#
#   benches/load/run.sh [-r RATE] [-d SECONDS] [-n REPS] [-m "MODES"] [-s "SWEEP RATES"] [-o OUTDIR]
#
#   -r RATE     calls per second for the comparison            (env RATE, default 1000)
#   -d SECONDS  length of each SIPp run                         (env DURATION, default 10)
#   -n REPS     repetitions per proxy and mode                  (env REPS, default 3)
#   -m MODES    any of: default rr                              (env MODES, default "default rr")
#                 default  SIPp uac_reorder_tolerant.xml / built-in uas; ACK and BYE are
#                          addressed to the proxy, which forwards them to the UAS
#                 rr       SIPp uac_rr.xml / uas_rr.xml; ACK and BYE carry the UAS Contact
#                          as Request-URI and sipr forwards them by it (stateless_rr.py)
#   -s RATES    also sweep these rates, 1 run each, per proxy and mode, stopping a proxy's
#               sweep at its first unsustainable rate        (env SWEEP, default none)
#   -o OUTDIR   results directory                           (env OUTDIR, default /tmp/sipr-load-<time>)
#   -p PROXIES  any of: sipr kamailio                        (env PROXIES, default "sipr kamailio")
#
# Env: BENCH_DIR (default <repo>/../shared/bench, copied to a temp dir), SIPR (the sipr
# executable, default `sipr` on PATH; PYTHONPATH is passed through, so a snapshot build can be
# measured), SIPR_ARGS (extra `sipr run` args), IDLE_S (bench.sh -I), PORT_WAIT (seconds to wait
# for 5060/5070/5090 to be free before each run, default 300).
# Runs alternate sipr / kamailio (and the order flips every repetition) so that slow drift in
# the machine's load spreads over both. Every run is one bench.sh invocation; their TSV rows are
# merged into OUTDIR/results.tsv, then ratio.py and summarize.py print the tables.
# Stops everything it started (bench.sh stops its proxy and SIPp processes by PID).
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RATE=${RATE:-1000}; DURATION=${DURATION:-10}; REPS=${REPS:-3}; MODES=${MODES:-"default rr"}
SWEEP=${SWEEP:-}; OUTDIR=${OUTDIR:-}; PROXIES=${PROXIES:-"sipr kamailio"}; IDLE_S=${IDLE_S:-2}
PORT_WAIT=${PORT_WAIT:-300}

usage() { sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2; }
while getopts "r:d:n:m:s:o:p:h" opt; do
  case $opt in
    r) RATE=$OPTARG ;; d) DURATION=$OPTARG ;; n) REPS=$OPTARG ;; m) MODES=$OPTARG ;;
    s) SWEEP=$OPTARG ;; o) OUTDIR=$OPTARG ;; p) PROXIES=$OPTARG ;; *) usage ;;
  esac
done
OUTDIR=${OUTDIR:-/tmp/sipr-load-$(date +%Y%m%d-%H%M%S)}

SRC_BENCH=${BENCH_DIR:-$REPO/../shared/bench}
[ -x "$SRC_BENCH/bench.sh" ] || { echo "no bench harness at $SRC_BENCH (set BENCH_DIR)" >&2; exit 2; }
SIPR=${SIPR:-$(command -v sipr || true)}
case " $PROXIES " in *" sipr "*)
  [ -n "$SIPR" ] && [ -x "$SIPR" ] || { echo "sipr not found (activate the venv or set SIPR)" >&2; exit 2; } ;;
esac
case " $PROXIES " in *" kamailio "*)
  command -v kamailio >/dev/null || { echo "kamailio not installed" >&2; exit 2; } ;;
esac
command -v sipp >/dev/null || { echo "sipp not installed" >&2; exit 2; }
for m in $MODES; do
  case $m in default|rr) ;; *) echo "unknown mode $m (default|rr)" >&2; exit 2 ;; esac
done

WORK=$(mktemp -d /tmp/sipr-load-bench.XXXXXX)
cp -r "$SRC_BENCH/." "$WORK/"
chmod -R u+w "$WORK"
mkdir -p "$OUTDIR/runs"
TSV="$OUTDIR/results.tsv"
CHILD=""

cleanup() {
  # bench.sh traps TERM and stops the proxy and SIPp it started, by PID.
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

proxy_cmd() { # $1 proxy $2 mode
  case $1/$2 in
    sipr/default) echo "env SIPR_NEXT_HOP=sip:127.0.0.1:5090 $SIPR run $REPO/examples/stateless.py --listen udp:127.0.0.1:5060 ${SIPR_ARGS:-}" ;;
    sipr/rr)      echo "env SIPR_NEXT_HOP=sip:127.0.0.1:5090 $SIPR run $HERE/stateless_rr.py --listen udp:127.0.0.1:5060 ${SIPR_ARGS:-}" ;;
    kamailio/*)   echo "$WORK/kamailio/run-kamailio.sh stateless" ;;
  esac
}

# bench.sh refuses to start while 5060/5070/5090 are bound (on any address); on a shared box
# wait a while for another user's test to finish instead of losing the run.
wait_ports() {
  local t=0 busy
  while :; do
    busy=$(ss -H -uln 2>/dev/null | awk '{ print $4 }' | grep -E ':(5060|5070|5090)$' | tr '\n' ' ')
    [ -z "$busy" ] && return 0
    if [ "$t" -ge "$PORT_WAIT" ]; then echo "ports still busy after ${PORT_WAIT}s: $busy" >&2; return 1; fi
    [ "$t" = 0 ] && echo "waiting for busy ports: $busy" >&2
    sleep 5; t=$(( t + 5 ))
  done
}

# one bench.sh run; appends its row (rep column set to $5) to $TSV; prints "yes"/"no" (sustainable)
run_one() { # $1 proxy $2 mode $3 rate $4 label $5 rep
  local proxy=$1 mode=$2 rate=$3 label=$4 rep=$5 uac uas out
  out="$OUTDIR/runs/$label-r$rate-rep$rep"
  rm -rf "$out"
  if [ "$mode" = rr ]; then
    uac="-sf $WORK/scenarios/uac_rr.xml"; uas="-sf $WORK/scenarios/uas_rr.xml"
  else
    uac="-sf $WORK/scenarios/uac_reorder_tolerant.xml"; uas="-sn uas"
  fi
  wait_ports || { echo no; return; }
  echo "== $label rate=$rate rep=$rep (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  UAC_SCENARIO_ARGS="$uac" UAS_SCENARIO_ARGS="$uas" \
    "$WORK/bench.sh" -m stateless -c "$(proxy_cmd "$proxy" "$mode")" -r "$rate" -d "$DURATION" \
    -n 1 -I "$IDLE_S" -o "$out" -L "$label" >"$out.log" 2>&1 &
  CHILD=$!
  wait "$CHILD"; CHILD=""
  # run-kamailio.sh leaves an empty runtime dir per start; remove the ones no live kamailio uses
  local d
  for d in /tmp/kamailio-bench.*; do
    [ -d "$d" ] && [ ! -e "$d/kamailio.pid" ] && [ -z "$(ls -A "$d")" ] && rmdir "$d" 2>/dev/null
  done
  grep -v '^#' "$out.log" >&2
  if [ -s "$out/results.tsv" ]; then
    [ -s "$TSV" ] || head -1 "$out/results.tsv" > "$TSV"
    awk -F'\t' -v OFS='\t' -v rep="$rep" 'NR > 1 { $6 = rep; print }' "$out/results.tsv" >> "$TSV"
    awk -F'\t' 'NR > 1 { s = $24 } END { print (s == "yes") ? "yes" : "no" }' "$out/results.tsv"
  else
    echo "run $label rate=$rate rep=$rep produced no result; see $out.log" >&2
    echo no
  fi
}

echo "# sipr vs kamailio: rate=$RATE dur=${DURATION}s reps=$REPS modes=[$MODES] sweep=[$SWEEP] out=$OUTDIR" >&2
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

read -r -a PX <<<"$PROXIES"
for rep in $(seq 1 "$REPS"); do
  # flip the order every repetition: s k | k s | s k ...
  order=("${PX[@]}")
  if [ $(( rep % 2 )) = 0 ] && [ ${#PX[@]} = 2 ]; then order=("${PX[1]}" "${PX[0]}"); fi
  for mode in $MODES; do
    for proxy in "${order[@]}"; do
      run_one "$proxy" "$mode" "$RATE" "$proxy-$mode" "$rep" >/dev/null
    done
  done
done

if [ -n "$SWEEP" ]; then
  declare -A stopped=()
  for rate in $SWEEP; do
    for mode in $MODES; do
      for proxy in "${PX[@]}"; do
        [ -n "${stopped[$proxy-$mode]:-}" ] && continue
        s=$(run_one "$proxy" "$mode" "$rate" "sweep-$proxy-$mode" 1)
        [ "$s" = yes ] || stopped[$proxy-$mode]=1
      done
    done
  done
fi

echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ -s "$TSV" ] || { echo "no results" >&2; exit 1; }
if [ "$REPS" -gt 0 ] && [ ${#PX[@]} = 2 ]; then
  echo
  echo "## CPU-µs per call, median of $REPS (${PX[0]} / ${PX[1]}), $RATE cps × ${DURATION}s"
  echo
  for mode in $MODES; do
    printf '%-8s ' "$mode"; python3 "$WORK/ratio.py" "$TSV" "${PX[0]}-$mode" "${PX[1]}-$mode"
  done
fi
echo
python3 "$WORK/summarize.py" "$TSV"
echo
echo "results: $TSV"
