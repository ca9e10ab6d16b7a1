//! A sans-IO HTTP/2 server connection: bytes in, events and bytes out.
//!
//! The crate is the core of the lean HTTP/2 path (issue 15): it parses frames in place,
//! runs HPACK, keeps stream states and both directions of flow control, and protects itself
//! against the known HTTP/2 floods — but never touches a socket, a runtime or a clock. A
//! driver feeds received bytes to [`Connection::recv`], takes [`Event`]s from
//! [`Connection::poll_event`], answers through `send_*`, and writes [`Connection::output`].
//! Time enters only as `now` arguments.
//!
//! [`client::ClientConnection`] is the other side, for HTTP/2 upstreams (gRPC): the same
//! codec, HPACK, windows and flood limits, with requests going out and responses coming in.
//!
//! ```
//! use spillway_h2::{frame::Frame, hpack::Encoder, Connection, Event, ServerSettings, PREFACE};
//! use std::time::Instant;
//!
//! let mut conn = Connection::new(ServerSettings::default());
//! // What a client sends: the preface, its SETTINGS, and `GET https://example.test/`.
//! let mut input = PREFACE.to_vec();
//! Frame::Settings { ack: false, params: &[] }.encode(&mut input);
//! let mut block = Vec::new();
//! let mut client = Encoder::new(4096);
//! for (n, v) in [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "example.test")] {
//!     client.encode_field(n.as_bytes(), v.as_bytes(), &mut block);
//! }
//! Frame::Headers { stream: 1, end_stream: true, end_headers: true, priority: None, block: &block, padding: None }
//!     .encode(&mut input);
//!
//! assert_eq!(conn.recv(&input, Instant::now()).unwrap(), input.len());
//! while let Some(event) = conn.poll_event() {
//!     if let Event::Request { stream, head, .. } = event {
//!         assert_eq!(head.path(), Some(&b"/"[..]));
//!         conn.send_response(stream, 200, &[(b"content-type", b"text/plain")], false).unwrap();
//!         assert_eq!(conn.send_data(stream, b"hello\n", true).unwrap(), 6);
//!     }
//! }
//! let written = conn.output().len(); // the driver writes these bytes to the socket
//! conn.consumed(written);
//! ```
//!
//! **Memory.** An idle connection keeps no read buffer (the driver owns it and
//! `recv` reports how much it consumed), releases its output buffer when drained, and grows
//! its HPACK tables only as entries arrive.
#![forbid(unsafe_code)]

pub mod client;
pub mod connection;
mod endpoint;
pub mod error;
pub mod flow;
pub mod frame;
pub mod head;
pub mod hpack;
pub mod stream;

pub use client::{
    ClientConnection, ClientEvent, ClientSettings, RequestError, RequestLine, ResponseHead,
};
pub use connection::{Connection, Event, SendError, ServerSettings, PREFACE};
pub use error::{ErrorCode, H2Error, Scope};
pub use head::{Fields, RequestHead};
