#!/usr/bin/env bash
# bench/types.sh: dice's data types next to Redis (issue 13). Prints the figures and the
# commands that made them.
#
#   bench/types.sh              default sizes, about two minutes
#
# Env overrides: N_OPS (requests per redis-benchmark run, default 300000), HASHES and FIELDS
# (the hash fill: HASHES keys of FIELDS fields each, default 1000 x 1000), SETS and MEMBERS
# (the same for sets), DICE (the binary; default target/release/dice, built first).
#
# Part 1: throughput. `redis-benchmark -t incr,hset,sadd -r 100000 -n N_OPS -c 50 -P 16`
#   against redis-server (AOF on, appendfsync everysec, as in bench/run.sh) and one
#   `dice node` (--threads 1). redis-benchmark's HSET writes field `element:N` of one hash and
#   SADD member `element:N` of one set, so both grow to 100,000 fields/members. Then
#   `redis-benchmark ... HINCRBY h f 1`: N_OPS increments of one field (a counter field in
#   dice), which must read N_OPS on both.
# Part 2: memory per hash field and per set member. A fresh server of each, filled through
#   `redis-cli --pipe` with HSET (SADD) commands of 100 fields (members) each: field names
#   `f:N` and 16-byte values, members `m:N`. Printed: the growth of `used_memory` and of the
#   resident set (RSS) divided by the number of fields (members). Redis uses its hashtable
#   encoding at this size (more than 128 entries per key); small hashes and sets in Redis
#   use listpacks and cost less (not measured here).
#
# A command dice does not know yet (one answering `ERR unknown command`) is reported as such
# and skipped. Everything listens on 127.0.0.1. Only the processes this script starts are
# stopped (by pid), and its temp dir is removed, on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DICE=${DICE:-$ROOT/target/release/dice}
N_OPS=${N_OPS:-300000}
HASHES=${HASHES:-1000}
FIELDS=${FIELDS:-1000}
SETS=${SETS:-1000}
MEMBERS=${MEMBERS:-1000}
TMP=$(mktemp -d /tmp/dice-types.XXXXXX)
PIDS=()

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_redis
build_dice

# start_redis -> PORT, PID
start_redis() {
    PORT=$(free_port)
    mkdir -p "$TMP/redis.$PORT"
    redis-server --bind 127.0.0.1 --port "$PORT" --dir "$TMP/redis.$PORT" --save '' \
        --appendonly yes --appendfsync everysec --daemonize no \
        >"$TMP/redis.$PORT.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_for ping_ok "$PORT"
}
rss_bytes() { echo $(($(rss_kb "$1") * 1024)); }

# start_node -> PORT, PID: a node on a fresh data dir (see `start_dice` in bench/lib.sh).
start_node() {
    start_dice "$(mktemp -d "$TMP/dice.XXXX")"
    PORT=$DICE_PORT
    PID=$DICE_PID
}

knows() { # knows PORT COMMAND: does the server know the command?
    ! redis-cli -h 127.0.0.1 -p "$1" "$2" k 2>&1 | grep -q "unknown command"
}

bench_cmd() { echo "redis-benchmark -h 127.0.0.1 -p PORT -t $1 -r 100000 -n $N_OPS -c 50 -P 16 -q"; }
rps() { # rps PORT TEST
    redis-benchmark -h 127.0.0.1 -p "$1" -t "$2" -r 100000 -n "$N_OPS" -c 50 -P 16 -q \
        | tr '\r' '\n' | awk -v t="$(echo "$2" | tr a-z A-Z)" '$1 == t":" { print $2 }' | tail -1
}

echo "## Data types next to Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
echo
echo "### 1. Throughput (req/s), $N_OPS requests, 50 clients, pipeline 16"
echo "command: $(bench_cmd 'incr|hset|sadd')"
for t in incr hset sadd; do
    start_redis
    r=$(rps "$PORT" "$t")
    stop "$PID"
    start_node
    if knows "$PORT" "$t"; then d=$(rps "$PORT" "$t"); else d="unknown command"; fi
    stop "$PID"
    printf '%-5s redis %10s   dice %10s\n' "$t" "$r" "$d"
