//! Client connections of the engine: one HTTP/1.1 connection per worker, driven inside the
//! worker's own task, or HTTP/2 connections shared by several workers (one stream each);
//! reconnected when they break.
//!
//! Built on hyper's low-level `client::conn` API rather than a pooling client, so the number of
//! connections is exactly what the user asked for. An HTTP/1.1 connection future is polled by
//! the worker itself (not spawned): request, response and body then never cross tasks or
//! threads, which is most of the gap between a naive hyper client and wrk.

use super::RequestSpec;
use crate::target::Target;
use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{Instant, Sleep};

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Could not open a connection.
    Connect,
    /// No complete response within the timeout.
    Timeout,
    /// The connection failed while sending or waiting for the head.
    Io,
    /// The connection failed while reading the body.
    Body,
}

impl Failure {
    /// The key used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Io => "io",
            Failure::Body => "body",
        }
    }
}

type H1Connection = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// An HTTP/1.1 connection owned by one worker: the sender and the connection future it polls.
pub struct H1 {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<H1Connection>>,
}

/// A worker's way to the target.
pub enum Slot {
    /// HTTP/1.1: this worker's own connection (none until the first request or after a failure).
    H1 {
        /// The connection, when open.
        conn: Option<Box<H1>>,
        /// Where to connect.
        target: Arc<Target>,
        /// The `Host` header, built once.
        host: Option<HeaderValue>,
    },
    /// HTTP/2: a connection shared with the other workers of its group.
    H2 {
        /// The shared sender, when open.
        sender: Arc<Mutex<Option<http2::SendRequest<Full<Bytes>>>>>,
        /// Where to connect.
        target: Arc<Target>,
    },
}

async fn tcp(target: &Target) -> Result<TokioIo<TcpStream>, Failure> {
    let stream = TcpStream::connect(target.addr).await.map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

async fn connect_h1(target: &Target) -> Result<Box<H1>, Failure> {
    let (sender, conn) =
        http1::handshake(tcp(target).await?).await.map_err(|_| Failure::Connect)?;
    Ok(Box::new(H1 { sender, conn: Box::pin(conn) }))
}

async fn connect_h2(target: &Target) -> Result<http2::SendRequest<Full<Bytes>>, Failure> {
    let (sender, conn) = http2::handshake(TokioExecutor::new(), tcp(target).await?)
        .await
        .map_err(|_| Failure::Connect)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Reads a body to its end without keeping it.
async fn drain(mut body: hyper::body::Incoming) -> Result<(), Failure> {
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| Failure::Body)?;
    }
    Ok(())
}

impl Slot {
    /// An HTTP/1.1 slot for one worker.
    pub fn h1(target: Arc<Target>) -> Slot {
        let host = HeaderValue::from_str(target.authority.as_str()).ok();
        Slot::H1 { conn: None, target, host }
    }

    /// An HTTP/2 slot; clone it (with [`Slot::share`]) for each worker of the connection.
    pub fn h2(target: Arc<Target>) -> Slot {
        Slot::H2 { sender: Arc::new(Mutex::new(None)), target }
    }

    /// Another handle on the same HTTP/2 connection (a fresh connection for HTTP/1.1).
    pub fn share(&self) -> Slot {
        match self {
            Slot::H1 { target, .. } => Slot::h1(target.clone()),
            Slot::H2 { sender, target } => {
                Slot::H2 { sender: sender.clone(), target: target.clone() }
            }
        }
    }

    fn target(&self) -> &Target {
        match self {
            Slot::H1 { target, .. } | Slot::H2 { target, .. } => target,
        }
    }

    /// Opens the connection now (before the run starts), so the first requests do not pay for
    /// the handshake.
    pub async fn warm_up(&mut self) -> Result<(), Failure> {
        match self {
            Slot::H1 { conn, target, .. } => {
                if conn.is_none() {
                    *conn = Some(connect_h1(target).await?);
                }
            }
            Slot::H2 { sender, target } => {
                let mut guard = sender.lock().await;
                if guard.is_none() {
                    *guard = Some(connect_h2(target).await?);
                }
            }
        }
        Ok(())
    }

