//! `litefleet-writer`: a separate-process SQLite writer for tests and benchmarks.
//!
//! It reads one command per line (from stdin, or from `--script <file>`) and
//! answers exactly one line per command on stdout, `ok [data]` or
//! `err <message>`, flushing after each answer. A test can therefore
//! interleave its own actions (capturing copies of the source, poking the
//! daemon) with the writes, knowing exactly what has been committed.
//!
//! Commands (space separated):
//!
//! | command | answer |
//! | --- | --- |
//! | `open <path> [page_size]` | `ok <journal_mode>`; creates the db, sets `page_size` (before any table), `journal_mode=WAL`, `busy_timeout` 5 s |
//! | `exec <sql...>` | runs the rest of the line (several statements allowed); `ok [first row of the last statement that returned rows]` |
//! | `pragma <name>[=value]` / `pragma <name> [value]` | `ok [first row]` |
//! | `insert <table> <rows> <bytes>` | creates `<table>(id INTEGER PRIMARY KEY, v BLOB)` if missing, inserts rows of pseudo-random bytes in one transaction; `ok <rows>` |
//! | `update <table> <rows> <bytes>` | rewrites up to `<rows>` existing rows (deterministic choice) in one transaction; `ok <n>` |
//! | `delete <table> <rows>` | deletes up to `<rows>` existing rows (deterministic choice) in one transaction; `ok <n>` |
//! | `big <table> <megabytes>` | one transaction inserting that many MiB (in 64 KiB rows); `ok <rows>` |
//! | `checkpoint <passive\|full\|restart\|truncate>` | `ok <busy> <log> <checkpointed>` |
//! | `vacuum` | `ok` |
//! | `txcount` | `ok <n>`: write transactions committed by this writer so far |
//! | `count <table>` | `ok <rows>` |
//! | `sleep <ms>` | `ok` |
//! | `ping` | `ok` |
//! | `close` | `ok` |
//! | `quit` | `ok`, then exits 0 |
//!
//! `txcount` is the number of write transactions committed by this process,
//! as counted by SQLite's commit hook (`sqlite3_commit_hook`): every
//! `insert`/`update`/`delete`/`big` is one, and `exec` statements count as
//! SQLite commits them (each writing statement in autocommit mode, each
//! `BEGIN … COMMIT` that wrote), `vacuum` counts one, and the switch to
//! WAL done by `open` counts none. A no-op `CREATE TABLE IF NOT EXISTS` or a
//! read-only statement is not a commit. (An explicit transaction that took
//! the write lock but changed no page is counted although it adds no WAL
//! frame.)
//!
//! With `--timing` every answer ends with ` at=<µs since the Unix epoch> us=<µs>`: when the
//! command started and how long it took inside this process (benches/engine.sh reads commit
//! latencies from it; `at=` lines a slow commit up with a replicator's log).
//!
//! Pseudo-random bytes come from a SplitMix64 stream seeded by `--seed`
//! (default 1), so two runs with the same commands write the same data.
//! Errors never panic; they answer `err …`. In `--script` mode the first
//! error stops the script with exit status 1. Blank lines and lines starting
//! with `#` are ignored in script mode and answered `ok` on stdin.

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, TransactionBehavior, params};

#[derive(Parser, Debug)]
#[command(name = "litefleet-writer", about = "Line-driven SQLite writer for litefleet tests and benchmarks")]
struct Args {
    /// Run commands from this file instead of stdin.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Seed of the pseudo-random payload bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// End every answer with ` at=<µs since the Unix epoch> us=<µs>`: when the command started
    /// and how long it took inside this process (a commit's latency without the reader's
    /// scheduling delay).
    #[arg(long)]
    timing: bool,
}

/// Rows of the `big` command are this large.
const BIG_ROW_BYTES: usize = 64 * 1024;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        // SplitMix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

struct Writer {
    conn: Option<Connection>,
    rng: Rng,
}

/// Commits seen by SQLite's commit hook on this process's connections.
static COMMITS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_commit(_arg: *mut c_void) -> c_int {
    COMMITS.fetch_add(1, Ordering::SeqCst);
    0 // let the commit go ahead
}

fn install_commit_hook(conn: &Connection) {
    // SAFETY: the hook is a plain function that touches only a static
    // atomic; its user-data pointer is unused (null).
    unsafe {
        rusqlite::ffi::sqlite3_commit_hook(conn.handle(), Some(on_commit), std::ptr::null_mut());
    }
}

enum Flow {
    Continue(String),
    Quit(String),
}

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn parse<T: std::str::FromStr>(what: &str, s: Option<&str>) -> Res<T> {
    let s = s.ok_or_else(|| format!("missing <{what}>"))?;
    s.parse::<T>().map_err(|_| format!("bad <{what}>: {s:?}"))
}

fn value_to_string(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("x'");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s.push('\'');
            s
        }
    }
}

