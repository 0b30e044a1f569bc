#!/usr/bin/env bash
# Autobahn|Testsuite (fuzzingclient, sections 1-7 and 10) against peerd's WebSocket layer,
# through its echo mode (`peerd serve --ws-echo`: the same upgrade, deframing,
# fragmentation and close code as the peer endpoint; messages echoed instead of parsed).
# Fails on any FAILED case. Usage: .ci/autobahn.sh [OUTDIR]  (default target/autobahn)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/autobahn}"
cargo build --release --locked -p peerd-cli
log="$(mktemp)"
"${CARGO_TARGET_DIR:-target}/release/peerd" serve --listen ws://127.0.0.1:0 --ws-echo --shards 1 --no-pin >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 100); do
  url="$(sed -n 's/^peerd listening on \(ws:[^ ]*\) .*/\1/p' "$log" | head -1)"
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "peerd exited before listening" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "peerd did not print its ready line" >&2; exit 1; }
AUTOBAHN_AGENT=peerd .ci/autobahn/run.sh "$url" "$out"
