#!/usr/bin/env bash
# One cold build of Lua 5.4 (32 sources, -O2 -g0, make -j$JOBS) started on host 1 of a 3-host
# network-namespace lab, three ways, side by side: plain gcc, distcc with a distccd on each host,
# and meshcc with a daemon on each host. Prints the times and the ratios to gcc.
#
#   bench/distributed.sh          # results under target/bench/distributed-<time>/
#
# Tunables (environment): JOBS (default 12), ROUNDS (default 1; each round runs the three
# builds, in reverse order on even rounds so the machine's drift does not favour one tool).
# Every host is the same machine, so the distributed rows measure overhead, never capacity.
# Nothing leaves the lab's namespaces (mDNS included); the lab is removed however this ends.
set -euo pipefail

JOBS=${JOBS:-12}
ROUNDS=${ROUNDS:-1}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LABSH=${LABSH:-$ROOT/netsim/ns/lab.sh}

log() { printf '==> %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 2; }
[ -x "$LABSH" ] || { echo "missing $LABSH (the namespace lab)" >&2; exit 2; }
need=()
for tool in gcc make distcc distccd python3; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get install -y gcc make distcc python3
fi

log "building meshcc (release)"
(cd "$ROOT" && cargo build --release --quiet)
MESHCC=$ROOT/target/release/meshcc

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$ROOT/target/bench/distributed-$STAMP
LAB=mcb$$
mkdir -p "$WORK"
cleanup() {
    "$LABSH" down "$LAB" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# --- the project ---------------------------------------------------------------------------------
LUA=$(cd "$ROOT" && cargo metadata --format-version 1 --offline 2>/dev/null | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "lua-src")
root = os.path.dirname(p["manifest_path"])
print(next(os.path.join(root, d) for d in sorted(os.listdir(root)) if d.startswith("lua-5")))')
mkdir -p "$WORK/lua"
cp "$LUA"/*.c "$LUA"/*.h "$WORK/lua/"
cat >"$WORK/lua/Makefile" <<'EOF'
SRCS := $(wildcard *.c)
OBJS := $(SRCS:.c=.o)
all: $(OBJS)
%.o: %.c
	$(CC) -O2 -g0 -c $< -o $@
EOF
N=$(ls "$WORK/lua"/*.c | wc -l)

# --- the lab -------------------------------------------------------------------------------------
log "lab $LAB: 3 hosts"
"$LABSH" up "$LAB" 3 >/dev/null
A=()
for i in 1 2 3; do A[$i]=$("$LABSH" addr "$LAB" "$i"); done
NET=${A[1]%.*}
in_host() { local i=$1; shift; ip netns exec "$LAB-h$i" "$@"; }

# distcc: one distccd per host, 2 jobs each, as nobody, logs in a directory it may write.
mkdir -p "$WORK/distcc" && chmod 0777 "$WORK/distcc"
for i in 1 2 3; do
    in_host "$i" distccd --daemon --user nobody --jobs 2 --allow "$NET.0/24" \
        --listen "${A[$i]}" --pid-file "$WORK/distcc/distccd$i.pid" \
        --log-file "$WORK/distcc/distccd$i.log"
done
export DISTCC_HOSTS="${A[1]}/2 ${A[2]}/2 ${A[3]}/2"

# meshcc: one daemon per host, 2 slots each, one cluster, host 1 as the seed.
for i in 1 2 3; do mkdir -p "$WORK/m$i"; done
token=$(MESHCC_HOME=$WORK/m1 "$MESHCC" init --advertise "${A[1]}:7471" | awk '/meshcc1:/ {print $NF}')
for i in 2 3; do MESHCC_HOME=$WORK/m$i "$MESHCC" join "$token" >/dev/null; done
for i in 1 2 3; do
    in_host "$i" env MESHCC_HOME="$WORK/m$i" MESHCC_LISTEN=0.0.0.0:7471 MESHCC_SLOTS=2 \
        "$MESHCC" daemon 2>"$WORK/m$i/daemon.stderr" &
done
log "waiting for host 1 to see both peers with their slots"
for _ in $(seq 1 300); do
    seen=$(MESHCC_HOME=$WORK/m1 "$MESHCC" status --json 2>/dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
except Exception:
    print(0); sys.exit()
print(sum(1 for m in s.get("members", []) if m.get("state") in ("alive", "connected")))' || echo 0)
    [ "$seen" -ge 2 ] && break
    sleep 0.1
done

clean() { rm -f "$WORK/lua"/*.o; }
timed() { # label, command…: prints seconds
    local start end
    start=$(date +%s.%N)
    "$@" >"$WORK/$label.out" 2>&1 || { cat "$WORK/$label.out" >&2; exit 1; }
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.3f}')"
}
build_gcc() { label=gcc; clean; timed in_host 1 make -C "$WORK/lua" -j"$JOBS" CC=gcc; }
build_distcc() {
    label=distcc; clean
    timed in_host 1 env DISTCC_DIR="$WORK/distcc" make -C "$WORK/lua" -j"$JOBS" CC="distcc gcc"
}
build_meshcc() {
    label=meshcc; clean
    rm -rf "$WORK/m1/cache"
    MESHCC_HOME=$WORK/m1 "$MESHCC" stats --zero >/dev/null
    timed in_host 1 env MESHCC_HOME="$WORK/m1" make -C "$WORK/lua" -j"$JOBS" CC="$MESHCC gcc"
}

RESULTS=$WORK/results.txt
for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then order=(gcc distcc meshcc); else order=(meshcc distcc gcc); fi
    for t in "${order[@]}"; do
        s=$(build_"$t")
        echo "round $r $t $s" | tee -a "$RESULTS"
    done
done
MESHCC_HOME=$WORK/m1 "$MESHCC" stats --json >"$WORK/meshcc-stats.json"

python3 - "$RESULTS" "$WORK/meshcc-stats.json" "$N" "$JOBS" <<'EOF'
import json, sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
t = {}
for _, r, tool, s in rows:
    t.setdefault(tool, []).append(float(s))
st = json.load(open(sys.argv[2]))
med = {k: statistics.median(v) for k, v in t.items()}
print(f"\nLua 5.4, {sys.argv[3]} sources, -O2 -g0, make -j{sys.argv[4]}, from host 1 of 3 (median of {len(t['gcc'])} round(s))")
print(f"{'tool':8} {'seconds':>8} {'vs gcc':>7}")
for k in ("gcc", "distcc", "meshcc"):
    print(f"{k:8} {med[k]:8.3f} {med[k] / med['gcc']:7.2f}")
print(f"meshcc vs distcc: {med['meshcc'] / med['distcc']:.2f}")
print(f"meshcc (last build): remote {st['remote_compiles']} {st.get('remote_by_peer', {})}, "
      f"local {st['local_compiles']}, local fallbacks {st['local_fallbacks']}, retries {st['retries']}")
EOF
log "results in $WORK"
