#!/usr/bin/env bash
# Unmapping in turn and strict read turns (docs/ARCHITECTURE.md, "Fair reading"): issue 9's
# attacks and 512 KiB calls on one connection against two peerd binaries, alternating, in
# one sitting, with the same loadgen.
#
#   results/unmap-in-turn/run.sh OUT_DIR BEFORE_BIN AFTER_BIN
#
# Partial frames in ROUNDS (default 3) alternating rounds, then each other attack once per
# binary, then CALL_ROUNDS (default 2) rounds of the calls. Every server: one shard, a
# 256 MiB memory budget, spawned by the loadgen (server on core 0, loadgen on core 1).
# Loopback only; about 13 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: run.sh OUT_DIR BEFORE_BIN AFTER_BIN}
BEFORE=${2:?usage: run.sh OUT_DIR BEFORE_BIN AFTER_BIN}
AFTER=${3:?usage: run.sh OUT_DIR BEFORE_BIN AFTER_BIN}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -p peerd-loadgen
L=target/release/peerd-loadgen
ATTACK="--server-arg=--memory-budget --server-arg=268435456 --hostile 5000 --warmup 1 \
  --duration 20 --repetitions 1 --after 5 --no-progress"
declare -A EXTRA=(
  [slow-reader]=""
  [slow-subscribers]=""
  [relay-flood]="--hostile-rate 100000"
  [pipeline]="--hostile-rate 100000"
)
for round in $(seq "${ROUNDS:-3}"); do
  for nb in "before=$BEFORE" "after=$AFTER"; do
    $L attack --spawn-server --server-bin "${nb#*=}" --kind partial-frames $ATTACK \
      --out "$OUT/partial-frames" --name "${nb%%=*}-$round"
  done
done
for kind in slow-reader slow-subscribers relay-flood pipeline; do
  for nb in "before=$BEFORE" "after=$AFTER"; do
    $L attack --spawn-server --server-bin "${nb#*=}" --kind "$kind" $ATTACK ${EXTRA[$kind]} \
      --out "$OUT/$kind" --name "${nb%%=*}"
  done
done
for round in $(seq "${CALL_ROUNDS:-2}"); do
  for nb in "before=$BEFORE" "after=$AFTER"; do
    $L rpc --spawn-server --server-bin "${nb#*=}" --closed-loop --connections 1 \
      --payload 524288 --duration 5 --warmup 1 --repetitions 1 --no-progress \
      --out "$OUT/large-calls" --name "${nb%%=*}-$round"
  done
done
