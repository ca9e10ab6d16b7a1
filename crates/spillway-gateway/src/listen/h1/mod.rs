//! The lean HTTP/1.1 proxy path: parsing, framing and head rewriting without hyper, for the
//! common case of plain HTTP/1.1 proxied to HTTP/1.1 upstreams.
//!
//! [`conn::serve`] runs a plain HTTP/1.1 listener's connections; what it does not take is
//! handed to hyper mid-connection (see [`conn`]). The pure parts — [`head`] parsing,
//! [`chunked`] framing, [`rewrite`] — are tested on their own.

pub mod buffer;
pub mod chunked;
pub mod conn;
pub mod dormant;
pub mod h2_upstream;
pub mod head;
pub mod idle;
pub mod local;
pub mod preface;
pub mod rewind;
pub mod rewrite;
pub mod upstream;

pub use local::LeanLocal;
