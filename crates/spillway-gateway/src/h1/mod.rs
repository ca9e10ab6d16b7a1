//! The lean HTTP/1.1 proxy path: parsing, framing and head rewriting without hyper, for the
//! common case of plain HTTP/1.1 proxied to HTTP/1.1 upstreams.

pub mod chunked;
