#!/usr/bin/env bash
# sipr vs Kamailio, same SIPp traffic, same run: CPU-µs per call and completion.
#
#   benches/load/run.sh [-r RATE] [-d SECONDS] [-n REPS] [-m "MODES"] [-s "SWEEP RATES"] [-o OUTDIR]
#
#   -r RATE     calls per second for the comparison            (env RATE, default 1000)
#   -d SECONDS  length of each SIPp run                         (env DURATION, default 10)
#   -n REPS     repetitions per proxy and mode                  (env REPS, default 3)
#   -m MODES    any of: default rr sf sf_rr async reg reg_auth tls ds dlg nat (env MODES, default "default rr")
#                 nat      NAT + media relay, Record-Route flow with SDP (uac_rr.xml / uas_rr.xml):
#                          sipr nat_app.py (behind_nat/fix_nated_contact, rtpengine offer in the
#                          route, answer/delete in @app.on_reply), Kamailio kamailio_nat.cfg
#                          (nathelper + rtpengine_manage); one rtpengine daemon (userspace, run
#                          by this script on 127.0.0.1) serves both; its CPU is not counted
#                 ds       dispatcher route, hash of Call-ID + serial failover armed: sipr
#                          dispatcher_app.py, Kamailio kamailio_dispatcher.cfg (dispatcher module)
#                 default  stateless; SIPp uac_reorder_tolerant.xml / built-in uas; ACK and
#                          BYE are addressed to the proxy, which forwards them to the UAS
#                          (sipr examples/stateless.py, Kamailio stateless.cfg)
#                 rr       stateless; SIPp uac_rr.xml / uas_rr.xml; ACK and BYE carry the UAS
#                          Contact as Request-URI and sipr forwards them by it (stateless_rr.py)
#                 sf       stateful, SIPp's default flow (ACK/BYE to the proxy): sipr
#                          stateful_app.py with SIPR_IN_DIALOG=1 (@app.in_dialog relays them),
#                          Kamailio stateful.cfg (its `uri == myself` branch)
#                 sf_rr    stateful, Record-Route flow (uac_rr.xml / uas_rr.xml): sipr
#                          stateful_app.py (in-dialog routed in Rust), Kamailio stateful.cfg
#                 async    INVITE suspended ~1 ms then relayed, Record-Route flow: sipr
#                          async_app.py (anyio.sleep(0.001)), Kamailio async.cfg
#                          (async_task_route: suspend -> async worker -> resume)
#                 reg      REGISTER, unique AoR per call (register.xml): sipr registrar_app.py
#                          (Registrar("memory:")), Kamailio registrar.cfg (usrloc db_mode 0)
#                 reg_auth the same with MD5 digest auth (register_auth.xml: 401 then
#                          REGISTER with Authorization): registrar_app.py SIPR_AUTH=1,
#                          Kamailio kamailio_registrar_auth.cfg (pv_auth_check)
#                 dlg      stateful with dialogs and accounting, Record-Route flow (uac_rr /
#                          uas_rr): sipr dialog_app.py (track_dialog + account, sipr.Accounting
#                          to SQLite), Kamailio kamailio_dialog_acc.cfg (dialog + acc to
#                          db_sqlite, created per run from Kamailio's acc schema)
#                 tls      two proxies in one measured tree (tls_pair.sh): SIPp UAC -> A (UDP
#                          5060) -> TLS -> B (TLS 5081) -> UDP -> SIPp UAS, Record-Route flow
#                          (uac_rr.xml / uas_rr.xml); sipr stateful_app.py as A and B, Kamailio
#                          kamailio_tls_pair.cfg (tm + rr + tls) as A and B; CPU is A+B.
#                          Certificates: a CA made per run (make_certs.sh); sipr verifies B.
#   -s RATES    also sweep these rates, 1 run each, per proxy and mode, stopping a proxy's
#               sweep at its first unsustainable rate        (env SWEEP, default none)
#   -o OUTDIR   results directory                           (env OUTDIR, default /tmp/sipr-load-<time>)
#   -p PROXIES  any of: sipr kamailio sipr-eager sipr-py sipr-thr sipr-aio sipr-b  (env PROXIES, default "sipr kamailio")
#               sipr-b is sipr run from the executable in SIPR_B (another build, e.g. a git
#               worktree's venv), so two builds alternate in one run: an A/B of a change
#               sipr-py is sipr with SIPR_REG_PYTHON=1: in reg/reg_auth, REGISTER through the
#               Python route (auth.check + save) instead of the core (registrar.serve)
#               sipr-eager is sipr with SIPR_EAGER=1 (App(eager=True): a handler's first step
#               runs without an asyncio Task, one is made only when it suspends)
#               sipr-aio is sipr on the standard library's event loop (SIPR_EVENT_LOOP=asyncio;
#               the default is uvloop, decision 0060); sipr-w1-aio / sipr-w2-aio likewise
#               sipr-w1 / sipr-w2 are sipr with --workers 1 / 2 (decision 0050): with either in
#               PROXIES every UAC of the run sends each call from its own socket (SIPP_EXTRA
#               "-t un"), so the kernel spreads calls over the workers; see workers.sh
#               sipr-thr is sipr with SIPR_UDP_READER=thread: a Rust thread reads UDP, answers
#               native REGISTERs itself and queues the rest for the event loop (decision 0019)
#
# Env: BENCH_DIR (default <repo>/../shared/bench, copied to a temp dir), SIPR (the sipr
# executable, default `sipr` on PATH; PYTHONPATH is passed through, so a snapshot build can be
# measured), SIPR_ARGS (extra `sipr run` args), KAMAILIO_ARGS (extra kamailio args, e.g.
# "-m 4096": run-kamailio.sh gives 1024 MB of shm, which tm exhausts at 8000 cps stateful), IDLE_S (bench.sh -I), PORT_WAIT (seconds to wait
# for 5060/5070/5090 to be free before each run, default 300), SAMPLE_S (sample the proxy's CPU,
# RSS and PSS every SAMPLE_S seconds during each run into runs/LABEL-rRATE-repN.samples.tsv, with
# sample.py, outside the measured tree; soak.sh uses it), DRAIN_S (bench.sh's drain, default 40),
# PROXY_PORT / UAS_PORT / UAC_PORT (default 5060 / 5090 / 5070: other ports let a sipr-only run
# share the machine with tests that use the defaults; Kamailio's configs listen on 5060 only).
# compare.sh, soak.sh and sweep.sh are the issue-14 targets built on this script.
# Runs alternate sipr / kamailio (and the order flips every repetition) so that slow drift in
# the machine's load spreads over both. Every run is one bench.sh invocation; their TSV rows are
# merged into OUTDIR/results.tsv, then ratio.py and summarize.py print the tables.
# Stops everything it started (bench.sh stops its proxy and SIPp processes by PID).
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RATE=${RATE:-1000}; DURATION=${DURATION:-10}; REPS=${REPS:-3}; MODES=${MODES:-"default rr"}
SWEEP=${SWEEP:-}; OUTDIR=${OUTDIR:-}; PROXIES=${PROXIES:-"sipr kamailio"}; IDLE_S=${IDLE_S:-2}
PORT_WAIT=${PORT_WAIT:-300}; SAMPLE_S=${SAMPLE_S:-}
PROXY_PORT=${PROXY_PORT:-5060}; UAS_PORT=${UAS_PORT:-5090}; UAC_PORT=${UAC_PORT:-5070}
export PROXY=127.0.0.1:$PROXY_PORT UAS_PORT UAC_PORT   # bench.sh reads these

