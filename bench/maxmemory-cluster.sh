#!/usr/bin/env bash
# bench/maxmemory-cluster.sh: the memory bound of issue 14 on a cluster. Three release dice
# nodes on loopback (a full mesh), each `--maxmemory $MAXMEMORY --maxmemory-policy
# allkeys-lru`; a SET flood of ten times the limit (1000-byte values, random keys) against
# node 1, then one against every node at once. Every node's RSS is sampled every 0.2 s during
# each flood (the peak is printed) and read again 5 s after it, next to the bound
# 1.2 x maxmemory + the node's base RSS (measured on the empty node, 3 s after it started).
# Prints the figures and the commands that made them.
#
#   bench/maxmemory-cluster.sh            MAXMEMORY=32mb by default
#   DICE=path/to/dice FLOOD_FACTOR=10 ALL_NODES=0 bench/maxmemory-cluster.sh
#
# Only the processes this script starts are stopped (by pid); its temp dir is removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DICE=${DICE:-$ROOT/target/release/dice}
MAXMEMORY=${MAXMEMORY:-32mb}
FLOOD_FACTOR=${FLOOD_FACTOR:-10}
ALL_NODES=${ALL_NODES:-1}   # 0: skip the flood against every node at once
TMP=$(mktemp -d /tmp/dice-maxmem-cluster.XXXXXX)
PIDS=()

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
if ! command -v redis-benchmark >/dev/null; then need_redis; fi
build_dice