done
# HINCRBY of one field (a counter field in dice): redis-benchmark runs it as a command of its
# own, and the field must then read as the number of requests on both.
hincr_rps() { # hincr_rps PORT -> "req/s field-value"
    local r
    r=$(redis-benchmark -h 127.0.0.1 -p "$1" -n "$N_OPS" -c 50 -P 16 -q HINCRBY h f 1 \
        | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
    echo "$r $(redis-cli -h 127.0.0.1 -p "$1" HGET h f)"
}
echo "command: redis-benchmark -h 127.0.0.1 -p PORT -n $N_OPS -c 50 -P 16 -q HINCRBY h f 1"
start_redis
read -r r rv < <(hincr_rps "$PORT")
stop "$PID"
start_node
read -r d dv < <(hincr_rps "$PORT")
stop "$PID"
printf '%-5s redis %10s   dice %10s   (the field reads %s and %s)\n' hincrby "$r" "$d" "$rv" "$dv"

# fill PORT CMD KEYS PER PREFIX: KEYS keys of PER fields/members, 100 per command.
fill() {
    python3 - "$2" "$3" "$4" "$5" <<'EOF' | redis-cli -h 127.0.0.1 -p "$1" --pipe >"$TMP/pipe.out"
import sys
cmd, keys, per, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = sys.stdout.buffer
def resp(args):
    b = b"*%d\r\n" % len(args)
    for a in args:
        b += b"$%d\r\n%s\r\n" % (len(a), a)
    return b
for k in range(keys):
    key = b"%s:%d" % (prefix.encode(), k)
    for start in range(0, per, 100):
        args = [cmd.encode(), key]
        for j in range(start, min(per, start + 100)):
            if cmd == "HSET":
                args += [b"f:%d" % j, b"v%015d" % j]
            else:
                args.append(b"m:%d" % j)
        out.write(resp(args))
EOF
    grep -q "errors: 0" "$TMP/pipe.out" || { log "fill failed: $(cat "$TMP/pipe.out")"; return 1; }
}

# per_item SERVER CMD KEYS PER PREFIX
per_item() {
    local name=$1 cmd=$2 keys=$3 per=$4 prefix=$5 u0 r0 u1 r1 n
    if [[ $name == redis ]]; then start_redis; else start_node; fi
    if ! knows "$PORT" "$cmd"; then
        printf '%-5s unknown command\n' "$name"; stop "$PID"; return
    fi
    sleep 1
    u0=$(info "$PORT" memory used_memory); r0=$(rss_bytes "$PID")
    fill "$PORT" "$cmd" "$keys" "$per" "$prefix"
    sleep 2
    u1=$(info "$PORT" memory used_memory); r1=$(rss_bytes "$PID")
    n=$((keys * per))
    printf '%-5s used_memory %6d B/item   rss %6d B/item   (%d items, rss %d MB)\n' "$name" \
        $(((u1 - u0) / n)) $(((r1 - r0) / n)) "$n" $((r1 / 1048576))
    stop "$PID"
}

echo
echo "### 2. Memory per hash field ($HASHES hashes x $FIELDS fields, names f:N, 16-byte values)"
echo "command: redis-cli --pipe of HSET h:K f:N v... (100 fields per command)"
per_item redis HSET "$HASHES" "$FIELDS" h
per_item dice HSET "$HASHES" "$FIELDS" h
echo
echo "### 3. Memory per set member ($SETS sets x $MEMBERS members, names m:N)"
echo "command: redis-cli --pipe of SADD s:K m:N ... (100 members per command)"
per_item redis SADD "$SETS" "$MEMBERS" s
per_item dice SADD "$SETS" "$MEMBERS" s
