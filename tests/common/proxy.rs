//! A TCP proxy that injects storage faults: it sits on `127.0.0.1:<port>` in front of
//! an S3 server (or anything speaking HTTP/1.1) and forwards bytes both ways, or
//! refuses, swallows, resets, delays, throttles or corrupts them, as its [`Mode`] says.
//! The mode can be changed at any time from a test and takes effect on open connections
//! too, so a daemon using it sees an outage *and* its end without being restarted.
//!
//! It frames HTTP/1.1 messages (Content-Length, chunked, bodies that HEAD, 1xx, 204 and
//! 304 responses do not have) just enough to aim: "half-way through an upload", "in the
//! body of a GET of an `.ltx` object", "before each request". It runs on its own tokio
//! runtime (two threads), talks to loopback only, and every wait in it is bounded by
//! the mode changing or by [`MAX_HOLD`].

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// Longest a connection is held (blackhole, latency) before the proxy gives up on it
/// and resets it: no test waits on the proxy forever.
pub const MAX_HOLD: Duration = Duration::from_secs(120);

/// What the proxy does to the traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything as it is.
    Pass,
    /// The port is closed (connections are refused) and open connections are reset.
    Refuse,
    /// Nothing is forwarded either way (a network partition): connections are accepted
    /// but held, bytes wait; when the mode changes they flow again.
    Blackhole,
    /// Every request with a body (an upload: PUT, POST) is forwarded half-way, then both
    /// sides of the connection are reset.
    ResetUploads,
    /// Every request is held this long before it is forwarded.
    Latency(Duration),
    /// Responses flow at most this many bytes per second.
    Throttle(u64),
    /// One byte in the body of every GET response for an `.ltx` object is flipped
    /// (storage answering garbage).
    FlipLtxGets,
}

/// What the proxy has done so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub resets: AtomicU64,
    pub uploads_cut: AtomicU64,
    pub bytes_flipped: AtomicU64,
    pub delayed: AtomicU64,
}

/// The proxy; dropping it stops it (open connections are dropped).
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    stats: Arc<ProxyStats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`, in [`Mode::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        assert!(upstream.ip().is_loopback(), "the proxy only forwards to loopback, not {upstream}");
        let probe = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = probe.local_addr().expect("local_addr");
        drop(probe);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("tokio runtime for the proxy");
        let (mode, rx) = watch::channel(Mode::Pass);
        let stats = Arc::new(ProxyStats::default());
        let st = stats.clone();
        // Bind before returning, so the first connection never races the accept loop.
        let first = runtime.block_on(async { bind(addr).await }).expect("binding the proxy port");
        runtime.spawn(accept_loop(Some(first), addr, upstream, rx, st));
        FaultProxy { addr, mode, stats, runtime: Some(runtime) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the mode; open connections follow at once.
    pub fn set(&self, mode: Mode) {
        eprintln!("proxy {}: {:?}", self.addr, mode);
        self.mode.send_replace(mode);
        if *self.mode.borrow() == Mode::Pass {
            // The listener is back once `bind` succeeded: wait for it (bounded).
            let ok = super::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            });
            assert!(ok, "the proxy did not listen again on {}", self.addr);
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode.borrow().clone()
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        match s.bind(addr).and_then(|()| s.listen(128)) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Listens while the mode is not `Refuse`; closes the port while it is.
async fn accept_loop(
    mut listener: Option<tokio::net::TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Mode>,
    stats: Arc<ProxyStats>,
) {
    loop {
        if *rx.borrow_and_update() == Mode::Refuse {
            listener = None;
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match bind(addr).await {
                Ok(l) => l,
                Err(e) => panic!("the proxy cannot listen on {addr} again: {e}"),
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((sock, _)) = accepted else { continue };
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(sock, upstream, rx.clone(), stats.clone()));
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *rx.borrow() == Mode::Refuse {
                        break;
                    }
                }
            }
        }
        drop(l);
    }
}

