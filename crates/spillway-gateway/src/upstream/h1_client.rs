//! HTTP/1.1 to plain upstreams for the hyper path (HTTP/2 and TLS clients), over the lean
//! path's pooled sockets instead of hyper's client.
//!
//! hyper's HTTP/1.1 client runs each connection in a task of its own and hands every request
//! and response through a channel to it; under `bench/h2.sh` that dispatch (tokio scheduling,
//! the channel, hyper's client state machine) was ~12 % of the h2c path's CPU. Here the
//! request's own task writes the head, reads the response head and then the body, straight on
//! the socket, parsing with the lean path's parsers. A socket goes back to the worker's pool
//! (the one the lean path uses, so both paths share warm connections) once a delimited body
//! has been read to its end with nothing left over.
//!
//! Only requests whose body is already in memory (none, or a kept body) come this way: with a
//! streamed request body the upstream may answer before it has read it all, which needs a
//! client that reads and writes at once — hyper's. Interim (1xx) responses are skipped; the
//! trailers of a chunked response end the body as `http` trailers (the fields
//! `chunked::passed_on_in_trailers` lets through).

use crate::listen::h1::chunked::{
    passed_on_in_trailers, trailer_fields, ChunkedError, ChunkedScanner, Piece,
};
use crate::listen::h1::conn::MAX_RESPONSE_HEAD;
use crate::listen::h1::head::{parse_response, ResponseError, ResponseFraming, ResponseParse};
use crate::listen::h1::upstream::UpstreamPool;
use crate::upstream::pool::{connect_tcp, UpstreamError};
use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use spillway_core::{Clock, SystemClock};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// First read size for a response; doubled while reads fill it, up to [`MAX_READ`].
const FIRST_READ: usize = 4 * 1024;

/// Largest read of a streamed response body.
const MAX_READ: usize = 256 * 1024;

/// Bodies up to this size are written with the head, in one write.
const COALESCE_BODY: usize = 16 * 1024;

