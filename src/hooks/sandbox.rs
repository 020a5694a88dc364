//! The WebAssembly sandbox: one wasmtime `Engine` and `Linker` for the life of the
//! daemon, a compiled hook ([`Compiled`]) per module version, and a fresh `Store` per
//! call with its limits (fuel, an epoch deadline, a memory cap) and an empty WASI.
//!
//! It owns what a guest can reach: the two host functions of `hooks/wit/hook.wit`
//! (`log`, `notify`) and a WASI that has no preopened directory, no environment or
//! arguments, clocks frozen at zero, closed stdin, a small captured stderr (a Rust
//! panic message ends up in the failure report), discarded stdout, and every socket and
//! name lookup denied. It never decides what a result *means* for a tenant — that is
//! `mod.rs` with the failure policy — and it never lets a guest run without a deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::webhook::Outbox;
use super::{Event, HookTenant};

mod bindings {
    wasmtime::component::bindgen!({
        path: "hooks/wit",
        world: "hook",
        exports: { default: async },
    });
}

pub use bindings::litefleet::hooks::host::Level;
pub use bindings::{Decision as GuestDecision, Tenant as GuestTenant};

/// How often the epoch ticker advances the engine's epoch; a call's deadline is a whole
/// number of ticks, so a looping guest is stopped up to two ticks before its timeout.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// A guest yields to the tokio scheduler after this much fuel (about 0.1 ms of compute),
/// so a busy hook never holds a runtime worker for long.
const FUEL_YIELD_INTERVAL: u64 = 100_000;
/// Bytes of a guest's stderr kept for the failure report.
const STDERR_CAPTURE: usize = 4096;
/// Longest log line a guest may write; the rest is cut.
pub const MAX_LOG_LINE: usize = 4096;
/// Log lines per call; more are dropped.
pub const MAX_LOGS_PER_CALL: u32 = 64;
/// Notifications per call; more are refused (`notify` returns false).
pub const MAX_NOTIFIES_PER_CALL: u32 = 16;
/// Largest notification payload.
pub const MAX_PAYLOAD: usize = 64 << 10;
/// Instances, tables and memories a hook may create: a component made by
/// `cargo build --target wasm32-wasip2` has a handful of each.
const MAX_INSTANCES: usize = 32;
const MAX_TABLES: usize = 32;
const MAX_MEMORIES: usize = 8;
/// Elements a table may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-call limits, fixed when the hooks start.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock budget of a call.
    pub timeout: Duration,
    /// Fuel per call.
    pub fuel: u64,
    /// Linear memory cap, bytes.
    pub max_memory: usize,
}

/// Why a call did not produce a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The wall-clock deadline passed (epoch interruption, or a guest stuck in a host call).
    Timeout,
    /// The fuel budget ran out.
    Fuel,
    /// The guest tried to grow memory (or a table) past its cap.
    Memory,
    /// The guest trapped (`unreachable`, a Rust panic, out-of-bounds access…).
    Trap,
    /// The module could not be instantiated in a fresh store.
    Instantiate,
    /// The guest returned `err(message)`.
    Error,
    /// The guest returned a prefix or a label the host does not accept.
    Invalid,
}

/// A failed call: its kind and a message for a person (logged, shown as the tenant's
/// status with `on_error = "refuse"`).
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// Details.
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

/// What a guest's store holds: its WASI context and the host's view of the call.
pub struct HostState {
    /// The empty WASI of the module doc.
    wasi: WasiCtx,
    /// WASI's resource table (streams, pollables).
    table: ResourceTable,
    /// Memory and table caps; remembers whether a cap was hit, to name the failure.
    limiter: Limiter,
    /// The call this store serves, for log lines and notifications.
    call: CallInfo,
    /// Log lines written so far in this call.
    logs: u32,
    /// Notifications queued so far in this call.
    notifies: u32,
}

