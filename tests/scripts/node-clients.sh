#!/usr/bin/env bash
# node-redis and ioredis against two dice nodes: installs the current node-redis (npm
# `redis@latest`, 5 or later) and ioredis into a temp dir, starts two nodes on 127.0.0.1
# (API and peer ports picked free, mDNS off, B a --peer of A, both with a password read
# from a file), runs tests/scripts/node-clients.mjs against them, and stops the nodes.
# Usage: tests/scripts/node-clients.sh [path/to/dice]   (default: target/debug/dice)
# Set DICE_NODEDEPS=DIR to install into (and reuse) DIR instead of a temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dice=${1:-target/debug/dice}
command -v node >/dev/null || { echo "node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm not found" >&2; exit 1; }
[ -x "$dice" ] || { echo "$dice not found: cargo build -p dice-cli" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

deps=${DICE_NODEDEPS:-$dir/npm}
mkdir -p "$deps"
if ! [ -d "$deps/node_modules/redis" ] || ! [ -d "$deps/node_modules/ioredis" ]; then
  (cd "$deps" && npm install --no-audit --no-fund --no-save --loglevel=error redis@latest ioredis@latest >/dev/null)
fi
echo "node $(node --version); node-redis $(cd "$deps" && node -p 'require("redis/package.json").version');" \
  "ioredis $(cd "$deps" && node -p 'require("ioredis/package.json").version')"

printf 's3cret\n' >"$dir/password"
chmod 600 "$dir/password"
start_node() { # start_node NAME [dice node flags...]: starts a node, waits for its API address
  local name=$1; shift
  "$dice" --data "$dir/$name" node --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --no-mdns \
    --requirepass-file "$dir/password" "$@" 2>"$dir/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$dir/$name/api.addr" ] && break; sleep 0.1; done
  [ -s "$dir/$name/api.addr" ] || { echo "node $name did not start:" >&2; cat "$dir/$name.log" >&2; exit 1; }
}
logs() { for n in a b; do echo "-- node $n log:"; cat "$dir/$n.log"; done; }

start_node a
# A's peer address, from its start line: listen=[/ip4/127.0.0.1/tcp/PORT] peer_id=...
line=$(grep -m1 'node running' "$dir/a.log" | sed 's/\x1b\[[0-9;]*m//g')
peer_id=$(sed -n 's/.*peer_id=\([^ ]*\).*/\1/p' <<<"$line")
listen=$(sed -n 's/.*listen=\[\([^],]*\).*/\1/p' <<<"$line")
[ -n "$peer_id" ] && [ -n "$listen" ] || { echo "no peer address in A's log:" >&2; logs >&2; exit 1; }
start_node b --peer "$listen/p2p/$peer_id"
for _ in $(seq 150); do grep -q connected "$dir/b.log" && break; sleep 0.1; done
grep -q connected "$dir/b.log" || { echo "B did not connect to A" >&2; logs >&2; exit 1; }

a=$(cat "$dir/a/api.addr")
b=$(cat "$dir/b/api.addr")
if ! node "$here/node-clients.mjs" "$deps" "${a%:*}" "${a##*:}" "${b%:*}" "${b##*:}" s3cret; then
  echo "node client checks failed"; logs; exit 1
fi
