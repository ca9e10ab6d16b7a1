//! Client connections of the engine: one HTTP/1.1 connection per worker, or HTTP/2 connections
//! shared by several workers (one stream each), reconnected when they break.
//!
//! Built on hyper's low-level `client::conn` API rather than a pooling client, so the number of
//! connections is exactly what the user asked for and a run never opens more behind their back.

use super::RequestSpec;
use crate::target::Target;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

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

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// A connection slot: owned by one worker (HTTP/1.1) or shared by a group of workers (HTTP/2).
#[derive(Clone)]
pub struct Slot {
    sender: Arc<Mutex<Option<Sender>>>,
    target: Arc<Target>,
    http2: bool,
}

async fn connect(target: &Target, http2: bool) -> Result<Sender, Failure> {
    let stream = TcpStream::connect(target.addr).await.map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    if http2 {
        let (sender, conn) =
            http2::handshake(TokioExecutor::new(), io).await.map_err(|_| Failure::Connect)?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(|_| Failure::Connect)?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

impl Slot {
    /// A slot with no connection yet.
    pub fn new(target: Arc<Target>, http2: bool) -> Slot {
        Slot { sender: Arc::new(Mutex::new(None)), target, http2 }
    }

    /// Opens the connection now (before the run starts), so the first requests do not pay for
    /// the handshake.
    pub async fn warm_up(&self) -> Result<(), Failure> {
        let mut guard = self.sender.lock().await;
        if guard.is_none() {
            *guard = Some(connect(&self.target, self.http2).await?);
        }
        Ok(())
    }

    /// Forgets the connection (after a timeout or error, its state is unknown).
    pub async fn reset(&self) {
        *self.sender.lock().await = None;
    }

    fn build(&self, spec: &RequestSpec) -> Result<Request<Full<Bytes>>, Failure> {
        let uri = if self.http2 {
            self.target.absolute(&spec.path_and_query).map_err(|_| Failure::Io)?
        } else {
            http::Uri::from(spec.path_and_query.clone())
        };
        let mut request = Request::builder()
            .method(spec.method.clone())
            .uri(uri)
            .body(Full::new(spec.body.clone()))
            .map_err(|_| Failure::Io)?;
        *request.headers_mut() = spec.headers.clone();
        let headers = request.headers_mut();
        if self.http2 {
            headers.remove(header::HOST);
            *request.version_mut() = http::Version::HTTP_2;
        } else if let Ok(host) = HeaderValue::from_str(self.target.authority.as_str()) {
            headers.insert(header::HOST, host);
        }
        Ok(request)
    }

    /// Sends `spec` and reads the whole response; returns its status.
    pub async fn send(&self, spec: &RequestSpec) -> Result<u16, Failure> {
        let request = self.build(spec)?;
        let response = {
            let mut guard = self.sender.lock().await;
            if guard.as_ref().is_none_or(Sender::is_closed) {
                *guard = None;
                *guard = Some(connect(&self.target, self.http2).await?);
            }
            match guard.as_mut() {
                Some(Sender::H1(sender)) => {
                    // The slot belongs to this worker alone: holding the lock costs nothing.
                    let sent = match sender.ready().await {
                        Ok(()) => sender.send_request(request).await,
                        Err(e) => Err(e),
                    };
                    if sent.is_err() {
                        *guard = None;
                    }
                    sent
                }
                Some(Sender::H2(sender)) => {
                    let mut sender = sender.clone();
                    drop(guard);
                    match sender.ready().await {
                        Ok(()) => sender.send_request(request).await,
                        Err(e) => Err(e),
                    }
                }
                None => return Err(Failure::Connect),
            }
        };
        let response: Response<hyper::body::Incoming> = response.map_err(|_| Failure::Io)?;
        let status = response.status().as_u16();
        response.into_body().collect().await.map_err(|_| Failure::Body)?;
        Ok(status)
    }

    /// Sends with a deadline; a timed-out HTTP/1.1 connection is dropped.
    pub async fn send_within(&self, spec: &RequestSpec, timeout: Duration) -> Result<u16, Failure> {
        match tokio::time::timeout(timeout, self.send(spec)).await {
            Ok(result) => result,
            Err(_) => {
                if !self.http2 {
                    self.reset().await;
                }
                Err(Failure::Timeout)
            }
        }
    }
}
