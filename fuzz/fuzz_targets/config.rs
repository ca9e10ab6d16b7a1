//! The config loader (`spillway_gateway::Config::parse`): YAML text → expanded, deserialized
//! and validated config, the way `spillway run` and `spillway check` read a file.
//!
//! Relative paths resolve against an empty temporary directory, so a config naming files
//! (TLS, JWKS) fails validation instead of reading the tree. Beyond "no panic": parsing is
//! deterministic (the same text gives the same answer twice); a refusal names at least one
//! problem, each on a line of the text; and an accepted config compiles into a router whose
//! routes are the config's, in order, each proxying to a cluster that exists.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_gateway::route::stats::RouteStats;
use spillway_gateway::route::{Action, Router};
use spillway_gateway::Config;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("spillway-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::parse(text, "fuzz.yaml", base());
    let second = Config::parse(text, "fuzz.yaml", base());
    match (&first, &second) {
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "not deterministic"),
        (Ok(_), Ok(_)) => {}
        _ => panic!("not deterministic: {:?} then {:?}", first.is_ok(), second.is_ok()),
    }
    match first {
        Err(error) => {
            assert!(!error.problems().is_empty(), "a refusal without a problem: {error}");
            // YAML ends a line at CRLF, LF or a lone CR.
            let lines = text.replace("\r\n", "\n").replace('\r', "\n").lines().count().max(1);
            for problem in error.problems() {
                if let Some(line) = problem.line {
                    assert!((1..=lines + 1).contains(&line), "line {line} of {lines}: {error}");
                }
            }
        }
        Ok(config) => {
            let router = Router::compile(&config, |r| Arc::new(RouteStats::new(&r.name, "", 1)));
            assert_eq!(router.routes.len(), config.routes.len());
            for (i, (compiled, written)) in router.routes.iter().zip(&config.routes).enumerate() {
                assert_eq!(compiled.index, i);
                assert_eq!(compiled.name, written.name);
                if let Action::Proxy { cluster, .. } = compiled.action {
                    assert!(cluster < config.clusters.len());
                }
            }
        }
    }
});
