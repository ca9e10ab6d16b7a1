//! Service discovery: a cluster's endpoints from a watched file, DNS or etcd instead of (or on
//! top of) the `endpoints` written in the config, and `spillway register`'s side of etcd.
//!
//! Why through snapshots: an endpoint set that changes is applied the way a reload is — a new
//! config (the live one with that cluster's endpoints replaced) becomes a new snapshot, and the
//! snapshot build carries every endpoint's state (health, ejection, in-flight) over by address.
//! Workers never see a half-changed cluster, and no request path code knows about discovery.
//! The discovered sets live in [`Discovered`] (in `Shared`) so that a config reload, which
//! starts from the file's static `endpoints`, lays them on again.
//!
//! A source that fails (a missing or malformed file, a name that does not resolve) keeps the
//! last good set and is counted (`spillway_discovery_errors_total{cluster}`); an empty DNS
//! answer is treated as a failure, never as "no endpoints".

use crate::config::{Config, Discovery, EndpointConfig};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How often a discovery file is checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// One cluster's discovered state.
#[derive(Debug)]
struct Entry {
    source: Discovery,
    endpoints: Option<Vec<EndpointConfig>>,
    errors: AtomicU64,
    last_error: Option<String>,
}

/// The discovered endpoint sets, by cluster name, and their error counts.
#[derive(Debug, Default)]
pub struct Discovered {
    clusters: parking_lot::Mutex<HashMap<String, Entry>>,
}

impl Discovered {
    /// Replaces the endpoints of every cluster of `config` whose discovery source is the one a
    /// set was discovered from (a cluster whose source changed starts from its config again).
    pub fn overlay(&self, config: &mut Config) {
        let clusters = self.clusters.lock();
        for cluster in &mut config.clusters {
            let Some(source) = &cluster.discovery else { continue };
            if let Some(Entry { source: s, endpoints: Some(endpoints), .. }) =
                clusters.get(&cluster.name)
            {
                if s == source {
                    cluster.endpoints = endpoints.clone();
                }
            }
        }
    }

    /// Records a newly discovered set; says whether it differs from the last one.
    pub fn set(&self, cluster: &str, source: &Discovery, endpoints: Vec<EndpointConfig>) -> bool {
        let mut clusters = self.clusters.lock();
        let entry = clusters.entry(cluster.to_string()).or_insert_with(|| Entry {
            source: source.clone(),
            endpoints: None,
            errors: AtomicU64::new(0),
            last_error: None,
        });
        if &entry.source != source {
            entry.source = source.clone();
            entry.endpoints = None;
        }
        entry.last_error = None;
        let changed = entry.endpoints.as_ref().is_none_or(|old| !same_set(old, &endpoints));
        entry.endpoints = Some(endpoints);
        changed
    }

    /// Counts a failed discovery (the last good set stays).
    pub fn failed(&self, cluster: &str, source: &Discovery, why: String) {
        let mut clusters = self.clusters.lock();
        let entry = clusters.entry(cluster.to_string()).or_insert_with(|| Entry {
            source: source.clone(),
            endpoints: None,
            errors: AtomicU64::new(0),
            last_error: None,
        });
        entry.errors.fetch_add(1, Relaxed);
        entry.last_error = Some(why);
    }

    /// `(cluster, discovered endpoints (None before the first success), errors, last error)`
    /// for metrics and the admin API.
    pub fn each(&self, mut f: impl FnMut(&str, Option<usize>, u64, Option<&str>)) {
        let clusters = self.clusters.lock();
        let mut names: Vec<&String> = clusters.keys().collect();
        names.sort();
        for name in names {
            let e = &clusters[name];
            f(
                name,
                e.endpoints.as_ref().map(Vec::len),
                e.errors.load(Relaxed),
                e.last_error.as_deref(),
            );
        }
    }
}

