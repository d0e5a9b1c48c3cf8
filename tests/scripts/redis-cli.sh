#!/usr/bin/env bash
# redis-cli against a dice node: starts one node on 127.0.0.1 (API on a free port, mDNS off),
# runs a short redis-cli session, checks each answer, and stops the node it started.
# Usage: tests/scripts/redis-cli.sh [path/to/dice]   (default: target/debug/dice)
set -euo pipefail
dice=${1:-target/debug/dice}
command -v redis-cli >/dev/null || { echo "redis-cli not found: apt-get install redis-tools" >&2; exit 1; }
[ -x "$dice" ] || { echo "$dice not found: cargo build -p dice-cli" >&2; exit 1; }

dir=$(mktemp -d)
log="$dir/node.log"
"$dice" --data "$dir/data" node --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --no-mdns \
  --requirepass s3cret 2>"$log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

for _ in $(seq 100); do [ -s "$dir/data/api.addr" ] && break; sleep 0.1; done
[ -s "$dir/data/api.addr" ] || { echo "node did not start:" >&2; cat "$log" >&2; exit 1; }
addr=$(cat "$dir/data/api.addr")
host=${addr%:*}
port=${addr##*:}
cli() { redis-cli --no-auth-warning -h "$host" -p "$port" -a s3cret "$@"; }
fails=0
check() { # check "description" expected actual
  if [ "$2" == "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected [$2], got [$3]"; fails=$((fails + 1)); fi
}

check "refused without AUTH" "NOAUTH Authentication required." \
  "$(redis-cli -h "$host" -p "$port" GET x 2>&1)"
check "PING" "PONG" "$(cli PING)"
check "SET" "OK" "$(cli SET elixir 'awesome sauce')"
check "GET" "awesome sauce" "$(cli GET elixir)"
check "SET EX" "OK" "$(cli SET session alice EX 100)"
ttl=$(cli TTL session)
check "TTL in range" "yes" "$([ "$ttl" -gt 0 ] && [ "$ttl" -le 100 ] && echo yes || echo "no ($ttl)")"
check "EXISTS" "2" "$(cli EXISTS elixir session)"
check "DBSIZE" "2" "$(cli DBSIZE)"
check "KEYS" "elixir" "$(cli KEYS 'eli*')"
check "MGET (nil as an empty line)" "awesome sauce|" "$(cli MGET elixir nope | paste -sd'|')"
check "DEL" "1" "$(cli DEL session)"
check "pipe of 100 SETs" "100" "$(for i in $(seq 100); do printf 'SET k%s v%s\r\n' "$i" "$i"; done \
  | cli --pipe 2>&1 | sed -n 's/.*replies: \([0-9]*\).*/\1/p')"
check "DBSIZE after pipe" "101" "$(cli DBSIZE)"
check "INFO cluster" "cluster_enabled:0" "$(cli INFO cluster | tr -d '\r' | grep cluster_enabled)"
check "unknown command" "ERR unknown command 'NOSUCHCMD', with args beginning with: " \
  "$(cli NOSUCHCMD 2>&1)"
check "FLUSHALL" "OK" "$(cli FLUSHALL)"
check "empty after FLUSHALL" "0" "$(cli DBSIZE)"
check "MULTI/EXEC in one session" "OK|QUEUED|QUEUED|OK|v" \
  "$(printf 'MULTI\nSET tx v\nGET tx\nEXEC\n' | cli | paste -sd'|')"
check "COMMAND DOCS has SET's arguments" "yes" \
  "$(cli COMMAND DOCS set | grep -q KEEPTTL && echo yes || echo no)"
check "CONFIG GET databases" "databases|1" "$(cli CONFIG GET databases | paste -sd'|')"

# SHUTDOWN: the node stops gracefully (as on SIGTERM) and exits 0, its writes committed.
cli SET before-shutdown kept >/dev/null
cli SHUTDOWN >/dev/null 2>&1 || true
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  check "SHUTDOWN stops the node" "stopped" "still running"
else
  wait "$pid" && code=0 || code=$?
  check "SHUTDOWN stops the node, exit code" "0" "$code"
  check "the shutdown was logged" "yes" \
    "$(grep -q 'SHUTDOWN asked by an API client' "$log" && echo yes || echo no)"
  check "its writes survive" "kept" "$("$dice" --data "$dir/data" get before-shutdown 2>/dev/null)"
fi

if [ "$fails" -ne 0 ]; then
  echo "$fails redis-cli checks failed; node log:"; cat "$log"; exit 1
fi
echo "redis-cli: all checks passed"
