//! The echo server's connection: `spillway_h2`'s sans-IO server codec on one tokio socket.
//!
//! A benchmark's upstream should cost little next to the proxy in front of it, above all on a
//! small machine where it shares the cores with the proxy and the load generator. hyper's
//! HTTP/2 server (`hyper_echo`, the only one before) spends about as much CPU per unary call as
//! the proxies being measured: a task per stream, `http` types, a channel per body. Here one
//! task owns the socket and the codec, and a call is a few bytes of state: the part of a
//! message not yet whole, echoes waiting for window, and whether the request has ended.
//!
//! Per call: the response head (`:status 200`, `content-type: application/grpc`) goes out with
//! the first echo (or the trailers), as a gRPC handler answers once it has a message to answer
//! with; each whole message is echoed as soon as it has arrived (within the send windows; the
//! rest waits for a WINDOW_UPDATE); when the request ends, the trailers `grpc-status: 0`, or 13
//! when it ended inside a message. All that one read brings is answered together (see
//! [`answer`]), in one write. Request bytes are returned to the windows as they are read.
//! Reads and writes are interleaved on readiness, so a peer that writes while it is not reading
//! cannot deadlock the connection.

use super::{EchoCounters, MAX_CONCURRENT_STREAMS};
use bytes::{Buf, Bytes, BytesMut};
use spillway_h2::{Connection, Event, ServerSettings};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes reserved for each read.
const READ_SIZE: usize = 64 * 1024;

/// The codec's limits for a benchmark upstream: many streams, and no reset-flood cut-off (a
/// load generator that stops cancels every call in flight at once, and the proxies pass those
/// cancellations on; a benchmark upstream must not answer them by closing the connection).
fn settings() -> ServerSettings {
    ServerSettings {
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        max_resets_per_window: u32::MAX,
        reset_window: Duration::from_secs(1),
        ..ServerSettings::default()
    }
}

/// One call in progress.
#[derive(Debug, Default)]
struct Call {
    /// Received bytes that do not make a whole message yet.
    partial: BytesMut,
    /// Echoes waiting for send window, in order.
    unsent: VecDeque<Bytes>,
    /// The request ended: trailers go out once `unsent` is empty.
    ended: bool,
    /// The response head went out.
    head_sent: bool,
}

/// Serves h2c gRPC echo on `tcp` until the peer closes, the connection fails, or the task is
/// dropped.
pub(super) async fn serve(tcp: TcpStream, counters: Arc<EchoCounters>) {
    let mut conn = Connection::new(settings());
    let mut calls = Calls::default();
    let mut rbuf = BytesMut::new();
    let _ = drive(&tcp, &mut conn, &mut calls, &mut rbuf, &counters).await;
}

/// The calls of a connection, and which of them have news since the last answer.
#[derive(Debug, Default)]
struct Calls {
    by_stream: HashMap<u32, Call>,
    /// Streams to answer once this read's events are all in (may repeat).
    touched: Vec<u32>,
}