usage() { sed -n '2,/^set -u/p' "$0" | grep '^#'; exit 2; }
while getopts "r:d:n:m:s:o:p:h" opt; do
  case $opt in
    r) RATE=$OPTARG ;; d) DURATION=$OPTARG ;; n) REPS=$OPTARG ;; m) MODES=$OPTARG ;;
    s) SWEEP=$OPTARG ;; o) OUTDIR=$OPTARG ;; p) PROXIES=$OPTARG ;; *) usage ;;
  esac
done
OUTDIR=${OUTDIR:-/tmp/sipr-load-$(date +%Y%m%d-%H%M%S)}

SRC_BENCH=${BENCH_DIR:-$REPO/../shared/bench}
# a git worktree one level deeper (/work/wt/NAME) finds the same shared harness
[ -n "${BENCH_DIR:-}" ] || [ -x "$SRC_BENCH/bench.sh" ] || SRC_BENCH=$REPO/../../shared/bench
[ -x "$SRC_BENCH/bench.sh" ] || { echo "no bench harness at $SRC_BENCH (set BENCH_DIR)" >&2; exit 2; }
SIPR=${SIPR:-$(command -v sipr || true)}
case " $PROXIES " in *" sipr "*)
  [ -n "$SIPR" ] && [ -x "$SIPR" ] || { echo "sipr not found (activate the venv or set SIPR)" >&2; exit 2; } ;;
