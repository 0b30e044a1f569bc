#!/usr/bin/env bash
# WebSocket and TLS (#10): peerd over TCP, ws://, wss:// (and tls:// where it says), Bun's
# built-in WebSocket pub/sub server and Node's `ws`, driven by the same loadgen scenarios in
# one sitting:
#
#   echo1    echo at 1 connection, open loop at ECHO1_RATE/s (p50/p99; --spin-us 100)
#   echo64   echo at 64 connections, open loop at ECHO64_RATE/s (answers per server CPU-s)
#   fanout   1 publisher -> 100 subscribers, FANOUT_RATE publishes/s (deliveries per server CPU-s)
#   fanout-batched  the same publishes FANOUT_BATCH to a write (--batch: same offered rate, a
#            write every FANOUT_BATCH / FANOUT_RATE s; labelled "batched N per write" in every
#            report). Not in the default SCENARIOS; results/run-peers.sh asks for it
#   idle     IDLE_CONNS idle, handshaken connections (server RSS delta per connection)
#
# peerd is started by the loadgen (--spawn-server, 1 shard, pinned to core 0); Bun and Node
# are started here with `taskset -c 0`; the loadgen runs on core 1. Every server is fresh
# for every scenario and stopped after it. Bun and Node speak wsop (bench-peers/README.md).
#
# Usage: results/run-websocket.sh [OUT_DIR]     (default results/websocket)
# Needs: cargo, node + npm (bench-peers/package-lock.json; `npm ci` installs Bun's binary
# and ws), a quiet machine (nothing else compiling or running: the script warns when the
# load average says otherwise, and records it).
#
# More servers (SERVERS=...): `redis` (Debian's redis-server, ECHO and PUBLISH/SUBSCRIBE over
# RESP), `nats` (Debian's nats-server, PUB/SUB; it has no echo), `floor` (the loadgen's own
# blocking-TCP floors: the echo, what a round trip costs with no server logic, and the
# fan-out floor, which only writes each publish to every subscriber; no idle), and
# `peerd-tcp-sendmsg` (peerd with --no-batched-sends: a recv per read and a sendmsg per
# connection, the data path before issue 14). A server that does not do a scenario
# is skipped for it. results/run-peers.sh runs peerd against Redis, NATS, Bun and the floor
# with this script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-results/websocket}
ECHO1_RATE=${ECHO1_RATE:-10000}
ECHO64_RATE=${ECHO64_RATE:-20000}
FANOUT_RATE=${FANOUT_RATE:-500}
FANOUT_BATCH=${FANOUT_BATCH:-8}
IDLE_CONNS=${IDLE_CONNS:-10000}
DUR=${DUR:-3}
REPS=${REPS:-3}
SERVERS=${SERVERS:-"peerd-tcp peerd-tls peerd-ws peerd-wss bun node-ws"}
SUMMARY=${SUMMARY:-results/summarize-websocket.py}
SCENARIOS=${SCENARIOS:-"echo1 echo64 fanout idle"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

# --- build and install (before anything is measured) ---
cargo build --release -p peerd-cli -p peerd-loadgen
(cd bench-peers && npm ci --no-audit --no-fund --loglevel=error)
BUN=$ROOT/bench-peers/node_modules/.bin/bun
"$BUN" --version >/dev/null
# Redis and NATS from Debian, when asked for and missing (root: apt-get; else say so).
need_deb() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
    else
        echo "$1 is missing: sudo apt-get install $2" >&2
        exit 1
    fi
}
case " $SERVERS " in *" redis "*) need_deb redis-server redis-server ;; esac
case " $SERVERS " in *" nats "*) need_deb nats-server nats-server ;; esac
L=$BIN/peerd-loadgen
P=$BIN/peerd

# 10,000 idle connections need that many descriptors in the loadgen and in each server.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 100)) ]; then
    echo "ulimit -n is $(ulimit -n): too low for $IDLE_CONNS connections" >&2
    exit 1
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/run.log
: >"$LOG"
{
    echo "# results/run-websocket.sh $*"
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!results' || echo ' (dirty)')"
    echo "kernel: $(uname -r); cores: $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
    echo "node: $(node --version); bun: $("$BUN" --version); ws: $(node -p 'require("./bench-peers/node_modules/ws/package.json").version')"
    case " $SERVERS " in *" redis "*) echo "redis: $(redis-server --version)" ;; esac
    case " $SERVERS " in *" nats "*) echo "nats: $(nats-server --version)" ;; esac
    echo "ulimit -n: $(ulimit -n)"
    echo "settings: ECHO1_RATE=$ECHO1_RATE ECHO64_RATE=$ECHO64_RATE FANOUT_RATE=$FANOUT_RATE FANOUT_BATCH=$FANOUT_BATCH IDLE_CONNS=$IDLE_CONNS DUR=$DUR REPS=$REPS"
} | tee -a "$LOG"

