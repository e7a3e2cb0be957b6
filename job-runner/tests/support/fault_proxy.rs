//! A fault-injecting HTTP/1.1 reverse proxy in front of an S3 endpoint (an [`S3Server`]),
//! for tests of how the runner lives through a flaky network and a flaky store.
//!
//! It works on raw TCP: it reads each request head and body itself, forwards the request to
//! the upstream on a fresh connection, reads the whole answer, then writes it to the client
//! whole, or not at all, or cut short, as the fault decided. Client connections are kept
//! alive between requests (the AWS SDK pools them) except where a fault closes them.
//!
//! Which request gets which fault is decided from a seed and the request itself (method,
//! target, and how often the same request was seen before), not from arrival order, so a
//! run with many concurrent requests gets the same faults on the same requests every time.
//!
//! [`S3Server`]: super::S3Server

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The faults the proxy injects at random, each at its own rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `503 SlowDown`, S3's throttling answer; the request does not reach the store.
    SlowDown,
    /// `500 InternalError`; the request does not reach the store.
    InternalError,
    /// The request reaches the store; its status, headers and about half its body reach the
    /// client, then the connection is reset (TCP RST). A response without a body is cut in
    /// the middle of its head instead.
    Reset,
    /// The request reaches the store; its response is held for [`FaultConfig::stall`]
    /// (longer than the client's timeout) before it is sent, if the client still waits.
    Stall,
    /// The request reaches the store; the head (with the full Content-Length) and part of
    /// the body are sent, then the connection is closed cleanly (FIN). A response without a
    /// body is cut in the middle of its head instead.
    Truncate,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::SlowDown,
        FaultKind::InternalError,
        FaultKind::Reset,
        FaultKind::Stall,
        FaultKind::Truncate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::SlowDown => "503 SlowDown",
            FaultKind::InternalError => "500 InternalError",
            FaultKind::Reset => "reset mid-body",
            FaultKind::Stall => "stall",
            FaultKind::Truncate => "truncated body",
        }
    }
}

/// The share of requests (0 to 1) that gets each fault; the sum should stay at most 1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    pub slow_down: f64,
    pub internal_error: f64,
    pub reset: f64,
    pub stall: f64,
    pub truncate: f64,
}

impl FaultRates {
    pub const NONE: FaultRates = FaultRates {
        slow_down: 0.0,
        internal_error: 0.0,
        reset: 0.0,
        stall: 0.0,
        truncate: 0.0,
    };

    /// `rate` of one kind, none of the others.
    pub fn only(kind: FaultKind, rate: f64) -> FaultRates {
        let mut rates = FaultRates::NONE;
        *rates.of_mut(kind) = rate;
        rates
    }

    /// `rate` of every kind (5 x `rate` of the requests in all).
    pub fn each(rate: f64) -> FaultRates {
        FaultRates {
            slow_down: rate,
            internal_error: rate,
            reset: rate,
            stall: rate,
            truncate: rate,
        }
    }

    pub fn of(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::SlowDown => self.slow_down,
            FaultKind::InternalError => self.internal_error,
            FaultKind::Reset => self.reset,
            FaultKind::Stall => self.stall,
            FaultKind::Truncate => self.truncate,
        }
    }

    fn of_mut(&mut self, kind: FaultKind) -> &mut f64 {
        match kind {
            FaultKind::SlowDown => &mut self.slow_down,
            FaultKind::InternalError => &mut self.internal_error,
            FaultKind::Reset => &mut self.reset,
            FaultKind::Stall => &mut self.stall,
            FaultKind::Truncate => &mut self.truncate,
        }
    }

    /// The fault for a uniform draw `x` in [0, 1), if any.
    fn pick(&self, x: f64) -> Option<FaultKind> {
        let mut bound = 0.0;
        for kind in FaultKind::ALL {
            bound += self.of(kind);
            if x < bound {
                return Some(kind);
            }
        }
        None
    }
}

/// How a [`FaultProxy`] behaves.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    pub seed: u64,
    pub rates: FaultRates,
    /// How long a stalled response is held: make it longer than the client's timeout.
    pub stall: Duration,
    /// Emulates AWS S3 for a bucket in this region: a request signed for another region
    /// (SigV4 credential scope) gets `301 PermanentRedirect` with `x-amz-bucket-region`.
    pub region_redirect: Option<String>,
    /// Emulates older MinIO and Ceph: a request with flexible-checksum headers
    /// (`x-amz-checksum-*`, `x-amz-sdk-checksum-algorithm`) or an aws-chunked body gets
    /// `400 InvalidArgument`.
    pub reject_checksum_headers: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            rates: FaultRates::NONE,
            stall: Duration::from_secs(3),
            region_redirect: None,
            reject_checksum_headers: false,
        }
    }
}

