#!/usr/bin/env bash
# Hot-cache hit latency of meshcc next to gcc and ccache, and meshcc's overhead on a link step.
#
#   bench/cache-hit.sh            # two rounds, results under target/bench/cache-hit-<time>/
#
# Tunables (environment): RUNS (default 20, hit and heavy-compile groups), SMALL_RUNS (40),
# LINK_RUNS (100), WARMUP (3), ROUNDS (2). Nothing here touches the network.
#
# Each round runs three hyperfine comparisons (small C file, heavy C++ file, link step); the
# second round lists the commands in reverse order, so a drift of the machine's speed does not
# always favour the same tool. Every cache is private to this run and warmed before measuring.
set -euo pipefail

RUNS=${RUNS:-20}
SMALL_RUNS=${SMALL_RUNS:-40}
LINK_RUNS=${LINK_RUNS:-100}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-2}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
SRC=$BENCH_DIR/src

log() { printf '==> %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
need=()
for tool in gcc g++ ccache hyperfine python3; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
    pkgs=()
    for tool in "${need[@]}"; do
        case $tool in
            gcc) pkgs+=(gcc) ;;
            g++) pkgs+=(g++) ;;
            python3) pkgs+=(python3) ;;
            *) pkgs+=("$tool") ;;
        esac
    done
    log "installing ${pkgs[*]}"
    sudo_cmd=()
    if ((EUID != 0)); then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get install -y "${pkgs[@]}"
fi

log "building meshcc (release)"
(cd "$ROOT" && cargo build --release --quiet)
MESHCC=$ROOT/target/release/meshcc

# --- private state -----------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$ROOT/target/bench/cache-hit-$STAMP
WORK=$ROOT/target/bench/work
export MESHCC_HOME=$WORK/meshcc-home
CC_PP=$WORK/ccache-preprocessor
CC_DIRECT=$WORK/ccache-direct

stop_daemon() {
    "$MESHCC" stop >/dev/null 2>&1 || true
}
# A daemon left over from an interrupted run would serve from a directory we are about to delete.
if [[ -d $MESHCC_HOME ]]; then stop_daemon; fi
trap stop_daemon EXIT

rm -rf "$WORK"
mkdir -p "$RESULTS" "$WORK"/{plain,ccpp,ccdirect,meshcc,link}
cd "$WORK"

# The commands, one per tool and file. Outputs go to separate directories; sources are shared.
# hyperfine runs them through `sh -c` and subtracts the shell's start-up time, so the variable
# assignments cost nothing measurable.
declare -A CMD
for f in small heavy; do
    if [[ $f == small ]]; then cc=gcc src=$SRC/small.c; else cc=g++ src=$SRC/heavy.cpp; fi
    CMD[$f.plain]="$cc -O2 -c $src -o plain/$f.o"
    CMD[$f.ccache_pp]="CCACHE_DIR=$CC_PP CCACHE_NODIRECT=1 ccache $cc -O2 -c $src -o ccpp/$f.o"
    CMD[$f.ccache_direct]="CCACHE_DIR=$CC_DIRECT ccache $cc -O2 -c $src -o ccdirect/$f.o"
    CMD[$f.meshcc]="$MESHCC $cc -O2 -c $src -o meshcc/$f.o"
done
gcc -O2 -c "$SRC/small.c" -o link/a.o
gcc -O2 -c "$SRC/main.c" -o link/b.o
CMD[link.plain]="gcc link/a.o link/b.o -o link/prog-plain"
CMD[link.meshcc]="$MESHCC gcc link/a.o link/b.o -o link/prog-meshcc"

# --- warm the caches ---------------------------------------------------------------------------
# Two calls each: the first misses and stores, the second must hit (ccache's direct mode also
# records its manifest on the first). The first meshcc call starts the daemon.
log "warming the caches (compiles heavy.cpp three times: a few seconds each)"
for f in small heavy; do
    for tool in ccache_pp ccache_direct meshcc; do
        sh -c "${CMD[$f.$tool]}"
        sh -c "${CMD[$f.$tool]}"
    done
