//! One worker's lean-path resources, reused across requests: buffers, field lists, output
//! vectors and timers in free lists, the idle upstream sockets, the idle downstream
//! connections, and the current `Date` value.
//!
//! Reuse keeps a request free of large allocations, and lets an idle connection give every
//! buffer back (the per-connection memory that matters with many keep-alive clients).

use super::buffer::{Buf, BUF_SIZE};
use super::head::Field;
use super::idle::IdleSet;
use super::upstream::UpstreamPool;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use tokio::time::Sleep;

/// Most free items of each kind kept per worker (more are freed): enough for the requests in
/// flight on a busy worker (two buffers each; HTTP/2 clients keep hundreds in flight on a few
/// connections), few enough not to hold much memory after a burst (2 MiB of buffers).
const MAX_FREE: usize = 512;

/// Output vectors that grew past this are freed rather than kept.
const MAX_KEPT_OUT: usize = 64 * 1024;

/// Lean-path resources of one worker.
#[derive(Debug, Default)]
pub struct LeanLocal {
    bufs: RefCell<Vec<Buf>>,
    fields: RefCell<Vec<Vec<Field>>>,
    outs: RefCell<Vec<Vec<u8>>>,
    timers: RefCell<Vec<Pin<Box<Sleep>>>>,
    /// Idle upstream sockets (shared with the hyper path's HTTP/1.1 client).
    pub upstreams: std::rc::Rc<UpstreamPool>,
    /// Idle downstream connections.
    pub idle: IdleSet,
    date: Cell<(u64, [u8; 29])>,
}

impl LeanLocal {
    /// A read buffer of [`BUF_SIZE`].
    pub fn take_buf(&self) -> Buf {
        self.bufs.borrow_mut().pop().unwrap_or_else(|| Buf::with_capacity(BUF_SIZE))
    }

    /// Returns a buffer to the pool (one that grew is freed instead).
    pub fn give_buf(&self, mut buf: Buf) {
        let mut free = self.bufs.borrow_mut();
        if buf.capacity() == BUF_SIZE && free.len() < MAX_FREE {
            buf.consume(usize::MAX);
            free.push(buf);
        }
    }

    /// An empty field list.
    pub fn take_fields(&self) -> Vec<Field> {
        self.fields.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(32))
    }

    /// Returns a field list.
    pub fn give_fields(&self, mut fields: Vec<Field>) {
        let mut free = self.fields.borrow_mut();
        if free.len() < MAX_FREE {
            fields.clear();
            free.push(fields);
        }
    }

    /// An empty output vector.
    pub fn take_out(&self) -> Vec<u8> {
        self.outs.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(2048))
    }

    /// Returns an output vector (one that grew large is freed instead).
    pub fn give_out(&self, mut out: Vec<u8>) {
        let mut free = self.outs.borrow_mut();
        if out.capacity() <= MAX_KEPT_OUT && free.len() < MAX_FREE {
            out.clear();
            free.push(out);
        }
    }

    /// A timer (its deadline is set by the user).
    pub fn take_timer(&self) -> Pin<Box<Sleep>> {
        self.timers.borrow_mut().pop().unwrap_or_else(|| {
            Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::now() + std::time::Duration::from_secs(86_400),
            ))
        })
    }

    /// Returns a timer.
    pub fn give_timer(&self, timer: Pin<Box<Sleep>>) {
        let mut free = self.timers.borrow_mut();
        if free.len() < MAX_FREE {
            free.push(timer);
        }
    }

    /// The current time as an HTTP `Date` value (rendered once per second).
    pub fn date(&self) -> [u8; 29] {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (cached_secs, cached) = self.date.get();
        if cached_secs == secs && cached[0] != 0 {
            return cached;
        }
        let text = spillway_core::retry::format_http_date(secs);
        self.date.set((secs, text));
        text
    }
}
