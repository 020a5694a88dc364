#!/usr/bin/env python3
"""benches/fleet.py — the fleet at scale: litefleet vs Litestream 0.5.17 directory mode.

    python3 benches/fleet.py                        # N = 100, 1000 for both tools, 10000 for litefleet
    python3 benches/fleet.py --tenants 1000 --idle 120 --s3
    python3 benches/fleet.py --tenants 100000 --tools litefleet

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

Both tools use their defaults (litefleet: config.example.toml's values; Litestream:
`dbs: - dir/pattern/watch: true`). Prints Markdown tables for docs/benchmarks.md.

Environment: LITEFLEET [/var/tmp/litefleet-target/release/litefleet], LITESTREAM
[.venv/bin/litestream or /work/scratch/venv17/bin/litestream], MOTO_SERVER [.venv/bin/moto_server],
BENCH_TMP [a temp dir under /var/tmp, removed at exit unless BENCH_KEEP=1].
"""

import argparse
import os
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


def run_tool(tool, n, tenants_src, work, args, moto):
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
    if tool == "litefleet":
        cfg = os.path.join(run, "fleet.toml")
        storage = (f'url = "s3://bench/{tool}-{n}"\nendpoint = "{moto.endpoint}"\nforce_path_style = true\n'
                   if moto else f'url = "file://{replicas}"\n')
        with open(cfg, "w") as f:
            hook = f'[hooks]\nmodule = "{os.path.abspath(args.hook)}"\n' if args.hook else ""
            lifecycle = '[lifecycle]\nlevels = ["5s", "10s"]\nl0_retention = "5s"\n' if args.short_levels else ""
            f.write(f'[[watch]]\ndir = "{clients}"\n[storage]\n{storage}[replication]\nstate_dir = "{run}/state"\n'
                    f'[http]\nlisten = "127.0.0.1:{free_port()}"\n[log]\nlevel = "warn"\n{lifecycle}{hook}')
        cmd = [LITEFLEET, "daemon", "--config", cfg]
        layout = "ours"
    else:
        cfg = os.path.join(run, "litestream.yml")
        replica = (f"      type: s3\n      bucket: bench\n      path: {tool}-{n}\n      endpoint: {moto.endpoint}\n"
                   f"      region: us-east-1\n      force-path-style: true\n" if moto
                   else f"      type: file\n      path: {replicas}\n")
        with open(cfg, "w") as f:
            levels = "levels:\n  - interval: 5s\n  - interval: 10s\nl0-retention: 5s\n" if args.short_levels else ""
            f.write(f"logging:\n  level: warn\n{levels}dbs:\n  - dir: {clients}\n    pattern: \"*.db\"\n    watch: true\n"
                    f"    replica:\n{replica}")
        cmd = [LITESTREAM, "replicate", "-config", cfg]
        layout = "litestream"
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
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    errlog.close()
    shutil.rmtree(run, ignore_errors=True)
    return result


def fmt(v, f="{:.2f}"):
    return "—" if v is None else (f.format(v) if isinstance(v, float) else str(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", default="100,1000,10000", help="comma-separated N")
    ap.add_argument("--litestream-max", type=int, default=1000, help="largest N given to Litestream")
    ap.add_argument("--tools", default="litefleet,litestream")
    ap.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    ap.add_argument("--settle", type=float, default=35.0, help="wait after start-up before the idle window")
    ap.add_argument("--startup-timeout", type=float, default=900.0)
    ap.add_argument("--settle-max", type=float, default=300.0,
                    help="with --s3: longest wait for the tool to go quiet before the idle window")
    ap.add_argument("--hook", help="litefleet only: a hook module (.wasm) every registration goes through")
    ap.add_argument("--s3", action="store_true", help="replicate to moto_server and count idle requests")
    ap.add_argument("--short-levels", action="store_true",
                    help="compaction levels 5s/10s for both tools, so every tenant settles before the idle window "
                         "(with the defaults, L2/L3 compactions of the start-up writes are still due for up to 1 h)")
    args = ap.parse_args()
    tools = args.tools.split(",")
    if "litefleet" in tools and not os.path.exists(LITEFLEET):
        log(f"building {LITEFLEET}")
        subprocess.check_call(["cargo", "build", "--release", "--bins"], cwd=ROOT)
    if "litestream" in tools and not LITESTREAM:
        sys.exit("litestream not found: run scripts/test.sh once (it makes .venv) or set LITESTREAM")
    if args.s3 and not MOTO:
        sys.exit("moto_server not found: run scripts/test.sh once (it makes .venv) or set MOTO_SERVER")
    work = os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="litefleet-fleet-", dir="/var/tmp")
    results = []
    try:
        for n in [int(x) for x in args.tenants.split(",")]:
            src = os.path.join(work, f"tenants-{n}")
            log(f"making {n} tenant databases")
            make_tenants(src, n)
            for tool in tools:
                if tool == "litestream" and n > args.litestream_max:
                    continue
                moto = Moto(work) if args.s3 else None
                try:
                    log(f"{tool}, N = {n}")
                    r = run_tool(tool, n, src, work, args, moto)
                finally:
                    if moto:
                        moto.stop()
                log(r)
                results.append(r)
            shutil.rmtree(src, ignore_errors=True)
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nidle window {args.idle:.0f} s after {args.settle:.0f} s settle; "
          f"storage {'moto_server (S3)' if args.s3 else 'local folder'}\n")
    print("| tool | N | start-up to all replicated (s) | peak RSS (MB) | idle CPU (s) | idle CPU (% of a core) "
          "| RSS (MB) | fds | threads | idle S3 requests per tenant-hour |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "crashed" in r:
            print(f"| {r['tool']} | {r['n']} | {r['crashed']} (replicated {r['replicated']}) |||||||")
            continue
        print(f"| {r['tool']} | {r['n']} | {fmt(r['startup_s'], '{:.1f}')} | {fmt(r.get('peak_rss_mb'), '{:.0f}')} "
              f"| {fmt(r.get('idle_cpu_s'))} | {fmt(r.get('idle_cpu_pct'))} | {fmt(r.get('rss_mb'), '{:.0f}')} "
              f"| {r.get('fds')} | {r.get('threads')} | {fmt(r.get('req_per_tenant_hour'), '{:.1f}')} |"
              + (f" (window opened {r['settled_s']:.0f} s after start)" if r.get("settled_s") else ""))


if __name__ == "__main__":
    main()
