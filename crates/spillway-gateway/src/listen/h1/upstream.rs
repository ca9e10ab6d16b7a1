//! One worker's idle HTTP/1.1 upstream connections for the lean path: plain sockets, kept
//! per endpoint, most recently used first.
//!
//! A connection goes back only after a complete, length- or chunk-delimited response that
//! left nothing unread. At checkout a connection that became readable while idle (the
//! upstream closed it, or sent bytes nobody asked for) is dropped without a syscall: the
//! socket's readiness, which the runtime tracks anyway, tells. The rare race where the
//! upstream closes just as a request goes out is handled by the caller (a retry on a fresh
//! connection for idempotent requests).

use crate::upstream::pool::{AddrMap, MAX_IDLE_PER_ENDPOINT};
use spillway_core::Instant;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Idle upstream sockets by endpoint address.
#[derive(Debug, Default)]
pub struct UpstreamPool {
    idle: RefCell<AddrMap<Vec<Idle>>>,
}

/// Whether an idle socket can carry a request: nothing arrived on it while it was idle.
fn still_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        // Readiness can also be left over from the last read having filled its buffer
        // exactly: one non-blocking read tells.
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
        Poll::Ready(Err(_)) => false,
    }
}

impl UpstreamPool {
    /// The most recently used idle connection to `addr` that is still usable, if any;
    /// connections idle longer than `max_idle` are closed on the way.
    pub fn checkout(
        &self,
        addr: SocketAddr,
        now: Instant,
        max_idle: Duration,
    ) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if now.saturating_duration_since(c.since) < max_idle && still_quiet(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keeps `stream` for the next request to `addr`.
    pub fn checkin(&self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle { stream, since: now });
        }
    }

    /// Closes connections idle for `max_idle` or longer.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| now.saturating_duration_since(c.since) < max_idle);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Number of idle connections.
    pub fn len(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (SocketAddr, TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (addr, client, server)
    }

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[tokio::test]
    async fn a_quiet_connection_is_reused_and_an_expired_one_is_not() {
        let pool = UpstreamPool::default();
        let (addr, client, _server) = pair().await;
        pool.checkin(addr, client, at(0));
        assert!(pool.checkout(addr, at(10), Duration::from_millis(5)).is_none());
        let (addr, client, _server) = pair().await;
        pool.checkin(addr, client, at(0));
        assert!(pool.checkout(addr, at(1), Duration::from_secs(1)).is_some());
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_dropped() {
        let pool = UpstreamPool::default();
        let (addr, client, server) = pair().await;
        pool.checkin(addr, client, at(0));
        drop(server);
        // Let the runtime see the close.
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(pool.checkout(addr, at(1), Duration::from_secs(1)).is_none());
    }

    #[tokio::test]
    async fn a_connection_with_unsolicited_bytes_is_dropped() {
        let pool = UpstreamPool::default();
        let (addr, client, mut server) = pair().await;
        pool.checkin(addr, client, at(0));
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(pool.checkout(addr, at(1), Duration::from_secs(1)).is_none());
    }

    #[tokio::test]
    async fn sweeping_closes_connections_idle_too_long() {
        let pool = UpstreamPool::default();
        let (addr, client, _s1) = pair().await;
        pool.checkin(addr, client, at(0));
        let (_, client, _s2) = pair().await;
        pool.checkin(addr, client, at(100));
        pool.sweep(at(150), Duration::from_millis(100));
        assert_eq!(pool.len(), 1);
    }
}
