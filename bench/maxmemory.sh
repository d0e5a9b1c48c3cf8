#!/usr/bin/env bash
# bench/maxmemory.sh: dice next to Redis at the same maxmemory (issue 14). Prints the figures
# and the commands that made them.
#
#   bench/maxmemory.sh          MAXMEMORY=32mb by default
#
# Part 1: SET throughput while evicting: `redis-benchmark -t set -d 100 -r 2000000 -n N
#   -c 50 -P 16` against redis-server and one `dice node`, both `--maxmemory $MAXMEMORY
#   --maxmemory-policy allkeys-lru` (the key space is ~10x what fits). Then used_memory, RSS,
#   evicted_keys and the keys held of each.
# Part 2: hit ratio of a Zipf GET/SET workload (bench/zipf.py: GET a Zipf-drawn key, SET it on
#   a miss), allkeys-lru against allkeys-lru, same maxmemory, fresh servers.
# Part 3: three dice nodes on loopback, each `--maxmemory $MAXMEMORY`, a SET flood of ten
#   times the limit (1000-byte values) against node 1: every node's RSS before and after,
#   next to 1.2 x maxmemory + its base RSS (measured at start).
#
# redis-server runs with `--save '' --appendonly no` on a free loopback port. Only the
# processes this script starts are stopped (by pid); its temp dir is removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DICE=${DICE:-$ROOT/target/release/dice}
MAXMEMORY=${MAXMEMORY:-32mb}
N_SET=${N_SET:-1000000}
ZIPF_KEYS=${ZIPF_KEYS:-500000}
ZIPF_MAXMEMORY=${ZIPF_MAXMEMORY:-8mb}
ZIPF_OPS=${ZIPF_OPS:-400000}
TMP=$(mktemp -d /tmp/dice-maxmem.XXXXXX)
PIDS=()

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_redis
build_dice

start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --maxmemory "$MAXMEMORY" --maxmemory-policy allkeys-lru --daemonize no \
        >"$TMP/redis.$REDIS_PORT.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for ping_ok "$REDIS_PORT"
}

# A node with this run's memory limit (see `start_dice` in bench/lib.sh).
start_limited() { start_dice "$@" --maxmemory "$MAXMEMORY" --maxmemory-policy allkeys-lru; }

SET_CMD="redis-benchmark -h 127.0.0.1 -p PORT -t set -d 100 -r 2000000 -n $N_SET -c 50 -P 16 -q"
set_rps() { redis-benchmark -h 127.0.0.1 -p "$1" -t set -d 100 -r 2000000 -n "$N_SET" -c 50 -P 16 -q \
    | tr '\r' '\n' | awk '/SET:/ { print $2 }' | tail -1; }

echo "## maxmemory $MAXMEMORY, allkeys-lru"
echo
echo "### 1. SET throughput while evicting"
echo "command: $SET_CMD"
start_redis
r_rps=$(set_rps "$REDIS_PORT")
echo "redis  : SET ${r_rps} req/s  used_memory $(info "$REDIS_PORT" memory used_memory)  rss $(( $(rss_kb "$REDIS_PID") * 1024 ))  evicted_keys $(info "$REDIS_PORT" stats evicted_keys)  keys $(redis-cli -p "$REDIS_PORT" DBSIZE)"
stop "$REDIS_PID"
start_limited "$TMP/single"
d_rps=$(set_rps "$DICE_PORT")
echo "dice   : SET ${d_rps} req/s  used_memory $(info "$DICE_PORT" memory used_memory)  rss $(( $(rss_kb "$DICE_PID") * 1024 ))  evicted_keys $(info "$DICE_PORT" memory evicted_keys)  keys $(redis-cli -p "$DICE_PORT" DBSIZE)"
stop "$DICE_PID"

echo
SET_MAXMEMORY=$MAXMEMORY
MAXMEMORY=$ZIPF_MAXMEMORY
echo "### 2. Zipf GET/SET hit ratio (maxmemory $MAXMEMORY, s=0.99, $ZIPF_KEYS keys of 100 bytes, $ZIPF_OPS counted GETs after as many to warm up)"
echo "command: bench/zipf.py PORT --keys $ZIPF_KEYS --ops $ZIPF_OPS"
start_redis
echo "redis  : $("$ROOT/bench/zipf.py" "$REDIS_PORT" --keys "$ZIPF_KEYS" --ops "$ZIPF_OPS")  keys held $(redis-cli -p "$REDIS_PORT" DBSIZE)"
stop "$REDIS_PID"
start_limited "$TMP/zipf"
echo "dice   : $("$ROOT/bench/zipf.py" "$DICE_PORT" --keys "$ZIPF_KEYS" --ops "$ZIPF_OPS")  keys held $(redis-cli -p "$DICE_PORT" DBSIZE)"
stop "$DICE_PID"

echo
MAXMEMORY=$SET_MAXMEMORY
echo "### 3. Three dice nodes, a SET flood of ten times maxmemory against node 1"
start_limited "$TMP/c1"; P1=$DICE_PORT; PID1=$DICE_PID; A=$DICE_P2P
start_limited "$TMP/c2" --peer "$A"; P2=$DICE_PORT; PID2=$DICE_PID
start_limited "$TMP/c3" --peer "$A"; P3=$DICE_PORT; PID3=$DICE_PID
sleep 3
B1=$(rss_kb "$PID1"); B2=$(rss_kb "$PID2"); B3=$(rss_kb "$PID3")
max_bytes=$(redis-cli -p "$P1" CONFIG GET maxmemory | tail -1)
flood_n=$(( max_bytes * 10 / 1000 ))
FLOOD_CMD="redis-benchmark -h 127.0.0.1 -p $P1 -t set -d 1000 -r 100000000 -n $flood_n -c 50 -P 16 -q"
echo "command: $FLOOD_CMD"
# A node may answer OOM while its peers' tombstones are not yet stable: redis-benchmark then
# stops early, which the figures below show (keys, used_memory); the script goes on.
rps=$( (redis-benchmark -h 127.0.0.1 -p "$P1" -t set -d 1000 -r 100000000 -n "$flood_n" -c 50 \
    -P 16 -q 2>&1 || true) | tr '\r' '\n' | awk '/SET:/ { print $2 }' | tail -1)
sleep 5
echo "flood: SET ${rps} req/s on node 1"
for i in 1 2 3; do
    pid_var=PID$i; base_var=B$i; port_var=P$i
    pid=${!pid_var}; base=$(( ${!base_var} * 1024 )); port=${!port_var}
    rss=$(( $(rss_kb "$pid") * 1024 ))
    bound=$(( max_bytes * 12 / 10 + base ))
    echo "node $i: rss $rss  base $base  bound(1.2*max+base) $bound  $([[ $rss -le $bound ]] && echo within || echo OVER)  used_memory $(info "$port" memory used_memory)  evicted_keys $(info "$port" memory evicted_keys)  keys $(redis-cli -p "$port" DBSIZE)  digest $(info "$port" cluster dice_digest)"
done