esac
case " $PROXIES " in *" sipr-b "*)
  [ -x "${SIPR_B:-}" ] || { echo "sipr-b needs SIPR_B, the other build's sipr executable" >&2; exit 2; } ;;
esac
case " $PROXIES " in *" kamailio "*)
  command -v kamailio >/dev/null || { echo "kamailio not installed" >&2; exit 2; } ;;
esac
command -v sipp >/dev/null || { echo "sipp not installed" >&2; exit 2; }
if [ "$PROXY_PORT:$UAS_PORT:$UAC_PORT" != 5060:5090:5070 ]; then
  case " $PROXIES $MODES " in *" kamailio "*|*" tls "*)
    echo "Kamailio and mode tls use the default ports 5060/5090/5070 only" >&2; exit 2 ;; esac
fi
for m in $MODES; do
  case $m in default|rr|sf|sf_rr|async|reg|reg_auth|tls|ds|dlg|nat) ;;
    *) echo "unknown mode $m (default|rr|sf|sf_rr|async|reg|reg_auth|tls|ds|dlg|nat)" >&2; exit 2 ;; esac
done

WORK=$(mktemp -d /tmp/sipr-load-bench.XXXXXX)
cp -r "$SRC_BENCH/." "$WORK/"
chmod -R u+w "$WORK"
# the auth registrar config next to the reference ones (run-kamailio.sh takes a name from there)
cp "$HERE/kamailio_registrar_auth.cfg" "$WORK/kamailio/registrar_auth.cfg"
cp "$HERE/kamailio_dialog_acc.cfg" "$WORK/kamailio/dialog_acc.cfg"
# mode ds: Kamailio's dispatcher config and its list (two entries, both the SIPp UAS)
sed "s|@DS_LIST@|$WORK/kamailio/dispatcher.list|" "$HERE/kamailio_dispatcher.cfg" > "$WORK/kamailio/dispatcher.cfg"
printf '1 sip:127.0.0.1:5090\n1 sip:127.0.0.1:5090;ds=2\n' > "$WORK/kamailio/dispatcher.list"
# register_auth.xml's injection file: one user and its [authentication] keyword per line
# (SIPp expands keywords in injected fields, not nested inside [authentication ...])
awk 'BEGIN { print "SEQUENTIAL"; for (i = 1; i <= 200000; i++)
             printf "user%d;[authentication username=user%d password=secret]\n", i, i }' \
  > "$WORK/users.csv"
case " $MODES " in *" tls "*) "$HERE/make_certs.sh" "$WORK/certs" ;; esac
# mode nat: one rtpengine for every run (sipr's and Kamailio's), control socket on NG_PORT
NG_PORT=${NG_PORT:-22299}; RTPENGINE_PID=""
sed "s|@NG_SOCK@|udp:127.0.0.1:$NG_PORT|" "$HERE/kamailio_nat.cfg" > "$WORK/kamailio/nat.cfg"
mkdir -p "$OUTDIR/runs"
TSV="$OUTDIR/results.tsv"
CHILD=""
SAMPLER=""

cleanup() {
  if [ -n "$SAMPLER" ]; then kill -TERM "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; fi
  # bench.sh traps TERM and stops the proxy and SIPp it started, by PID.
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  if [ -n "$RTPENGINE_PID" ]; then
    kill -TERM "$RTPENGINE_PID" 2>/dev/null
    wait "$RTPENGINE_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_rtpengine() {
  command -v rtpengine >/dev/null || { echo "rtpengine not installed (rtpengine-daemon)" >&2; exit 2; }
  rtpengine --config-file=none --table=-1 --interface=127.0.0.1 \
    --listen-ng=127.0.0.1:"$NG_PORT" --foreground --log-stderr --log-level=3 \
    --port-min=40000 --port-max=59999 --delete-delay=0 --num-threads=2 \
    >"$OUTDIR/rtpengine.log" 2>&1 &
  RTPENGINE_PID=$!
  local t=0
  until ss -H -uln | awk '{ print $4 }' | grep -q ":$NG_PORT\$"; do
    kill -0 "$RTPENGINE_PID" 2>/dev/null || { echo "rtpengine did not start: $OUTDIR/rtpengine.log" >&2; exit 2; }
    [ "$t" -ge 100 ] && { echo "rtpengine control port $NG_PORT not up" >&2; exit 2; }
    sleep 0.1; t=$(( t + 1 ))
  done
}
case " $MODES " in *" nat "*) start_rtpengine ;; esac

