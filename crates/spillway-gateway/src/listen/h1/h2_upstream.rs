//! The lean exchange's upstream when the route's cluster speaks HTTP/2 (gRPC, above all): one
//! stream of the worker's lean HTTP/2 client (`upstream::h2_client`) instead of a pooled
//! HTTP/1.1 socket, with no `http` types on the way.
//!
//! The exchange writes every try's request head with the same edits as for HTTP/1.1
//! (`rewrite::write_upstream_head`: hop-by-hop fields dropped, `X-Forwarded-*`, `x-request-id`,
//! the deadline and admission fields set), here as a field list (`rewrite::H2Head`: names in
//! lower case) that is sent as the stream's HEADERS — `host` becomes `:authority` (the
//! endpoint's address without one), the target `:path`, the cluster's scheme `:scheme` — with
//! the buffered body after it. The response head comes back decoded; it is spelled as an
//! HTTP/1.1 head so that the exchange judges, counts and logs it as any other, and the body
//! and trailers go to the downstream as they come.
//!
//! Only an HTTP/2 downstream (`listen::h2::fast`) is given HTTP/2 upstreams: an HTTP/1.1
//! client would need the body framed anew (`conn::lean_serves`).

use super::conn::{timed, Conn, Downstream, Due, Elapsed, ExchangeIo, Failure, Timer, Upstream};
use super::head::{
    parse_response, ResponseError, ResponseFraming, ResponseHead, ResponseParse, Span,
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
    /// response head (spelled as HTTP/1.1 into `io.ubuf`, its fields in `io.ufields`). A
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
        spell_response_head(ubuf, &head);
        match parse_response(ubuf.filled(), head_request, ufields) {
            Ok(ResponseParse::Complete(mut response)) => {
                // An HTTP/2 body ends with its stream, whatever the fields say; one that
                // already ended (a trailers-only gRPC answer) keeps END_STREAM on the head.
                response.framing = if body.is_end_stream() {
                    ResponseFraming::Empty
                } else {
                    match response.framing {
                        ResponseFraming::Length(n) => ResponseFraming::Length(n),
                        _ => ResponseFraming::UntilClose,
                    }
                };
                Ok((Upstream::H2(body), response))
            }
            Ok(ResponseParse::Partial) => Err(Failure::Protocol(ResponseError::Malformed)),
            Err(e) => Err(Failure::Protocol(e)),
        }
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

/// Spells a decoded HTTP/2 response head as HTTP/1.1 (`HTTP/1.1 status`, the fields as they
/// came, CRLF) into `buf`, for the exchange's response parser.
fn spell_response_head(buf: &mut super::buffer::Buf, head: &spillway_h2::ResponseHead) {
    let status = head.status.min(999);
    let digits =
        [b'0' + (status / 100) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8];
    buf.put(b"HTTP/1.1 ");
    buf.put(&digits);
    buf.put(b" \r\n");
    for (name, value) in head.fields.iter() {
        buf.put_field(name, value);
    }
    buf.put(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::h1::buffer::Buf;

    #[test]
    fn a_decoded_response_head_reads_back_as_the_same_head() {
        let mut fields = spillway_h2::Fields::new();
        fields.push(b"content-type", b"application/grpc");
        fields.push(b"grpc-status", b"5");
        fields.push(b"x-request-id", b"abc");
        let head = spillway_h2::ResponseHead { status: 200, fields, content_length: None };
        let mut buf = Buf::with_capacity(8);
        spell_response_head(&mut buf, &head);
        let mut parsed = Vec::new();
        let Ok(ResponseParse::Complete(response)) =
            parse_response(buf.filled(), false, &mut parsed)
        else {
            panic!("{:?}", String::from_utf8_lossy(buf.filled()));
        };
        assert_eq!(response.status, 200);
        assert_eq!(response.len, buf.len());
        assert!(response.has_request_id);
        let read: Vec<(&[u8], &[u8])> =
            parsed.iter().map(|f| (f.name.of(buf.filled()), f.value.of(buf.filled()))).collect();
        let sent: Vec<(&[u8], &[u8])> = head.fields.iter().collect();
        assert_eq!(read, sent);
    }
}
