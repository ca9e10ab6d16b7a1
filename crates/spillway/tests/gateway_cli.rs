//! The gateway subcommands as a user runs them: `check` exit codes, and `run` reloading on
//! SIGHUP and exiting 0 after a graceful SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
}

fn temp(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("spillway-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "listeners: [{ name: public, address: \"127.0.0.1:0\" }]\nroutes: [{ name: a, direct_response: { status: 200, body: x } }]\n";

#[test]
fn check_exits_0_1_or_2() {
    let good = temp("good.yaml", GOOD);
    let out = bin().arg("check").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let bad = temp("bad.yaml", &GOOD.replace("status: 200", "statuss: 200"));
    let out = bin().arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.yaml:2:") && text.contains("did you mean `status`"), "{text}");

    let public_admin = temp("public.yaml", &format!("{GOOD}admin: {{ address: \"0.0.0.0:0\" }}\n"));
    let out = bin().arg("check").arg(&public_admin).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a public admin API without a token is refused");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no `token`"));

    let risky = temp(
        "risky.yaml",
        "listeners: [{ name: public, address: \"127.0.0.1:0\" }]\nclusters: [{ name: c, endpoints: [{ address: \"127.0.0.1:9\" }], timeouts: { connect: 90s } }]\nroutes: [{ name: a, cluster: c }]\n",
    );
    let out = bin().arg("check").arg(&risky).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "warnings alone pass");
    assert!(String::from_utf8_lossy(&out.stdout).contains("warning:"));
    let out = bin().args(["check", "--strict"]).arg(&risky).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--strict fails on warnings");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn config(port: u16, body: &str) -> String {
    format!("listeners: [{{ name: public, address: \"127.0.0.1:{port}\" }}]\nroutes: [{{ name: a, direct_response: {{ status: 200, body: {body} }} }}]\n")
}

#[test]
fn run_reloads_on_sighup_and_exits_0_on_sigterm() {
    let port = free_port();
    let path = temp("run.yaml", &config(port, "first"));
    let mut child = bin()
        .args(["run", "--no-watch", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = None;
    while Instant::now() < deadline {
        answer = get(port, "/");
        if answer.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answer.unwrap_or_default().ends_with("first"));

    std::fs::write(&path, config(port, "second")).unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut reloaded = false;
    while Instant::now() < deadline + Duration::from_secs(5) {
        if get(port, "/").is_some_and(|a| a.ends_with("second")) {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reloaded, "SIGHUP reloads the config");

    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            panic!("spillway run did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn register_exits_non_zero_with_a_clear_message_when_etcd_is_unreachable() {
    let port = free_port();
    let out = bin()
        .args(["register", "--etcd", &format!("http://127.0.0.1:{port}")])
        .args(["--service", "users", "--address", "127.0.0.1:9001"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("etcd") && text.contains(&port.to_string()), "{text}");
}
