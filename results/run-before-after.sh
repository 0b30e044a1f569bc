#!/usr/bin/env bash
# Before/after comparison of two peerd builds, in one sitting, with the same loadgen:
# rpc at 1 and 64 connections, fan-out 1 -> 100, 10,000 idle connections. The two servers
# alternate scenario by scenario so that drift on this shared VM hits both alike.
#
#   results/run-before-after.sh BEFORE_REV [OUT_DIR]
#
# BEFORE_REV is any git revision (built in a temporary worktree); the "after" build is the
# working tree. BEFORE_BIN=/path/to/peerd skips building BEFORE_REV. Loopback only, about
# 6 minutes. Server on core 0, loadgen on core 1 (see results/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE_REV=${1:?usage: results/run-before-after.sh BEFORE_REV [OUT_DIR]}
OUT=${2:-results/before-after}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --locked -p peerd-cli -p peerd-loadgen
mkdir -p "$OUT/bin"
cp target/release/peerd "$OUT/bin/peerd-after"
if [ -n "${BEFORE_BIN:-}" ]; then
  cp "$BEFORE_BIN" "$OUT/bin/peerd-before"
else
  wt=$(mktemp -d)
  git worktree add -q --detach "$wt" "$BEFORE_REV"
  pkg=peerd-server; [ -d "$wt/cli" ] && pkg=peerd-cli
  (cd "$wt" && cargo build --release --locked -p "$pkg" --target-dir "$PWD/target-before")
  cp "$wt/target-before/release/peerd" "$OUT/bin/peerd-before"
  git worktree remove --force "$wt"
fi
L=target/release/peerd-loadgen
COMMON="--duration 3 --warmup 1 --no-progress"
{
  echo "before: $(git rev-parse "$BEFORE_REV")"
  echo "after:  $(git rev-parse HEAD)$(git diff --quiet || echo ' + uncommitted changes')"
} > "$OUT/REVISIONS"

for which in before after; do
  $L rpc --spawn-server --server-bin "$OUT/bin/peerd-$which" --shards 1 --rate 10000 --repetitions 3 \
    --spin-us 100 $COMMON --out "$OUT/rpc-1conn" --name "$which"
done
for which in before after; do
  $L rpc --spawn-server --server-bin "$OUT/bin/peerd-$which" --shards 1 --connections 64 \
    --sweep 20000,40000,80000 --p99-bound 2000 --sweep-all --repetitions 1 $COMMON \
    --out "$OUT/rpc-64conn" --name "$which"
done
for which in before after; do
  $L fanout --spawn-server --server-bin "$OUT/bin/peerd-$which" --shards 1 --publishers 1 \
    --subscribers 100 --topics 1 --rate 1000 --repetitions 3 $COMMON --out "$OUT/fanout-100" --name "$which"
done
for which in before after; do
  $L idle --spawn-server --server-bin "$OUT/bin/peerd-$which" --shards 1 --connections 10000 \
    --duration 5 --no-progress --out "$OUT/idle-10k" --name "$which"
done
rm -rf "$OUT/bin"
