//! `GET`/`HEAD` `/metrics` and `/healthz`. Rendering runs off the async
//! workers so a large scrape never delays event delivery.
//!
//! The listener may face a whole network (`--listen 0.0.0.0`) before any
//! authentication, so connections are a budget shared fairly between
//! client addresses ([`Pool`]):
//! - each address (an IPv6 /64 counts as one) holds at most
//!   [`Limits::per_peer`] connections;
//! - a connection must send its request head within [`Limits::head_timeout`]
//!   of connecting or of its first byte after a response, may sit idle
//!   between requests for [`Limits::idle_timeout`], and is closed when a
//!   response it does not read stalls for [`Limits::write_stall`];
//! - when the pool is full, a newcomer takes the slot of an idle connection
//!   (idle: no request being answered, which includes one still sending its
//!   head slowly) of the address holding the most, oldest first; so clients
//!   with one connection each (Prometheus, a liveness probe) are the last
//!   to lose theirs, whatever one address does;
//! - when every connection is busy answering, a few more are answered one
//!   request each: `/healthz` normally (a liveness probe must not restart a
//!   healthy daemon because scrapes are slow), anything else 503.
//!
//! Concurrent scrapes share renders ([`RenderGate`]): a busy or hostile
//! scraper costs at most one render at a time. A scrape alone is sent as
//! it is rendered, in chunks: the whole body (9 MiB at 10,000 cgroups) is
//! never held at once.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame, SizeHint},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

use super::web_config::{AuthOutcome, WebConfig};
use crate::outputs::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// What one listener lets its clients hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections kept open at once (idle, reading a head, or answering).
    pub max_connections: usize,
    /// Of those, per client address (IPv4 address, IPv6 /64).
    pub per_peer: usize,
    /// One-request connections beyond `max_connections`, used only when
    /// every pooled connection is busy answering: `/healthz` is answered,
    /// anything else gets 503.
    pub overflow: usize,
    pub overflow_per_peer: usize,
    /// From connecting (or from the first byte after a response) to a
    /// complete request head, TLS handshake included.
    pub head_timeout: Duration,
    /// Keep-alive: between a response and the next request's first byte.
    pub idle_timeout: Duration,
    /// A response the client does not read for this long ends the connection.
    pub write_stall: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_connections: 64,
        per_peer: 8,
        overflow: 16,
        overflow_per_peer: 2,
        head_timeout: Duration::from_secs(5),
        // Longer than the usual scrape intervals up to 1m, so Prometheus
        // keeps reusing its connection.
        idle_timeout: Duration::from_secs(75),
        write_stall: Duration::from_secs(10),
    };
}

/// A connection whose response has not moved for this long counts as idle
/// when a slot is needed: its client is not reading.
const STALLED_IS_IDLE: Duration = Duration::from_secs(1);
/// A one-request (overflow) connection has this long in all.
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(3);
/// Bounds a request head's buffer (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How often a connection's deadlines are checked.
const WATCH_TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: address in use (another process holds it; choose another with --listen)")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds before the daemon drops privileges (and before the runtime
/// exists), so a port conflict fails the start with one clear line.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, HttpError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => HttpError::InUse { addr },
        _ => HttpError::Bind { addr, source },
    })?;
    listener.set_nonblocking(true).map_err(|source| HttpError::Bind { addr, source })?;
    Ok(listener)
}

/// The unit the per-address limit counts: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 /64, since one host usually has a whole /64.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

// ---------------------------------------------------------------- pool

/// Milliseconds since the pool started, plus one: 0 means "not set".
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }

    fn since(self, stamp: u64) -> Duration {
        Duration::from_millis(self.now().saturating_sub(stamp))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Pooled,
    /// Beyond the pool: one request, `/healthz` only.
    Overflow,
}

/// What a connection's task and the pool both see of it.
struct Conn {
    id: u64,
    peer: IpAddr,
    lane: Lane,
    clock: Clock,
    /// A request is being answered (from its head until its body is handed
    /// to the connection).
    busy: AtomicBool,
    /// When the connection last became idle: accepted, or its last response
    /// sent. Eviction goes oldest first by this.
    idle_since: AtomicU64,
    /// First byte of the next request head, while idle (0: none yet).
    head_started: AtomicU64,
    /// A write is waiting for the client to read (0: none).
    write_blocked_since: AtomicU64,
    /// Requests answered; a new connection has `head_timeout` to send its
    /// first, a kept-alive one `idle_timeout` to start the next.
    answered: AtomicU64,
    evicted: Notify,
}

