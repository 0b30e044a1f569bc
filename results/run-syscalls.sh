#!/usr/bin/env bash
# System calls and kernel CPU per message of a peerd server, per scenario (issue 14's
# "measure first, keep measuring"): echo over 1 and over 64 connections, and fan-out
# 1 -> 100, each at a fixed offered rate so that every data path does the same work. Each
# scenario runs in three modes, alternating, in one sitting: `ring` (--ring-receives:
# multishot receives and batched sends through the shard's io_urings), `batched` (the
# default: reads through glommio, sends batched) and `sendmsg` (--no-batched-sends: the path
# before issue 14).
#
#   results/run-syscalls.sh [OUT_DIR] [PEERD_BIN]
#
# The server runs on core 0 (one shard), the loadgen on core 1. While the loadgen is in its
# measured window, `perf stat` counts the server's system calls in the kernel (tracepoints:
# little overhead) for 3 s, and /proc gives its user and system CPU over the same seconds.
# Needs perf (Debian: linux-perf) and permission to trace (root, or perf_event_paranoid
# <= 1). Writes OUT_DIR/<scenario>.{json,perf} and OUT_DIR/README.md. About 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. results/lib.sh
OUT=${1:-results/syscalls}
BIN=${2:-target/release/peerd}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --locked -p peerd-cli -p peerd-loadgen
L=target/release/peerd-loadgen
mkdir -p "$OUT"
EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_read,syscalls:sys_enter_write

# user and system clock ticks of a process
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

run() { # name, server flag or "", loadgen arguments...
  local name=$1 flag=$2; shift 2
  # shellcheck disable=SC2086 # $flag is one argument or none
  start_peerd "$BIN" $flag
  local pid=$PEERD_PID
  "$L" "$@" --target "$PEERD_ADDR" --server-pid "$pid" --cores 1 --duration 6 --warmup 1 \
    --repetitions 1 --no-progress --out "$OUT" --name "$name" &
  local lg=$!
  sleep 3 # handshakes and warm-up done, well inside the 6 s window
  local before; before=$(ticks "$pid")
  perf stat -x, -e "$EVENTS" -p "$pid" -o "$OUT/$name.perf" -- sleep 3
  local after; after=$(ticks "$pid")
  wait "$lg"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $before $after" >> "$OUT/ticks"
}

rm -f "$OUT/ticks"
MODES="ring batched sendmsg"
flags() {
  case $1 in
    ring) echo "--ring-receives" ;;
    batched) echo "" ;;
    sendmsg) echo "--no-batched-sends" ;;
  esac
}
for mode in $MODES; do
  run echo-1-$mode "$(flags $mode)" rpc --connections 1 --rate 10000
done
for mode in $MODES; do
  run echo-64-$mode "$(flags $mode)" rpc --connections 64 --rate 40000
done
for mode in $MODES; do
  run fanout-100-$mode "$(flags $mode)" fanout --publishers 1 --subscribers 100 --topics 1 --rate 1000
done

python3 - "$OUT" "$(getconf CLK_TCK)" "$(git rev-parse --short HEAD)$(git diff --quiet || echo +)" <<'EOF'
import json, sys, os
out, hz, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ticks = {}
for line in open(os.path.join(out, "ticks")):
    n, u0, s0, u1, s1 = line.split()
    ticks[n] = ((int(u1) - int(u0)) / hz, (int(s1) - int(s0)) / hz)
rows = []
for name in [f"{s}-{m}" for s in ["echo-1", "echo-64", "fanout-100"] for m in ["ring", "batched", "sendmsg"]]:
    counts = {}
    for line in open(os.path.join(out, name + ".perf")):
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
            counts[parts[2].split(":")[-1]] = float(parts[0])
    run = json.load(open(os.path.join(out, name + ".json")))["runs"][0]
    # messages per second the server handled: round trips (echo) or deliveries (fan-out)
    rate = run["achieved_rate"]
    msgs = rate * 3.0
    user, sys_ = ticks[name]
    per = lambda k: counts.get(k, 0.0) / msgs
    rows.append((name, rate, per("sys_enter"), per("sys_enter_sendmsg") + per("sys_enter_sendto"),
                 per("sys_enter_recvfrom") + per("sys_enter_read"), per("sys_enter_io_uring_enter"),
                 1e6 * (user + sys_) / msgs, 100 * sys_ / max(user + sys_, 1e-9),
                 run["latency"]["p50"], run["latency"]["p99"]))
with open(os.path.join(out, "README.md"), "w") as f:
    f.write(f"# System calls per message (peerd {rev})\n\n")
    f.write("`results/run-syscalls.sh` on this 2-vCPU VM: server on core 0 (1 shard), loadgen on core 1, "
            "64 B payloads; `ring`: `--ring-receives` (multishot receives and batched sends through the "
            "shard's io_urings), `batched`: the default (reads through glommio, sends batched), `sendmsg`: "
            "`--no-batched-sends` (the path before issue 14); counts from `perf stat` tracepoints over 3 s of the measured window, CPU from "
            "/proc over the same 3 s (10 ms ticks). A message is a round trip (echo) or a delivery "
            "(fan-out).\n\n")
    f.write("| scenario | msgs/s | syscalls/msg | send/msg | recv/msg | io_uring_enter/msg | server CPU µs/msg | of it kernel | p50 µs | p99 µs |\n")
    f.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r[0]} | {r[1]:,.0f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.3f} | {r[6]:.2f} | {r[7]:.0f} % | {r[8]:.0f} | {r[9]:.0f} |\n")
print(open(os.path.join(out, "README.md")).read())
EOF
rm -f "$OUT/ticks"
