#!/usr/bin/env bash
# One cold build of Lua 5.4 (32 sources, -O2 -g0, make -j$JOBS) started on host 1 of a 3-host
# network-namespace lab, three ways, side by side: plain gcc, distcc with a distccd on each host,
# and meshcc with a daemon on each host. Prints the times and the ratios to gcc.
#
#   bench/distributed.sh          # results under target/bench/distributed-<time>/
#
# Then the churn build: the same build CHURN_BUILDS times in a row (default 3) through distcc and
# through meshcc while host 3's daemon is SIGKILLed and restarted every CHURN_EVERY seconds
# (default 2), counting the jobs that fell back to a local compile.
#
# Tunables (environment): JOBS (default 12), ROUNDS (default 1; each round runs the three
# builds, in reverse order on even rounds so the machine's drift does not favour one tool),
# CHURN_BUILDS (0 skips the churn builds), CHURN_EVERY.
# Every host is the same machine, so the distributed rows measure overhead, never capacity.
# Nothing leaves the lab's namespaces (mDNS included); the lab is removed however this ends.
set -euo pipefail

JOBS=${JOBS:-12}
ROUNDS=${ROUNDS:-1}
CHURN_BUILDS=${CHURN_BUILDS:-3}
CHURN_EVERY=${CHURN_EVERY:-2}

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
start_distccd() { # host
    in_host "$1" distccd --daemon --user nobody --jobs 2 --allow "$NET.0/24" \
        --listen "${A[$1]}" --pid-file "$WORK/distcc/distccd$1.pid" \
        --log-file "$WORK/distcc/distccd$1.log"
}
for i in 1 2 3; do start_distccd "$i"; done
export DISTCC_HOSTS="${A[1]}/2 ${A[2]}/2 ${A[3]}/2"

# meshcc: one daemon per host, 2 slots each, one cluster, host 1 as the seed.
for i in 1 2 3; do mkdir -p "$WORK/m$i"; done
token=$(MESHCC_HOME=$WORK/m1 "$MESHCC" init --advertise "${A[1]}:7471" | awk '/meshcc1:/ {print $NF}')
for i in 2 3; do MESHCC_HOME=$WORK/m$i "$MESHCC" join "$token" >/dev/null; done
start_meshcc() { # host: starts its daemon in the background, records its pid
    # exec all the way down: the recorded pid is the daemon's own.
    (exec ip netns exec "$LAB-h$1" env MESHCC_HOME="$WORK/m$1" MESHCC_LISTEN=0.0.0.0:7471 \
        MESHCC_SLOTS=2 "$MESHCC" daemon 2>>"$WORK/m$1/daemon.stderr") &
    echo $! >"$WORK/m$1/pid"
}
for i in 1 2 3; do start_meshcc "$i"; done
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

# --- churn ---------------------------------------------------------------------------------------
kill_distccd3() { # the whole pre-forked tree: stop every process first, then kill
    local pids=()
    for p in $(ip netns pids "$LAB-h3"); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = distccd ] && pids+=("$p")
    done
    ((${#pids[@]})) || return 0
    kill -STOP "${pids[@]}" 2>/dev/null || true
    kill -KILL "${pids[@]}" 2>/dev/null || true
}
churn() { # tool: kill and restart host 3's daemon every CHURN_EVERY s until stopped
    while sleep "$CHURN_EVERY"; do
        echo "kill $1 $(date +%s.%N)" >>"$WORK/churn-kills.txt"
        if [ "$1" = meshcc ]; then
            kill -KILL "$(cat "$WORK/m3/pid")" 2>/dev/null || true
            sleep 0.5
            start_meshcc 3
        else
            kill_distccd3
            sleep 0.5
            start_distccd 3
        fi
    done
}
CHURN_RESULTS=$WORK/churn.txt
if ((CHURN_BUILDS > 0)); then
    for t in distcc meshcc; do
        [ "$t" = meshcc ] && MESHCC_HOME=$WORK/m1 "$MESHCC" stats --zero >/dev/null
        : >"$WORK/distcc-client.log"
        churn "$t" &
        churner=$!
        for b in $(seq 1 "$CHURN_BUILDS"); do
            clean
            rm -rf "$WORK/m1/cache"
            if [ "$t" = meshcc ]; then
                in_host 1 env MESHCC_HOME="$WORK/m1" make -C "$WORK/lua" -j"$JOBS" CC="$MESHCC gcc" \
                    >"$WORK/churn-$t-$b.out" 2>&1
            else
                in_host 1 env DISTCC_DIR="$WORK/distcc" DISTCC_LOG="$WORK/distcc-client.log" \
                    DISTCC_VERBOSE=0 make -C "$WORK/lua" -j"$JOBS" CC="distcc gcc" \
                    >"$WORK/churn-$t-$b.out" 2>&1
            fi
        done
        kill "$churner" 2>/dev/null || true
        wait "$churner" 2>/dev/null || true
        if [ "$t" = meshcc ]; then
            fallbacks=$(MESHCC_HOME=$WORK/m1 "$MESHCC" stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["local_fallbacks"], "retries", s["retries"])')
        else
            fallbacks=$(grep -c 'failed to distribute' "$WORK/distcc-client.log" || true)
        fi
        kills=$(grep -c "kill $t" "$WORK/churn-kills.txt" 2>/dev/null || true)
        echo "churn $t builds $CHURN_BUILDS host3_kills $kills local_fallbacks $fallbacks" | tee -a "$CHURN_RESULTS"
    done
fi

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