    fn build(&self, spec: &RequestSpec) -> Result<Request<Full<Bytes>>, Failure> {
        let http2 = matches!(self, Slot::H2 { .. });
        let target = self.target();
        let uri = if http2 {
            target.absolute(&spec.path_and_query).map_err(|_| Failure::Io)?
        } else {
            http::Uri::from(spec.path_and_query.clone())
        };
        let mut request = Request::new(Full::new(spec.body.clone()));
        *request.method_mut() = spec.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = spec.headers.clone();
        if http2 {
            request.headers_mut().remove(header::HOST);
            *request.version_mut() = http::Version::HTTP_2;
        } else if let Slot::H1 { host: Some(host), .. } = self {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        Ok(request)
    }

    /// Sends `spec` and reads the whole response; returns its status.
    async fn send(&mut self, spec: &RequestSpec) -> Result<u16, Failure> {
        let request = self.build(spec)?;
        match self {
            Slot::H1 { conn, target, .. } => {
                if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
                    *conn = None;
                    *conn = Some(connect_h1(target).await?);
                }
                let (result, closed) = {
                    let Some(h1) = conn.as_mut() else { return Err(Failure::Connect) };
                    let H1 { sender, conn: driver } = &mut **h1;
                    let exchange = async {
                        sender.ready().await.map_err(|_| Failure::Io)?;
                        let response =
                            sender.send_request(request).await.map_err(|_| Failure::Io)?;
                        let status = response.status().as_u16();
                        drain(response.into_body()).await?;
                        Ok(status)
                    };
                    // The connection future does the socket I/O: poll it alongside the
                    // exchange. When it finishes (server closed, or an error), what it delivered
                    // is still readable and anything pending fails: finish the exchange, then
                    // reconnect.
                    let mut exchange = std::pin::pin!(exchange);
                    tokio::select! {
                        biased;
                        result = &mut exchange => (result, false),
                        _ = driver.as_mut() => (exchange.await, true),
                    }
                };
                if closed || result.is_err() {
                    *conn = None;
                }
                result
            }
            Slot::H2 { sender, target } => {
                let mut sender = {
                    let mut guard = sender.lock().await;
                    if guard.as_ref().is_none_or(|s| s.is_closed()) {
                        *guard = None;
                        *guard = Some(connect_h2(target).await?);
                    }
                    guard.clone().ok_or(Failure::Connect)?
                };
                sender.ready().await.map_err(|_| Failure::Io)?;
                let response = sender.send_request(request).await.map_err(|_| Failure::Io)?;
                let status = response.status().as_u16();
                drain(response.into_body()).await?;
                Ok(status)
            }
        }
    }

    /// Sends with a deadline `watchdog.timeout` after `started`; a timed-out HTTP/1.1
    /// connection is dropped (its state is unknown).
    pub async fn send_within(
        &mut self,
        spec: &RequestSpec,
        started: Instant,
        watchdog: &mut Watchdog,
    ) -> Result<u16, Failure> {
        match watchdog.guard(started, self.send(spec)).await {
            Some(result) => result,
            None => {
                if let Slot::H1 { conn, .. } = self {
                    *conn = None;
                }
                Err(Failure::Timeout)
            }
        }
    }
}

/// A per-worker request timeout that re-arms its timer lazily.
///
/// A fresh `tokio::time::timeout` per request registers and cancels a timer entry every time,
/// a visible cost at tens of thousands of requests per second. The watchdog keeps one timer:
/// when it fires and the request in flight still has time left, it is pushed to that request's
/// deadline. While requests are fast, the timer is touched about once per timeout period.
pub struct Watchdog {
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Watchdog {
    /// A watchdog allowing `timeout` per request.
    pub fn new(timeout: Duration) -> Watchdog {
        Watchdog { sleep: Box::pin(tokio::time::sleep(timeout)), timeout }
    }

    /// Runs `work` until it finishes (`Some`) or `timeout` has passed since `started` (`None`).
    pub async fn guard<F: Future>(&mut self, started: Instant, work: F) -> Option<F::Output> {
        let deadline = started + self.timeout;
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                output = &mut work => return Some(output),
                _ = self.sleep.as_mut() => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    self.sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watchdog_times_out_a_request_that_never_ends() {
        let mut watchdog = Watchdog::new(Duration::from_secs(2));
        let started = Instant::now();
        let out = watchdog.guard(started, std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_gives_each_request_its_full_timeout() {
        let mut watchdog = Watchdog::new(Duration::from_secs(2));
        // A quick first request arms the timer for t = 2 s.
        assert_eq!(watchdog.guard(Instant::now(), async { 1 }).await, Some(1));
        tokio::time::advance(Duration::from_millis(1500)).await;
        // A request started at 1.5 s taking 1 s must not be cut at 2 s.
        let started = Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(watchdog.guard(started, slow).await, Some(()));
        // The next one, started at 2.5 s, times out at 4.5 s, not earlier.
        let started = Instant::now();
        assert_eq!(watchdog.guard(started, std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
