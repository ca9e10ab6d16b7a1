//! Per-worker upstream connection pools: HTTP/1.1 keep-alive connections and one multiplexed
//! HTTP/2 connection per endpoint.
//!
//! Each worker thread owns its pool (`Rc`, no locks): measured on this machine, a per-thread
//! pool of `hyper::client::conn` senders costs 11–17 % less CPU per request than hyper-util's
//! shared legacy client. An HTTP/1.1 connection goes back to the pool when its response body
//! ends; every connection future runs in its own local task.
//!
//! For a cluster with `tls:` a connection is TCP then the TLS handshake, both within the
//! connect timeout; pooled connections are keyed by address *and* TLS connector, so a plain
//! connection never serves a TLS cluster (or one cluster's TLS another's with other settings).

use crate::proxy::body::ProxyBody;
use crate::upstream::h2_client::H2Connection;
use crate::upstream::tls::{UpstreamStream, UpstreamTls};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use spillway_core::{Clock, Instant, SystemClock};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Most idle HTTP/1.1 connections kept per endpoint and worker.
pub const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// Runs hyper's background futures (HTTP/2 streams) as tasks on the current worker thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Why an upstream request did not produce a response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("connect to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// TCP connect took longer than the cluster's connect timeout.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// HTTP handshake or exchange failed.
    #[error("upstream {0}: {1}")]
    Http(SocketAddr, hyper::Error),
    /// The exchange over a pooled socket (the hyper path's HTTP/1.1 client) failed.
    #[error("upstream {0}: {1}")]
    Exchange(SocketAddr, crate::upstream::h1_client::ExchangeError),
    /// No response head within the request (or per-try) timeout.
    #[error("upstream {0} timed out")]
    Timeout(SocketAddr),
    /// The exchange on the lean HTTP/2 client failed.
    #[error("upstream {0}: {1}")]
    H2(SocketAddr, crate::upstream::h2_client::H2ClientError),
}

/// Whether an HTTP/2 upstream refused a request without processing any of it: its connection
/// had closed before the request went out (hyper cancels it; after a GOAWAY hyper still
/// hands out the connection while its last streams finish), was going away (GOAWAY) or it
/// refused the stream (REFUSED_STREAM). Such a request may be sent again on another
/// connection whatever its method (RFC 9113 §8.7).
pub fn refused_unprocessed(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(e) = s.downcast_ref::<h2::Error>() {
            return e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// A fast, non-cryptographic hasher for socket-address keys (the pool is looked up twice per
/// request; SipHash's DoS resistance buys nothing for keys that come from the config).
#[derive(Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(v)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(v)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(crate) type AddrMap<V> = HashMap<SocketAddr, V, std::hash::BuildHasherDefault<AddrHasher>>;

/// What a pooled connection is kept under: the endpoint, and the TLS connector that made it
/// (0: plain TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    tls: u64,
}

impl PoolKey {
    fn new(addr: SocketAddr, tls: Option<&UpstreamTls>) -> PoolKey {
        PoolKey { addr, tls: tls.map_or(0, UpstreamTls::id) }
    }
}

type PoolMap<V> = HashMap<PoolKey, V, std::hash::BuildHasherDefault<AddrHasher>>;

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// A lean HTTP/2 connection in the pool, with its last use.
type LeanH2 = (Rc<H2Connection>, Instant);

/// One worker's connections to every upstream endpoint.
pub struct Pool {
    h1: RefCell<PoolMap<Vec<Idle>>>,
    h2: RefCell<PoolMap<(http2::SendRequest<ProxyBody>, Instant)>>,
    /// The lean HTTP/2 client's connections (`http2_client: lean`): usually one per endpoint,
    /// more while the server's stream limit is reached; each with its last use.
    h2_lean: RefCell<PoolMap<Vec<LeanH2>>>,
    /// Idle ages are read on this clock (the gateway's TSC clock: cheaper than
    /// `std::time::Instant`, and read twice per request).
    clock: SystemClock,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::with_clock(SystemClock::new())
    }
}

/// An HTTP/1.1 connection checked out of a pool; [`PooledH1::release`] returns it.
pub struct PooledH1 {
    pool: Rc<Pool>,
    key: PoolKey,
    sender: http1::SendRequest<ProxyBody>,
}

impl PooledH1 {
    /// Sends a request on this connection; the future does not borrow the connection.
    pub fn send(
        &mut self,
        req: http::Request<ProxyBody>,
    ) -> impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>> {
        self.sender.send_request(req)
    }

    /// Returns the connection to its pool for reuse (dropped if closed or the pool is full).
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut h1 = self.pool.h1.borrow_mut();
        let idle = h1.entry(self.key).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle { sender: self.sender, since: self.pool.clock.now() });
        }
    }
}

/// Opens a TCP connection to `addr` within `connect_timeout`, with `TCP_NODELAY` set.
pub(crate) async fn connect_tcp(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(addr))?
        .map_err(|e| UpstreamError::Connect(addr, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a connection to `addr`: TCP, then the TLS handshake when `tls` is given, both within
/// `connect_timeout`. A failed handshake (certificate refused, client certificate refused,
/// no `h2` by ALPN) is a connect error: no request was sent.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
) -> Result<UpstreamStream, UpstreamError> {
    let Some(tls) = tls else {
        return Ok(UpstreamStream::Plain(connect_tcp(addr, connect_timeout).await?));
    };
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| UpstreamError::Connect(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let stream = tls.handshake(tcp).await.map_err(|e| {
            UpstreamError::Connect(addr, std::io::Error::new(e.kind(), format!("TLS: {e}")))
        })?;
        Ok(UpstreamStream::Tls(Box::new(stream)))
    };
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(addr))?
}