impl FaultConfig {
    pub fn with_rates(seed: u64, rates: FaultRates) -> FaultConfig {
        FaultConfig {
            seed,
            rates,
            ..FaultConfig::default()
        }
    }
}

/// What the proxy saw and did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Client connections accepted: fewer than requests when clients keep them alive.
    pub connections: u64,
    /// Requests read from clients, whatever happened to them.
    pub requests: u64,
    pub slow_down: u64,
    pub internal_error: u64,
    pub reset: u64,
    pub stall: u64,
    pub truncate: u64,
    /// Answered `301 PermanentRedirect` (see [`FaultConfig::region_redirect`]).
    pub redirected: u64,
    /// Answered `400 InvalidArgument` (see [`FaultConfig::reject_checksum_headers`]).
    pub checksum_rejected: u64,
    /// Held by a [`FaultProxy::pause_on`] hook.
    pub held: u64,
}

impl FaultCounts {
    /// The column names of the [`Display`](fmt::Display) row.
    pub const HEADER: &'static str =
        "conns requests    503    500  reset  stall  trunc  redir   csum   held";

    pub fn of(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::SlowDown => self.slow_down,
            FaultKind::InternalError => self.internal_error,
            FaultKind::Reset => self.reset,
            FaultKind::Stall => self.stall,
            FaultKind::Truncate => self.truncate,
        }
    }

    /// Random faults injected, every kind together.
    pub fn faults(&self) -> u64 {
        FaultKind::ALL.iter().map(|&kind| self.of(kind)).sum()
    }

    fn of_mut(&mut self, kind: FaultKind) -> &mut u64 {
        match kind {
            FaultKind::SlowDown => &mut self.slow_down,
            FaultKind::InternalError => &mut self.internal_error,
            FaultKind::Reset => &mut self.reset,
            FaultKind::Stall => &mut self.stall,
            FaultKind::Truncate => &mut self.truncate,
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>5} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            self.connections,
            self.requests,
            self.slow_down,
            self.internal_error,
            self.reset,
            self.stall,
            self.truncate,
            self.redirected,
            self.checksum_rejected,
            self.held
        )
    }
}

/// A request held by a [`FaultProxy::pause_on`] hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paused {
    pub method: String,
    /// The request target: path and query.
    pub path: String,
}

/// One request as the proxy handled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub method: String,
    pub path: String,
    /// What happened: "ok", a fault's name, "redirect", "checksum", "held", "error".
    pub outcome: &'static str,
}

type Predicate = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

struct Hook {
    matches: Predicate,
    notify: std::sync::mpsc::Sender<Paused>,
}

/// Counts the requests matching a predicate that were answered in full.
#[derive(Clone)]
pub struct Answered(Arc<AtomicU64>);

