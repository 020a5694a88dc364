#!/usr/bin/env python3
"""benches/restore.py — restore as an operation (issue 14), measured.

    python3 benches/restore.py dr --tenants 10000                 # from a local folder
    python3 benches/restore.py dr --tenants 10000 --s3            # from moto_server on 127.0.0.1
    python3 benches/restore.py large --mb 1024                    # one tenant: API job vs CLI

dr: disaster recovery of N small tenants (fleet.py's tenants: one table, one 100-byte
row, 2 pages each). The tenants exist before `litefleet daemon` starts; it replicates
them (lifecycle off: one full-page L0 file per tenant) and is stopped; the tenant files
are deleted (the lost host). Then, from the same replicas:
  * `litefleet restore --config fleet.toml --all --output-dir DIR` at each --concurrency
    (wall, CPU user+sys and peak RSS from /usr/bin/time; with --s3 also moto's CPU);
  * a loop of `litestream restore -o DIR/<id>.db <replica url>`, one process per tenant,
    one after the other (wall; CPU of the children from getrusage). With --loop-sample K
    the loop restores K tenants drawn at random (seeded) from the N and its wall and CPU
    are extrapolated to N (marked as a sample in the table); litefleet restores all N.
Every output of both tools must be byte-identical to its source (the checkpointed
`<id>.db`), or the script fails.

large: one tenant of --mb MiB of random rows (one transaction, written before the daemon
starts); lifecycle off. Alternating, --runs times each: `litefleet restore --config …
<id> -o out.db` and the same restore as a job of the running daemon
(`POST /api/clients/<id>/restores`, polled every 20 ms until done), both with
`integrity_check` and the SHA-256, then both without the SQLite check. Medians; the
outputs must be identical to each other.

Prints Markdown tables for docs/benchmarks.md. Environment as fleet.py: LITEFLEET
[/var/tmp/litefleet-target/release/litefleet], LITEFLEET_WRITER [next to LITEFLEET],
LITESTREAM, MOTO_SERVER, BENCH_TMP (removed at exit unless BENCH_KEEP=1).
"""

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import LITEFLEET, LITESTREAM, Moto, count_replicated, free_port, log, make_tenants, proc_stats  # noqa: E402

WRITER = os.environ.get("LITEFLEET_WRITER", os.path.join(os.path.dirname(LITEFLEET), "litefleet-writer"))
TOKEN = "bench-token"


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def clean_env(moto):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if moto:
        env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"})
    return env


def write_config(run, clients, moto, port, restore_dir=None):
    storage = (f'url = "s3://bench/dr"\nendpoint = "{moto.endpoint}"\nforce_path_style = true\n'
               if moto else f'url = "file://{run}/replicas"\n')
    restore = f'[restore]\ndir = "{restore_dir}"\n' if restore_dir else ""
    cfg = os.path.join(run, "fleet.toml")
    with open(cfg, "w") as f:
        f.write(f'[[watch]]\ndir = "{clients}"\n[storage]\n{storage}[replication]\nstate_dir = "{run}/state"\n'
                f'[lifecycle]\nlevels = []\nsnapshot_interval = "0s"\n[http]\nlisten = "127.0.0.1:{port}"\n'
                f'token = "{TOKEN}"\n[log]\nlevel = "warn"\n{restore}')
    return cfg