proxy_cmd() { # $1 proxy $2 mode
  # SIPR_RUN_DIR: the control socket of this run, not the user's default one.
  local env="SIPR_NEXT_HOP=sip:127.0.0.1:$UAS_PORT SIPR_RUN_DIR=$WORK" app
  [ "$1" = sipr-eager ] && env="$env SIPR_EAGER=1"
  [ "$1" = sipr-py ] && env="$env SIPR_REG_PYTHON=1"
  [ "$1" = sipr-thr ] && env="$env SIPR_UDP_READER=thread"
  case $1 in *-aio) env="$env SIPR_EVENT_LOOP=asyncio" ;; esac
  case $2 in
    default)  app=$REPO/examples/stateless.py ;;
    rr)       app=$HERE/stateless_rr.py ;;
    sf)       app=$HERE/stateful_app.py; env="$env SIPR_IN_DIALOG=1" ;;
    sf_rr)    app=$HERE/stateful_app.py ;;
    async)    app=$HERE/async_app.py ;;
    reg)      app=$HERE/registrar_app.py ;;
    reg_auth) app=$HERE/registrar_app.py; env="$env SIPR_AUTH=1" ;;
    dlg)      app=$HERE/dialog_app.py; fresh_acc_db sipr; env="$env SIPR_ACC=sqlite:///$WORK/acc-sipr.db XDG_DATA_HOME=$WORK/data" ;;
    ds)       app=$HERE/dispatcher_app.py ;;
    nat)      app=$HERE/nat_app.py; env="$env SIPR_RTPENGINE=udp:127.0.0.1:$NG_PORT" ;;
  esac
  if [ "$2" = tls ]; then
    case $1 in
      sipr|sipr-eager|sipr-aio) echo "env $env SIPR=$SIPR $HERE/tls_pair.sh sipr $WORK/certs" ;;
      sipr-b) echo "env $env SIPR=$SIPR_B $HERE/tls_pair.sh sipr $WORK/certs" ;;
      kamailio) echo "$HERE/tls_pair.sh kamailio $WORK/certs" ;;
    esac
    return
  fi
  case $1 in
    sipr|sipr-eager|sipr-py|sipr-thr|sipr-aio) echo "env $env $SIPR run $app --listen udp:127.0.0.1:$PROXY_PORT ${SIPR_ARGS:-}" ;;
    sipr-b) echo "env $env $SIPR_B run $app --listen udp:127.0.0.1:$PROXY_PORT ${SIPR_ARGS:-}" ;;
    sipr-w1|sipr-w2|sipr-w1-aio|sipr-w2-aio) w=${1#sipr-w}
      echo "env $env $SIPR run $app --listen udp:127.0.0.1:$PROXY_PORT --workers ${w%-aio} ${SIPR_ARGS:-}" ;;
    kamailio)
      case $2 in
        default|rr) echo "$WORK/kamailio/run-kamailio.sh stateless ${KAMAILIO_ARGS:-}" ;;
        sf|sf_rr)   echo "$WORK/kamailio/run-kamailio.sh stateful ${KAMAILIO_ARGS:-}" ;;
        async)      echo "$WORK/kamailio/run-kamailio.sh async ${KAMAILIO_ARGS:-}" ;;
        reg)        echo "$WORK/kamailio/run-kamailio.sh registrar ${KAMAILIO_ARGS:-}" ;;
        reg_auth)   echo "$WORK/kamailio/run-kamailio.sh registrar_auth ${KAMAILIO_ARGS:-}" ;;
        dlg)        fresh_acc_db kamailio
                    # one UDP child: db_sqlite sets no busy timeout, so two children writing
                    # the same file fail most inserts with "database is locked"
                    echo "$WORK/kamailio/run-kamailio.sh dialog_acc -A NCHILDREN=1 -A 'DBURL=\"sqlite://$WORK/acc-kamailio.db\"' ${KAMAILIO_ARGS:-}" ;;
        ds)         echo "$WORK/kamailio/run-kamailio.sh dispatcher ${KAMAILIO_ARGS:-}" ;;
        nat)        echo "$WORK/kamailio/run-kamailio.sh nat ${KAMAILIO_ARGS:-}" ;;
      esac ;;
  esac
}
# an empty accounting database per run: sipr creates its tables; Kamailio gets its acc schema
fresh_acc_db() { # $1 sipr|kamailio
  rm -f "$WORK/acc-$1.db" "$WORK/acc-$1.db-wal" "$WORK/acc-$1.db-shm"
  if [ "$1" = kamailio ]; then
    # WAL (persistent in the file), as sipr's writer uses.
    { echo "PRAGMA journal_mode=WAL;"
      echo "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL);"
      cat /usr/share/kamailio/db_sqlite/acc-create.sql; } | sqlite3 "$WORK/acc-kamailio.db" >/dev/null
  fi
}
bench_mode() { # bench.sh -m for a run.sh mode (bench.sh uses it for the traffic kind and the label)
  case $1 in
    default|rr) echo stateless ;; sf|sf_rr|tls|ds|dlg|nat) echo stateful ;; async) echo async ;;
    reg|reg_auth) echo registrar ;;
  esac
}

