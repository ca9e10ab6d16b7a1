//! Traffic recording end to end: requests through a gateway route with `record:` land in the
//! JSONL file (order, head, redaction, body cap), `spillway replay` plays that file against
//! another backend which receives the same requests, reloads keep or replace recorders, and
//! bad `record` settings are refused with their key.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use spillway_gateway::Config;
use spillway_load::cli::{ConnectionOptions, OutputOptions};
use spillway_load::replay::{run_replay, ReplayOptions};
use spillway_record::{read_traffic, TrafficEntry, REDACTED};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a recording backend saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// A backend that keeps every request it receives (body read whole) and answers 200.
async fn recording_backend() -> (SocketAddr, SeenLog) {
    let seen: SeenLog = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().map(str::to_string),
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, Infallible>(Response::new(body_of("ok")))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn body_of(text: &'static str) -> TestBody {
    body(Bytes::from_static(text.as_bytes()))
}

/// Reads the recording until it holds `n` entries (the writer thread flushes shortly after
/// each burst); bounded wait.
fn wait_for_entries(path: &Path, n: usize) -> Vec<TrafficEntry> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = read_traffic(path).unwrap_or_default();
        if entries.len() >= n || Instant::now() > deadline {
            return entries;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn header<'a>(entry: &'a TrafficEntry, name: &str) -> Option<&'a str> {
    entry.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn recording_yaml(backend: SocketAddr, record: &str) -> String {
    format!(
        r#"
workers: 1
listeners: [{{ name: l, address: "127.0.0.1:0" }}]
clusters: [{{ name: app, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 5s }} }}]
routes:
  - name: api
    match: {{ path_prefix: /api }}
    cluster: app
    record: {record}
  - name: rest
    cluster: app
"#
    )
}

const LONG_BODY: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";

#[test]
fn recorded_traffic_is_redacted_capped_and_replays_in_order() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (origin, origin_seen) = rt.block_on(recording_backend());
    let (replica, replica_seen) = rt.block_on(recording_backend());
    let file = temp_path("traffic.jsonl");
    let yaml =
        recording_yaml(origin, &format!(r#"{{ file: "{}", max_body: 16B }}"#, file.display()));
    let yaml = yaml.replace("workers: 1\n", "workers: 1\nadmin: { address: \"127.0.0.1:0\" }\n");
    let gw = gateway(&yaml);
    let addr = gw.listener_address("l").unwrap();

    rt.block_on(async {
        let first = Request::get("/api/items?id=7&q=x")
            .header("host", "shop.local")
            .header("authorization", "Bearer secret")
            .header("cookie", "sid=1")
            .header("x-trace", "t1")
            .body(body_of(""))
            .unwrap();
        assert_eq!(h1(addr, first).await.0, 200);
        let post = Request::post("/api/orders")
            .header("host", "shop.local")
            .header("content-type", "text/plain")
            .body(body(Bytes::from_static(LONG_BODY)))
            .unwrap();
        assert_eq!(h1(addr, post).await.0, 200);
        // Another route: not recorded.
        assert_eq!(get(addr, "/elsewhere").await.0, 200);
        let put = Request::put("/api/small").header("host", "shop.local").body(body_of("tiny"));
        assert_eq!(h1(addr, put.unwrap()).await.0, 200);
    });

    let entries = wait_for_entries(&file, 3);
    assert_eq!(entries.len(), 3, "{entries:#?}");
    let order: Vec<(&str, &str)> =
        entries.iter().map(|e| (e.method.as_str(), e.path.as_str())).collect();
    assert_eq!(order, [("GET", "/api/items"), ("POST", "/api/orders"), ("PUT", "/api/small")]);
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(entries.windows(2).all(|w| w[0].offset_us <= w[1].offset_us));

    let (head, post, put) = (&entries[0], &entries[1], &entries[2]);
    assert_eq!(head.query.as_deref(), Some("id=7&q=x"));
    assert_eq!(header(head, "authorization"), Some(REDACTED));
    assert_eq!(header(head, "cookie"), Some(REDACTED));
    assert_eq!(header(head, "x-trace"), Some("t1"));
    assert_eq!(header(head, "host"), Some("shop.local"));
    assert_eq!(head.body_len, 0);
    assert_eq!(post.query, None);
    assert_eq!(post.body_bytes().unwrap(), &LONG_BODY[..16]);
    assert_eq!((post.body_len, post.body_truncated), (LONG_BODY.len() as u64, true));
    assert_eq!((put.body.as_str(), put.body_truncated), ("tiny", false));

    let (_, _, metrics) = rt.block_on(get(gw.admin_address().unwrap(), "/metrics"));
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    let written = format!(
        "spillway_record_entries_total{{file=\"{}\",result=\"written\"}} 3",
        file.display()
    );
    assert!(metrics.contains(&written), "{metrics}");
    common::promtool_accepts(&metrics);

    // The tee only copies: the origin got every byte, and the unrecorded route too.
    {
        let seen = origin_seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[1].body.as_ref(), LONG_BODY);
        assert_eq!(seen[0].headers.get("authorization").unwrap(), "Bearer secret");
    }
    gw.shutdown();
    gw.wait();

    // Round trip: replay the file against the replica.
    let report = run_replay(ReplayOptions {
        files: vec![file.clone()],
        with_rotated: false,
        url: format!("http://{replica}"),
        speed: 10.0,
        looped: false,
        duration: None,
        requests: None,
        connection: ConnectionOptions { connections: Some(1), ..Default::default() },
        output: OutputOptions { quiet: true, ..Default::default() },
    })
    .unwrap();
    drop(report);
    let seen = replica_seen.lock().unwrap().clone();
    let replayed: Vec<(&str, &str, Option<&str>, &[u8])> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.query.as_deref(), s.body.as_ref()))
        .collect();
    assert_eq!(
        replayed,
        [
            ("GET", "/api/items", Some("id=7&q=x"), &b""[..]),
            ("POST", "/api/orders", None, &LONG_BODY[..16]),
            ("PUT", "/api/small", None, &b"tiny"[..]),
        ]
    );
    assert_eq!(seen[0].headers.get("x-trace").unwrap(), "t1");
    assert!(seen[0].headers.get("authorization").is_none(), "redacted headers are not replayed");
    assert!(seen[0].headers.get("cookie").is_none());
    let _ = std::fs::remove_file(&file);
}