/// Appends `spillway_discovery_endpoints{cluster}` (the last good set's size) and
/// `spillway_discovery_errors_total{cluster}`.
pub fn render_metrics(discovered: &Discovered, out: &mut String) {
    use crate::admin::metrics::escape;
    use std::fmt::Write;
    out.push_str(
        "# HELP spillway_discovery_endpoints Endpoints in a cluster's last good discovered set.\n",
    );
    out.push_str("# TYPE spillway_discovery_endpoints gauge\n");
    let mut errors = Vec::new();
    discovered.each(|cluster, n, e, _| {
        if let Some(n) = n {
            let _ = writeln!(
                out,
                "spillway_discovery_endpoints{{cluster=\"{}\"}} {n}",
                escape(cluster)
            );
        }
        errors.push((escape(cluster), e));
    });
    out.push_str("# HELP spillway_discovery_errors_total Failed discoveries (the last good set stayed), by cluster.\n");
    out.push_str("# TYPE spillway_discovery_errors_total counter\n");
    for (cluster, e) in errors {
        let _ = writeln!(out, "spillway_discovery_errors_total{{cluster=\"{cluster}\"}} {e}");
    }
}

fn same_set(a: &[EndpointConfig], b: &[EndpointConfig]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.address == y.address && x.weight == y.weight && x.zone == y.zone)
}

/// One endpoint as a discovery file lists it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    address: String,
    weight: Option<u32>,
    zone: Option<String>,
}

/// A discovery file: a list of endpoints, or `{ endpoints: [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileShape {
    List(Vec<FileEndpoint>),
    Map { endpoints: Vec<FileEndpoint> },
}

/// Parses a discovery file (YAML or JSON): `[{ address, weight, zone }]` or
/// `{ endpoints: [...] }`; every address an IP:port, weights at least 1, at least one
/// endpoint. The error names the entry and why.
pub fn parse_endpoints_file(text: &str) -> Result<Vec<EndpointConfig>, String> {
    let shape: FileShape = yaml_serde::from_str(text).map_err(|e| {
        format!("not a list of {{ address, weight, zone }} (nor {{ endpoints: [...] }}): {e}")
    })?;
    let list = match shape {
        FileShape::List(l) | FileShape::Map { endpoints: l } => l,
    };
    if list.is_empty() {
        return Err("lists no endpoint (an empty set is refused: the last good one stays)".into());
    }
    list.into_iter()
        .enumerate()
        .map(|(i, e)| {
            let address = e
                .address
                .trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("entry {i}: `{}` is not an IP:port address", e.address))?;
            let weight = e.weight.unwrap_or(1);
            if weight == 0 {
                return Err(format!("entry {i}: weight must be at least 1"));
            }
            Ok(EndpointConfig { address, weight, zone: e.zone })
        })
        .collect()
}

/// Reads and parses a discovery file.
pub fn read_endpoints_file(path: &Path) -> Result<Vec<EndpointConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_endpoints_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Resolves a DNS discovery source: every A and AAAA address of `name` on `port`, sorted and
/// without duplicates; an empty answer is an error.
pub async fn resolve(name: &str, port: u16) -> Result<Vec<EndpointConfig>, String> {
    let mut addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((name, port)).await.map_err(|e| format!("{name}: {e}"))?.collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("{name}: no address"));
    }
    Ok(addrs.into_iter().map(|address| EndpointConfig { address, weight: 1, zone: None }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovery_file_is_a_list_or_a_map_of_endpoints() {
        let list = parse_endpoints_file(
            "- { address: 127.0.0.1:9001, weight: 2 }\n- { address: \"[::1]:9002\", zone: a }\n",
        )
        .expect("valid");
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].weight, list[1].zone.as_deref()), (2, Some("a")));
        let map =
            parse_endpoints_file(r#"{"endpoints": [{"address": "127.0.0.1:1"}]}"#).expect("valid");
        assert_eq!(map[0].weight, 1);
    }

    #[test]
    fn a_bad_discovery_file_is_refused_with_the_entry_and_why() {
        let e = parse_endpoints_file("- { address: nowhere:80 }").expect_err("refused");
        assert!(e.contains("entry 0") && e.contains("nowhere:80"), "{e}");
        assert!(parse_endpoints_file("[]").is_err(), "empty");
        assert!(parse_endpoints_file("- { address: 127.0.0.1:1, weight: 0 }").is_err());
        assert!(parse_endpoints_file("- { adress: 127.0.0.1:1 }").is_err(), "unknown key");
    }

    #[test]
    fn a_set_change_is_noticed_and_an_unchanged_one_is_not() {
        let d = Discovered::default();
        let source = Discovery::File("/x".into());
        let a = parse_endpoints_file("- { address: 127.0.0.1:1 }").expect("valid");
        assert!(d.set("c", &source, a.clone()));
        assert!(!d.set("c", &source, a));
        let b = parse_endpoints_file("- { address: 127.0.0.1:2 }").expect("valid");
        assert!(d.set("c", &source, b));
        d.failed("c", &source, "gone".into());
        let mut seen = Vec::new();
        d.each(|name, n, errors, last| {
            seen.push((name.to_string(), n, errors, last.map(str::to_string)))
        });
        assert_eq!(seen, [("c".to_string(), Some(1), 1, Some("gone".to_string()))]);
    }
}

