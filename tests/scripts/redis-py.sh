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

# Two nodes, B a --peer of A: sets $a and $b (their API addresses) and logs().
source "$here/two-nodes.sh"
if ! PYTHONPATH="$deps" python3 "$here/redis-py.py" "${a%:*}" "${a##*:}" s3cret "${b%:*}" "${b##*:}"; then
  echo "redis-py checks failed"; logs; exit 1
fi