/// Who is calling: attached to every log line and notification of the guest.
#[derive(Clone)]
pub struct CallInfo {
    /// The hook's file name, for log lines.
    pub hook: Arc<str>,
    /// The tenant the call is about.
    pub tenant: String,
    /// Register or unregister.
    pub event: Event,
    /// Where `notify` queues deliveries.
    pub outbox: Outbox,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::litefleet::hooks::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.logs += 1;
        if self.logs > MAX_LOGS_PER_CALL {
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE);
        let (hook, tenant, event) = (&*self.call.hook, &self.call.tenant, self.call.event.as_str());
        match level {
            Level::Trace => tracing::trace!(hook, tenant, event, "hook: {message}"),
            Level::Debug => tracing::debug!(hook, tenant, event, "hook: {message}"),
            Level::Info => tracing::info!(hook, tenant, event, "hook: {message}"),
            Level::Warn => tracing::warn!(hook, tenant, event, "hook: {message}"),
            Level::Error => tracing::error!(hook, tenant, event, "hook: {message}"),
        }
        if self.logs == MAX_LOGS_PER_CALL {
            tracing::warn!(
                hook,
                tenant,
                event,
                "hook wrote {MAX_LOGS_PER_CALL} log lines; dropping the rest of this call's"
            );
        }
    }

    fn notify(&mut self, channel: String, payload: String) -> bool {
        self.notifies += 1;
        let (hook, tenant) = (&*self.call.hook, &self.call.tenant);
        if self.notifies > MAX_NOTIFIES_PER_CALL {
            tracing::warn!(
                hook,
                tenant,
                channel,
                "hook notification refused: more than {MAX_NOTIFIES_PER_CALL} in one call"
            );
            return false;
        }
        if payload.len() > MAX_PAYLOAD {
            tracing::warn!(
                hook,
                tenant,
                channel,
                "hook notification refused: payload of {} bytes exceeds {MAX_PAYLOAD}",
                payload.len()
            );
            return false;
        }
        self.call.outbox.enqueue(&channel, payload, &self.call.tenant, self.call.event)
    }
}

/// Caps linear memory and tables, and records that a cap was hit so that the failure
/// is reported as "memory" rather than a generic trap.
struct Limiter {
    /// Memory cap in bytes.
    max_memory: usize,
    /// Set when a grow request was refused.
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            // An error (rather than `Ok(false)`, which makes `memory.grow` return -1)
            // stops the guest: a hook that ignores -1 must not keep running.
            return Err(wasmtime::Error::msg(format!(
                "memory cap exceeded: growing from {current} to {desired} bytes, the cap is {} bytes",
                self.max_memory
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "table cap exceeded: growing from {current} to {desired} elements, the cap is {MAX_TABLE_ELEMENTS}"
            )));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Clocks that always read zero: the WIT grants no clock.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A module version, compiled and linked once; instantiated per call.
#[derive(Clone)]
pub struct Compiled {
    /// The component with its imports resolved against our linker.
    pre: bindings::HookPre<HostState>,
}

/// The engine, its linker, and the limits every call gets. Cheap to share (`Arc`).
pub struct Sandbox {
    /// Compiles with fuel metering and epoch checks built in.
    engine: Engine,
    /// WASI (empty) and our `host` interface.
    linker: Linker<HostState>,
    /// Per-call limits.
    limits: Limits,
    /// Epoch ticks that make up `limits.timeout`.
    deadline_ticks: u64,
}

impl Sandbox {
    /// Builds the engine and linker and starts the epoch ticker thread, which stops when
    /// `shutdown` is cancelled or the engine is dropped.
    pub fn new(limits: Limits, shutdown: CancellationToken) -> Result<Sandbox, String> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true);
        cfg.epoch_interruption(true);
        cfg.max_wasm_stack(512 << 10);
        let engine = Engine::new(&cfg).map_err(|e| format!("{e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
        bindings::Hook::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| format!("{e:#}"))?;
        // The deadline is a whole number of ticks, one short of the timeout: the guest
        // is stopped between two ticks and one tick before its timeout (on an idle host).
        let tick_ns = EPOCH_TICK.as_nanos().max(1);
        let deadline_ticks =
            u64::try_from(limits.timeout.as_nanos().div_ceil(tick_ns)).unwrap_or(u64::MAX).saturating_sub(1).max(1);
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("hook-epoch".into())
            .spawn(move || {
                // Ticks follow the real clock (a late wake-up catches up) so that a deadline
                // of N ticks is N × EPOCH_TICK of wall time, not N sleeps.
                let started = std::time::Instant::now();
                let mut ticks: u128 = 0;
                while !shutdown.is_cancelled() {
                    std::thread::sleep(EPOCH_TICK);
                    let Some(engine) = weak.upgrade() else { break };
                    let due = started.elapsed().as_nanos() / tick_ns;
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(Sandbox { engine, linker, limits, deadline_ticks })
    }

    /// The per-call limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a component and resolves its imports. Blocking (tens of milliseconds
    /// for a small Rust hook): call it off the async runtime.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, Failure> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| Failure::new(FailureKind::Instantiate, format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::HookPre::new)
            .map_err(|e| Failure::new(FailureKind::Instantiate, format!("{e:#}")))?;
        Ok(Compiled { pre })
    }

    /// A fresh store for one call: empty WASI, limits, fuel and deadline set.
    fn store(&self, call: CallInfo) -> Result<(Store<HostState>, MemoryOutputPipe), Failure> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter { max_memory: self.limits.max_memory, hit: false },
            call,
            logs: 0,
            notifies: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let setup = |store: &mut Store<HostState>| -> wasmtime::Result<()> {
            store.set_fuel(self.limits.fuel)?;
            store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
            store.set_epoch_deadline(self.deadline_ticks);
            store.epoch_deadline_trap();
            Ok(())
        };
        setup(&mut store).map_err(|e| Failure::new(FailureKind::Instantiate, format!("{e:#}")))?;
        Ok((store, stderr))
    }

    /// Instantiates `compiled` in a throwaway store: what a reload checks before it
    /// swaps a new version in (a start function that traps, a memory above the cap).
    pub async fn check(&self, compiled: &Compiled, call: CallInfo) -> Result<(), Failure> {
        let (mut store, stderr) = self.store(call)?;
        compiled.pre.instantiate_async(&mut store).await.map(drop).map_err(|e| {
            let mut f = classify(&e, &store, &stderr, &self.limits);
            if f.kind == FailureKind::Trap {
                f.kind = FailureKind::Instantiate;
            }
            f
        })
    }

    /// Calls `on-register` in a fresh instance. The caller bounds the wall-clock time
    /// too (a guest waiting in a host call is not interrupted by epochs).
    pub async fn on_register(
        &self,
        compiled: &Compiled,
        call: CallInfo,
        tenant: &HookTenant,
    ) -> Result<GuestDecision, Failure> {
        let (mut store, stderr) = self.store(call)?;
        let guest = guest_tenant(tenant);
        let run = async {
            let hook = compiled.pre.instantiate_async(&mut store).await?;
            hook.call_on_register(&mut store, &guest).await
        };
        match run.await {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(message)) => Err(Failure::new(FailureKind::Error, truncate(&message, MAX_LOG_LINE))),
            Err(e) => Err(classify(&e, &store, &stderr, &self.limits)),
        }
    }

