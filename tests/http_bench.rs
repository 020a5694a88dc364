//! Dashboard and API with 10,000 registered tenants: server time and size of
//! `/api/status`, `/api/clients?page=1`, a search, and the dashboard's first page,
//! measured over a real socket on 127.0.0.1. Ignored by default; run in release:
//!
//! ```text
//! cargo test --release --test http_bench -- --ignored --nocapture
//! ```
//!
//! It prints a Markdown table (docs/benchmarks.md, "Dashboard and API") and fails if
//! `/api/status` takes a second or more.

mod common;

use common::boards;

use std::sync::Arc;
use std::time::{Duration, Instant};

use litefleet::config::HttpConfig;
use litefleet::status::{Board, TenantState};
use litefleet::storage::{Options, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TENANTS: u32 = 10_000;
const RUNS: usize = 15;

/// One GET over a fresh connection; returns (status line, body length, time to the
/// last byte).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, usize, Duration) {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let took = started.elapsed();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap()]).into_owned();
    (status, buf.len() - head_end, took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn ten_thousand_tenants() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new("/data/clients");
    let storage = Storage::from_url(&format!("file://{}", tmp.path().display()), &Options::default()).unwrap();
    let board = Arc::new(Board::new(boards::info(dir, "s3://saas-backups", "saas-backups")));
    let filled = Instant::now();
    for i in 0..TENANTS {
        let state = match i % 500 {
            0 => TenantState::Error,
            1 => TenantState::Starting,
            _ => TenantState::Active,
        };
        board.upsert(boards::tenant(dir, "s3://saas-backups", &boards::guid(i + 1), state));
    }
    board.set_ready(true);
    let fill = filled.elapsed();

    let cfg = HttpConfig { listen: "127.0.0.1:0".parse().unwrap(), ..HttpConfig::default() };
    let shutdown = CancellationToken::new();
    let (server, task) = litefleet::http::serve(&cfg, board, storage, None, shutdown.clone()).await.unwrap();
    let addr = server.local_addr;

    let search = format!("/api/clients?q={}", &boards::guid(7777)[..8]);
    let cases = [
        ("`GET /api/status` (all 10,000)", "/api/status".to_owned()),
        ("`GET /api/clients?page=1` (50)", "/api/clients?page=1".to_owned()),
        ("`GET /api/clients?page=200` (50)", "/api/clients?page=200".to_owned()),
        ("`GET /api/clients?q=<8 hex>` (search)", search),
        ("`GET /api/clients?status=error`", "/api/clients?status=error".to_owned()),
        ("`GET /` (dashboard, first page)", "/".to_owned()),
    ];
    println!("registering {TENANTS} tenants on the board took {} ms\n", fill.as_millis());
    println!("| request | status | body | median | max |");
    println!("|---|---|---:|---:|---:|");
    let mut status_median = Duration::ZERO;
    for (name, path) in &cases {
        let mut times = Vec::new();
        let mut last = (String::new(), 0);
        for _ in 0..RUNS {
            let (status, len, took) = get(addr, path).await;
            times.push(took);
            last = (status, len);
        }
        assert!(last.0.contains("200"), "{path}: {}", last.0);
        let max = *times.iter().max().unwrap();
        let med = median(times);
        if path == "/api/status" {
            status_median = med;
        }
        println!(
            "| {name} | {} | {:.1} KiB | {:.1} ms | {:.1} ms |",
            &last.0[9..12],
            last.1 as f64 / 1024.0,
            med.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        );
    }
    assert!(status_median < Duration::from_secs(1), "/api/status took {status_median:?}");
    shutdown.cancel();
    task.await.unwrap();
}
