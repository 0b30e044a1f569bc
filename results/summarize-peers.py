#!/usr/bin/env python3
"""The side-by-side table of results/run-peers.sh and issue 14's targets, as ratios.

Usage: results/summarize-peers.py DIR   (markdown on stdout)
"""
import json
import os
import sys

D = sys.argv[1] if len(sys.argv) > 1 else "results/peers"
SERVERS = ["peerd-tcp", "peerd-tcp-sendmsg", "redis", "nats", "bun", "floor"]


def report(scenario, server):
    path = os.path.join(D, f"{scenario}-{server}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def first_run(scenario, server):
    r = report(scenario, server)
    return r["runs"][0] if r and r.get("runs") else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "×":
        return f"{v:.2f}×"
    return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:,.1f}{unit}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def cpu_us(r):
    per = r.get("per_server_cpu_s")
    return 1e6 / per if per else None


def fanout_columns(scenario):
    """Fan-out's columns; the last two are the server CPU per delivery and its ratio to the
    fan-out floor's in the same scenario (same send pattern)."""
    floor = first_run(scenario, "floor")
    return [
        ("deliveries/s", lambda r: r["achieved_rate"], ""),
        ("p50", lambda r: r["latency"]["p50"], " µs"),
        ("p99", lambda r: r["latency"]["p99"], " µs"),
        ("deliveries per server CPU-s", lambda r: r.get("per_server_cpu_s"), ""),
        ("server CPU per delivery", cpu_us, " µs"),
        ("× the floor's CPU per delivery",
         lambda r: ratio(cpu_us(r), floor and cpu_us(floor)), "×"),
    ]


# Per scenario: the columns, each (title, function of a run -> number, unit).
COLUMNS = {
    "echo1": [
        ("p50", lambda r: r["latency"]["p50"], " µs"),
        ("p99", lambda r: r["latency"]["p99"], " µs"),
        ("p99.9", lambda r: r["latency"]["p99_9"], " µs"),
        ("server CPU per round trip", lambda r: cpu_us(r), " µs"),
    ],
    "echo64": [
        ("p50", lambda r: r["latency"]["p50"], " µs"),
        ("p99", lambda r: r["latency"]["p99"], " µs"),
        ("round trips per server CPU-s", lambda r: r.get("per_server_cpu_s"), ""),
    ],
    "fanout": fanout_columns("fanout"),
    "fanout-batched": fanout_columns("fanout-batched"),
}


def pattern(scenario):
    """The send pattern the reports of `scenario` name ("batched 8 per write"), or None."""
    for s in SERVERS:
        r = first_run(scenario, s)
        if r and r.get("send_pattern"):
            return r["send_pattern"]
    return None


TITLES = {
    "echo1": "Echo, 1 connection, evenly spaced (open loop)",
    "echo64": "Echo, 64 connections, evenly spaced (open loop)",
    "fanout": "Fan-out 1 -> 100, evenly spaced publishes (open loop)",
    # From the reports: the batch size is FANOUT_BATCH's, whatever it was.
    "fanout-batched": f"Fan-out 1 -> 100, publishes {pattern('fanout-batched') or 'batched'} (open loop)",
}


def idle_rss(server):
    r = report("idle", server)
    return (r or {}).get("idle", {}).get("server_rss_per_conn_bytes")


out = []
p = out.append
values = {}
for scenario, cols in COLUMNS.items():
    p(f"### {TITLES[scenario]}")
    p("")
    p("| server | " + " | ".join(c[0] for c in cols) + " |")
    p("|---|" + "---:|" * len(cols))
    for s in SERVERS:
        r = first_run(scenario, s)
        if not r:
            continue
        cells = []
        for title, f, unit in cols:
            v = f(r)
            values[(scenario, s, title)] = v
            cells.append(fmt(v, unit))
        p(f"| {s} | " + " | ".join(cells) + " |")
    p("")
p("### Idle handshaken connections")
p("")
p("| server | server RSS per connection |")
p("|---|---:|")
for s in SERVERS:
    v = idle_rss(s)
    if v is not None:
        values[("idle", s)] = v
        p(f"| {s} | {fmt(v, ' B')} |")
p("")


def row(target, a_name, a, b_name, b, ok):
    x = ratio(a, b)
    verdict = "not measured" if x is None else ("**met**" if ok(x) else "**missed**")
    shown = "-" if x is None else f"{x:.2f}×"
    p(f"| {target} | {a_name} {fmt(a)}, {b_name} {fmt(b)}: {shown} | {verdict} |")


v = values.get
p("### Issue 14's targets (this run)")
p("")
p("| target | measured | verdict |")
p("|---|---|---|")
row("echo 64 connections: >= 1.3× Redis's round trips per server CPU-s",
    "peerd", v(("echo64", "peerd-tcp", "round trips per server CPU-s")),
    "Redis", v(("echo64", "redis", "round trips per server CPU-s")), lambda x: x >= 1.3)
row("echo 1 connection: server CPU per round trip <= Redis's",
    "peerd µs", v(("echo1", "peerd-tcp", "server CPU per round trip")),
    "Redis µs", v(("echo1", "redis", "server CPU per round trip")), lambda x: x <= 1.0)
row("echo 1 connection: p50 within 1.1× the blocking floor",
    "peerd µs", v(("echo1", "peerd-tcp", "p50")),
    "floor µs", v(("echo1", "floor", "p50")), lambda x: x <= 1.1)
row("echo 1 connection: p99.9 within 3× p50",
    "p99.9 µs", v(("echo1", "peerd-tcp", "p99.9")),
    "p50 µs", v(("echo1", "peerd-tcp", "p50")), lambda x: x <= 3.0)
row("fan-out: >= 1.2× Redis's deliveries per server CPU-s (evenly spaced)",
    "peerd", v(("fanout", "peerd-tcp", "deliveries per server CPU-s")),
    "Redis", v(("fanout", "redis", "deliveries per server CPU-s")), lambda x: x >= 1.2)
for sc, how in (("fanout", "evenly spaced"), ("fanout-batched", pattern("fanout-batched") or "batched")):
    row(f"fan-out: server CPU per delivery within 1.1× the fan-out floor's ({how})",
        "peerd µs", v((sc, "peerd-tcp", "server CPU per delivery")),
        "floor µs", v((sc, "floor", "server CPU per delivery")), lambda x: x <= 1.1)
row("idle TCP connection: <= 1 KiB of server RSS",
    "peerd B", v(("idle", "peerd-tcp")), "1 KiB", 1024, lambda x: x <= 1.0)
p("")
p("Not measured by this script: idle WebSocket connections (results/run-websocket.sh has "
  "them), shard scaling (needs a machine with more cores).")
print("\n".join(out))
