//! Keeps `examples/gateway.yaml`, the reference config users copy, true to the code: it must
//! load without errors or warnings, and it must mention every key the config accepts.
//!
//! The key list comes from the config's own serde structs, not from a list kept here: for each
//! mapping in the example, the test adds an unknown key and reads the accepted names from the
//! "unknown field `x`, expected one of ..." error. A key added to the config without being
//! added to the example therefore fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use spillway_gateway::check::check;
use spillway_gateway::config::BALANCE_NAMES;
use spillway_gateway::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;
use yaml_serde::{Mapping, Value};

/// The admin token the example reads from the environment.
const TOKEN_VAR: &str = "SPILLWAY_ADMIN_TOKEN";
/// Keys the example shows only in comments, as (mapping shape, key): `tls` needs files that do
/// not exist, `discovery` takes exactly one of `file`, `dns` and `etcd` (the example writes
/// `dns`), and `cache.hot_only` is refused as not available yet.
const COMMENTED_OUT: &[(&str, &str)] = &[
    ("listeners[]", "tls"),
    ("clusters[]", "tls"),
    ("clusters[].health_check", "grpc"),
    ("clusters[].discovery", "file"),
    ("clusters[].discovery", "etcd"),
    ("routes[].auth", "api_keys"),
    ("routes[].auth", "basic"),
];
/// Mappings whose keys are free-form (names chosen by the user), so there is nothing to cover.
const FREE_FORM: &[&str] = &[
    "levels",
    "routes[].auth.jwt.claim_headers",
    "routes[].auth.jwt.forward",
    "routes[].auth.jwt.require",
    "routes[].budget.grant.by_header",
    "routes[].budget.grant.by_header.x-role",
    "routes[].criticality_by_header.classes",
    "routes[].direct_response.headers",
    "routes[].limits[].overrides",
];
/// A key no config struct accepts.
const PROBE: &str = "zz_probe";

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gateway.yaml")
}

fn example_text() -> String {
    std::fs::read_to_string(example_path()).unwrap()
}

/// Sets the admin token once, before any test reads the environment.
fn set_token() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(TOKEN_VAR, "example-token"));
}

#[test]
fn the_example_config_is_valid_and_has_no_warnings() {
    set_token();
    let config = match Config::load(example_path()) {
        Ok(config) => config,
        Err(e) => panic!("examples/gateway.yaml is invalid:\n{e}"),
    };
    assert_eq!(config.warnings, vec![], "examples/gateway.yaml has warnings");
    let admin = config.admin.as_ref().expect("the example configures the admin listener");
    assert_eq!(admin.token.as_deref(), Some("example-token"), "token comes from ${TOKEN_VAR}");
}

#[test]
fn the_example_config_binds_loopback_addresses_only() {
    set_token();
    let config = Config::load(example_path()).unwrap();
    let mut addresses: Vec<_> = config.listeners.iter().map(|l| l.address).collect();
    addresses.extend(config.admin.iter().map(|a| a.address));
    addresses.extend(config.clusters.iter().flat_map(|c| c.endpoints.iter().map(|e| e.address)));
    for address in addresses {
        assert!(address.ip().is_loopback(), "{address} is not a loopback address");
    }
}

#[test]
fn the_example_config_documents_every_balance_algorithm() {
    let text = example_text();
    for name in BALANCE_NAMES {
        assert!(text.contains(name), "examples/gateway.yaml does not mention `balance: {name}`");
    }
}

#[test]
fn spillway_check_strict_accepts_the_example_config() {
    set_token();
    let report = check(&example_path(), true);
    assert_eq!(report.exit_code, 0, "{}", report.text);
    assert!(report.text.contains("0 warning(s)"), "{}", report.text);
}

/// One step from a mapping or sequence to a child.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every mapping of the example by shape (`clusters[].timeouts`): the keys written in any
/// instance of that shape, and the path to the first instance.
type Shapes = BTreeMap<String, (BTreeSet<String>, Vec<Step>)>;

