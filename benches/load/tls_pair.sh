#!/usr/bin/env bash
# The proxy pair of benches/load/run.sh mode `tls`, as one process tree (bench.sh sums the
# CPU of the tree):  SIPp UAC -> A udp:5060 -> TLS -> B tls:5081 -> UDP -> SIPp UAS :5090
#
#   tls_pair.sh sipr|kamailio CERTDIR [ROLES]   (CERTDIR: ca.pem, proxy.pem, proxy.key;
#                                                ROLES default "B A"; "B" runs B alone)
#
# A also listens on tls:5061 / tcp:5062 and B on udp:5080 / tcp:5082 (idle_conns.py opens its
# connections to B). Env: SIPR (sipr executable), SIPR_ARGS, KAMAILIO_ARGS.
# B starts first; A once B's TLS port is bound. TERM stops both.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kind=${1:?sipr or kamailio}; certs=${2:?certificate directory}; roles=${3:-B A}
pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 0; }
trap stop TERM INT

bound() { ss -H -ltn "sport = :$1" | grep -q ":$1"; }
wait_bound() {
  for _ in $(seq 1 200); do bound "$1" && return 0; sleep 0.05; done
  echo "tls_pair: port $1 not bound" >&2; return 1
}

start() { # $1 role (A|B)
  local role=$1
  case $kind in
    sipr)
      # Two sipr in one run directory: neither needs a control socket here.
      local tls=(--tls-cert "$certs/proxy.pem" --tls-key "$certs/proxy.key" --tls-ca "$certs/ca.pem" --no-ctl)
      if [ "$role" = A ]; then
        SIPR_NEXT_HOP="sip:127.0.0.1:5081;transport=tls" "${SIPR:-sipr}" run "$HERE/stateful_app.py" \
          --listen udp:127.0.0.1:5060 --listen tls:127.0.0.1:5061 --listen tcp:127.0.0.1:5062 \
          "${tls[@]}" ${SIPR_ARGS:-} &
      else
        SIPR_NEXT_HOP="sip:127.0.0.1:5090" "${SIPR:-sipr}" run "$HERE/stateful_app.py" \
          --listen udp:127.0.0.1:5080 --listen tls:127.0.0.1:5081 --listen tcp:127.0.0.1:5082 \
          "${tls[@]}" ${SIPR_ARGS:-} &
      fi ;;
    kamailio)
      local run define=()
      run=$(mktemp -d /tmp/kamailio-bench.XXXXXX)
      [ "$role" = A ] && define=(-A ROLE_A)
      kamailio -DD -E -m 512 -M 16 -Y "$run" -P "$run/kamailio.pid" -x tlsf \
        -f "$HERE/kamailio_tls_pair.cfg" "${define[@]}" \
        -A "TLS_CERT=\"$certs/proxy.pem\"" -A "TLS_KEY=\"$certs/proxy.key\"" ${KAMAILIO_ARGS:-} &
      ;;
    *) echo "tls_pair: unknown proxy $kind" >&2; exit 2 ;;
  esac
  pids+=($!)
}

for role in $roles; do
  start "$role"
  [ "$role" = B ] && { wait_bound 5081 || stop; }
done
wait
