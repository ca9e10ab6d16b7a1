//! `spillway top` as an operator runs it: against a real `spillway run` in front of a real
//! `spillway backend`, `--once` prints the busy route with a non-zero rate and a latency, with
//! no terminal codes; without the admin token it says one is needed; an admin address nobody
//! listens on is named in the error. Every failure exits 1.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One GET on a fresh connection; the status code.
fn get(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

fn wait_for(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(port, path).is_none() {
        assert!(Instant::now() < deadline, "nothing answers on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills and reaps the child processes it holds when dropped (also when a test fails).
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A backend, and a gateway with an admin token in front of it: (gateway port, admin port).
fn start_gateway(processes: &mut Processes) -> (u16, u16) {
    let (backend, gateway, admin) = (free_port(), free_port(), free_port());
    processes.0.push(
        bin()
            .args(["backend", "--listen", &format!("127.0.0.1:{backend}")])
            .args(["--concurrency", "8", "--service-time", "2ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(backend, "/");
    let dir = std::env::temp_dir().join(format!("spillway-top-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    // Every section of the frame, so the real snapshot's JSON is read in full: BBR, a level,
    // a limit, a breaker and a concurrency limit, retries, hot keys, failback and a plan.
    std::fs::write(
        &config,
        format!(
            r#"
listeners: [{{ name: public, address: "127.0.0.1:{gateway}", overload: {{ bbr: {{ cpu_threshold: 0.99 }} }} }}]
admin: {{ address: "127.0.0.1:{admin}", token: s3cret }}
clusters:
  - {{ name: app, endpoints: [{{ address: "127.0.0.1:{backend}" }}], timeouts: {{ request: 2s }},
       concurrency: {{ adaptive: gradient }}, breaker: {{ sre: {{ k: 2.0 }} }} }}
levels: {{ L0: {{ max_concurrent: 100 }} }}
routes:
  - {{ name: orders, match: {{ path_prefix: /orders }}, cluster: app, level: L0, retries: {{ attempts: 2 }},
       limits: [{{ name: per-path, key: path, algorithm: token_bucket, rate: 100000/s }}],
       hot_keys: {{ key: path }} }}
  - {{ name: pay, match: {{ path_prefix: /pay }}, cluster: app, failback: {{ dir: "{}" }} }}
plans: [{{ name: peak, actions: [{{ shed_below: CRITICAL }}] }}]
"#,
            dir.join("failback").display()
        ),
    )
    .unwrap();
    processes.0.push(
        bin()
            .args(["run", "--no-watch", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(admin, "/healthz");
    (gateway, admin)
}

/// Requests to `port` from a thread until the returned flag is set; counts the 200s.
fn traffic(port: u16) -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let (flag, count) = (stop.clone(), ok.clone());
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            if get(port, "/orders") == Some(200) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (stop, ok, thread)
}

fn top(admin: u16, extra: &[&str], token_variable: Option<&str>) -> Output {
    let mut command = bin();
    command.args(["top", "--once", "--admin", &format!("http://127.0.0.1:{admin}")]).args(extra);
    command.env_remove("SPILLWAY_ADMIN_TOKEN");
    if let Some(token) = token_variable {
        command.env("SPILLWAY_ADMIN_TOKEN", token);
    }
    command.output().unwrap()
}

/// The `orders` row of a frame: (requests per second, p50 cell).
fn orders_row(frame: &str) -> (f64, String) {
    let line =
        frame.lines().find(|l| l.starts_with("orders ")).unwrap_or_else(|| panic!("{frame}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    (cells[1].parse().unwrap(), cells[5].to_string())
}

#[test]
fn top_once_shows_the_busy_route_with_its_rate_and_needs_the_admin_token() {
    let mut processes = Processes(Vec::new());
    let (gateway, admin) = start_gateway(&mut processes);
    let (stop, ok, thread) = traffic(gateway);

    let out = top(admin, &["--token", "s3cret"], None);
    let frame = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{frame}{}", String::from_utf8_lossy(&out.stderr));
    assert!(frame.starts_with(&format!("spillway top  127.0.0.1:{admin}")), "{frame}");
    let (rate, p50) = orders_row(&frame);
    assert!(rate > 0.0, "a non-zero rate while requests flow:\n{frame}");
    assert_ne!(p50, "-", "a latency from the histogram difference:\n{frame}");
    for section in [
        "CLUSTERS",
        "breaker sre",
        "concurrency ",
        "bbr listener:public",
        "pool level:L0",
        "limits orders  per-path 100000/s",
        "RETRIES",
        "HOT KEYS",
        "FAILBACK DEPTH  pay 0",
        "PLANS  peak off",
    ] {
        assert!(frame.contains(section), "{section:?} in\n{frame}");
    }
    assert!(!frame.contains('\x1b'), "--once prints no terminal codes");

    let out = top(admin, &[], Some("s3cret"));
    assert_eq!(out.status.code(), Some(0), "the token from SPILLWAY_ADMIN_TOKEN");
    assert!(orders_row(&String::from_utf8(out.stdout).unwrap()).0 > 0.0);

    let out = top(admin, &[], None);
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("401") && error.contains("--token"), "{error}");
    assert!(out.stdout.is_empty());

    let out = top(admin, &["--token", "wrong"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token was refused"));

    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    assert!(ok.load(Ordering::SeqCst) > 0);
}

#[test]
fn top_names_the_admin_address_it_cannot_reach() {
    let port = free_port();
    let out = top(port, &[], None);
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains(&format!("127.0.0.1:{port}")) && error.contains("cannot reach"),
        "{error}"
    );
}