# bench.sh refuses to start while 5060/5070/5090 are bound (on any address; mode tls also uses
# 5080 and TCP 5061/5062/5081/5082); on a shared box
# wait a while for another user's test to finish instead of losing the run.
wait_ports() {
  local t=0 busy
  while :; do
    busy=$( { ss -H -uln 2>/dev/null | awk '{ print $4 }' | grep -E ":($PROXY_PORT|$UAC_PORT|5080|$UAS_PORT)\$"
              ss -H -ltn 2>/dev/null | awk '{ print $4 }' | grep -E ':(5061|5062|5081|5082)$'; } | tr '\n' ' ')
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
  case $mode in
    rr|sf_rr|async|tls|ds|dlg|nat) uac="-sf $WORK/scenarios/uac_rr.xml"; uas="-sf $WORK/scenarios/uas_rr.xml" ;;
    reg)            uac="-sf $WORK/scenarios/register.xml"; uas="" ;;
    reg_auth)       uac="-sf $HERE/register_auth.xml -inf $WORK/users.csv"; uas="" ;;
    *)              uac="-sf $WORK/scenarios/uac_reorder_tolerant.xml"; uas="-sn uas" ;;
  esac
  wait_ports || { echo no; return; }
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  echo "== $label rate=$rate rep=$rep (load $load)" >&2
  [ -s "$OUTDIR/loads.tsv" ] || printf 'label\trate\trep\tload1_before\n' > "$OUTDIR/loads.tsv"
  printf '%s\t%s\t%s\t%s\n' "$label" "$rate" "$rep" "$load" >> "$OUTDIR/loads.tsv"
  UAC_SCENARIO_ARGS="$uac" UAS_SCENARIO_ARGS="$uas" \
    "$WORK/bench.sh" -m "$(bench_mode "$mode")" -c "$(proxy_cmd "$proxy" "$mode")" -r "$rate" -d "$DURATION" \
    -n 1 -I "$IDLE_S" -o "$out" -L "$label" >"$out.log" 2>&1 &
  CHILD=$!
  if [ -n "$SAMPLE_S" ]; then
    python3 "$HERE/sample.py" "$CHILD" "$PROXY_PORT" "$SAMPLE_S" "$out.samples.tsv" &
    SAMPLER=$!
  fi
  wait "$CHILD"; CHILD=""
  if [ -n "$SAMPLER" ]; then wait "$SAMPLER" 2>/dev/null; SAMPLER=""; fi
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

# --workers: one socket per call at the UAC, for every proxy of the run (same traffic).
case " $PROXIES " in *" sipr-w"*)
  export SIPP_EXTRA="${SIPP_EXTRA:-} -t un -max_socket 4000" ;;
esac

echo "# sipr vs kamailio: rate=$RATE dur=${DURATION}s reps=$REPS modes=[$MODES] sweep=[$SWEEP] out=$OUTDIR" >&2
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

read -r -a PX <<<"$PROXIES"
for rep in $(seq 1 "$REPS"); do
  # flip the order every repetition: s k | k s | s k ...
  order=("${PX[@]}")
  if [ $(( rep % 2 )) = 0 ]; then
    order=(); for (( i = ${#PX[@]} - 1; i >= 0; i-- )); do order+=("${PX[i]}"); done
  fi
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
if [ "$REPS" -gt 0 ] && [ ${#PX[@]} -ge 2 ]; then
  # every proxy against kamailio when it is in the list, else against the second one
  ref=${PX[1]}
  for p in "${PX[@]}"; do [ "$p" = kamailio ] && ref=kamailio; done
  echo
  echo "## CPU-µs per call (REGISTER modes: per registration), median of $REPS (X / $ref), $RATE cps × ${DURATION}s"
  echo
  for p in "${PX[@]}"; do
    [ "$p" = "$ref" ] && continue
    for mode in $MODES; do
      printf '%-10s %-9s ' "$p" "$mode"; python3 "$WORK/ratio.py" "$TSV" "$p-$mode" "$ref-$mode"
    done
  done
fi
echo
python3 "$WORK/summarize.py" "$TSV"
echo
echo "results: $TSV"
