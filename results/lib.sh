# Shared by the results/ scripts that start peerd themselves (rather than through the
# loadgen's --spawn-server) because they need its pid for `perf stat`. Source it.

# start_peerd BIN [SERVE_ARGS...]: one `peerd serve` with one shard pinned to core 0 on a free
# loopback port. Sets PEERD_PID and PEERD_ADDR (host:port) once it prints its address, or
# prints its output and exits the script if it does not within 10 s.
start_peerd() {
    local bin=$1 log
    shift
    log=$(mktemp)
    taskset -c 0 "$bin" serve --listen 127.0.0.1:0 --shards 1 --cores 0 "$@" >"$log" 2>&1 &
    PEERD_PID=$!
    PEERD_ADDR=""
    for _ in $(seq 100); do
        PEERD_ADDR=$(sed -n 's/^peerd listening on \(tcp:\/\/\)\{0,1\}\([^ ]*\) .*/\2/p' "$log" | head -1)
        [ -n "$PEERD_ADDR" ] && break
        sleep 0.1
    done
    if [ -z "$PEERD_ADDR" ]; then
        cat "$log"
        rm -f "$log"
        echo "$bin did not start" >&2
        kill "$PEERD_PID"
        exit 1
    fi
    rm -f "$log"
}
