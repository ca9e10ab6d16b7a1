//! A real `redis-server` for the integration tests: started on a free loopback port in a
//! temporary directory, with no persistence, and killed when dropped.
//!
//! Why a real server: the scripts' atomicity, `EVALSHA`/`NOSCRIPT`, `TIME`, reconnection after
//! a restart and `INFO commandstats` are what the limiters rely on; a fake would test none of
//! them. `scripts/test` installs the Debian package `redis-server` when it is missing.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or deliberately stopped) redis-server.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            listener.local_addr().expect("bound").port()
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = RedisServer { port, dir, child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server; scripts/test installs it)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                if let Ok(mut c) = self.connection() {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain synchronous connection for the test's own commands.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing answers.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill(1)");
        assert!(status.success());
    }

    /// Calls per command from `INFO commandstats` (commands run inside scripts included),
    /// without the `INFO` calls themselves.
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let mut c = self.connection().expect("connected");
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).expect("INFO");
        let mut calls = std::collections::BTreeMap::new();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
            let Some((name, stats)) = rest.split_once(':') else { continue };
            let n = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if name != "info" {
                calls.insert(name.to_owned(), n);
            }
        }
        calls
    }

    /// Total calls of every command but `INFO`.
    pub fn total_calls(&self) -> u64 {
        self.command_calls().values().sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen server ignores SIGKILL until... it does not: SIGKILL works on stopped
            // processes. Thaw anyway so `wait` is prompt.
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.kill();
    }
}

/// Polls `done` every 10 ms until it holds or `limit` passes; returns the time it took.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A real 3-master Redis Cluster on loopback: three `redis-server --cluster-enabled yes` in
/// temporary directories, joined by `redis-cli --cluster create`, every node killed (by PID)
/// when dropped — also when the test panics.
pub struct RedisCluster {
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
    children: Vec<Child>,
}

/// The next candidate port for a cluster node: distinct for every node of this process (tests
/// run in parallel threads), offset by the process id between processes.
static NEXT_CLUSTER_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A loopback port that is free together with its cluster-bus port (port + 10 000).
fn free_cluster_port() -> u16 {
    let base = 20_000 + (std::process::id() % 500) * 40;
    for _ in 0..2_000 {
        let n = NEXT_CLUSTER_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (base + n % 20_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free loopback port pair for a cluster node");
}

impl RedisCluster {
    /// Starts three masters and creates the cluster; returns once every node reports
    /// `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = RedisCluster { ports: Vec::new(), _dir: dir, children: Vec::new() };
        for _ in 0..3 {
            let port = free_cluster_port();
            let node_dir = cluster._dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).expect("a node directory");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (Debian package redis-server)");
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        for (child, &port) in cluster.children.iter_mut().zip(&cluster.ports) {
            wait_for_ping(port);
            // Our node answers, not another one that took the port first.
            assert!(child.try_wait().is_ok_and(|exit| exit.is_none()), "node {port} exited");
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli on PATH (Debian package redis-tools)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            if let Some(status) = create.try_wait().expect("redis-cli runs") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                let _ = create.wait();
                panic!("redis-cli --cluster create did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.ports.iter().all(|&p| cluster_ok(p, 3)) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The seed URLs of the nodes.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }

    /// A plain connection to node `i`.
    pub fn node(&self, i: usize) -> redis::Connection {
        node_connection(self.ports[i]).expect("connected to a cluster node")
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Keys stored on node `i` (`DBSIZE`).
    pub fn keys_on(&self, i: usize) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.node(i)).expect("DBSIZE")
    }

    /// Calls of `command` on node `i` (`INFO commandstats`).
    pub fn calls_on(&self, i: usize, command: &str) -> u64 {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query(&mut self.node(i)).expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn node_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = node_connection(port) {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "redis-server did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cluster_ok(port: u16, nodes: usize) -> bool {
    node_connection(port)
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
        .is_ok_and(|info| {
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{nodes}\r\n"))
        })
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
