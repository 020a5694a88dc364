//! Tenant hooks: a sandboxed WebAssembly component, written by the platform that runs
//! litefleet, called when a tenant appears (`on-register`: accept with a custom storage
//! prefix and dashboard labels, or refuse) and when it goes (`on-unregister`). The
//! interface is `hooks/wit/hook.wit`; `docs/hooks.md` is the guide.
//!
//! This module owns the hook's life: compiling the configured module once
//! ([`Hooks::start`]), calling it with limits and the failure policy
//! ([`Hooks::on_register`], [`Hooks::on_unregister`]), checking what it returns (a
//! prefix is user input: [`crate::tenant::validate_prefix`]; labels are bounded), hot
//! reloading it when its file changes (compiled off the hot path, swapped in
//! atomically; a version that fails to compile or instantiate leaves the old one
//! running and says so), and delivering its notifications (`webhook`). The sandbox
//! itself — engine, store, limits, the empty WASI — is `sandbox`.
//!
//! It must never panic or block the async runtime on a hook's behalf, never run a guest
//! without its deadline, fuel and memory cap, and never let a hook's failure stop
//! anything but that one call. It does not know other tenants: uniqueness of prefixes
//! (a `conflict`) is the fleet's job.
//!
//! # For the fleet
//!
//! ```ignore
//! let hooks = Hooks::start(&hooks_config, shutdown.clone()).await?;   // bad module: error
//! let verdict = hooks.on_register(&HookTenant { id, database_path, watch_dir, default_prefix }).await;
//! match verdict.decision {
//!     Decision::Accept { prefix, labels } => { /* replicate under `prefix` (check uniqueness) */ }
//!     Decision::Refuse { reason } => { /* status "refused", or "error" when verdict.hook_error is set */ }
//! }
//! hooks.on_unregister(&tenant).await;   // errors are logged and counted
//! let stats = hooks.stats();            // for the dashboard and metrics
//! ```
//!
//! `Hooks` is `Clone + Send + Sync`; calls may run concurrently (each gets its own
//! store and instance). A looping call is stopped by epoch interruption just before its
//! `timeout`; one stuck in a host call is abandoned 100 ms after it.

pub mod config;
mod sandbox;
mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::tenant::{Prefix, TenantId};

pub use self::config::{HooksConfig, OnError, WebhookConfig};
use self::sandbox::{CallInfo, Compiled, Failure, GuestDecision, Limits, Sandbox};
pub use self::sandbox::{EPOCH_TICK, FailureKind};
pub use self::webhook::NotifyStats;

/// Most labels a hook may set on one tenant.
pub const MAX_LABELS: usize = 16;
/// Longest label key (`[A-Za-z0-9._-]`).
pub const MAX_LABEL_KEY: usize = 64;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 256;
/// Pause after a change to the module file before reloading, so that a file being
/// written is read once it is complete.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(150);
/// Grace beyond the call timeout before the host abandons a call that is stuck in a
/// host function (where epoch interruption cannot reach it).
const ABANDON_GRACE: Duration = Duration::from_millis(100);

/// Validates what a hook's `on-register` accepted with: the prefix (user input, by
/// [`crate::tenant::validate_prefix`]; `None` keeps `default_prefix`) and the labels (at
/// most [`MAX_LABELS`], keys 1 to [`MAX_LABEL_KEY`] of `A-Z a-z 0-9 . _ -`, values at most
/// [`MAX_LABEL_VALUE`] characters without control characters, no key twice). The error
/// says what is wrong, for the hook's failure report. Hostile input gets an error, never
/// a panic (`tests/fuzz.rs`).
pub fn check_accept(
    prefix: Option<&str>,
    labels: Vec<(String, String)>,
    default_prefix: &Prefix,
) -> Result<Decision, String> {
    let prefix = match prefix {
        None => default_prefix.clone(),
        Some(p) => Prefix::parse(p).map_err(|e| format!("returned an unusable prefix: {e}"))?,
    };
    if labels.len() > MAX_LABELS {
        return Err(format!("returned {} labels; at most {MAX_LABELS} are allowed", labels.len()));
    }
    let mut checked = BTreeMap::new();
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !key_ok {
            return Err(format!(
                "returned label key {:?}; keys are 1 to {MAX_LABEL_KEY} of A-Z a-z 0-9 . _ -",
                sandbox::truncate(&k, 80)
            ));
        }
        if v.chars().count() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(format!(
                "returned label {k:?} with a value over {MAX_LABEL_VALUE} characters or with control characters"
            ));
        }
        if checked.insert(k.clone(), v).is_some() {
            return Err(format!("returned label {k:?} twice"));
        }
    }
    Ok(Decision::Accept { prefix, labels: checked })
}

