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

# Two nodes, B a --peer of A: sets $a and $b (their API addresses) and logs().
source "$here/two-nodes.sh"
if ! node "$here/node-clients.mjs" "$deps" "${a%:*}" "${a##*:}" "${b%:*}" "${b##*:}" s3cret; then
  echo "node client checks failed"; logs; exit 1
fi
