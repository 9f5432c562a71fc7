"""Turns bench/run's raw results into BENCHMARKS.md (on stdout)."""

import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

results_path, runs, duration, big_rooms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
series = defaultdict(list)  # key -> list of lists of floats (one per run)
with open(results_path) as f:
    for line in f:
        key, *values = line.split()
        if values:
            series[key].append([float(v) for v in values])


def col(key, i=0):
    return [v[i] for v in series.get(key, []) if len(v) > i]


def med(key, i=0):
    values = col(key, i)
    return statistics.median(values) if values else float("nan")


def fmt(key, i=0, unit="", digits=0):
    values = col(key, i)
    if not values:
        return "not measured"
    m, lo, hi = statistics.median(values), min(values), max(values)
    return f"{m:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def ratio(a, b):
    return a / b if b else float("nan")


def goal(value, op, target):
    met = value >= target if op == ">=" else value <= target
    return "**met**" if met else "**missed**"


def version(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:
        return "unknown"


cpu = "unknown"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
with open("/proc/meminfo") as f:
    mem_gb = int(f.readline().split()[1]) / 1024 / 1024

out = []
w = out.append
w("# Benchmarks\n")
w("Produced by `bash bench/run` (it installs wrk and redis-server when missing, builds in release")
w(f"mode, runs every case {runs} times for {duration} s, and writes this file). Each figure is the")
w("median with (min–max); each ratio compares two figures measured in the same run, on the same")
w("machine, with the same load tool.\n")
w("## Machine\n")
w(f"- {os.cpu_count()} CPUs: {cpu}; {mem_gb:.0f} GiB RAM; Linux {platform.release()}")
w(f"- load average when the report was written: {os.getloadavg()[0]:.2f}")
w(f"- {version('rustc --version')}; {version('wrk --version 2>&1 | head -1')}; {version('redis-server --version')}")
w("- load generators and servers share the machine's cores, so absolute numbers are low; ratios are what to read\n")

w("## REST (wrk, 2 threads, 32 connections)\n")
w("| case | requests/s | ratio | goal |")
w("| --- | --- | --- | --- |")
bound_post, bound_get = med("rest.create.bound"), med("rest.fetch.bound")
r = ratio(med("rest.create.redis"), bound_post)
w(f"| bound: bare actix-web POST (parse JSON, uuid, JSON) | {fmt('rest.create.bound')} | 1 | |")
w(f"| create, Redis store (write-through) | {fmt('rest.create.redis')} | {r:.2f} of bound | ≥ 0.40: {goal(r, '>=', 0.40)} |")
r = ratio(med("rest.create.memory"), bound_post)
w(f"| create, in-memory store | {fmt('rest.create.memory')} | {r:.2f} of bound | |")
w(f"| bound: bare actix-web GET | {fmt('rest.fetch.bound')} | 1 | |")
r = ratio(med("rest.fetch.memory"), bound_get)
w(f"| fetch one room | {fmt('rest.fetch.memory')} | {r:.2f} of bound | ≥ 0.80: {goal(r, '>=', 0.80)} |")
r = ratio(med("rest.list.memory"), bound_get)
w(f"| list page of 25, in-memory store | {fmt('rest.list.memory')} | {r:.2f} of bound GET | |")
r = ratio(med("rest.list.redis"), bound_get)
w(f"| list page of 25, Redis store | {fmt('rest.list.redis')} | {r:.2f} of bound GET | |")
w("")

w("## Signaling relay (pairs relaying ~1 KB `signal`s, 4 in flight per socket)\n")
w("| sockets | server | messages/s | p50 ms | p99 ms | ratio | goal |")
w("| --- | --- | --- | --- | --- | --- | --- |")
for n in (200, 2000):
    bare = med(f"relay.bare.{n}")
    w(f"| {n} | bound: bare Rust relay | {fmt(f'relay.bare.{n}')} | {fmt(f'relay.bare.{n}', 1, digits=2)} | {fmt(f'relay.bare.{n}', 2, digits=2)} | 1 | |")
    r = ratio(med(f"relay.convene.{n}"), bare)
    g = f"≥ 0.70: {goal(r, '>=', 0.70)}" if n == 2000 else ""
    w(f"| {n} | Convene | {fmt(f'relay.convene.{n}')} | {fmt(f'relay.convene.{n}', 1, digits=2)} | {fmt(f'relay.convene.{n}', 2, digits=2)} | {r:.2f} of bound | {g} |")
w("")

w("## Scale: 5,000 participants\n")
w("| measure | Convene | bare relay | ratio |")
w("| --- | --- | --- | --- |")
w(f"| time to open (and for Convene create rooms and join) 5,000 sockets, s | {fmt('scale.convene.join_seconds', digits=2)} | {fmt('scale.bare.join_seconds', digits=2)} | {ratio(med('scale.convene.join_seconds'), med('scale.bare.join_seconds')):.2f} |")
w(f"| RSS per idle participant, bytes | {fmt('scale.convene.rss_bytes_per_participant')} | {fmt('scale.bare.rss_bytes_per_participant')} | {ratio(med('scale.convene.rss_bytes_per_participant'), med('scale.bare.rss_bytes_per_participant')):.2f} |")
w("")

w(f"## List pages with 1,000 and {big_rooms:,} rooms in Redis (one connection)\n")
w(f"| measure | 1,000 rooms | {big_rooms:,} rooms | ratio | goal |")
w("| --- | --- | --- | --- | --- |")
for what in ("first_page_ms", "next_page_ms"):
    a, b = med(f"list.{what}.1000"), med(f"list.{what}.{big_rooms}")
    r = ratio(b, a)
    label = "first page, p50 ms" if what == "first_page_ms" else "page after a token, p50 ms"
    w(f"| {label} | {fmt(f'list.{what}.1000', digits=3)} | {fmt(f'list.{what}.{big_rooms}', digits=3)} | {r:.2f} | ≤ 1.5: {goal(r, '<=', 1.5)} |")
w(f"| start-up restore, s | {fmt('list.restore_seconds.1000', digits=2)} | {fmt(f'list.restore_seconds.{big_rooms}', digits=2)} | | |")
w(f"| RSS after restore, MB | {fmt('list.rss_mb.1000')} | {fmt(f'list.rss_mb.{big_rooms}')} | | |")
w("")

w("## Not measured yet\n")
w("- Janus (videoroom create+destroy cycles at concurrency 16 and 64) and the PeerJS server")
w("  (relay at 2,000 sockets, memory per socket) are not part of this run yet: the goals")
w("  \"≥ 3× Janus\", \"≥ 2× PeerJS\" and \"memory per idle participant ≤ PeerJS\" are open.")
print("\n".join(out))
