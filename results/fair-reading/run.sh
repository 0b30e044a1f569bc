#!/usr/bin/env bash
# Fair reading (docs/ARCHITECTURE.md): the well-behaved peer's latency under 5,000 peers
# sending partial frames, and 512 KiB calls on one connection, for peerd binaries in
# alternating rounds; then the two flood attacks once each.
#
#   results/fair-reading/run.sh OUT_DIR NAME=BIN [NAME=BIN ...]
#
# e.g. results/fair-reading/run.sh /tmp/fair base=/tmp/peerd-before fair=target/release/peerd
# Loopback only, one shard on core 0, loadgen on core 1; about 2 minutes per binary and
# round of partial frames. ROUNDS (default 3) and CALL_ROUNDS (default 2) set the rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: run.sh OUT_DIR NAME=BIN ...}
shift
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -p peerd-loadgen
L=target/release/peerd-loadgen
ATTACK="--server-arg=--memory-budget --server-arg=268435456 --hostile 5000 --warmup 1 \
  --duration 20 --repetitions 1 --after 5 --no-progress"
for round in $(seq "${ROUNDS:-3}"); do
  for nb in "$@"; do
    $L attack --spawn-server --server-bin "${nb#*=}" --kind partial-frames $ATTACK \
      --out "$OUT/partial-frames" --name "${nb%%=*}-$round"
  done
done
for round in $(seq "${CALL_ROUNDS:-2}"); do
  for nb in "$@"; do
    $L rpc --spawn-server --server-bin "${nb#*=}" --closed-loop --connections 1 \
      --payload 524288 --duration 5 --warmup 1 --repetitions 1 --no-progress \
      --out "$OUT/large-calls" --name "${nb%%=*}-$round"
  done
done
for kind in pipeline relay-flood; do
  for nb in "$@"; do
    $L attack --spawn-server --server-bin "${nb#*=}" --kind "$kind" $ATTACK \
      --hostile-rate 100000 --out "$OUT/floods" --name "$kind-${nb%%=*}"
  done
done