def api(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_http(port, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the daemon exited with {proc.returncode}")
        try:
            api(port, "GET", "/api/status")
            return
        except Exception:
            time.sleep(0.05)
    sys.exit("the daemon's API never answered")


def timed(cmd, env, cwd):
    """Runs cmd under /usr/bin/time; (wall s, user+sys s, peak RSS MB, exit status)."""
    tf = os.path.join(cwd, "time.out")
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-o", tf, "-f", "%U %S %M", *cmd], env=env, cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.time() - t0
    u, s, m = open(tf).read().split()[-3:]
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.decode()[-3000:]}")
    return wall, float(u) + float(s), int(m) / 1024, p.returncode


def dr(args):
    work = os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="litefleet-restore-bench-", dir="/var/tmp")
    moto = None
    try:
        n = args.tenants
        src = os.path.join(work, "sources")
        log(f"making {n} tenants")
        make_tenants(src, n)
        run = os.path.join(work, "run")
        clients = os.path.join(run, "clients")
        shutil.copytree(src, clients)
        moto = Moto(work) if args.s3 else None
        port = free_port()
        cfg = write_config(run, clients, moto, port)
        env = clean_env(moto)
        ids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
        log("replicating with litefleet daemon")
        errlog = open(os.path.join(run, "daemon.log"), "w")
        daemon = subprocess.Popen([LITEFLEET, "daemon", "--config", cfg], stdout=subprocess.DEVNULL, stderr=errlog,
                                  env=env, cwd=run)
        wait_http(port, daemon)
        deadline = time.time() + args.setup_timeout
        while time.time() < deadline:
            clients_now = api(port, "GET", "/api/clients?per_page=1")["counts"]
            if moto is None:
                done = count_replicated(os.path.join(run, "replicas"), "ours", n, ids)
            else:
                page = api(port, "GET", "/api/status")
                done = sum(1 for c in page["clients"] if c["status"] == "active")
            if done >= n and clients_now["starting"] == 0:
                break
            time.sleep(1)
        else:
            sys.exit("replication did not finish")
        daemon.send_signal(signal.SIGINT)
        daemon.wait(timeout=300)
        errlog.close()
        # The lost host: the tenants' files are moved out of the watch directory, not
        # deleted. A real recovery writes onto a disk where nothing was just deleted;
        # here, on ext4 without a journal (this machine's /var/tmp), every file created
        # for minutes after N files were deleted scans past their inodes
        # (`recently_deleted` in the kernel's `find_inode_bit`): a cost growing with N,
        # paid by whichever tool runs first. They are deleted with the work directory.
        os.rename(clients, os.path.join(run, "clients-lost"))
        os.makedirs(clients)
        results = {"tenants": n, "storage": "moto_server" if moto else "folder", "loadavg_before": loadavg(),
                   "litefleet": []}
        for conc in args.concurrency:
            out = os.path.join(work, f"out-lf-{conc}")
            mcpu = proc_stats(moto.proc.pid)["cpu"] if moto else None
            log(f"litefleet restore --all --concurrency {conc}")
            wall, cpu, rss, _ = timed([LITEFLEET, "restore", "--config", cfg, "--all", "--output-dir", out,
                                       "--concurrency", str(conc)], env, run)
            r = {"concurrency": conc, "wall_s": wall, "cpu_s": cpu, "rss_mb": rss, "loadavg": loadavg()}
            if moto:
                r["server_cpu_s"] = proc_stats(moto.proc.pid)["cpu"] - mcpu
            log(r)
            results["litefleet"].append(r)
        if not args.no_loop:
            out = os.path.join(work, "out-ls")
            os.makedirs(out)
            base = (f"s3://bench/dr/databases/{{}}?endpoint={moto.endpoint}&region=us-east-1&forcePathStyle=true"
                    if moto else f"file://{run}/replicas/databases/{{}}")
            looped = sorted(random.Random(14).sample(ids, args.loop_sample)) if args.loop_sample else ids
            log(f"litestream restore loop over {len(looped)} of {n} tenants")
            mcpu = proc_stats(moto.proc.pid)["cpu"] if moto else None
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            for i, tid in enumerate(looped):
                p = subprocess.run([LITESTREAM, "restore", "-o", os.path.join(out, f"{tid}.db"), base.format(tid)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if p.returncode != 0:
                    sys.exit(f"litestream restore {tid}: {p.stderr.decode()[-2000:]}")
                if i and i % 1000 == 0:
                    log(f"  {i} done, {time.time() - t0:.0f} s")
            wall = time.time() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            scale = n / len(looped)
            results["litestream"] = {"tenants": len(looped), "measured_wall_s": wall,
                                     "wall_s": wall * scale,
                                     "cpu_s": ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) * scale,
                                     "loadavg": loadavg()}
            if moto:
                results["litestream"]["server_cpu_s"] = (proc_stats(moto.proc.pid)["cpu"] - mcpu) * scale
            log(results["litestream"])
        looped_set = set(looped) if not args.no_loop else set()
        log("comparing every output with its source")
        bad = 0
        outs = [os.path.join(work, f"out-lf-{c}") for c in args.concurrency]
        compared = 0
        for tid in ids:
            want = open(os.path.join(src, f"{tid}.db"), "rb").read()
            mine = outs + ([os.path.join(work, "out-ls")] if not args.no_loop and tid in looped_set else [])
            for o in mine:
                compared += 1
                if open(os.path.join(o, f"{tid}.db"), "rb").read() != want:
                    bad += 1
                    log(f"DIFFERS: {o}/{tid}.db")
        if bad:
            sys.exit(f"{bad} outputs differ from their sources")
        results["identical"] = compared
        print_dr(results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        if moto:
            moto.stop()
        if os.environ.get("BENCH_KEEP") != "1" and not os.environ.get("BENCH_TMP"):
            shutil.rmtree(work, ignore_errors=True)


def print_dr(r):
    n = r["tenants"]
    ls = r.get("litestream")
    print(f"\n{n} tenants from {r['storage']}; every output identical to its source "
          f"({r['identical']} files compared); load average before: {' '.join(r['loadavg_before'])}\n")
    server = r["storage"] == "moto_server"
    print("| command | wall (s) | tenants/s | CPU user+sys (s) | peak RSS (MB) |"
          + (" moto CPU (s) |" if server else "") + " vs the loop | load avg |")
    print("|---|---:|---:|---:|---:|" + ("---:|" if server else "") + "---:|---|")
    for x in r["litefleet"]:
        ratio = f"**{ls['wall_s'] / x['wall_s']:.1f}×**" if ls else "–"
        print(f"| `litefleet restore --all --concurrency {x['concurrency']}` | {x['wall_s']:.2f} | {n / x['wall_s']:.0f} "
              f"| {x['cpu_s']:.2f} | {x['rss_mb']:.0f} |" + (f" {x['server_cpu_s']:.1f} |" if server else "")
              + f" {ratio} | {' '.join(x['loadavg'])} |")
    if ls:
        what = (f"{n} processes" if ls["tenants"] == n else
                f"{ls['tenants']} of the {n} at random, {ls['measured_wall_s']:.1f} s measured, ×{n / ls['tenants']:g}")
        print(f"| loop of `litestream restore` ({what}) | {ls['wall_s']:.1f} | {n / ls['wall_s']:.0f} "
              f"| {ls['cpu_s']:.1f} | – |" + (f" {ls['server_cpu_s']:.1f} |" if server else "")
              + f" 1.0× | {' '.join(ls['loadavg'])} |")


def large(args):
    work = os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="litefleet-restore-bench-", dir="/var/tmp")
    try:
        run = os.path.join(work, "run")
        clients = os.path.join(run, "clients")
        copies = os.path.join(run, "copies")
        os.makedirs(clients)
        os.makedirs(copies)
        tid = "12345678-1234-5678-9abc-123456789012"
        db = os.path.join(clients, f"{tid}.db")
        log(f"writing {args.mb} MiB")
        script = os.path.join(run, "script.txt")
        open(script, "w").write(f"open {db}\nbig t {args.mb}\n")
        subprocess.run([WRITER, "--script", script], check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        cfg = write_config(run, clients, None, port, copies)
        env = clean_env(None)
        errlog = open(os.path.join(run, "daemon.log"), "w")
        daemon = subprocess.Popen([LITEFLEET, "daemon", "--config", cfg], stdout=subprocess.DEVNULL, stderr=errlog,
                                  env=env, cwd=run)
        try:
            wait_http(port, daemon)
            while True:
                c = api(port, "GET", f"/api/clients/{tid}")
                if c["client"].get("txid") and c["client"]["status"] == "active" and c["restoreWindow"]:
                    break
                time.sleep(0.5)
            size = os.path.getsize(db)
            log(f"replicated: {size / 1e6:.0f} MB; restoring")
            rows = []
            for check in (["full"] if args.only_full else ["full", "none"]):
                cli, job = [], []
                for i in range(args.runs):
                    out = os.path.join(run, "cli.db")
                    if os.path.exists(out):
                        os.remove(out)
                    cmd = [LITEFLEET, "restore", "--config", cfg, tid, "-o", out, "--sha256"]
                    if check == "full":
                        cmd += ["--integrity-check", "full"]
                    t0 = time.time()
                    subprocess.run(cmd, check=True, env=env, cwd=run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    cli.append(time.time() - t0)
                    for f in os.listdir(copies):
                        os.remove(os.path.join(copies, f))
                    t0 = time.time()
                    j = api(port, "POST", f"/api/clients/{tid}/restores", {"integrityCheck": check})
                    while j["state"] not in ("done", "failed", "cancelled"):
                        time.sleep(0.02)
                        j = api(port, "GET", f"/api/restores/{j['id']}")
                    job.append(time.time() - t0)
                    if j["state"] != "done":
                        sys.exit(f"job failed: {j}")
                    if open(out, "rb").read() != open(j["output"], "rb").read():
                        sys.exit("the API's output differs from the CLI's")
                    log(f"{check} run {i}: cli {cli[-1]:.2f} s, api {job[-1]:.2f} s ({loadavg()})")
                rows.append((check, cli, job, loadavg()))
        finally:
            daemon.send_signal(signal.SIGINT)
            daemon.wait(timeout=120)
            errlog.close()
        print(f"\none tenant of {size / 1e6:.0f} MB (--mb {args.mb}), folder replica, medians of {args.runs} "
              f"alternating runs\n")
        print("| SQLite check | `litefleet restore --sha256` (s) [runs] | API job (s) [runs] | API / CLI | load avg |")
        print("|---|---:|---:|---:|---|")
        for check, cli, job, la in rows:
            fmt = lambda v: " ".join(f"{x:.2f}" for x in v)
            c, j = statistics.median(cli), statistics.median(job)
            print(f"| {'integrity_check' if check == 'full' else 'none'} | {c:.2f} [{fmt(cli)}] | {j:.2f} [{fmt(job)}] "
                  f"| **{j / c:.2f}** | {' '.join(la)} |")
    finally:
        if os.environ.get("BENCH_KEEP") != "1" and not os.environ.get("BENCH_TMP"):
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dr", help="disaster recovery of N small tenants")
    d.add_argument("--tenants", type=int, default=10000)
    d.add_argument("--s3", action="store_true", help="replicas on moto_server instead of a folder")
    d.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[32],
                   help="comma-separated --concurrency values for litefleet [32]")
    d.add_argument("--no-loop", action="store_true", help="skip the litestream loop")
    d.add_argument("--loop-sample", type=int, default=0,
                   help="loop over K tenants drawn at random (seed 14) and extrapolate to N [all N]")
    d.add_argument("--setup-timeout", type=float, default=1800)
    d.add_argument("--json")
    g = sub.add_parser("large", help="one large tenant: API job vs CLI")
    g.add_argument("--mb", type=int, default=1024)
    g.add_argument("--runs", type=int, default=3)
    g.add_argument("--only-full", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(LITEFLEET):
        sys.exit(f"{LITEFLEET} not found: cargo build --release, or set LITEFLEET")
    if args.what == "dr" and not args.no_loop and not LITESTREAM:
        sys.exit("litestream not found: set LITESTREAM")
    dr(args) if args.what == "dr" else large(args)


if __name__ == "__main__":
    main()
