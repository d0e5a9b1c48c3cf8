#!/usr/bin/env bash
# redis-py 8 against a dice node: installs redis-py (redis>=8, from PyPI) into a temp dir,
# starts one node on 127.0.0.1 (API on a free port, mDNS off, its password read from a
# file), runs tests/scripts/redis-py.py with the client's default protocol (RESP3) and with
# protocol=2, and stops the node it started.
# Usage: tests/scripts/redis-py.sh [path/to/dice]   (default: target/debug/dice)
# Set DICE_PYDEPS=DIR to install into (and reuse) DIR instead of a temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dice=${1:-target/debug/dice}
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }
[ -x "$dice" ] || { echo "$dice not found: cargo build -p dice-cli" >&2; exit 1; }

dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

deps=${DICE_PYDEPS:-$dir/py}
if ! PYTHONPATH="$deps" python3 -c 'import redis, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$deps" 'redis>=8'
fi

log="$dir/node.log"
printf 's3cret\n' >"$dir/password"
chmod 600 "$dir/password"
"$dice" --data "$dir/data" node --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --no-mdns \
  --requirepass-file "$dir/password" 2>"$log" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/data/api.addr" ] && break; sleep 0.1; done
[ -s "$dir/data/api.addr" ] || { echo "node did not start:" >&2; cat "$log" >&2; exit 1; }
addr=$(cat "$dir/data/api.addr")

if ! PYTHONPATH="$deps" python3 "$here/redis-py.py" "${addr%:*}" "${addr##*:}" s3cret; then
  echo "redis-py checks failed; node log:"; cat "$log"; exit 1
fi
