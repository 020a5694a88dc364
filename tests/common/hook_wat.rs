//! Hook components written in WebAssembly text, so the hook tests and the hook bench
//! need no wasm toolchain: each [`Behaviour`] becomes a component of the world `hook`
//! in `hooks/wit/hook.wit`, compiled with the `wat` crate and run through the very
//! bindings the daemon uses.
//!
//! Shape of every component: a `libc` core module owns the linear memory and a bump
//! `realloc` (so that the host imports can be lowered before the main module exists),
//! the `host` imports are lowered against that memory, and the main core module
//! implements `on-register` / `on-unregister` by writing the canonical-ABI result into
//! a fixed area (`RET`) and returning its address.
//!
//! Result layout of `on-register` (`result<decision, string>`, 28 bytes, align 4):
//! `[0]` result tag (0 ok, 1 err) · ok: `[4]` decision tag (0 accept, 1 refuse) ·
//! accept: `[8]` option tag, `[12]`/`[16]` prefix ptr/len, `[20]`/`[24]` labels ptr/len ·
//! refuse: `[8]`/`[12]` reason ptr/len · err: `[4]`/`[8]` message ptr/len.

#![allow(dead_code)]

/// What a generated hook does in `on-register`. (`on-unregister` always answers ok,
/// after doing the same notify/log as register when asked to.)
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Accept with the default prefix and no labels.
    AcceptDefault,
    /// Accept with a fixed prefix (anything, valid or not) and labels.
    Prefix { prefix: String, labels: Vec<(String, String)> },
    /// Accept with `<base>/<tenant id>` as the prefix: a naming hook.
    PrefixWithId { base: String },
    /// Refuse with a reason.
    Refuse(String),
    /// Return `err(message)`.
    Err(String),
    /// Loop forever.
    Loop,
    /// Grow memory a page at a time, forever.
    GrowMemory,
    /// Execute `unreachable`.
    Trap,
    /// `log(info, message)` then accept default.
    Log(String),
    /// `notify(channel, payload)`, then accept default with the label
    /// `notified = yes|no` telling what `notify` returned.
    Notify { channel: String, payload: String },
    /// `bad` for tenants whose id starts with `first`, `good` for the others: one hook
    /// that misbehaves for some tenants only.
    Split { first: u8, bad: Box<Behaviour>, good: Box<Behaviour> },
}

/// Address of the result area.
const RET: u32 = 512;
/// Where static strings start.
const DATA: u32 = 1024;
/// Where a computed prefix is built.
const SCRATCH: u32 = 16384;

/// Static strings placed in the data segment, with their addresses.
struct Data {
    next: u32,
    segments: String,
}

impl Data {
    fn new() -> Data {
        Data { next: DATA, segments: String::new() }
    }
    /// Places `bytes`; returns (ptr, len).
    fn put(&mut self, bytes: &[u8]) -> (u32, u32) {
        let ptr = self.next;
        let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
        self.segments.push_str(&format!("    (data (i32.const {ptr}) \"{escaped}\")\n"));
        self.next += (bytes.len() as u32).div_ceil(8) * 8 + 8;
        (ptr, bytes.len() as u32)
    }
    /// Places a label list; returns (ptr, count).
    fn labels(&mut self, labels: &[(String, String)]) -> (u32, u32) {
        let strings: Vec<((u32, u32), (u32, u32))> =
            labels.iter().map(|(k, v)| (self.put(k.as_bytes()), self.put(v.as_bytes()))).collect();
        let mut table = Vec::new();
        for ((kp, kl), (vp, vl)) in strings {
            for n in [kp, kl, vp, vl] {
                table.extend_from_slice(&n.to_le_bytes());
            }
        }
        if table.is_empty() {
            return (0, 0);
        }
        let (ptr, _) = self.put(&table);
        (ptr, labels.len() as u32)
    }
}

