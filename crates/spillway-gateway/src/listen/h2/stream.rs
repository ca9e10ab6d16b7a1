//! One HTTP/2 stream as a future run inside its connection's task: the request built from
//! the decoded head, `proxy::handle`, then the response written into the connection — the
//! head (END_STREAM when the body is empty), DATA within the send windows, trailers — with a
//! broken response body answered by RST_STREAM INTERNAL_ERROR, as hyper does.
//!
//! A client reset drops the future ([`Cancellable`]), which cancels the upstream request.

use super::shared::{ConnShared, StreamShared};
use crate::proxy::body::RequestBody;
use crate::proxy::{self, ConnInfo, Worker};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body::Body;
use spillway_h2::{ErrorCode, RequestHead};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Why a request head cannot become an `http::Request` (answered with RST_STREAM
/// PROTOCOL_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHead;

/// The `http::Request` for a validated head: method, URI as hyper's HTTP/2 server builds it
/// (`scheme://authority/path`, or just the path without `:authority`), version HTTP/2, and
/// the regular fields.
pub fn request(head: &RequestHead, body: RequestBody) -> Result<Request<RequestBody>, BadHead> {
    let method = Method::from_bytes(head.method()).map_err(|_| BadHead)?;
    let uri = match (head.scheme(), head.authority(), head.path()) {
        (Some(scheme), Some(authority), Some(path)) => Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| BadHead)?,
        (_, None, Some(path)) => Uri::try_from(path).map_err(|_| BadHead)?,
        (_, Some(authority), None) => {
            Uri::builder().authority(authority).build().map_err(|_| BadHead)?
        }
        _ => return Err(BadHead),
    };
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    let fields = head.fields();
    let headers = req.headers_mut();
    headers.reserve(fields.len() + crate::proxy::headers::ADDED_FIELDS);
    crate::proxy::headers::append_wire_fields(fields, headers).map_err(|_| BadHead)?;
    Ok(req)
}

/// Trailer fields as a `HeaderMap` (fields `http` refuses are dropped; the codec already
/// refused what HTTP/2 forbids).
pub fn trailers(fields: &spillway_h2::Fields) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields.iter() {
        let name = crate::proxy::headers::wire_name(name);
        if let (Some(n), Some(v)) = (name, crate::proxy::headers::wire_value(value)) {
            map.append(n, v);
        }
    }
    map
}

/// Whether a response field must not be sent over HTTP/2 (RFC 9113 §8.2.2).
fn hop_by_hop(name: &header::HeaderName) -> bool {
    spillway_h2::head::connection_specific(name.as_str().as_bytes()) || name == header::TE
}

/// A field as the codec takes it.
type Field<'a> = (&'a [u8], &'a [u8]);

/// A header map's fields as the codec takes them, connection-specific ones left out, then up
/// to two more; walked twice by the codec (checked, then encoded) without being collected.
#[derive(Clone, Copy)]
struct HeadFields<'a> {
    map: &'a HeaderMap,
    extra: [Option<Field<'a>>; 2],
}

impl<'a> HeadFields<'a> {
    fn new(map: &'a HeaderMap) -> HeadFields<'a> {
        HeadFields { map, extra: [None, None] }
    }
}

fn sendable(field: &(&header::HeaderName, &HeaderValue)) -> bool {
    !hop_by_hop(field.0)
}

fn as_field<'a>(field: (&'a header::HeaderName, &'a HeaderValue)) -> Field<'a> {
    (field.0.as_str().as_bytes(), field.1.as_bytes())
}

/// The iterator of [`HeadFields`].
type HeadIter<'a> = std::iter::Chain<
    std::iter::Map<
        std::iter::Filter<
            header::Iter<'a, HeaderValue>,
            for<'b> fn(&'b (&'a header::HeaderName, &'a HeaderValue)) -> bool,
        >,
        fn((&'a header::HeaderName, &'a HeaderValue)) -> Field<'a>,
    >,
    std::iter::Flatten<std::array::IntoIter<Option<Field<'a>>, 2>>,
>;

impl<'a> IntoIterator for HeadFields<'a> {
    type Item = Field<'a>;
    type IntoIter = HeadIter<'a>;

