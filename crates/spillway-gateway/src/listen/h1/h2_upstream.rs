//! The lean exchange's upstream when the route's cluster speaks HTTP/2 (gRPC, above all): one
//! stream of the worker's lean HTTP/2 client (`upstream::h2_client`) instead of a pooled
//! HTTP/1.1 socket, with no `http` types on the way.
//!
//! The exchange writes every try's request head with the same edits as for HTTP/1.1
//! (`rewrite::write_upstream_head`: hop-by-hop fields dropped, `X-Forwarded-*`, `x-request-id`,
//! the deadline and admission fields set), here as a field list (`rewrite::H2Head`: names in
//! lower case) that is sent as the stream's HEADERS — `host` becomes `:authority` (the
//! endpoint's address without one), the target `:path`, the cluster's scheme `:scheme` — with
//! the buffered body after it. The response head comes back decoded; its fields are laid out
//! with their spans and kinds as the HTTP/1.1 parser gives them, so that the exchange judges,
//! counts and logs it as any other, and the body and trailers go to the downstream as they
//! come.
//!
//! Only an HTTP/2 downstream (`listen::h2::fast`) is given HTTP/2 upstreams: an HTTP/1.1
//! client would need the body framed anew (`conn::lean_serves`).

use super::buffer::Buf;
use super::conn::{timed, Conn, Downstream, Due, Elapsed, ExchangeIo, Failure, Timer, Upstream};
use super::head::{
    response_has_no_body, ConnectionOptions, Field, FieldKind, ResponseFraming, ResponseHead, Span,
};
use crate::proxy::body::ProxyBody;
use crate::upstream::h2_client::{H2ClientError, H2ResponseBody, Piece};
use crate::upstream::tls::UpstreamTls;
use bytes::Bytes;
use spillway_h2::RequestLine;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// An HTTP/2 try: where it goes besides the endpoint's address, and the request line, `host`
/// and body that go with the fields in the exchange's request buffer (written by
/// [`super::rewrite::H2Head`]).
pub(crate) struct H2Target<'a> {
    /// The cluster's TLS connector, if it has one.
    pub(crate) tls: Option<&'a Arc<UpstreamTls>>,
    /// `:scheme`: `https` over TLS.
    pub(crate) scheme: &'static [u8],
    /// `:authority` for a request without `host`: the endpoint's address.
    pub(crate) authority: &'a [u8],
    /// `:method`, in the request buffer.
    pub(crate) method: Span,
    /// `:path`, in the request buffer.
    pub(crate) target: Span,
    /// `host`, in the request buffer: the `:authority`.
    pub(crate) host: Option<Span>,
    /// The request body.
    pub(crate) body: &'a [u8],
}

impl<D: Downstream> Conn<'_, D> {
    /// Sends the request `io.request` holds on a stream to `io.addr` and waits for the
    /// response head (its fields' bytes in `io.ubuf`, their spans in `io.ufields`). A
    /// stream the server refused unprocessed (GOAWAY, stream limit) goes once more on another
    /// connection, as on the general path.
    pub(super) async fn exchange_h2(
        &mut self,
        io: ExchangeIo<'_, '_>,
        target: H2Target<'_>,
    ) -> Result<(Upstream, ResponseHead), Failure> {
        let ExchangeIo {
            addr, connect, request, head_request, mut deadline, ubuf, ufields, ..
        } = io;
        let timer = io.timer;
        ubuf.consume(usize::MAX);
        let line = RequestLine {
            method: target.method.of(request),
            scheme: target.scheme,
            authority: target.host.map_or(target.authority, |h| h.of(request)),
            path: target.target.of(request),
        };
        let fields = ufields.iter().map(|f| (f.name.of(request), f.value.of(request)));
        let body = || match target.body.is_empty() {
            true => ProxyBody::Empty,
            false => ProxyBody::Buffered(Some(Bytes::copy_from_slice(target.body))),
        };
        let pool = &self.worker.pool;
        let conn = pool.checkout_h2_lean(addr, target.tls, connect, None);
        let mut answer =
            timed(timer, &mut deadline, conn.send_fields(line, fields.clone(), body())).await;
        if let Ok(Err(H2ClientError::Refused | H2ClientError::NoCapacity)) = answer {
            let again = pool.checkout_h2_lean(addr, target.tls, connect, Some(&conn));
            answer = timed(timer, &mut deadline, again.send_fields(line, fields, body())).await;
        }
        let (head, body) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(failure(e, addr)),
            Err(Elapsed) => return Err(Failure::Timeout),
        };
        let ended = body.is_end_stream();
        let response = read_response_head(ubuf, ufields, &head, head_request, ended);
        Ok((Upstream::H2(body), response))
    }

    /// Passes an HTTP/2 upstream's body and trailers on, within `until_ns` (the request's
    /// time, as on the general path: a quiet stream is not cut before it, so a server-streaming
    /// call waits for its next message as long as its time allows). True when the body ended
    /// cleanly.
    pub(super) async fn pass_body_h2(
        &mut self,
        mut body: H2ResponseBody,
        out: &mut Vec<u8>,
        timer: &mut Timer<'_>,
        until_ns: u64,
    ) -> bool {
        loop {
            // What has come already is passed on without a clock read or a timer.
            let piece = match body.poll_piece(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(piece) => piece,
                Poll::Pending => {
                    let left = until_ns.saturating_sub(self.worker.shared.now().as_nanos());
                    if left == 0 {
                        self.down.cut_by_deadline();
                        return false;
                    }
                    let mut due = Due::after(Duration::from_nanos(left));
                    match timed(timer, &mut due, poll_fn(|cx| body.poll_piece(cx))).await {
                        Ok(piece) => piece,
                        Err(Elapsed) => {
                            self.down.cut_by_deadline();
                            return false;
                        }
                    }
                }
            };
            let sent = match piece {
                Some(Ok(Piece::Data(data))) => {
                    let end = body.is_end_stream();
                    let sent = self.down.send_body(timer, out, false, &data, end).await;
                    if sent.is_ok() && end {
                        return true;
                    }
                    sent
                }
                Some(Ok(Piece::Trailers(fields))) => {
                    return self.down.send_trailer_fields(timer, &fields).await.is_ok();
                }
                None => return self.down.send_body(timer, out, false, &[], true).await.is_ok(),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upstream HTTP/2 response body broke");
                    return false;
                }
            };
            if sent.is_err() {
                return false;
            }
        }
    }
}

