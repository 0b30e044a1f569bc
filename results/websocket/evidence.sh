#!/usr/bin/env bash
# Where the server's time and memory go on the WebSocket and TLS paths: the evidence behind
# the "where the cost goes" notes in results/README.md (#10). Not a benchmark: strace and
# perf slow the server down; only proportions and counts are read from these.
#
# Usage: results/websocket/evidence.sh [OLD_PEERD]
#   OLD_PEERD: a peerd binary from before the WebSocket/TLS listeners (e.g. the #9 "after"
#   build) to compare idle-connection allocations with; skipped when not given.
# Writes results/websocket/evidence/*.txt. SECTIONS (default "strace trace perf perf-echo
# allocs idle-rss") picks which to (re)run. Needs perf (cpu-clock sampling and libc uprobes)
# and strace; run as root on a quiet machine after `cargo build --release`.
set -uo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
B=$CARGO_TARGET_DIR/release
L=$B/peerd-loadgen
OLD=${1:-}
E=results/websocket/evidence
SECTIONS=${SECTIONS:-"strace trace perf perf-echo allocs idle-rss"}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
mkdir -p "$E"
ulimit -n "$(ulimit -Hn)"
TMP=$(mktemp -d)
SRV=
cleanup() {
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# start BIN SCHEME: a 1-shard peerd pinned to core 0 with one listener; sets URL and SRV.
start() {
    local bin=$1 scheme=$2 listen tls=()
    case $scheme in
    tcp) listen=127.0.0.1:0 ;;
    ws) listen=ws://127.0.0.1:0/ ;;
    tls | wss)
        listen=$scheme://127.0.0.1:0
        tls=(--tls-cert testdata/tls/server.pem --tls-key testdata/tls/server.key)
        ;;
    esac
    taskset -c 0 "$bin" serve --listen "$listen" --shards 1 --cores 0 "${tls[@]}" >"$TMP/ready" 2>/dev/null &
    for _ in $(seq 50); do grep -q listening "$TMP/ready" && break; sleep 0.1; done
    URL=$(awk '{print $4; exit}' "$TMP/ready")
    SRV=$(sed -n 's/.* pid=\([0-9]*\).*/\1/p' "$TMP/ready" | head -1)
}
stop() {
    kill "$SRV" 2>/dev/null || true
    wait "$SRV" 2>/dev/null || true
    SRV=
}
lg() { "$L" "$@" --target "$URL" --server-pid "$SRV" --server-cores 0 --cores 1 --ca testdata/tls/ca.pem --no-progress --out "$TMP" --name ev 2>&1 | grep -A1 '^run' | tail -1; }

# 1. Syscalls per message: strace -c on the server, attached after the warm-up. strace
# slows every call down, so the server falls behind and reads several messages at once:
# counts per message are only indicative (the per-call trace of section 2 is exact).
want strace && {
    echo "# strace -c -f on the server (attached 1.5 s in, for the rest of the run); loadgen line first"
    for what in "rpc --connections 1 --rate 2000" "fanout --subscribers 100 --rate 200"; do
        for scheme in tcp ws wss; do
            echo
            echo "## $scheme: peerd-loadgen $what --duration 2 --warmup 1 --repetitions 1"
            start "$B/peerd" "$scheme"
            (sleep 1.5 && exec strace -c -f -p "$SRV" -o "$TMP/strace.txt") &
            st=$!
            # shellcheck disable=SC2086
            lg $what --duration 2 --warmup 1 --repetitions 1
            kill -INT "$st" 2>/dev/null || true
            wait "$st" 2>/dev/null || true
            stop
            grep -v '^strace:' "$TMP/strace.txt"
        done
    done
} >"$E/strace-per-message.txt" 2>&1

# 2. One TLS echo at 200/s, traced call by call (what the server does per message).
want trace && {
    echo "# strace -tt of the server's shard thread, wss echo at 200/s, 0.2 s of it"
    start "$B/peerd" wss
    (sleep 1.3 && exec timeout 0.2 strace -f -tt -e trace=recvfrom,sendmsg,io_uring_enter -p "$SRV" -o "$TMP/trace.txt") &
    st=$!
    lg rpc --rate 200 --duration 1 --warmup 1 --repetitions 1 >/dev/null
    wait "$st" 2>/dev/null || true
    stop
    grep -v 'resumed\|unfinished\|^strace' "$TMP/trace.txt" | cut -c1-200 | sed -n 1,40p
} >"$E/strace-wss-echo.txt" 2>&1

