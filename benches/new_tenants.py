#!/usr/bin/env python3
"""New tenants arriving while the daemon runs: what does registering one cost?

    python3 benches/new_tenants.py [--tenants 1000] [--settle 40]

Starts the daemon (LITEFLEET, default /var/tmp/litefleet-target/release/litefleet; with
LITEFLEET_BEFORE set, that older build too, one after the other) on an empty watched
folder with a local-folder replica and otherwise default settings. Then one Python
process creates the tenants one after another, as an application would for new
customers: `<uuid>.db`, `journal_mode=WAL`, a table, one 5,000-byte row, and keeps
every connection open (so each WAL stays, as under an application server). After
--settle seconds it prints the daemon's syncs (`litefleet_syncs_total`, summed over
tenants; a tenant going idle is not counted), its CPU seconds since the first tenant,
and the L0 files in the replica.
"""

import argparse
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
import uuid


def run(binary: str, n: int, settle: float, port: int) -> str:
    root = tempfile.mkdtemp(dir="/var/tmp", prefix="litefleet-new-tenants-")
    clients = os.path.join(root, "clients")
    os.makedirs(clients)
    cfg = os.path.join(root, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'[[watch]]\ndir = "{clients}"\n[storage]\nurl = "file://{root}/replicas"\n'
                f'[replication]\nstate_dir = "{root}/state"\n[http]\nlisten = "127.0.0.1:{port}"\n')
    log = open(os.path.join(root, "daemon.log"), "w")
    daemon = subprocess.Popen([binary, "daemon", "--config", cfg], stdout=subprocess.DEVNULL, stderr=log)
    conns = []
    try:
        def cpu() -> float:
            fields = open(f"/proc/{daemon.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        def get(path: str) -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()

        for _ in range(100):
            try:
                get("/api/status")
                break
            except OSError:
                time.sleep(0.1)
        cpu0, t0 = cpu(), time.time()
        for _ in range(n):
            c = sqlite3.connect(os.path.join(clients, f"{uuid.uuid4()}.db"), isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            c.execute("INSERT INTO t(v) VALUES (randomblob(5000))")
            conns.append(c)
        made = time.time() - t0
        time.sleep(settle)
        syncs = sum(float(line.rsplit(" ", 1)[1]) for line in get("/metrics").splitlines()
                    if line.startswith("litefleet_syncs_total"))
        l0 = sum(len(files) for d, _, files in os.walk(os.path.join(root, "replicas")) if d.endswith("/ltx/0"))
        return (f"| {os.path.basename(binary)} | {n:,} | {made:.1f} s | {syncs:,.0f} | {syncs / n:.2f} "
                f"| {cpu() - cpu0:.2f} | {l0:,} |")
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        for c in conns:
            c.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=40.0, help="seconds after the last tenant was created")
    ap.add_argument("--port", type=int, default=18181, help="the daemon's HTTP port on 127.0.0.1")
    a = ap.parse_args()
    binaries = [os.environ.get("LITEFLEET", "/var/tmp/litefleet-target/release/litefleet")]
    if os.environ.get("LITEFLEET_BEFORE"):
        binaries.insert(0, os.environ["LITEFLEET_BEFORE"])
    print("| build | tenants | created in | syncs | per tenant | CPU s | L0 files |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for b in binaries:
        print(run(b, a.tenants, a.settle, a.port), flush=True)


if __name__ == "__main__":
    main()