impl Answered {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Shared {
    upstream: SocketAddr,
    config: Mutex<FaultConfig>,
    always_503: AtomicBool,
    counts: Mutex<FaultCounts>,
    /// How often each request (method and target) was seen: its retries draw anew.
    seen: Mutex<HashMap<String, u64>>,
    hooks: Mutex<Vec<Hook>>,
    watches: Mutex<Vec<(Predicate, Arc<AtomicU64>)>>,
    log: Mutex<Vec<Handled>>,
}

/// The proxy, listening on `endpoint` for as long as this value lives.
pub struct FaultProxy {
    pub endpoint: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, config: FaultConfig) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .parse()
            .expect("upstream is http://IP:PORT");
        let shared = Arc::new(Shared {
            upstream,
            config: Mutex::new(config),
            always_503: AtomicBool::new(false),
            counts: Mutex::new(FaultCounts::default()),
            seen: Mutex::new(HashMap::new()),
            hooks: Mutex::new(Vec::new()),
            watches: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                            _ = &mut stopped => break,
                        };
                        let _ = socket.set_nodelay(true);
                        shared.count(|counts| counts.connections += 1);
                        tokio::spawn(serve_connection(Arc::clone(&shared), socket));
                    }
                });
                // Dropping the runtime drops every connection still open.
            })
        };
        FaultProxy {
            endpoint: format!("http://{address}"),
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The `fruitpipe` binary, set up to talk to the store through this proxy.
    pub fn fruitpipe(&self) -> std::process::Command {
        super::fruitpipe_for(&self.endpoint)
    }

    pub fn counts(&self) -> FaultCounts {
        *self.shared.counts.lock().unwrap()
    }

    /// Changes the fault rates from the next request on.
    pub fn set_rates(&self, rates: FaultRates) {
        self.shared.config.lock().unwrap().rates = rates;
    }

    /// While on, every request is answered `503 SlowDown`, whatever the rates.
    pub fn set_always_503(&self, on: bool) {
        self.shared.always_503.store(on, Ordering::SeqCst);
    }

    /// The next request for which `matches(method, target)` holds is held: never forwarded
    /// nor answered, until its client goes away or the proxy is dropped. The receiver is
    /// told when it arrives (once), so that a test can kill the client at that moment.
    pub fn pause_on(
        &self,
        matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> std::sync::mpsc::Receiver<Paused> {
        let (notify, receiver) = std::sync::mpsc::channel();
        self.shared.hooks.lock().unwrap().push(Hook {
            matches: Box::new(matches),
            notify,
        });
        receiver
    }

    /// Counts, from now on, the requests for which `matches(method, target)` holds and
    /// whose real response was sent whole.
    pub fn count_answered(
        &self,
        matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Answered {
        let counter = Arc::new(AtomicU64::new(0));
        self.shared
            .watches
            .lock()
            .unwrap()
            .push((Box::new(matches), Arc::clone(&counter)));
        Answered(counter)
    }

    /// Every request handled so far, in the order their handling ended.
    pub fn log(&self) -> Vec<Handled> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A small deterministic generator: SplitMix64.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uniform draw in [0, 1) for the `occurrence`-th sighting of request `key`.
fn draw(seed: u64, key: &str, occurrence: u64) -> f64 {
    let mut state = seed ^ fnv1a(key.as_bytes()) ^ occurrence.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    splitmix64(&mut state);
    (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64
}

/// The fault for the `occurrence`-th sighting (from 1) of request `key`, `"METHOD target"`,
/// as a proxy with this seed and these rates decides it.
pub fn pick_fault(rates: &FaultRates, seed: u64, key: &str, occurrence: u64) -> Option<FaultKind> {
    rates.pick(draw(seed, key, occurrence))
}

/// A parsed HTTP/1.1 message head.
struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n").filter(|line| !line.is_empty());
        let first_line = lines.next()?.to_string();
        let headers = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_string(), value.trim().to_string()))
            })
            .collect();
        Some(Head {
            first_line,
            headers,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .any(|(_, value)| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
    }

    fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection", "expect"]
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// One client request, its body raw (chunked framing kept when it was chunked).
struct Request {
    method: String,
    target: String,
    head: Head,
    body: Vec<u8>,
}

impl Request {
    /// The request as sent upstream, on a connection of its own.
    fn upstream_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.head.first_line);
        for (name, value) in &self.head.headers {
            if !is_hop_by_hop(name) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    fn wants_close(&self) -> bool {
        self.head.has_token("connection", "close") || self.head.first_line.ends_with("HTTP/1.0")
    }

    /// The region of the SigV4 credential scope, from the Authorization header or a
    /// presigned URL's `X-Amz-Credential`.
    fn signed_region(&self) -> Option<String> {
        let scope = if let Some(auth) = self.head.get("authorization") {
            let at = auth.find("Credential=")? + "Credential=".len();
            auth[at..].split([',', ' ']).next()?.to_string()
        } else {
            let query = self.target.split_once('?')?.1;
            let value = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("X-Amz-Credential="))?;
            value.replace("%2F", "/").replace("%2f", "/")
        };
        scope.split('/').nth(2).map(str::to_string)
    }

    fn carries_checksum(&self) -> bool {
        self.head.headers.iter().any(|(name, value)| {
            let name = name.to_ascii_lowercase();
            name.starts_with("x-amz-checksum-")
                || name == "x-amz-sdk-checksum-algorithm"
                || (name == "content-encoding"
                    && value.to_ascii_lowercase().contains("aws-chunked"))
                || (name == "x-amz-content-sha256"
                    && value.eq_ignore_ascii_case("STREAMING-UNSIGNED-PAYLOAD-TRAILER"))
        })
    }
}

/// One client connection with what was read ahead of the current request.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

const MAX_HEAD: usize = 1 << 20;

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

impl Connection {
    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let read = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read > 0)
    }

    async fn take_exact(&mut self, len: usize) -> std::io::Result<Vec<u8>> {
        while self.buffer.len() < len {
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buffer.drain(..len).collect())
    }

    async fn take_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buffer.drain(..at + 2).collect());
            }
            if self.buffer.len() > MAX_HEAD || !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The next request, or None when the client closed the connection between requests.
    async fn read_request(&mut self) -> std::io::Result<Option<Request>> {
        let end = loop {
            if let Some(end) = head_end(&self.buffer) {
                break end;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            if !self.fill().await? {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        };
        let raw: Vec<u8> = self.buffer.drain(..end).collect();
        let head = Head::parse(&raw).ok_or(std::io::ErrorKind::InvalidData)?;
        let mut parts = head.first_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        if head
            .get("expect")
            .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        let body = if head.is_chunked() {
            let mut body = Vec::new();
            loop {
                let line = self.take_line().await?;
                let size_text = String::from_utf8_lossy(&line);
                let size = usize::from_str_radix(
                    size_text.trim().split(';').next().unwrap_or("").trim(),
                    16,
                )
                .map_err(|_| std::io::ErrorKind::InvalidData)?;
                body.extend_from_slice(&line);
                if size == 0 {
                    loop {
                        let trailer = self.take_line().await?;
                        body.extend_from_slice(&trailer);
                        if trailer == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                body.extend(self.take_exact(size + 2).await?);
            }
            body
        } else {
            let length = head
                .get("content-length")
                .and_then(|value| value.parse::<usize>().ok())
                .unwrap_or(0);
            self.take_exact(length).await?
        };
        Ok(Some(Request {
            method,
            target,
            head,
            body,
        }))
    }

    /// Waits until the client closes the connection (or sends something, which is kept).
    async fn closed(&mut self) {
        loop {
            match self.fill().await {
                Ok(true) => continue,
                _ => return,
            }
        }
    }
}

/// A complete response as it goes to the client: head bytes and body bytes.
struct Response {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Response {
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        out.extend_from_slice(&self.body);
        out
    }

    /// Where a reset or a truncation cuts it: about half the body, or half the head when
    /// there is no body.
    fn cut(&self) -> usize {
        if self.body.is_empty() {
            self.head.len() / 2
        } else {
            self.head.len() + self.body.len() / 2
        }
    }
}

/// An S3 error answer, as S3 writes them.
fn s3_error(
    status: u16,
    reason: &str,
    code: &str,
    message: &str,
    extra: &[(&str, &str)],
    head_only: bool,
    close: bool,
) -> Response {
    let body = if head_only {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        )
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nx-amz-request-id: fault-proxy\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    Response {
        head: head.into_bytes(),
        body: body.into_bytes(),
    }
}

/// Sends `request` upstream and reads the whole answer (the upstream closes after it).
async fn forward(
    upstream: SocketAddr,
    request: &Request,
    close: bool,
) -> std::io::Result<Response> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&request.upstream_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let end = head_end(&raw).ok_or(std::io::ErrorKind::InvalidData)?;
    let head = Head::parse(&raw[..end]).ok_or(std::io::ErrorKind::InvalidData)?;
    let status: u16 = head
        .first_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(502);
    let body = raw[end..].to_vec();
    let mut out = format!("{}\r\n", head.first_line);
    for (name, value) in &head.headers {
        if !is_hop_by_hop(name) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let bodiless = request.method == "HEAD" || status == 204 || status == 304 || status < 200;
    if !bodiless && !head.is_chunked() && head.get("content-length").is_none() {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    Ok(Response {
        head: out.into_bytes(),
        body,
    })
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut FaultCounts)) {
        update(&mut self.counts.lock().unwrap());
    }

    fn record(&self, request: &Request, outcome: &'static str) {
        self.log.lock().unwrap().push(Handled {
            method: request.method.clone(),
            path: request.target.clone(),
            outcome,
        });
    }

    fn answered(&self, request: &Request) {
        for (matches, counter) in self.watches.lock().unwrap().iter() {
            if matches(&request.method, &request.target) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// True when a pause hook takes this request (the hook is used up).
    fn paused(&self, request: &Request) -> bool {
        let mut hooks = self.hooks.lock().unwrap();
        let Some(at) = hooks
            .iter()
            .position(|hook| (hook.matches)(&request.method, &request.target))
        else {
            return false;
        };
        let hook = hooks.remove(at);
        let _ = hook.notify.send(Paused {
            method: request.method.clone(),
            path: request.target.clone(),
        });
        true
    }

    fn decide(&self, request: &Request) -> Option<FaultKind> {
        if self.always_503.load(Ordering::SeqCst) {
            return Some(FaultKind::SlowDown);
        }
        let key = format!("{} {}", request.method, request.target);
        let occurrence = {
            let mut seen = self.seen.lock().unwrap();
            let count = seen.entry(key.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let config = self.config.lock().unwrap();
        pick_fault(&config.rates, config.seed, &key, occurrence)
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let mut connection = Connection {
        stream,
        buffer: Vec::new(),
    };
    loop {
        let request = match connection.read_request().await {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        shared.count(|counts| counts.requests += 1);
        let close = request.wants_close();
        let head_only = request.method == "HEAD";
        let (redirect, reject, stall) = {
            let config = shared.config.lock().unwrap();
            let redirect = config.region_redirect.clone().filter(|region| {
                request
                    .signed_region()
                    .is_some_and(|signed| signed != *region)
            });
            (
                redirect,
                config.reject_checksum_headers && request.carries_checksum(),
                config.stall,
            )
        };

        if let Some(region) = redirect {
            shared.count(|counts| counts.redirected += 1);
            shared.record(&request, "redirect");
            let answer = s3_error(
                301,
                "Moved Permanently",
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified endpoint.",
                &[("x-amz-bucket-region", &region)],
                head_only,
                close,
            );
            if connection.stream.write_all(&answer.bytes()).await.is_err() || close {
                return;
            }
            continue;
        }
        if reject {
            shared.count(|counts| counts.checksum_rejected += 1);
            shared.record(&request, "checksum");
            let answer = s3_error(
                400,
                "Bad Request",
                "InvalidArgument",
                "x-amz-checksum and aws-chunked uploads are not supported.",
                &[],
                head_only,
                close,
            );
            if connection.stream.write_all(&answer.bytes()).await.is_err() || close {
                return;
            }
            continue;
        }
        if shared.paused(&request) {
            shared.count(|counts| counts.held += 1);
            shared.record(&request, "held");
            connection.closed().await;
            return;
        }

        let fault = shared.decide(&request);
        if let Some(kind) = fault {
            shared.count(|counts| *counts.of_mut(kind) += 1);
        }
        let answer = match fault {
            Some(FaultKind::SlowDown) => {
                shared.record(&request, "503");
                s3_error(
                    503,
                    "Slow Down",
                    "SlowDown",
                    "Please reduce your request rate.",
                    &[],
                    head_only,
                    close,
                )
            }
            Some(FaultKind::InternalError) => {
                shared.record(&request, "500");
                s3_error(
                    500,
                    "Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                    &[],
                    head_only,
                    close,
                )
            }
            _ => match forward(shared.upstream, &request, close).await {
                Ok(answer) => answer,
                Err(_) => {
                    shared.record(&request, "error");
                    return;
                }
            },
        };
        match fault {
            Some(FaultKind::Reset) => {
                shared.record(&request, "reset");
                let bytes = answer.bytes();
                let _ = connection.stream.write_all(&bytes[..answer.cut()]).await;
                let _ = connection.stream.flush().await;
                // A moment for the bytes to leave before the RST discards what is unsent.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = connection.stream.set_zero_linger();
                return;
            }
            Some(FaultKind::Truncate) => {
                shared.record(&request, "truncate");
                let bytes = answer.bytes();
                let _ = connection.stream.write_all(&bytes[..answer.cut()]).await;
                let _ = connection.stream.shutdown().await;
                return;
            }
            Some(FaultKind::Stall) => {
                shared.record(&request, "stall");
                let gone = tokio::select! {
                    _ = tokio::time::sleep(stall) => false,
                    _ = connection.closed() => true,
                };
                if gone {
                    return;
                }
            }
            Some(FaultKind::SlowDown | FaultKind::InternalError) => {}
            None => shared.record(&request, "ok"),
        }
        if connection.stream.write_all(&answer.bytes()).await.is_err() {
            return;
        }
        if fault.is_none() || fault == Some(FaultKind::Stall) {
            shared.answered(&request);
        }
        if close {
            let _ = connection.stream.shutdown().await;
            return;
        }
    }
}