impl Conn {
    fn evictable(&self) -> bool {
        !self.busy.load(Relaxed) || self.write_stalled_for() >= STALLED_IS_IDLE
    }

    fn write_stalled_for(&self) -> Duration {
        match self.write_blocked_since.load(Relaxed) {
            0 => Duration::ZERO,
            t => self.clock.since(t),
        }
    }

    /// Why this connection must end now, if it must.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        if self.write_stalled_for() >= limits.write_stall {
            return Some("client stopped reading the response");
        }
        if self.busy.load(Relaxed) {
            return None;
        }
        match self.head_started.load(Relaxed) {
            0 => {
                let (limit, why) = if self.answered.load(Relaxed) == 0 {
                    (limits.head_timeout, "no request head in time")
                } else {
                    (limits.idle_timeout, "idle")
                };
                (self.clock.since(self.idle_since.load(Relaxed)) >= limit).then_some(why)
            }
            started => (self.clock.since(started) >= limits.head_timeout).then_some("request head too slow"),
        }
    }

    /// Marks the connection busy until the returned guard (moved into the
    /// response body) is dropped.
    fn begin_request(self: &Arc<Self>) -> BusyGuard {
        self.busy.store(true, Relaxed);
        self.head_started.store(0, Relaxed);
        BusyGuard(self.clone())
    }
}

struct BusyGuard(Arc<Conn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.answered.fetch_add(1, Relaxed);
        c.head_started.store(0, Relaxed);
        c.idle_since.store(c.clock.now(), Relaxed);
        c.busy.store(false, Relaxed);
    }
}

enum Admission {
    Admitted(Arc<Conn>),
    Refused,
}

/// The connections of one listener and the rules for who gets a slot.
struct Pool {
    limits: Limits,
    clock: Clock,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    refused: AtomicUsize,
}

impl Pool {
    fn new(limits: Limits) -> Self {
        Self { limits, clock: Clock(Instant::now()), next_id: AtomicU64::new(1), conns: Mutex::default(), refused: AtomicUsize::new(0) }
    }

    fn admit(&self, peer: IpAddr) -> Admission {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let pooled = |c: &&Arc<Conn>| c.lane == Lane::Pooled;
        let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
        for c in conns.values().filter(pooled) {
            *per_peer.entry(c.peer).or_default() += 1;
        }
        let mine = per_peer.get(&peer).copied().unwrap_or(0);
        let total = per_peer.values().sum::<usize>();
        let victim = if mine >= self.limits.per_peer {
            // This address is at its limit: it gives up its own oldest idle one.
            Some(conns.values().filter(pooled).filter(|c| c.peer == peer && c.evictable()).min_by_key(|c| c.idle_since.load(Relaxed)).map(|c| c.id))
        } else if total >= self.limits.max_connections {
            // Full: an idle connection of the address holding the most, as
            // long as it holds more than this one would.
            Some(
                conns
                    .values()
                    .filter(pooled)
                    .filter(|c| per_peer[&c.peer] > mine && c.evictable())
                    .max_by_key(|c| (per_peer[&c.peer], std::cmp::Reverse(c.idle_since.load(Relaxed))))
                    .map(|c| c.id),
            )
        } else {
            None
        };
        let lane = match victim {
            None => Lane::Pooled,
            Some(Some(id)) => {
                if let Some(old) = conns.remove(&id) {
                    old.evicted.notify_one();
                }
                Lane::Pooled
            }
            Some(None) => {
                let overflow: Vec<_> = conns.values().filter(|c| c.lane == Lane::Overflow).collect();
                if overflow.len() >= self.limits.overflow || overflow.iter().filter(|c| c.peer == peer).count() >= self.limits.overflow_per_peer {
                    self.refused.fetch_add(1, Relaxed);
                    return Admission::Refused;
                }
                Lane::Overflow
            }
        };
        let now = self.clock.now();
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Relaxed),
            peer,
            lane,
            clock: self.clock,
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            evicted: Notify::new(),
        });
        conns.insert(conn.id, conn.clone());
        Admission::Admitted(conn)
    }

    fn release(&self, id: u64) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Removes the connection from the pool when its task ends, however it ends.
