#!/usr/bin/env bash
# bench/run.sh: dice next to Redis on this machine, and dice's replication, in one run
# (issue 6, parts 1 to 4).
#
#   bench/run.sh            default sizes, a few minutes
#   bench/run.sh --full     larger sizes (or DICE_BENCH_FULL=1): 10x N, 1M keys in parts 3 and 4,
#                           10000 latency samples in part 2
#
# Env overrides: N_P1, N_P16 (requests per redis-benchmark run), FILL_KEYS (part 4 key space),
# SKIP_OPEN=1 (skip part 4), REPL_SAMPLES (part 2 latency samples; default 2000, full 10000),
# REPL_KEYS (part 3 key count N; default 100000, full 1000000), REPL_MISSED (part 3 missed
# update counts, comma list, each capped at N; default 1000,10000,100000),
# SKIP_REPLICATION=1 (skip parts 2 and 3), DICE_THREADS (each dice node's --threads; default 1:
# redis-benchmark takes one of this 2-core machine's cores, as Redis runs one event loop, and
# one dice worker thread measured faster here than two; see BENCHMARKS.md).
#
# Part 1: redis-server (AOF on, appendfsync everysec, temp dir) and one `dice node`, then
#   `redis-benchmark -t set,get -d 100 -r 100000 -c 50` with -P 1 and -P 16, alternating
#   Redis and dice; then the same against node 1 of a 3-node dice cluster on loopback.
# Part 4: a dice data dir of ~FILL_KEYS keys (100-byte values): restart the node, time until it
#   answers PING (and the dice process start until then), resident memory per key next to Redis's used_memory per key.
# Parts 2 and 3 (last): `cargo bench -p dice-net --bench replication` (bench profile), which
#   runs 3 in-process nodes on 127.0.0.1 and prints its own command and figures. Part 2: put on
#   one node until visible on another, p50/p99/p999, idle and under a background write load.
#   Part 3: N keys (100-byte values), then per d in REPL_MISSED: one node stopped, d updates on
#   the other two, the node restarted; time to the same digest on all 3, bytes it received next
#   to the bytes of the missed entries and of a full copy. Its temp dirs live in this script's.
#
# Everything listens on 127.0.0.1. Only the processes this script starts are stopped (by pid),
# and its temp dir is removed, on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DICE=$ROOT/target/release/dice

FULL=${DICE_BENCH_FULL:-0}
[[ ${1:-} == --full ]] && FULL=1
if [[ $FULL == 1 ]]; then
    N_P1=${N_P1:-1000000}; N_P16=${N_P16:-5000000}; FILL_KEYS=${FILL_KEYS:-1000000}
    REPL_SAMPLES=${REPL_SAMPLES:-10000}; REPL_KEYS=${REPL_KEYS:-1000000}
else
    N_P1=${N_P1:-100000};  N_P16=${N_P16:-500000};  FILL_KEYS=${FILL_KEYS:-250000}
    REPL_SAMPLES=${REPL_SAMPLES:-2000};  REPL_KEYS=${REPL_KEYS:-100000}
fi
REPL_MISSED=${REPL_MISSED:-1000,10000,100000}
SKIP_REPLICATION=${SKIP_REPLICATION:-0}
DICE_THREADS=${DICE_THREADS:-1}
CLIENTS=50
VALUE_SIZE=100
KEYSPACE=100000

TMP=$(mktemp -d /tmp/dice-bench.XXXXXX)
PIDS=()

# ---------------------------------------------------------------- housekeeping

# log, cleanup (on exit: stops the processes in PIDS, removes TMP), need_redis, free_port,
# wait_for, ping_ok; start_dice and rss_kb are this script's own, below.
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# Forget a pid we stopped ourselves.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

ensure_tools() {
    need_redis
    log "building dice (release)"
    (cd "$ROOT" && cargo build --release -p dice-cli >&2)
    if [[ $SKIP_REPLICATION != 1 ]]; then
        log "building the replication bench (bench profile)"
        (cd "$ROOT" && cargo bench -p dice-net --bench replication --no-run >&2)
    fi
}

# ---------------------------------------------------------------- servers

# start_redis DIR -> sets REDIS_PORT, REDIS_PID
start_redis() {
    local dir=$1
    mkdir -p "$dir"
    REDIS_PORT=$(free_port)
    REDIS_CMD="redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir $dir --appendonly yes --appendfsync everysec --save '' --daemonize no"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
        --appendonly yes --appendfsync everysec --save '' --daemonize no \
        >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for ping_ok "$REDIS_PORT"
}

