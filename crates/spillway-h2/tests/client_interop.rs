//! Interop of [`spillway_h2::ClientConnection`] with a real HTTP/2 server over loopback: the
//! `h2` crate's server (and nginx, when installed). A small tokio driver below owns the
//! socket and the connection, pumps request bodies within the send windows, reads responses
//! and releases their window as it takes them — what the gateway's driver does, minus the
//! proxying.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use spillway_h2::{
    ClientConnection, ClientEvent, ClientSettings, ErrorCode, RequestError, RequestLine,
};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request for [`exchange`].
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    trailers: Option<(&'static str, &'static str)>,
}

/// How a request ended.
#[derive(Debug, Default)]
struct Resp {
    status: u16,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    reset: Option<ErrorCode>,
    refused: bool,
}

fn req(method: &'static str, path: &str, body: Vec<u8>) -> Req {
    Req { method, path: path.into(), body, trailers: None }
}

/// Sends all `reqs` on one connection (queueing those beyond the server's stream limit) and
/// returns their outcomes in order, plus the peak of concurrently open streams.
async fn exchange(
    addr: SocketAddr,
    settings: ClientSettings,
    reqs: Vec<Req>,
) -> (Vec<Resp>, usize) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut conn = ClientConnection::new(settings);
    let mut results: Vec<Resp> = reqs.iter().map(|_| Resp::default()).collect();
    let mut waiting: VecDeque<usize> = (0..reqs.len()).collect();
    // stream -> (request index, bytes of the body sent, request ended)
    let mut open: HashMap<u32, (usize, usize, bool)> = HashMap::new();
    let mut done = 0;
    let mut peak = 0;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let authority = addr.to_string();
    while done < reqs.len() {
        // Open what the server allows (once its SETTINGS told how many).
        while let Some(&i) = waiting.front().filter(|_| conn.settings_received()) {
            let r = &reqs[i];
            let line = RequestLine {
                method: r.method.as_bytes(),
                scheme: b"http",
                authority: authority.as_bytes(),
                path: r.path.as_bytes(),
            };
            let end = r.body.is_empty() && r.trailers.is_none();
            match conn.send_request(line, [(&b"te"[..], &b"trailers"[..])], end) {
                Ok(id) => {
                    waiting.pop_front();
                    open.insert(id, (i, 0, end));
                }
                Err(RequestError::NoCapacity) => break,
                Err(e) => panic!("send_request: {e}"),
            }
        }
        peak = peak.max(conn.active_streams());
        // Pump request bodies.
        for (&id, (i, sent, ended)) in open.iter_mut() {
            let r = &reqs[*i];
            if *ended {
                continue;
            }
            let rest = &r.body[*sent..];
            let last = r.trailers.is_none();
            if let Ok(n) = conn.send_data(id, rest, last) {
                *sent += n;
                if *sent == r.body.len() {
                    if let Some((n, v)) = r.trailers {
                        conn.send_trailers(id, [(n.as_bytes(), v.as_bytes())]).unwrap();
                    }
                    *ended = true;
                }
            }
        }
        let out = conn.output().to_vec();
        if !out.is_empty() {
            tcp.write_all(&out).await.expect("write");
            conn.consumed(out.len());
        }
        if conn.is_closed() {
            panic!("connection closed");
        }
        let n = tcp.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "server closed the connection");
        let frozen = buf.split().freeze();
        let used = conn.recv_bytes(&frozen, Instant::now()).expect("recv");
        buf.extend_from_slice(&frozen[used..]);
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientEvent::Response { stream, head, end_stream } => {
                    let (i, ..) = open[&stream];
                    results[i].status = head.status;
                    if end_stream {
                        done += 1;
                    }
                }
                ClientEvent::Data { stream, data, end_stream } => {
                    let (i, ..) = open[&stream];
                    results[i].body.extend_from_slice(&data);
                    conn.release_capacity(stream, data.len());
                    if end_stream {
                        done += 1;
                    }
                }
                ClientEvent::Trailers { stream, trailers } => {
                    let (i, ..) = open[&stream];
                    for (n, v) in trailers.iter() {
                        results[i].trailers.push((
                            String::from_utf8_lossy(n).into(),
                            String::from_utf8_lossy(v).into(),
                        ));
                    }
                    done += 1;
                }
                ClientEvent::Reset { stream, code } => {
                    let (i, ..) = open[&stream];
                    if results[i].status == 0 || code != ErrorCode::NO_ERROR {
                        results[i].reset = Some(code);
                        done += 1;
                    }
                }
                ClientEvent::Refused { stream } => {
                    let (i, ..) = open[&stream];
                    results[i].refused = true;
                    done += 1;
                }
                ClientEvent::WindowUpdate { .. } | ClientEvent::GoAway { .. } => {}
            }
        }
    }
    (results, peak)
}