# Is the machine quiet? The build just ran, so the load average says little: let it settle,
# then measure how busy both cores are for 3 s.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
sleep 5
read -r b0 t0 < <(busy)
sleep 3
read -r b1 t1 < <(busy)
IDLE_BUSY=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN{printf "%.1f", 100 * b / t}')
echo "CPU busy before measuring (3 s, both cores): $IDLE_BUSY %" | tee -a "$LOG"
if awk -v x="$IDLE_BUSY" 'BEGIN{exit !(x > 5)}'; then
    echo "WARNING: the machine is not quiet ($IDLE_BUSY % busy before measuring)" | tee -a "$LOG"
fi

# Watch for other work while measuring: every 5 s, any process outside this run using more
# than 10 % of a core over one second goes into other-activity.log.
ACT=$OUT/other-activity.log
: >"$ACT"
(
    while :; do
        top -b -n 2 -d 1 -w 250 2>/dev/null | awk -v t="$(date +%T)" '
            /^top -/ {frame++}
            frame == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 10 && $12 !~ /^(peerd|peerd-loadgen|bun|bun.exe|node|top|loadgen-0|peerd-shard-0|peerd-shard-0-1|redis-server|nats-server|floor-echo|floor-fanout)$/ {print t, $12, $9 "%"}' >>"$ACT"
        sleep 4
    done
) &
MONITOR=$!

PEER_PID=
PEER_URL=
# Start a Bun or Node peer pinned to core 0; sets PEER_PID and PEER_URL from its ready line.
start_peer() {
    local kind=$1 ready=$OUT/.ready-$1
    rm -f "$ready"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    case $kind in
    bun) taskset -c 0 "$BUN" bench-peers/bun-server.js >"$ready" 2>>"$LOG" & ;;
    node-ws) taskset -c 0 node bench-peers/node-ws-server.js >"$ready" 2>>"$LOG" & ;;
    redis)
        # No persistence, no protected mode games: a plain in-memory server on loopback.
        taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --maxclients 20000 >>"$LOG" 2>&1 &
        local pid=$!
        for _ in $(seq 100); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        echo "redis listening on 127.0.0.1:$port pid=$pid" >"$ready"
        ;;
    nats)
        taskset -c 0 nats-server -a 127.0.0.1 -p "$port" >>"$ready.log" 2>&1 &
        local pid=$!
        for _ in $(seq 100); do
            grep -q 'Server is ready' "$ready.log" 2>/dev/null && break
            sleep 0.1
        done
        echo "nats listening on nats://127.0.0.1:$port pid=$pid" >"$ready"
        ;;
    esac
    for _ in $(seq 100); do
        if grep -q ' listening on ' "$ready" 2>/dev/null; then break; fi
        sleep 0.1
    done
    local line
    line=$(grep ' listening on ' "$ready") || { echo "$kind printed no ready line" >&2; exit 1; }
    PEER_URL=$(echo "$line" | awk '{print $4}')
    PEER_PID=$(echo "$line" | sed -n 's/.* pid=\([0-9]*\).*/\1/p')
    echo "started $kind: $line" >>"$LOG"
    sleep 0.5
}
stop_peer() {
    if [ -n "$PEER_PID" ]; then
        kill "$PEER_PID" 2>/dev/null || true
        wait "$PEER_PID" 2>/dev/null || true
        PEER_PID=
    fi
}
trap 'stop_peer; kill $MONITOR 2>/dev/null || true' EXIT

