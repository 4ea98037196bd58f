#!/usr/bin/env bash
# Coordinator failover on real hosts: 5 meshcc daemons in a network-namespace lab
# (netsim/ns/lab.sh), configured only with the join token (mDNS inside the lab). Each run waits
# until all five agree on a coordinator, kills it (SIGKILL), and measures the time until every
# survivor's `meshcc status --json` names one new coordinator; then restarts the killed node.
#
#   bench/failover.sh            RUNS=10 (default), MESHCC_BIN=target/debug/meshcc (default)
#
# Prints each run and the median / min / max. Polling resolution: one `meshcc status` round
# over the survivors (a few tens of ms), added to every figure. Needs root and iproute2. No
# traffic leaves the lab's namespaces; everything is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
N=5
BIN=$(realpath "${MESHCC_BIN:-target/debug/meshcc}")
LAB=mcfo$$
TMP=$(mktemp -d /tmp/meshcc-failover-XXXXXX)
[ -x "$BIN" ] || { echo "no meshcc binary at $BIN (cargo build first)" >&2; exit 2; }

cleanup() {
  for i in $(seq 1 $N); do
    pid=$(cat "$TMP/h$i/run/daemon.lock" 2>/dev/null || true)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  netsim/ns/lab.sh down "$LAB" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The coordinator a home's daemon names (empty if none or no answer).
coordinator_of() {
  MESHCC_HOME="$TMP/h$1" "$BIN" status --json 2>/dev/null \
    | grep -A1 '"coordinator": {' | sed -n 's/.*"node_id": "\([a-z0-9]*\)".*/\1/p'
}

# The coordinator all of the given hosts name, if they agree.
agreed() {
  local first="" c
  for i in "$@"; do
    c=$(coordinator_of "$i")
    [ -n "$c" ] || return 1
    [ -z "$first" ] && first=$c
    [ "$c" = "$first" ] || return 1
  done
  echo "$first"
}

start() {
  MESHCC_HOME="$TMP/h$1" MESHCC_LISTEN=0.0.0.0:7471 \
    setsid netsim/ns/lab.sh exec "$LAB" "$1" "$BIN" daemon </dev/null >/dev/null 2>>"$TMP/h$1.log" &
  disown
}

netsim/ns/lab.sh up "$LAB" $N >/dev/null
token=$(MESHCC_HOME="$TMP/h1" "$BIN" init | grep -o 'meshcc1:[^ ]*')
ids=()
for i in $(seq 1 $N); do
  [ "$i" = 1 ] || MESHCC_HOME="$TMP/h$i" "$BIN" join "$token" >/dev/null
  ids[$i]=$(MESHCC_HOME="$TMP/h$i" "$BIN" id)
  start "$i"
done

all=$(seq 1 $N)
times=()
for run in $(seq 1 "$RUNS"); do
  deadline=$(( $(now_ms) + 60000 ))
  until old=$(agreed $all); do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "no agreement before run $run" >&2; exit 1; }
    sleep 0.2
  done
  # Let the incumbent's leases settle, as in steady state.
  sleep 2
  victim=""
  for i in $all; do [ "${ids[$i]}" = "$old" ] && victim=$i; done
  survivors=$(for i in $all; do [ "$i" = "$victim" ] || echo "$i"; done)
  kill -9 "$(cat "$TMP/h$victim/run/daemon.lock")"
  t0=$(now_ms)
  deadline=$(( t0 + 60000 ))
  while true; do
    new=$(agreed $survivors || true)
    [ -n "$new" ] && [ "$new" != "$old" ] && break
    [ "$(now_ms)" -lt "$deadline" ] || { echo "run $run: no new coordinator in 60 s" >&2; exit 1; }
  done
  t=$(( $(now_ms) - t0 ))
  times+=("$t")
  echo "run $run: coordinator h$victim killed, survivors agree on a new one after ${t} ms"
  start "$victim"
done

sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(printf '%s\n' "$sorted" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
echo "failover over $RUNS runs: median ${median} ms, min $(echo "$sorted" | head -1) ms, max $(echo "$sorted" | tail -1) ms"