alive() {
    local i
    for i in 1 2 3; do
        if ! kill -0 "${PID[$i]}" 2>/dev/null; then
            echo "node $i (pid ${PID[$i]}) is gone; the end of its log:"
            tail -20 "$TMP/c$i.err"
            exit 1
        fi
    done
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# A node with this run's memory limit (see `start_dice` in bench/lib.sh).
start_limited() { start_dice "$@" --maxmemory "$MAXMEMORY" --maxmemory-policy allkeys-lru; }

start_limited "$TMP/c1"; P[1]=$DICE_PORT; PID[1]=$DICE_PID; A=$DICE_P2P
start_limited "$TMP/c2" --peer "$A"; P[2]=$DICE_PORT; PID[2]=$DICE_PID; B=$DICE_P2P
start_limited "$TMP/c3" --peer "$A" --peer "$B"; P[3]=$DICE_PORT; PID[3]=$DICE_PID
sleep 3
max_bytes=$(redis-cli -p "${P[1]}" CONFIG GET maxmemory | tail -1)
for i in 1 2 3; do
    BASE[$i]=$(( $(rss_kb "${PID[$i]}") * 1024 ))
    BOUND[$i]=$(( max_bytes * 12 / 10 + BASE[i] ))
done
flood_n=$(( max_bytes * FLOOD_FACTOR / 1000 ))
echo "## three dice nodes, maxmemory $MAXMEMORY ($max_bytes bytes) each, allkeys-lru, a flood of $FLOOD_FACTOR x the limit"
echo "dice: $("$DICE" --version 2>/dev/null || echo "$DICE")"
for i in 1 2 3; do
    echo "node $i: base rss $(mb "${BASE[$i]}") MB, bound 1.2 x maxmemory + base = $(mb "${BOUND[$i]}") MB"
done

# sample_rss OUT: the peak RSS of each node, sampled every 0.2 s until $TMP/stop exists;
# OUT.at has, for each node, what INFO memory said when that peak was seen (used_memory,
# the allocator's allocated and resident bytes), to tell the allocator's part of a peak.
sample_rss() {
    local out=$1 i r m
    local -a peak=(0 0 0 0) at=("" "" "" "")
    while [[ ! -e $TMP/stop ]]; do
        for i in 1 2 3; do
            r=$(rss_kb "${PID[$i]}")
            if (( r > peak[i] )); then
                peak[i]=$r
                m=$(redis-cli -h 127.0.0.1 -p "${P[$i]}" INFO memory 2>/dev/null | tr -d '\r' |
                    awk -F: '$1 == "used_memory" { u = $2 } $1 == "allocator_allocated" { a = $2 }
                             $1 == "allocator_resident" { r = $2 }
                             END { printf "used_memory %.1f MB, allocated %.1f MB, resident %.1f MB",
                                   u / 1048576, a / 1048576, r / 1048576 }')
                at[i]="$m, $(awk '/RssAnon|RssFile|RssShmem/ { printf "%s %.1f MB ", $1, $2 / 1024 }' "/proc/${PID[$i]}/status" 2>/dev/null)"
            fi
        done
        sleep 0.2
    done
    echo "${peak[1]} ${peak[2]} ${peak[3]}" >"$out"
    printf '%s\n' "${at[1]}" "${at[2]}" "${at[3]}" >"$out.at"
}

# flood PORT: prints SET req/s. Writes refused with OOM count as requests (redis-benchmark
# prints the first errors); they are not fatal here.
flood() {
    { redis-benchmark -h 127.0.0.1 -p "$1" -t set -d 1000 -r 100000000 -n "$flood_n" -c 50 -P 16 -q \
        2>&1 || true; } | tr '\r' '\n' | awk '/SET:/ { print $2 }' | tail -1
}

report() {
    local peaks=$1 i rss peak verdict
    read -r -a pk <"$peaks"
    mapfile -t at <"$peaks.at"
    for i in 1 2 3; do
        peak=$(( pk[i - 1] * 1024 ))
        rss=$(( $(rss_kb "${PID[$i]}") * 1024 ))
        verdict=within
        if (( peak > BOUND[i] )); then verdict=OVER; fi
        echo "node $i: peak rss $(mb "$peak") MB ($verdict; at the peak ${at[i - 1]}), rss 5 s after $(mb "$rss") MB, bound $(mb "${BOUND[$i]}") MB; used_memory $(mb "$(info "${P[$i]}" memory used_memory)") MB, allocated $(mb "$(info "${P[$i]}" memory allocator_allocated)") MB, allocator resident $(mb "$(info "${P[$i]}" memory allocator_resident)") MB, evicted_keys $(info "${P[$i]}" memory evicted_keys), tombstones $(info "${P[$i]}" memory dice_tombstones), gc waiting $(info "${P[$i]}" memory dice_gc_waiting), keys $(redis-cli -p "${P[$i]}" DBSIZE), digest $(info "${P[$i]}" cluster dice_digest)"
    done
}

# later: every node's RSS, used_memory and tombstones 15 s after a flood (past a GC tick,
# which collects stable tombstones at once under a limit).
later() {
    sleep 10
    alive
    for i in 1 2 3; do
        echo "node $i, 15 s after: rss $(mb "$(( $(rss_kb "${PID[$i]}") * 1024 ))") MB, used_memory $(mb "$(info "${P[$i]}" memory used_memory)") MB, allocated $(mb "$(info "${P[$i]}" memory allocator_allocated)") MB, allocator resident $(mb "$(info "${P[$i]}" memory allocator_resident)") MB, tombstones $(info "${P[$i]}" memory dice_tombstones), keys $(redis-cli -p "${P[$i]}" DBSIZE)"
    done
}

echo
echo "### flood against node 1"
echo "command: redis-benchmark -h 127.0.0.1 -p PORT1 -t set -d 1000 -r 100000000 -n $flood_n -c 50 -P 16 -q"
rm -f "$TMP/stop"; sample_rss "$TMP/peaks1" & SAMPLER=$!
rps=$(flood "${P[1]}")
touch "$TMP/stop"; wait "$SAMPLER"
echo "node 1 took SET ${rps} req/s"
sleep 5
alive
report "$TMP/peaks1"
later

if [[ $ALL_NODES == 0 ]]; then exit 0; fi
echo
echo "### flood against every node at once"
echo "command: the same against each node's port, three at once"
rm -f "$TMP/stop"; sample_rss "$TMP/peaks2" & SAMPLER=$!
for i in 1 2 3; do flood "${P[$i]}" >"$TMP/rps$i" & FLOODS[$i]=$!; done
for i in 1 2 3; do wait "${FLOODS[$i]}" || true; done
touch "$TMP/stop"; wait "$SAMPLER"
echo "SET req/s per node: $(cat "$TMP/rps1") $(cat "$TMP/rps2") $(cat "$TMP/rps3")"
sleep 5
alive
report "$TMP/peaks2"
later
