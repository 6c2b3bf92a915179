#!/usr/bin/env bash
# Instructions per call of sipr (callgrind), a figure the machine's load does not move: the
# before/after measure of issue-14 changes while the 2 cores are shared (wall CPU is not).
#
#   benches/profiles/count.sh [CALLS] [RATE] [MODE] [OUTPREFIX]     (defaults 400 20 sf_rr)
#
# MODE sf_rr / sf: the stateful proxy (stateful_app.py); sl_rr: the stateless one
# (stateless_rr.py), Record-Route flow; sl: examples/stateless.py on SIPp's default flow (the
# compare.sh stateless row). PYTHON picks the interpreter (another build's venv
# measures that build with the same apps and SIPp flows).
# Starts `sipr run` under `valgrind --tool=callgrind --instr-atstart=no`, SIPp UAS and UAC
# (Record-Route flow, uac_rr.xml / uas_rr.xml; MODE sf uses SIPp's default flow with
# SIPR_IN_DIALOG=1), 20 warm-up calls uncounted, then switches instrumentation on for CALLS calls
# and the drain (DRAIN_S, default 34: the held transactions' Timer L/J/M expiries are charged to
# the calls), dumps and prints Ir per call (the whole process: Rust, Python, libc; the kernel's
# side is not counted: see `profile.sh syscalls`). OUTPREFIX.callgrind keeps the profile
# (callgrind_annotate it). Ports PROXY_PORT/UAS_PORT/UAC_PORT (default 26060/26090/26070).
# Takes CALLS/RATE + DRAIN_S + ~60 s (Python starts slowly under valgrind).
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
calls=${1:-400}; rate=${2:-20}; mode=${3:-sf_rr}; out=${4:-/tmp/sipr-count-$mode}
PROXY_PORT=${PROXY_PORT:-26060} UAS_PORT=${UAS_PORT:-26090} UAC_PORT=${UAC_PORT:-26070}
DRAIN_S=${DRAIN_S:-34}
PY=${PYTHON:-$ROOT/.venv/bin/python}
SCEN=${BENCH_DIR:-$ROOT/../shared/bench}/scenarios
[ -d "$SCEN" ] || SCEN=/work/shared/bench/scenarios
app=$ROOT/benches/load/stateful_app.py
case $mode in
  sf_rr) uac="-sf $SCEN/uac_rr.xml"; uas="-sf $SCEN/uas_rr.xml"; extra_env="" ;;
  sf)    uac="-sn uac"; uas="-sn uas"; extra_env="SIPR_IN_DIALOG=1" ;;
  sl_rr) uac="-sf $SCEN/uac_rr.xml"; uas="-sf $SCEN/uas_rr.xml"; extra_env=""
         app=$ROOT/benches/load/stateless_rr.py ;;
  sl)    uac="-sn uac"; uas="-sn uas"; extra_env=""; app=$ROOT/examples/stateless.py ;;
  *) echo "mode sf_rr, sf, sl_rr or sl" >&2; exit 2 ;;
esac
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port_bound() { awk -v h="$(printf ':%04X' "$1")" 'NR > 1 && index($2, h) { f = 1 } END { exit !f }' /proc/net/udp; }

# In the foreground of a background job (not -bg, which detaches): cleanup stops it.
(cd "$work" && exec sipp $uas -i 127.0.0.1 -p "$UAS_PORT" -nostdin >/dev/null 2>&1) &
pids+=("$!")
for _ in $(seq 1 50); do port_bound "$UAS_PORT" && break; sleep 0.1; done
env $extra_env SIPR_NEXT_HOP="sip:127.0.0.1:$UAS_PORT" \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.callgrind" \
  "$PY" -m sipr run "$app" --listen "udp:127.0.0.1:$PROXY_PORT" \
  >"$work/proxy.log" 2>&1 &
proxy=$!; pids+=("$proxy")
for _ in $(seq 1 1200); do port_bound "$PROXY_PORT" && break; sleep 0.25; done
port_bound "$PROXY_PORT" || { echo "sipr did not start" >&2; tail "$work/proxy.log" >&2; exit 1; }
sipp_uac() { # $1 calls
  (cd "$work" && timeout 600 sipp $uac "127.0.0.1:$PROXY_PORT" -i 127.0.0.1 -p "$UAC_PORT" \
    -r "$rate" -m "$1" -nostdin -trace_stat -stf uac.csv >/dev/null 2>&1)
}
sipp_uac 20
callgrind_control -i on "$proxy" >/dev/null
sipp_uac "$calls"; rc=$?
sleep "$DRAIN_S"
callgrind_control -d "$proxy" >/dev/null
sleep 1
kill -TERM "$proxy"; wait "$proxy" 2>/dev/null
failed=$(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "FailedCall(C)") c = i } END { print $c }' "$work/uac.csv")
# the dump made by callgrind_control -d is OUTPREFIX.callgrind.1 (the end-of-run one is not used)
ir=$(grep -h '^summary:' "$out.callgrind.1" 2>/dev/null | awk '{ print $2 }')
[ -n "$ir" ] || { echo "no callgrind dump" >&2; exit 1; }
echo "mode $mode, $calls calls at $rate cps (sipp rc $rc, failed ${failed:-?}), drain ${DRAIN_S}s:" \
  "$(awk -v i="$ir" -v n="$calls" 'BEGIN { printf "%.0f Ir per call (%.3g Ir total)", i / n, i }')," \
  "load $(cut -d' ' -f1 /proc/loadavg)"