/// Core instructions that write an `ok(accept { prefix, labels })` and leave `RET`.
/// `prefix` is `None` or instructions pushing (ptr, len) as two i32.
fn accept(prefix: Option<(String, String)>, labels: (String, String)) -> String {
    let (tag, ptr, len) = match prefix {
        Some((p, l)) => ("1".to_owned(), p, l),
        None => ("0".to_owned(), "(i32.const 0)".to_owned(), "(i32.const 0)".to_owned()),
    };
    format!(
        "(i32.store8 (i32.const {RET}) (i32.const 0))
         (i32.store8 (i32.const {d}) (i32.const 0))
         (i32.store8 (i32.const {o}) (i32.const {tag}))
         (i32.store (i32.const {pp}) {ptr})
         (i32.store (i32.const {pl}) {len})
         (i32.store (i32.const {lp}) {lptr})
         (i32.store (i32.const {ll}) {llen})
         (i32.const {RET})",
        d = RET + 4,
        o = RET + 8,
        pp = RET + 12,
        pl = RET + 16,
        lp = RET + 20,
        ll = RET + 24,
        lptr = labels.0,
        llen = labels.1,
    )
}

fn konst(n: u32) -> String {
    format!("(i32.const {n})")
}

/// The body of the core `on-register` for a behaviour.
fn register_body(b: &Behaviour, data: &mut Data) -> String {
    let none = || (konst(0), konst(0));
    match b {
        Behaviour::AcceptDefault => accept(None, none()),
        Behaviour::Prefix { prefix, labels } => {
            let (p, l) = data.put(prefix.as_bytes());
            let (lp, ln) = data.labels(labels);
            accept(Some((konst(p), konst(l))), (konst(lp), konst(ln)))
        }
        Behaviour::PrefixWithId { base } => {
            let with_slash = format!("{base}/");
            let (p, l) = data.put(with_slash.as_bytes());
            let copy = format!(
                "(memory.copy (i32.const {SCRATCH}) (i32.const {p}) (i32.const {l}))
                 (memory.copy (i32.const {after}) (local.get $id_ptr) (local.get $id_len))",
                after = SCRATCH + l
            );
            format!(
                "{copy}\n{}",
                accept(Some((konst(SCRATCH), format!("(i32.add (i32.const {l}) (local.get $id_len))"))), none())
            )
        }
        Behaviour::Refuse(reason) => {
            let (p, l) = data.put(reason.as_bytes());
            format!(
                "(i32.store8 (i32.const {RET}) (i32.const 0))
                 (i32.store8 (i32.const {d}) (i32.const 1))
                 (i32.store (i32.const {a}) (i32.const {p}))
                 (i32.store (i32.const {b}) (i32.const {l}))
                 (i32.const {RET})",
                d = RET + 4,
                a = RET + 8,
                b = RET + 12
            )
        }
        Behaviour::Err(message) => {
            let (p, l) = data.put(message.as_bytes());
            format!(
                "(i32.store8 (i32.const {RET}) (i32.const 1))
                 (i32.store (i32.const {a}) (i32.const {p}))
                 (i32.store (i32.const {b}) (i32.const {l}))
                 (i32.const {RET})",
                a = RET + 4,
                b = RET + 8
            )
        }
        Behaviour::Loop => "(loop $forever (br $forever)) (i32.const 0)".to_owned(),
        Behaviour::GrowMemory => {
            "(loop $forever (drop (memory.grow (i32.const 1))) (br $forever)) (i32.const 0)".to_owned()
        }
        Behaviour::Trap => "unreachable".to_owned(),
        Behaviour::Log(message) => {
            let (p, l) = data.put(message.as_bytes());
            format!("(call $log (i32.const 2) (i32.const {p}) (i32.const {l}))\n{}", accept(None, none()))
        }
        Behaviour::Notify { channel, payload } => {
            let (cp, cl) = data.put(channel.as_bytes());
            let (pp, pl) = data.put(payload.as_bytes());
            let (yes, _) = data.labels(&[("notified".into(), "yes".into())]);
            let (no, _) = data.labels(&[("notified".into(), "no".into())]);
            let labels = (
                format!(
                    "(select (i32.const {yes}) (i32.const {no}) (call $notify (i32.const {cp}) (i32.const {cl}) (i32.const {pp}) (i32.const {pl})))"
                ),
                konst(1),
            );
            accept(None, labels)
        }
        Behaviour::Split { first, bad, good } => {
            let bad = register_body(bad, data);
            let good = register_body(good, data);
            format!(
                "(if (result i32) (i32.and (i32.gt_u (local.get $id_len) (i32.const 0)) (i32.eq (i32.load8_u (local.get $id_ptr)) (i32.const {first})))
                   (then {bad})
                   (else {good}))"
            )
        }
    }
}

