#!/usr/bin/env bash
# benches/encryption.sh — what `[encryption]` costs: replication CPU per MB and the
# restore of a ~1.16 GB database, encrypted vs plain, same build, same machine.
#
#   bash benches/encryption.sh       # ~3 min on 2 cores (release build); prints a Markdown table
#
# What it measures (local disk, warm page cache):
#   1. Replication CPU per MB. `litefleet daemon` watches a folder holding one tenant
#      database (a table, WAL mode) and replicates it to a folder replica, once with no
#      [encryption] and once with a one-key keyring; the lifecycle is off
#      (`levels = []`, `snapshot_interval = "0s"`) so both runs do the same work: L0
#      files only. A separate writer process (litefleet-writer) then commits
#      BENCH_MB transactions of 1 MiB of random blobs (16 rows of 64 KiB); when it is
#      done the daemon gets SIGINT (final sync) and /usr/bin/time reports its user+sys
#      CPU. CPU per MB = CPU seconds / MB of database. BENCH_REPL_RUNS runs of each,
#      alternating, median reported.
#   2. Restore. The last run's replicas are restored with `litefleet restore` (the
#      encrypted one with --keys-file) BENCH_RESTORE_RUNS times each, alternating (and
#      alternating which goes first); wall, CPU and
#      RSS medians. Every restored file must be byte-identical (`cmp`) to its source
#      after a TRUNCATE checkpoint.
#
# Environment knobs (defaults in brackets):
#   CARGO_TARGET_DIR  [/var/tmp/litefleet-target]; LITEFLEET and LITEFLEET_WRITER default
#                     to its release binaries, built if missing
#   BENCH_MB [1100]  BENCH_REPL_RUNS [3]  BENCH_RESTORE_RUNS [9]
#   BENCH_TMP [mktemp -d under /var/tmp]  all data lives here and is removed at exit
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/litefleet-target}"
LITEFLEET="${LITEFLEET:-$CARGO_TARGET_DIR/release/litefleet}"
WRITER="${LITEFLEET_WRITER:-$CARGO_TARGET_DIR/release/litefleet-writer}"
MB="${BENCH_MB:-1100}"
REPL_RUNS="${BENCH_REPL_RUNS:-3}"
RUNS="${BENCH_RESTORE_RUNS:-9}"
GUID=00000000-0000-0000-0000-0000000000e1
PYTHON="${PYTHON:-python3}"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "!! $*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

if [[ ! -x "$LITEFLEET" || ! -x "$WRITER" ]]; then
  log "building litefleet (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release --bins) >&2
fi
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is needed: apt-get install -y time"