/// Opens a fresh HTTP/1.1 connection that supports protocol upgrades (WebSocket); it is
/// never pooled.
pub async fn connect_h1_upgradable(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
    let stream = connect(addr, tls, connect_timeout).await?;
    let (sender, conn) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| UpstreamError::Http(addr, e))?;
    tokio::task::spawn_local(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

impl Pool {
    /// An empty pool timing idle connections on `clock`.
    pub fn with_clock(clock: SystemClock) -> Pool {
        Pool { h1: RefCell::default(), h2: RefCell::default(), h2_lean: RefCell::default(), clock }
    }

    /// An idle HTTP/1.1 connection to `addr` (through `tls`) younger than `idle`, or a new one.
    pub async fn checkout_h1(
        self: &Rc<Self>,
        addr: SocketAddr,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
        idle: Duration,
    ) -> Result<PooledH1, UpstreamError> {
        let key = PoolKey::new(addr, tls);
        let mut now = None;
        loop {
            let candidate = self.h1.borrow_mut().get_mut(&key).and_then(Vec::pop);
            let Some(c) = candidate else { break };
            let now = *now.get_or_insert_with(|| self.clock.now());
            if c.sender.is_closed() || now.saturating_duration_since(c.since) > idle {
                continue;
            }
            let mut sender = c.sender;
            if sender.ready().await.is_ok() {
                return Ok(PooledH1 { pool: self.clone(), key, sender });
            }
        }
        let stream = connect(addr, tls, connect_timeout).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Http(addr, e))?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok(PooledH1 { pool: self.clone(), key, sender })
    }

    /// The shared HTTP/2 connection to `addr` (through `tls`), (re)connecting when it is gone.
    pub async fn checkout_h2(
        &self,
        addr: SocketAddr,
        tls: Option<&UpstreamTls>,
        connect_timeout: Duration,
    ) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let key = PoolKey::new(addr, tls);
        let now = self.clock.now();
        let existing = self.h2.borrow_mut().get_mut(&key).map(|(s, used)| {
            *used = now;
            s.clone()
        });
        if let Some(mut sender) = existing {
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = connect(addr, tls, connect_timeout).await?;
        let (sender, conn) = http2::Builder::new(LocalExec)
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Http(addr, e))?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        self.h2.borrow_mut().insert(key, (sender.clone(), self.clock.now()));
        Ok(sender)
    }

    /// Forgets the shared HTTP/2 connection to `addr` (through `tls`), so the next checkout
    /// opens a new one: it refused a stream because it is going away. Its streams in flight
    /// finish on it (each holds a sender).
    pub fn evict_h2(&self, addr: SocketAddr, tls: Option<&UpstreamTls>) {
        self.h2.borrow_mut().remove(&PoolKey::new(addr, tls));
    }

    /// A lean HTTP/2 connection to `addr` (through `tls`) that takes a new stream now: a
    /// pooled one, or a new one (its task connects; requests queue in it meanwhile, so a
    /// burst of requests opens one connection, not one each). `avoid` (the connection that
    /// refused a stream) is skipped: the retry goes on another one.
    pub fn checkout_h2_lean(
        &self,
        addr: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
        connect_timeout: Duration,
        avoid: Option<&Rc<H2Connection>>,
    ) -> Rc<H2Connection> {
        let key = PoolKey::new(addr, tls.map(|t| &**t));
        let now = self.clock.now();
        let mut map = self.h2_lean.borrow_mut();
        let conns = map.entry(key).or_default();
        conns.retain(|(c, _)| !c.is_done());
        let usable =
            |c: &Rc<H2Connection>| c.can_open() && !avoid.is_some_and(|a| Rc::ptr_eq(a, c));
        if let Some((c, used)) = conns.iter_mut().find(|(c, _)| usable(c)) {
            *used = now;
            return c.clone();
        }
        let c = Rc::new(H2Connection::start(addr, tls.cloned(), connect_timeout));
        conns.push((c.clone(), now));
        c
    }

    /// Drops connections unused for longer than `idle` and closed ones. An HTTP/2 connection
    /// closes once its last sender is gone and its streams have finished.
    pub fn sweep(&self, idle: Duration) {
        let now = self.clock.now();
        for conns in self.h1.borrow_mut().values_mut() {
            conns.retain(|c| {
                !c.sender.is_closed() && now.saturating_duration_since(c.since) <= idle
            });
        }
        self.h2
            .borrow_mut()
            .retain(|_, (s, used)| !s.is_closed() && now.saturating_duration_since(*used) <= idle);
        for conns in self.h2_lean.borrow_mut().values_mut() {
            conns.retain(|(c, used)| {
                !c.is_done()
                    && (c.active_streams() > 0 || now.saturating_duration_since(*used) <= idle)
            });
        }
    }

    /// Idle HTTP/1.1 connections and HTTP/2 connections currently held.
    pub fn len(&self) -> usize {
        self.h1.borrow().values().map(Vec::len).sum::<usize>()
            + self.h2.borrow().len()
            + self.h2_lean.borrow().values().map(Vec::len).sum::<usize>()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