/// The tenant a hook call is about, as the fleet knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookTenant {
    /// Tenant id (lowercase GUID, or stem).
    pub id: TenantId,
    /// The database file.
    pub database_path: PathBuf,
    /// The watch directory it was found in.
    pub watch_dir: PathBuf,
    /// The prefix it gets without a hook: `<root>[/<dir prefix>]/<id>`.
    pub default_prefix: Prefix,
}

/// What the fleet does with a new tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Replicate it.
    Accept {
        /// Full storage prefix under the storage URL (validated by
        /// [`crate::tenant::validate_prefix`]); replaces the default `<root>/<id>`.
        /// The fleet still checks that no other tenant has it.
        prefix: Prefix,
        /// Labels for the dashboard (validated: at most [`MAX_LABELS`]).
        labels: BTreeMap<String, String>,
    },
    /// Do not replicate it.
    Refuse {
        /// Why, for the tenant's status.
        reason: String,
    },
}

/// The outcome of `on_register`: the decision, and whether it came from the failure
/// policy rather than from the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// Set when the hook failed and `on_error` decided; the message says how it failed
    /// (`hook shard.wasm: timeout: deadline exceeded …`). With `on_error = "refuse"` the
    /// tenant's status is `error` with this message.
    pub hook_error: Option<String>,
}

/// Which export a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `on-register`.
    Register,
    /// `on-unregister`.
    Unregister,
}

impl Event {
    /// `register` or `unregister`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Register => "register",
            Event::Unregister => "unregister",
        }
    }
}

/// Counters and state of the hook, for the dashboard and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStats {
    /// The configured module file.
    pub module: PathBuf,
    /// When the running version was loaded.
    pub loaded_at: SystemTime,
    /// Calls made (register and unregister).
    pub calls: u64,
    /// Calls that failed, of any kind below.
    pub failures: u64,
    /// Stopped at the wall-clock deadline.
    pub timeouts: u64,
    /// Stopped when fuel ran out.
    pub fuel_exhausted: u64,
    /// Stopped for growing memory (or a table) past the cap.
    pub memory_exceeded: u64,
    /// Trapped, or failed to instantiate.
    pub traps: u64,
    /// Returned `err`.
    pub errors: u64,
    /// Returned a prefix or labels that were refused.
    pub invalid: u64,
    /// New versions swapped in.
    pub reloads: u64,
    /// New versions refused (the old one kept running).
    pub reload_failures: u64,
    /// Times the module file was read to look for a new version (changed or not).
    pub reload_checks: u64,
    /// The latest failure or refused reload, with its time.
    pub last_error: Option<String>,
    /// The notification pipeline.
    pub notifications: NotifyStats,
}

/// Why the hooks could not start (or a version could not be loaded).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The module file could not be read.
    #[error("hook {}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The module is not a component for our WIT world, or does not instantiate.
    #[error("hook {}: not a usable hook component: {message}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        message: String,
    },
    /// The WebAssembly engine could not be set up.
    #[error("hooks: cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// A webhook header could not be built (its variable unset or invalid). Never holds
    /// the value.
    #[error("hooks.webhooks.{channel}: header {header}: {why}")]
    Header {
        /// The channel.
        channel: String,
        /// The header name.
        header: String,
        /// What is wrong.
        why: String,
    },
    /// The HTTP client for webhooks could not be built.
    #[error("hooks: cannot build the webhook HTTP client: {0}")]
    Http(String),
    /// The module file cannot be watched for changes.
    #[error("hook {}: cannot watch for changes", path.display())]
    Watch {
        /// The file.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

/// The hooks of one daemon: `Clone + Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    /// Engine, linker, limits.
    sandbox: Arc<Sandbox>,
    /// What a failed call means.
    policy: OnError,
    /// The configured module file.
    module: PathBuf,
    /// Its file name, for log lines.
    name: Arc<str>,
    /// The running version; replaced whole by a reload.
    current: RwLock<Arc<Loaded>>,
    /// Serializes reloads (the watcher's and explicit ones).
    reloading: tokio::sync::Mutex<()>,
    /// Where `notify` goes.
    outbox: webhook::Outbox,
    /// Counters.
    counters: Counters,
    /// The latest failure message.
    last_error: Mutex<Option<String>>,
}