/// An `h2` crate server: `/echo` answers the request body with trailers `x-len`, `/big/N`
/// sends N bytes, `/reset` resets the stream with INTERNAL_ERROR, `/goaway` starts a
/// graceful shutdown before answering.
async fn h2_server(max_streams: u32) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new()
                    .max_concurrent_streams(max_streams)
                    .initial_window_size(256 * 1024)
                    .handshake::<_, Bytes>(tcp)
                    .await
                    .unwrap();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    if req.uri().path() == "/goaway" {
                        conn.graceful_shutdown();
                    }
                    tokio::spawn(handle(req, respond));
                }
            });
        }
    });
    addr
}

async fn handle(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let path = req.uri().path().to_string();
    let mut body = req.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    let req_trailers = body.trailers().await.ok().flatten();
    if path == "/reset" {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    let data: Bytes = match path.strip_prefix("/big/") {
        Some(n) => vec![b'b'; n.parse().unwrap()].into(),
        None => got.into(),
    };
    let resp = http::Response::builder().status(200).body(()).unwrap();
    let Ok(mut tx) = respond.send_response(resp, false) else { return };
    let mut data = data;
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let Some(Ok(cap)) = std::future::poll_fn(|cx| tx.poll_capacity(cx)).await else { return };
        let chunk = data.split_to(cap.min(data.len()));
        if tx.send_data(chunk, false).is_err() {
            return;
        }
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-len", tx_len(&req_trailers, &path).parse().unwrap());
    let _ = tx.send_trailers(trailers);
}

fn tx_len(trailers: &Option<http::HeaderMap>, path: &str) -> String {
    match trailers.as_ref().and_then(|t| t.get("x-sum")) {
        Some(v) => format!("sum={}", v.to_str().unwrap()),
        None => format!("path={path}"),
    }
}

#[tokio::test]
async fn h2_server_many_concurrent_echoes_within_its_stream_limit() {
    let addr = h2_server(8).await;
    let reqs: Vec<Req> =
        (0..40).map(|i| req("POST", "/echo", vec![i as u8; 100_000 + i * 1000])).collect();
    let (resps, peak) = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(addr, ClientSettings::default(), reqs.clone()),
    )
    .await
    .expect("in time");
    assert!(peak <= 8, "the server's limit of 8 streams is respected (peak {peak})");
    assert!(peak > 1, "streams are multiplexed (peak {peak})");
    for (r, q) in resps.iter().zip(&reqs) {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, q.body);
        assert_eq!(r.trailers, vec![("x-len".to_string(), "path=/echo".to_string())]);
    }
}

