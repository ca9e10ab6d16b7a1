//! Writing a sans-IO HTTP/2 connection's output to its socket, for both ends the gateway
//! drives: the upstream client connections (`upstream::h2_client`) and the listener's server
//! connections (`listen::h2`).

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// A connection whose encoded frames wait in an output buffer.
pub trait Output {
    /// The bytes to write.
    fn output(&self) -> &[u8];
    /// `n` of them were written.
    fn consumed(&mut self, n: usize);
}

impl Output for spillway_h2::Connection {
    fn output(&self) -> &[u8] {
        spillway_h2::Connection::output(self)
    }
    fn consumed(&mut self, n: usize) {
        spillway_h2::Connection::consumed(self, n)
    }
}

impl Output for spillway_h2::ClientConnection {
    fn output(&self) -> &[u8] {
        spillway_h2::ClientConnection::output(self)
    }
    fn consumed(&mut self, n: usize) {
        spillway_h2::ClientConnection::consumed(self, n)
    }
}

/// Writes `conn`'s output to `io` until it is empty or `io` would block, then flushes what was
/// written (TLS keeps records until flushed; `flushed` tracks that). `Ok(true)` if some was
/// written; `Err` when the socket failed. The connection is borrowed only between writes.
pub fn poll_write_output<C: Output, I: AsyncWrite + Unpin>(
    conn: &RefCell<C>,
    io: &mut I,
    cx: &mut Context<'_>,
    flushed: &mut bool,
) -> Result<bool, std::io::Error> {
    let mut wrote = false;
    loop {
        let c = conn.borrow();
        let out = c.output();
        if out.is_empty() {
            break;
        }
        match Pin::new(&mut *io).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                drop(c);
                conn.borrow_mut().consumed(n);
                *flushed = false;
                wrote = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    if !*flushed {
        match Pin::new(io).poll_flush(cx) {
            Poll::Ready(Ok(())) => *flushed = true,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    Ok(wrote)
}
