//! A sans-IO HTTP/2 server connection: bytes in, events and bytes out.
//!
//! The crate is the core of the lean HTTP/2 path (issue 15): it parses frames in place,
//! runs HPACK, keeps stream states and both directions of flow control, and protects itself
//! against the known HTTP/2 floods — but never touches a socket, a runtime or a clock. A
//! driver feeds received bytes to [`Connection::recv`], takes [`Event`]s from
//! [`Connection::poll_event`], answers through `send_*`, and writes [`Connection::output`].
//! Time enters only as `now` arguments.
//!
//! **Memory.** An idle connection keeps no read buffer (the driver owns it and
//! `recv` reports how much it consumed), releases its output buffer when drained, and grows
//! its HPACK tables only as entries arrive.
#![forbid(unsafe_code)]

pub mod connection;
pub mod error;
pub mod flow;
pub mod frame;
pub mod head;
pub mod hpack;
pub mod stream;

pub use connection::{Connection, Event, SendError, ServerSettings, PREFACE};
pub use error::{ErrorCode, H2Error, Scope};
pub use head::{Fields, RequestHead};
