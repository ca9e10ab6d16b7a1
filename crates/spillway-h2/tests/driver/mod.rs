//! A tiny tokio driver around [`spillway_h2::Connection`] for interop tests and the
//! `h2c_server` example: reads the socket into the connection, writes its output, and runs
//! a test application — `/echo` answers with the request body (and an `x-body-len` trailer),
//! `/big?n=N` with N bytes, `/trailers` with a body and `grpc-status` trailers, anything else
//! with its path as the body; `/shutdown` also starts a graceful GOAWAY, `/bigheader` adds a
//! 40 KB response field.
#![allow(dead_code)]

use bytes::BytesMut;
use spillway_h2::{Connection, Event, ServerSettings};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes asked of each socket read.
const READ_SIZE: usize = 32 * 1024;

/// Owned header fields.
type FieldList = Vec<(Vec<u8>, Vec<u8>)>;

/// What the application still has to send on a stream.
#[derive(Default)]
struct Pending {
    body: VecDeque<u8>,
    trailers: Option<FieldList>,
    /// The response head is out and the body is being sent.
    sending: bool,
}

/// Per-stream application state.
#[derive(Default)]
struct App {
    path: Vec<u8>,
    body: Vec<u8>,
    out: Pending,
}

fn respond(conn: &mut Connection, stream: u32, app: &mut App) {
    let path = app.path.clone();
    let (body, trailers): (Vec<u8>, Option<FieldList>) = if path == b"/echo" {
        let len = app.body.len().to_string().into_bytes();
        (std::mem::take(&mut app.body), Some(vec![(b"x-body-len".to_vec(), len)]))
    } else if let Some(n) = path.strip_prefix(b"/big?n=") {
        let n: usize = std::str::from_utf8(n).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        ((0..n).map(|i| (i % 251) as u8).collect(), None)
    } else if path == b"/trailers" {
        (b"ok".to_vec(), Some(vec![(b"grpc-status".to_vec(), b"0".to_vec())]))
    } else if path == b"/shutdown" {
        conn.go_away(spillway_h2::ErrorCode::NO_ERROR);
        (path, None)
    } else {
        (path, None)
    };
    let end_now = body.is_empty() && trailers.is_none();
    // `/bigheader` gets a 40 KB field: the head leaves in HEADERS + CONTINUATION frames.
    let big = vec![b'h'; if app.path == b"/bigheader" { 40_000 } else { 0 }];
    let mut fields: Vec<(&[u8], &[u8])> =
        vec![(b"content-type", b"application/octet-stream"), (b"server", b"spillway-h2-test")];
    if !big.is_empty() {
        fields.push((b"x-big", &big));
    }
    if conn.send_response(stream, 200, &fields, end_now).is_err() {
        return;
    }
    app.out = Pending { body: body.into(), trailers, sending: !end_now };
}

/// Sends what the windows allow on every stream with pending output.
fn pump(conn: &mut Connection, apps: &mut HashMap<u32, App>) {
    let mut done = Vec::new();
    for (&stream, app) in apps.iter_mut() {
        if !app.out.sending {
            continue;
        }
        let p = &mut app.out;
        let total = p.body.len();
        let chunk = p.body.make_contiguous();
        let end = chunk.len() == total && p.trailers.is_none();
        match conn.send_data(stream, chunk, end) {
            Ok(n) => {
                p.body.drain(..n);
            }
            Err(_) => {
                done.push(stream);
                continue;
            }
        }
        if p.body.is_empty() {
            if let Some(t) = p.trailers.take() {
                let fields: Vec<(&[u8], &[u8])> = t.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                let _ = conn.send_trailers(stream, &fields);
            }
            done.push(stream);
        }
    }
    for s in done {
        apps.remove(&s);
    }
}

/// Drives one connection until the peer closes it or the connection ends.
pub async fn serve(socket: TcpStream) {
    socket.set_nodelay(true).ok();
    let (mut rd, mut wr) = socket.into_split();
    let mut conn = Connection::new(ServerSettings::default());
    let mut rbuf = BytesMut::new();
    let mut wbuf: Vec<u8> = Vec::new();
    let mut apps: HashMap<u32, App> = HashMap::new();
    let mut read_closed = false;
    rbuf.reserve(READ_SIZE);
    loop {
        wbuf.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.consumed(n);
        if wbuf.is_empty() && (conn.wants_close() || read_closed) {
            break;
        }
        tokio::select! {
            r = rd.read_buf(&mut rbuf), if !read_closed => {
                match r {
                    Ok(0) | Err(_) => read_closed = true,
                    Ok(_) => {
                        // Zero-copy: DATA events are slices of what was read; only the
                        // unconsumed tail (at most one partial frame) is copied back.
                        let frozen = rbuf.split().freeze();
                        match conn.recv_bytes(&frozen, Instant::now()) {
                            Ok(used) => rbuf.extend_from_slice(&frozen[used..]),
                            Err(e) => {
                                if std::env::var_os("H2_DEBUG").is_some() { eprintln!("connection error: {e}"); }
                                read_closed = true;
                            }
                        }
                        rbuf.reserve(READ_SIZE);
                    }
                }
            }
            w = wr.write(&wbuf), if !wbuf.is_empty() => {
                match w {
                    Ok(n) => { wbuf.drain(..n); }
                    Err(_) => break,
                }
            }
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Request { stream, head, end_stream } => {
                    let mut app =
                        App { path: head.path().unwrap_or(b"/").to_vec(), ..App::default() };
                    if end_stream {
                        respond(&mut conn, stream, &mut app);
                    }
                    apps.insert(stream, app);
                }
                Event::Data { stream, data, end_stream } => {
                    conn.release_capacity(stream, data.len());
                    if let Some(app) = apps.get_mut(&stream) {
                        app.body.extend_from_slice(&data);
                        if end_stream {
                            respond(&mut conn, stream, app);
                        }
                    }
                }
                Event::Trailers { stream, .. } => {
                    if let Some(app) = apps.get_mut(&stream) {
                        respond(&mut conn, stream, app);
                    }
                }
                Event::Reset { stream, .. } => {
                    apps.remove(&stream);
                }
                Event::WindowUpdate { .. } | Event::GoAway { .. } => {}
            }
        }
        pump(&mut conn, &mut apps);
    }
    let _ = wr.shutdown().await;
}

pub async fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    addr
}