/// What the exchange makes of a failed HTTP/2 try: a connection that could not be made is
/// unavailable (502, a connect failure for retries), anything after is a reset (502).
fn failure(e: H2ClientError, addr: SocketAddr) -> Failure {
    match e {
        H2ClientError::Connect { timeout: true, .. } => Failure::Timeout,
        e @ (H2ClientError::Connect { .. } | H2ClientError::Refused) => {
            Failure::Unavailable(e.into_upstream(addr))
        }
        e => {
            tracing::debug!(error = %e, %addr, "upstream HTTP/2 exchange failed");
            Failure::Reset(std::io::Error::other(e))
        }
    }
}

/// The exchange's view of a decoded HTTP/2 response head: its fields' names and values laid
/// end to end in `buf` (emptied by the caller), their spans and kinds in `fields`, as the
/// HTTP/1.1 parser would give them — nothing to check again (the codec refused what HTTP/2
/// forbids, `transfer-encoding` and `connection` among it). Its body ends with its stream:
/// none after a head that ended it (a trailers-only gRPC answer keeps END_STREAM on its
/// head), else as long as its `content-length` says, or until the stream ends.
fn read_response_head(
    buf: &mut Buf,
    fields: &mut Vec<Field>,
    head: &spillway_h2::ResponseHead,
    head_request: bool,
    ended: bool,
) -> ResponseHead {
    fields.clear();
    let (mut has_request_id, mut has_date) = (false, false);
    for (name, value) in head.fields.iter() {
        let start = buf.len();
        buf.put(name);
        buf.put(value);
        let kind = FieldKind::of(name);
        has_request_id |= kind == FieldKind::XRequestId;
        has_date |= kind == FieldKind::Date;
        let name = Span::range(start, start + name.len());
        fields.push(Field { name, value: Span::range(name.end(), buf.len()), kind });
    }
    let status = head.status;
    let no_body = response_has_no_body(status, head_request);
    let framing = match head.content_length {
        _ if no_body || ended => ResponseFraming::Empty,
        Some(n) => ResponseFraming::Length(n),
        None => ResponseFraming::UntilClose,
    };
    ResponseHead {
        len: buf.len(),
        status,
        reason: Span::default(),
        minor_version: 1,
        framing,
        connection: ConnectionOptions::default(),
        has_request_id,
        has_date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, fields: &[(&[u8], &[u8])]) -> spillway_h2::ResponseHead {
        let mut list = spillway_h2::Fields::new();
        for (n, v) in fields {
            list.push(n, v);
        }
        let content_length =
            list.get(b"content-length").and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
        spillway_h2::ResponseHead { status, fields: list, content_length }
    }

    #[test]
    fn a_decoded_response_head_reads_as_the_http1_parser_would_give_it() {
        let sent: [(&[u8], &[u8]); 4] = [
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"5"),
            (b"x-request-id", b"abc"),
            (b"date", b"Mon, 07 Dec 2026 10:00:00 GMT"),
        ];
        let (mut buf, mut fields) = (Buf::with_capacity(8), Vec::new());
        let response = read_response_head(&mut buf, &mut fields, &head(200, &sent), false, true);
        assert_eq!(response.status, 200);
        assert_eq!(response.len, buf.len());
        assert!(response.has_request_id && response.has_date);
        assert_eq!(response.framing, ResponseFraming::Empty, "a head that ended its stream");
        let read: Vec<(&[u8], &[u8])> =
            fields.iter().map(|f| (f.name.of(buf.filled()), f.value.of(buf.filled()))).collect();
        assert_eq!(read, sent);
        for f in &fields {
            assert_eq!(f.kind, FieldKind::of(f.name.of(buf.filled())));
        }
    }

    #[test]
    fn the_body_is_framed_by_the_stream() {
        let framing = |status, fields: &[(&[u8], &[u8])], head_request, ended| {
            let (mut buf, mut list) = (Buf::with_capacity(8), Vec::new());
            let h = head(status, fields);
            read_response_head(&mut buf, &mut list, &h, head_request, ended).framing
        };
        let length: [(&[u8], &[u8]); 1] = [(b"content-length", b"12")];
        assert_eq!(framing(200, &length, false, false), ResponseFraming::Length(12));
        assert_eq!(framing(200, &[], false, false), ResponseFraming::UntilClose);
        assert_eq!(framing(200, &length, true, false), ResponseFraming::Empty);
        assert_eq!(framing(204, &[], false, false), ResponseFraming::Empty);
        assert_eq!(framing(304, &length, false, false), ResponseFraming::Empty);
        assert_eq!(framing(200, &[], false, true), ResponseFraming::Empty);
    }
}
