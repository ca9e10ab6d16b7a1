//! Dormant connections: keep-alive connections idle for a while, held by one worker as bare
//! sockets in an epoll set of their own, with no task and no runtime registration.
//!
//! Why: a parked connection still costs its task (about 1 KiB here) and the runtime's
//! per-socket state (about 0.4 KiB), which is what many idle keep-alive clients add up to.
//! After [`DORMANT_AFTER`] of idleness (checked every 50 ms) a lean connection hands its socket over; when the
//! client sends again, the socket goes back to the runtime and a new connection task starts.
//! The move costs four `epoll_ctl` calls, paid only by connections idle that long.

use crate::state::ListenerStats;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Registry, Token};
use std::cell::RefCell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How long a lean connection stays parked in its task before it goes dormant.
pub const DORMANT_AFTER: Duration = Duration::from_millis(100);

/// Decrements a listener's open-connection count when dropped (the connection closed).
#[derive(Debug)]
pub struct OpenCount(pub Arc<ListenerStats>);

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// A dormant connection.
#[derive(Debug)]
pub struct Sleeper<L> {
    stream: MioStream,
    /// The listener it came from.
    pub listener: L,
    /// Its place in the listener's connection count.
    pub count: OpenCount,
    /// When its idle timeout ends (worker clock, nanoseconds).
    pub deadline_ns: u64,
}

impl<L> Sleeper<L> {
    /// A connection going dormant, idle until `deadline_ns`.
    pub fn new(
        stream: std::net::TcpStream,
        listener: L,
        count: OpenCount,
        deadline_ns: u64,
    ) -> Sleeper<L> {
        Sleeper { stream: MioStream::from_std(stream), listener, count, deadline_ns }
    }

    /// The socket (for the runtime again), the listener and the count.
    pub fn into_parts(self) -> (std::net::TcpStream, L, OpenCount) {
        (self.stream.into(), self.listener, self.count)
    }
}

/// One worker's dormant connections.
#[derive(Debug)]
pub struct Dormant<L> {
    registry: Registry,
    sleepers: RefCell<Vec<Option<Sleeper<L>>>>,
    free: RefCell<Vec<usize>>,
}

impl<L> Dormant<L> {
    /// A dormant set and the poller its sockets are registered with (the caller waits on the
    /// poller's readiness and passes its events to [`Dormant::woken`]).
    pub fn new() -> std::io::Result<(Dormant<L>, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok((
            Dormant {
                registry,
                sleepers: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
            },
            poll,
        ))
    }

    /// Holds `sleeper` until its client sends something (or its deadline passes). A socket
    /// that cannot be registered is closed.
    pub fn add(&self, mut sleeper: Sleeper<L>) {
        let mut sleepers = self.sleepers.borrow_mut();
        let index = self.free.borrow_mut().pop().unwrap_or(sleepers.len());
        if self.registry.register(&mut sleeper.stream, Token(index), Interest::READABLE).is_err() {
            if index < sleepers.len() {
                self.free.borrow_mut().push(index);
            }
            return;
        }
        sleeper.count.0.dormant.fetch_add(1, Relaxed);
        if index == sleepers.len() {
            sleepers.push(Some(sleeper));
        } else if let Some(slot) = sleepers.get_mut(index) {
            *slot = Some(sleeper);
        }
    }

    /// The connections whose sockets turned readable (data, or the client closing), taken
    /// out of the set.
    pub fn woken(&self, events: &Events) -> Vec<Sleeper<L>> {
        let mut out = Vec::new();
        for event in events {
            if let Some(s) = self.remove(event.token().0) {
                out.push(s);
            }
        }
        out
    }

    fn remove(&self, index: usize) -> Option<Sleeper<L>> {
        let mut sleeper = self.sleepers.borrow_mut().get_mut(index)?.take()?;
        sleeper.count.0.dormant.fetch_sub(1, Relaxed);
        let _ = self.registry.deregister(&mut sleeper.stream);
        self.free.borrow_mut().push(index);
        Some(sleeper)
    }

    /// Closes the connections whose idle deadline is at or before `now_ns`.
    pub fn sweep(&self, now_ns: u64) -> usize {
        let expired: Vec<usize> = self
            .sleepers
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.deadline_ns <= now_ns))
            .map(|(i, _)| i)
            .collect();
        for &i in &expired {
            drop(self.remove(i));
        }
        expired.len()
    }

    /// Closes every dormant connection (shutdown).
    pub fn close_all(&self) {
        let n = self.sleepers.borrow().len();
        for i in 0..n {
            drop(self.remove(i));
        }
    }

    /// Number of dormant connections.
    pub fn len(&self) -> usize {
        self.sleepers.borrow().iter().filter(|s| s.is_some()).count()
    }

    /// Whether no connection is dormant.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn sleeper(server: std::net::TcpStream, deadline_ns: u64) -> Sleeper<()> {
        let stats = Arc::new(ListenerStats::default());
        stats.active.fetch_add(1, Relaxed);
        Sleeper::new(server, (), OpenCount(stats), deadline_ns)
    }

    #[test]
    fn a_dormant_connection_wakes_when_its_client_sends() {
        let (dormant, mut poll) = Dormant::<()>::new().unwrap();
        let (mut client, server) = pair();
        dormant.add(sleeper(server, u64::MAX));
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(dormant.woken(&events).is_empty());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        let woken = dormant.woken(&events);
        assert_eq!(woken.len(), 1);
        assert!(dormant.is_empty());
        let mut buf = [0u8; 64];
        let (mut socket, ..) = woken.into_iter().next().unwrap().into_parts();
        let n = std::io::Read::read(&mut socket, &mut buf);
        assert_eq!(n.unwrap(), 18);
    }

    #[test]
    fn expired_dormant_connections_are_closed_and_uncounted() {
        let (dormant, _poll) = Dormant::<()>::new().unwrap();
        let (_c1, s1) = pair();
        let (_c2, s2) = pair();
        let s = sleeper(s1, 100);
        let stats = s.count.0.clone();
        dormant.add(s);
        assert_eq!(stats.dormant.load(Relaxed), 1);
        dormant.add(sleeper(s2, 200));
        assert_eq!(dormant.sweep(150), 1);
        assert_eq!(dormant.len(), 1);
        assert_eq!(stats.active.load(Relaxed), 0);
        assert_eq!(stats.dormant.load(Relaxed), 0);
        dormant.close_all();
        assert!(dormant.is_empty());
    }
}
