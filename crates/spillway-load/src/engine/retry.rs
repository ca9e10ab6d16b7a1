//! Client retries (`--client-retries N`, `--client-retry-backoff D`): the naive client that sends
//! a request again on every error, whose retry storms a gateway's retry budget and breaker must
//! absorb.
//!
//! A plain decision — "is this attempt the last, or when does the next one go?" — so the rule is
//! tested without sockets or time; the engine's workers do the sending (see [`super`] for how a
//! retry shares a connection with new arrivals).

use super::conn::Failure;
use std::time::Duration;

/// Most retries a client may make per request: with the per-attempt timeout, the bound on how
/// far past its schedule a run can go (`retries × (timeout + backoff)`).
pub const MAX_CLIENT_RETRIES: u32 = 10;

/// Longest backoff between attempts.
pub const MAX_CLIENT_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// Client retry settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryConfigError {
    /// More retries than [`MAX_CLIENT_RETRIES`].
    #[error("--client-retries {0} is too many: at most {MAX_CLIENT_RETRIES}")]
    TooMany(u32),
    /// A backoff longer than [`MAX_CLIENT_RETRY_BACKOFF`].
    #[error("--client-retry-backoff {0:?} is too long: at most 60s")]
    BackoffTooLong(Duration),
}

/// How a client retries: up to `retries` more attempts of a request whose answer is an error,
/// each `backoff` after the previous answer. The default retries nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientRetry {
    retries: u32,
    backoff: Duration,
}

impl ClientRetry {
    /// No retries: every request is sent once.
    pub const NONE: ClientRetry = ClientRetry { retries: 0, backoff: Duration::ZERO };

    /// Up to `retries` more attempts, `backoff` apart; refused beyond [`MAX_CLIENT_RETRIES`] or
    /// [`MAX_CLIENT_RETRY_BACKOFF`].
    ///
    /// ```
    /// use spillway_load::engine::retry::ClientRetry;
    /// use std::time::Duration;
    /// let retry = ClientRetry::try_new(2, Duration::ZERO).unwrap();
    /// assert_eq!(retry.next(Ok(503), 0), Some(Duration::ZERO));
    /// assert_eq!(retry.next(Ok(503), 2), None); // out of retries
    /// assert_eq!(retry.next(Ok(404), 0), None); // not an error worth retrying
    /// ```
    pub fn try_new(retries: u32, backoff: Duration) -> Result<ClientRetry, RetryConfigError> {
        if retries > MAX_CLIENT_RETRIES {
            return Err(RetryConfigError::TooMany(retries));
        }
        if backoff > MAX_CLIENT_RETRY_BACKOFF {
            return Err(RetryConfigError::BackoffTooLong(backoff));
        }
        Ok(ClientRetry { retries, backoff })
    }

    /// Most retries per request.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Wait between an error and the next attempt.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// Whether a naive client retries this outcome: any 5xx, 429, or no response at all
    /// (connect, timeout, I/O or body failure). Other 4xx are the client's own fault.
    pub fn is_error(result: Result<u16, Failure>) -> bool {
        match result {
            Ok(status) => status >= 500 || status == 429,
            Err(_) => true,
        }
    }

    /// After an attempt that ended with `result`, the request having had `retries_done` retries
    /// so far: the wait before the next attempt, or `None` when this outcome is final.
    pub fn next(&self, result: Result<u16, Failure>, retries_done: u32) -> Option<Duration> {
        (retries_done < self.retries && ClientRetry::is_error(result)).then_some(self.backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_5xx_429_and_transport_failures() {
        for status in [500, 502, 503, 504, 599, 429] {
            assert!(ClientRetry::is_error(Ok(status)), "{status}");
        }
        for status in [200, 204, 301, 400, 404, 428, 430] {
            assert!(!ClientRetry::is_error(Ok(status)), "{status}");
        }
        for failure in [Failure::Connect, Failure::Timeout, Failure::Io, Failure::Body] {
            assert!(ClientRetry::is_error(Err(failure)));
        }
    }

    #[test]
    fn a_request_gets_at_most_n_retries_each_after_the_backoff() {
        let backoff = Duration::from_millis(20);
        let retry = ClientRetry::try_new(3, backoff).unwrap();
        let waits: Vec<_> = (0..5).map(|done| retry.next(Err(Failure::Timeout), done)).collect();
        assert_eq!(waits, [Some(backoff), Some(backoff), Some(backoff), None, None]);
        assert_eq!(retry.next(Ok(200), 0), None);
        assert_eq!(ClientRetry::NONE.next(Ok(503), 0), None);
        assert_eq!(ClientRetry::default(), ClientRetry::NONE);
    }

    #[test]
    fn absurd_settings_are_refused() {
        assert_eq!(
            ClientRetry::try_new(MAX_CLIENT_RETRIES + 1, Duration::ZERO),
            Err(RetryConfigError::TooMany(11))
        );
        let long = MAX_CLIENT_RETRY_BACKOFF + Duration::from_millis(1);
        assert!(ClientRetry::try_new(1, long).unwrap_err().to_string().contains("too long"));
        assert!(ClientRetry::try_new(MAX_CLIENT_RETRIES, MAX_CLIENT_RETRY_BACKOFF).is_ok());
    }
}