/// The read-decode-answer-write loop; returns when the connection is over.
async fn drive(
    tcp: &TcpStream,
    conn: &mut Connection,
    calls: &mut Calls,
    rbuf: &mut BytesMut,
    counters: &EchoCounters,
) -> io::Result<()> {
    let mut peer_closed = false;
    loop {
        // Write what the codec has queued, as far as the socket takes it now.
        while !conn.output().is_empty() {
            match tcp.try_write(conn.output()) {
                Ok(n) => conn.consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let unwritten = !conn.output().is_empty();
        if (conn.is_closed() || peer_closed) && !unwritten {
            return Ok(());
        }
        let interest = match (peer_closed, unwritten) {
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            (false, false) => Interest::READABLE,
            (true, _) => Interest::WRITABLE,
        };
        let ready = tcp.ready(interest).await?;
        if peer_closed || !ready.is_readable() {
            continue;
        }
        rbuf.reserve(READ_SIZE);
        match tcp.try_read_buf(rbuf) {
            Ok(0) => peer_closed = true,
            Ok(_) => {
                let input = rbuf.split().freeze();
                let used = match conn.recv_bytes(&input, Instant::now()) {
                    Ok(used) => used,
                    // The codec queued GOAWAY: write it, then close.
                    Err(_) => input.len(),
                };
                if used < input.len() {
                    rbuf.extend_from_slice(&input[used..]);
                }
                while let Some(event) = conn.poll_event() {
                    on_event(conn, calls, event, counters);
                }
                answer(conn, calls);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// What one event of the codec means for the calls (answered by [`answer`] after the read).
fn on_event(conn: &mut Connection, calls: &mut Calls, event: Event, counters: &EchoCounters) {
    match event {
        Event::Request { stream, end_stream, .. } => {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            calls.by_stream.insert(stream, Call { ended: end_stream, ..Call::default() });
            if end_stream {
                calls.touched.push(stream);
            }
        }
        Event::Data { stream, data, end_stream } => {
            conn.release_capacity(stream, data.len());
            let Some(call) = calls.by_stream.get_mut(&stream) else { return };
            if let Some(echo) = counters.take_whole(&mut call.partial, data) {
                call.unsent.push_back(echo);
            }
            call.ended = end_stream;
            calls.touched.push(stream);
        }
        Event::Trailers { stream, .. } => {
            if let Some(call) = calls.by_stream.get_mut(&stream) {
                call.ended = true;
                calls.touched.push(stream);
            }
        }
        Event::Reset { stream, .. } => {
            calls.by_stream.remove(&stream);
        }
        Event::WindowUpdate { stream: 0 } => {
            let waiting = calls.by_stream.iter().filter(|(_, c)| !c.unsent.is_empty());
            calls.touched.extend(waiting.map(|(&id, _)| id));
        }
        Event::WindowUpdate { stream } => calls.touched.push(stream),
        Event::GoAway { .. } => {}
    }
}

/// Answers the calls with news, each whole before the next: its head if due, its echoes, its
/// trailers if it ended. (Heads first, then the bodies — the order hyper's server gives — was
/// measured too: HAProxy then spent more per call, 78 k calls/s against 108 k.)
fn answer(conn: &mut Connection, calls: &mut Calls) {
    for stream in std::mem::take(&mut calls.touched) {
        let Some(call) = calls.by_stream.get_mut(&stream) else { continue };
        if !call.head_sent && (call.ended || !call.unsent.is_empty()) {
            let head = [(&b"content-type"[..], &b"application/grpc"[..])];
            if conn.send_response(stream, 200, &head, false).is_err() {
                calls.by_stream.remove(&stream);
                continue;
            }
            call.head_sent = true;
        }
        flush(conn, &mut calls.by_stream, stream);
    }
}

/// Sends what `stream` has waiting (once its head is out), as far as the windows allow; once
/// all of it is out and the request has ended, the trailers, and the call is done.
fn flush(conn: &mut Connection, calls: &mut HashMap<u32, Call>, stream: u32) {
    let Some(call) = calls.get_mut(&stream) else { return };
    if !call.head_sent {
        return;
    }
    while let Some(front) = call.unsent.front_mut() {
        match conn.send_data(stream, front, false) {
            Ok(n) if n == front.len() => {
                call.unsent.pop_front();
            }
            Ok(n) => {
                front.advance(n);
                return;
            }
            Err(_) => {
                calls.remove(&stream);
                return;
            }
        }
    }
    if call.ended {
        let _ = if call.partial.is_empty() {
            conn.send_trailers(stream, &[(b"grpc-status", b"0")])
        } else {
            conn.send_trailers(
                stream,
                &[
                    (b"grpc-status", b"13"),
                    (b"grpc-message", b"the request ended inside a message"),
                ],
            )
        };
        calls.remove(&stream);
    }
}