#[test]
fn unsampled_route_records_nothing_and_keeps_proxying() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (origin, origin_seen) = rt.block_on(recording_backend());
    let file = temp_path("none.jsonl");
    let yaml = recording_yaml(origin, &format!(r#"{{ file: "{}", sample: 0 }}"#, file.display()));
    let gw = gateway(&yaml);
    let addr = gw.listener_address("l").unwrap();
    rt.block_on(async {
        for _ in 0..5 {
            let post = Request::post("/api/x").body(body(Bytes::from_static(LONG_BODY))).unwrap();
            assert_eq!(h1(addr, post).await.0, 200);
        }
    });
    gw.shutdown();
    gw.wait();
    assert_eq!(origin_seen.lock().unwrap().len(), 5);
    assert!(read_traffic(&file).unwrap().is_empty());
    let _ = std::fs::remove_file(&file);
}

#[test]
fn requests_refused_before_the_upstream_are_recorded_too() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (origin, origin_seen) = rt.block_on(recording_backend());
    let file = temp_path("refused.jsonl");
    let yaml = recording_yaml(origin, &format!(r#"{{ file: "{}" }}"#, file.display())).replace(
        r#"address: "127.0.0.1:0" }"#,
        r#"address: "127.0.0.1:0", limits: { max_body_bytes: 10 } }"#,
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("l").unwrap();
    rt.block_on(async {
        let post = Request::post("/api/big").body(body(Bytes::from_static(LONG_BODY))).unwrap();
        assert_eq!(h1(addr, post).await.0, 413);
    });
    let entries = wait_for_entries(&file, 1);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!((e.method.as_str(), e.path.as_str()), ("POST", "/api/big"));
    assert_eq!((e.body_len, e.body_truncated), (LONG_BODY.len() as u64, true), "{e:?}");
    assert!(origin_seen.lock().unwrap().is_empty());
    gw.shutdown();
    gw.wait();
    let _ = std::fs::remove_file(&file);
}

fn write_config(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap();
}

fn recorder_of(gw: &spillway_gateway::Gateway) -> Option<Arc<spillway_gateway::record::Recording>> {
    gw.control().shared.snapshot.load().router.routes[0].recorder.clone()
}

#[test]
fn reload_keeps_an_unchanged_recorder_and_refuses_one_that_cannot_write() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (origin, _) = rt.block_on(recording_backend());
    let file = temp_path("reload.jsonl");
    let record = format!(r#"{{ file: "{}" }}"#, file.display());
    let config_path = temp_path("reload.yaml");
    write_config(&config_path, &recording_yaml(origin, &record));
    let gw = gateway_from_file(&config_path);
    let addr = gw.listener_address("l").unwrap();
    let first = recorder_of(&gw).unwrap();

    // Same record settings, other change: the same recorder carries on.
    write_config(&config_path, &recording_yaml(origin, &record).replace("5s", "4s"));
    assert_eq!(gw.control().reload("test"), Ok(2));
    assert!(Arc::ptr_eq(&first, &recorder_of(&gw).unwrap()));

    // A file that cannot be opened (a dangling symlink: refused even as root).
    let dangling = temp_path("dangling.jsonl");
    std::os::unix::fs::symlink(temp_path("missing-dir").join("x"), &dangling).unwrap();
    let bad = format!(r#"{{ file: "{}" }}"#, dangling.display());
    write_config(&config_path, &recording_yaml(origin, &bad));
    let err = gw.control().reload("test").unwrap_err();
    assert!(err.contains("routes[0].record.file"), "{err}");
    assert!(Arc::ptr_eq(&first, &recorder_of(&gw).unwrap()), "the old config keeps serving");
    rt.block_on(async { assert_eq!(get(addr, "/api/still").await.0, 200) });
    assert_eq!(wait_for_entries(&file, 1).last().unwrap().path, "/api/still");

    // Changed settings: a new recorder.
    let changed = format!(r#"{{ file: "{}", sample: 0.5 }}"#, file.display());
    write_config(&config_path, &recording_yaml(origin, &changed));
    assert_eq!(gw.control().reload("test"), Ok(3));
    let second = recorder_of(&gw).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(second.config().sample, 0.5);
    gw.shutdown();
    gw.wait();
    for p in [file, config_path, dangling] {
        let _ = std::fs::remove_file(p);
    }
}

fn problems(yaml: &str) -> Vec<(String, String, Option<usize>)> {
    match Config::parse(yaml, "t.yaml", &std::env::temp_dir()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.problems().iter().map(|p| (p.key.clone(), p.reason.clone(), p.line)).collect(),
    }
}

fn one_problem(record: &str) -> (String, String, Option<usize>) {
    let yaml = recording_yaml("127.0.0.1:9".parse().unwrap(), record);
    let mut all = problems(&yaml);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn bad_record_settings_are_refused_with_their_key() {
    let (key, reason, line) = one_problem("{ file: t.jsonl, smaple: 0.1 }");
    assert!(key.starts_with("routes[0].record"), "{key}");
    assert!(reason.contains("did you mean `sample`"), "{reason}");
    assert_eq!(line, Some(9));

    let (key, reason, line) = one_problem("{ file: t.jsonl, sample: 1.5 }");
    assert_eq!(key, "routes[0].record.sample");
    assert!(reason.contains("from 0 to 1"), "{reason}");
    assert_eq!(line, Some(9));

    let (key, reason, _) = one_problem("{ file: t.jsonl, max_body: 4XB }");
    assert_eq!(key, "routes[0].record.max_body");
    assert!(reason.contains("4XB"), "{reason}");

    let (key, reason, _) = one_problem("{ file: no-such-dir/t.jsonl }");
    assert_eq!(key, "routes[0].record.file");
    assert!(reason.contains("does not exist"), "{reason}");

    let (key, reason, _) = one_problem("{ file: t.jsonl, max_file_bytes: 100 }");
    assert_eq!(
        (key.as_str(), reason.as_str()),
        ("routes[0].record.max_file_bytes", "at least 1KB")
    );

    let (key, reason, _) = one_problem("{ file: t.jsonl, keep: [x-api-key] }");
    assert_eq!(key, "routes[0].record.keep[0]");
    assert!(reason.contains("not redacted anyway"), "{reason}");

    let (key, _, _) = one_problem("{ file: t.jsonl, redact: [\"bad header\"] }");
    assert_eq!(key, "routes[0].record.redact[0]");
}

#[test]
fn record_needs_a_cluster_route_and_one_setting_per_file() {
    let direct = r#"
listeners: [{ name: l, address: "127.0.0.1:0" }]
routes:
  - name: hello
    direct_response: { status: 200 }
    record: { file: t.jsonl }
"#;
    let all = problems(direct);
    assert_eq!(all[0].0, "routes[0].record");
    assert!(all[0].1.contains("only a `cluster` route"), "{all:?}");

    let shared = r#"
listeners: [{ name: l, address: "127.0.0.1:0" }]
clusters: [{ name: app, endpoints: [{ address: "127.0.0.1:9" }] }]
routes:
  - { name: a, match: { path_prefix: /a }, cluster: app, record: { file: t.jsonl, sample: 0.1 } }
  - { name: b, match: { path_prefix: /b }, cluster: app, record: { file: t.jsonl, sample: 0.5 } }
  - { name: c, match: { path_prefix: /c }, cluster: app, record: { file: t.jsonl, sample: 0.1 } }
"#;
    let all = problems(shared);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, "routes[1].record.file");
    assert!(all[0].1.contains("route `a`"), "{all:?}");
}

#[test]
fn check_warns_about_recording_everything_and_secrets_in_clear() {
    let yaml = recording_yaml("127.0.0.1:9".parse().unwrap(), "{ file: t.jsonl, keep: [Cookie] }");
    let config = Config::parse(&yaml, "t.yaml", &std::env::temp_dir()).unwrap();
    let keys: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
    assert!(keys.contains(&"routes[0].record.sample"), "{keys:?}");
    assert!(keys.contains(&"routes[0].record.keep"), "{keys:?}");
    let record = config.routes[0].record.as_ref().unwrap();
    assert_eq!(record.file, std::env::temp_dir().join("t.jsonl"), "relative to the config");
    let quiet = recording_yaml("127.0.0.1:9".parse().unwrap(), "{ file: t.jsonl, sample: 0.1 }");
    let config = Config::parse(&quiet, "t.yaml", &std::env::temp_dir()).unwrap();
    assert!(config.warnings.iter().all(|w| !w.key.contains("record")), "{:?}", config.warnings);
}
