#!/usr/bin/env bash
# Regenerates the first-round reports in results/ (see results/README.md).
# Loopback only, bounded in time (about 3 minutes). Needs a quiet machine: on a 2-core VM the
# server gets core 0 and the loadgen core 1; anything else running skews the tails.
set -euo pipefail
cd "$(dirname "$0")/.."
# 10,000 idle connections need more than the default 1024 descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p peerd-cli -p peerd-loadgen
L=target/release/peerd-loadgen
COMMON="--duration 3 --warmup 1 --no-progress"

# 1. RPC round trip at 1 connection, peerd vs the blocking-TCP floor, same rate and payload.
$L floor --rate 10000 --repetitions 3 --spin-us 100 $COMMON --out results/rpc-1conn --name floor
$L rpc --spawn-server --shards 1 --rate 10000 --repetitions 3 --spin-us 100 $COMMON --out results/rpc-1conn --name peerd
$L plot --out results/rpc-1conn/overlay.svg \
  results/rpc-1conn/floor-r10000.hgrm=floor results/rpc-1conn/peerd-r10000.hgrm=peerd

# 2. RPC rate sweep at 64 connections: the knee is the highest rate with p99 < 1 ms.
# --sweep-all: on this noisy 2-vCPU VM even the floor's p99 passes 1 ms at times, so show
# the whole curve rather than stop at the first miss.
$L rpc --spawn-server --shards 1 --connections 64 --sweep 10000:80000 --p99-bound 2000 --sweep-all \
  --repetitions 1 $COMMON --out results/rpc-64conn --name peerd

# 3. Fan-out: 1 publisher -> 100 subscribers on one topic.
$L fanout --spawn-server --shards 1 --publishers 1 --subscribers 100 --topics 1 --rate 1000 \
  --repetitions 3 $COMMON --out results/fanout-100 --name peerd

# 4. Memory: 10,000 idle handshaken connections.
$L idle --spawn-server --shards 1 --connections 10000 --duration 5 --no-progress \
  --out results/idle-10k --name peerd
