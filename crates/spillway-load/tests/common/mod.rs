//! A tiny in-process HTTP/1.1 + h2c server on 127.0.0.1:0 for the engine tests: answers 200
//! (or the status in `?status=`, or in an `x-test-status` header, which lets a `--mix` choose
//! the status per class), after the delay in `?delay_ms=`, closing the connection after
//! each response with `?close=1`, and remembers every request
//! it saw in arrival order.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn query_value(query: &str, key: &str) -> Option<u64> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let query = parts.uri.query().unwrap_or("").to_string();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
    });
    if let Some(ms) = query_value(&query, "delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let from_header = parts
        .headers
        .get("x-test-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let status = from_header.or_else(|| query_value(&query, "status")).unwrap_or(200) as u16;
    let mut response = Response::builder().status(status);
    if query_value(&query, "close") == Some(1) {
        response = response.header("connection", "close");
    }
    Ok(response.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
}

/// Starts the server on a free loopback port, on the current runtime.
pub async fn start() -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            let seen = seen2.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, seen.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestServer { addr, seen }
}
