#!/usr/bin/env bash
# Check the harness itself: run .ci/autobahn/run.sh against a WebSocket echo server that is
# not ours (reference_echo.py, on the `websockets` package), which must pass every case.
#
#   .ci/autobahn/selftest.sh [OUTDIR]        # default target/autobahn-selftest
#
# The reference server listens on 127.0.0.1:${AUTOBAHN_SELFTEST_PORT:-9001} and, like peerd's
# peer endpoint, refuses handshakes that do not offer the subprotocol peerd.v1, so this also
# proves that wstest offers it. Its Python 3 venv is cached next to wstest's
# (${AUTOBAHN_REF_VENV:-$HOME/.cache/peerd-autobahn-ref-venv}). The environment of run.sh
# applies (AUTOBAHN_CASES, AUTOBAHN_VENV, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."

outdir=${1:-target/autobahn-selftest}
port=${AUTOBAHN_SELFTEST_PORT:-9001}
ref_venv=${AUTOBAHN_REF_VENV:-$HOME/.cache/peerd-autobahn-ref-venv}
websockets_pin=websockets==17.4

if [ "$(cat "$ref_venv/.peerd-stamp" 2>/dev/null)" != "$websockets_pin" ]; then
    rm -rf "$ref_venv"
    python3 -m venv "$ref_venv"
    "$ref_venv/bin/python" -m pip install --quiet --disable-pip-version-check "$websockets_pin"
    echo "$websockets_pin" >"$ref_venv/.peerd-stamp"
fi

log=$(mktemp)
"$ref_venv/bin/python" .ci/autobahn/reference_echo.py --host 127.0.0.1 --port "$port" \
    --require-subprotocol peerd.v1 >"$log" 2>&1 &
server_pid=$!
stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

# Wait for it to listen: at most 10 s.
for _ in $(seq 1 100); do
    if grep -q "listening on" "$log"; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$log" >&2
        echo "selftest: reference_echo.py exited" >&2
        exit 2
    fi
    sleep 0.1
done
grep -q "listening on" "$log" || { cat "$log" >&2; echo "selftest: reference_echo.py did not start" >&2; exit 2; }

# 7.1.5 (a text fragment, then a close, then the next fragment) is left out: websockets
# answers that close with 1002 "incomplete fragmented message" on purpose, where Autobahn wants
# 1000 (a control frame may come between fragments, RFC 6455 5.4), so it fails there as
# FAILED / WRONG CODE. peerd is held to it; set AUTOBAHN_EXCLUDE= to see it fail here.
status=0
AUTOBAHN_AGENT=${AUTOBAHN_AGENT:-reference-websockets} AUTOBAHN_PROTOCOL=peerd.v1 \
    AUTOBAHN_EXCLUDE=${AUTOBAHN_EXCLUDE-7.1.5} \
    .ci/autobahn/run.sh "ws://127.0.0.1:$port/" "$outdir" || status=$?
echo "selftest: what the reference server saw in the first handshake:"
grep "^reference_echo:   " "$log" | sed 's/^reference_echo:   /  /'
stop_server
trap - EXIT
rm -f "$log"
exit "$status"