# 3. Where the CPU goes in fan-out 1 -> 100 at 500 publishes/s: perf (cpu-clock) on the server.
want perf && {
    for scheme in tcp ws wss; do
        echo "## $scheme: fanout --subscribers 100 --rate 500 --duration 3 --warmup 1 --repetitions 1"
        start "$B/peerd" "$scheme"
        perf record -e cpu-clock -F 2999 -g -p "$SRV" -o "$TMP/perf.data" 2>/dev/null &
        pp=$!
        lg fanout --subscribers 100 --rate 500 --duration 3 --warmup 1 --repetitions 1
        kill -INT "$pp"
        wait "$pp" 2>/dev/null || true
        stop
        echo "### by object"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null | grep '%' | head -4
        echo "### top symbols in peerd"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort sym --dsos peerd -g none 2>/dev/null | grep '%' | head -16
        echo "### top kernel symbols"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort sym --dsos '[kernel.kallsyms]' -g none 2>/dev/null | grep '%' | head -8
        echo
    done
} >"$E/perf-fanout.txt" 2>&1

# 3b. Echo at 64 connections, 20,000/s: where peerd's CPU per answer goes (tcp and ws).
want perf-echo && {
    for scheme in tcp ws; do
        echo "## $scheme: rpc --connections 64 --rate 20000 --duration 3 --warmup 1 --repetitions 1"
        start "$B/peerd" "$scheme"
        perf record -e cpu-clock -F 2999 -g -p "$SRV" -o "$TMP/perf.data" 2>/dev/null &
        pp=$!
        lg rpc --connections 64 --rate 20000 --duration 3 --warmup 1 --repetitions 1
        kill -INT "$pp"
        wait "$pp" 2>/dev/null || true
        stop
        echo "### by object"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null | grep '%' | head -4
        echo "### top symbols"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort sym -g none 2>/dev/null | grep '%' | head -24
        echo
    done
} >"$E/perf-echo64.txt" 2>&1

# 4. Allocations per idle connection: libc malloc sizes (uprobes) while 2,000 connect.
LIBC=$(ldd "$B/peerd" | awk '/libc.so.6/{print $3}')
perf probe -q -x "$LIBC" 'malloc size=%di:u64' 2>/dev/null || true
allocs() {
    local bin=$1 scheme=$2 n=2000
    start "$bin" "$scheme"
    perf record -e probe_libc:malloc -p "$SRV" -o "$TMP/alloc.data" 2>/dev/null &
    pp=$!
    sleep 0.5
    "$L" idle --target "$URL" --connections $n --duration 1 --ca testdata/tls/ca.pem --no-progress --out "$TMP" --name al >/dev/null 2>&1
    kill -INT "$pp"
    wait "$pp" 2>/dev/null || true
    stop
    perf script -i "$TMP/alloc.data" -F trace 2>/dev/null | sed -n 's/.*size=\([0-9]*\).*/\1/p' | sort -n | uniq -c |
        awk -v n=$n '$1 >= n / 2 {printf "%8d mallocs  %5.2f per connection  of %5d B\n", $1, $1 / n, $2}' | sort -k5 -n
}
want allocs && {
    echo "# malloc sizes in the server while 2,000 idle connections open (sizes seen at least 0.5x per connection)"
    if [ -n "$OLD" ]; then
        echo "## tcp, $OLD (before the WebSocket/TLS listeners)"
        allocs "$OLD" tcp
    fi
    for scheme in tcp ws wss; do
        echo "## $scheme, this build"
        allocs "$B/peerd" "$scheme"
    done
} >"$E/allocs-idle.txt" 2>&1
perf probe -q -d probe_libc:malloc 2>/dev/null || true

# 5. Idle RSS per TCP connection, OLD against this build (10,000 connections each).
want idle-rss && [ -n "$OLD" ] && {
    for bin in "$OLD" "$B/peerd"; do
        echo "## $bin: peerd-loadgen idle --spawn-server --transport tcp --connections 10000 --duration 3"
        "$L" idle --spawn-server --server-bin "$bin" --transport tcp --connections 10000 --duration 3 \
            --no-progress --out "$TMP" --name idle 2>&1 | grep 'per connection'
    done
} >"$E/idle-rss-tcp.txt" 2>&1
echo "wrote $E/"
