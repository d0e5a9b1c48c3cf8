# Sourced by the client scripts: starts two dice nodes on 127.0.0.1 (API and peer ports
# free, mDNS off, their password "s3cret" read from a file), B a --peer of A, and waits
# until B is connected. Needs $dice (the binary), $dir (a temp dir) and the array $pids
# (the caller stops those pids on exit). Sets $a and $b (the nodes' API addresses) and
# defines logs (prints both nodes' logs).
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
