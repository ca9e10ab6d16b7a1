//! Interop with real HTTP/2 peers over loopback: a tiny tokio driver around
//! [`spillway_h2::Connection`] serves the `h2` crate's client, `curl --http2-prior-knowledge`
//! and `h2load` (the last two when installed).
//!
//! The test application is described in `driver/mod.rs`.

mod driver;

use bytes::Bytes;
use driver::start_server;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(tcp)
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn request(method: &str, addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(())
        .expect("request")
}

async fn read_body(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        body.flow_control().release_capacity(chunk.len()).expect("release");
        out.extend_from_slice(&chunk);
    }
    out
}

/// Sends `data` respecting the client's flow control.
async fn send_body(tx: &mut h2::SendStream<Bytes>, mut data: Bytes) {
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let cap = std::future::poll_fn(|cx| tx.poll_capacity(cx))
            .await
            .expect("capacity")
            .expect("capacity ok");
        let chunk = data.split_to(cap.min(data.len()));
        tx.send_data(chunk, false).expect("send");
    }
}

#[tokio::test]
async fn h2_client_many_concurrent_streams() {
    let addr = start_server().await;
    let client = h2_client(addr).await;
    // One request first: until the server's SETTINGS arrive the client assumes no stream
    // limit and would open all 300 at once (the server rightly refuses those beyond 100).
    let (resp, _) = client
        .clone()
        .ready()
        .await
        .expect("ready")
        .send_request(request("GET", addr, "/first"), true)
        .expect("send");
    assert_eq!(resp.await.expect("response").status(), 200);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            client = client.ready().await.expect("ready");
            let path = format!("/item/{i}");
            let (resp, _) = client.send_request(request("GET", addr, &path), true).expect("send");
            let resp = resp.await.expect("response");
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            assert_eq!(read_body(&mut body).await, path.as_bytes());
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await.expect("in time").expect("task");
    }
}

