#!/usr/bin/env bash
# Run Autobahn|Testsuite's fuzzing client (wstest -m fuzzingclient) against a WebSocket echo
# server that is already listening, then check the results (.ci/autobahn/check.py).
#
#   .ci/autobahn/run.sh URL OUTDIR
#   .ci/autobahn/run.sh ws://127.0.0.1:9001/ target/autobahn
#
# URL     the server's WebSocket URL (ws:// only; wstest runs every case against it).
# OUTDIR  where wstest writes its reports (index.json, index.html, one .json/.html per case)
#         and check.py writes summary.md. Created if missing; it must be empty or hold an
#         earlier run of this script, whose files are replaced.
#
# Exits 0 when every case passed (check.py says what passing means), 1 when some failed or
# did not run, 2 on a usage or setup error.
#
# Environment (all optional):
#   AUTOBAHN_VENV      Python 2.7 virtualenv holding wstest, created on first use and reused
#                      while requirements.txt is unchanged
#                      (default $HOME/.cache/peerd-autobahn-venv)
#   AUTOBAHN_PYTHON2   the Python 2.7 to build it from (default: pyenv's newest 2.7.x, else
#                      python2.7 on PATH)
#   AUTOBAHN_CASES     case patterns, space-separated (default "1.* 2.* 3.* 4.* 5.* 6.* 7.* 10.*")
#   AUTOBAHN_EXCLUDE   case patterns to leave out, space-separated (default none)
#   AUTOBAHN_PROTOCOL  subprotocol wstest offers in Sec-WebSocket-Protocol (default peerd.v1;
#                      empty: no such header)
#   AUTOBAHN_AGENT     name of the server in the reports (default peerd)
#   AUTOBAHN_TIMEOUT   seconds wstest may run in all before it is killed (default 900)
#
# Python 2.7 because wstest never moved to Python 3. Everything it needs is pinned in
# requirements.txt; see README.md next to this file for why the pins are what they are and
# why the 9.* (performance) cases are not in the default set.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 URL OUTDIR" >&2
    exit 2
fi
url=$1
outdir=$2
here=$(cd "$(dirname "$0")" && pwd)

venv=${AUTOBAHN_VENV:-$HOME/.cache/peerd-autobahn-venv}
cases=${AUTOBAHN_CASES:-1.* 2.* 3.* 4.* 5.* 6.* 7.* 10.*}
exclude=${AUTOBAHN_EXCLUDE:-}
protocol=${AUTOBAHN_PROTOCOL-peerd.v1}
agent=${AUTOBAHN_AGENT:-peerd}
wstest_timeout=${AUTOBAHN_TIMEOUT:-900}

case $url in
ws://*) ;;
*)
    echo "autobahn: URL must start with ws:// (got '$url')" >&2
    exit 2
    ;;
esac

start_all=$SECONDS
step=$SECONDS
took() {
    echo "autobahn: $1 took $((SECONDS - step)) s"
    step=$SECONDS
}

# --- 1. The Python 2.7 virtualenv with wstest ------------------------------------------------

find_python2() {
    if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then
        echo "$AUTOBAHN_PYTHON2"
        return
    fi
    local root candidate best=
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    # pyenv's own builds, newest 2.7.x last; not the pyenv shim, which needs a version selected.
    for candidate in $(ls -d "$root"/versions/2.7.* 2>/dev/null | sort -V); do
        [ -x "$candidate/bin/python2.7" ] && best=$candidate/bin/python2.7
    done
    if [ -z "$best" ] && command -v python2.7 >/dev/null; then
        best=$(command -v python2.7)
    fi
    echo "$best"
}

# The stamp names what the venv was built from (the Python, the pins, the recipe version
# below); a venv whose stamp is missing (an install that did not finish) or different is
# rebuilt from scratch. Bump "recipe" when the way it is built changes.
py2=$(find_python2)
want_stamp="recipe=1 python=$py2 requirements=$(sha256sum <"$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$venv/.peerd-stamp" 2>/dev/null)" != "$want_stamp" ] || [ ! -x "$venv/bin/wstest" ]; then
    if [ -z "$py2" ] || ! "$py2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
        echo "autobahn: no Python 2.7 found (tried pyenv's versions/2.7.*, python2.7 on PATH);" \
            "install one (pyenv install 2.7.18) or set AUTOBAHN_PYTHON2" >&2
        exit 2
    fi
    echo "autobahn: creating $venv from $py2"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    boot=$(mktemp -d)
    # virtualenv 16.7.12: the last of the single-file virtualenvs, runs on 2.7 with no
    # dependencies and carries the last pip (20.3.4), setuptools (44.1.1) and wheel for 2.7,
    # so --no-download makes the venv without fetching anything else. (Python 2.7 has no
    # venv module; virtualenv 20.15, the last 20.x for 2.7, has dependencies of its own.)
    # (That python's own pip may be older than 20.0, which has no --no-python-version-warning
    # and prints a DEPRECATION line even with --quiet: filtered out.)
    "$py2" -m pip install --quiet --disable-pip-version-check --target "$boot" virtualenv==16.7.12 2>&1 |
        { grep -v '^DEPRECATION: Python 2.7' || true; }
    "$py2" "$boot/virtualenv.py" --quiet --no-download "$venv"
    rm -rf "$boot"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-python-version-warning \
        --no-deps -r "$here/requirements.txt"
    # --no-deps above: so check that nothing is missing or at a version that does not fit.
    # (autobahntestsuite asks for autobahn[accelerate], i.e. wsaccel, which is left out on
    # purpose; pip check looks at names and versions only, not at extras.)
    "$venv/bin/python" -m pip check --disable-pip-version-check --no-python-version-warning |
        sed 's/^/autobahn: pip check: /'
    echo "$want_stamp" >"$venv/.peerd-stamp"
    took "installing wstest"