struct Slot<'a>(&'a Pool, u64);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// The connection's socket, telling [`Conn`] when request bytes arrive and
/// when writes wait for the client.
struct Watched<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T> Watched<T> {
    fn wrote<R>(&self, r: &Poll<io::Result<R>>) {
        let c = &self.conn;
        match r {
            Poll::Pending => {
                if c.write_blocked_since.load(Relaxed) == 0 {
                    c.write_blocked_since.store(c.clock.now(), Relaxed);
                }
            }
            Poll::Ready(_) => c.write_blocked_since.store(0, Relaxed),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let c = &self.conn;
        if buf.filled().len() > before && !c.busy.load(Relaxed) && c.head_started.load(Relaxed) == 0 {
            c.head_started.store(c.clock.now(), Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------- rendering

/// Bytes of a streamed body handed to the connection at a time.
const RENDER_CHUNK: usize = 128 * 1024;

/// A response body: in one piece, or chunks as a render makes them.
enum Payload {
    Whole(Bytes),
    Chunks(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
}

/// At most one render at a time; requests that arrive while one runs share
/// the next one (a render that started after they arrived, so nobody gets
/// a body older than their request).
struct RenderGate {
    last: Arc<tokio::sync::Mutex<[Option<(Instant, Bytes)>; 2]>>,
    /// Per format: requests waiting for the lock.
    waiting: [AtomicUsize; 2],
}

impl RenderGate {
    fn new() -> Self {
        Self { last: Arc::new(tokio::sync::Mutex::new([None, None])), waiting: [AtomicUsize::new(0), AtomicUsize::new(0)] }
    }

    /// `streamed`: the body may go out in chunks (a GET; a HEAD gets the
    /// Content-Length of a whole body).
    async fn body(&self, metrics: &Arc<Metrics>, openmetrics: bool, streamed: bool) -> Payload {
        let format = usize::from(openmetrics);
        if streamed
            && self.waiting[format].load(Relaxed) == 0
            && let Ok(mut last) = self.last.clone().try_lock_owned()
        {
            // Alone: sent as it is rendered. A reader slower than the
            // render lets chunks queue up (at most the whole body, as a
            // shared render holds); the render never waits for the reader,
            // since the collectors hold the model's lock while they write.
            // The gate stays locked until the render ends.
            last[format] = None;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || {
                let _one_render_at_a_time = last;
                metrics.render_in_chunks(openmetrics, RENDER_CHUNK, |chunk| {
                    let _ = tx.send(Bytes::from(chunk));
                });
            });
            return Payload::Chunks(rx);
        }
        let metrics = metrics.clone();
        Payload::Whole(self.shared(openmetrics, move || metrics.render(openmetrics)).await)
    }

    /// `render`'s result, or that of a render that started after this call.
    async fn shared(&self, openmetrics: bool, render: impl FnOnce() -> String + Send + 'static) -> Bytes {
        let asked = Instant::now();
        let format = usize::from(openmetrics);
        self.waiting[format].fetch_add(1, Relaxed);
        let mut last = self.last.lock().await;
        let others_waiting = self.waiting[format].fetch_sub(1, Relaxed) > 1;
        let slot = &mut last[format];
        if let Some((started, body)) = slot.as_ref()
            && *started >= asked
        {
            let body = body.clone();
            if !others_waiting {
                // A large body is not kept past the scrapes that share it.
                *slot = None;
            }
            return body;
        }
        let started = Instant::now();
        let body = Bytes::from(tokio::task::spawn_blocking(render).await.unwrap_or_default());
        *slot = (self.waiting[format].load(Relaxed) > 0).then(|| (started, body.clone()));
        body
    }
}

// ---------------------------------------------------------------- serving

struct Shared {
    metrics: Arc<Metrics>,
    web: Option<Arc<WebConfig>>,
    renders: RenderGate,
    pool: Pool,
}

pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>, web: Option<Arc<WebConfig>>) {
    serve_with(listener, metrics, web, Limits::DEFAULT).await
}

pub async fn serve_with(listener: std::net::TcpListener, metrics: Arc<Metrics>, web: Option<Arc<WebConfig>>, limits: Limits) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("http: {e}");
            return;
        }
    };
    let shared = Arc::new(Shared { metrics, web, renders: RenderGate::new(), pool: Pool::new(limits) });
    let mut last_refusal_report = Instant::now();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, mostly: wait instead of spinning.
                log::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match shared.pool.admit(peer_key(addr.ip())) {
            Admission::Admitted(conn) => {
                tokio::spawn(connection(stream, conn, shared.clone()));
            }
            Admission::Refused => drop(stream),
        }
        if last_refusal_report.elapsed() >= Duration::from_secs(60) {
            last_refusal_report = Instant::now();
            let refused = shared.pool.refused.swap(0, Relaxed);
            if refused > 0 {
                log::warn!("http: refused {refused} connection(s) in the last minute: every connection was busy answering");
            }
        }
        // Let the new connection read its request before the next accept
        // can take its slot: under a reconnect flood, accepts come faster
        // than a fresh connection is first polled.
        tokio::task::yield_now().await;
    }
}

