//! Per-connection values ([`ConnInfo`]) rendered once at accept, and the connection's
//! [`Activity`] (busy or idle since when).
//!
//! Shared by both data paths: the hyper path keeps one per connection for every request on
//! it, and the idle timeout reads its activity.

use http::{HeaderName, HeaderValue};
use std::cell::{Cell, OnceCell};
use std::time::Duration;

/// Per-connection values, rendered once at accept.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client IP as a header value (for `X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// The listener's `max_body_bytes`.
    pub max_body: u64,
    /// Hash of the client address (key for consistent hashing without `hash_header`).
    pub client_hash: u64,
    /// Requests in progress and the time of the last one (for the idle timeout).
    pub activity: Activity,
    /// The peer's address (admission keys, trusted proxies).
    pub peer: std::net::IpAddr,
    /// The listener's index in the config (its BBR).
    pub listener: usize,
    /// On a listener with client certificates: what the upstream is told of the client's
    /// (set once, after the TLS handshake).
    pub client_cert: OnceCell<ClientCertFields>,
}

/// The client-certificate headers of a connection (see `listen::tls::client_cert_fields`).
#[derive(Debug, Default)]
pub struct ClientCertFields {
    /// Headers removed from every request (what the client may have sent itself).
    pub names: Vec<HeaderName>,
    /// Headers set from the verified certificate.
    pub values: Vec<(HeaderName, HeaderValue)>,
}

/// Whether a downstream connection is busy, and since when it is idle.
#[derive(Debug)]
pub struct Activity {
    in_flight: Cell<u32>,
    last_ns: Cell<u64>,
    clock: spillway_core::SystemClock,
}

impl Activity {
    /// A connection that just became active at `clock`'s now.
    pub fn new(clock: spillway_core::SystemClock) -> Activity {
        use spillway_core::Clock;
        Activity { in_flight: Cell::new(0), last_ns: Cell::new(clock.now().as_nanos()), clock }
    }

    /// A request started.
    pub fn begin_request(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// A request (and its response body) ended.
    pub fn end_request(&self) {
        use spillway_core::Clock;
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        self.last_ns.set(self.clock.now().as_nanos());
    }

    /// How long the connection has had nothing in flight (zero while busy).
    pub fn idle_for(&self) -> Duration {
        use spillway_core::Clock;
        if self.in_flight.get() > 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.clock.now().as_nanos().saturating_sub(self.last_ns.get()))
    }
}
