#!/usr/bin/env bash
# Issue 14's peers runner: peerd over TCP (sends batched through io_uring, and with
# --no-batched-sends) against Redis, NATS, Bun and the blocking-TCP floors, with the same
# loadgen scenarios in one sitting (echo at 1 and 64 connections, fan-out 1 -> 100 with
# evenly spaced publishes and batched FANOUT_BATCH (8) to a write, idle connections), and the
# side-by-side table with issue 14's targets as ratios (results/summarize-peers.py ->
# OUT_DIR/summary.md). The floor is the echo floor for echo and the fan-out floor (a write
# of each publish to every subscriber, nothing else) for both fan-outs.
#
#   results/run-peers.sh [OUT_DIR]      (default results/peers)
#
# It installs what is missing: Debian's redis-server and nats-server (as root), Bun from
# bench-peers/package-lock.json (npm ci). The machinery (pinning, quiet-machine check, one
# fresh server per scenario) is results/run-websocket.sh's; the rates and repetitions are its
# variables (ECHO1_RATE, ECHO64_RATE, FANOUT_RATE, FANOUT_BATCH, IDLE_CONNS, DUR, REPS,
# SCENARIOS). About 7 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export SERVERS=${SERVERS:-"peerd-tcp peerd-tcp-sendmsg redis nats bun floor"}
export SUMMARY=results/summarize-peers.py
# The batched fan-out is issue 14's second send pattern; run-websocket.sh leaves it out by
# default.
export SCENARIOS=${SCENARIOS:-"echo1 echo64 fanout fanout-batched idle"}
exec results/run-websocket.sh "${1:-results/peers}"
