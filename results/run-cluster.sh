#!/usr/bin/env bash
# Issue 13's measurement: a cross-node fan-out on a three-node peerd cluster (one publisher
# on node a, 100 subscribers spread over a, b and c), side by side in one run with a plain
# NATS fan-out of the same messages (the floor a NATS-based design can reach). Alternates
# peerd, nats, peerd, nats, ... so that machine noise falls on both. Loopback only; stops
# everything it started. Needs nats-server (.ci/deps) and
# `cargo build --release -p peerd-cli -p peerd-loadgen`.
#
#   results/run-cluster.sh [RATE] [ROUNDS]     (defaults 1000 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-1000}
rounds=${2:-3}
out=results/cluster-fanout
bin=target/release
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
port=$((24000 + RANDOM % 2000))
store=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$store"; }
trap cleanup EXIT
trap "exit 130" INT TERM  # so that EXIT runs, and no node or NATS is left behind
"$nats" -a 127.0.0.1 -p "$port" -js -sd "$store" 2>"$store/nats.log" &
natspid=$!
pids+=("$natspid")
until grep -q "Server is ready" "$store/nats.log"; do sleep 0.1; done
targets=()
nodepids=()
for i in 1 2 3; do
    # Node i on a free port; --no-pin: this machine has fewer cores than processes.
    "$bin/peerd" serve --listen 127.0.0.1:0 --shards 1 --no-pin \
        --cluster "nats://127.0.0.1:$port" --node-id "n$i" --cluster-name bench \
        >"$store/n$i.out" 2>"$store/n$i.err" &
    pids+=($!)
    nodepids+=($!)
    until grep -q "^peerd cluster " "$store/n$i.out"; do sleep 0.1; done
    targets+=(--target "$(awk '/^peerd listening on /{print $4; exit}' "$store/n$i.out")")
done
mkdir -p "$out"
common=(--publishers 1 --subscribers 100 --rate "$rate" --payload 64 --duration 10 --warmup 2 --no-progress)
for r in $(seq 1 "$rounds"); do
    "$bin/peerd-loadgen" fanout "${targets[@]}" \
        --server-pid "${nodepids[0]}" --server-pid "${nodepids[1]}" --server-pid "${nodepids[2]}" \
        --extra-pid "nats=$natspid" "${common[@]}" --out "$out" --name "peerd-cluster-$rate-r$r"
    "$bin/peerd-loadgen" fanout --protocol nats --target "nats://127.0.0.1:$port" \
        --server-pid "$natspid" "${common[@]}" --out "$out" --name "nats-$rate-r$r"
done