/// One loaded module version.
struct Loaded {
    /// Compiled and linked.
    compiled: Compiled,
    /// The file's bytes, to skip reloading an unchanged file.
    bytes: Vec<u8>,
    /// When it was loaded.
    loaded_at: SystemTime,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    fuel_exhausted: AtomicU64,
    memory_exceeded: AtomicU64,
    traps: AtomicU64,
    errors: AtomicU64,
    invalid: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    reload_checks: AtomicU64,
}

impl Hooks {
    /// Compiles the configured module (off the async runtime), resolves the webhooks'
    /// headers, and starts the epoch ticker, the webhook worker and — with
    /// `watch = true` — the file watcher; all stop when `shutdown` is cancelled.
    /// A module that cannot be read, compiled or instantiated is an error here: the
    /// daemon does not start with a broken hook.
    pub async fn start(cfg: &HooksConfig, shutdown: CancellationToken) -> Result<Hooks, HookError> {
        let limits = Limits { timeout: cfg.timeout, fuel: cfg.fuel, max_memory: cfg.max_memory_bytes() };
        let sandbox = Arc::new(Sandbox::new(limits, shutdown.clone()).map_err(HookError::Engine)?);
        let outbox = webhook::start(cfg, shutdown.clone())?;
        let name: Arc<str> = cfg
            .module
            .file_name()
            .map_or_else(|| cfg.module.display().to_string().into(), |n| n.to_string_lossy().into_owned().into());
        let bytes = read_module(&cfg.module).await?;
        let compiled = compile_blocking(&sandbox, bytes.clone())
            .await
            .map_err(|f| HookError::Load { path: cfg.module.clone(), message: f.message })?;
        let check_call =
            CallInfo { hook: name.clone(), tenant: String::new(), event: Event::Register, outbox: outbox.clone() };
        sandbox
            .check(&compiled, check_call)
            .await
            .map_err(|f| HookError::Load { path: cfg.module.clone(), message: f.message })?;
        let loaded = Loaded { compiled, bytes, loaded_at: SystemTime::now() };
        let hooks = Hooks {
            inner: Arc::new(Inner {
                sandbox,
                policy: cfg.on_error,
                module: cfg.module.clone(),
                name,
                current: RwLock::new(Arc::new(loaded)),
                reloading: tokio::sync::Mutex::new(()),
                outbox,
                counters: Counters::default(),
                last_error: Mutex::new(None),
            }),
        };
        if cfg.watch {
            hooks.watch(shutdown)?;
        }
        let l = hooks.inner.sandbox.limits();
        tracing::info!(
            module = %cfg.module.display(),
            timeout = %humantime::format_duration(l.timeout),
            fuel = l.fuel,
            max_memory_mib = cfg.max_memory_mib,
            on_error = ?cfg.on_error,
            webhooks = cfg.webhooks.len(),
            watch = cfg.watch,
            "hook loaded"
        );
        Ok(hooks)
    }

    /// Asks the hook about a new tenant. Applies the limits and, when the hook fails
    /// (trap, timeout, fuel, memory, `err`, an invalid prefix or label), the failure
    /// policy. Never panics; takes at most about the configured timeout.
    pub async fn on_register(&self, t: &HookTenant) -> Verdict {
        let (call, tenant) = (self.call_info(Event::Register, t.id.as_str()), t.clone());
        let result =
            self.call(|sandbox, loaded| async move { sandbox.on_register(&loaded.compiled, call, &tenant).await });
        match result.await {
            Ok(GuestDecision::Accept(a)) => match check_accept(a.prefix.as_deref(), a.labels, &t.default_prefix) {
                Ok(decision) => Verdict { decision, hook_error: None },
                Err(m) => self.apply_policy(t, Failure::new(FailureKind::Invalid, m)),
            },
            Ok(GuestDecision::Refuse(reason)) => {
                tracing::info!(hook = &*self.inner.name, tenant = %t.id, "hook refused the tenant: {reason}");
                Verdict { decision: Decision::Refuse { reason: sandbox::truncate(&reason, 1024) }, hook_error: None }
            }
            Err(f) => self.apply_policy(t, f),
        }
    }