    fn into_iter(self) -> HeadIter<'a> {
        let keep: for<'b> fn(&'b (&'a header::HeaderName, &'a HeaderValue)) -> bool = sendable;
        let map: fn((&'a header::HeaderName, &'a HeaderValue)) -> Field<'a> = as_field;
        self.map.iter().filter(keep).map(map).chain(self.extra.into_iter().flatten())
    }
}

/// Serves one stream: the proxy's answer written into the connection.
pub async fn serve(
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    shared: Rc<ConnShared>,
    id: u32,
    req: Request<RequestBody>,
) {
    let Ok(resp) = proxy::handle(worker.clone(), info, req).await;
    let (parts, mut body) = resp.into_parts();
    // As hyper's HTTP/2 server: a `date`, and a `content-length` when the body's size is known.
    let date = worker.lean.date();
    let date = (!parts.headers.contains_key(header::DATE)).then_some((&b"date"[..], &date[..]));
    let status = parts.status.as_u16();
    let mut digits = [0u8; 20];
    let length = match body.size_hint().exact() {
        Some(len)
            if status != 204
                && status != 304
                && !parts.headers.contains_key(header::CONTENT_LENGTH) =>
        {
            Some((&b"content-length"[..], crate::proxy::headers::decimal(len, &mut digits)))
        }
        _ => None,
    };
    let end = body.is_end_stream();
    {
        let fields = HeadFields { map: &parts.headers, extra: [date, length] };
        let mut conn = shared.conn.borrow_mut();
        if conn.send_response_fields(id, status, fields, end).is_err() {
            // Gone (reset, connection closed) or an unsendable field: nothing more to do.
            conn.reset(id, ErrorCode::INTERNAL_ERROR);
            return;
        }
    }
    if end {
        return;
    }
    drop(parts);
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => {
                let _ = shared.conn.borrow_mut().send_data(id, &[], true);
                return;
            }
            Some(Err(_)) => {
                shared.conn.borrow_mut().reset(id, ErrorCode::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    if !send_all(&shared, id, data, end).await || end {
                        return;
                    }
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    let _ = shared
                        .conn
                        .borrow_mut()
                        .send_trailers_fields(id, HeadFields::new(&trailers));
                    return;
                }
            },
        }
    }
}

/// Sends `data` (ending the stream if `end`), waiting for window and output room as needed;
/// false if the stream or the connection is gone.
async fn send_all(shared: &ConnShared, id: u32, data: Bytes, end: bool) -> bool {
    let mut sent = 0;
    loop {
        let ready = shared.send_room(id, sent == data.len() && end).await;
        if !ready {
            return false;
        }
        match shared.conn.borrow_mut().send_data(id, &data[sent..], end) {
            Ok(n) => sent += n,
            Err(_) => return false,
        }
        if sent == data.len() {
            return true;
        }
    }
}

/// A stream future that ends as soon as the client resets its stream (dropping what it was
/// doing), and forgets the stream when done.
pub struct Cancellable<F> {
    stream: Rc<StreamShared>,
    shared: Rc<ConnShared>,
    inner: F,
}

impl<F> Cancellable<F> {
    /// `inner` serving `stream`.
    pub fn new(stream: Rc<StreamShared>, shared: Rc<ConnShared>, inner: F) -> Cancellable<F> {
        Cancellable { stream, shared, inner }
    }
}

impl<F: Future<Output = ()> + Unpin> Future for Cancellable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.stream.reset.get() {
            if Pin::new(&mut this.inner).poll(cx).is_pending() {
                let mut task = this.stream.task.borrow_mut();
                if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *task = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            // Answered: a request body the client is still sending is not needed any more.
            let unfinished = this.stream.inbox.as_ref().is_some_and(|inbox| {
                let inbox = inbox.lock();
                !inbox.ended && inbox.reset.is_none()
            });
            if unfinished {
                this.shared.conn.borrow_mut().reset(this.stream.id, ErrorCode::NO_ERROR);
            }
        }
        this.shared.remove_stream(this.stream.id);
        Poll::Ready(())
    }
}
