#!/usr/bin/env python3
"""Summary tables and the #10 targets from the JSON reports of results/run-websocket.sh.

Usage: results/summarize-websocket.py DIR   (markdown on stdout)
"""
import json
import os
import sys

D = sys.argv[1] if len(sys.argv) > 1 else "results/websocket"
SERVERS = ["peerd-tcp", "peerd-tls", "peerd-ws", "peerd-wss", "bun", "node-ws"]


def load(name, server):
    p = os.path.join(D, f"{name}-{server}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def run0(r):
    return r["runs"][0] if r and r.get("runs") else None


def us(v):
    if v is None:
        return "-"
    return f"{v:,.0f} µs" if v >= 1000 else f"{v:,.1f} µs"


def num(v):
    return "-" if v is None else f"{v:,.0f}"


def spread(r, key):
    s = r.get("spread", {}).get(key)
    if not s:
        return "-"
    f = us if key != "per_server_cpu_s" else num
    return f"{f(s['min'])} / {f(s['median'])} / {f(s['max'])}".replace(" µs /", " /")


def lg(r):
    l = r["loadgen"]
    flag = " (saturated)" if l.get("saturated") and not l.get("spin") else ""
    spin = " (spins by design)" if l.get("spin") else ""
    return f"{100 * l['max_thread_util']:.0f} %{flag}{spin}, lag p99 {us(l['send_lag']['p99'])}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}×"


out = []
p = out.append
env = None
for s in SERVERS:
    for n in ["echo1", "echo64", "fanout", "idle"]:
        r = load(n, s)
        if r and env is None:
            env = r["environment"]
if env:
    p(
        f"Environment: {env.get('cpu_model', '?')}, {env.get('cores', '?')} cores, "
        f"kernel {env.get('kernel', '?')}, VM: {'yes' if (env.get('virtualization') or {}).get('is_vm') else 'no'}, "
        f"peerd commit {env.get('git_commit', '?')}{' (dirty)' if env.get('git_dirty') else ''}."
    )
    p("")

vals = {}

p("### Echo, 1 connection (open loop)")
p("")
p("| server | rate | samples | p50 | p90 | p99 | p99.9 | max | p50 per window (min / median / max) | answers / server CPU-s | loadgen |")
p("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
for s in SERVERS:
    r = run0(load("echo1", s))
    if not r:
        continue
    lat = r["latency"]
    vals[("echo1", s)] = lat["p50"]
    p(
        f"| {s} | {num(r['offered_rate'])}/s | {lat['count']:,} | {us(lat['p50'])} | {us(lat['p90'])} | "
        f"{us(lat['p99'])} | {us(lat['p99_9'])} | {us(lat['max'])} | {spread(r, 'p50')} | "
        f"{num(r.get('per_server_cpu_s'))} | {lg(r)} |"
    )
p("")

p("### Echo, 64 connections (open loop)")
p("")
p("| server | rate | samples | missing | p50 | p99 | answers / server CPU-s | per window (min / median / max) | loadgen |")
p("|---|---:|---:|---:|---:|---:|---:|---|---|")
for s in SERVERS:
    r = run0(load("echo64", s))
    if not r:
        continue
    lat = r["latency"]
    vals[("echo64", s)] = r.get("per_server_cpu_s")
    p(
        f"| {s} | {num(r['offered_rate'])}/s | {lat['count']:,} | {r['missing']} | {us(lat['p50'])} | "
        f"{us(lat['p99'])} | **{num(r.get('per_server_cpu_s'))}** | {spread(r, 'per_server_cpu_s')} | {lg(r)} |"
    )
p("")

p("### Fan-out, 1 publisher -> 100 subscribers (open loop)")
p("")
p("| server | deliveries/s | samples | missing | p50 | p99 | slowest receiver p99 | deliveries / server CPU-s | per window (min / median / max) | loadgen |")
p("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
for s in SERVERS:
    r = run0(load("fanout", s))
    if not r:
        continue
    lat = r["latency"]
    sl = r.get("slowest_receiver") or {}
    vals[("fanout", s)] = r.get("per_server_cpu_s")
    p(
        f"| {s} | {num(r['achieved_rate'])} | {lat['count']:,} | {r['missing']} | {us(lat['p50'])} | "
        f"{us(lat['p99'])} | {us(sl.get('p99'))} | **{num(r.get('per_server_cpu_s'))}** | "
        f"{spread(r, 'per_server_cpu_s')} | {lg(r)} |"
    )
p("")

p("### Idle connections")
p("")
p("| server | connections | server RSS before | held | **RSS per connection** | kernel slab per connection (both ends) | opened in |")
p("|---|---:|---:|---:|---:|---:|---:|")
for s in SERVERS:
    r = load("idle", s)
    if not r or not r.get("idle"):
        continue
    i = r["idle"]
    vals[("idle", s)] = i.get("server_rss_per_conn_bytes")
    kib = lambda b: "-" if b is None else f"{b / 1024:,.0f} KiB"
    p(
        f"| {s} | {i['connected']:,} | {kib(i.get('server_rss_before_bytes'))} | {kib(i.get('server_rss_held_bytes'))} | "
        f"**{num(i.get('server_rss_per_conn_bytes'))} B** | {num(i.get('kernel_slab_per_conn_bytes'))} B | {i['connect_s']:.1f} s |"
    )
p("")

p("### Targets (#10)")
p("")
p("| target | measured | verdict |")
p("|---|---|---|")


def verdict(ok):
    return "-" if ok is None else ("**MET**" if ok else "**MISSED**")


f_ws, f_bun = vals.get(("fanout", "peerd-ws")), vals.get(("fanout", "bun"))
x = ratio(f_ws, f_bun)
p(
    f"| WS fan-out 1->100: deliveries per server CPU-s >= 1.5× Bun's | peerd-ws {num(f_ws)}, Bun {num(f_bun)}: "
    f"{fmt_ratio(x)} | {verdict(None if x is None else x >= 1.5)} |"
)
i_ws, i_tcp, i_bun = vals.get(("idle", "peerd-ws")), vals.get(("idle", "peerd-tcp")), vals.get(("idle", "bun"))
x = ratio(i_ws, i_tcp)
p(
    f"| idle WS connection: server RSS <= 1.25× peerd's idle TCP connection | peerd-ws {num(i_ws)} B, peerd-tcp {num(i_tcp)} B: "
    f"{fmt_ratio(x)} | {verdict(None if x is None else x <= 1.25)} |"
)
p(
    f"| idle WS connection: below Bun's | peerd-ws {num(i_ws)} B, Bun {num(i_bun)} B: {fmt_ratio(ratio(i_ws, i_bun))} | "
    f"{verdict(None if i_ws is None or i_bun is None else i_ws < i_bun)} |"
)
e_ws, e_tcp = vals.get(("echo1", "peerd-ws")), vals.get(("echo1", "peerd-tcp"))
x = ratio(e_ws, e_tcp)
p(
    f"| WS echo, 1 connection: p50 within 1.15× of peerd TCP p50 | peerd-ws {us(e_ws)}, peerd-tcp {us(e_tcp)}: "
    f"{fmt_ratio(x)} | {verdict(None if x is None else x <= 1.15)} |"
)
p("")
p("wss against ws (no target):")
p("")
p("| | ws | wss | wss / ws | tls:// / tcp |")
p("|---|---:|---:|---:|---:|")
p(
    f"| fan-out deliveries per server CPU-s | {num(f_ws)} | {num(vals.get(('fanout', 'peerd-wss')))} | "
    f"{fmt_ratio(ratio(vals.get(('fanout', 'peerd-wss')), f_ws))} | "
    f"{fmt_ratio(ratio(vals.get(('fanout', 'peerd-tls')), vals.get(('fanout', 'peerd-tcp'))))} |"
)
p(
    f"| echo 64 conns, answers per server CPU-s | {num(vals.get(('echo64', 'peerd-ws')))} | {num(vals.get(('echo64', 'peerd-wss')))} | "
    f"{fmt_ratio(ratio(vals.get(('echo64', 'peerd-wss')), vals.get(('echo64', 'peerd-ws'))))} | "
    f"{fmt_ratio(ratio(vals.get(('echo64', 'peerd-tls')), vals.get(('echo64', 'peerd-tcp'))))} |"
)
p(
    f"| idle RSS per connection | {num(i_ws)} B | {num(vals.get(('idle', 'peerd-wss')))} B | "
    f"{fmt_ratio(ratio(vals.get(('idle', 'peerd-wss')), i_ws))} | - |"
)
p(
    f"| echo 1 conn p50 | {us(e_ws)} | {us(vals.get(('echo1', 'peerd-wss')))} | "
    f"{fmt_ratio(ratio(vals.get(('echo1', 'peerd-wss')), e_ws))} | "
    f"{fmt_ratio(ratio(vals.get(('echo1', 'peerd-tls')), e_tcp))} |"
)
print("\n".join(out))
