# bench/lib.sh: what the benchmark scripts share. Sourced, after the script has set ROOT (the
# repository), DICE (the binary), TMP (its temp dir) and PIDS=() (the processes it starts).
#
# On exit it stops the processes the script started (only those, by pid) and removes TMP
# (kept when KEEP_TMP is set, for the nodes' logs).

log() { echo "# $*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP_TMP:-} ]]; then echo "# kept $TMP (KEEP_TMP)" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# need_redis: installs Debian's redis-server and redis-tools if one of them is missing.
need_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null \
        || ! command -v redis-cli >/dev/null; then
        log "installing redis-server redis-tools"
        apt-get update >/dev/null
        apt-get install -y redis-server redis-tools >/dev/null
    fi
}

# build_dice: builds the release binary, unless DICE names another one.
build_dice() {
    if [[ $DICE == "$ROOT/target/release/dice" ]]; then
        log "building dice (release)"
        (cd "$ROOT" && cargo build --release -p dice-cli >&2)
    fi
}

# free_port: a loopback TCP port nothing listens on.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
}

# wait_for CMD...: runs CMD every 0.1 s until it succeeds, for at most 60 s.
wait_for() {
    local i
    for ((i = 0; i < 600; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "timed out waiting for: $*"; return 1
}

ping_ok() { [[ $(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null) == PONG ]]; }
# info PORT SECTION FIELD: one field of INFO.
info() { redis-cli -h 127.0.0.1 -p "$1" INFO "$2" | tr -d '\r' | sed -n "s/^$3://p"; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# stop PID: stops one process this script started, and forgets it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# start_dice DIR [args...]: a `dice node` on loopback with its data in DIR (mDNS off, one
# worker thread, any extra flags); sets DICE_PORT (RESP), DICE_PID and DICE_P2P (its
# libp2p address, for --peer).
start_dice() {
    local dir=$1; shift
    mkdir -p "$dir"
    "$DICE" node --data "$dir" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --no-mdns \
        --threads 1 "$@" >"$dir.out" 2>"$dir.err" &
    DICE_PID=$!
    PIDS+=("$DICE_PID")
    wait_for test -s "$dir/api.addr"
    DICE_PORT=$(cut -d: -f2 "$dir/api.addr")
    wait_for ping_ok "$DICE_PORT"
    wait_for grep -q "node running" "$dir.err"
    DICE_P2P=$(grep "node running" "$dir.err" | tail -1 | sed -n 's/.*listen=\[\([^],]*\).*/\1/p')
}