#[tokio::test]
async fn h2_client_large_bodies_both_ways_with_trailers() {
    let addr = start_server().await;
    let mut tasks = Vec::new();
    for k in 0..4 {
        let client = h2_client(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut client = client.ready().await.expect("ready");
            // 3 MiB up: more than the server's stream (256 KiB) and connection (1 MiB) windows.
            let body: Bytes =
                (0..3 * 1024 * 1024 + k).map(|i| (i % 253) as u8).collect::<Vec<u8>>().into();
            let (resp, mut tx) =
                client.send_request(request("POST", addr, "/echo"), false).expect("send");
            send_body(&mut tx, body.clone()).await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-client", "done".parse().expect("value"));
            tx.send_trailers(trailers).expect("trailers");
            let resp = resp.await.expect("response");
            let mut rx = resp.into_body();
            let echoed = read_body(&mut rx).await;
            assert_eq!(echoed.len(), body.len());
            assert!(echoed == body, "echo matches");
            let t = rx.trailers().await.expect("trailers").expect("some trailers");
            assert_eq!(
                t.get("x-body-len").expect("len").to_str().expect("str"),
                body.len().to_string()
            );
            // 8 MiB down: the server must wait for the client's WINDOW_UPDATEs.
            let (resp, _) =
                client.send_request(request("GET", addr, "/big?n=8388608"), true).expect("send");
            let mut rx = resp.await.expect("response").into_body();
            let big = read_body(&mut rx).await;
            assert_eq!(big.len(), 8 * 1024 * 1024);
            assert!(big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("in time").expect("task");
    }
}

#[tokio::test]
async fn h2_client_trailers_and_resets_do_not_disturb_other_streams() {
    let addr = start_server().await;
    let client = h2_client(addr).await;
    let mut client = client.ready().await.expect("ready");
    let (resp, _) = client.send_request(request("GET", addr, "/trailers"), true).expect("send");
    let mut rx = resp.await.expect("response").into_body();
    assert_eq!(read_body(&mut rx).await, b"ok");
    let t = rx.trailers().await.expect("trailers").expect("some");
    assert_eq!(t.get("grpc-status").expect("status"), "0");

    // Client resets mid-upload and mid-download.
    for _ in 0..50 {
        let (_resp, mut tx) =
            client.send_request(request("POST", addr, "/echo"), false).expect("send");
        tx.send_data(Bytes::from_static(b"partial"), false).expect("data");
        tx.send_reset(h2::Reason::CANCEL);
        let (resp, _) =
            client.send_request(request("GET", addr, "/big?n=2000000"), true).expect("send");
        let mut rx = resp.await.expect("response").into_body();
        let first = rx.data().await.expect("some data").expect("ok");
        assert!(!first.is_empty());
        drop(rx); // h2 resets the stream with CANCEL
        client = client.ready().await.expect("ready");
    }
    // The connection still serves.
    let (resp, _) = client.send_request(request("GET", addr, "/still-alive"), true).expect("send");
    let mut rx = resp.await.expect("response").into_body();
    assert_eq!(read_body(&mut rx).await, b"/still-alive");
}

fn installed(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_prior_knowledge_get_and_post() {
    if !installed("curl") {
        eprintln!("curl not installed: skipped");
        return;
    }
    let addr = start_server().await;
    // One URL per run: curl 7.88.1 fails a second URL on a reused prior-knowledge connection
    // with "Error in the HTTP2 framing layer" against nginx 1.22 as well (a curl bug).
    for (path, want_len) in [("/hello/curl", 11), ("/big?n=300000", 300_000)] {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
            .arg(format!("http://{addr}{path}"))
            .output()
            .await
            .expect("curl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout.len(), want_len);
    }

    let body: Vec<u8> = (0..700_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let path = std::env::temp_dir().join(format!("spillway-h2-curl-{}", std::process::id()));
    std::fs::write(&path, &body).expect("write body");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "20", "--data-binary"])
        .arg(format!("@{}", path.display()))
        .arg(format!("http://{addr}/echo"))
        .output()
        .await
        .expect("curl runs");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == body, "echoed {} bytes", out.stdout.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_many_streams() {
    if !installed("h2load") {
        eprintln!("h2load not installed: skipped");
        return;
    }
    let addr = start_server().await;
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "20000", "-c", "8", "-m", "32"])
        .arg(format!("http://{addr}/x"))
        .output()
        .await
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("20000 succeeded, 0 failed, 0 errored"), "{text}");
}

#[tokio::test]
async fn graceful_goaway_lets_in_flight_streams_finish() {
    let addr = start_server().await;
    let client = h2_client(addr).await;
    let mut client = client.ready().await.expect("ready");
    // Stream 1: an upload still in flight when the server starts going away.
    let (upload, mut tx) =
        client.send_request(request("POST", addr, "/echo"), false).expect("send");
    tx.send_data(Bytes::from_static(b"first half, "), false).expect("data");
    client = client.ready().await.expect("ready");
    let (resp, _) = client.send_request(request("GET", addr, "/shutdown"), true).expect("send");
    let mut rx = resp.await.expect("response").into_body();
    assert_eq!(read_body(&mut rx).await, b"/shutdown");
    // The in-flight upload completes after the GOAWAY.
    tx.send_data(Bytes::from_static(b"second half"), true).expect("data");
    let mut rx = upload.await.expect("upload response").into_body();
    assert_eq!(read_body(&mut rx).await, b"first half, second half");
    // No new stream is accepted any more.
    let refused = match client.ready().await {
        Err(_) => true,
        Ok(mut c) => match c.send_request(request("GET", addr, "/late"), true) {
            Err(_) => true,
            Ok((resp, _)) => resp.await.is_err(),
        },
    };
    assert!(refused, "a stream opened after GOAWAY must not be served");
}

#[tokio::test]
async fn h2_client_accepts_a_response_head_split_into_continuations() {
    let addr = start_server().await;
    let client = h2_client(addr).await;
    let mut client = client.ready().await.expect("ready");
    let (resp, _) = client.send_request(request("GET", addr, "/bigheader"), true).expect("send");
    let resp = resp.await.expect("response");
    assert_eq!(resp.headers().get("x-big").expect("x-big").len(), 40_000);
    let mut rx = resp.into_body();
    assert_eq!(read_body(&mut rx).await, b"/bigheader");
}