/// Why an exchange over a pooled socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The upstream closed the connection before a complete response head.
    #[error("upstream closed the connection before a complete response head")]
    ClosedBeforeHead,
    /// The upstream closed the connection before the end of a delimited body.
    #[error("upstream closed the connection in the middle of the response body")]
    ClosedInBody,
    /// The response head could not be proxied.
    #[error("bad response head: {0}")]
    Head(#[from] ResponseError),
    /// The response head was larger than 64 KiB (`MAX_RESPONSE_HEAD`).
    #[error("response head larger than 64 KiB")]
    HeadTooLarge,
    /// The chunked response body was malformed.
    #[error("bad chunked response body: {0}")]
    Chunked(#[from] ChunkedError),
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where an exchange's socket comes from and goes back to.
#[derive(Clone)]
pub struct SocketHome {
    /// The worker's idle upstream sockets.
    pub pool: Rc<UpstreamPool>,
    /// Stamps idle sockets.
    pub clock: SystemClock,
}

/// Whether this client can carry `req`: its body is already in memory.
pub fn carries(req: &Request<crate::proxy::body::ProxyBody>) -> bool {
    use crate::proxy::body::ProxyBody;
    matches!(req.body(), ProxyBody::Empty | ProxyBody::Buffered(_))
}

/// Sends `req` to `addr` on a pooled socket (or a new one, within `connect_timeout`) and reads
/// the final response head. A pooled socket that turns out closed before any byte of the
/// answer is replaced by a fresh one once, for idempotent requests. The caller bounds the
/// whole exchange in time.
pub async fn send(
    home: &SocketHome,
    addr: SocketAddr,
    connect_timeout: Duration,
    max_idle: Duration,
    req: Request<crate::proxy::body::ProxyBody>,
) -> Result<Response<ResponseBodyStream>, UpstreamError> {
    let (parts, body) = req.into_parts();
    let body = match body {
        crate::proxy::body::ProxyBody::Buffered(Some(data)) => data,
        _ => Bytes::new(),
    };
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, &parts, &body);
    let coalesce = body.len() <= COALESCE_BODY;
    if coalesce {
        head.extend_from_slice(&body);
    }
    let head_request = parts.method == Method::HEAD;
    let may_retry = spillway_core::retry::is_idempotent_method(parts.method.as_str());
    let mut retried = false;
    loop {
        let pooled = home.pool.checkout(addr, home.clock.now(), max_idle);
        let reused = pooled.is_some();
        let mut stream = match pooled {
            Some(s) => s,
            None => connect_tcp(addr, connect_timeout).await?,
        };
        let stale = reused && may_retry && !retried;
        let sent = async {
            stream.write_all(&head).await?;
            if !coalesce {
                stream.write_all(&body).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        if let Err(e) = sent.await {
            if stale {
                retried = true;
                continue;
            }
            return Err(UpstreamError::Exchange(addr, e.into()));
        }
        match read_response(stream, addr, home, head_request).await {
            Ok(resp) => return Ok(resp),
            Err((e, got_bytes)) => {
                if stale && !got_bytes {
                    retried = true;
                    continue;
                }
                return Err(UpstreamError::Exchange(addr, e));
            }
        }
    }
}

/// The request line and fields, with the body's framing: `Content-Length` of the kept body
/// (the request's own framing fields are replaced; none when there is no body and the client
/// gave no length).
fn write_request_head(out: &mut Vec<u8>, parts: &http::request::Parts, body: &Bytes) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length_given = false;
    for (name, value) in &parts.headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            length_given = true;
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || length_given {
        out.extend_from_slice(b"content-length: ");
        crate::listen::h1::rewrite::decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads the final response head from `stream` (skipping interim ones) and returns the
/// response whose body reads the rest. On error, also whether any byte had arrived.
async fn read_response(
    mut stream: TcpStream,
    addr: SocketAddr,
    home: &SocketHome,
    head_request: bool,
) -> Result<Response<ResponseBodyStream>, (ExchangeError, bool)> {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let mut fields = Vec::new();
    let mut got_bytes = false;
    let head = loop {
        if !buf.is_empty() {
            match parse_response(&buf, head_request, &mut fields) {
                Ok(ResponseParse::Complete(head)) if head.is_interim() => {
                    buf.advance(head.len);
                    continue;
                }
                Ok(ResponseParse::Complete(head)) => break head,
                Ok(ResponseParse::Partial) => {}
                Err(e) => return Err((e.into(), true)),
            }
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err((ExchangeError::HeadTooLarge, true));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(FIRST_READ));
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err((ExchangeError::ClosedBeforeHead, got_bytes)),
            Ok(_) => got_bytes = true,
            Err(e) => return Err((e.into(), got_bytes)),
        }
    };
    let mut headers = HeaderMap::with_capacity(fields.len() + crate::proxy::headers::ADDED_FIELDS);
    for field in &fields {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.of(&buf)),
            HeaderValue::from_bytes(field.value.of(&buf)),
        ) else {
            return Err((ExchangeError::Head(ResponseError::Malformed), true));
        };
        headers.append(name, value);
    }
    let Ok(status) = http::StatusCode::from_u16(head.status) else {
        return Err((ExchangeError::Head(ResponseError::Malformed), true));
    };
    buf.advance(head.len);
    let framing = match head.framing {
        ResponseFraming::Empty | ResponseFraming::Length(0) => Framing::Done,
        ResponseFraming::Length(n) => Framing::Length(n),
        ResponseFraming::Chunked => Framing::Chunked(ChunkedScanner::new()),
        ResponseFraming::UntilClose => Framing::UntilClose,
    };
    let mut body = ResponseBodyStream {
        home: home.clone(),
        addr,
        stream: Some(stream),
        buf,
        framing,
        reusable: head.reusable(),
        read_size: FIRST_READ,
        trailers: None,
    };
    if matches!(body.framing, Framing::Done) {
        body.finish();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// A chunked body's trailer section as `http` trailers: the fields passed on
/// ([`passed_on_in_trailers`]), names in lower case. `None` when none is left (or `http`
/// refuses them all).
fn trailer_map(section: &[u8]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in trailer_fields(section) {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        if passed_on_in_trailers(name.as_str().as_bytes()) {
            map.append(name, value);
        }
    }
    (!map.is_empty()).then_some(map)
}

/// How much of the response body is left.
#[derive(Debug)]
enum Framing {
    /// This many bytes.
    Length(u64),
    /// The rest of a chunked body.
    Chunked(ChunkedScanner),
    /// Everything until the upstream closes.
    UntilClose,
    /// Nothing: the body has ended.
    Done,
}

/// A response body read from its upstream socket, which goes back to the worker's pool when
/// the body ends cleanly (dropped otherwise, e.g. when the client goes away first).
pub struct ResponseBodyStream {
    home: SocketHome,
    /// The upstream's address, the socket's key in the pool.
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    reusable: bool,
    read_size: usize,
    /// A chunked body's trailers, from their first byte on (boxed: most bodies have none, and
    /// the body is moved with every response).
    trailers: Option<Box<Trailers>>,
}

/// A chunked body's trailer section as it is read (field lines with their CRLFs), then its
/// fields, handed out after the last data.
#[derive(Debug, Default)]
struct Trailers {
    section: Vec<u8>,
    fields: Option<HeaderMap>,
}

impl std::fmt::Debug for ResponseBodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBodyStream").field("framing", &self.framing).finish()
    }
}

impl ResponseBodyStream {
    /// The body has ended: the socket goes back to the pool when the upstream keeps it open
    /// and sent nothing past the body.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let Some(stream) = self.stream.take() else { return };
        if self.reusable && self.buf.is_empty() {
            self.home.pool.checkin(self.addr, stream, self.home.clock.now());
        }
    }

    /// The trailers' fields, once (after the last data).
    fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.as_mut()?.fields.take()
    }

    /// Reads more of the body into `buf`; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ExchangeError>> {
        let Some(stream) = self.stream.as_mut() else { return Poll::Ready(Ok(false)) };
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let room = self.buf.capacity() - self.buf.len();
            match stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(n) => {
                    if n == room && self.read_size < MAX_READ {
                        self.read_size *= 2;
                    }
                    return Poll::Ready(Ok(true));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// The next piece of body data already in `buf`, if any.
    fn take_data(&mut self) -> Result<Option<Bytes>, ExchangeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.framing {
            Framing::Done => Ok(None),
            Framing::Length(left) => {
                let n = usize::try_from(*left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                let data = self.buf.split_to(n).freeze();
                *left -= n as u64;
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            Framing::UntilClose => Ok(Some(self.buf.split().freeze())),
            Framing::Chunked(scanner) => {
                // Usually one piece of data per read; several are joined (small chunks).
                let mut first: Option<std::ops::Range<usize>> = None;
                let mut joined: Option<BytesMut> = None;
                let input = &self.buf[..];
                let trailers = &mut self.trailers;
                let scanned = scanner.scan_pieces(input, |piece| {
                    let range = match piece {
                        Piece::Data(range) => range,
                        Piece::Trailer(range) => {
                            let t = trailers.get_or_insert_with(Box::default);
                            return t.section.extend_from_slice(&input[range]);
                        }
                    };
                    if range.is_empty() {
                        return;
                    }
                    if let Some(j) = joined.as_mut() {
                        j.extend_from_slice(&input[range]);
                        return;
                    }
                    match first.take() {
                        None => first = Some(range),
                        Some(f) => {
                            let mut j = BytesMut::from(&input[f]);
                            j.extend_from_slice(&input[range]);
                            joined = Some(j);
                        }
                    }
                })?;
                let consumed = self.buf.split_to(scanned.consumed).freeze();
                if scanned.done {
                    if let Some(t) = self.trailers.as_mut() {
                        t.fields = trailer_map(&t.section);
                    }
                    self.finish();
                }
                Ok(match (joined, first) {
                    (Some(j), _) => Some(j.freeze()),
                    (None, Some(range)) => Some(consumed.slice(range)),
                    (None, None) => None,
                })
            }
        }
    }
}

impl Body for ResponseBodyStream {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        loop {
            if let Framing::Done = this.framing {
                return Poll::Ready(this.take_trailers().map(|t| Ok(Frame::trailers(t))));
            }
            match this.take_data() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => {
                    this.stream = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if let Framing::Done = this.framing {
                return Poll::Ready(this.take_trailers().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => {
                    let until_close = matches!(this.framing, Framing::UntilClose);
                    this.stream = None;
                    this.framing = Framing::Done;
                    if until_close {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(ExchangeError::ClosedInBody)));
                }
                Err(e) => {
                    this.stream = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
            && self.trailers.as_ref().is_none_or(|t| t.fields.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::body::ProxyBody;
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    fn home() -> SocketHome {
        SocketHome { pool: Rc::new(UpstreamPool::default()), clock: SystemClock::new() }
    }

    /// Reads one request (head, and a body of its `content-length`) and returns it whole.
    async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if got.len() >= end + 4 + len {
                    return Some(got);
                }
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }

    /// A server answering the requests of each connection with the next scripted answers
    /// (each answer is a list of writes); a connection ends when its script says `None`.
    /// Returns the address and the requests received.
    async fn server(
        script: Vec<Vec<Option<Vec<&'static [u8]>>>>,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for conn in script {
                let (mut stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    for answer in conn {
                        let Some(writes) = answer else { return };
                        let Some(req) = read_request(&mut stream).await else { return };
                        tx.send(req).unwrap();
                        for w in writes {
                            stream.write_all(w).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    // Keep the connection open until the client closes it.
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        (addr, rx)
    }

    fn get(path: &str) -> Request<ProxyBody> {
        Request::get(path).header("host", "up").body(ProxyBody::Empty).unwrap()
    }

    async fn exchange(
        home: &SocketHome,
        addr: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<(u16, HeaderMap, Bytes), String> {
        let second = Duration::from_secs(1);
        let resp = send(home, addr, second, second, req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, headers, body))
    }

    #[tokio::test]
    async fn a_length_delimited_answer_in_pieces_is_read_whole_and_its_socket_reused() {
        let answer: Vec<&'static [u8]> =
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nx-a: 1\r\n\r\nhello", b" world"];
        let (addr, mut requests) = server(vec![vec![Some(answer.clone()), Some(answer)]]).await;
        let home = home();
        let (status, headers, body) = exchange(&home, addr, get("/a?b=1")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
        assert_eq!(headers["x-a"], "1");
        assert_eq!(home.pool.len(), 1, "the socket went back to the pool");
        let req = String::from_utf8(requests.recv().await.unwrap()).unwrap();
        assert!(req.starts_with("GET /a?b=1 HTTP/1.1\r\nhost: up\r\n"), "{req}");
        assert!(!req.contains("content-length"), "no length for a GET without a body: {req}");
        // The second request rides the same connection (the script has one connection).
        let (status, _, body) = exchange(&home, addr, get("/")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded_across_reads_and_its_trailers_dropped() {
        let answer: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n ",
            b"\r\n3\r\nwor\r\n2\r\nld\r\n0\r\ngrpc-status: 0\r\n\r\n",
        ];
        let (addr, _requests) = server(vec![vec![Some(answer)]]).await;
        let home = home();
        let (status, _, body) = exchange(&home, addr, get("/")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"hello world"[..]));
        assert_eq!(home.pool.len(), 1);
    }

    #[tokio::test]
    async fn an_answer_delimited_by_close_ends_at_the_close_and_is_not_pooled() {
        let answer: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\n\r\nuntil", b" close"];
        let (addr, _requests) = server(vec![vec![Some(answer), None]]).await;
        let home = home();
        let (status, _, body) = exchange(&home, addr, get("/")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"until close"[..]));
        assert_eq!(home.pool.len(), 0);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_head_answers_have_no_body() {
        let answer: Vec<&'static [u8]> =
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n"];
        let (addr, _requests) = server(vec![vec![Some(answer)]]).await;
        let home = home();
        let head = Request::head("/").body(ProxyBody::Empty).unwrap();
        let (status, headers, body) = exchange(&home, addr, head).await.unwrap();
        assert_eq!((status, body.len()), (200, 0));
        assert_eq!(headers["content-length"], "50");
        assert_eq!(home.pool.len(), 1);
    }

    #[tokio::test]
    async fn connection_close_keeps_the_socket_out_of_the_pool() {
        let answer: Vec<&'static [u8]> =
            vec![b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"];
        let (addr, _requests) = server(vec![vec![Some(answer)]]).await;
        let home = home();
        assert_eq!(exchange(&home, addr, get("/")).await.unwrap().0, 204);
        assert_eq!(home.pool.len(), 0);
    }

    #[tokio::test]
    async fn a_kept_body_goes_with_its_length_and_replaces_the_clients_framing() {
        let answer: Vec<&'static [u8]> = vec![b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"];
        let (addr, mut requests) = server(vec![vec![Some(answer)]]).await;
        let home = home();
        let req = Request::post("/up")
            .header("transfer-encoding", "chunked")
            .body(ProxyBody::Buffered(Some(Bytes::from_static(b"payload"))))
            .unwrap();
        assert_eq!(exchange(&home, addr, req).await.unwrap().0, 201);
        let req = String::from_utf8(requests.recv().await.unwrap()).unwrap();
        assert!(req.starts_with("POST /up HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("content-length: 7\r\n\r\npayload"), "{req}");
        assert!(!req.contains("transfer-encoding"), "{req}");
    }

    #[tokio::test]
    async fn a_pooled_socket_closed_by_the_upstream_is_replaced_for_a_get_only() {
        let ok: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"];
        // First connection: one answer; the next request on it is read and the connection
        // closed without an answer (the upstream's idle timeout racing the request).
        let (addr, _requests) =
            server(vec![vec![Some(ok.clone()), Some(vec![]), None], vec![Some(ok.clone())]]).await;
        let home = home();
        assert_eq!(exchange(&home, addr, get("/")).await.unwrap().0, 200);
        assert_eq!(home.pool.len(), 1);
        // The server reads the second request, answers nothing and closes: a GET is sent again
        // on a new connection.
        let (status, _, body) = exchange(&home, addr, get("/")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));

        let (addr, _requests) = server(vec![vec![Some(ok.clone()), Some(vec![]), None]]).await;
        let home = self::home();
        assert_eq!(exchange(&home, addr, get("/")).await.unwrap().0, 200);
        let post = Request::post("/").body(ProxyBody::Buffered(Some(Bytes::from("x")))).unwrap();
        let error = exchange(&home, addr, post).await.unwrap_err();
        assert!(error.contains("before a complete response head"), "{error}");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_bad_head_refused() {
        let cut: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"];
        let (addr, _requests) = server(vec![vec![Some(cut), None]]).await;
        let home = home();
        let error = exchange(&home, addr, get("/")).await.unwrap_err();
        assert!(error.contains("middle of the response body"), "{error}");
        assert_eq!(home.pool.len(), 0);

        let bad: Vec<&'static [u8]> =
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"];
        let (addr, _requests) = server(vec![vec![Some(bad)]]).await;
        let error = exchange(&home, addr, get("/")).await.unwrap_err();
        assert!(error.contains("Content-Length"), "{error}");
    }
}
