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