    /// Calls `on-unregister` in a fresh instance.
    pub async fn on_unregister(&self, compiled: &Compiled, call: CallInfo, tenant: &HookTenant) -> Result<(), Failure> {
        let (mut store, stderr) = self.store(call)?;
        let guest = guest_tenant(tenant);
        let run = async {
            let hook = compiled.pre.instantiate_async(&mut store).await?;
            hook.call_on_unregister(&mut store, &guest).await
        };
        match run.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Failure::new(FailureKind::Error, truncate(&message, MAX_LOG_LINE))),
            Err(e) => Err(classify(&e, &store, &stderr, &self.limits)),
        }
    }
}

fn guest_tenant(t: &HookTenant) -> GuestTenant {
    GuestTenant {
        id: t.id.to_string(),
        database_path: t.database_path.to_string_lossy().into_owned(),
        watch_dir: t.watch_dir.to_string_lossy().into_owned(),
        default_prefix: t.default_prefix.to_string(),
    }
}

/// Names a wasmtime error: timeout, fuel, memory cap, or a trap with its message and
/// whatever the guest printed to stderr (a Rust panic's "panicked at …").
fn classify(e: &wasmtime::Error, store: &Store<HostState>, stderr: &MemoryOutputPipe, limits: &Limits) -> Failure {
    let printed = String::from_utf8_lossy(&stderr.contents()).trim().to_owned();
    let with_stderr =
        |m: String| if printed.is_empty() { m } else { format!("{m}; stderr: {}", truncate(&printed, 1024)) };
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::new(
            FailureKind::Timeout,
            format!("deadline of {} exceeded", humantime::format_duration(limits.timeout)),
        ),
        Some(Trap::OutOfFuel) => Failure::new(FailureKind::Fuel, format!("fuel budget of {} used up", limits.fuel)),
        _ if store.data().limiter.hit => Failure::new(FailureKind::Memory, format!("{}", e.root_cause())),
        Some(trap) => Failure::new(FailureKind::Trap, with_stderr(format!("trap: {trap}"))),
        None => Failure::new(FailureKind::Trap, with_stderr(format!("{:#}", e.root_cause()))),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        // 'é' is two bytes: a cut inside it backs off to before it.
        assert_eq!(truncate("aé", 2), "a…");
    }
}
