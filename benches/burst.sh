#!/usr/bin/env bash
# benches/burst.sh — commit latency of one application burst, tool by tool (benchmarks §8).
#
#   bash benches/burst.sh                          # 10 runs each of daemon, replicate, litestream
#   bash benches/burst.sh -n 15 daemon litestream  # choose the runs and the tools
#   BURST_ROUNDS=2 BURST_PAUSE=1 bash benches/burst.sh    # two bursts 1 s apart
#
# Each run: a fresh folder with one tenant database (`<GUID>.db`, one table, created and
# closed by `litefleet-writer`, so the burst starts a fresh WAL); the tool starts on it
# and is given 1.5 s after its first L0 file; then `litefleet-writer --timing` commits
# BURST_TX transactions of 1 MiB (16 rows of 64 KiB random blobs, `synchronous=NORMAL`)
# as fast as it can, and times each commit itself (the commit inside the application,
# no reader process in the loop). Runs are interleaved (run 1 of every tool, then run
# 2, ...) so that the machine's slow phases hit every tool alike.
#
# Tools: `daemon` (`litefleet daemon` watching the folder, replica in a local folder),
# `replicate` (`litefleet replicate <db> file://...`), `litestream` (Litestream 0.5.17
# `replicate`), `alone` (no replicator: the application's own auto-checkpoints).
#
# Printed per tool and per burst (medians over the runs, ms): p99 — the second-slowest
# of the burst's commits, which is what a p99 of 200 commits is —, the worst commit, an
# ordinary (median) commit, and commits 0–5 of the burst. The raw timings stay in
# BURST_OUT/<tool>-<run>.t (one `litefleet-writer --timing` line per command).
#
# Environment knobs (defaults in brackets):
#   BURST_TX [200]         commits per burst
#   BURST_ROUNDS [1]       bursts per run; BURST_PAUSE [2] seconds between them
#   BURST_KEEP=1           a third process holds a connection (and one committed row)
#                          for the whole run: the application keeps its WAL, as a
#                          pooled connection does
#   BURST_STOP=1           SIGSTOP the tool for the bursts (SIGCONT after): what the
#                          application pays for the state the tool left, without its work
#   BURST_WRAP [none]      a command prefix for the litefleet tools, e.g. "chrt --idle 0"
#   BURST_OUT [mktemp -d]  where the raw timings go (kept)
#   LITEFLEET [$CARGO_TARGET_DIR/release/litefleet], LITEFLEET_WRITER [.../litefleet-writer]
#   LITESTREAM [.venv/bin/litestream of this checkout, else `litestream` on PATH]
#   CARGO_TARGET_DIR [/var/tmp/litefleet-target]; the release build runs if a binary is missing
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/litefleet-target}"
LITEFLEET="${LITEFLEET:-$CARGO_TARGET_DIR/release/litefleet}"
WRITER="${LITEFLEET_WRITER:-$CARGO_TARGET_DIR/release/litefleet-writer}"
LITESTREAM="${LITESTREAM:-$ROOT/.venv/bin/litestream}"
[[ -x "$LITESTREAM" ]] || LITESTREAM="$(command -v litestream || true)"
TX="${BURST_TX:-200}"
ROUNDS="${BURST_ROUNDS:-1}"
PAUSE="${BURST_PAUSE:-2}"
OUT="${BURST_OUT:-$(mktemp -d /var/tmp/litefleet-burst.XXXXXX)}"
GUID=00000000-0000-0000-0000-000000000001
RUNS=10
while getopts "n:" opt; do
  case "$opt" in
    n) RUNS="$OPTARG" ;;
    *) echo "usage: $0 [-n RUNS] [daemon|replicate|litestream|alone]..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
TOOLS=("$@")
((${#TOOLS[@]})) || TOOLS=(daemon replicate litestream)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "!! $*" >&2; exit 1; }

if [[ ! -x "$LITEFLEET" || ! -x "$WRITER" ]]; then
  log "building litefleet (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release --bins) >&2
fi
for t in "${TOOLS[@]}"; do
  case "$t" in
    daemon | replicate | alone) ;;
    litestream) [[ -n "$LITESTREAM" ]] || die "no litestream binary: set LITESTREAM (or run scripts/test.sh once for .venv)" ;;
    *) die "unknown tool $t (daemon, replicate, litestream, alone)" ;;
  esac
done
mkdir -p "$OUT"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "${RUN_DIR:-/nonexistent}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The writer's commands: open, the bursts with BURST_PAUSE between them, quit. The pause
# is the generator's: the writer reads its commands as they come.
commands() {
  local db="$1" r i
  echo "open $db"
  echo "pragma synchronous=NORMAL"
  for ((r = 0; r < ROUNDS; r++)); do
    ((r == 0)) || sleep "$PAUSE"
    for ((i = 0; i < TX; i++)); do echo "insert t 16 65536"; done
  done
  echo "quit"
}