/// Resets a connection (RST, not FIN).
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// Waits while the mode is `Blackhole` (bounded). `false`: the mode became `Refuse`, or
/// the wait was too long, and the connection must be reset.
async fn wait_open(rx: &mut watch::Receiver<Mode>) -> bool {
    let deadline = tokio::time::Instant::now() + MAX_HOLD;
    loop {
        match &*rx.borrow_and_update() {
            Mode::Refuse => return false,
            Mode::Blackhole => {}
            _ => return true,
        }
        tokio::select! {
            c = rx.changed() => if c.is_err() { return false },
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// What is known of a request whose response has not been seen yet.
#[derive(Debug)]
struct Pending {
    head_only: bool,
    ltx_get: bool,
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Mode>,
    stats: Arc<ProxyStats>,
) {
    if !wait_open(&mut rx).await {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        return reset(client);
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut req = Framer::new(false);
    let mut resp = Framer::new(true);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut up = vec![0u8; 64 << 10];
    let mut down = vec![0u8; 64 << 10];
    let end = loop {
        if !wait_open(&mut rx).await {
            break Flow::Reset;
        }
        let mode = rx.borrow().clone();
        let flow = tokio::select! {
            n = client.read(&mut up) => match n {
                Ok(0) | Err(_) => Flow::Close,
                Ok(n) => requests(&mut up[..n], &mut server, &mut req, &mut pending, &mode, &mut rx, &stats).await,
            },
            n = server.read(&mut down) => match n {
                Ok(0) | Err(_) => Flow::Close,
                Ok(n) => responses(&mut down[..n], &mut client, &mut resp, &mut pending, &mode, &stats).await,
            },
            _ = rx.changed() => Flow::Go,
        };
        match flow {
            Flow::Go => {}
            other => break other,
        }
    };
    match end {
        Flow::Reset => {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            reset(server);
            reset(client);
        }
        _ => {
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
    }
}

/// How a connection goes on after a chunk was handled.
enum Flow {
    Go,
    Close,
    Reset,
}

/// Forwards a chunk of requests to the server, applying `mode`.
async fn requests(
    data: &mut [u8],
    server: &mut TcpStream,
    req: &mut Framer,
    pending: &mut VecDeque<Pending>,
    mode: &Mode,
    rx: &mut watch::Receiver<Mode>,
    stats: &ProxyStats,
) -> Flow {
    let mut done = 0;
    while done < data.len() {
        let (segs, used) = req.feed_message(&data[done..], |_| BodyRule::Framed);
        let chunk = &data[done..done + used];
        let mut written = 0;
        for s in &segs {
            match *s {
                Seg::Head { ref head, at } => {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    let (method, target) = request_line(head);
                    let path = target.split('?').next().unwrap_or("");
                    pending.push_back(Pending {
                        head_only: method == "HEAD",
                        ltx_get: method == "GET" && path.ends_with(".ltx"),
                    });
                    if let Mode::Latency(d) = *mode {
                        // Forward what came before this request, then hold it.
                        if server.write_all(&chunk[written..at]).await.is_err() {
                            return Flow::Close;
                        }
                        written = at;
                        stats.delayed.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = tokio::time::sleep(d.min(MAX_HOLD)) => {}
                            _ = rx.changed() => {}
                        }
                    }
                }
                Seg::Body { at, offset, len, total } if *mode == Mode::ResetUploads && req.method_has_upload() => {
                    let half = (total.unwrap_or(8192) / 2).max(1);
                    if offset + len as u64 > half {
                        let cut = at + (half.saturating_sub(offset)) as usize;
                        stats.uploads_cut.fetch_add(1, Ordering::Relaxed);
                        let _ = server.write_all(&chunk[written..cut]).await;
                        let _ = server.flush().await;
                        return Flow::Reset;
                    }
                }
                _ => {}
            }
        }
        if server.write_all(&chunk[written..]).await.is_err() {
            return Flow::Close;
        }
        done += used;
    }
    Flow::Go
}

/// Forwards a chunk of responses to the client, applying `mode`.
async fn responses(
    data: &mut [u8],
    client: &mut TcpStream,
    resp: &mut Framer,
    pending: &mut VecDeque<Pending>,
    mode: &Mode,
    stats: &ProxyStats,
) -> Flow {
    let mut done = 0;
    while done < data.len() {
        let front = pending.front().map(|p| (p.head_only, p.ltx_get));
        let (segs, used) = resp.feed_message(&data[done..], |status| {
            if (100..200).contains(&status) {
                BodyRule::Interim
            } else if front.is_some_and(|f| f.0) || status == 204 || status == 304 {
                BodyRule::None
            } else {
                BodyRule::Framed
            }
        });
        for s in &segs {
            match *s {
                Seg::Body { at, offset, len, total } if *mode == Mode::FlipLtxGets && front.is_some_and(|f| f.1) => {
                    let target = total.map_or(100, |t| t / 2);
                    if (offset..offset + len as u64).contains(&target) {
                        data[done + at + (target - offset) as usize] ^= 0x40;
                        stats.bytes_flipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Seg::End { interim: false } => {
                    pending.pop_front();
                }
                _ => {}
            }
        }
        if let Mode::Throttle(rate) = *mode {
            tokio::time::sleep(Duration::from_secs_f64(used as f64 / rate.max(1) as f64)).await;
        }
        if client.write_all(&data[done..done + used]).await.is_err() {
            return Flow::Close;
        }
        done += used;
    }
    Flow::Go
}

/// `(method, target)` of a request head.
fn request_line(head: &[u8]) -> (String, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut it = line.split_whitespace();
    (it.next().unwrap_or("").to_string(), it.next().unwrap_or("").to_string())
}

/// A piece of one chunk of the stream, as [`Framer::feed`] found it.
#[derive(Debug, PartialEq)]
pub enum Seg {
    /// A message head completed in this chunk; its first byte is at `at` if it started
    /// in this chunk (else at 0).
    Head { head: Vec<u8>, at: usize },
    /// `len` body bytes at `at` in the chunk, `offset` bytes into the (de-chunked) body,
    /// whose length is `total` when a Content-Length gave it.
    Body { at: usize, offset: u64, len: usize, total: Option<u64> },
    /// A message ended (an interim 1xx response: `interim`).
    End { interim: bool },
}

/// How a response's body is framed, decided from its status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyRule {
    /// By its headers (Content-Length, chunked, or until the connection closes).
    Framed,
    /// No body (a response to HEAD, 204, 304).
    None,
    /// A 1xx response: no body, and the real response follows.
    Interim,
}

#[derive(Debug)]
enum Phase {
    Head,
    Body { left: u64 },
    ChunkSize,
    ChunkData { left: u64 },
    ChunkEnd { left: u8 },
    Trailers,
    UntilClose,
}

/// Finds HTTP/1.1 message boundaries in one direction of a connection.
pub struct Framer {
    response: bool,
    phase: Phase,
    head: Vec<u8>,
    line: Vec<u8>,
    offset: u64,
    total: Option<u64>,
    interim: bool,
    method: String,
}

/// Longest message head accepted; past it the framer treats the stream as opaque.
const MAX_HEAD: usize = 64 << 10;

impl Framer {
    pub fn new(response: bool) -> Framer {
        Framer {
            response,
            phase: Phase::Head,
            head: Vec::new(),
            line: Vec::new(),
            offset: 0,
            total: None,
            interim: false,
            method: String::new(),
        }
    }

    /// Whether the current request is an upload (PUT or POST).
    pub fn method_has_upload(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST")
    }

    /// Feeds a chunk, up to the end of the first message that ends in it; returns what
    /// it found and how many bytes it used (positions in [`Seg`] are relative to
    /// `data`). `rule` decides, for a response, from its status code, whether it has a
    /// body.
    pub fn feed_message(&mut self, data: &[u8], mut rule: impl FnMut(u16) -> BodyRule) -> (Vec<Seg>, usize) {
        let mut out: Vec<Seg> = Vec::new();
        let mut i = 0;
        let mut head_start = 0;
        while i < data.len() {
            if matches!(out.last(), Some(Seg::End { .. })) {
                break;
            }
            match &mut self.phase {
                Phase::Head => {
                    if self.head.is_empty() {
                        head_start = i;
                    }
                    self.head.push(data[i]);
                    i += 1;
                    if self.head.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(&mut self.head);
                        self.start_body(&head, &mut rule);
                        out.push(Seg::Head { head, at: head_start });
                        if let Phase::Head = self.phase {
                            out.push(Seg::End { interim: std::mem::take(&mut self.interim) });
                        }
                    } else if self.head.len() > MAX_HEAD {
                        self.phase = Phase::UntilClose;
                    }
                }
                Phase::Body { left } => {
                    let n = (*left).min((data.len() - i) as u64) as usize;
                    out.push(Seg::Body { at: i, offset: self.offset, len: n, total: self.total });
                    self.offset += n as u64;
                    *left -= n as u64;
                    i += n;
                    if *left == 0 {
                        self.phase = Phase::Head;
                        out.push(Seg::End { interim: false });
                    }
                }
                Phase::ChunkSize => {
                    self.line.push(data[i]);
                    i += 1;
                    if self.line.ends_with(b"\r\n") {
                        let text = String::from_utf8_lossy(&self.line);
                        let hex = text.trim().split(';').next().unwrap_or("").trim().to_string();
                        self.line.clear();
                        let size = u64::from_str_radix(&hex, 16).unwrap_or(0);
                        self.phase = if size == 0 { Phase::Trailers } else { Phase::ChunkData { left: size } };
                    } else if self.line.len() > 1024 {
                        self.phase = Phase::UntilClose;
                    }
                }
                Phase::ChunkData { left } => {
                    let n = (*left).min((data.len() - i) as u64) as usize;
                    out.push(Seg::Body { at: i, offset: self.offset, len: n, total: None });
                    self.offset += n as u64;
                    *left -= n as u64;
                    i += n;
                    if *left == 0 {
                        self.phase = Phase::ChunkEnd { left: 2 };
                    }
                }
                Phase::ChunkEnd { left } => {
                    i += 1;
                    *left -= 1;
                    if *left == 0 {
                        self.phase = Phase::ChunkSize;
                    }
                }
                Phase::Trailers => {
                    self.line.push(data[i]);
                    i += 1;
                    if self.line.ends_with(b"\r\n") {
                        let empty = self.line.len() == 2;
                        self.line.clear();
                        if empty {
                            self.phase = Phase::Head;
                            out.push(Seg::End { interim: false });
                        }
                    }
                }
                Phase::UntilClose => {
                    out.push(Seg::Body { at: i, offset: self.offset, len: data.len() - i, total: None });
                    self.offset += (data.len() - i) as u64;
                    i = data.len();
                }
            }
        }
        (out, i)
    }

    fn start_body(&mut self, head: &[u8], rule: &mut impl FnMut(u16) -> BodyRule) {
        let text = String::from_utf8_lossy(head).to_string();
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("");
        let mut length = None;
        let mut chunked = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                if k == "content-length" {
                    length = v.parse::<u64>().ok();
                } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                }
            }
        }
        self.offset = 0;
        self.total = length;
        if self.response {
            let status = first.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
            match rule(status) {
                BodyRule::Interim => {
                    self.interim = true;
                    self.phase = Phase::Head;
                    return;
                }
                BodyRule::None => {
                    self.phase = Phase::Head;
                    return;
                }
                BodyRule::Framed => {}
            }
        } else {
            self.method = first.split_whitespace().next().unwrap_or("").to_string();
        }
        self.phase = if chunked {
            Phase::ChunkSize
        } else {
            match length {
                Some(0) => Phase::Head,
                Some(n) => Phase::Body { left: n },
                None if self.response => Phase::UntilClose,
                None => Phase::Head,
            }
        };
    }
}
