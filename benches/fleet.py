#!/usr/bin/env python3
"""benches/fleet.py — the fleet at scale: litefleet vs Litestream 0.5.17 directory mode.

    python3 benches/fleet.py                        # N = 100, 1000 for both tools, 10000 for litefleet
    python3 benches/fleet.py --tenants 1000 --idle 120 --s3
    python3 benches/fleet.py --tenants 100000 --tools litefleet
    python3 benches/fleet.py --active                # lag under sporadic writers (N = 1000, 20 tx/s, 120 s)
    python3 benches/fleet.py --tenants 100,1000 --json out.json   # results for benches/plot.py

For each tool and each N, side by side on the same machine:
  1. N existing tenant databases (<GUID>.db, WAL mode, one table, one small row; made
     once per N and copied) in one folder;
  2. start-up: the tool starts; the clock stops when every tenant has at least one LTX
     file in its replica (polled with os.scandir); peak RSS (VmHWM) so far;
  3. idle: nothing is written for --idle seconds (default 60), after --settle seconds
     (default 35: past litefleet's idle_after of 30 s); CPU seconds (utime+stime from
     /proc/<pid>/stat), RSS, open file descriptors and threads at the end;
  4. with --s3, replicas go to a moto_server on 127.0.0.1 instead of a folder, and the
     S3 requests the tool sends during the idle window are counted from moto's access
     log and reported per tenant-hour. --short-levels gives both tools compaction levels
     of 5 s and 10 s so the start-up's compactions are done before the window opens.

--active (docs/benchmarks.md §5): instead of start-up/idle, a separate writer process commits
one small row per transaction to random tenants at --rate per second for --window seconds,
after a warm-up commit per tenant and the settle; per commit the lag from the end of COMMIT
to an L0 file with a higher max TXID in that tenant's replica (polled every --poll s), and
the tool's CPU seconds per MB of L0 files shipped in the window.

--restart (docs/benchmarks.md, restarts): after start-up and a quiet period, the daemon is
stopped with SIGINT and started again, then killed with SIGKILL and started again; after each
restart it is left until quiet, and the LTX files it wrote (by level) and the storage requests
it sent (opendal's operation counts from its /metrics) are reported. --tools litefleet,before
compares with LITEFLEET_BEFORE (an older build) in the same run.

--register (with moto): a daemon on an empty folder replicating to moto_server; one new tenant
database appears; the S3 requests from then until its first upload (and until quiet) are counted
from moto's access log.

--leftover-wal: one tenant imports 2,400 pages in one transaction and keeps its connection
(the WAL stays); how long until the daemon holds no connection and no timer, then its CPU and
syncs over --idle seconds.

Both tools use their defaults (litefleet: config.example.toml's values; Litestream:
`dbs: - dir/pattern/watch: true`). Prints Markdown tables for docs/benchmarks.md.

Environment: LITEFLEET [/var/tmp/litefleet-target/release/litefleet], LITESTREAM
[.venv/bin/litestream or /work/scratch/venv17/bin/litestream], MOTO_SERVER [.venv/bin/moto_server],
BENCH_TMP [a temp dir under /var/tmp, removed at exit unless BENCH_KEEP=1].
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def first(*paths):
    for p in paths:
        if p and os.path.exists(p):
            return p
    return None


LITEFLEET = os.environ.get("LITEFLEET", "/var/tmp/litefleet-target/release/litefleet")
LITEFLEET_BEFORE = os.environ.get("LITEFLEET_BEFORE")
LITESTREAM = first(os.environ.get("LITESTREAM"), os.path.join(ROOT, ".venv/bin/litestream"),
                   "/work/scratch/venv17/bin/litestream")
MOTO = first(os.environ.get("MOTO_SERVER"), os.path.join(ROOT, ".venv/bin/moto_server"),
             "/work/scratch/venv17/bin/moto_server")


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


def make_tenants(folder, n):
    os.makedirs(folder, exist_ok=True)
    template = os.path.join(folder, ".template.db")
    c = sqlite3.connect(template)
    c.execute("pragma journal_mode=wal")
    c.execute("create table t(id integer primary key, v blob)")
    c.execute("insert into t(v) values (randomblob(100))")
    c.commit()
    c.execute("pragma wal_checkpoint(truncate)")
    c.close()
    data = open(template, "rb").read()
    os.remove(template)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(template + suffix):
            os.remove(template + suffix)
    for i in range(n):
        with open(os.path.join(folder, f"{uuid.UUID(int=i + 1)}.db"), "wb") as f:
            f.write(data)


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.strip()
    kb = lambda k: int(st.get(k, "0 kB").split()[0])
    return {
        "cpu": cpu,
        "rss_mb": kb("VmRSS") / 1024,
        "hwm_mb": kb("VmHWM") / 1024,
        "threads": int(st.get("Threads", "0")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def count_replicated_anywhere(replica_root):
    """Replicas (any prefix, e.g. a hook's tenants/<xx>/<GUID>) holding an L0 file."""
    done = 0
    for dirpath, dirnames, filenames in os.walk(replica_root):
        if dirpath.endswith(os.path.join("ltx", "0")) and any(f.endswith(".ltx") for f in filenames):
            done += 1
    return done


def count_replicated(replica_root, layout, n_expected, ids):
    """Tenants with at least one LTX file. layout: 'ours' (databases/<id>/ltx/0) or
    'litestream' (<id>.db/ltx/0)."""
    done = 0
    for i in ids:
        d = os.path.join(replica_root, "databases", i, "ltx", "0") if layout == "ours" \
            else os.path.join(replica_root, f"{i}.db", "ltx", "0")
        try:
            with os.scandir(d) as it:
                if any(e.name.endswith(".ltx") for e in it):
                    done += 1
        except FileNotFoundError:
            pass
    return done


def stop_tool(proc, errlog):
    """SIGINT (both tools make their final sync), SIGKILL after 120 s; closes its log."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    errlog.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Moto:
    def __init__(self, workdir):
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"moto-{self.port}.log")
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        req = urllib.request.Request(f"{self.endpoint}/bench", method="PUT")
        urllib.request.urlopen(req, timeout=10)

    def requests(self):
        with open(self.log_path) as f:
            return sum(1 for line in f if '"' in line and "HTTP/1.1" in line)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def prepare_tool(tool, n, tenants_src, work, args, moto):
    """Copies the tenants into a fresh run folder and writes the tool's config (its defaults).
    With --interval, both tools' sync (and Litestream's monitor) interval is set to it.
    Returns (cmd, env, run, clients, replicas, layout, ids, errlog)."""
    run = os.path.join(work, f"{tool}-{n}")
    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(run)
    clients = os.path.join(run, "clients")
    shutil.copytree(tenants_src, clients)
    replicas = os.path.join(run, "replicas")
    ids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if moto:
        env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"})
    errlog = open(os.path.join(run, "stderr.log"), "w")
    args.http_port = free_port()
    if tool in ("litefleet", "before"):
        cfg = os.path.join(run, "fleet.toml")
        storage = (f'url = "s3://bench/{tool}-{n}"\nendpoint = "{moto.endpoint}"\nforce_path_style = true\n'
                   if moto else f'url = "file://{replicas}"\n')
        with open(cfg, "w") as f:
            hook = f'[hooks]\nmodule = "{os.path.abspath(args.hook)}"\n' if args.hook else ""
            lifecycle = '[lifecycle]\nlevels = ["5s", "10s"]\nl0_retention = "5s"\n' if args.short_levels else ""
            if args.rescan:
                lifecycle += f'[fleet]\nrescan_interval = "{args.rescan}"\n'
            sync = f'sync_interval = "{args.interval}"\n' if getattr(args, "interval", None) else ""
            f.write(f'[[watch]]\ndir = "{clients}"\n[storage]\n{storage}[replication]\nstate_dir = "{run}/state"\n{sync}'
                    f'[http]\nlisten = "127.0.0.1:{args.http_port}"\n[log]\nlevel = "warn"\n{lifecycle}{hook}')
        cmd = [LITEFLEET if tool == "litefleet" else LITEFLEET_BEFORE, "daemon", "--config", cfg]
        layout = "ours"
    else:
        cfg = os.path.join(run, "litestream.yml")
        replica = (f"      type: s3\n      bucket: bench\n      path: {tool}-{n}\n      endpoint: {moto.endpoint}\n"
                   f"      region: us-east-1\n      force-path-style: true\n" if moto
                   else f"      type: file\n      path: {replicas}\n")
        with open(cfg, "w") as f:
            levels = "levels:\n  - interval: 5s\n  - interval: 10s\nl0-retention: 5s\n" if args.short_levels else ""
            iv = getattr(args, "interval", None)
            monitor = f"    monitor-interval: {iv}\n" if iv else ""
            if iv:
                replica += f"      sync-interval: {iv}\n"
            f.write(f"logging:\n  level: warn\n{levels}dbs:\n  - dir: {clients}\n    pattern: \"*.db\"\n    watch: true\n"
                    f"{monitor}    replica:\n{replica}")
        cmd = [LITESTREAM, "replicate", "-config", cfg]
        layout = "litestream"
    return cmd, env, run, clients, replicas, layout, ids, errlog


def run_tool(tool, n, tenants_src, work, args, moto):
    cmd, env, run, clients, replicas, layout, ids, errlog = prepare_tool(tool, n, tenants_src, work, args, moto)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=run)
    result = {"tool": tool, "n": n}
    deadline = t0 + args.startup_timeout
    done = 0
    peak = 0.0
    while time.time() < deadline:
        if proc.poll() is not None:
            result["crashed"] = f"exited {proc.returncode} during start-up"
            break
        try:
            peak = max(peak, proc_stats(proc.pid)["hwm_mb"])
        except FileNotFoundError:
            pass
        if moto:
            # Start-up is timed on a folder; with S3 only the idle window is measured.
            done = n
            break
        if tool == "litefleet" and args.hook:
            done = count_replicated_anywhere(replicas)
        else:
            done = count_replicated(replicas, layout, n, ids)
        if done >= n:
            break
        time.sleep((0.25 if n <= 10000 else 2) * (4 if args.hook else 1))
    result["startup_s"] = time.time() - t0 if done >= n and not moto else None
    result["replicated"] = done
    if "crashed" not in result:
        time.sleep(args.settle)
        if args.quiet and not moto and proc.poll() is None:
            # One-time work after start-up (every new replica's first compactions) is not
            # idle: wait until the tool used under 2 % of a core over 10 s, or --settle-max.
            limit = time.time() + args.settle_max
            while time.time() < limit and proc.poll() is None:
                c0 = proc_stats(proc.pid)["cpu"]
                time.sleep(10)
                if (proc_stats(proc.pid)["cpu"] - c0) / 10 < 0.02:
                    break
            result["settled_s"] = time.time() - t0
        if moto:
            # Start-up through S3 takes a while (moto is a Python server): wait until the
            # tool has sent nothing for 20 s, or --settle-max, so the window measures idle.
            quiet_since, last = time.time(), moto.requests()
            limit = time.time() + args.settle_max
            while time.time() < limit and time.time() - quiet_since < 20:
                time.sleep(2)
                now_reqs = moto.requests()
                if now_reqs != last:
                    quiet_since, last = time.time(), now_reqs
            result["settled_s"] = time.time() - t0
        if proc.poll() is not None:
            result["crashed"] = f"exited {proc.returncode}"
        else:
            s0 = proc_stats(proc.pid)
            r0 = moto.requests() if moto else None
            time.sleep(args.idle)
            s1 = proc_stats(proc.pid)
            if proc.poll() is not None:
                # an exited child not yet reaped still has a /proc entry (a zombie: no RSS, no fds)
                result["crashed"] = f"exited {proc.returncode} during the idle window"
            result.update({
                "idle_cpu_s": s1["cpu"] - s0["cpu"],
                "idle_cpu_pct": 100 * (s1["cpu"] - s0["cpu"]) / args.idle,
                "rss_mb": s1["rss_mb"],
                "peak_rss_mb": max(peak, s1["hwm_mb"]),
                "fds": s1["fds"],
                "threads": s1["threads"],
            })
            if moto:
                reqs = moto.requests() - r0
                result["idle_requests"] = reqs
                result["req_per_tenant_hour"] = reqs / n * 3600 / args.idle
    result["loadavg"] = open("/proc/loadavg").read().split()[:3]
    stop_tool(proc, errlog)
    if "crashed" in result:
        with open(os.path.join(run, "stderr.log"), errors="replace") as f:
            result["stderr_tail"] = f.read()[-2000:]
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(run, ignore_errors=True)
    return result


# ------------------------------------------------------------------ --active
# The writer: a separate Python process holding one connection per tenant (an application
# server with a connection per database). It reads a tenant index per line, commits one row
# of --row-bytes random bytes in that tenant's database and answers
# "<index> <start> <end>" (time.monotonic(), which is CLOCK_MONOTONIC: comparable across
# processes on Linux).
WRITER_PY = r"""
import os, sqlite3, sys, time
folder, n, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import uuid
conns = []
for i in range(n):
    c = sqlite3.connect(os.path.join(folder, f"{uuid.UUID(int=i + 1)}.db"), isolation_level=None, timeout=10)
    c.execute("pragma synchronous=NORMAL")
    c.execute("select count(*) from t").fetchone()
    conns.append(c)
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    i = int(line)
    c = conns[i]
    t0 = time.monotonic()
    c.execute("begin immediate")
    c.execute("insert into t(v) values (randomblob(?))", (nbytes,))
    c.execute("commit")
    t1 = time.monotonic()
    sys.stdout.write(f"{i} {t0:.6f} {t1:.6f}\n"); sys.stdout.flush()
