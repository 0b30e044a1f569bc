#!/usr/bin/env bash
# Per-peer rate limits (#12 point 3) against a flood, in one sitting: hostile peers pipeline
# echo requests and never read the answers (`attack --kind pipeline`) while one well-behaved
# peer measures its echo latency at 1,000/s; each scenario runs against `peerd serve`
# without limits, then with `--rate-frames 1000` (the well-behaved peer's 1,000/s is within
# it; a flooder is refused, not read while over, and closed after 10 s over).
#
#   results/run-rate-limits.sh [OUT_DIR]        (default results/rate-limits)
#
# Scenarios: one flooder at 100,000 frames/s (100x the limit), and 5,000 flooders at 20/s
# each (issue #9's pipeline attack: 100,000/s in all, each peer under the limit); then one
# flooder that reads its answers (`--kind flood`: not a slow consumer, so only the rate
# limit stops it). Loopback only; about 4 minutes. Server on core 0, loadgen on core 1; needs a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/rate-limits}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -p peerd-cli -p peerd-loadgen
L=target/release/peerd-loadgen
COMMON="--kind pipeline --hostile-rate 100000 --rate 1000 --warmup 1 --duration 10 --repetitions 1 --after 2 --no-progress"
mkdir -p "$OUT"
for hostile in 1 5000; do
  $L attack --spawn-server $COMMON --hostile "$hostile" \
    --out "$OUT" --name "flood-$hostile-unlimited"
  $L attack --spawn-server $COMMON --hostile "$hostile" \
    --server-arg=--rate-frames --server-arg=1000 \
    --out "$OUT" --name "flood-$hostile-limited"
done
COMMON_READING=${COMMON/--kind pipeline/--kind flood}
$L attack --spawn-server $COMMON_READING --hostile 1 \
  --out "$OUT" --name "reading-flood-1-unlimited"
$L attack --spawn-server $COMMON_READING --hostile 1 \
  --server-arg=--rate-frames --server-arg=1000 \
  --out "$OUT" --name "reading-flood-1-limited"