fn collect_shapes(value: &Value, shape: &str, path: &mut Vec<Step>, out: &mut Shapes) {
    match value {
        Value::Mapping(m) => {
            out.entry(shape.to_string()).or_insert_with(|| (BTreeSet::new(), path.clone()));
            for (k, v) in m {
                let k = k.as_str().expect("string keys").to_string();
                if let Some((written, _)) = out.get_mut(shape) {
                    written.insert(k.clone());
                }
                let child = if shape.is_empty() { k.clone() } else { format!("{shape}.{k}") };
                path.push(Step::Key(k));
                collect_shapes(v, &child, path, out);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Step::Index(i));
                collect_shapes(v, &format!("{shape}[]"), path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn mapping_at<'a>(root: &'a mut Value, path: &[Step]) -> &'a mut Mapping {
    let mut value = root;
    for step in path {
        value = match step {
            Step::Key(k) => value.get_mut(k.as_str()),
            Step::Index(i) => value.get_mut(*i),
        }
        .expect("path from collect_shapes");
    }
    value.as_mapping_mut().expect("a mapping")
}

/// The keys accepted where `edit` adds the probe key, read from the parser's error; `None`
/// when the probe is accepted or refused for another reason (a free-form mapping).
fn accepted_keys(root: &Value, edit: impl FnOnce(&mut Value)) -> Option<BTreeSet<String>> {
    let mut probed = root.clone();
    edit(&mut probed);
    let text = yaml_serde::to_string(&probed).unwrap();
    let base = example_path().parent().unwrap().to_path_buf();
    let err = Config::parse(&text, "probe.yaml", &base).err()?;
    let marker = format!("unknown field `{PROBE}`");
    let reason = err.problems().iter().map(|p| &p.reason).find(|r| r.contains(&marker))?;
    // serde: "unknown field `x`, expected `a`", "... expected `a` or `b`",
    // "... expected one of `a`, `b`, `c`"; the gateway may append "; did you mean ...".
    let expected = reason.split_once("expected")?.1;
    let expected = expected.split(';').next().unwrap_or_default();
    Some(expected.split('`').skip(1).step_by(2).map(str::to_string).collect())
}

/// Whether the example shows `key:` in a comment line.
fn commented(text: &str, key: &str) -> bool {
    text.lines().any(|line| {
        line.trim_start()
            .strip_prefix('#')
            .is_some_and(|rest| rest.trim_start().starts_with(&format!("{key}:")))
    })
}

#[test]
fn the_example_config_mentions_every_accepted_key() {
    set_token();
    let text = example_text();
    let root: Value = yaml_serde::from_str(&text).unwrap();
    let mut shapes = Shapes::new();
    collect_shapes(&root, "", &mut Vec::new(), &mut shapes);

    let mut missing = Vec::new();
    let mut free_form = Vec::new();
    let mut probed = 0;
    for (shape, (written, path)) in &shapes {
        let probe = |v: &mut Value| {
            mapping_at(v, path).insert(Value::from(PROBE), Value::from(0));
        };
        let Some(accepted) = accepted_keys(&root, probe) else {
            free_form.push(shape.clone());
            continue;
        };
        probed += 1;
        for key in accepted.difference(written) {
            let shown_commented = COMMENTED_OUT.contains(&(shape.as_str(), key.as_str()));
            if !(shown_commented && commented(&text, key)) {
                missing.push(format!("{shape}: `{key}`"));
                continue;
            }
            // A commented-out block: its own keys must be shown in the comment too.
            let probe_inside = |v: &mut Value| {
                let mut inner = Mapping::new();
                inner.insert(Value::from(PROBE), Value::from(0));
                mapping_at(v, path).insert(Value::from(key.as_str()), Value::Mapping(inner));
            };
            for sub in accepted_keys(&root, probe_inside).unwrap_or_default() {
                if !commented(&text, &sub) {
                    missing.push(format!("{shape}.{key}: `{sub}` (commented out)"));
                }
            }
        }
    }
    assert!(probed >= 15, "only {probed} mappings probed: the probe does not work");
    assert_eq!(missing, Vec::<String>::new(), "keys accepted but not in examples/gateway.yaml");
    assert_eq!(free_form, FREE_FORM, "mappings that accepted an unknown key");
}
