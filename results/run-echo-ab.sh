#!/usr/bin/env bash
# Echo A/B: server CPU per round trip of several peerd binaries (and Redis's ECHO beside
# them), in alternating rounds in one sitting, reported as medians. A single run on this VM
# moves by 10-30 % between sittings and by several µs within one, more than a change to the
# reactor loop is worth; alternating rounds and medians make such a change readable.
#
#   [CONNS=64 RATE=20000] results/run-echo-ab.sh OUT_DIR ROUNDS NAME=PEERD_BIN... [redis]
#
# A NAME=PEERD_BIN may name a script that execs peerd with more arguments (`exec peerd "$@"
# --ring-receives`): the pid stays the server's.
#
# Each round runs every server once: a fresh process pinned to core 0 (one shard), the
# loadgen on core 1, `rpc --connections $CONNS --rate $RATE --spin-us 100` (1 and 10,000 by
# default, the peers runner's echo1; CONNS=64 RATE=20000 is its echo64) for one 5 s window
# after 1 s of warm-up. The loadgen reads the server's CPU from its process CPU-time clock.
# While the window runs, `perf stat` counts the server's system calls and context switches
# for 3 s (needs perf: Debian's linux-perf, and root or perf_event_paranoid <= 1). Writes
# OUT_DIR/<name>-<round>.{json,perf} and OUT_DIR/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. results/lib.sh
OUT=${1:?OUT_DIR}
ROUNDS=${2:?ROUNDS}
shift 2
CONNS=${CONNS:-1}
RATE=${RATE:-10000}
[ $# -gt 0 ] || { echo "name=binary or redis, at least one" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --locked -p peerd-loadgen
L=target/release/peerd-loadgen
mkdir -p "$OUT"

one() { # name, binary or "redis", round
    local name=$1 bin=$2 round=$3 pid where
    if [ "$bin" = redis ]; then
        local port
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        where=(--protocol redis --target "127.0.0.1:$port")
    else
        start_peerd "$bin"
        pid=$PEERD_PID
        where=(--target "$PEERD_ADDR")
    fi
    "$L" rpc "${where[@]}" --server-pid "$pid" --server-cores 0 --cores 1 --connections "$CONNS" \
        --rate "$RATE" --spin-us 100 --duration 5 --warmup 1 --repetitions 1 --no-progress \
        --out "$OUT" --name "$name-$round" >/dev/null 2>&1 &
    local lg=$!
    sleep 2 # handshake and warm-up done, inside the measured window
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pid" \
        -o "$OUT/$name-$round.perf" -- sleep 3
    wait "$lg"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
    for spec in "$@"; do
        if [ "$spec" = redis ]; then one redis redis "$round"; else one "${spec%%=*}" "${spec#*=}" "$round"; fi
    done
done

python3 - "$OUT" "$ROUNDS" "$CONNS" "$RATE" "$@" <<'EOF'
import json, os, statistics, sys
out, rounds, conns, rate, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
names = [s.split("=", 1)[0] for s in specs]
rows = []
for n in names:
    cpu, p50, sc, cs = [], [], [], []
    for r in range(1, rounds + 1):
        run = json.load(open(os.path.join(out, f"{n}-{r}.json")))["runs"][0]
        cpu.append(1e6 / run["per_server_cpu_s"])
        p50.append(run["latency"]["p50"])
        counts = {}
        for line in open(os.path.join(out, f"{n}-{r}.perf")):
            f = line.strip().split(",")
            if len(f) > 2 and f[0].replace(".", "").isdigit():
                counts[f[2]] = float(f[0])
        msgs = run["achieved_rate"] * 3.0
        sc.append(counts.get("raw_syscalls:sys_enter", 0) / msgs)
        cs.append(counts.get("context-switches", 0) / msgs)
    rows.append((n, statistics.median(cpu), min(cpu), max(cpu), statistics.median(p50),
                 statistics.median(sc), statistics.median(cs)))
with open(os.path.join(out, "README.md"), "w") as f:
    f.write(f"# Echo at {conns} connection(s), A/B ({rounds} alternating rounds)\n\n")
    f.write(f"`CONNS={conns} RATE={rate} results/run-echo-ab.sh " + " ".join(sys.argv[1:2] + [str(rounds)] + specs) + "`: server on "
            f"core 0 (one shard), loadgen on core 1, `rpc --connections {conns} --rate {rate} --spin-us 100`, "
            "one 5 s window per round; CPU from the server's CPU-time clock, system calls and context "
            "switches from `perf stat` over 3 s of the window.\n\n")
    f.write("| server | server CPU µs/round trip: median (min-max) | p50 µs | syscalls/rt | context switches/rt |\n")
    f.write("|---|---:|---:|---:|---:|\n")
    for r in rows:
        f.write(f"| {r[0]} | {r[1]:.1f} ({r[2]:.1f}-{r[3]:.1f}) | {r[4]:.1f} | {r[5]:.2f} | {r[6]:.2f} |\n")
print(open(os.path.join(out, "README.md")).read())
EOF
