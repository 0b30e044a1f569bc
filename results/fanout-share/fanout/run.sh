#!/usr/bin/env bash
# Fan-out with a server before and after the budget of sends, alternating, three rounds:
# 1 publisher to one topic of 100 (evenly spaced, and batched 8 publishes a write) and of
# 1,000 (batched). Loopback only; about 4 minutes. Server on core 0, loadgen on core 1.
#
#   results/fanout-share/fanout/run.sh BEFORE_BIN AFTER_BIN [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
BEFORE=${1:?usage: run.sh BEFORE_BIN AFTER_BIN [OUT_DIR]}
AFTER=${2:?usage: run.sh BEFORE_BIN AFTER_BIN [OUT_DIR]}
OUT=${3:-results/fanout-share/fanout}
mkdir -p "$OUT"
cargo build --release --locked -p peerd-loadgen
L=target/release/peerd-loadgen
run() {
  local name=$1 bin=$2
  shift 2
  $L fanout --publishers 1 --topics 1 --duration 3 --warmup 1 --repetitions 3 \
    --spawn-server --server-bin "$bin" --shards 1 --no-progress --out "$OUT" --name "$name" "$@"
}
for r in 1 2 3; do
  for b in before after; do
    bin=$BEFORE
    [ "$b" = after ] && bin=$AFTER
    run "even100-$b-$r" "$bin" --subscribers 100 --rate 500
    run "batch100-$b-$r" "$bin" --subscribers 100 --rate 500 --batch 8
    run "batch1000-$b-$r" "$bin" --subscribers 1000 --rate 50 --batch 8
  done
done