impl Writer {
    fn new(seed: u64) -> Self {
        Writer { conn: None, rng: Rng(seed) }
    }

    fn conn(&self) -> Res<&Connection> {
        self.conn.as_ref().ok_or_else(|| "no database open (use `open <path>`)".to_string())
    }

    fn close(&mut self) -> Res<()> {
        if let Some(conn) = self.conn.take() {
            conn.close().map_err(|(_, err)| e(err))?;
        }
        Ok(())
    }

    fn handle(&mut self, line: &str) -> Res<Flow> {
        let line = line.trim_end_matches(['\r', '\n']);
        let trimmed = line.trim_start();
        let (cmd, rest) = match trimmed.split_once(char::is_whitespace) {
            Some((c, r)) => (c, r.trim_start()),
            None => (trimmed, ""),
        };
        let mut args = rest.split_whitespace();
        let out = match cmd {
            "" => String::new(),
            c if c.starts_with('#') => String::new(),
            "open" => {
                let path: PathBuf = parse("path", args.next())?;
                let page_size: Option<u32> = match args.next() {
                    Some(s) => Some(parse("page_size", Some(s))?),
                    None => None,
                };
                self.close()?;
                let conn = Connection::open(&path).map_err(e)?;
                conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
                if let Some(ps) = page_size {
                    conn.execute_batch(&format!("PRAGMA page_size={ps};")).map_err(e)?;
                }
                let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(e)?;
                // Installed after the switch to WAL: writing the WAL header
                // of a new db is a commit, but not one that reaches the WAL.
                install_commit_hook(&conn);
                self.conn = Some(conn);
                mode
            }
            "exec" => {
                if rest.is_empty() {
                    return Err("missing <sql>".into());
                }
                self.exec(rest)?
            }
            "pragma" => {
                if rest.is_empty() {
                    return Err("missing <name>".into());
                }
                let body = match rest.split_once(char::is_whitespace) {
                    Some((name, value)) if !rest.contains('=') => {
                        format!("{name}={}", value.trim())
                    }
                    _ => rest.to_string(),
                };
                self.exec(&format!("PRAGMA {body}"))?
            }
            "insert" => {
                let table: String = parse("table", args.next())?;
                let rows: usize = parse("rows", args.next())?;
                let bytes: usize = parse("bytes", args.next())?;
                self.insert(&table, rows, bytes)?.to_string()
            }
            "big" => {
                let table: String = parse("table", args.next())?;
                let mb: usize = parse("megabytes", args.next())?;
                let total = mb * 1024 * 1024;
                self.insert(&table, total.div_ceil(BIG_ROW_BYTES), BIG_ROW_BYTES)?.to_string()
            }
            "update" => {
                let table: String = parse("table", args.next())?;
                let rows: usize = parse("rows", args.next())?;
                let bytes: usize = parse("bytes", args.next())?;
                self.update_or_delete(&table, rows, Some(bytes))?.to_string()
            }
            "delete" => {
                let table: String = parse("table", args.next())?;
                let rows: usize = parse("rows", args.next())?;
                self.update_or_delete(&table, rows, None)?.to_string()
            }
            "count" => {
                let table: String = parse("table", args.next())?;
                let n: i64 = self
                    .conn()?
                    .query_row(&format!("SELECT count(*) FROM {}", quote_ident(&table)), [], |r| r.get(0))
                    .map_err(e)?;
                n.to_string()
            }
            "checkpoint" => {
                let mode = args.next().unwrap_or("passive").to_ascii_uppercase();
                if !matches!(mode.as_str(), "PASSIVE" | "FULL" | "RESTART" | "TRUNCATE") {
                    return Err(format!("bad checkpoint mode {mode:?}"));
                }
                let (busy, log, ckpt): (i64, i64, i64) = self
                    .conn()?
                    .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(e)?;
                format!("{busy} {log} {ckpt}")
            }
            "vacuum" => {
                self.conn()?.execute_batch("VACUUM").map_err(e)?;
                // VACUUM commits without calling the commit hook.
                COMMITS.fetch_add(1, Ordering::SeqCst);
                String::new()
            }
            "txcount" => COMMITS.load(Ordering::SeqCst).to_string(),
            "sleep" => {
                let ms: u64 = parse("ms", args.next())?;
                std::thread::sleep(Duration::from_millis(ms));
                String::new()
            }
            "ping" => String::new(),
            "close" => {
                self.close()?;
                String::new()
            }
            "quit" | "exit" => {
                self.close()?;
                return Ok(Flow::Quit(String::new()));
            }
            other => return Err(format!("unknown command {other:?}")),
        };
        Ok(Flow::Continue(out))
    }

