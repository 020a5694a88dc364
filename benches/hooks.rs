//! Hook overhead: `on_register` latency (p50/p99) for a WAT hook and for the Rust
//! shard-prefix example, and the rate of 10,000 start-up registrations with and without
//! a hook. Plain timing, no framework:
//!
//!     cargo bench --bench hooks            # release profile; prints a Markdown table
//!
//! `cargo test --all-targets` runs it too (without `--bench`): then it only checks that
//! it works, with 200 tenants, and its numbers mean nothing.
//!
//! Registrations run as the fleet runs them at start-up: `fleet.startup_concurrency`
//! (32) at a time on a multi-threaded tokio runtime. "Without a hook" is what the
//! fleet does for a tenant's naming when no hook is configured (default prefix and its
//! validation), so the difference is the hook's cost; the rest of a registration
//! (opening SQLite, storage) is the same either way and is not in these numbers.

#[path = "../tests/common/hook_wat.rs"]
mod hook_wat;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use litefleet::hooks::{Decision, HookTenant, Hooks, HooksConfig};
use litefleet::tenant::{self, TenantId};
use tokio_util::sync::CancellationToken;

const TENANTS: usize = 10_000;
const LATENCY_CALLS: usize = 2_000;
const CONCURRENCY: usize = 32;
/// Tenants in the smoke run of `cargo test`.
const SMOKE_TENANTS: usize = 200;

fn tenants(n: usize) -> Vec<HookTenant> {
    (0..n)
        .map(|i| {
            let id = format!("{:08x}-0000-4000-8000-{:012x}", (i as u32).wrapping_mul(2_654_435_761), i);
            HookTenant {
                database_path: PathBuf::from(format!("/data/clients/{id}.db")),
                watch_dir: PathBuf::from("/data/clients"),
                default_prefix: tenant::Prefix::parse(&format!("databases/{id}")).expect("prefix"),
                id: TenantId::guid(&id).expect("guid"),
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn start(module: &Path) -> (Hooks, CancellationToken) {
    let mut cfg = HooksConfig::new(module);
    cfg.watch = false;
    let shutdown = CancellationToken::new();
    let hooks = Hooks::start(&cfg, shutdown.clone()).await.expect("hook starts");
    (hooks, shutdown)
}

/// Sequential calls: latency of one `on_register`, p50 and p99.
async fn latency(hooks: &Hooks, tenants: &[HookTenant]) -> (Duration, Duration) {
    for t in tenants.iter().take(50) {
        hooks.on_register(t).await; // warm-up
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(LATENCY_CALLS);
    for t in tenants.iter().take(LATENCY_CALLS) {
        let started = Instant::now();
        let v = hooks.on_register(t).await;
        samples.push(started.elapsed());
        assert!(v.hook_error.is_none(), "{v:?}");
    }
    samples.sort();
    (percentile(&samples, 0.50), percentile(&samples, 0.99))
}

/// 10,000 registrations, `CONCURRENCY` at a time; registrations per second.
async fn rate(hooks: Option<&Hooks>, tenants: &[HookTenant]) -> f64 {
    let started = Instant::now();
    let accepted = futures::stream::iter(tenants)
        .map(|t| async move {
            match hooks {
                Some(h) => matches!(h.on_register(t).await.decision, Decision::Accept { .. }),
                None => {
                    let id = TenantId::guid(t.id.as_str()).expect("guid");
                    let root = tenant::Prefix::parse(tenant::DEFAULT_ROOT).expect("root");
                    tenant::validate_prefix(&tenant::Prefix::of_tenant(&root, None, &id)).is_ok()
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(accepted, tenants.len());
    tenants.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n = if benching { TENANTS } else { SMOKE_TENANTS };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let tenants = tenants(n);
        let dir = tempfile::tempdir().expect("tempdir");
        let wat = dir.path().join("wat-naming.wasm");
        std::fs::write(&wat, hook_wat::component(&hook_wat::Behaviour::PrefixWithId { base: "tenants".into() }))
            .expect("write");
        let rust = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/examples/shard-prefix/shard-prefix.wasm");

        let started = Instant::now();
        let (wat_hooks, _s1) = start(&wat).await;
        let wat_start = started.elapsed();
        let started = Instant::now();
        let (rust_hooks, _s2) = start(&rust).await;
        let rust_start = started.elapsed();

        let (wat_p50, wat_p99) = latency(&wat_hooks, &tenants).await;
        let (rust_p50, rust_p99) = latency(&rust_hooks, &tenants).await;
        let none_rate = rate(None, &tenants).await;
        let wat_rate = rate(Some(&wat_hooks), &tenants).await;
        let rust_rate = rate(Some(&rust_hooks), &tenants).await;

        println!(
            "| hook | load (compile + check) | on_register p50 | p99 | {n} registrations, {CONCURRENCY} at a time |"
        );
        println!("|---|---|---|---|---|");
        println!("| none (default prefix) | – | – | – | {none_rate:.0}/s |");
        println!(
            "| WAT naming hook ({} bytes) | {:.1} ms | {} | {} | {wat_rate:.0}/s |",
            std::fs::metadata(&wat).map(|m| m.len()).unwrap_or(0),
            wat_start.as_secs_f64() * 1e3,
            us(wat_p50),
            us(wat_p99)
        );
        println!(
            "| Rust shard-prefix example ({} bytes) | {:.1} ms | {} | {} | {rust_rate:.0}/s |",
            std::fs::metadata(&rust).map(|m| m.len()).unwrap_or(0),
            rust_start.as_secs_f64() * 1e3,
            us(rust_p50),
            us(rust_p99)
        );
        let s = rust_hooks.stats();
        println!("\nrust hook stats after the run: calls={} failures={}", s.calls, s.failures);
    });
}
