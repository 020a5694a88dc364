#!/usr/bin/env python3
"""benches/plot.py — PNG plots of the fleet start-up/idle runs (benches/fleet.py --json).

    /var/tmp/litefleet-bench-venv/bin/python benches/plot.py results.json [more.json ...] [--out docs/img]

Needs matplotlib, which is not installed system-wide here; make a venv once:

    python3 -m venv /var/tmp/litefleet-bench-venv
    /var/tmp/litefleet-bench-venv/bin/pip install matplotlib

Writes <out>/fleet-rss.png (peak RSS during start-up and RSS in the idle window, against N)
and <out>/fleet-cpu.png (idle CPU, % of one core, against N), one line per tool. Results
from several files are merged; for a (tool, N) measured more than once the last file wins.
--active results are ignored.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"litefleet": {"color": "tab:blue", "marker": "o"}, "litestream": {"color": "tab:orange", "marker": "s"}}
LABEL = {"litefleet": "litefleet", "litestream": "Litestream 0.5.17 (directory mode)"}


def save(fig, ax, path):
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def load(paths):
    points = {}
    for p in paths:
        with open(p) as f:
            data = json.load(f)
        for r in data["results"]:
            if r.get("mode") == "active" or "crashed" in r or r.get("rss_mb") is None:
                continue
            points[(r["tool"], r["n"])] = r
    by_tool = {}
    for (tool, n), r in sorted(points.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        by_tool.setdefault(tool, []).append(r)
    return by_tool


def axes(title, ylabel):
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.set_xscale("log")
    ax.set_xlabel("tenants (N), log scale")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="files written by benches/fleet.py --json")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "docs", "img"))
    args = ap.parse_args()
    by_tool = load(args.json)
    os.makedirs(args.out, exist_ok=True)

    fig, ax = axes("Memory against N (local folder replica)", "RSS (MB)")
    for tool, rs in by_tool.items():
        ns = [r["n"] for r in rs]
        st = STYLE.get(tool, {})
        ax.plot(ns, [r["peak_rss_mb"] for r in rs], linestyle="-", label=f"{LABEL.get(tool, tool)}: peak (start-up)", **st)
        ax.plot(ns, [r["rss_mb"] for r in rs], linestyle="--", label=f"{LABEL.get(tool, tool)}: idle", **st)
        for r in rs:
            ax.annotate(f"{r['peak_rss_mb']:.0f}", (r["n"], r["peak_rss_mb"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    save(fig, ax, os.path.join(args.out, "fleet-rss.png"))

    fig, ax = axes("Idle CPU against N (nothing written, after settling)", "CPU, % of one core")
    for tool, rs in by_tool.items():
        ns = [r["n"] for r in rs]
        ax.plot(ns, [r["idle_cpu_pct"] for r in rs], linestyle="-", label=LABEL.get(tool, tool), **STYLE.get(tool, {}))
        for r in rs:
            ax.annotate(f"{r['idle_cpu_pct']:.2f} %", (r["n"], r["idle_cpu_pct"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    save(fig, ax, os.path.join(args.out, "fleet-cpu.png"))
    print(f"wrote {args.out}/fleet-rss.png and {args.out}/fleet-cpu.png")


if __name__ == "__main__":
    main()
