#!/usr/bin/env python3
"""benches/standby.py — a warm standby of a whole fleet (docs/benchmarks.md §11).

    python3 benches/standby.py                          # N = 10,000 on moto, 100 active tenants, 120 s
    python3 benches/standby.py --tenants 1000 --window 60 --idle 60
    python3 benches/standby.py --tenants 100000 --storage file --window 0   # start-up, idle, RSS only

One machine runs everything: a moto_server (S3 on 127.0.0.1) or a local folder as the
storage, a `litefleet daemon` primary with `[change_log] enabled` over N tenant databases
(<GUID>.db, one small row each), and a `litefleet standby` with its own folder of copies.

  1. the primary starts and replicates every tenant (waits until it is quiet);
  2. the standby starts: the time until every tenant is `following`, its peak RSS;
  3. active window (--window s): a separate writer commits one row per second (--rate)
     to tenants picked round-robin among --active of them; each row holds its commit
     time. A poller opens each written tenant's *copy* read-only and records when the
     row becomes readable there: lag = visible − commit, p50/p99/max;
  4. idle window (--idle s, after --settle s): nothing is written; the standby's own
     request counters (GET /api/standby: replica LISTs, GETs, change-log requests)
     give its requests per hour for the whole idle fleet and per tenant-hour; its CPU
     seconds and RSS at the end.

Environment: LITEFLEET [/var/tmp/litefleet-target/release/litefleet], MOTO_SERVER
[.venv/bin/moto_server], BENCH_TMP [a temp dir under /var/tmp, removed at exit unless
BENCH_KEEP=1].
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet  # noqa: E402  (make_tenants, proc_stats, Moto, free_port, wait_quiet, log)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITEFLEET = os.environ.get("LITEFLEET", "/var/tmp/litefleet-target/release/litefleet")


def api(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def pct(vals, p):
    if not vals:
        return None
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(round((len(vals) - 1) * p)))]


def storage_toml(args, work, moto):
    if args.storage == "s3":
        return (f'[storage]\nurl = "s3://bench"\nendpoint = "{moto.endpoint}"\nregion = "us-east-1"\n'
                f'force_path_style = true\naccess_key_id = "test"\nsecret_access_key = "test"\n')
    return f'[storage]\nurl = "file://{os.path.join(work, "replicas")}"\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10000)
    ap.add_argument("--active", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1.0, help="commits per second, all active tenants together")
    ap.add_argument("--window", type=int, default=120)
    ap.add_argument("--settle", type=int, default=40)
    ap.add_argument("--idle", type=int, default=120)
    ap.add_argument("--storage", choices=["s3", "file"], default="s3")
    ap.add_argument("--poll", type=float, default=0.02, help="how often the lag poller looks at a copy")
    args = ap.parse_args()

    work = os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="litefleet-standby-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    procs = []
    moto = None
    try:
        clients = os.path.join(work, "clients")
        copies = os.path.join(work, "standby")
        fleet.log(f"making {args.tenants} tenants in {clients}")
        fleet.make_tenants(clients, args.tenants)
        if args.storage == "s3":
            moto = fleet.Moto(work)
        store = storage_toml(args, work, moto)
        pport, sport = fleet.free_port(), fleet.free_port()
        primary_cfg = os.path.join(work, "primary.toml")
        with open(primary_cfg, "w") as f:
            f.write(f'[[watch]]\ndir = "{clients}"\n\n{store}\n[replication]\nstate_dir = "{work}/state"\n\n'
                    f'[change_log]\nenabled = true\n\n[http]\nlisten = "127.0.0.1:{pport}"\n')
        standby_cfg = os.path.join(work, "standby.toml")
        with open(standby_cfg, "w") as f:
            f.write(f'{store}\n[standby]\ndir = "{copies}"\n\n[http]\nlisten = "127.0.0.1:{sport}"\n')

        t0 = time.time()
        plog = open(os.path.join(work, "primary.log"), "w")
        primary = subprocess.Popen([LITEFLEET, "daemon", "--config", primary_cfg], stdout=subprocess.DEVNULL, stderr=plog)
        procs.append(primary)
        fleet.wait_quiet(primary, 1800, below=0.05, window=5)
        fleet.log(f"primary replicated {args.tenants} tenants and went quiet in {time.time() - t0:.1f} s")

        slog = open(os.path.join(work, "standby.log"), "w")
        t0 = time.time()
        standby = subprocess.Popen([LITEFLEET, "standby", "--config", standby_cfg], stdout=subprocess.DEVNULL, stderr=slog)
        procs.append(standby)
        following = 0
        while time.time() - t0 < 3600:
            try:
                following = api(sport, "/api/standby")["following"]
            except Exception:
                following = 0
            if following >= args.tenants:
                break
            time.sleep(0.5)
        start_s = time.time() - t0
        st = fleet.proc_stats(standby.pid)
        fleet.log(f"standby: {following} tenants following after {start_s:.1f} s, peak RSS {st['hwm_mb']:.0f} MB, CPU {st['cpu']:.1f} s")
        result = {"tenants": args.tenants, "storage": args.storage, "standby_start_s": round(start_s, 1),
                  "standby_start_cpu_s": round(st["cpu"], 1), "standby_start_peak_rss_mb": round(st["hwm_mb"])}

        if args.window > 0:
            ids = [str(uuid.UUID(int=i + 1)) for i in range(args.active)]
            for i in ids:  # the table of timestamps, created before the window
                c = sqlite3.connect(os.path.join(clients, f"{i}.db"), timeout=30)
                c.execute("create table if not exists lag(id integer primary key, at real)")
                c.commit()
                c.close()
            time.sleep(5)
            pending = {}  # (tenant, rowid) -> commit time
            lags = []
            lock = threading.Lock()
            done = threading.Event()

            def poller():
                while not done.is_set() or pending:
                    with lock:
                        items = list(pending.items())
                    for (tid, rowid), at in items:
                        try:
                            c = sqlite3.connect(f"file:{os.path.join(copies, tid + '.db')}?mode=ro", uri=True, timeout=5)
                            seen = c.execute("select 1 from lag where id = ?", (rowid,)).fetchone()
                            c.close()
                        except sqlite3.Error:
                            seen = None
                        if seen:
                            with lock:
                                pending.pop((tid, rowid), None)
                                lags.append(time.time() - at)
                    if done.is_set() and time.time() - end > 60:
                        break
                    time.sleep(args.poll)

            cpu0 = fleet.proc_stats(standby.pid)["cpu"]
            th = threading.Thread(target=poller, daemon=True)
            th.start()
            conns = {i: sqlite3.connect(os.path.join(clients, f"{i}.db"), timeout=30) for i in ids}
            n = 0
            start = time.time()
            end = start + args.window
            while time.time() < end:
                tid = ids[n % len(ids)]
                c = conns[tid]
                cur = c.execute("insert into lag(at) values (?)", (time.time(),))
                c.commit()
                with lock:
                    pending[(tid, cur.lastrowid)] = time.time()
                n += 1
                time.sleep(max(0.0, start + n / args.rate - time.time()))
            done.set()
            th.join(timeout=90)
            for c in conns.values():
                c.close()
            cpu = fleet.proc_stats(standby.pid)["cpu"] - cpu0
            result.update({"commits": n, "visible": len(lags), "never_visible": len(pending),
                           "lag_p50_s": round(pct(lags, 0.5), 3) if lags else None,
                           "lag_p99_s": round(pct(lags, 0.99), 3) if lags else None,
                           "lag_max_s": round(max(lags), 3) if lags else None,
                           "standby_cpu_active_s_per_min": round(cpu / args.window * 60, 2)})
            fleet.log(f"active: {result}")

        time.sleep(args.settle)
        a0, c0 = api(sport, "/api/standby"), fleet.proc_stats(standby.pid)["cpu"]
        p0 = fleet.proc_stats(primary.pid)["cpu"]
        time.sleep(args.idle)
        a1, st = api(sport, "/api/standby"), fleet.proc_stats(standby.pid)
        pst = fleet.proc_stats(primary.pid)
        hours = args.idle / 3600
        reqs = {k: a1[k] - a0[k] for k in ("lists", "gets", "puts", "logRequests")}
        total = sum(reqs.values())
        result.update({"idle_requests": reqs, "idle_requests_per_hour": round(total / hours),
                       "idle_requests_per_tenant_hour": round(total / hours / args.tenants, 4),
                       "idle_cpu_percent": round((st["cpu"] - c0) / args.idle * 100, 2),
                       "idle_rss_mb": round(st["rss_mb"]), "peak_rss_mb": round(st["hwm_mb"]),
                       "scans": a1["scans"],
                       # The primary over the same fleet, same window: the budget to compare with.
                       "primary_idle_rss_mb": round(pst["rss_mb"]), "primary_peak_rss_mb": round(pst["hwm_mb"]),
                       "primary_idle_cpu_percent": round((pst["cpu"] - p0) / args.idle * 100, 2)})
        fleet.log(f"idle: {result}")
        print(json.dumps(result, indent=1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
        if moto:
            moto.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
