//! Not an example to copy: a hook that tries to leave the sandbox, so that litefleet's
//! tests can show what a guest built with Rust's std for wasm32-wasip2 meets inside it.
//! It refuses every tenant with a report of what each attempt gave:
//! `fs=<…> env=<…> net=<…> clock=<…> args=<…>`.

wit_bindgen::generate!({ path: "../../wit", world: "hook" });

use std::time::{SystemTime, UNIX_EPOCH};

struct Probe;

impl Guest for Probe {
    fn on_register(tenant: Tenant) -> Result<Decision, String> {
        let fs = match std::fs::read(&tenant.database_path) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("{:?}", e.kind()),
        };
        let root = match std::fs::read_dir("/") {
            Ok(_) => "listed".to_owned(),
            Err(e) => format!("{:?}", e.kind()),
        };
        let env = std::env::vars().count();
        // The tenant's "watch dir" carries the address to try in the tests.
        let net = match std::net::TcpStream::connect(tenant.watch_dir.as_str()) {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("{:?}", e.kind()),
        };
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
        let args = std::env::args().count();
        Ok(Decision::Refuse(format!("fs={fs} root={root} env={env} net={net} clock={clock} args={args}")))
    }

    fn on_unregister(_tenant: Tenant) -> Result<(), String> {
        Ok(())
    }
}

export!(Probe);