/// How long connecting to etcd (and each listing) may take before the attempt counts as failed.
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// One instance as registered in etcd: the JSON value under the service's prefix.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Registration {
    /// `IP:port`.
    pub address: String,
    /// Relative weight (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Zone label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Free-form labels (kept in etcd for other readers; the gateway does not route on them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// An etcd value as an endpoint (the error says why it is unusable).
pub fn parse_registration(value: &[u8]) -> Result<EndpointConfig, String> {
    let r: Registration =
        serde_json::from_slice(value).map_err(|e| format!("not a registration: {e}"))?;
    let address = r
        .address
        .trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("`{}` is not an IP:port address", r.address))?;
    let weight = r.weight.unwrap_or(1);
    if weight == 0 {
        return Err("weight must be at least 1".into());
    }
    Ok(EndpointConfig { address, weight, zone: r.zone })
}

/// Watches the keys under `prefix`: lists them, hands the set to `apply`, then follows the
/// changes from the listing's revision, handing every new set over, until etcd fails. Returns
/// why the session ended (the caller keeps the last set and starts again). Values that are not
/// registrations are skipped and logged.
pub async fn etcd_session(
    endpoints: &[String],
    prefix: &str,
    apply: &mut (dyn FnMut(Vec<EndpointConfig>) + Send),
) -> String {
    use etcd_client::{Client, EventType, GetOptions, WatchOptions};
    let connect = Client::connect(endpoints, None);
    let mut client = match tokio::time::timeout(ETCD_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return format!("etcd {endpoints:?}: {e}"),
        Err(_) => return format!("etcd {endpoints:?}: no answer within {ETCD_TIMEOUT:?}"),
    };
    let listed = client.get(prefix, Some(GetOptions::new().with_prefix()));
    let listed = match tokio::time::timeout(ETCD_TIMEOUT, listed).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return format!("etcd: listing {prefix}: {e}"),
        Err(_) => return format!("etcd: listing {prefix}: no answer within {ETCD_TIMEOUT:?}"),
    };
    let revision = listed.header().map_or(0, |h| h.revision());
    let mut set = std::collections::BTreeMap::new();
    for kv in listed.kvs() {
        let key = String::from_utf8_lossy(kv.key()).to_string();
        match parse_registration(kv.value()) {
            Ok(e) => {
                set.insert(key, e);
            }
            Err(why) => tracing::warn!(key, why, "etcd value skipped"),
        }
    }
    apply(set.values().cloned().collect());
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut stream = match client.watch(prefix, Some(options)).await {
        Ok(w) => w,
        Err(e) => return format!("etcd: watching {prefix}: {e}"),
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return "etcd: the watch ended".into(),
            Err(e) => return format!("etcd: watching {prefix}: {e}"),
        };
        if message.canceled() {
            return format!("etcd: the watch was cancelled ({})", message.cancel_reason());
        }
        let mut changed = false;
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).to_string();
            match event.event_type() {
                EventType::Put => match parse_registration(kv.value()) {
                    Ok(e) => {
                        set.insert(key, e);
                        changed = true;
                    }
                    Err(why) => tracing::warn!(key, why, "etcd value skipped"),
                },
                EventType::Delete => changed |= set.remove(&key).is_some(),
            }
        }
        if changed {
            apply(set.values().cloned().collect());
        }
    }
}