# start_dice NAME DIR [--peer ADDR] -> sets DICE_PORT_<NAME>, DICE_PID_<NAME>, DICE_P2P_<NAME>
# The API port is 0 (the node picks a free one and writes it to DIR/api.addr).
start_dice() {
    local name=$1 dir=$2; shift 2
    mkdir -p "$dir"
    rm -f "$dir/api.addr"
    local t0; t0=$(date +%s.%N)
    "$DICE" node --data "$dir" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --no-mdns \
        --threads "$DICE_THREADS" "$@" \
        >>"$dir.out" 2>>"$dir.err" &
    local pid=$!
    PIDS+=("$pid")
    wait_for test -s "$dir/api.addr"
    local port; port=$(cut -d: -f2 "$dir/api.addr")
    wait_for ping_ok "$port"
    local t1; t1=$(date +%s.%N)
    wait_for grep -q "node running" "$dir.err"
    local t2; t2=$(date +%s.%N)
    # libp2p listen address from the last "node running ... listen=[/ip4/...]" line
    local p2p; p2p=$(grep "node running" "$dir.err" | tail -1 | sed -n 's/.*listen=\[\([^],]*\).*/\1/p')
    printf -v "DICE_PORT_$name" '%s' "$port"
    printf -v "DICE_PID_$name" '%s' "$pid"
    printf -v "DICE_P2P_$name" '%s' "$p2p"
    printf -v "DICE_START_S_$name" "%s" "$(awk -v a="$t0" -v b="$t1" "BEGIN { print b - a }")"
    printf -v "DICE_RUNNING_S_$name" "%s" "$(awk -v a="$t0" -v b="$t2" "BEGIN { print b - a }")"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# ---------------------------------------------------------------- benchmark

# bench PORT P N -> prints "SET rps" and "GET rps" lines
bench() {
    local port=$1 p=$2 n=$3
    redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -d "$VALUE_SIZE" -r "$KEYSPACE" \
        -n "$n" -c "$CLIENTS" -P "$p" --csv 2>/dev/null |
        awk -F, 'NR > 1 { gsub(/"/, ""); print $1, $2 }'
}

bench_cmd() {
    echo "redis-benchmark -h 127.0.0.1 -p PORT -t set,get -d $VALUE_SIZE -r $KEYSPACE -n $2 -c $CLIENTS -P $1 --csv"
}

# compare LABEL DICE_PORT: alternate Redis and dice for P=1 and P=16, print a table
compare() {
    local label=$1 dport=$2 p n r d
    declare -A R D
    for p in 1 16; do
        n=$N_P1; [[ $p == 16 ]] && n=$N_P16
        log "$label: P=$p N=$n: Redis"
        while read -r t v; do R[$t,$p]=$v; done < <(bench "$REDIS_PORT" "$p" "$n")
        log "$label: P=$p N=$n: dice"
        while read -r t v; do D[$t,$p]=$v; done < <(bench "$dport" "$p" "$n")
    done
    echo
    echo "### $label"
    echo
    echo "| test | P | Redis ops/s | dice ops/s | dice/Redis |"
    echo "|---|---|---|---|---|"
    for t in SET GET; do
        for p in 1 16; do
            r=${R[$t,$p]:-0}; d=${D[$t,$p]:-0}
            printf '| %s | %s | %s | %s | %s |\n' "$t" "$p" "$r" "$d" \
                "$(awk -v d="$d" -v r="$r" 'BEGIN { if (r > 0) printf "%.2f", d / r; else print "n/a" }')"
        done
    done
}

# fill PORT: SET key:000000000000 .. key:<FILL_KEYS-1> to 100-byte values, pipelined
# (exactly FILL_KEYS distinct keys, the key names redis-benchmark -r uses).
fill() {
    local v; v=$(head -c "$VALUE_SIZE" /dev/zero | tr '\0' x)
    awk -v n="$FILL_KEYS" -v v="$v" 'BEGIN {
        for (i = 0; i < n; i++) {
            k = sprintf("key:%012d", i)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
        }
    }' | redis-cli -h 127.0.0.1 -p "$1" --pipe >&2
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
dbsize() { redis-cli -h 127.0.0.1 -p "$1" DBSIZE; }

# ---------------------------------------------------------------- main

ensure_tools

echo "## dice vs Redis (bench/run.sh)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
echo "- redis: $(redis-server --version | awk '{ print $3 }'), dice: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "- sizes: N=$N_P1 (-P 1), N=$N_P16 (-P 16), $( [[ $FULL == 1 ]] && echo full || echo default)"

start_redis "$TMP/redis"
start_dice 1 "$TMP/single"
echo "- $REDIS_CMD"
echo "- $DICE node --data DIR --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --no-mdns --threads $DICE_THREADS"
echo "- $(bench_cmd 1 "$N_P1")"
echo "- $(bench_cmd 16 "$N_P16")"

compare "single dice node" "$DICE_PORT_1"
stop_pid "$DICE_PID_1"

# 3-node cluster: nodes 2 and 3 bootstrap from node 1; benchmark node 1.
log "starting a 3-node cluster"
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" FLUSHALL >/dev/null
start_dice A "$TMP/cluster1"
start_dice B "$TMP/cluster2" --peer "$DICE_P2P_A"
start_dice C "$TMP/cluster3" --peer "$DICE_P2P_A"
sleep 2   # let the peers connect
compare "3-node dice cluster (benchmark on node 1, nodes 2 and 3 via --peer $DICE_P2P_A)" "$DICE_PORT_A"
sleep 3   # let replication drain before reporting
echo
echo "keys after the cluster run: node1=$(dbsize "$DICE_PORT_A") node2=$(dbsize "$DICE_PORT_B") node3=$(dbsize "$DICE_PORT_C")"
stop_pid "$DICE_PID_A"; stop_pid "$DICE_PID_B"; stop_pid "$DICE_PID_C"

# Part 4: open a big data dir; memory per key.
if [[ ${SKIP_OPEN:-0} != 1 ]]; then
    fill_cmd="awk (RESP: SET key:%012d <100-byte value> for i < $FILL_KEYS) | redis-cli -h 127.0.0.1 -p PORT --pipe"
    log "part 4: filling dice and Redis with $FILL_KEYS keys"
    start_dice F "$TMP/big"
    fill "$DICE_PORT_F"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" FLUSHALL >/dev/null
    fill "$REDIS_PORT"
    stop_pid "$DICE_PID_F"
    log "part 4: restarting the dice node"
    start_dice F "$TMP/big"
    dkeys=$(dbsize "$DICE_PORT_F"); drss=$(rss_kb "$DICE_PID_F")
    rkeys=$(dbsize "$REDIS_PORT")
    rused=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO memory | awk -F: '/^used_memory:/ { print $2+0 }')
    rrss=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO memory | awk -F: '/^used_memory_rss:/ { print $2+0 }')
    sqlite_bytes=$(du -sb "$TMP/big" | awk '{ print $1 }')
    echo
    echo "### open a data dir of $dkeys keys ($VALUE_SIZE-byte values)"
    echo
    echo "- fill: $fill_cmd (against each), then the dice node stopped and restarted"
    echo
    echo "| figure | dice | Redis |"
    echo "|---|---|---|"
    printf '| restart until PING answers | %.2f s | |\n' "$DICE_START_S_F"
    printf '| restart until "node running" logged (polled at 0.1 s) | %.2f s | |\n' "$DICE_RUNNING_S_F"
    echo "| keys (DBSIZE) | $dkeys | $rkeys |"
    awk -v rss="$drss" -v dk="$dkeys" -v ru="$rused" -v rr="$rrss" -v rk="$rkeys" 'BEGIN {
        printf "| resident memory after open (VmRSS) / used_memory | %.1f MiB | %.1f MiB (rss %.1f MiB) |\n", rss/1024, ru/1048576, rr/1048576
        printf "| bytes per key (dice VmRSS, Redis used_memory) | %.0f | %.0f |\n", rss*1024/dk, ru/rk
        printf "| ratio dice/Redis per key | %.2f | |\n", (rss*1024/dk)/(ru/rk)
    }'
    echo "| data dir on disk | $((sqlite_bytes / 1048576)) MiB | |"
fi

# Parts 2 and 3: replication latency and restart catch-up (the dice-net replication bench).
if [[ $SKIP_REPLICATION != 1 ]]; then
    log "parts 2 and 3: cargo bench -p dice-net --bench replication (N=$REPL_KEYS, samples=$REPL_SAMPLES, missed=$REPL_MISSED)"
    mkdir -p "$TMP/replication"
    echo
    (cd "$ROOT" && TMPDIR="$TMP/replication" DICE_BENCH_SAMPLES="$REPL_SAMPLES" \
        DICE_BENCH_KEYS="$REPL_KEYS" DICE_BENCH_MISSED="$REPL_MISSED" \
        cargo bench -p dice-net --bench replication)
fi