TMP="${BENCH_TMP:-$(mktemp -d /var/tmp/litefleet-bench-enc.XXXXXX)}"
mkdir -p "$TMP"
DPID=""
cleanup() {
  [[ -n "$DPID" ]] && kill -KILL "$DPID" 2>/dev/null || true
  if [[ "${BENCH_KEEP:-}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$LITEFLEET" keygen --id bench >"$TMP/keys"
chmod 600 "$TMP/keys"

db_checkpoint() {
  "$PYTHON" -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()' "$1"
}

declare -A CPU WALL SIZE
replicate_run() { # <mode: plain|enc> <run>
  local mode="$1" run="$2" d="$TMP/$1"
  rm -rf "$d"; mkdir -p "$d/clients"
  local db="$d/clients/$GUID.db"
  printf 'open %s\nexec CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)\nquit\n' "$db" | "$WRITER" >/dev/null
  local enc=""
  [[ "$mode" == enc ]] && enc=$'[encryption]\nkeys_file = "'"$TMP/keys"$'"'
  printf '[[watch]]\ndir = "%s"\n[storage]\nurl = "file://%s"\n%s\n[replication]\nstate_dir = "%s/state"\n[lifecycle]\nlevels = []\nsnapshot_interval = "0s"\n[http]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n' \
    "$d/clients" "$d/replica" "$enc" "$d" >"$d/fleet.toml"
  /usr/bin/time -f "%e %U %S %M" -o "$d/time" "$LITEFLEET" daemon --config "$d/fleet.toml" >"$d/daemon.log" 2>&1 &
  DPID=$!
  local deadline=$(( $(date +%s) + 60 ))
  until compgen -G "$d/replica/databases/$GUID/ltx/0/*.ltx" >/dev/null; do
    (( $(date +%s) < deadline )) || die "$mode: no first L0 file (see $d/daemon.log)"
    sleep 0.05
  done
  { echo "open $db"; echo "pragma synchronous=NORMAL"; for ((i = 0; i < MB; i++)); do echo "insert t 16 65536"; done; echo quit; } >"$d/cmds"
  local t0 t1; t0=$(date +%s.%N)
  "$WRITER" <"$d/cmds" >"$d/answers" || die "$mode: writer failed"
  ! grep -q '^err' "$d/answers" || die "writer error: $(grep -m1 '^err' "$d/answers")"
  kill -INT "$(pgrep -P "$DPID" || echo "$DPID")" 2>/dev/null || kill -INT "$DPID"
  wait "$DPID" || die "$mode: daemon exited non-zero: $(tail -n3 "$d/daemon.log")"
  DPID=""
  t1=$(date +%s.%N)
  local wall user sys rss
  read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$d/time" | tail -n1)
  CPU[$mode-$run]=$(calc "$user + $sys")
  WALL[$mode-$run]=$(calc "$t1 - $t0")
  db_checkpoint "$db"
  SIZE[$mode]=$(stat -c %s "$db")
  log "$mode run $run: cpu ${CPU[$mode-$run]} s for $(calc "${SIZE[$mode]} / 1048576" 1) MB, wall ${WALL[$mode-$run]} s, $(find "$d/replica" -name '*.ltx' | wc -l) files, replica $(du -sb "$d/replica" | cut -f1) bytes"
}

log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < REPL_RUNS; r++)); do
  replicate_run plain "$r"
  replicate_run enc "$r"
done
head -c 4 "$TMP/enc/replica/databases/$GUID/ltx/0/"*-*.ltx | grep -q LFE1 || die "the encrypted run wrote plain files"

declare -A T_WALL T_CPU T_RSS
declare -a W_plain W_enc C_plain C_enc R_plain R_enc
OUT="$TMP/out.db"
restore_once() { # <mode>
  local mode="$1" d="$TMP/$1" keys=()
  [[ "$mode" == enc ]] && keys=(--keys-file "$TMP/keys")
  rm -f "$OUT" "$OUT"-*; sync
  /usr/bin/time -f "%e %U %S %M" -o "$TMP/rtime" "$LITEFLEET" restore "file://$d/replica/databases/$GUID" -o "$OUT" "${keys[@]}" >"$TMP/restore.log" 2>&1 \
    || die "$mode restore failed: $(tail -n3 "$TMP/restore.log")"
  cmp "$OUT" "$d/clients/$GUID.db" >/dev/null || die "$mode: restored file differs from the source"
  local wall user sys rss
  read -r wall user sys rss < <(grep -E '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$' "$TMP/rtime" | tail -n1)
  log "restore $mode: wall $wall s, cpu $(calc "$user + $sys") s, rss $((rss / 1024)) MB"
  eval "W_$mode+=($wall); C_$mode+=($(calc "$user + $sys")); R_$mode+=($rss)"
}
# Alternating which goes first, so neither always follows the other's output.
for ((i = 0; i < RUNS; i++)); do
  if ((i % 2)); then restore_once enc; restore_once plain; else restore_once plain; restore_once enc; fi
done
rm -f "$OUT"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

cpu_plain=$(for ((r = 0; r < REPL_RUNS; r++)); do echo "${CPU[plain-$r]}"; done | median)
cpu_enc=$(for ((r = 0; r < REPL_RUNS; r++)); do echo "${CPU[enc-$r]}"; done | median)
mb_plain=$(calc "${SIZE[plain]} / 1048576" 1); mb_enc=$(calc "${SIZE[enc]} / 1048576" 1)
pmb_plain=$(calc "$cpu_plain / $mb_plain * 1000" 2); pmb_enc=$(calc "$cpu_enc / $mb_enc * 1000" 2)
w_plain=$(printf '%s\n' "${W_plain[@]}" | median); w_enc=$(printf '%s\n' "${W_enc[@]}" | median)
c_plain=$(printf '%s\n' "${C_plain[@]}" | median); c_enc=$(printf '%s\n' "${C_enc[@]}" | median)
r_plain=$(calc "$(printf '%s\n' "${R_plain[@]}" | median) / 1024" 0); r_enc=$(calc "$(printf '%s\n' "${R_enc[@]}" | median) / 1024" 0)

echo
echo "| measurement | plain | encrypted | ratio |"
echo "|---|---|---|---|"
echo "| replication CPU (daemon, user+sys; median of $REPL_RUNS) | $cpu_plain s for $mb_plain MB | $cpu_enc s for $mb_enc MB | |"
echo "| replication CPU per MB | $pmb_plain ms | $pmb_enc ms | **$(calc "$pmb_enc / $pmb_plain" 2)×** |"
echo "| restore wall (median of $RUNS: ${W_plain[*]} / ${W_enc[*]}) | $w_plain s | $w_enc s | **$(calc "$w_enc / $w_plain" 2)×** |"
echo "| restore CPU (user+sys, median) | $c_plain s | $c_enc s | $(calc "$c_enc / $c_plain" 2)× |"
echo "| restore peak RSS (median) | $r_plain MB | $r_enc MB | |"