"""


def l0_dir(replicas, layout, tenant_id):
    return (os.path.join(replicas, "databases", tenant_id, "ltx", "0") if layout == "ours"
            else os.path.join(replicas, f"{tenant_id}.db", "ltx", "0"))


def l0_files(d):
    """{name: size} of the LTX files (<min>-<max>.ltx, 16 hex digits each) in one L0 folder."""
    out = {}
    try:
        with os.scandir(d) as it:
            for e in it:
                if len(e.name) == 37 and e.name.endswith(".ltx"):
                    out[e.name] = e
    except FileNotFoundError:
        pass
    return out


def max_txid(d):
    m = 0
    try:
        with os.scandir(d) as it:
            for e in it:
                if len(e.name) == 37 and e.name.endswith(".ltx"):
                    m = max(m, int(e.name[17:33], 16))
    except FileNotFoundError:
        pass
    return m


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def run_active(tool, n, tenants_src, work, args):
    """Steady sporadic writes over n tenants: lag from commit to the replica's L0 file."""
    import random
    import select
    cmd, env, run, clients, replicas, layout, ids, errlog = prepare_tool(tool, n, tenants_src, work, args, None)
    dirs = [l0_dir(replicas, layout, i) for i in ids]
    result = {"mode": "active", "tool": tool, "n": n, "rate": args.rate, "window_s": args.window,
              "row_bytes": args.row_bytes, "interval": args.interval or "default",
              "wal": "empty at start" if args.fresh_wal else "warmed"}
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=run)
    writer = None
    try:
        while count_replicated(replicas, layout, n, ids) < n:
            if proc.poll() is not None or time.time() - t0 > args.startup_timeout:
                result["crashed"] = f"start-up failed (exit {proc.poll()})"
                return result
            time.sleep(0.25)
        result["startup_s"] = time.time() - t0
        writer = subprocess.Popen([sys.executable, "-c", WRITER_PY, clients, str(n), str(args.row_bytes)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        if writer.stdout.readline().strip() != b"ready":
            result["crashed"] = "writer failed to start"
            return result
        log(f"{tool}: all {n} replicated after {result['startup_s']:.1f} s")
        if not args.fresh_wal:
            # Warm-up: one commit per tenant, so every WAL holds frames before the window (the
            # steady state of a database in use). Without it the window's first commit to each
            # tenant goes into an empty WAL, a different case (see --fresh-wal).
            base = [max_txid(d) for d in dirs]
            writer.stdin.write("".join(f"{k}\n" for k in range(n)).encode())
            for _ in range(n):
                writer.stdout.readline()
            pending = set(range(n))
            limit = time.time() + 120
            while pending and time.time() < limit:
                pending = {k for k in pending if max_txid(dirs[k]) <= base[k]}
                time.sleep(0.1)
            if pending:
                result["crashed"] = f"warm-up: {len(pending)} tenants not replicated after 120 s"
                return result
            log(f"{tool}: warm-up commit to every tenant replicated")
        log(f"{tool}: settling {args.settle:.0f} s")
        time.sleep(args.settle)
        before = {}
        for k, d in enumerate(dirs):
            for name in l0_files(d):
                before[(k, name)] = True
        rng = random.Random(7)
        interval = 1.0 / args.rate
        # tenant index -> [baseline max TXID, commit end (monotonic) or None, sent at, gap]; gap = time since
        # this tenant's previous commit was sent (a tool may rate-limit a tenant that ships often)
        outstanding = {}
        last_sent = {}
        lags, missed, commit_s = [], 0, []  # lags: (lag, gap)
        buf = b""
        wfd = writer.stdout.fileno()
        cpu0 = proc_stats(proc.pid)["cpu"]
        self0 = os.times()
        start = time.monotonic()
        end = start + args.window
        next_send, next_poll = start, start
        sent = 0
        while True:
            now = time.monotonic()
            if now >= end and not outstanding:
                break
            if now > end + args.lag_timeout:
                missed += len(outstanding)
                break
            if now < end and now >= next_send:
                k = rng.randrange(n)
                while k in outstanding:
                    k = rng.randrange(n)
                outstanding[k] = [max_txid(dirs[k]), None, now, now - last_sent.get(k, -1e9)]
                last_sent[k] = now
                writer.stdin.write(f"{k}\n".encode())
                sent += 1
                next_send += interval
            r, _, _ = select.select([wfd], [], [], 0)
            if r:
                chunk = os.read(wfd, 65536)
                if not chunk:
                    result["crashed"] = "writer exited"
                    return result
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    k, a, b = line.split()
                    outstanding[int(k)][1] = float(b)
                    commit_s.append(float(b) - float(a))
            if now >= next_poll:
                for k in [k for k, o in outstanding.items() if o[1] is not None]:
                    if max_txid(dirs[k]) > outstanding[k][0]:
                        o = outstanding.pop(k)
                        lags.append((time.monotonic() - o[1], o[3]))
                    elif time.monotonic() - outstanding[k][1] > args.lag_timeout:
                        outstanding.pop(k)
                        missed += 1
                next_poll = now + args.poll
            wake = min(next_poll, next_send if now < end else next_poll)
            time.sleep(max(0.0, min(0.005, wake - time.monotonic())))
        elapsed = time.monotonic() - start
        st = proc_stats(proc.pid)
        self1 = os.times()
        shipped, files = 0, 0
        for k, d in enumerate(dirs):
            for name, e in l0_files(d).items():
                if (k, name) not in before:
                    shipped += e.stat().st_size
                    files += 1
        lags.sort()
        commit_s.sort()
        gap_cut = args.gap_cut
        cold = [lag for lag, gap in lags if gap >= gap_cut]
        result["raw_lags"] = [[round(lag, 4), round(min(gap, 1e6), 3)] for lag, gap in lags]  # (lag, gap) for the JSON
        lags = [lag for lag, _ in lags]
        cpu = st["cpu"] - cpu0
        result.update({
            "commits": sent, "replicated": len(lags), "missed": missed, "elapsed_s": elapsed,
            "lag_p50_s": pct(lags, 50), "lag_p99_s": pct(lags, 99), "lag_max_s": lags[-1] if lags else None,
            "lag_mean_s": sum(lags) / len(lags) if lags else None,
            "gap_cut_s": gap_cut, "n_cold": len(cold), "cold_p50_s": pct(cold, 50), "cold_p99_s": pct(cold, 99),
            "cold_max_s": cold[-1] if cold else None,
            "commit_p99_s": pct(commit_s, 99), "commit_max_s": commit_s[-1] if commit_s else None,
            "cpu_s": cpu, "cpu_pct": 100 * cpu / elapsed, "l0_files": files, "l0_mb": shipped / 1e6,
            "cpu_s_per_mb": cpu / (shipped / 1e6) if shipped else None,
            "cpu_ms_per_commit": 1000 * cpu / sent if sent else None,
            "rss_mb": st["rss_mb"], "peak_rss_mb": st["hwm_mb"],
            "harness_cpu_s": (self1.user + self1.system) - (self0.user + self0.system),
            "loadavg": open("/proc/loadavg").read().split()[:3],
        })
        return result
    finally:
        if writer:
            writer.stdin.close()
            writer.wait(timeout=30)
        stop_tool(proc, errlog)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(run, ignore_errors=True)


# ------------------------------------------------------------------ --restart, --register, --leftover-wal
def metrics(port):
    """(opendal operations by kind, litefleet gauges/counters summed by name) from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120).read().decode()
    ops, sums = {}, {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "opendal_operation_duration_seconds_count":
            m = re.search(r'operation="([^"]+)"', name_labels)
            if m:
                ops[m.group(1)] = ops.get(m.group(1), 0) + v
        elif name.startswith("litefleet_"):
            sums[name] = sums.get(name, 0) + v
    return ops, sums


def ltx_files(replicas):
    """LTX files under a folder replica root, by level."""
    counts = {}
    for dirpath, _, files in os.walk(replicas):
        parent, lvl = os.path.split(dirpath)
        if os.path.basename(parent) == "ltx":
            counts[lvl] = counts.get(lvl, 0) + sum(1 for f in files if f.endswith(".ltx"))
    return counts


def wait_quiet(proc, limit, below=0.02, window=10):
    """Until the process used under `below` of a core over `window` s (or `limit` s passed)."""
    end = time.time() + limit
    while time.time() < end and proc.poll() is None:
        c0 = proc_stats(proc.pid)["cpu"]
        time.sleep(window)
        if proc.poll() is None and (proc_stats(proc.pid)["cpu"] - c0) / window < below:
            return True
    return False


def wait_http(port, limit=120):
    end = time.time() + limit
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return True
        except Exception:
            time.sleep(0.2)
    return False


def run_restart(tool, n, tenants_src, work, args):
    """Start-up, quiet; then SIGINT + start, quiet; then SIGKILL + start, quiet: uploads and requests."""
    cmd, env, run, clients, replicas, layout, ids, errlog = prepare_tool(tool, n, tenants_src, work, args, None)
    result = {"mode": "restart", "tool": tool, "n": n}
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=run)
    try:
        while count_replicated(replicas, layout, n, ids) < n:
            if proc.poll() is not None or time.time() - t0 > args.startup_timeout:
                result["crashed"] = f"start-up failed (exit {proc.poll()})"
                return result
            time.sleep(0.5 if n <= 10000 else 2)
        result["startup_s"] = time.time() - t0
        result["settled"] = wait_quiet(proc, args.settle_max)
        log(f"{tool}: started and quiet after {time.time() - t0:.0f} s")
        for how in ("SIGINT", "SIGKILL"):
            before = ltx_files(replicas)
            if how == "SIGINT":
                stop_tool(proc, errlog)
            else:
                proc.kill()
                proc.wait()
                errlog.close()
            errlog = open(os.path.join(run, "stderr.log"), "a")
            t1 = time.time()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=run)
            wait_http(args.http_port)
            quiet = wait_quiet(proc, args.settle_max)
            ops, sums = metrics(args.http_port)
            after = ltx_files(replicas)
            new = {lvl: after.get(lvl, 0) - before.get(lvl, 0) for lvl in sorted(set(after) | set(before))}
            result[how] = {"new_ltx_files": {k: v for k, v in new.items() if v}, "requests": ops,
                           "files_shipped": sums.get("litefleet_files_shipped_total", 0),
                           "settle_s": time.time() - t1, "quiet": quiet,
                           "cpu_s": proc_stats(proc.pid)["cpu"], "loadavg": open("/proc/loadavg").read().split()[:3]}
            log(f"{tool} after {how}: {result[how]}")
        return result
    finally:
        stop_tool(proc, errlog)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(run, ignore_errors=True)


def moto_requests(moto, start):
    """Requests in moto's access log from line `start` on: [(method, path?query)]."""
    out = []
    with open(moto.log_path) as f:
        for i, line in enumerate(f):
            if i < start:
                continue
            m = re.search(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1.1"', line)
            if m:
                out.append((m.group(1), m.group(2)))
    return out


def classify(method, path):
    if method == "GET" and ("list-type=" in path or "delimiter=" in path or path.rstrip("/").count("/") <= 1 and "?" in path):
        return "LIST"
    return method


def run_register(tool, work, args):
    """One new tenant on a running daemon replicating to moto: its requests before its first upload."""
    moto = Moto(work)
    try:
        src = os.path.join(work, "tenants-empty")
        os.makedirs(src, exist_ok=True)
        cmd, env, run, clients, replicas, layout, ids, errlog = prepare_tool(tool, 0, src, work, args, moto)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=run)
        result = {"mode": "register", "tool": tool}
        try:
            wait_http(args.http_port)
            time.sleep(5)
            start = sum(1 for _ in open(moto.log_path))
            tid = str(uuid.UUID(int=424242))
            db = os.path.join(clients, f"{tid}.db")
            c = sqlite3.connect(db)
            c.execute("pragma journal_mode=wal")
            c.execute("create table t(id integer primary key, v blob)")
            c.execute("insert into t(v) values (randomblob(100))")
            c.commit()
            t0 = time.time()
            first_put = None
            while time.time() - t0 < 60 and first_put is None:
                reqs = [r for r in moto_requests(moto, start) if tid in r[1]]
                puts = [i for i, r in enumerate(reqs) if r[0] == "PUT" and r[1].split("?")[0].endswith(".ltx")]
                if puts:
                    first_put = puts[0]
                time.sleep(0.2)
            time.sleep(args.settle)
            reqs = [r for r in moto_requests(moto, start) if tid in r[1]]
            kinds = lambda rs: {k: sum(1 for r in rs if classify(*r) == k) for k in sorted({classify(*r) for r in rs})}
            result.update({"before_first_upload": kinds(reqs[:first_put] if first_put is not None else reqs),
                           "first_upload_seen": first_put is not None,
                           f"within_{args.settle:.0f}s": kinds(reqs), "requests": reqs,
                           "loadavg": open("/proc/loadavg").read().split()[:3]})
            c.close()
            return result
        finally:
            stop_tool(proc, errlog)
            if os.environ.get("BENCH_KEEP") != "1":
                shutil.rmtree(run, ignore_errors=True)
    finally:
        moto.stop()


LEFTOVER_WRITER = r"""
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("create table if not exists t(v blob)")
c.execute("begin")
c.execute("with recursive n(i) as (select 1 union all select i + 1 from n where i < 2400) "
          "insert into t select randomblob(3900) from n")
c.execute("commit")
sys.stdout.write("done\n"); sys.stdout.flush()
time.sleep(3600)
"""


def run_leftover(tool, work, args):
    """A tenant left with ~2,400 WAL pages after its last write: time to idle, then its cost."""
    src = os.path.join(work, "tenants-empty")
    os.makedirs(src, exist_ok=True)
    cmd, env, run, clients, replicas, layout, ids, errlog = prepare_tool(tool, 0, src, work, args, None)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=run)
    result = {"mode": "leftover-wal", "tool": tool}
    writer = None
    try:
        wait_http(args.http_port)
        db = os.path.join(clients, f"{uuid.UUID(int=77)}.db")
        writer = subprocess.Popen([sys.executable, "-c", LEFTOVER_WRITER, db], stdout=subprocess.PIPE)
        writer.stdout.readline()
        t0 = time.time()
        result["wal_bytes"] = os.path.getsize(db + "-wal")
        idle_at = None
        while time.time() - t0 < args.settle_max:
            _, sums = metrics(args.http_port)
            if sums.get("litefleet_syncs_total", 0) > 0 and sums.get("litefleet_hot_tenants", 1) == 0 \
                    and sums.get("litefleet_scheduled_tenants", 1) == 0:
                idle_at = time.time() - t0
                break
            time.sleep(0.25)
        result["idle_after_last_write_s"] = idle_at
        _, s0 = metrics(args.http_port)
        c0 = proc_stats(proc.pid)["cpu"]
        time.sleep(args.idle)
        _, s1 = metrics(args.http_port)
        c1 = proc_stats(proc.pid)["cpu"]
        result.update({"window_s": args.idle, "syncs_in_window": s1.get("litefleet_syncs_total", 0) - s0.get("litefleet_syncs_total", 0),
                       "cpu_s_in_window": c1 - c0, "cpu_pct": 100 * (c1 - c0) / args.idle,
                       "wal_bytes_after": os.path.getsize(db + "-wal"),
                       "loadavg": open("/proc/loadavg").read().split()[:3]})
        return result
    finally:
        if writer:
            writer.kill()
            writer.wait()
        stop_tool(proc, errlog)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(run, ignore_errors=True)


def print_active(results):
    print("| tool | settings | WAL before the window | N | commits | replicated | lag p50 (ms) | p99 (ms) | max (ms) | CPU (s) "
          "| L0 MB shipped | CPU s per MB | CPU ms per commit | writer commit p99 (ms) "
          "| commits after a quiet gap: n / lag p50 / p99 / max (ms) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ms = lambda v: "—" if v is None else f"{1000 * v:.0f}"
    for r in results:
        if "crashed" in r:
            print(f"| {r['tool']} | {r['interval']} | {r['wal']} | {r['n']} | {r['crashed']} ||||||||||||")
            continue
        print(f"| {r['tool']} | {r['interval']} | {r['wal']} | {r['n']} | {r['commits']} | {r['replicated']} "
              f"| {ms(r['lag_p50_s'])} | {ms(r['lag_p99_s'])} | {ms(r['lag_max_s'])} | {r['cpu_s']:.2f} "
              f"| {r['l0_mb']:.2f} | {fmt(r['cpu_s_per_mb'], '{:.3f}')} | {fmt(r['cpu_ms_per_commit'], '{:.2f}')} "
              f"| {ms(r['commit_p99_s'])} | {r['n_cold']} / {ms(r['cold_p50_s'])} / {ms(r['cold_p99_s'])} "
              f"/ {ms(r['cold_max_s'])} | {' '.join(r['loadavg'])} |")


def machine():
    return {"nproc": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3],
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "kernel": os.uname().release}


def fmt(v, f="{:.2f}"):
    return "—" if v is None else (f.format(v) if isinstance(v, float) else str(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", default=None, help="comma-separated N [100,1000,10000; 1000 with --active]")
    ap.add_argument("--litestream-max", type=int, default=1000, help="largest N given to Litestream")
    ap.add_argument("--tools", default="litefleet,litestream")
    ap.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    ap.add_argument("--settle", type=float, default=35.0, help="wait after start-up before the idle window")
    ap.add_argument("--startup-timeout", type=float, default=900.0)
    ap.add_argument("--settle-max", type=float, default=300.0,
                    help="with --s3: longest wait for the tool to go quiet before the idle window")
    ap.add_argument("--hook", help="litefleet only: a hook module (.wasm) every registration goes through")
    ap.add_argument("--rescan", help="litefleet only: [fleet] rescan_interval (e.g. 5m); default: the daemon's 1m")
    ap.add_argument("--quiet", action="store_true",
                    help="folder: after --settle, wait (up to --settle-max) until the tool is quiet before the idle window")
    ap.add_argument("--s3", action="store_true", help="replicate to moto_server and count idle requests")
    ap.add_argument("--short-levels", action="store_true",
                    help="compaction levels 5s/10s for both tools, so every tenant settles before the idle window "
                         "(with the defaults, L2/L3 compactions of the start-up writes are still due for up to 1 h)")
    ap.add_argument("--active", action="store_true",
                    help="active workload instead of start-up/idle: a writer process commits --rate small "
                         "transactions per second to random tenants for --window seconds; lag to the replica")
    ap.add_argument("--rate", type=float, default=20.0, help="--active: transactions per second, all tenants")
    ap.add_argument("--window", type=float, default=120.0, help="--active: measured window, seconds")
    ap.add_argument("--row-bytes", type=int, default=150, help="--active: random bytes per row (one row per tx)")
    ap.add_argument("--poll", type=float, default=0.01, help="--active: replica poll interval, seconds")
    ap.add_argument("--lag-timeout", type=float, default=30.0, help="--active: a commit not replicated by then is missed")
    ap.add_argument("--interval", help="--active: set both tools' sync interval (and Litestream's monitor-interval), "
                                       "e.g. 100ms; default: each tool's default")
    ap.add_argument("--fresh-wal", action="store_true",
                    help="--active: no warm-up commit, so each tenant's first commit in the window goes into an "
                         "empty WAL (the tenants are created with a truncated WAL)")
    ap.add_argument("--gap-cut", type=float, default=2.0,
                    help="--active: also report the lag of commits to a tenant not written for this long (s)")
    ap.add_argument("--restart", action="store_true",
                    help="stop (SIGINT, then SIGKILL) and restart an idle fleet: LTX files and requests after each restart")
    ap.add_argument("--register", action="store_true",
                    help="with moto: requests a new tenant costs before its first upload")
    ap.add_argument("--leftover-wal", action="store_true",
                    help="a tenant left with a 2,400-page WAL: time to idle, then syncs and CPU over --idle s")
    ap.add_argument("--json", help="also write the results (a list of objects) to this file")
    args = ap.parse_args()
    if args.tenants is None:
        args.tenants = "1000" if args.active else "100,1000,10000"
    tools = args.tools.split(",")
    if "before" in tools and not (LITEFLEET_BEFORE and os.path.exists(LITEFLEET_BEFORE)):
        sys.exit("--tools before needs LITEFLEET_BEFORE (an older litefleet binary)")
    if "litefleet" in tools and not os.path.exists(LITEFLEET):
        log(f"building {LITEFLEET}")
        subprocess.check_call(["cargo", "build", "--release", "--bins"], cwd=ROOT)
    if "litestream" in tools and not LITESTREAM:
        sys.exit("litestream not found: run scripts/test.sh once (it makes .venv) or set LITESTREAM")
    if args.s3 and not MOTO:
        sys.exit("moto_server not found: run scripts/test.sh once (it makes .venv) or set MOTO_SERVER")
    work = os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="litefleet-fleet-", dir="/var/tmp")
    results = []
    if args.register or args.leftover_wal:
        try:
            for tool in tools:
                r = run_register(tool, work, args) if args.register else run_leftover(tool, work, args)
                log({k: v for k, v in r.items() if k != "requests"})
                results.append(r)
        finally:
            if os.environ.get("BENCH_KEEP") != "1":
                shutil.rmtree(work, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"argv": sys.argv[1:], "machine": machine(), "results": results}, f, indent=1)
        print(json.dumps([{k: v for k, v in r.items() if k != "requests"} for r in results], indent=1))
        return
    try:
        for n in [int(x) for x in args.tenants.split(",")]:
            src = os.path.join(work, f"tenants-{n}")
            log(f"making {n} tenant databases")
            make_tenants(src, n)
            for tool in tools:
                if tool == "litestream" and n > args.litestream_max:
                    continue
                moto = Moto(work) if args.s3 and not args.active else None
                try:
                    log(f"{tool}, N = {n}")
                    if args.restart:
                        r = run_restart(tool, n, src, work, args)
                    elif args.active:
                        r = run_active(tool, n, src, work, args)
                    else:
                        r = run_tool(tool, n, src, work, args, moto)
                finally:
                    if moto:
                        moto.stop()
                log({k: v for k, v in r.items() if k != "raw_lags"})
                results.append(r)
            shutil.rmtree(src, ignore_errors=True)
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "machine": machine(), "results": results}, f, indent=1)
    if args.restart:
        print(json.dumps(results, indent=1))
        return
    if args.active:
        print(f"\nactive: {args.rate:g} tx/s over N tenants for {args.window:.0f} s, one {args.row_bytes}-byte row "
              f"per transaction, replica polled every {1000 * args.poll:.0f} ms; quiet gap = the tenant's previous "
              f"commit was at least {args.gap_cut:g} s earlier\n")
        print_active(results)
        return
    print(f"\nidle window {args.idle:.0f} s after {args.settle:.0f} s settle; "
          f"storage {'moto_server (S3)' if args.s3 else 'local folder'}\n")
    print("| tool | N | start-up to all replicated (s) | peak RSS (MB) | idle CPU (s) | idle CPU (% of a core) "
          "| RSS (MB) | fds | threads | idle S3 requests per tenant-hour | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "crashed" in r:
            print(f"| {r['tool']} | {r['n']} | {r['crashed']} (replicated {r['replicated']}) |||||||")
            continue
        print(f"| {r['tool']} | {r['n']} | {fmt(r['startup_s'], '{:.1f}')} | {fmt(r.get('peak_rss_mb'), '{:.0f}')} "
              f"| {fmt(r.get('idle_cpu_s'))} | {fmt(r.get('idle_cpu_pct'))} | {fmt(r.get('rss_mb'), '{:.0f}')} "
              f"| {r.get('fds')} | {r.get('threads')} | {fmt(r.get('req_per_tenant_hour'), '{:.1f}')} "
              f"| {' '.join(r.get('loadavg', []))} |"
              + (f" (window opened {r['settled_s']:.0f} s after start)" if r.get("settled_s") else ""))


if __name__ == "__main__":
    main()
