#!/usr/bin/env bash
# A lab of real hosts in network namespaces, for meshcc's end-to-end tests and benchmarks.
#
#   lab.sh up NAME N        N hosts NAME-h1..NAME-hN on a bridge in the namespace NAME-sw
#   lab.sh down NAME        remove the lab (kills what runs inside; idempotent)
#   lab.sh addr NAME I      print host I's IPv4 address
#   lab.sh renumber NAME I NEWIP   move host I to NEWIP (a full address, or the last octet)
#   lab.sh exec NAME I CMD…        run CMD inside host I
#   lab.sh cut NAME I / heal NAME I   unplug / replug host I's cable (its switch port)
#   lab.sh list             labs present, with their hosts and addresses
#
# Host I has one interface, eth0, with address NET.I/24, loopback up, and a route for
# 224.0.0.0/4 on eth0. NET is $MESHCC_LAB_NET if set (e.g. 10.77.3), else 10.77.K with K
# derived from NAME. Labs never share anything, so several can run at once, even on one NET.
# The bridge floods multicast (snooping off), so mDNS (IPv4 and IPv6) works between the hosts.
#
# Nothing in the root namespace changes: the veth pairs are made inside the switch namespace
# with their host ends moved straight into the hosts. A failed or interrupted `up` removes
# what it made. MESHCC_LAB_HOLD=K (tests only) makes `up` wait, forever, after host K.
set -euo pipefail

die() { echo "lab.sh: $*" >&2; exit 2; }
sw() { echo "$1-sw"; }
host() { echo "$1-h$2"; }

check_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]] || die "bad lab name '$1' (letters, digits, _ . -; at most 41)"
}
check_index() {
  [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 250 ] || die "bad host number '$2' (1..250)"
  ip netns list | awk '{print $1}' | grep -qx -- "$(host "$1" "$2")" || die "no host $2 in lab '$1'"
}

lab_net() {
  if [ -n "${MESHCC_LAB_NET:-}" ]; then
    [[ "$MESHCC_LAB_NET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "MESHCC_LAB_NET=$MESHCC_LAB_NET: expected three octets, e.g. 10.77.3"
    echo "$MESHCC_LAB_NET"
  else
    echo "10.77.$(( $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 256 ))"
  fi
}

# Namespaces of lab NAME: the switch and every host, whatever their number.
lab_namespaces() {
  ip netns list | awk '{print $1}' | grep -E -- "^$(printf '%s' "$1" | sed 's/[.]/\\./g')-(sw|h[0-9]+)\$" || true
}

down() {
  local name=$1 ns pids
  for ns in $(lab_namespaces "$name"); do
    # Processes still inside would keep the namespace (and its interfaces) alive.
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  done
  for ns in $(lab_namespaces "$name"); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  local name=$1 n=$2 net i s h
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "bad host count '$n' (1..250)"
  [ -z "$(lab_namespaces "$name")" ] || die "lab '$name' exists already (lab.sh down $name)"
  net=$(lab_net "$name")
  s=$(sw "$name")
  hold=""
  trap '[ -z "$hold" ] || kill "$hold" 2>/dev/null; down "$name"; exit 130' INT TERM HUP
  trap 'rc=$?; [ $rc -eq 0 ] || down "$name"' EXIT
  ip netns add "$s"
  ip -n "$s" link set lo up
  ip -n "$s" link add br0 type bridge mcast_snooping 0
  ip -n "$s" link set br0 up
  for i in $(seq 1 "$n"); do
    h=$(host "$name" "$i")
    ip netns add "$h"
    ip -n "$s" link add "h$i" type veth peer name eth0 netns "$h"
    ip -n "$s" link set "h$i" master br0 up
    # When the old address goes, the new one (a secondary in the same subnet) takes over.
    # IPv6 link-local is usable at once (no duplicate address detection on a private bridge).
    ip netns exec "$h" sh -c 'echo 1 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries
      f=/proc/sys/net/ipv6/conf/eth0/accept_dad; [ ! -e $f ] || echo 0 > $f'
    ip -n "$h" link set lo up
    ip -n "$h" addr add "$net.$i/24" dev eth0
    ip -n "$h" link set eth0 up
    ip -n "$h" route add 224.0.0.0/4 dev eth0
    if [ "${MESHCC_LAB_HOLD:-}" = "$i" ]; then
      echo "holding after host $i" >&2
      sleep infinity &
      hold=$!
      wait "$hold"
    fi
  done
  trap - INT TERM HUP EXIT
}

addr() {
  ip -n "$(host "$1" "$2")" -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}'
}

renumber() {
  local name=$1 i=$2 new=$3 h old net
  h=$(host "$name" "$i")
  old=$(addr "$name" "$i")
  if [[ "$new" =~ ^[0-9]+$ ]]; then
    net=${old%.*}
    new="$net.$new"
  fi
  [[ "$new" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "bad address '$new'"
  [ "$new" != "$old" ] || return 0
  # New address first, then the old one goes: the new one is promoted, and sockets bound to
  # the wildcard address switch to it without ever being left with no address.
  ip -n "$h" addr add "$new/24" dev eth0
  [ -z "$old" ] || ip -n "$h" addr del "$old/24" dev eth0
  ip -n "$h" route replace 224.0.0.0/4 dev eth0
}

list() {
  local ns name i
  for ns in $(ip netns list | awk '{print $1}' | grep -E -- '-sw$' || true); do
    name=${ns%-sw}
    echo "$name"
    for h in $(lab_namespaces "$name" | grep -E -- '-h[0-9]+$' | sort -t h -k2 -n); do
      i=${h##*-h}
      printf '  h%s %s %s\n' "$i" "$(addr "$name" "$i" || true)" \
        "$(ip -n "$ns" -o link show "h$i" 2>/dev/null | grep -q 'state UP\|,UP' && echo up || echo cut)"
    done
  done
}

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
command -v ip >/dev/null || die "needs iproute2 (ip)"
cmd=${1:-}
case "$cmd" in
  up) [ $# -eq 3 ] || die "usage: lab.sh up NAME N"; check_name "$2"; up "$2" "$3" ;;
  down) [ $# -eq 2 ] || die "usage: lab.sh down NAME"; check_name "$2"; down "$2" ;;
  addr) [ $# -eq 3 ] || die "usage: lab.sh addr NAME I"; check_name "$2"; check_index "$2" "$3"; addr "$2" "$3" ;;
  renumber) [ $# -eq 4 ] || die "usage: lab.sh renumber NAME I NEWIP"; check_name "$2"; check_index "$2" "$3"; renumber "$2" "$3" "$4" ;;
  exec) [ $# -ge 4 ] || die "usage: lab.sh exec NAME I CMD…"; check_name "$2"; check_index "$2" "$3"
    h=$(host "$2" "$3"); shift 3; exec ip netns exec "$h" "$@" ;;
  cut|heal) [ $# -eq 3 ] || die "usage: lab.sh $cmd NAME I"; check_name "$2"; check_index "$2" "$3"
    ip -n "$(sw "$2")" link set "h$3" "$([ "$cmd" = cut ] && echo down || echo up)" ;;
  list) list ;;
  *) die "usage: lab.sh up|down|addr|renumber|exec|cut|heal|list …" ;;
esac
