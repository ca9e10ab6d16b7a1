//! The echo server's connection on hyper's HTTP/2 server: what a gRPC service built on hyper
//! (tonic, for one) costs per call — a task per stream, `http` types, a body polled through
//! hyper — for benchmarks that want an upstream of realistic weight rather than the lean one
//! ([`super::echo`]). It answers exactly as the lean one does.

use super::{EchoCounters, MAX_CONCURRENT_STREAMS};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::net::TcpStream;

fn trailers(status: &'static str, message: Option<&'static str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_static(status));
    if let Some(m) = message {
        map.insert("grpc-message", HeaderValue::from_static(m));
    }
    map
}

/// A response body echoing the request's whole messages as they arrive, then the trailers.
struct EchoBody {
    request: Incoming,
    pending: BytesMut,
    finished: bool,
    counters: Arc<EchoCounters>,
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.request).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if let Some(out) = this.counters.take_whole(&mut this.pending, data) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.finished = true;
                    let end = if this.pending.is_empty() {
                        trailers("0", None)
                    } else {
                        trailers("13", Some("the request ended inside a message"))
                    };
                    return Poll::Ready(Some(Ok(Frame::trailers(end))));
                }
            }
        }
    }
}

async fn echo(
    counters: Arc<EchoCounters>,
    req: Request<Incoming>,
) -> Result<Response<EchoBody>, Infallible> {
    counters.calls.fetch_add(1, Ordering::Relaxed);
    let body =
        EchoBody { request: req.into_body(), pending: BytesMut::new(), finished: false, counters };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    Ok(resp)
}

/// Serves h2c gRPC echo on `tcp` with hyper until the peer closes or the connection fails.
pub(super) async fn serve(tcp: TcpStream, counters: Arc<EchoCounters>) {
    let svc = hyper::service::service_fn(move |req| echo(counters.clone(), req));
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .serve_connection(TokioIo::new(tcp), svc)
        .await;
}
