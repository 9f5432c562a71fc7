"""Turns bench/run's raw results into BENCHMARKS.md (on stdout).

Usage: report.py RESULTS RUNS SECONDS BIG_ROOMS IDLE_SOCKETS WRK_THREADS WRK_CONNECTIONS COMMAND
RESULTS has one line per measurement: `key value...` (several lines per key, one per run).
"""

import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone

(results_path, runs, duration, big_rooms, idle, wrk_threads, wrk_connections,
 command) = sys.argv[1:9]
big_rooms, idle = int(big_rooms), int(idle)
here = os.path.dirname(os.path.abspath(__file__))

series = defaultdict(list)  # key -> one list of floats per run
raw_lines = []
with open(results_path) as f:
    for line in f:
        raw_lines.append(line.rstrip("\n"))
        key, *values = line.split()
        if values:
            series[key].append([float(v) for v in values])


def col(key, i=0):
    return [v[i] for v in series.get(key, []) if len(v) > i]


def med(key, i=0):
    values = col(key, i)
    return statistics.median(values) if values else float("nan")


def fmt(key, i=0, digits=0):
    values = col(key, i)
    if not values:
        return "not measured"
    m, lo, hi = statistics.median(values), min(values), max(values)
    if len(values) == 1:
        return f"{m:,.{digits}f}"
    return f"{m:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def ratio(a, b):
    return a / b if b and a == a and b == b else float("nan")


def r2(x):
    return "n/a" if x != x else f"{x:.2f}"


def goal(value, op, target, text=None):
    if value != value:
        return f"{text or op + ' ' + str(target)}: not measured"
    met = value >= target if op == ">=" else value <= target
    return f"{text or op + ' ' + str(target)}: **{'met' if met else 'missed'}**"


def errors(key, i):
    total = int(sum(col(key, i)))
    return f" ({total:,} errors)" if total else ""


