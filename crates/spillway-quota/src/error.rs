//! The crate's typed errors: a store call that failed, and a limit configuration that cannot
//! work.
//!
//! Why two: a [`StoreError`] is an operational event (Redis down, slow, restarted) that the
//! limiters absorb with their store-failure policy and never hand to a request; a
//! [`ConfigError`] is a mistake caught once, when a limiter is built.

use std::time::Duration;

/// A call to the quota store did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the allowed time.
    #[error("quota store did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis refused the call, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store's configuration cannot work (e.g. no URL).
    #[error("quota store configuration: {0}")]
    Config(&'static str),
    /// A script answered something that is not its documented reply.
    #[error("quota store reply not understood: {0}")]
    Reply(&'static str),
}

/// A limit's configuration is not usable. Names the limit and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("quota limit `{limit}`: `{field}` {problem}")]
pub struct ConfigError {
    /// The limit's name.
    pub limit: String,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl ConfigError {
    pub(crate) fn new(limit: &str, field: &'static str, problem: &'static str) -> ConfigError {
        ConfigError { limit: limit.to_owned(), field, problem }
    }
}