# run SERVER SCENARIO-NAME LOADGEN-ARGS...: one loadgen invocation against SERVER.
run() {
    local server=$1 name=$2
    shift 2
    # What a server does not do is skipped: NATS has no echo, the floor holds no idle
    # connections worth measuring.
    case "$server:$1" in nats:rpc | floor:idle) return 0 ;; esac
    local where=()
    case $server in
    peerd-tcp) where=(--spawn-server --server-bin "$P" --shards 1 --transport tcp) ;;
    peerd-tls) where=(--spawn-server --server-bin "$P" --shards 1 --transport tls) ;;
    peerd-ws) where=(--spawn-server --server-bin "$P" --shards 1 --transport ws) ;;
    peerd-wss) where=(--spawn-server --server-bin "$P" --shards 1 --transport wss) ;;
    peerd-tcp-sendmsg) where=(--spawn-server --server-bin "$P" --shards 1 --transport tcp --server-arg=--no-batched-sends) ;;
    bun | node-ws)
        start_peer "$server"
        where=(--protocol wsop --target "$PEER_URL" --server-pid "$PEER_PID" --server-cores 0 --cores 1)
        ;;
    redis | nats)
        # rpc is ECHO for Redis; NATS has no echo (skipped below).
        start_peer "$server"
        where=(--protocol "$server" --target "$PEER_URL" --server-pid "$PEER_PID" --server-cores 0 --cores 1)
        ;;
    floor)
        # The loadgen's in-process floors on core 0: the blocking echo (its own `floor`
        # scenario) for a round trip, the fan-out floor (--protocol floor) for fan-out.
        case $1 in
        rpc) set -- floor "${@:2}" ;;
        fanout) where=(--protocol floor) ;;
        esac
        where+=(--server-cores 0 --cores 1)
        ;;
    esac
    echo "== $name-$server" | tee -a "$LOG"
    local cmd=("$L" "$@" "${where[@]}" --no-progress --out "$OUT" --name "$name-$server")
    echo "\$ ${cmd[*]}" >>"$LOG"
    "${cmd[@]}" 2>&1 | grep -v '^\[peerd\]\|  INFO \|  WARN peerd_server::server: max_connections' | tee -a "$LOG"
    stop_peer
}

want() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }

T0=$(date +%s)
for s in $SERVERS; do
    want echo1 && run "$s" echo1 rpc --rate "$ECHO1_RATE" --connections 1 --spin-us 100 \
        --duration "$DUR" --warmup 1 --repetitions "$REPS"
done
for s in $SERVERS; do
    want echo64 && run "$s" echo64 rpc --rate "$ECHO64_RATE" --connections 64 \
        --duration "$DUR" --warmup 1 --repetitions "$REPS"
done
for s in $SERVERS; do
    want fanout && run "$s" fanout fanout --publishers 1 --subscribers 100 --topics 1 \
        --rate "$FANOUT_RATE" --duration "$DUR" --warmup 1 --repetitions "$REPS"
done
for s in $SERVERS; do
    # The same offered rate as `fanout`, FANOUT_BATCH publishes per write: what a server
    # saves when a read brings several messages.
    want fanout-batched && run "$s" fanout-batched fanout --publishers 1 --subscribers 100 --topics 1 \
        --rate "$FANOUT_RATE" --batch "$FANOUT_BATCH" --duration "$DUR" --warmup 1 --repetitions "$REPS"
done
for s in $SERVERS; do
    # tls:// idle is left out: wss against ws shows what TLS holds per connection.
    [ "$s" = peerd-tls ] && continue
    want idle && run "$s" idle idle --connections "$IDLE_CONNS" --duration 3
done
echo "measured in $(($(date +%s) - T0)) s" | tee -a "$LOG"
kill $MONITOR 2>/dev/null || true
if [ -s "$ACT" ]; then
    echo "WARNING: other processes used the CPU while measuring ($(wc -l <"$ACT") samples, other-activity.log):" | tee -a "$LOG"
    awk '{print $2}' "$ACT" | sort | uniq -c | sort -rn | head -5 | tee -a "$LOG"
else
    echo "no other process above 10 % of a core in any sample while measuring" | tee -a "$LOG"
fi

# --- overlays and the summary table ---
overlay() {
    local name=$1 suffix=$2 files=()
    for s in $SERVERS; do
        for f in "$OUT/$name-$s"-r*"$suffix".hgrm; do
            case $f in *-slowest.hgrm) [ -z "$suffix" ] && continue ;; esac
            [ -e "$f" ] && files+=("$f=$s")
        done
    done
    [ ${#files[@]} -gt 0 ] && "$L" plot --out "$OUT/$name$suffix-overlay.svg" --title "$name$suffix" "${files[@]}" >/dev/null
}
want echo1 && overlay echo1 ""
want echo64 && overlay echo64 ""
want fanout && overlay fanout "" && overlay fanout "-slowest"
want fanout-batched && overlay fanout-batched "" && overlay fanout-batched "-slowest"
rm -f "$OUT"/.ready-*
{
    python3 "$SUMMARY" "$OUT"
    echo
    echo "Quiet? CPU busy before measuring: $IDLE_BUSY %; other processes above 10 % of a core while measuring: $(wc -l <"$ACT") samples (other-activity.log)."
} | tee "$OUT/summary.md"