#[tokio::test]
async fn h2_server_large_download_through_a_small_window_and_request_trailers() {
    let addr = h2_server(100).await;
    let settings = ClientSettings {
        initial_window_size: 65_535,
        connection_window_size: 65_535,
        ..ClientSettings::default()
    };
    let mut upload = req("POST", "/echo", vec![3; 300_000]);
    upload.trailers = Some(("x-sum", "42"));
    let reqs = vec![req("GET", "/big/5000000", vec![]), upload];
    let (resps, _) = tokio::time::timeout(Duration::from_secs(20), exchange(addr, settings, reqs))
        .await
        .expect("in time");
    assert_eq!(resps[0].body.len(), 5_000_000);
    assert_eq!(resps[1].body.len(), 300_000);
    assert_eq!(resps[1].trailers, vec![("x-len".to_string(), "sum=42".to_string())]);
}

#[tokio::test]
async fn h2_server_reset_of_one_stream_leaves_the_others() {
    let addr = h2_server(100).await;
    let reqs = vec![
        req("GET", "/big/1000", vec![]),
        req("GET", "/reset", vec![]),
        req("GET", "/big/10", vec![]),
    ];
    let (resps, _) = exchange(addr, ClientSettings::default(), reqs).await;
    assert_eq!(resps[0].body.len(), 1000);
    assert_eq!(resps[1].reset, Some(ErrorCode::INTERNAL_ERROR));
    assert_eq!(resps[2].body.len(), 10);
}

#[tokio::test]
async fn h2_server_graceful_goaway_finishes_streams_in_flight() {
    let addr = h2_server(100).await;
    let reqs = vec![req("GET", "/big/200000", vec![]), req("GET", "/goaway", vec![])];
    let (resps, _) = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(addr, ClientSettings::default(), reqs),
    )
    .await
    .expect("in time");
    assert_eq!(resps[0].body.len(), 200_000);
    assert_eq!(resps[1].status, 200);
}

fn installed(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn nginx_h2c_get_and_post() {
    if !installed("nginx") {
        eprintln!("nginx not installed: skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("spillway-h2-client-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = format!(
        "daemon off; pid {d}/nginx.pid; error_log {d}/error.log; events {{}}\n\
         http {{ access_log off; client_body_temp_path {d}; client_max_body_size 10m;\n\
         server {{ listen 127.0.0.1:{port} http2; location / {{ return 200 \"hello from nginx\"; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut child = std::process::Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .spawn()
        .expect("nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "nginx listening");
    let reqs = vec![
        req("GET", "/", vec![]),
        req("POST", "/", vec![1; 1_000_000]),
        req("GET", "/x", vec![]),
    ];
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(addr, ClientSettings::default(), reqs),
    )
    .await;
    // SIGTERM to the master (SIGKILL would leave its worker behind).
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let (resps, _) = result.expect("in time");
    assert_eq!(resps[0].status, 200);
    assert_eq!(resps[0].body, b"hello from nginx");
    assert_eq!(resps[1].status, 200, "{:?}", resps[1]);
    assert_eq!(resps[2].body, b"hello from nginx");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn nghttpd_h2c_files_and_upload() {
    if !installed("nghttpd") {
        eprintln!("nghttpd not installed (Debian package nghttp2-server): skipped");
        return;
    }
    let dir =
        std::env::temp_dir().join(format!("spillway-h2-client-nghttpd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big"), &big).unwrap();
    std::fs::write(dir.join("small"), b"small file").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new("nghttpd")
        .args(["--no-tls", "-a", "127.0.0.1", "-d"])
        .arg(&dir)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("nghttpd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "nghttpd listening");
    let reqs = vec![
        req("GET", "/big", vec![]),
        req("GET", "/missing", vec![]),
        req("POST", "/small", vec![9; 500_000]),
        req("GET", "/small", vec![]),
    ];
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(addr, ClientSettings::default(), reqs),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (resps, _) = result.expect("in time");
    assert_eq!(resps[0].status, 200);
    assert!(resps[0].body == big, "3 MB file intact");
    assert_eq!(resps[1].status, 404);
    assert_eq!(resps[2].status, 200, "{:?}", resps[2].reset);
    assert_eq!(resps[3].body, b"small file");
}