run_one() { # <tool> <run>
  local tool="$1" run="$2" d db rep l0 pid="" keeper="" i
  d=$(mktemp -d /var/tmp/litefleet-burst-run.XXXXXX); RUN_DIR="$d"
  db="$d/clients/$GUID.db"; rep="$d/replica"
  mkdir -p "$d/clients"
  printf 'open %s\nexec CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)\nquit\n' "$db" | "$WRITER" >/dev/null
  if [[ "${BURST_KEEP:-}" == 1 ]]; then
    python3 -c 'import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); c.execute("INSERT INTO t(v) VALUES (zeroblob(1))"); c.commit(); print("r", flush=True); time.sleep(3600)' "$db" >"$d/keeper.out" &
    keeper=$!; PIDS+=("$keeper")
    for ((i = 0; i < 200; i++)); do grep -q r "$d/keeper.out" 2>/dev/null && break; sleep 0.05; done
    grep -q r "$d/keeper.out" || die "the process keeping a connection did not start"
  fi
  l0="$rep/ltx/0"
  case "$tool" in
    daemon)
      printf '[[watch]]\ndir = "%s"\n[storage]\nurl = "file://%s"\n[replication]\nstate_dir = "%s/state"\n[http]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n' \
        "$d/clients" "$rep" "$d" >"$d/fleet.toml"
      ${BURST_WRAP:-} "$LITEFLEET" daemon --config "$d/fleet.toml" >"$d/tool.log" 2>&1 &
      pid=$!; l0="$rep/databases/$GUID/ltx/0" ;;
    replicate) ${BURST_WRAP:-} "$LITEFLEET" replicate "$db" "file://$rep" >"$d/tool.log" 2>&1 & pid=$! ;;
    litestream) "$LITESTREAM" replicate "$db" "file://$rep" >"$d/tool.log" 2>&1 & pid=$! ;;
    alone) ;;
  esac
  if [[ -n "$pid" ]]; then
    PIDS+=("$pid")
    for ((i = 0; i < 600; i++)); do compgen -G "$l0/*.ltx" >/dev/null && break; sleep 0.05; done
    compgen -G "$l0/*.ltx" >/dev/null || die "$tool made no L0 file in 30 s (log: $(tail -n3 "$d/tool.log"))"
    sleep 1.5
    if [[ "${BURST_STOP:-}" == 1 ]]; then kill -STOP "$pid"; fi
  fi
  commands "$db" | timeout 600 "$WRITER" --timing >"$OUT/$tool-$run.t" || die "writer failed ($tool run $run)"
  ! grep -q '^err' "$OUT/$tool-$run.t" || die "writer error: $(grep -m1 '^err' "$OUT/$tool-$run.t")"
  if [[ -n "$pid" ]]; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -INT "$pid"
    wait "$pid" || die "$tool exited non-zero: $(tail -n3 "$d/tool.log")"
  fi
  if [[ -n "$keeper" ]]; then kill "$keeper"; wait "$keeper" 2>/dev/null || true; fi
  PIDS=()
  rm -rf "$d"; RUN_DIR=""
}

log "load average: $(cut -d' ' -f1-3 /proc/loadavg); raw timings in $OUT"
for ((run = 1; run <= RUNS; run++)); do
  for tool in "${TOOLS[@]}"; do run_one "$tool" "$run"; done
  log "run $run of $RUNS done"
done
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" "$TX" "$ROUNDS" "${TOOLS[@]}" <<'EOF'
import glob, statistics as st, sys
out, tx, rounds, tools = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def commits(path):
    # one line per command: open, pragma, the commits, quit; `us=` is the command's own time
    us = [int(w[3:]) for line in open(path) for w in line.split() if w.startswith("us=")]
    return [u / 1000 for u in us[2:-1]]
print("| tool | burst | runs | p99 (2nd slowest) | worst | ordinary | commits 0–5 |")
print("|---|---:|---:|---:|---:|---:|---|")
for tool in tools:
    runs = [commits(f) for f in sorted(glob.glob(f"{out}/{tool}-*.t"))]
    for r in range(rounds):
        bursts = [c[r * tx:(r + 1) * tx] for c in runs if len(c) >= (r + 1) * tx]
        if not bursts:
            continue
        med = lambda xs: st.median(xs)
        p99 = med([sorted(b)[-2] for b in bursts]); worst = med([max(b) for b in bursts])
        first = " ".join("%.1f" % med([b[i] for b in bursts]) for i in range(min(6, tx)))
        print(f"| {tool} | {r} | {len(bursts)} | {p99:.2f} | {worst:.1f} | {med([med(b) for b in bursts]):.2f} | {first} |")
EOF
