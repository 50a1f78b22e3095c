#!/usr/bin/env bash
# `make demo`: the flagship lab and the STRICT Host-header lab when they are built; until then, the foundation walkthrough:
# build the two-node bookinfo example, curl the ratings Service by DNS name from the
# sleep pod, show where the answer came from, and tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
NETLAB=.venv/bin/netlab
LAB=demo

if $NETLAB lab list >/dev/null 2>&1 && $NETLAB lab list 2>/dev/null | grep -q mirrord-ambient-steal; then
  # The flagship lab, then the sidecar field report (STRICT mTLS through a label proxy).
  rc=0
  $NETLAB lab run mirrord-ambient-steal || rc=$?
  $NETLAB lab run strict-host-header || rc=$?
  exit $rc
fi

cleanup() { $NETLAB down "$LAB" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
$NETLAB list --json | grep -q "\"name\": \"$LAB\"" && $NETLAB down "$LAB"

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
step "netlab up topologies/bookinfo.yaml --name $LAB"
$NETLAB up topologies/bookinfo.yaml --name "$LAB"
step "netlab status $LAB"
$NETLAB status "$LAB"
for name in ratings ratings.bookinfo ratings.bookinfo.svc.cluster.local; do
  step "netlab exec $LAB sleep -- curl -s http://$name:9080/demo"
  $NETLAB exec "$LAB" sleep -- curl -sS -m 5 "http://$name:9080/demo"
  echo
done
step "the Service spreads over both replicas (server name from 6 requests)"
for i in 1 2 3 4 5 6; do
  $NETLAB exec "$LAB" sleep -- curl -sS -m 5 http://ratings:9080/ | python3 -c 'import json,sys; print(json.load(sys.stdin)["server"])'
done | sort | uniq -c
step "netlab down $LAB"
$NETLAB down "$LAB"
trap - EXIT