/// What `spillway register` needs.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// etcd client URLs.
    pub etcd: Vec<String>,
    /// The key prefix of services (the instance's key is `PREFIX/SERVICE/ADDRESS`).
    pub prefix: String,
    /// The service name.
    pub service: String,
    /// The instance's registration.
    pub registration: Registration,
    /// The lease's time to live (the key disappears this long after the last keep-alive).
    pub ttl: Duration,
}

impl RegisterOptions {
    /// The instance's key.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.prefix.trim_end_matches('/'),
            self.service.trim_matches('/'),
            self.registration.address
        )
    }
}

/// Why registering failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// etcd could not be reached or refused a call.
    #[error("etcd {endpoints:?}: {reason}")]
    Etcd {
        /// The URLs tried.
        endpoints: Vec<String>,
        /// Why.
        reason: String,
    },
}

/// Registers an instance under a lease and keeps the lease alive until `stop` completes, then
/// revokes it (the key disappears at once). Fails at once when etcd is unreachable at start;
/// later losses are retried (the key comes back with a new lease when etcd does).
pub async fn register(
    opts: RegisterOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RegisterError> {
    use etcd_client::{Client, PutOptions};
    let err = |reason: String| RegisterError::Etcd { endpoints: opts.etcd.clone(), reason };
    let value = serde_json::to_string(&opts.registration).map_err(|e| err(e.to_string()))?;
    let key = opts.key();
    let ttl = opts.ttl.as_secs().max(1) as i64;
    let connect = Client::connect(&opts.etcd, None);
    let mut client = tokio::time::timeout(ETCD_TIMEOUT, connect)
        .await
        .map_err(|_| err(format!("no answer within {ETCD_TIMEOUT:?}")))?
        .map_err(|e| err(e.to_string()))?;
    let grant = |client: &mut Client| {
        let mut client = client.clone();
        let (key, value) = (key.clone(), value.clone());
        async move {
            let lease = client.lease_grant(ttl, None).await?.id();
            client.put(key, value, Some(PutOptions::new().with_lease(lease))).await?;
            Ok::<i64, etcd_client::Error>(lease)
        }
    };
    let first = tokio::time::timeout(ETCD_TIMEOUT, grant(&mut client))
        .await
        .map_err(|_| err(format!("no answer within {ETCD_TIMEOUT:?}")))?;
    let mut lease = first.map_err(|e| err(e.to_string()))?;
    tracing::info!(key, lease, ttl, "registered");
    let keep_every = Duration::from_secs((ttl as u64 / 3).max(1));
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(keep_every) => {}
        }
        let kept = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            let ttl_left = stream.message().await?.map_or(0, |r| r.ttl());
            Ok::<i64, etcd_client::Error>(ttl_left)
        };
        match tokio::time::timeout(ETCD_TIMEOUT, kept).await {
            Ok(Ok(left)) if left > 0 => {}
            outcome => {
                // The lease is gone (etcd restarted or the keep-alive came too late): register
                // again with a new one.
                tracing::warn!(key, ?outcome, "lease lost; registering again");
                if let Ok(Ok(new)) = tokio::time::timeout(ETCD_TIMEOUT, grant(&mut client)).await {
                    lease = new;
                    tracing::info!(key, lease, "registered again");
                }
            }
        }
    }
    let _ = tokio::time::timeout(ETCD_TIMEOUT, client.lease_revoke(lease)).await;
    tracing::info!(key, "deregistered");
    Ok(())
}