    /// Tells the hook a tenant is gone. A failure is logged and counted, nothing more.
    pub async fn on_unregister(&self, t: &HookTenant) {
        let (call, tenant) = (self.call_info(Event::Unregister, t.id.as_str()), t.clone());
        let result =
            self.call(|sandbox, loaded| async move { sandbox.on_unregister(&loaded.compiled, call, &tenant).await });
        if let Err(f) = result.await {
            self.record_failure(t, Event::Unregister, &f);
        }
    }

    /// The counters and state now.
    pub fn stats(&self) -> HookStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HookStats {
            module: self.inner.module.clone(),
            loaded_at: self.current().loaded_at,
            calls: get(&c.calls),
            failures: get(&c.failures),
            timeouts: get(&c.timeouts),
            fuel_exhausted: get(&c.fuel_exhausted),
            memory_exceeded: get(&c.memory_exceeded),
            traps: get(&c.traps),
            errors: get(&c.errors),
            invalid: get(&c.invalid),
            reloads: get(&c.reloads),
            reload_failures: get(&c.reload_failures),
            reload_checks: get(&c.reload_checks),
            last_error: self.inner.last_error.lock().map(|g| g.clone()).unwrap_or(None),
            notifications: self.inner.outbox.stats(),
        }
    }

    /// Reads the module file again and, if it changed, compiles and checks the new
    /// version off the hot path and swaps it in. Returns whether a new version now
    /// runs; on an error the old version keeps running (the error is also logged,
    /// counted and kept as `last_error`). The watcher calls this; so may a SIGHUP.
    pub async fn reload(&self) -> Result<bool, HookError> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let path = self.inner.module.clone();
        let result = async {
            self.inner.counters.reload_checks.fetch_add(1, Ordering::Relaxed);
            let bytes = read_module(&path).await?;
            if bytes == self.current().bytes {
                return Ok(false);
            }
            let compiled = compile_blocking(&self.inner.sandbox, bytes.clone())
                .await
                .map_err(|f| HookError::Load { path: path.clone(), message: f.message })?;
            let check_call = self.call_info(Event::Register, "");
            self.inner
                .sandbox
                .check(&compiled, check_call)
                .await
                .map_err(|f| HookError::Load { path: path.clone(), message: f.message })?;
            let loaded = Arc::new(Loaded { compiled, bytes, loaded_at: SystemTime::now() });
            match self.inner.current.write() {
                Ok(mut g) => *g = loaded,
                Err(poisoned) => *poisoned.into_inner() = loaded,
            }
            Ok(true)
        }
        .await;
        match &result {
            Ok(true) => {
                self.inner.counters.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(module = %path.display(), "hook reloaded: the new version runs from the next call");
            }
            Ok(false) => {}
            Err(e) => {
                self.inner.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                let message = format!("{}; the previous version keeps running", crate::errors::Chain(&e));
                tracing::error!("{message}");
                self.set_last_error(message);
            }
        }
        result
    }

    /// The running version.
    fn current(&self) -> Arc<Loaded> {
        match self.inner.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn call_info(&self, event: Event, tenant: &str) -> CallInfo {
        CallInfo { hook: self.inner.name.clone(), tenant: tenant.to_owned(), event, outbox: self.inner.outbox.clone() }
    }

    /// Runs one export on its own task (a panic or a stuck host call cannot reach the
    /// caller), bounded by the timeout plus a grace.
    async fn call<R, Fut>(&self, run: impl FnOnce(Arc<Sandbox>, Arc<Loaded>) -> Fut) -> Result<R, Failure>
    where
        R: Send + 'static,
        Fut: Future<Output = Result<R, Failure>> + Send + 'static,
    {
        self.inner.counters.calls.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(run(self.inner.sandbox.clone(), self.current()));
        let abort = task.abort_handle();
        let limit = self.inner.sandbox.limits().timeout + ABANDON_GRACE;
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Failure::new(FailureKind::Trap, format!("hook task failed: {join}"))),
            Err(_elapsed) => {
                abort.abort();
                Err(Failure::new(
                    FailureKind::Timeout,
                    format!("no answer within {} (deadline exceeded; abandoned)", humantime::format_duration(limit)),
                ))
            }
        }
    }

    /// Counts and logs a failure, then decides by `on_error`.
    fn apply_policy(&self, t: &HookTenant, f: Failure) -> Verdict {
        let message = self.record_failure(t, Event::Register, &f);
        let decision = match self.inner.policy {
            OnError::Default => Decision::Accept { prefix: t.default_prefix.clone(), labels: BTreeMap::new() },
            OnError::Refuse => Decision::Refuse { reason: message.clone() },
        };
        Verdict { decision, hook_error: Some(message) }
    }

    /// Counts a failure by kind, logs it, keeps it as `last_error`; returns its message.
    fn record_failure(&self, t: &HookTenant, event: Event, f: &Failure) -> String {
        let c = &self.inner.counters;
        c.failures.fetch_add(1, Ordering::Relaxed);
        let (counter, kind) = match f.kind {
            FailureKind::Timeout => (&c.timeouts, "timed out"),
            FailureKind::Fuel => (&c.fuel_exhausted, "out of fuel"),
            FailureKind::Memory => (&c.memory_exceeded, "stopped"),
            FailureKind::Trap => (&c.traps, "trapped"),
            FailureKind::Instantiate => (&c.traps, "failed to instantiate"),
            FailureKind::Error => (&c.errors, "returned an error"),
            FailureKind::Invalid => (&c.invalid, "returned an invalid result"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let message = format!("hook {}: {kind}: {}", self.inner.name, f.message);
        let then = match (event, self.inner.policy) {
            (Event::Unregister, _) => "",
            (Event::Register, OnError::Default) => " (on_error = \"default\": using the default prefix)",
            (Event::Register, OnError::Refuse) => " (on_error = \"refuse\": not replicating the tenant)",
        };
        tracing::warn!(tenant = %t.id, event = event.as_str(), "{message}{then}");
        self.set_last_error(format!(
            "{}: tenant {}: {message}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            t.id
        ));
        message
    }

    fn set_last_error(&self, message: String) {
        match self.inner.last_error.lock() {
            Ok(mut g) => *g = Some(message),
            Err(poisoned) => *poisoned.into_inner() = Some(message),
        }
    }

    /// Watches the module's directory (a file replaced by rename is a new inode, so the
    /// file itself cannot be watched) and reloads after changes to the module's name.
    fn watch(&self, shutdown: CancellationToken) -> Result<(), HookError> {
        use notify::Watcher;
        let path = self.inner.module.clone();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(|n| n.to_os_string());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Opening and reading the file (our own reload does) is an Access event:
            // reacting to it would reload forever.
            let relevant = match &event {
                Ok(e) => {
                    use notify::event::{AccessKind, AccessMode, EventKind};
                    let ours = matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write));
                    !ours && e.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == file_name)
                }
                Err(_) => true,
            };
            if relevant {
                // Full means a reload is already pending; it will read the newest file.
                let _ = tx.try_send(());
            }
        })
        .map_err(|source| HookError::Watch { path: path.clone(), source })?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| HookError::Watch { path: path.clone(), source })?;
        let this = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let _watcher = watcher; // lives as long as this task
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    got = rx.recv() => if got.is_none() { break },
                }
                tokio::time::sleep(RELOAD_DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(inner) = this.upgrade() else { break };
                // Errors are logged and counted by reload itself.
                let _ = Hooks { inner }.reload().await;
            }
        });
        Ok(())
    }
}

async fn read_module(path: &Path) -> Result<Vec<u8>, HookError> {
    tokio::fs::read(path).await.map_err(|source| HookError::Read { path: path.to_path_buf(), source })
}

/// Compiles on a blocking thread: a Rust hook takes tens of milliseconds.
async fn compile_blocking(sandbox: &Arc<Sandbox>, bytes: Vec<u8>) -> Result<Compiled, Failure> {
    let s = sandbox.clone();
    tokio::task::spawn_blocking(move || s.compile(&bytes))
        .await
        .unwrap_or_else(|e| Err(Failure::new(FailureKind::Instantiate, format!("compiler task failed: {e}"))))
}
