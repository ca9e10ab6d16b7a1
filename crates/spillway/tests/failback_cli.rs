//! The failback queue as a user relies on it: requests answered 202 while the upstream is down
//! survive a `kill -9` of `spillway run`, and the restarted gateway delivers each exactly once
//! to the upstream that came back (a third start delivers nothing again).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 exchange on a fresh connection: (status, headers, body).
fn exchange(port: u16, request: &str) -> Option<(u16, BTreeMap<String, String>, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, body.to_string()))
}

fn start(config: &std::path::Path, admin: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["run", "--no-watch", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while exchange(admin, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_none()
    {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// An upstream on `port` answering 200 to everything and noting (failback id, body).
fn upstream(port: u16) -> Arc<Mutex<Vec<(String, String)>>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize =
                    headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let id = headers.get("x-spillway-failback-id").cloned().unwrap_or_default();
                log.lock().unwrap().push((id, String::from_utf8_lossy(&body).to_string()));
                let mut s = stream;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    seen
}

#[test]
fn queued_requests_survive_kill_9_and_are_delivered_exactly_once() {
    let (gw, admin, up) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("spillway-failback-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config =
        std::env::temp_dir().join(format!("spillway-failback-cli-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "listeners: [{{ name: public, address: \"127.0.0.1:{gw}\" }}]\n\
             admin: {{ address: \"127.0.0.1:{admin}\" }}\n\
             clusters: [{{ name: orders, endpoints: [{{ address: \"127.0.0.1:{up}\" }}], \
             timeouts: {{ request: 2s, connect: 200ms }}, outlier: {{ consecutive_failures: 0 }} }}]\n\
             routes: [{{ name: orders, cluster: orders, \
             failback: {{ dir: \"{}\", backoff: {{ base: 100ms, max: 200ms }} }} }}]\n",
            dir.display()
        ),
    )
    .unwrap();

    // The upstream is down: every write is queued and answered 202.
    let mut child = start(&config, admin);
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = format!("{{\"order\":{i}}}");
        let request = format!(
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, headers, _) = exchange(gw, &request).unwrap();
        assert_eq!(status, 202);
        ids.push(headers["x-spillway-failback-id"].clone());
    }
    // kill -9: no shutdown, no flush.
    child.kill().unwrap();
    child.wait().unwrap();

    // The upstream returns; a new gateway on the same directory delivers everything once.
    let seen = upstream(up);
    let mut child = start(&config, admin);
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "delivered {:?}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    child.kill().unwrap();
    child.wait().unwrap();
    // A third start finds nothing left to deliver.
    let mut child = start(&config, admin);
    std::thread::sleep(Duration::from_millis(1000));
    let _ = child.kill();
    let _ = child.wait();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "exactly once: {seen:?}");
    let mut got: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    for i in 0..5 {
        assert!(seen.iter().any(|(_, b)| b == &format!("{{\"order\":{i}}}")), "{seen:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&config);
}
