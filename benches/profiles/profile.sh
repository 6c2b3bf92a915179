#!/usr/bin/env bash
# Profiles sipr under the load harness: starts benches/load/run.sh (sipr only, one run), attaches
# a profiler to the sipr process once the run is WARM seconds in, for LENGTH seconds.
#
#   benches/profiles/profile.sh perf|perf-flat|pyspy|syscalls RATE DURATION WARM LENGTH OUTPREFIX [MODE]
#
#   perf       perf record -F 299 --call-graph dwarf -> OUTPREFIX.perf.svg (inferno flame graph)
#              and OUTPREFIX.perf.folded (collapsed stacks)
#   perf-flat  perf record -F 999 (no call graph) -> OUTPREFIX.flat.txt (self time per symbol, DSO)
#   pyspy      py-spy record --native -r 199 -> OUTPREFIX.pyspy.svg and OUTPREFIX.pyspy.folded
#   syscalls   perf stat -e raw_syscalls:sys_enter and perf trace -s -> OUTPREFIX.syscalls.txt
# MODE is a run.sh mode (default sf_rr). Needs linux-perf, py-spy (pip), inferno-collapse-perf
# and inferno-flamegraph (cargo install inferno) on PATH, SIPR as for run.sh; sipr built with
# CARGO_PROFILE_RELEASE_DEBUG=true for Rust frames. DRAIN_S defaults to 5 here (no CPU/call
# figure is taken from these runs). It uses ports 25060/25090/25070 (PROXY_PORT, UAS_PORT, UAC_PORT)
# so that tests on the default ports do not collide with it.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kind=${1:?perf|perf-flat|pyspy|syscalls}; rate=${2:?rate}; dur=${3:?duration}; warm=${4:?warm-up s}
length=${5:?length s}; out=${6:?output prefix}; mode=${7:-sf_rr}
mkdir -p "$(dirname "$out")"
export PROXY_PORT=${PROXY_PORT:-25060} UAS_PORT=${UAS_PORT:-25090} UAC_PORT=${UAC_PORT:-25070}
hex=$(printf '%04X' "$PROXY_PORT")
DRAIN_S=${DRAIN_S:-5} PROXIES=sipr "$HERE/../load/run.sh" -r "$rate" -d "$dur" -n 1 -m "$mode" \
  -o "$out.run" >/dev/null 2>"$out.run.log" &
RUN=$!
trap 'kill -TERM $RUN 2>/dev/null; wait $RUN 2>/dev/null' EXIT
descendants() { # $1 and every process below it
  local p; echo "$1"
  for p in $(ps -o pid= --ppid "$1"); do descendants "$p"; done
}
pid=""
for _ in $(seq 1 1200); do   # up to 10 min: run.sh may wait for another user's test to free the ports
  inodes=$(awk -v h="$hex" 'NR > 1 && $2 ~ ":"h"$" { printf "socket:[%s]\n", $10 }' /proc/net/udp)
  if [ -n "$inodes" ]; then
    for p in $(descendants $RUN); do
      if ls -l /proc/$p/fd 2>/dev/null | awk '{ print $NF }' | grep -qxF "$inodes"; then pid=$p; break; fi
    done
    [ -n "$pid" ] && break
  fi
  kill -0 $RUN 2>/dev/null || break
  sleep 0.5
done
[ -n "$pid" ] || { echo "sipr did not start; see $out.run.log" >&2; exit 1; }
sleep "$warm"
echo "profiling $kind pid $pid for ${length}s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
case $kind in
  perf)
    perf record -q -F 299 --call-graph dwarf,32768 -p "$pid" -o "$out.perf.data" -- sleep "$length" 2>/dev/null
    perf script -i "$out.perf.data" 2>/dev/null | inferno-collapse-perf > "$out.perf.folded"
    inferno-flamegraph --minwidth 1 --title "sipr $mode $rate cps, perf (all threads)" < "$out.perf.folded" > "$out.perf.svg"
    rm -f "$out.perf.data" ;;
  perf-flat)
    perf record -q -F 999 -p "$pid" -o "$out.flat.data" -- sleep "$length" 2>/dev/null
    perf report -i "$out.flat.data" --stdio --sort dso,sym --percent-limit 0.2 2>/dev/null > "$out.flat.txt"
    perf report -i "$out.flat.data" --stdio --sort dso --percent-limit 0 2>/dev/null > "$out.dso.txt"
    rm -f "$out.flat.data" ;;
  pyspy)
    py-spy record --native -r 199 -d "$length" -p "$pid" -f raw -o "$out.pyspy.folded" >/dev/null 2>&1
    inferno-flamegraph --minwidth 1 --title "sipr $mode $rate cps, py-spy --native" < "$out.pyspy.folded" > "$out.pyspy.svg" ;;
  syscalls)
    { perf stat -e raw_syscalls:sys_enter -p "$pid" -- sleep "$length" 2>&1
      perf trace -s -p "$pid" -- sleep "$length" 2>&1 | tail -40; } > "$out.syscalls.txt" ;;
esac
wait $RUN
grep -h "sipr-$mode" "$out.run/results.tsv" | cut -f1-12 >&2