done
ccache_stats() { CCACHE_DIR=$1 ccache --print-stats | awk -v k="$2" '$1 == k { print $2 }'; }
if [[ $(ccache_stats "$CC_PP" preprocessed_cache_hit) -lt 2 ||
      $(ccache_stats "$CC_DIRECT" direct_cache_hit) -lt 2 ]]; then
    echo "error: ccache did not hit while warming" >&2
    exit 1
fi
if [[ $("$MESHCC" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache_hits"])') -lt 2 ]]; then
    echo "error: meshcc did not hit while warming (see $MESHCC_HOME/data/daemon.log)" >&2
    exit 1
fi
"$MESHCC" stats --zero >/dev/null
CCACHE_DIR=$CC_PP ccache --zero-stats >/dev/null
CCACHE_DIR=$CC_DIRECT ccache --zero-stats >/dev/null

# --- measure -----------------------------------------------------------------------------------
# Runs one hyperfine comparison; $1 = round, $2 = group, $3 = runs, then the command keys in
# their round-1 order (reversed in even rounds).
compare() {
    local round=$1 group=$2 runs=$3 shell=()
    shift 3
    # The link commands need no variable assignment: run them without a shell (-N), which
    # takes the shell's start-up noise out of a difference of a millisecond or two.
    if [[ $group == link ]]; then shell=(-N); fi
    local keys=("$@") args=() i
    if ((round % 2 == 0)); then
        keys=()
        for ((i = $# ; i > 0; i--)); do keys+=("${!i}"); done
    fi
    for key in "${keys[@]}"; do
        args+=(--command-name "${key#*.}" "${CMD[$key]}")
    done
    log "round $round: $group"
    hyperfine "${shell[@]}" --style basic --warmup "$WARMUP" --runs "$runs" \
        --export-json "$RESULTS/round$round-$group.json" \
        --export-markdown "$RESULTS/round$round-$group.md" \
        "${args[@]}"
}

{
    echo "date: $STAMP"
    echo "host: $(nproc) CPUs, $(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release), $(uname -r)"
    echo "gcc: $(gcc -dumpfullversion)"
    echo "ccache: $(ccache --version | head -n1)"
    echo "hyperfine: $(hyperfine --version)"
    echo "meshcc: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src || echo '+dirty')"
    echo "settings: warmup $WARMUP, runs $RUNS (heavy), $SMALL_RUNS (small), $LINK_RUNS (link), $ROUNDS rounds"
} >"$RESULTS/environment.txt"

for ((round = 1; round <= ROUNDS; round++)); do
    compare "$round" small "$SMALL_RUNS" small.plain small.ccache_pp small.ccache_direct small.meshcc
    compare "$round" heavy "$RUNS" heavy.plain heavy.ccache_pp heavy.ccache_direct heavy.meshcc
    compare "$round" link "$LINK_RUNS" link.plain link.meshcc
done

# Every measured compile through a cache must have been a hit.
{
    echo "ccache preprocessor mode: $(ccache_stats "$CC_PP" preprocessed_cache_hit) hits, $(ccache_stats "$CC_PP" cache_miss) misses"
    echo "ccache direct mode: $(ccache_stats "$CC_DIRECT" direct_cache_hit) hits, $(ccache_stats "$CC_DIRECT" cache_miss) misses"
    "$MESHCC" stats --json | python3 -c 'import json, sys; s = json.load(sys.stdin); print("meshcc: %d hits, %d misses, %d not compiles (links)" % (s["cache_hits"], s["cache_misses"], sum(s["not_compile"].values())))'
} | tee "$RESULTS/hit-check.txt"

"$MESHCC" stop >/dev/null
python3 "$BENCH_DIR/summary.py" "$RESULTS" | tee "$RESULTS/summary.md"
log "results in $RESULTS"