async fn connection(stream: TcpStream, conn: Arc<Conn>, shared: Arc<Shared>) {
    let _slot = Slot(&shared.pool, conn.id);
    let _ = stream.set_nodelay(true);
    let limits = shared.pool.limits;
    let watched = Watched { inner: stream, conn: conn.clone() };
    let service = {
        let (conn, shared) = (conn.clone(), shared.clone());
        service_fn(move |req| handle(req, shared.clone(), conn.clone()))
    };
    let mut builder = http1::Builder::new();
    // Simple clients (nc, some scrapers) shut down their write side after
    // the request and still expect the response. Deadlines are the
    // watchdog's, below, not hyper's.
    builder.half_close(true).keep_alive(conn.lane == Lane::Pooled).max_buf_size(MAX_HEAD_BYTES);
    let tls = shared.web.as_ref().and_then(|w| w.tls.clone());
    let serve = async {
        match tls {
            Some(config) => match tokio_rustls::TlsAcceptor::from(config).accept(watched).await {
                Ok(stream) => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
                Err(e) => log::debug!("TLS handshake: {e}"),
            },
            None => {
                let _ = builder.serve_connection(TokioIo::new(watched), service).await;
            }
        }
    };
    let deadline = async {
        if conn.lane == Lane::Overflow {
            tokio::time::sleep(OVERFLOW_DEADLINE).await;
            return "one-request connection took too long";
        }
        loop {
            tokio::time::sleep(WATCH_TICK).await;
            if let Some(why) = conn.expired(&limits) {
                return why;
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = conn.evicted.notified() => log::debug!("http: closed an idle connection of {} to make room", conn.peer),
        why = deadline => log::debug!("http: closed a connection of {}: {why}", conn.peer),
    }
}

fn wants_openmetrics(req: &Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

async fn handle(req: Request<hyper::body::Incoming>, shared: Arc<Shared>, conn: Arc<Conn>) -> Result<Response<Body>, Infallible> {
    let busy = conn.begin_request();
    let response = route(&req, &shared, &conn).await;
    Ok(response.map(|payload| match payload {
        Payload::Whole(bytes) => Body { data: Some(bytes).filter(|b| !b.is_empty()), chunks: None, _busy: busy },
        Payload::Chunks(rx) => Body { data: None, chunks: Some(rx), _busy: busy },
    }))
}

async fn route(req: &Request<hyper::body::Incoming>, shared: &Shared, conn: &Conn) -> Response<Payload> {
    let path = req.uri().path();
    // HEAD is GET without the body: hyper sends the headers (Content-Length
    // included: a HEAD's body is rendered whole) and drops the body.
    let readable = matches!(*req.method(), Method::GET | Method::HEAD);
    if path == "/healthz" {
        return if readable { reply(StatusCode::OK, "text/plain", "ok\n") } else { not_allowed() };
    }
    if conn.lane == Lane::Overflow {
        return busy_reply();
    }
    if let Some(web) = &shared.web
        && web.auth_required()
    {
        let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match web.check(header, conn.peer).await {
            AuthOutcome::Allowed => {}
            AuthOutcome::Denied => {
                let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n");
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"oomwatch\""));
                return r;
            }
            AuthOutcome::Busy => return busy_reply(),
        }
    }
    match path {
        "/metrics" if readable => {
            let openmetrics = wants_openmetrics(req);
            let content_type = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { TEXT_CONTENT_TYPE };
            let mut r = reply(StatusCode::OK, content_type, Bytes::new());
            *r.body_mut() = shared.renders.body(&shared.metrics, openmetrics, req.method() == Method::GET).await;
            r
        }
        "/" if readable => reply(
            StatusCode::OK,
            "text/html",
            "<html><body><h1>oomwatch</h1><p><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a></p></body></html>\n",
        ),
        "/metrics" | "/" => not_allowed(),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n"),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Payload> {
    let mut r = Response::new(Payload::Whole(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn not_allowed() -> Response<Payload> {
    let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET or HEAD\n");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

fn busy_reply() -> Response<Payload> {
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "busy: retry shortly\n");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A response body that keeps its connection marked busy until hyper has
/// taken it.
struct Body {
    data: Option<Bytes>,
    /// A render's chunks, until it ends.
    chunks: Option<tokio::sync::mpsc::UnboundedReceiver<Bytes>>,
    _busy: BusyGuard,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        let Some(chunks) = self.chunks.as_mut() else { return Poll::Ready(None) };
        let next = std::task::ready!(chunks.poll_recv(cx));
        if next.is_none() {
            self.chunks = None;
        }
        Poll::Ready(next.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.chunks.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.chunks {
            Some(_) => SizeHint::default(),
            None => SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_connections: 4, per_peer: 2, overflow: 2, overflow_per_peer: 1, ..Limits::DEFAULT }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admitted(a: Admission) -> Arc<Conn> {
        match a {
            Admission::Admitted(c) => c,
            Admission::Refused => panic!("refused"),
        }
    }

    fn held(pool: &Pool) -> Vec<(IpAddr, Lane)> {
        let conns = pool.conns.lock().unwrap();
        let mut v: Vec<_> = conns.values().map(|c| (c.id, c.peer, c.lane)).collect();
        v.sort_by_key(|(id, _, _)| *id);
        v.into_iter().map(|(_, p, l)| (p, l)).collect()
    }

    #[test]
    fn an_address_at_its_limit_gives_up_its_own_oldest_idle_connection() {
        let pool = Pool::new(limits());
        let a1 = admitted(pool.admit(ip("10.0.0.1")));
        std::thread::sleep(Duration::from_millis(2));
        let _a2 = admitted(pool.admit(ip("10.0.0.1")));
        let _b = admitted(pool.admit(ip("10.0.0.2")));
        let a3 = admitted(pool.admit(ip("10.0.0.1")));
        assert_eq!(a3.lane, Lane::Pooled);
        assert!(!pool.conns.lock().unwrap().contains_key(&a1.id), "the oldest of 10.0.0.1 made room");
        assert_eq!(held(&pool).iter().filter(|(p, _)| *p == ip("10.0.0.1")).count(), 2);
    }

    #[test]
    fn a_full_pool_takes_from_the_address_holding_the_most() {
        let pool = Pool::new(limits());
        let _scraper = admitted(pool.admit(ip("10.0.0.9")));
        let _a = admitted(pool.admit(ip("10.0.0.1")));
        let _a = admitted(pool.admit(ip("10.0.0.1")));
        let _b = admitted(pool.admit(ip("10.0.0.2")));
        // Full. 10.0.0.2 (holding 1) takes from 10.0.0.1 (holding 2), not
        // from the scraper (holding 1).
        let _b2 = admitted(pool.admit(ip("10.0.0.2")));
        assert!(held(&pool).contains(&(ip("10.0.0.9"), Lane::Pooled)));
        // Now 10.0.0.1, 10.0.0.2 hold 1 and 2: a newcomer takes from 10.0.0.2.
        let _c = admitted(pool.admit(ip("10.0.0.3")));
        let h = held(&pool);
        assert!(h.contains(&(ip("10.0.0.9"), Lane::Pooled)), "{h:?}");
        assert_eq!(h.iter().filter(|(p, _)| *p == ip("10.0.0.2")).count(), 1, "{h:?}");
    }

    #[test]
    fn busy_connections_are_kept_and_the_rest_go_to_the_overflow_lane() {
        let pool = Pool::new(limits());
        let guards: Vec<_> = ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"].iter().map(|p| admitted(pool.admit(ip(p))).begin_request()).collect();
        let probe = admitted(pool.admit(ip("10.0.0.7")));
        assert_eq!(probe.lane, Lane::Overflow);
        assert!(matches!(pool.admit(ip("10.0.0.7")), Admission::Refused), "one overflow connection per address");
        assert_eq!(admitted(pool.admit(ip("10.0.0.8"))).lane, Lane::Overflow);
        assert!(matches!(pool.admit(ip("10.0.0.6")), Admission::Refused), "overflow full");
        drop(guards);
        assert_eq!(admitted(pool.admit(ip("10.0.0.6"))).lane, Lane::Pooled, "idle again: evictable");
    }

    #[test]
    fn deadlines_depend_on_what_the_connection_is_doing() {
        let l = Limits { head_timeout: Duration::from_millis(30), idle_timeout: Duration::from_millis(80), write_stall: Duration::from_millis(30), ..limits() };
        let pool = Pool::new(l);
        let c = admitted(pool.admit(ip("10.0.0.1")));
        assert_eq!(c.expired(&l), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.expired(&l), Some("no request head in time"), "a new connection must ask promptly");
        drop(c.begin_request());
        assert_eq!(c.expired(&l), None, "kept alive after a response");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.expired(&l), None, "idle may last longer than a head");
        c.head_started.store(c.clock.now(), Relaxed);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.expired(&l), Some("request head too slow"));
        let _busy = c.begin_request();
        assert_eq!(c.expired(&l), None, "answering");
        c.write_blocked_since.store(c.clock.now(), Relaxed);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.expired(&l), Some("client stopped reading the response"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_renders_that_started_after_they_asked() {
        let gate = Arc::new(RenderGate::new());
        let renders = Arc::new(AtomicUsize::new(0));
        let scrape = |openmetrics: bool| {
            let (gate, renders) = (gate.clone(), renders.clone());
            tokio::spawn(async move {
                let asked = Instant::now();
                let body = gate
                    .shared(openmetrics, move || {
                        let n = renders.fetch_add(1, Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                        format!("{n} {:?}", Instant::now())
                    })
                    .await;
                (asked, body)
            })
        };
        let scrapes: Vec<_> = (0..32).map(|i| scrape(i % 2 == 0)).collect();
        for s in scrapes {
            let (_, body) = s.await.unwrap();
            assert!(!body.is_empty());
        }
        let n = renders.load(Relaxed);
        // 32 scrapes in both formats at once: a render or two per format.
        assert!((2..=6).contains(&n), "{n} renders for 32 concurrent scrapes");
        assert!(gate.last.lock().await.iter().all(Option::is_none), "nothing kept once every scrape has its body");
        // Alone, a scrape never gets an earlier scrape's body.
        let (a, b) = (scrape(false).await.unwrap().1, scrape(false).await.unwrap().1);
        assert_ne!(a, b);
    }

    /// A response as a raw client reads it: the head, and the body with a
    /// chunked transfer coding undone.
    fn raw_get(port: u16, request: &str) -> (String, String) {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let resp = String::from_utf8(resp).unwrap();
        let (head, mut rest) = resp.split_once("\r\n\r\n").unwrap();
        if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return (head.to_owned(), rest.to_owned());
        }
        let mut body = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                return (head.to_owned(), body);
            }
            body.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
    }

    /// A body of many chunks, as HTTP/1.1 (chunked) and HTTP/1.0 (to the
    /// close) clients read it, and HEAD without one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_scrape_is_the_rendered_body() {
        let model = Arc::new(crate::model::Model::new(crate::model::ModelConfig { max_cgroups: 20_000, ..Default::default() }));
        for i in 0..5000 {
            model.admit(&format!("/oomwatch-test-stream/c{i}"), i, std::path::Path::new("/x"));
        }
        let metrics = Arc::new(Metrics::new(model, None, Vec::new(), Arc::default(), None));
        let whole = metrics.render(false);
        assert!(whole.len() > 3 * RENDER_CHUNK, "{} bytes", whole.len());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, metrics.clone(), None));
        let om = metrics.render(true);
        for (request, want) in [
            ("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &whole),
            ("GET /metrics HTTP/1.0\r\n\r\n", &whole),
            ("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n", &om),
        ] {
            let (head, body) = tokio::task::spawn_blocking(move || raw_get(port, request)).await.unwrap();
            assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "{head}");
            assert_eq!(body.len(), want.len(), "{request:?}: {head}");
            assert!(body == *want, "{request:?}: the body differs from the rendered one");
        }
        let (head, body) = tokio::task::spawn_blocking(move || raw_get(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await.unwrap();
        assert!(head.contains(" 200 ") && body.is_empty(), "{head}");
        assert!(head.to_ascii_lowercase().contains(&format!("content-length: {}", whole.len())), "{head}");
    }

    #[test]
    fn ipv6_peers_count_by_64_and_mapped_ipv4_by_address() {
        assert_eq!(peer_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(peer_key(ip("2001:db8:1:2:bbbb::7")), ip("2001:db8:1:2::"));
        assert_eq!(peer_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(peer_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }
}
