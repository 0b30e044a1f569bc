#!/usr/bin/env bash
# Each attack of issue #9 against two peerd builds, in one sitting, with the same loadgen:
# 5,000 hostile connections of one kind while one well-behaved peer measures echo latency
# at 1,000/s. The "after" server runs with a 256 MiB memory budget (`--memory-budget`).
#
#   results/run-attacks.sh BEFORE_BIN [OUT_DIR]
#
# BEFORE_BIN is a `peerd` binary built from an older revision (results/run-before-after.sh
# shows how to build one from a git revision). Loopback only; about 8 minutes. Server on
# core 0, loadgen on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE_BIN=${1:?usage: results/run-attacks.sh BEFORE_BIN [OUT_DIR]}
OUT=${2:-results/attacks}
# Extra loadgen arguments for the "before" server only, e.g. to compare two modes of one
# binary: BEFORE_ARGS="--server-arg=--ring-receives --server-arg=--memory-budget
# --server-arg=268435456" results/run-attacks.sh target/release/peerd OUT_DIR
BEFORE_ARGS=${BEFORE_ARGS:-}
# And for the "after" server only, e.g. AFTER_ARGS="--server-arg=--ring-receives".
AFTER_ARGS=${AFTER_ARGS:-}
# Which attacks, in order (all five by default).
KINDS=${KINDS:-"slow-reader slow-subscribers partial-frames relay-flood pipeline"}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -p peerd-cli -p peerd-loadgen
mkdir -p "$OUT/bin"
cp "$BEFORE_BIN" "$OUT/bin/peerd-before"
cp target/release/peerd "$OUT/bin/peerd-after"
L=target/release/peerd-loadgen
COMMON="--hostile 5000 --warmup 1 --duration 20 --repetitions 1 --after 10 --no-progress"
# Unbounded writers would saturate the loadgen's one core (shared with the measuring peer).
declare -A EXTRA=(
  [slow-reader]=""
  [slow-subscribers]=""
  [partial-frames]=""
  [relay-flood]="--hostile-rate 100000"
  [pipeline]="--hostile-rate 100000"
)
for kind in $KINDS; do
  $L attack --spawn-server --server-bin "$OUT/bin/peerd-before" --kind "$kind" $COMMON \
    ${EXTRA[$kind]} $BEFORE_ARGS --out "$OUT/$kind" --name before
  $L attack --spawn-server --server-bin "$OUT/bin/peerd-after" --server-arg=--memory-budget \
    --server-arg=268435456 --kind "$kind" $COMMON ${EXTRA[$kind]} $AFTER_ARGS --out "$OUT/$kind" \
    --name after
done
rm -rf "$OUT/bin"
