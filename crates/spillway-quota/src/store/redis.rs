//! The Redis quota store: each check or refresh is one `EVALSHA` of a Lua script on one
//! hash-tagged key, through a reconnecting connection (single server or Redis Cluster).
//!
//! Why scripts: a GCRA step or a lease computation reads and writes shared state, and must do
//! both atomically with respect to every other gateway; a script runs atomically on the server
//! and costs one round trip. `Script::invoke_async` sends `EVALSHA` and reloads the script on
//! `NOSCRIPT` (after a Redis restart, or on a cluster node that never saw it). Both scripts
//! read the server's clock (`TIME`), so instances with skewed clocks still agree.

use super::{
    CounterReply, CounterRequest, GcraReply, GcraRequest, LeaseReply, LeaseRequest, QuotaStore,
    StoreFuture, StoreKind,
};
use crate::counter::CounterOutcome;
use crate::error::StoreError;
use crate::gcra::GcraOutcome;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::Script;
use std::fmt;
use std::time::Duration;

/// The exact-mode GCRA script (contract in its header comment).
pub const GCRA_SCRIPT: &str = include_str!("../lua/gcra.lua");
/// The counter-mode fixed-window script (contract in its header comment).
pub const COUNTER_SCRIPT: &str = include_str!("../lua/counter.lua");
/// The lease-mode fair-share script (contract in its header comment).
pub const LEASE_SCRIPT: &str = include_str!("../lua/lease.lua");

/// How to reach Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://host:port[/db]` URLs: one for a single server; the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Talk the cluster protocol (route each key to its slot's node).
    pub cluster: bool,
    /// First delay before reconnecting after the connection dropped (default 50 ms); it
    /// doubles per failed attempt up to `reconnect_max_delay`.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnection attempts (default 1 s): how late a recovered Redis
    /// may be noticed.
    pub reconnect_max_delay: Duration,
    /// Give up one connection attempt after this long (default 1 s).
    pub connect_timeout: Duration,
}

impl RedisStoreConfig {
    /// A single Redis server at `url`, with the default reconnection schedule.
    pub fn single(url: impl Into<String>) -> RedisStoreConfig {
        RedisStoreConfig {
            urls: vec![url.into()],
            cluster: false,
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// A Redis Cluster reached through the seed nodes `urls`.
    pub fn cluster<I, S>(urls: I) -> RedisStoreConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = RedisStoreConfig::single("");
        config.urls = urls.into_iter().map(Into::into).collect();
        config.cluster = true;
        config
    }
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A [`QuotaStore`] on Redis. Cheap to share behind an `Arc`; calls run concurrently over one
/// multiplexed connection.
pub struct RedisStore {
    connection: Connection,
    gcra: Script,
    counter: Script,
    lease: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("kind", &self.kind()).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens the store. A single server is connected lazily: this succeeds while Redis is
    /// down (calls fail, and the limiters apply their store-failure policy, until it is up).
    /// A cluster is connected now, to learn its slot map. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// A URL that does not parse, no URL at all, or (cluster) no seed node reachable.
    pub async fn connect(config: &RedisStoreConfig) -> Result<RedisStore, StoreError> {
        let connection = if config.cluster {
            let client =
                redis::cluster::ClusterClient::builder(config.urls.iter().map(String::as_str))
                    .connection_timeout(config.connect_timeout)
                    .build()?;
            Connection::Cluster(client.get_async_connection().await?)
        } else {
            let url = match config.urls.as_slice() {
                [url] => url.as_str(),
                _ => return Err(StoreError::Config("a single-server store takes exactly one URL")),
            };
            let client = redis::Client::open(url)?;
            let manager = ConnectionManagerConfig::new()
                .set_min_delay(config.reconnect_min_delay)
                .set_max_delay(config.reconnect_max_delay)
                .set_connection_timeout(Some(config.connect_timeout));
            Connection::Single(ConnectionManager::new_lazy_with_config(client, manager)?)
        };
        Ok(RedisStore {
            connection,
            gcra: Script::new(GCRA_SCRIPT),
            counter: Script::new(COUNTER_SCRIPT),
            lease: Script::new(LEASE_SCRIPT),
        })
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg);
        }
        let reply = match &self.connection {
            Connection::Single(c) => invocation.invoke_async(&mut c.clone()).await?,
            Connection::Cluster(c) => invocation.invoke_async(&mut c.clone()).await?,
        };
        Ok(reply)
    }
}

impl QuotaStore for RedisStore {
    fn gcra<'a>(&'a self, request: GcraRequest<'a>) -> StoreFuture<'a, GcraReply> {
        Box::pin(async move {
            let args = [
                request.interval_us.max(1).to_string(),
                request.burst.max(1).to_string(),
                request.cost.max(1).to_string(),
                request.reserve.to_string(),
            ];
            let reply: Vec<i64> = self.invoke(&self.gcra, request.key, &args).await?;
            let [admitted, remaining, retry, reset, blocked] = reply[..] else {
                return Err(StoreError::Reply("the GCRA script returns five integers"));
            };
            let us = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(GcraOutcome {
                admitted: admitted == 1,
                remaining: us(remaining),
                retry_after_us: (retry >= 0).then(|| us(retry)),
                reset_after_us: us(reset),
                blocked_us: us(blocked),
            }
            .into())
        })
    }

    fn counter<'a>(&'a self, request: CounterRequest<'a>) -> StoreFuture<'a, CounterReply> {
        Box::pin(async move {
            let args = [
                request.limit.max(1).to_string(),
                request.window_ms.max(1).to_string(),
                request.cost.max(1).to_string(),
                request.reserve.to_string(),
            ];
            let reply: Vec<i64> = self.invoke(&self.counter, request.key, &args).await?;
            let [admitted, count, retry, reset] = reply[..] else {
                return Err(StoreError::Reply("the counter script returns four integers"));
            };
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(CounterOutcome {
                admitted: admitted == 1,
                count: n(count),
                retry_after_ms: (retry >= 0).then(|| n(retry)),
                reset_after_ms: n(reset),
            }
            .into())
        })
    }

    fn lease<'a>(&'a self, request: LeaseRequest<'a>) -> StoreFuture<'a, LeaseReply> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(request.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let args = [
                request.instance.to_owned(),
                format!("{:e}", request.demand),
                format!("{:e}", request.capacity),
                ttl_ms.to_string(),
            ];
            let (grant, instances, total): (String, i64, String) =
                self.invoke(&self.lease, request.key, &args).await?;
            let number = |s: &str| s.parse::<f64>().map_err(|_| StoreError::Reply("not a number"));
            Ok(LeaseReply {
                grant: number(&grant)?,
                instances: u32::try_from(instances).unwrap_or(0),
                total_demand: number(&total)?,
            })
        })
    }

    fn kind(&self) -> StoreKind {
        match self.connection {
            Connection::Single(_) => StoreKind::Redis,
            Connection::Cluster(_) => StoreKind::RedisCluster,
        }
    }
}
