//! The lean HTTP/2 path (issue 15): h2c and TLS-ALPN `h2` connections served by
//! `spillway_h2::Connection`, one task per connection, instead of hyper's HTTP/2 server (a
//! task per stream and fixed buffers per connection for its whole life).
//!
//! Only the framing layer differs from the hyper path: every request is handed to
//! `proxy::handle` with the same `ConnInfo`, so every protection applies whichever server
//! read it. The pieces, one concept each:
//! - [`shared`]: the state a connection's driver, its stream futures and its request bodies
//!   share (the `Connection` itself, each stream's inbox, wakers);
//! - [`body`]: the request body a stream hands the proxy ([`body::H2Body`]), fed by the
//!   driver and giving flow-control window back as the proxy reads;
//! - [`stream`]: one stream's future — the request built from the head, `proxy::handle`,
//!   then the response head, body frames within the send windows, and trailers;
//! - [`conn`]: the driver — reads into a pooled buffer (none held while idle), feeds the
//!   connection, dispatches its events, polls the stream futures in the same task, writes all
//!   streams' frames in one write per turn, and closes on idle timeout or graceful shutdown
//!   with GOAWAY.

pub mod body;
pub mod conn;
pub mod fast;
pub mod shared;
pub mod stream;
