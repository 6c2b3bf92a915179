#!/usr/bin/env bash
# A throw-away CA and one ECDSA P-256 certificate for 127.0.0.1 (IP SAN), for the `tls` mode
# of run.sh and idle_conns.py:   make_certs.sh DIR   ->  DIR/ca.pem DIR/proxy.pem DIR/proxy.key
set -eu
dir=${1:?directory}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj /CN=sipr-bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout proxy.key -out proxy.csr \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
openssl x509 -req -in proxy.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out proxy.pem -days 2 \
  -extfile ext.cnf 2>/dev/null
