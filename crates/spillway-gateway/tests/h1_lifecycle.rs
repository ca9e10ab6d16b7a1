//! Connection lifecycle of the lean HTTP/1.1 path, end to end on loopback: dormant keep-alive
//! connections, idle timeouts, graceful shutdown, stale pooled upstream sockets, the connection
//! gauge and hand-offs to hyper in the middle of a connection.
//!
//! Why: these behaviours live in timers, sweeps and socket moves between epoll sets that unit
//! tests cannot reach; a regression there shows up as a hung, dropped or miscounted connection
//! only with real sockets and real time. Where a test needs to know that a connection really
//! went dormant, it looks at the process's own epoll sets in `/proc` (the gateway runs in the
//! test process): a dormant socket sits in an epoll set that holds no listening socket.

#![allow(clippy::unwrap_used)]

mod common;

use common::blocking;
use common::raw::*;
use spillway_gateway::Gateway;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Long enough idle for a lean connection to have gone dormant (it does after 100 ms, checked
/// every 50 ms).
const DORMANT_IDLE: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------------------------
// Where a gateway-side socket is: the process's epoll sets, from /proc
// ---------------------------------------------------------------------------------------------

/// Where the gateway holds one client connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// No such socket (closed).
    Gone,
    /// Registered with a worker's runtime (the epoll set that also holds the listener).
    Runtime,
    /// Only in an epoll set holding no listening socket: the worker's dormant set.
    Dormant,
    /// Open but in no epoll set (moving between sets).
    Unwatched,
}

/// One look at the gateway's sockets on `port`.
struct Sockets {
    /// Inodes of the listening sockets on the port.
    listeners: HashSet<u64>,
    /// Inode of the gateway-side socket by the client's port.
    conns: HashMap<u16, u64>,
    /// The socket inodes each epoll set of the process watches.
    epolls: Vec<HashSet<u64>>,
}

/// `0100007F:1F90` -> port.
fn hex_port(field: &str) -> Option<u16> {
    u16::from_str_radix(field.rsplit(':').next()?, 16).ok()
}

impl Sockets {
    fn look(port: u16) -> Sockets {
        let mut listeners = HashSet::new();
        let mut conns = HashMap::new();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || hex_port(f[1]) != Some(port) {
                continue;
            }
            let Ok(inode) = f[9].parse::<u64>() else { continue };
            if inode == 0 {
                continue;
            }
            if f[3] == "0A" {
                listeners.insert(inode);
            } else if let Some(remote) = hex_port(f[2]) {
                conns.insert(remote, inode);
            }
        }
        let mut epolls = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") {
            for entry in dir.flatten() {
                // Descriptors come and go while other tests run: skip what cannot be read.
                let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
                let watched: HashSet<u64> = info
                    .lines()
                    .filter(|l| l.starts_with("tfd:"))
                    .filter_map(|l| {
                        let ino = l.split_whitespace().find_map(|t| t.strip_prefix("ino:"))?;
                        u64::from_str_radix(ino, 16).ok()
                    })
                    .collect();
                if !watched.is_empty() {
                    epolls.push(watched);
                }
            }
        }
        Sockets { listeners, conns, epolls }
    }

    fn place(&self, client_port: u16) -> Place {
        let Some(inode) = self.conns.get(&client_port) else { return Place::Gone };
        let holders: Vec<_> = self.epolls.iter().filter(|e| e.contains(inode)).collect();
        if holders.is_empty() {
            Place::Unwatched
        } else if holders.iter().any(|e| e.iter().any(|i| self.listeners.contains(i))) {
            Place::Runtime
        } else {
            Place::Dormant
        }
    }
}

