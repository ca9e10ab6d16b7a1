//! A minimal fast HTTP/1.1 + h2c server for trying the load tools and measuring their accuracy:
//! answers `200 hello` to everything (or after `?delay_ms=N`).
//!
//! Usage: `cargo run --release -p spillway-load --example hello_server -- 127.0.0.1:8099`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("delay_ms=")?.parse::<u64>().ok())
    });
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8099".to_string());
    let listener = TcpListener::bind(&addr).await.expect("bind");
    eprintln!("hello_server listening on http://{addr}/");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