fi
"$venv/bin/wstest" --autobahnversion | sed 's/^/autobahn: /'

# --- 2. The spec ------------------------------------------------------------------------------

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
if [ -n "$(ls -A "$outdir")" ] && [ ! -e "$outdir/.peerd-autobahn" ]; then
    echo "autobahn: $outdir is not empty and was not written by this script; not touching it" >&2
    exit 2
fi
find "$outdir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
touch "$outdir/.peerd-autobahn"

# wstest reads the spec; check.py reads expected_cases.json to tell a case that did not run
# (server gone, wstest killed) from one that passed.
"$venv/bin/python" - "$outdir" "$url" "$agent" "$protocol" "$cases" "$exclude" <<'EOF'
import json, sys
from autobahntestsuite.caseset import CaseSet
from autobahntestsuite.fuzzing import CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories

outdir, url, agent, protocol, cases, exclude = sys.argv[1:]
server = {"agent": agent, "url": url}
if protocol:
    # Sent as "Sec-WebSocket-Protocol: <protocol>" in every case's opening handshake. This is a
    # key of the server entry, NOT of its "options" (those are setProtocolOptions() keyword
    # arguments: timeouts, frame sizes, ...; "protocols" there is a TypeError).
    server["protocols"] = [protocol]
spec = {
    "outdir": outdir,
    "servers": [server],
    "cases": cases.split(),
    "exclude-cases": exclude.split(),
    "exclude-agent-cases": {},
}
with open(outdir + "/spec.json", "w") as f:
    json.dump(spec, f, indent=2, sort_keys=True)
caseset = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
expected = caseset.parseSpecCases(spec)
if not expected:
    sys.stderr.write("autobahn: the case patterns %r (minus %r) select no case\n" % (cases, exclude))
    sys.exit(2)
with open(outdir + "/expected_cases.json", "w") as f:
    json.dump({"agent": agent, "cases": expected}, f, indent=1)
print("autobahn: %d cases (%s) against %s, subprotocol offered: %s"
      % (len(expected), cases, url, protocol or "none"))
EOF

# --- 3. wstest --------------------------------------------------------------------------------

# wstest exits 0 even when it could not connect (it then skips to the next server and writes
# a report without those cases), so its status says little; check.py decides. It runs from
# OUTDIR because it may drop files in its working directory. The timeout keeps a server that
# stalls a case from holding CI forever (each handshake has its own 5 s limit in wstest).
wstest_status=0
(cd "$outdir" && timeout --kill-after=10 "$wstest_timeout" \
    "$venv/bin/wstest" --mode fuzzingclient --spec "$outdir/spec.json") >"$outdir/wstest.log" 2>&1 ||
    wstest_status=$?
took "wstest"
if [ "$wstest_status" -ne 0 ]; then
    tail -n 40 "$outdir/wstest.log" >&2
    if [ "$wstest_status" -eq 124 ] || [ "$wstest_status" -eq 137 ]; then
        echo "autobahn: wstest still running after $wstest_timeout s, killed (AUTOBAHN_TIMEOUT)" >&2
    else
        echo "autobahn: wstest exited with status $wstest_status (log: $outdir/wstest.log)" >&2
    fi
fi
# A refused connection or a crash inside wstest shows here; check.py then reports the cases
# that did not run.
grep -E 'Connection to .* failed|Traceback' "$outdir/wstest.log" | head -n 20 >&2 || true

# --- 4. The verdict ---------------------------------------------------------------------------

check_status=0
python3 "$here/check.py" "$outdir" || check_status=$?
echo "autobahn: $((SECONDS - start_all)) s in all; reports in $outdir (index.html)"
if [ "$wstest_status" -ne 0 ] && [ "$check_status" -eq 0 ]; then
    check_status=1
fi
exit "$check_status"