/// Waits (up to `within`) until every client's connection is dormant in the gateway on
/// `port`; panics with what was seen otherwise.
async fn wait_dormant(port: u16, clients: &[u16], within: Duration) {
    let end = Instant::now() + within;
    loop {
        let sockets = Sockets::look(port);
        let places: Vec<Place> = clients.iter().map(|&c| sockets.place(c)).collect();
        if places.iter().all(|p| *p == Place::Dormant) {
            return;
        }
        assert!(Instant::now() < end, "not all dormant after {within:?}: {places:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// A gateway with `workers` workers and an HTTP/1.1 listener `public` (plus `listener_extra`
/// lines, indented four spaces) proxying everything to an HTTP/1.1 cluster on `backend`.
fn start(backend: SocketAddr, workers: usize, listener_extra: &str, top: &str) -> Gateway {
    common::gateway(&h1_proxy_yaml(backend, workers, "5s", top, listener_extra))
}

async fn stop(gw: Gateway) {
    let stopped = blocking(move || {
        gw.shutdown();
        gw.wait();
    });
    tokio::time::timeout(Duration::from_secs(10), stopped).await.unwrap();
}

/// The listener `public`'s open-connection gauge from the admin `/metrics`.
async fn open_connections(admin: SocketAddr) -> u64 {
    listener_gauge(admin, "spillway_downstream_connections").await
}

/// A per-listener gauge of the `public` listener on the admin `/metrics`.
async fn listener_gauge(admin: SocketAddr, name: &str) -> u64 {
    let (status, _, body) = common::get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let prefix = format!("{name}{{listener=\"public\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no gauge in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls the gauge (up to 3 s) until it reads `want`; returns the last reading.
async fn gauge_settles_at(admin: SocketAddr, want: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let seen = open_connections(admin).await;
        if seen == want || Instant::now() >= end {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dormant_connection_wakes_and_serves_further_requests_on_the_same_socket() {
    let b = raw_backend(echo_target).await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let port = addr.port();
    let mut c = connect(addr).await;
    let r = c.get("/one").await;
    let answered = Instant::now();
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /one"));
    // Not dormant before its time.
    let place = Sockets::look(port).place(c.port());
    assert!(
        place == Place::Runtime || answered.elapsed() >= Duration::from_millis(90),
        "{place:?} {:?} after the response",
        answered.elapsed()
    );
    for path in ["/two", "/three"] {
        tokio::time::sleep(DORMANT_IDLE).await;
        wait_dormant(port, &[c.port()], Duration::from_secs(2)).await;
        let r = c.get(path).await;
        assert_eq!((r.status(), r.text()), (200, format!("GET {path}")));
        assert!(!r.head.has_token("connection", "close"), "{:?}", r.head);
    }
    assert_eq!(b.targets(), ["/one", "/two", "/three"]);
    drop(c);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_dormant_connections_all_wake_at_once_and_are_served() {
    let b = raw_backend(echo_target).await;
    let gw = start(b.addr, 2, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut c = connect(addr).await;
        let r = c.get(&format!("/c{i}/1")).await;
        assert_eq!((r.status(), r.text()), (200, format!("GET /c{i}/1")));
        clients.push(c);
    }
    tokio::time::sleep(DORMANT_IDLE).await;
    let ports: Vec<u16> = clients.iter().map(|c| c.port()).collect();
    wait_dormant(addr.port(), &ports, Duration::from_secs(2)).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let r = c.get(&format!("/c{i}/2")).await;
                (i, r.status(), r.text())
            })
        })
        .collect();
    for t in tasks {
        let (i, status, text) = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        assert_eq!((status, text), (200, format!("GET /c{i}/2")));
    }
    assert_eq!(b.targets().len(), 100);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_an_idle_connection_but_not_a_busy_one() {
    let b = raw_backend(echo_target).await;
    let gw = start(b.addr, 1, "    timeouts: { idle: 300ms }", "");
    let addr = gw.listener_address("public").unwrap();
    let idle = tokio::spawn(async move {
        let mut c = connect(addr).await;
        let r = c.get("/idle").await;
        let answered = Instant::now();
        assert_eq!(r.status(), 200);
        let closed = c.closed_within(Duration::from_secs(3)).await;
        closed.map(|at| at - answered)
    });
    let mut busy = connect(addr).await;
    for i in 0..10 {
        let r = busy.get(&format!("/busy/{i}")).await;
        assert_eq!((r.status(), r.text()), (200, format!("GET /busy/{i}")));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = busy.get("/busy/last").await;
    assert_eq!(r.status(), 200, "a connection in use for 1 s outlives a 300 ms idle timeout");
    let idle_for = tokio::time::timeout(WAIT, idle).await.unwrap().unwrap();
    let idle_for = idle_for.expect("the idle connection was closed");
    assert!(
        idle_for >= Duration::from_millis(250) && idle_for <= Duration::from_secs(2),
        "closed {idle_for:?} after its last response"
    );
    drop(busy);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_a_dormant_connection() {
    let b = raw_backend(echo_target).await;
    let gw = start(b.addr, 1, "    timeouts: { idle: 1s }", "");
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    let r = c.get("/x").await;
    let answered = Instant::now();
    assert_eq!(r.status(), 200);
    wait_dormant(addr.port(), &[c.port()], Duration::from_millis(800)).await;
    let dormant_after = answered.elapsed();
    assert!(dormant_after >= Duration::from_millis(80), "dormant after {dormant_after:?}");
    let closed = c.closed_within(Duration::from_secs(3)).await;
    let idle_for = closed.expect("the dormant connection was closed") - answered;
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for <= Duration::from_secs(2),
        "closed {idle_for:?} after its last response"
    );
    assert_eq!(Sockets::look(addr.port()).place(c.port()), Place::Gone);
    drop(c);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_gauge_counts_dormant_connections_until_they_close() {
    let b = raw_backend(echo_target).await;
    let gw = start(b.addr, 1, "", "admin: { address: \"127.0.0.1:0\" }");
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    let baseline = gauge_settles_at(admin, 0).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = connect(addr).await;
        assert_eq!(c.get(&format!("/g{i}")).await.status(), 200);
        clients.push(c);
    }
    tokio::time::sleep(DORMANT_IDLE).await;
    let ports: Vec<u16> = clients.iter().map(|c| c.port()).collect();
    wait_dormant(addr.port(), &ports, Duration::from_secs(2)).await;
    assert_eq!(open_connections(admin).await, baseline + 5, "dormant connections are open");
    let dormant = listener_gauge(admin, "spillway_downstream_connections_dormant").await;
    assert_eq!(dormant, 5, "and counted as dormant");
    drop(clients);
    assert_eq!(gauge_settles_at(admin, baseline).await, baseline, "closed ones are uncounted");
    let dormant = listener_gauge(admin, "spillway_downstream_connections_dormant").await;
    assert_eq!(dormant, 0, "closed ones are no longer dormant");
    stop(gw).await;
}

/// Idle (parked and dormant) connections are closed at once; the request in flight gets its
/// response, and the gateway stops well within the drain timeout. (Whether that response
/// says `connection: close` is pinned separately below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_and_dormant_connections_at_once_and_finishes_the_request_in_flight() {
    let b = raw_backend(|req| {
        let mut r = echo_target(req);
        if req.target() == "/slow" {
            r.delay = Duration::from_millis(500);
        }
        r
    })
    .await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut idle = Vec::new();
    for i in 0..2 {
        let mut c = connect(addr).await;
        assert_eq!(c.get(&format!("/dormant{i}")).await.status(), 200);
        idle.push(c);
    }
    let ports: Vec<u16> = idle.iter().map(|c| c.port()).collect();
    wait_dormant(addr.port(), &ports, Duration::from_secs(2)).await;
    let mut parked = connect(addr).await;
    assert_eq!(parked.get("/parked").await.status(), 200);
    idle.push(parked);
    let mut slow = connect(addr).await;
    slow.send(get("/slow").as_bytes()).await;
    let end = Instant::now() + WAIT;
    while !b.targets().iter().any(|t| t == "/slow") {
        assert!(Instant::now() < end, "the slow request never reached the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    // Spawned now (`common::blocking` would only start when awaited).
    let stopped = tokio::task::spawn_blocking(move || {
        gw.shutdown();
        gw.wait();
    });
    let closers: Vec<_> = idle
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.closed_within(Duration::from_secs(3)).await }))
        .collect();
    let r = slow.response().await;
    let answered = Instant::now();
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /slow"));
    assert!(slow.closed_within(Duration::from_secs(3)).await.is_some(), "closed after it");
    for c in closers {
        let at = c.await.unwrap().expect("an idle connection was closed at shutdown");
        assert!(at < answered, "an idle connection waited for the drain");
        assert!(at - started < Duration::from_secs(1), "closed {:?} after shutdown", at - started);
    }
    tokio::time::timeout(Duration::from_secs(5), stopped).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the gateway stops once drained");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// The lean path decides `connection: close` when the request starts (`Exchange::close`) and
/// does not look at shutdown again when the response head is written: the response goes out
/// without it, then the socket is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_in_flight_at_shutdown_says_connection_close() {
    let b = raw_backend(|req| {
        let mut r = echo_target(req);
        r.delay = Duration::from_millis(500);
        r
    })
    .await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut slow = connect(addr).await;
    slow.send(get("/slow").as_bytes()).await;
    let end = Instant::now() + WAIT;
    while b.targets().is_empty() {
        assert!(Instant::now() < end, "the slow request never reached the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Spawned now (`common::blocking` would only start when awaited).
    let stopped = tokio::task::spawn_blocking(move || {
        gw.shutdown();
        gw.wait();
    });
    let r = slow.response().await;
    assert_eq!(r.status(), 200);
    assert!(slow.closed_within(Duration::from_secs(3)).await.is_some());
    tokio::time::timeout(Duration::from_secs(5), stopped).await.unwrap().unwrap();
    assert!(r.head.has_token("connection", "close"), "{:?}", r.head);
}

/// The backend closes each connection 20 ms after its response without saying so.
fn close_soon(req: &RawRequest) -> Reply {
    let body = format!("{} {} {}", req.method(), req.target(), String::from_utf8_lossy(&req.body));
    Reply {
        after: AfterReply::CloseLater(Duration::from_millis(20)),
        ..reply(ok(body.trim_end().as_bytes()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sockets_the_upstream_closed_silently_are_not_used_for_gets() {
    let b = raw_backend(close_soon).await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    for i in 0..20 {
        let path = format!("/g{i}");
        let r = c.get(&path).await;
        assert_eq!((r.status(), r.text()), (200, format!("GET {path}")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.targets().len(), 20, "each request reached the backend once");
    assert_eq!(b.accepted(), 20, "a fresh upstream connection each time");
    drop(c);
    stop(gw).await;
}

/// Pinned: spaced 50 ms apart, POSTs never meet the dead pooled socket either (the readiness
/// check at checkout sees the upstream's close), so all get 200; GETs in between too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_after_the_upstream_closed_silently_get_fresh_connections() {
    let b = raw_backend(close_soon).await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        c.send(post(&format!("/p{i}"), &format!("body{i}")).as_bytes()).await;
        let r = c.response().await;
        if r.status() == 200 {
            assert_eq!(r.text(), format!("POST /p{i} body{i}"));
        }
        statuses.push(r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = c.get(&format!("/g{i}")).await;
        assert_eq!((r.status(), r.text()), (200, format!("GET /g{i}")), "a GET never 502s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 502), "{statuses:?}");
    assert_eq!(statuses, [200; 10], "the readiness check kept every POST off a dead socket");
    drop(c);
    stop(gw).await;
}

/// Pinned: when a reused socket dies before any response byte (the upstream closes it 300 ms
/// after its last response, not reading what came meanwhile), a POST gets 502 and is not
/// retried, and a GET is retried once on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_socket_dying_unanswered_fails_a_post_and_retries_a_get() {
    let b = raw_backend(|req| Reply {
        after: AfterReply::CloseLater(Duration::from_millis(300)),
        ..reply(ok(format!("{} {}", req.method(), req.target()).as_bytes()))
    })
    .await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    assert_eq!(c.get("/a").await.text(), "GET /a");
    // At once, on the socket /a used: the upstream will close it unread.
    c.send(post("/b", "data").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status(), 502, "a POST is not retried: {}", r.text());
    let r = c.get("/c").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /c"));
    let r = c.get("/d").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /d"), "retried on a fresh connection");
    assert_eq!(b.targets(), ["/a", "/c", "/d"]);
    assert_eq!(b.accepted(), 3);
    drop(c);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_post_between_two_gets_is_handed_to_hyper_and_all_three_are_answered_in_order() {
    let b = raw_backend(|req| {
        let body =
            format!("{} {} {}", req.method(), req.target(), String::from_utf8_lossy(&req.body));
        reply(ok(body.trim_end().as_bytes()))
    })
    .await;
    let gw = start(b.addr, 1, "", "");
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    let r = c.get("/first").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /first"));
    c.send(b"POST /chunked HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    c.send(b"5\r\nhello\r\n").await;
    c.send(b"6\r\n world\r\n0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!((r.status(), r.text().as_str()), (200, "POST /chunked hello world"));
    let r = c.get("/third").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /third"));
    assert_eq!(b.targets(), ["/first", "/chunked", "/third"]);
    // hyper keeps the connection from then on: it never goes dormant.
    tokio::time::sleep(DORMANT_IDLE).await;
    assert_eq!(Sockets::look(addr.port()).place(c.port()), Place::Runtime);
    let r = c.get("/fourth").await;
    assert_eq!((r.status(), r.text().as_str()), (200, "GET /fourth"));
    drop(c);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_alternates_between_an_http1_and_an_http2_cluster() {
    let b1 = raw_backend(echo_target).await;
    let (b2, h2_state) = common::backend("h2-backend").await;
    let yaml = format!(
        r#"
workers: 1
shutdown: {{ drain: 5s }}
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: http1 }}
clusters:
  - {{ name: one, protocol: http1, endpoints: [{{ address: "{}" }}], timeouts: {{ request: 5s }} }}
  - {{ name: two, protocol: http2, endpoints: [{{ address: "{b2}" }}], timeouts: {{ request: 5s }} }}
routes:
  - {{ name: h2, match: {{ path_prefix: /h2 }}, cluster: two }}
  - {{ name: h1, match: {{ path_prefix: / }}, cluster: one }}
"#,
        b1.addr
    );
    let gw = common::gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    for i in 0..3 {
        let r = c.get(&format!("/h1/{i}")).await;
        assert_eq!((r.status(), r.text()), (200, format!("GET /h1/{i}")));
        let r = c.get(&format!("/h2/{i}")).await;
        assert_eq!((r.status(), r.text().as_str()), (200, "h2-backend"));
    }
    assert_eq!(b1.targets(), ["/h1/0", "/h1/1", "/h1/2"]);
    assert_eq!(h2_state.hits.load(Ordering::SeqCst), 3);
    drop(c);
    stop(gw).await;
}

/// An upstream that accepts connections and reads requests but never answers.
async fn silent_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// Timeouts of a second or more run on the worker's 50 ms sweep rather than a timer: the
/// request still ends with a 504 at its timeout, give or take a sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_timeout_ends_a_silent_upstream_with_504_on_time() {
    let backend = silent_backend().await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: http1 }}]
clusters:
  - {{ name: app, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 1s }} }}
routes: [{{ name: all, cluster: app }}]
"#
    );
    let gw = common::gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    let sent = Instant::now();
    let r = c.get("/never").await;
    let took = sent.elapsed();
    assert_eq!(r.status(), 504);
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1_500),
        "504 after {took:?}"
    );
    let r = c.get("/never-again").await;
    assert_eq!(r.status(), 504, "the connection stays usable after a 504");
    stop(gw).await;
}

/// A body over `max_body_bytes` gets its 413 even while the client is still sending it, and
/// nothing goes upstream. (The gateway then half-closes and drains for a moment, as nginx's
/// lingering close does; Linux on loopback delivers the response even to a reset connection,
/// so this test pins the answer, not the drain.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_reaches_a_client_still_sending_its_body() {
    let b = raw_backend(echo_target).await;
    let gw = start(b.addr, 1, "    limits: { max_body_bytes: 1000 }", "");
    let addr = gw.listener_address("public").unwrap();
    let mut c = connect(addr).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: test.local\r\nContent-Length: 300000\r\n\r\n").await;
    // Part of the body, which the gateway has not read when it answers; the response is read
    // only later, so a reset from the gateway would have discarded it by then.
    let chunk = vec![b'x'; 64 * 1024];
    let _ = tokio::time::timeout(WAIT, c.io.write_all(&chunk)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = c.response().await;
    assert_eq!(r.status(), 413);
    assert!(b.targets().is_empty(), "nothing went upstream");
    stop(gw).await;
}