    /// Runs each statement of `sql` (like `execute_batch`), answering the
    /// first row of the last statement that returned rows.
    fn exec(&mut self, sql: &str) -> Res<String> {
        let conn = self.conn()?;
        let mut answer = String::new();
        let mut batch = Batch::new(conn, sql);
        while let Some(mut stmt) = batch.next().map_err(e)? {
            let ncols = stmt.column_count();
            let mut first: Option<String> = None;
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(e)? {
                if first.is_none() {
                    let mut vals = Vec::with_capacity(ncols);
                    for i in 0..ncols {
                        vals.push(value_to_string(row.get_ref(i).map_err(e)?));
                    }
                    first = Some(vals.join(" "));
                }
            }
            if let Some(f) = first {
                answer = f;
            }
        }
        Ok(answer)
    }

    fn ensure_table(conn: &Connection, table: &str) -> Res<()> {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {}(id INTEGER PRIMARY KEY, v BLOB)",
            quote_ident(table)
        ))
        .map_err(e)
    }

    fn insert(&mut self, table: &str, rows: usize, bytes: usize) -> Res<usize> {
        let conn = self.conn.as_mut().ok_or("no database open")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        Self::ensure_table(&tx, table)?;
        {
            let mut stmt = tx.prepare(&format!("INSERT INTO {}(v) VALUES (?1)", quote_ident(table))).map_err(e)?;
            for _ in 0..rows {
                stmt.execute(params![self.rng.bytes(bytes)]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(rows)
    }

    fn update_or_delete(&mut self, table: &str, rows: usize, bytes: Option<usize>) -> Res<usize> {
        let conn = self.conn.as_mut().ok_or("no database open")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        let mut ids: Vec<i64> = {
            let mut stmt = tx.prepare(&format!("SELECT id FROM {} ORDER BY id", quote_ident(table))).map_err(e)?;
            stmt.query_map([], |r| r.get(0)).map_err(e)?.collect::<rusqlite::Result<_>>().map_err(e)?
        };
        // Deterministic partial Fisher-Yates: the first `n` ids are the chosen ones.
        let n = rows.min(ids.len());
        for i in 0..n {
            let j = i + self.rng.below(ids.len() - i);
            ids.swap(i, j);
        }
        {
            let q = quote_ident(table);
            let sql = match bytes {
                Some(_) => format!("UPDATE {q} SET v = ?1 WHERE id = ?2"),
                None => format!("DELETE FROM {q} WHERE id = ?1"),
            };
            let mut stmt = tx.prepare(&sql).map_err(e)?;
            for id in &ids[..n] {
                match bytes {
                    Some(b) => stmt.execute(params![self.rng.bytes(b), id]),
                    None => stmt.execute(params![id]),
                }
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(n)
    }
}

fn answer(out: &mut impl Write, res: &Res<String>) -> io::Result<()> {
    answer_timed(out, res, None)
}

fn answer_timed(out: &mut impl Write, res: &Res<String>, took: Option<(SystemTime, Duration)>) -> io::Result<()> {
    let us = took
        .map(|(at, d)| {
            let at = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
            format!(" at={at} us={}", d.as_micros())
        })
        .unwrap_or_default();
    match res {
        Ok(s) if s.is_empty() => writeln!(out, "ok{us}")?,
        Ok(s) => writeln!(out, "ok {s}{us}")?,
        Err(msg) => writeln!(out, "err {}{us}", msg.replace(['\n', '\r'], " "))?,
    }
    out.flush()
}

fn run(input: impl BufRead, script: bool, seed: u64, timing: bool) -> i32 {
    let mut w = Writer::new(seed);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(err) => {
                let _ = answer(&mut out, &Err(format!("reading input: {err}")));
                return 1;
            }
        };
        let t = line.trim();
        if script && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        // Clock reads only when asked for (`--timing`).
        let started = timing.then(|| (SystemTime::now(), std::time::Instant::now()));
        let (res, quit) = match w.handle(&line) {
            Ok(Flow::Continue(s)) => (Ok(s), false),
            Ok(Flow::Quit(s)) => (Ok(s), true),
            Err(msg) => (Err(msg), false),
        };
        if answer_timed(&mut out, &res, started.map(|(at, t)| (at, t.elapsed()))).is_err() {
            // stdout is gone: nobody is listening any more.
            let _ = w.close();
            return 1;
        }
        if quit {
            return 0;
        }
        if script && res.is_err() {
            let _ = w.close();
            return 1;
        }
    }
    match w.close() {
        Ok(()) => 0,
        Err(msg) => {
            let _ = answer(&mut out, &Err(msg));
            1
        }
    }
}

fn main() {
    let args = Args::parse();
    let code = match &args.script {
        Some(path) => match File::open(path) {
            Ok(f) => run(BufReader::new(f), true, args.seed, args.timing),
            Err(err) => {
                println!("err opening script {}: {err}", path.display());
                1
            }
        },
        None => run(io::stdin().lock(), false, args.seed, args.timing),
    };
    std::process::exit(code);
}
