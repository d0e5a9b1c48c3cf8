#!/usr/bin/env bash
# bench/scale.sh: dice clusters of N hosts on one LAN, each host in a network namespace on one
# bridge (mDNS only), one `dice node` each; prints a Markdown table row per N: time to full
# membership, idle CPU per node, sync bytes and entries sent per write per node, a burst of
# writes on one host and spread over all hosts until on every node, RSS per node. Figures are
# read from the nodes' Prometheus metrics (`--metrics`) and /proc.
#
#   bench/scale.sh 8 16 32 64
#
# Env: DICE_SCALE_IDLE_SECS (idle window, default 10), DICE_SCALE_BURST (writes per burst,
# default 5000; 0 measures membership and idle only), DICE_SCALE_MAX_PEERS (each node's
# --max-peers, default 32), DICE_SCALE_HOLD_SECS (keep the cluster up that long after the idle
# window, printing the nodes' pids, e.g. to profile them with perf; default 0), PROFILE (cargo
# profile of the dice binary, default release). DICE_NET_PROFILE_OFF (passed on to the nodes)
# switches periodic work off, part by part, to measure what each costs: a comma-separated
# list of mdns, ping, identify, kad, heartbeat, tick (see crates/dice-net/src/profile.rs).
#
# Needs root (network namespaces) and iproute2. All traffic stays on the namespaces' bridge;
# every namespace and node it starts is removed when it ends. All nodes share this machine's
# cores: per-node CPU figures include the contention of N nodes on them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/scale.sh needs root (network namespaces)" >&2
  exit 2
fi
command -v ip >/dev/null || { echo "bench/scale.sh needs iproute2 (apt-get install iproute2)" >&2; exit 2; }
# The kernel's ARP table is one for all network namespaces, with at most gc_thresh3 (1024 by
# default) entries: 64 hosts that each talk to 32 others need 2048, and past the limit new
# neighbours are not resolved ("neighbor table overflow" in dmesg), so hosts that start last
# cannot reach anyone. Raise the thresholds for the run (never lower them) and put the old
# values back when it ends.
largest=4
for n in "$@"; do [ "$n" -gt "$largest" ] && largest=$n; done
need=$((largest * largest * 2))
declare -A old_neigh=()
for t in gc_thresh1 gc_thresh2 gc_thresh3; do
  old_neigh[$t]=$(sysctl -n net.ipv4.neigh.default.$t)
done
restore_neigh() {
  for t in gc_thresh1 gc_thresh2 gc_thresh3; do
    sysctl -q -w net.ipv4.neigh.default.$t="${old_neigh[$t]}" || true
  done
}
if [ "${old_neigh[gc_thresh3]}" -lt $((need * 4)) ]; then
  trap restore_neigh EXIT
  sysctl -q -w net.ipv4.neigh.default.gc_thresh3=$((need * 4))
  sysctl -q -w net.ipv4.neigh.default.gc_thresh2=$((need * 2))
  sysctl -q -w net.ipv4.neigh.default.gc_thresh1=$need
fi
profile=${PROFILE:-release}
if [ "$profile" = release ]; then flag=--release; else flag=; fi
cargo build --quiet $flag -p dice-cli --bin dice
echo "command: bench/scale.sh $* (DICE_SCALE_IDLE_SECS=${DICE_SCALE_IDLE_SECS:-10} DICE_SCALE_BURST=${DICE_SCALE_BURST:-5000} DICE_SCALE_MAX_PEERS=${DICE_SCALE_MAX_PEERS:-32} DICE_NET_PROFILE_OFF=${DICE_NET_PROFILE_OFF:-} PROFILE=$profile)"
cargo run --quiet $flag -p dice-tests --example scale -- "${@:-4}"
