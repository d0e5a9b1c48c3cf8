#!/usr/bin/env bash
# redis-py 8 against dice nodes: installs redis-py (redis>=8, from PyPI) into a temp dir,
# starts two nodes on 127.0.0.1 (API and peer ports free, mDNS off, B a --peer of A, their
# password read from a file), runs tests/scripts/redis-py.py against A with the client's
# default protocol (RESP3) and with protocol=2, then its client-side cache across A and B,
# and stops the nodes it started.
# Usage: tests/scripts/redis-py.sh [path/to/dice]   (default: target/debug/dice)
# Set DICE_PYDEPS=DIR to install into (and reuse) DIR instead of a temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dice=${1:-target/debug/dice}
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }
[ -x "$dice" ] || { echo "$dice not found: cargo build -p dice-cli" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

deps=${DICE_PYDEPS:-$dir/py}
if ! PYTHONPATH="$deps" python3 -c 'import redis, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$deps" 'redis>=8'
fi

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
if ! PYTHONPATH="$deps" python3 "$here/redis-py.py" "${a%:*}" "${a##*:}" s3cret "${b%:*}" "${b##*:}"; then
  echo "redis-py checks failed"; logs; exit 1
fi
