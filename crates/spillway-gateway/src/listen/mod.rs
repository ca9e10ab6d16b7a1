//! The downstream side: worker threads and their accept loops, the lean HTTP/1.1 and HTTP/2
//! paths, and TLS.
//!
//! Grouped because they decide how a connection is read and written; what happens to a
//! request once it is read is `proxy` (the hyper path and what both paths share).

pub mod busy;
pub mod h1;
pub mod h2;
pub mod server;
pub mod tls;