/// The component text for a behaviour.
pub fn component_wat(b: &Behaviour) -> String {
    let mut data = Data::new();
    let register = register_body(b, &mut data);
    let unregister_side = match b {
        Behaviour::Notify { channel, payload } => {
            let (cp, cl) = data.put(channel.as_bytes());
            let (pp, pl) = data.put(payload.as_bytes());
            format!("(drop (call $notify (i32.const {cp}) (i32.const {cl}) (i32.const {pp}) (i32.const {pl})))")
        }
        Behaviour::Loop => "(loop $forever (br $forever))".to_owned(),
        Behaviour::Trap => "unreachable".to_owned(),
        _ => String::new(),
    };
    let segments = data.segments;
    format!(
        r#"(component
  (type $host-t (instance
    (type $level (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $level-e (eq $level)))
    (type $log-t (func (param "level" $level-e) (param "message" string)))
    (export "log" (func (type $log-t)))
    (type $notify-t (func (param "channel" string) (param "payload" string) (result bool)))
    (export "notify" (func (type $notify-t)))
  ))
  (import "litefleet:hooks/host@0.1.0" (instance $host (type $host-t)))
  (alias export $host "log" (func $log))
  (alias export $host "notify" (func $notify))

  (core module $Libc
    (memory (export "memory") 2)
    (global $bump (mut i32) (i32.const 65536))
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
      (global.set $bump (i32.add (local.get $p) (local.get $size)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
        (then (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (global.get $bump) (i32.const 16)) (i32.const 1))) (i32.const 0))
          (then unreachable))))
      (local.get $p)))
  (core instance $libc (instantiate $Libc))
  (alias core export $libc "memory" (core memory $mem))
  (alias core export $libc "realloc" (core func $realloc))
  (core func $log-core (canon lower (func $log) (memory $mem)))
  (core func $notify-core (canon lower (func $notify) (memory $mem)))
  (core instance $host-core (export "log" (func $log-core)) (export "notify" (func $notify-core)))

  (core module $Main
    (import "libc" "memory" (memory 1))
    (import "host" "log" (func $log (param i32 i32 i32)))
    (import "host" "notify" (func $notify (param i32 i32 i32 i32) (result i32)))
{segments}
    (func (export "on-register")
      (param $id_ptr i32) (param $id_len i32) (param $db_ptr i32) (param $db_len i32)
      (param $dir_ptr i32) (param $dir_len i32) (param $def_ptr i32) (param $def_len i32)
      (result i32)
      {register})
    (func (export "on-unregister")
      (param $id_ptr i32) (param $id_len i32) (param $db_ptr i32) (param $db_len i32)
      (param $dir_ptr i32) (param $dir_len i32) (param $def_ptr i32) (param $def_len i32)
      (result i32)
      {unregister_side}
      (i32.store8 (i32.const {RET}) (i32.const 0))
      (i32.const {RET})))
  (core instance $main (instantiate $Main (with "libc" (instance $libc)) (with "host" (instance $host-core))))

  (type $tenant-t (record (field "id" string) (field "database-path" string) (field "watch-dir" string) (field "default-prefix" string)))
  (export $tenant "tenant" (type $tenant-t))
  (type $accept-t (record (field "prefix" (option string)) (field "labels" (list (tuple string string)))))
  (export $accept "accept" (type $accept-t))
  (type $decision-t (variant (case "accept" $accept) (case "refuse" string)))
  (export $decision "decision" (type $decision-t))

  (type $register-t (func (param "tenant" $tenant) (result (result $decision (error string)))))
  (alias core export $main "on-register" (core func $register-core))
  (func $register (type $register-t) (canon lift (core func $register-core) (memory $mem) (realloc $realloc)))
  (export "on-register" (func $register))

  (type $unregister-t (func (param "tenant" $tenant) (result (result (error string)))))
  (alias core export $main "on-unregister" (core func $unregister-core))
  (func $unregister (type $unregister-t) (canon lift (core func $unregister-core) (memory $mem) (realloc $realloc)))
  (export "on-unregister" (func $unregister))
)"#
    )
}

/// The component binary for a behaviour.
pub fn component(b: &Behaviour) -> Vec<u8> {
    let text = component_wat(b);
    match wat::parse_str(&text) {
        Ok(bytes) => bytes,
        Err(e) => panic!("generated WAT does not parse: {e}\n{text}"),
    }
}
