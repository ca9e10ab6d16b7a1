//! The JSON bodies of the gateway's own error responses (both request paths).
//!
//! One list, so the hyper path and the lean path answer the same failure with the same bytes.

/// No route matched (404).
pub const NO_ROUTE: &str = "{\"error\":\"no_route\"}\n";
/// A bug: a route's action did not fit (500).
pub const INTERNAL: &str = "{\"error\":\"internal\"}\n";
/// The body passed `max_body_bytes` (413).
pub const BODY_TOO_LARGE: &str = "{\"error\":\"body_too_large\"}\n";
/// Every endpoint of the cluster is ejected or unhealthy (503).
pub const NO_HEALTHY_ENDPOINT: &str = "{\"error\":\"no_healthy_endpoint\"}\n";
/// No response head within the timeout (504).
pub const UPSTREAM_TIMEOUT: &str = "{\"error\":\"upstream_timeout\"}\n";
/// Connect failed, or the upstream broke the exchange (502).
pub const UPSTREAM_UNAVAILABLE: &str = "{\"error\":\"upstream_unavailable\"}\n";
/// The request body could not be read (the client broke off or sent too much).
pub const BAD_REQUEST_BODY: &str = "{\"error\":\"bad_request_body\"}\n";
/// The request body did not arrive within the request's time.
pub const REQUEST_BODY_TIMEOUT: &str = "{\"error\":\"request_body_timeout\"}\n";
/// A failback route's queue is full: the request was not stored.
pub const FAILBACK_FULL: &str = "{\"error\":\"failback_full\"}\n";
/// A failback route's queue could not store the request (see the log).
pub const FAILBACK_UNAVAILABLE: &str = "{\"error\":\"failback_unavailable\"}\n";
/// A broadcast route needs a body it can copy: of known length, at most 64 KiB.
pub const BROADCAST_BODY: &str = "{\"error\":\"broadcast_body_too_large\"}\n";
/// The client's address is not let in by the listener's or the route's `ip:` lists (403).
pub const IP_DENIED: &str = "{\"error\":\"ip_denied\"}\n";
/// The request target is longer than the route's `request_limits.max_uri` (414).
pub const URI_TOO_LONG: &str = "{\"error\":\"uri_too_long\"}\n";
/// The request head has more fields or bytes than the route's `request_limits` allow (431).
pub const HEADERS_TOO_LARGE: &str = "{\"error\":\"headers_too_large\"}\n";
/// A CORS preflight from an origin, or for a method or header, the route does not allow (403).
pub const CORS_REFUSED: &str = "{\"error\":\"cors_refused\"}\n";
/// No valid credentials for a route with `auth:` (401, with `WWW-Authenticate`).
pub const UNAUTHENTICATED: &str = "{\"error\":\"unauthenticated\"}\n";
/// Valid credentials without access to the route (403).
pub const FORBIDDEN: &str = "{\"error\":\"forbidden\"}\n";
/// The credentials could not be checked (the gateway is shutting down) (503).
pub const AUTH_UNAVAILABLE: &str = "{\"error\":\"auth_unavailable\"}\n";