def version(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        lines = (out.stdout + out.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"
    except Exception:
        return "unknown"


cpu = "unknown"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
with open("/proc/meminfo") as f:
    mem_gib = int(f.readline().split()[1]) / 1024 / 1024

uptime_start = os.environ.get("BENCH_UPTIME_START", "").strip()
uptime_end = os.environ.get("BENCH_UPTIME_END", "").strip()


def load1(uptime):
    try:
        return float(uptime.split("load average:")[1].split(",")[0])
    except Exception:
        return float("nan")


ncpu = os.cpu_count() or 1
# Only the load before the run says whether other work shared the machine: by the end, the
# load average is mostly this run's own servers and clients.
load_before = load1(uptime_start)

out = []
w = out.append
w("# Benchmarks\n")
if load_before > ncpu * 0.75:
    w(f"> **This run shared the machine with other work**: the load average was "
      f"{load_before:.2f} on {ncpu} CPUs when it started (`uptime` below). Absolute figures "
      f"are low and noisy; ratios between cases measured minutes apart carry that noise too. "
      f"Run `bench/run` on a quiet machine for figures to quote.\n")
w(f"Produced by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in "
  f"{int(os.environ.get('BENCH_ELAPSED', '0')) // 60} min. The command installs what it needs "
  "(wrk, redis-server, janus, node/npm with apt-get when missing; the PeerJS server with "
  "`npm ci` in bench/peerjs), builds in release mode, starts every server on 127.0.0.1 on free "
  "ports (Redis instances of its own), measures, stops them all, and writes this file.\n")
w(f"Every case ran {runs} times ({duration} s each unless said otherwise). A figure is the "
  "median with (min–max) over the runs; each ratio compares medians measured in this same run, "
  "on this machine, with the same load tool and client. Load clients share the cores with the "
  "servers.\n")
w("## Machine\n")
w(f"- {ncpu} CPUs (`nproc`): {cpu}; {mem_gib:.1f} GiB RAM; Linux {platform.release()}")
w(f"- `uptime` at the start: `{uptime_start}`")
w(f"- `uptime` at the end (this run's own servers and clients included): `{uptime_end}`")
peer_version = version('node -p "require(process.argv[1]).version" '
                       + here + "/peerjs/node_modules/peer/package.json")
w(f"- {version('rustc --version')}; {version('wrk -v')}; "
  f"{version('janus --version')}; node {version('node --version')}; "
  f"peer (PeerJS server) {peer_version}; {version('redis-server --version')}\n")

goals = []  # (goal text, ratio text, verdict)


def track(text, value, op, target):
    if value != value:
        verdict = "not measured"
    else:
        verdict = "**met**" if (value >= target if op == ">=" else value <= target) else "**missed**"
    goals.append((text, r2(value), verdict))
    return goal(value, op, target, text=f"{op.replace('>=', '≥').replace('<=', '≤')} {target}")


# --- REST ---
w(f"## 1. REST (wrk -t{wrk_threads} -c{wrk_connections} -d{duration}s)\n")
w("The bound is bench/bound_http.rs: a bare actix-web handler that parses the same JSON body, "
  "makes a UUID and answers a room object of the same fields and size (POST), or a fixed room "
  "object (GET). Convene checks the API key, signs a room token, starts the room's actor and, "
  "with Redis, writes the room through before answering. *CPU per request* is the user+system "
  "time the server process used during the run (/proc/PID/stat) divided by the requests served, "
  "plus, after the +, its Redis's; it is steadier than requests/s on a shared machine, and the "
  "*per-core ratio* compares it with the bound's (bound's CPU per request ÷ this one's).\n")
w("| case | requests/s | CPU µs per request | ratio (requests/s) | per-core ratio | goal |")
w("| --- | --- | --- | --- | --- | --- |")


def cpu_cell(key, i, j=None):
    text = fmt(key, i, 1)
    if j is not None and col(key, j) and med(key, j) > 0:
        text += f" + {fmt(key, j, 1)}"
    return text


def cpu_total(key, i, j=None):
    extra = med(key, j) if j is not None and col(key, j) else 0
    return med(key, i) + extra


def rest_line(label, key, ref, ref_label, goal_text=None, target=None):
    r = ratio(med(key), med(ref))
    per_core = ratio(cpu_total(ref, 2, 3), cpu_total(key, 2, 3))
    g = track(goal_text, r, ">=", target) if goal_text else ""
    w(f"| {label} | {fmt(key)}{errors(key, 1)} | {cpu_cell(key, 2, 3)} | {r2(r)} of {ref_label} | "
      f"{r2(per_core)} of {ref_label} | {g} |")


w(f"| bound: bare actix-web POST | {fmt('rest.create.bound')} | {cpu_cell('rest.create.bound', 2)} | 1 (reference for create) | 1 | |")
rest_line("create, Redis store (write-through)", "rest.create.redis", "rest.create.bound", "the bound's POST",
          "create with Redis vs the bound POST", 0.40)
rest_line("create, in-memory store", "rest.create.memory", "rest.create.bound", "the bound's POST")
w(f"| bound: bare actix-web GET | {fmt('rest.fetch.bound')} | {cpu_cell('rest.fetch.bound', 2)} | 1 (reference for fetch and list) | 1 | |")
rest_line("fetch one room, in-memory store", "rest.fetch.memory", "rest.fetch.bound", "the bound's GET",
          "fetch (in-memory store) vs the bound GET", 0.80)
rest_line("fetch one room, Redis store", "rest.fetch.redis", "rest.fetch.bound", "the bound's GET",
          "fetch (Redis store) vs the bound GET", 0.80)
rest_line("list page of 25, in-memory store", "rest.list.memory", "rest.fetch.bound", "the bound's GET")
rest_line("list page of 25, Redis store", "rest.list.redis", "rest.fetch.bound", "the bound's GET")
w("")
rooms_at_end = med("rest.rooms_at_end.redis")
if rooms_at_end == rooms_at_end:
    w(f"The list pages ran after the creates, on stores holding about {rooms_at_end:,.0f} rooms.\n")

# --- Rooms against Janus ---
w(f"## 2. Room create+destroy cycles against Janus ({duration} s)\n")
w("One client (bench/rooms_load.rs) for both: N workers over HTTP/1.1 keep-alive, each looping "
  "create-then-destroy. Janus 1.1 (Debian) runs from a private configuration with only the "
  "videoroom plugin and the HTTP transport on 127.0.0.1 (admin API, event handlers and loggers "
  "off); its workers each hold a session and a videoroom handle made before the clock starts, "
  "and send `create` then `destroy` messages. Convene: `POST /api/realtime/room` then "
  "`DELETE /api/realtime/room/{id}`. CPU per cycle: the server's (+ its Redis's), as above; "
  "the per-core ratio is Janus's CPU per cycle ÷ Convene's.\n")
w("| concurrency | server | cycles/s | p50 ms | p99 ms | CPU µs per cycle | ratio (cycles/s) | per-core ratio | goal |")
w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for c in (16, 64):
    jk = f"rooms.janus.{c}"
    w(f"| {c} | Janus videoroom | {fmt(jk)}{errors(jk, 3)} | {fmt(jk, 1, 2)} | {fmt(jk, 2, 2)} | "
      f"{cpu_cell(jk, 4)} | 1 (reference) | 1 | |")
    for target, label in (("redis", "Convene, Redis store"), ("memory", "Convene, in-memory store")):
        k = f"rooms.{target}.{c}"
        r = ratio(med(k), med(jk))
        per_core = ratio(cpu_total(jk, 4), cpu_total(k, 4, 5))
        g = track(f"create+delete with Redis vs Janus, concurrency {c}", r, ">=", 3) if target == "redis" else ""
        w(f"| {c} | {label} | {fmt(k)}{errors(k, 3)} | {fmt(k, 1, 2)} | {fmt(k, 2, 2)} | "
          f"{cpu_cell(k, 4, 5)} | {r2(r)}× Janus | {r2(per_core)}× Janus | {g} |")
w("")

# --- Relay ---
w(f"## 3. Signaling relay ({duration} s)\n")
w("One client (bench/ws_load.rs, tokio-tungstenite, 4 KiB read buffer) for all three servers: "
  "sockets in pairs, each keeping 4 messages of ~1 KB in flight to its partner and answering "
  "every message it receives with a new one. Convene: one room per pair, `signal {to, data}` "
  "relayed as `signal {from, data}`. PeerJS server (npm `peer`): `OFFER {dst, payload}` relayed "
  "with `src`. Bound: bench/bare_relay.rs, a bare tokio-tungstenite relay between the two "
  "sockets of a pair. Latency is from send to receipt of each message. CPU per message: the "
  "server's over the measured window (set-up excluded).\n")
w("| sockets | server | messages/s | p50 ms | p99 ms | CPU µs per message | ratio (messages/s) | goal |")
w("| --- | --- | --- | --- | --- | --- | --- | --- |")
for n in (200, 2000):
    bare, pj = med(f"relay.bare.{n}"), med(f"relay.peerjs.{n}")
    cells = lambda k: f"{fmt(k)} | {fmt(k, 1, 2)} | {fmt(k, 2, 2)} | {fmt(k, 3, 2)}"
    w(f"| {n:,} | bound: bare Rust relay | {cells(f'relay.bare.{n}')} | 1 (reference) | |")
    r = ratio(med(f"relay.peerjs.{n}"), bare)
    w(f"| {n:,} | PeerJS server | {cells(f'relay.peerjs.{n}')} | {r2(r)} of the bare relay | |")
    rb = ratio(med(f"relay.convene.{n}"), bare)
    rp = ratio(med(f"relay.convene.{n}"), pj)
    g = ""
    if n == 2000:
        g = (f"{track('relay at 2,000 sockets vs PeerJS', rp, '>=', 2)} (vs PeerJS); "
             f"{track('relay at 2,000 sockets vs the bare relay', rb, '>=', 0.70)} (vs bare)")
    w(f"| {n:,} | Convene | {cells(f'relay.convene.{n}')} | {r2(rb)} of the bare relay; {r2(rp)}× PeerJS | {g} |")
w("")

# --- Idle ---
w(f"## 4a. Scale: {idle:,} idle sockets\n")
w(f"Each server starts fresh; the client opens {idle:,} sockets, 32 pairs at a time (Convene: "
  "creates a room per pair and joins both; PeerJS: waits for `OPEN`), then holds them. Memory "
  "is the server's VmRSS (/proc/PID/status) 2 s after the last join, minus its VmRSS before, "
  f"divided by {idle:,}.\n")
w("| measure | Convene | PeerJS server | bare relay | Convene / PeerJS | Convene / bare | goal |")
w("| --- | --- | --- | --- | --- | --- | --- |")
c, p, b = (med(f"idle.{t}.seconds") for t in ("convene", "peerjs", "bare"))
w(f"| time to open (Convene: and join) {idle:,} sockets, s | {fmt('idle.convene.seconds', digits=2)} | "
  f"{fmt('idle.peerjs.seconds', digits=2)} | {fmt('idle.bare.seconds', digits=2)} | {r2(ratio(c, p))} | {r2(ratio(c, b))} | |")
c, p, b = (med(f"idle.{t}.bytes_per_socket") for t in ("convene", "peerjs", "bare"))
w(f"| RSS per idle socket (Convene: joined participant), bytes | {fmt('idle.convene.bytes_per_socket')} | "
  f"{fmt('idle.peerjs.bytes_per_socket')} | {fmt('idle.bare.bytes_per_socket')} | {r2(ratio(c, p))} | "
  f"{r2(ratio(c, b))} | {track('memory per idle participant vs PeerJS per socket', ratio(c, p), '<=', 1)} |")
w("")

# --- List ---
w(f"## 4b. Scale: 1,000 and {big_rooms:,} rooms in Redis: start-up, memory, list pages, cold fetches\n")
w("Rooms are written straight into a fresh Redis in the store's layout (`convene:room:{id}`, "
  "and the members `{creationTime:013}|{id}` of `convene:rooms` and `convene:rooms:expiry`), "
  "then Convene starts on it. Rooms are activated on first use, so start-up restores nothing "
  "(start-up time is from the process start to `listening on`, polled every 0.1 s; RSS is "
  "measured right after it); the same is measured with an empty Redis. Latency: wrk with one "
  f"connection, one request at a time, {duration} s per run; the deep page is the page after "
  "the middle room (a paging token made for it). A cold fetch is a room's first use: each "
  "request asks for a room not used before (store read, actor start, token signed). Records "
  "written this way carry no token, so each listed or activated room gets a token signed on "
  "the way out, as after a secret rotation.\n")
w(f"| measure | empty Redis | 1,000 rooms | {big_rooms:,} rooms | ratio ({big_rooms:,} / empty or 1,000) | goal |")
w("| --- | --- | --- | --- | --- | --- |")
for what, label in (("first_page_ms", "first page of 25"), ("deep_page_ms", "deep page of 25 (token)")):
    for i, q in ((0, "p50"), (1, "p99")):
        a, bb = med(f"list.{what}.1000", i), med(f"list.{what}.{big_rooms}", i)
        r = ratio(bb, a)
        g = track(f"list {label} {q} at {big_rooms:,} vs 1,000 rooms", r, "<=", 1.5) if i == 0 else ""
        w(f"| {label}, {q} ms | | {fmt(f'list.{what}.1000', i, 3)} | {fmt(f'list.{what}.{big_rooms}', i, 3)} | {r2(r)} | {g} |")
for i, q in ((0, "p50"), (1, "p99")):
    v = med(f"list.cold_fetch_ms.{big_rooms}", i)
    g = track(f"cold fetch p99 ms over Redis, {big_rooms:,} rooms stored", v, "<=", 2) if i == 1 else ""
    w(f"| cold fetch (first use), {q} ms | | | {fmt(f'list.cold_fetch_ms.{big_rooms}', i, 3)} | | {g} |")
e, bb = med("list.startup_seconds.0"), med(f"list.startup_seconds.{big_rooms}")
g = track(f"start-up s with {big_rooms:,} rooms stored", bb, "<", 1)
w(f"| start-up, s | {fmt('list.startup_seconds.0', digits=2)} | {fmt('list.startup_seconds.1000', digits=2)} | {fmt(f'list.startup_seconds.{big_rooms}', digits=2)} | {r2(ratio(bb, e))} | {g} |")
e, bb = med("list.rss_mb.0"), med(f"list.rss_mb.{big_rooms}")
g = track(f"RSS with {big_rooms:,} rooms stored vs an empty Redis", ratio(bb, e), "<=", 1.2)
w(f"| Convene RSS after start-up, MB | {fmt('list.rss_mb.0', digits=0)} | {fmt('list.rss_mb.1000', digits=0)} | {fmt(f'list.rss_mb.{big_rooms}', digits=0)} | {r2(ratio(bb, e))} | {g} |")
for key, label, digits in (("redis_rss_mb", "Redis RSS after the fill, MB", 0),
                           ("fill_seconds", "fill (Lua script in batches of 100,000), s", 2)):
    a, bb = med(f"list.{key}.1000"), med(f"list.{key}.{big_rooms}")
    w(f"| {label} | | {fmt(f'list.{key}.1000', digits=digits)} | {fmt(f'list.{key}.{big_rooms}', digits=digits)} | {r2(ratio(bb, a))} | |")
w("")

# --- SFU ---
sfu_counts = [int(n) for n in os.environ.get("SFU_SUBSCRIBERS", "1 10 50").split()]
w(f"## 5. SFU forwarding: one publisher to N subscribers ({duration} s)\n")
w("One load client (bench/sfu_load.rs) holds every peer: a str0m peer connection per "
  "participant, each on a thread and a UDP socket of its own on 127.0.0.1, negotiated through "
  "Convene's signaling as the SDK does (`signal` to `sfu`). The publisher sends synthetic Opus "
  "(80-byte frames, 50 packets/s) and VP8 at 30 fps (2,000-byte delta frames, a 20,000-byte "
  "keyframe every 3 s and on every keyframe request), about a 640×360 camera at ~600 kbit/s; "
  "each subscriber receives both tracks. The window starts once every subscriber has "
  "received audio and a video keyframe, plus 1 s. *Forwarded packets* are the RTP datagrams "
  "(media and retransmissions) that reached the subscribers' sockets; *delivered* is that "
  "÷ (packets published × N). *CPU per forwarded packet* is the server process's user+system "
  "time over the window (/proc/PID/stat) ÷ forwarded packets. With 1 % loss each subscriber "
  "drops 1 % of the datagrams it receives (at random, once connected), so NACKs "
  "(`convene_sfu_nacks_total`) and retransmissions show. A fresh server for every run; the "
  "client shares the two cores with it (it decrypts every packet the subscribers get).\n")
w("| subscribers | loss | forwarded packets/s | CPU µs per forwarded packet | published packets/s | delivered | NACKs/s | video fps per subscriber |")
w("| --- | --- | --- | --- | --- | --- | --- | --- |")
for n in sfu_counts:
    for loss in (0, 1):
        k = f"sfu.{n}.{loss}"
        delivered = ratio(med(k), med(k, 2) * n)
        w(f"| {n} | {loss} % | {fmt(k)} | {fmt(k, 1, 2)} | {fmt(k, 2)} | {r2(delivered)} | "
          f"{fmt(k, 3, 1)} | {fmt(k, 4, 1)} |")
w("")

# --- SFU against Janus ---
sfuj = [sc.split(":") for sc in os.environ.get(
    "SFU_JANUS_SCENARIOS", "fanout:50 fanout:100 fanout:200 room:20").split()]
if any(k.startswith("sfujanus.") for k in series):
    w(f"## 7. SFU side by side with Janus videoroom ({duration} s)\n")
    w("One client (bench/sfu_compare.rs, peers and media of bench/sfu_peer.rs) for both: a str0m "
      "peer connection per participant, each on a thread and a UDP socket of its own, sending the same synthetic media as §5 with a stamp in every frame (publisher, "
      "sequence number, send time). Convene: signaling WebSocket. Janus 1.1 (Debian, the private "
      "configuration of §2): videoroom over the HTTP API, a session per participant kept alive by "
      "its long poll; publishers `join` + `configure` (offer → answer), subscribers `join` with "
      "`streams` (Janus offers) + `start` (answer); full ICE both ways. *fanout N*: one publisher, "
      "N subscribers. *room N*: N participants each publishing and receiving the N−1 others "
      "(Convene: one peer connection each; Janus: a publisher and a subscriber handle each). "
      "Everything runs in a network namespace of its own: Janus gathers no candidates on "
      "loopback interfaces, so it gets a veth end with 127.0.0.2, and the peers bind 127.0.0.2 "
      "(Convene listens on 127.0.0.1 there). *Forwarded packets/s*: RTP datagrams that reached receivers' sockets. *CPU µs per packet*: "
      "the server process's user+system time over the window ÷ forwarded packets. *Delay*: per "
      "frame, from the publisher's write to the receiver's str0m handing out the whole frame "
      "(one process, one clock; the client's own scheduling on the shared cores is in it). "
      "*Loss*: frames that never reached a receiver's application, after retransmissions. With "
      "1 % loss receivers drop 1 % of the datagrams they receive. A fresh server for every run; "
      "Convene and Janus back to back for each line pair. *UDP drops/s*: datagrams the kernel "
      "dropped for a full socket receive buffer (/proc/net/udp), on the server's sockets + on "
      "the client's: a process that fell behind.\n")
    w("| scenario | loss | server | forwarded packets/s | CPU µs per packet | delay p50 ms | delay p99 ms | frames lost % | Mbit/s received | video fps per stream | UDP drops/s (server + client) | CPU/packet vs Janus (≤ 0.8) | packets/s vs Janus | p50 / p99 vs Janus (≤ 1) |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode, n in sfuj:
        for loss in (0, 1):
            jk, ck = f"sfujanus.{mode}{n}.{loss}.janus", f"sfujanus.{mode}{n}.{loss}.convene"
            label = f"1 → {n}" if mode == "fanout" else f"room of {n}"
            for k, server in ((jk, "Janus videoroom"), (ck, "Convene")):
                cells = (f"{fmt(k)} | {fmt(k, 1, 2)} | {fmt(k, 2, 2)} | {fmt(k, 3, 2)} | "
                         f"{fmt(k, 4, 3)} | {fmt(k, 5, 1)} | {fmt(k, 7, 1)} | {fmt(k, 8)} + {fmt(k, 9)}")
                if k == jk:
                    w(f"| {label} | {loss} % | {server} | {cells} | 1 | 1 | 1 |")
                    continue
                cpu_r = ratio(med(ck, 1), med(jk, 1))
                pps_r = ratio(med(ck), med(jk))
                p50_r, p99_r = ratio(med(ck, 2), med(jk, 2)), ratio(med(ck, 3), med(jk, 3))
                g_cpu = track(f"SFU CPU per packet vs Janus, {label}, {loss} % loss", cpu_r, "<=", 0.8)
                g_pps = r2(pps_r)
                if loss == 1:
                    g_pps += f" ({track(f'SFU packets/s at 1 % loss vs Janus, {label}', pps_r, '>=', 1.25)})"
                g_p50 = track(f"SFU delay p50 vs Janus, {label}, {loss} % loss", p50_r, "<=", 1)
                g_p99 = track(f"SFU delay p99 vs Janus, {label}, {loss} % loss", p99_r, "<=", 1)
                w(f"| {label} | {loss} % | {server} | {cells} | {r2(cpu_r)} ({g_cpu}) | {g_pps} | "
                  f"{r2(p50_r)} ({g_p50}) / {r2(p99_r)} ({g_p99}) |")
    w("")

# --- SFU capacity against Janus ---
caps = [sc.split(":") for sc in os.environ.get(
    "SFU_CAPACITY", "fanout:100,150,200,250,300,400 room:10,15,20,25,30").split()]
if any(k.startswith("sfucap.") for k in series):
    w(f"## 7b. SFU capacity against Janus videoroom ({duration} s a step, 1 % loss)\n")
    w("The client, media and namespace of §7; receivers drop 1 % of the datagrams they receive. "
      "The number of receivers rises step by step (*fanout N*: one publisher to N; *room N*: N "
      "participants each publishing to the others), the two servers back to back at each step; "
      "a server's ramp ends at the first step where more than 1 % of frames are lost (1 % loss "
      "alone costs about 0.6 %: audio is not retransmitted). *Capacity*: the most packets/s "
      "forwarded at a step that held; ≥ when the last step held too (the ramp, or the client on "
      "the same 2 CPUs, ended first).\n")
    w("| ramp | step | server | forwarded packets/s | frames lost % | CPU µs per packet | delay p50 ms | delay p99 ms | UDP drops/s (server + client) | held |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode, steps in caps:
        best = {}
        for n in steps.split(","):
            for target, server in (("convene", "Convene"), ("janus", "Janus videoroom")):
                k = f"sfucap.{mode}.{n}.{target}"
                if k not in series:
                    continue
                held = med(k, 4) <= 1
                if held:
                    best[target] = (max(best.get(target, (0, n))[0], med(k)), n)
                w(f"| {mode} | {n} | {server} | {fmt(k)} | {fmt(k, 4, 3)} | {fmt(k, 1, 2)} | "
                  f"{fmt(k, 2, 2)} | {fmt(k, 3, 2)} | {fmt(k, 8)} + {fmt(k, 9)} | "
                  f"{'yes' if held else '**no**'} |")
        last = steps.split(",")[-1]
        def cap(target):
            if target not in best:
                return None, "none held"
            open_ended = best[target][1] == last
            return best[target][0], ("≥ " if open_ended else "") + f"{best[target][0]:,.0f}"
        (cv, ct), (jv, jt) = cap("convene"), cap("janus")
        r = ratio(cv, jv) if cv and jv else float("nan")
        verdict = track(f"SFU packets/s at 1 % loss (capacity) vs Janus, {mode}", r, ">=", 1.25)
        w(f"| **{mode}: capacity** | | Convene {ct} · Janus {jt} | ratio {r2(r)} ({verdict}) "
          f"| | | | | | |")
    w("")

# --- A conference with simulcast (issue 13) ---
conf_sizes = os.environ.get("SFU_CONFERENCE_SIZES", "50").split()
if any(k.startswith("sfuconf.") for k in series):
    w(f"## 7c. A conference with simulcast: one SFU room, every participant publishing and subscribing ({duration} s)\n")
    w("bench_sfu_compare's `conference N` against Convene (Janus's videoroom has no layer "
      "selection driven by element sizes, so no comparison): N str0m peers, each publishing VP8 "
      "in three simulcast layers (q 320×180 15 fps ~142 kbit/s, h 640×360 30 fps ~451 kbit/s, "
      "f 1280×720 30 fps ~1.37 Mbit/s, a keyframe every 3 s, on a PLI of that layer and on "
      "resume), honouring the server's `layers` (paused layers are not sent); 3 participants "
      "send Opus (20 ms, with an audio level of speech), the others are muted. Each shows one "
      "speaker at 1280×720 (participant 0; participant 0 shows participant 1), 8 thumbnails at "
      "320×180 (the next 8 participants) and nobody else (0×0), told in `views` as they join. "
      "After every receiver has what it shows, plus 15 s (layer switches, and the downlink "
      "estimates cut by the loss of the joins growing back), the window is measured. *At layer*: "
      "video frames received from shown publishers that are of the layer the view asks for "
      "(f for the large one, q for thumbnails), all pairs and the worst (subscriber, publisher) "
      "pair. *Lost*: video frames that never reached the receiver's application, all pairs and "
      "the worst. *Hidden frames*: video frames received from publishers not shown (goal 0). "
      "*Published fps q/h/f*: frames the publishers wrote per layer, all together. CPU in % of "
      "one core; the client (every peer) shares the same 2 CPUs with the server. *Set-up*: "
      "joins one after the other until every receiver has what it shows; *largest SDP*: the "
      "largest signaling message a peer sent (Convene refuses one over "
      "`signaling_max_frame_bytes`, 256 KiB by default).\n")
    w("| participants | loss | forwarded packets/s | server CPU µs per packet | server CPU % | client CPU % | at layer % (worst pair) | video lost % (worst pair) | audio lost % | pairs without video | hidden frames | Mbit/s per subscriber | fps large / thumbnail | published packets/s | published fps q / h / f | delay p50 / p99 ms | UDP drops/s (server + client) | set-up s | largest SDP bytes |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in conf_sizes:
        for loss in (0, 1):
            k = f"sfuconf.{n}.{loss}"
            if k not in series:
                continue
            w(f"| {n} | {loss} % | {fmt(k)} | {fmt(k, 1, 2)} | {fmt(k, 2)} | {fmt(k, 3)} | "
              f"{fmt(k, 9, 2)} ({fmt(k, 10, 1)}) | {fmt(k, 6, 3)} ({fmt(k, 7, 2)}) | {fmt(k, 8, 3)} | "
              f"{fmt(k, 11)} | {fmt(k, 12)} | {fmt(k, 13, 2)} | {fmt(k, 14, 1)} / {fmt(k, 15, 1)} | "
              f"{fmt(k, 16)} | {fmt(k, 17)} / {fmt(k, 18)} / {fmt(k, 19)} | {fmt(k, 4, 2)} / {fmt(k, 5, 2)} | "
              f"{fmt(k, 20)} + {fmt(k, 21)} | {fmt(k, 22, 1)} | {fmt(k, 23)} |")
    w("")

# --- Signaling across nodes (issue 14) ---
if any(k.startswith("crossnode.") for k in series):
    pairs = os.environ.get("CROSS_NODE_PAIRS", "100")
    rate = os.environ.get("CROSS_NODE_RATE", "25")
    w(f"## 8. Signaling across nodes: relays through the bridge against relays on one node ({duration} s a window)\n")
    w(f"Three Convene nodes with `CONVENE_CLUSTER=1` on one private Redis (docs/cluster.md), one "
      f"client (bench/cross_node.rs): {pairs} pairs of sockets in each layout, a room per pair, "
      "the room's owner read from its lease. *same*: both sockets on the owner; *edge*: both "
      "on one other node (which relays between them itself, no bus); *mixed*: one on the owner, "
      "one on another node (every relay crosses the bus once); *cross*: one on each of the two "
      "other nodes (every relay crosses the bus twice, edge → owner → the other edge). Round after round each layout in turn (the order "
      f"rotating) has its sockets send `signal {{to, data}}` with ~1 KB of data at {rate} "
      "messages/s each (fixed rate, ticks spread), the others joined and silent; latency is one "
      "way, send to receipt. CPU: user + system of all four processes (three nodes and "
      "redis-server) per relayed message; Redis commands from `INFO commandstats` (those that "
      "scripts run included). Both have "
      "the background measured in a silent window first (every socket joined: heartbeats, "
      "lease renewals) taken off; the gross CPU keeps it. *lost*: sent but not received within 1 s "
      "after the senders stopped. Ratios are per round (layouts "
      "measured seconds apart), median (min–max) over the rounds.\n")
    LAYOUTS = ("same", "edge", "mixed", "cross")
    idle = series.get("crossnode.idle", [])
    if idle:
        w(f"Background (silent window): {idle[0][1]:,.0f} µs of CPU per second over the four "
          f"processes, {idle[0][2]:,.1f} Redis commands per second.\n")
    w("| layout | messages/s | p50 ms | p99 ms | CPU µs per message | gross CPU µs per message | "
      "of which redis-server | Redis commands per message | PUBLISH per message | lost | CPU / same | "
      "p50 − same (ms) |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    by_round = {layout: {v[0]: v for v in series.get(f"crossnode.{layout}", [])}
                for layout in LAYOUTS}

    def paired(layout, f):
        return [f(v, by_round["same"][r]) for r, v in by_round[layout].items() if r in by_round["same"]]

    def spread(values, digits):
        if not values:
            return "n/a", float("nan")
        m = statistics.median(values)
        if len(values) == 1:
            return f"{m:,.{digits}f}", m
        return f"{m:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})", m

    verdicts = []
    for layout in LAYOUTS:
        k = f"crossnode.{layout}"
        if k not in series:
            continue
        lost = int(sum(col(k, 7)))
        if layout in ("same", "edge"):
            # No Redis command: not one PUBLISH, and the net count of all commands within
            # the background's variation (a few commands over a window: ±0.05 a message).
            cmds = med(k, 5)
            what = "on the owner" if layout == "same" else "on one node that is not the owner"
            verdicts.append((f"relay between two sockets {what}: no Redis command",
                             f"{cmds:.3f} commands, {med(k, 6):.3f} PUBLISH per message",
                             "**met**" if med(k, 6) == 0 and abs(cmds) < 0.05 else "**missed**"))
        if layout == "same":
            cpu_r, p50_d = "1 (reference)", "0 (reference)"
        elif layout == "edge":
            cpu_r, _ = spread(paired(layout, lambda v, s: ratio(v[4], s[4])), 2)
            p50_d, _ = spread(paired(layout, lambda v, s: v[2] - s[2]), 3)
        else:
            cpu_r, cpu_m = spread(paired(layout, lambda v, s: ratio(v[4], s[4])), 2)
            p50_d, p50_m = spread(paired(layout, lambda v, s: v[2] - s[2]), 3)
            verdicts.append((f"{layout} relay: CPU ≤ 2× same-node", r2(cpu_m),
                             "**met**" if cpu_m <= 2 else "**missed**"))
            verdicts.append((f"{layout} relay: p50 ≤ same-node + 1 ms", f"+{p50_m:.3f} ms",
                             "**met**" if p50_m <= 1 else "**missed**"))
        w(f"| {layout} | {fmt(k, 1)} | {fmt(k, 2, 3)} | {fmt(k, 3, 3)} | {fmt(k, 4, 2)} | "
          f"{fmt(k, 8, 2)} | {fmt(k, 10, 2)} | {fmt(k, 5, 3)} | {fmt(k, 6, 3)} | {lost:,} | {cpu_r} | {p50_d} |")
    w("")
    w("| goal (issue 14) | measured | verdict |")
    w("| --- | --- | --- |")
    for text, value, verdict in verdicts:
        w(f"| {text} | {value} | {verdict} |")
    w("")

# --- Goals ---
w("## Goals (issue 6)\n")
w("| goal | ratio | verdict |")
w("| --- | --- | --- |")
for text, value, verdict in goals:
    w(f"| {text} | {value} | {verdict} |")
w("")

analysis = os.path.join(here, "analysis.md")
if os.path.exists(analysis):
    with open(analysis) as f:
        w(f.read().rstrip() + "\n")

w("## Raw results\n")
w("<details><summary>One line per run: key, then the values (see bench/run)</summary>\n")
w("```")
out.extend(raw_lines)
w("```")
w("</details>")
print("\n".join(out))
