//! What one HTTP/2 connection's driver, stream futures and request bodies share: the sans-IO
//! `Connection` (borrowed briefly, never across an await), the live streams' inboxes, and the
//! wakers that connect them.
//!
//! The driver and the stream futures live in one task, so `Rc` and `RefCell` suffice between
//! them. A request body must be `Send` (the proxy's upstream clients may move it into a task
//! of their own), so what it touches — its [`Inbox`] and the connection's [`Signal`] — sits
//! behind `Arc` and uncontended locks: the body never borrows the `Connection`; it records
//! the bytes it consumed in the signal and wakes the driver, which returns them to the
//! flow-control windows on its next turn.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use spillway_h2::{Connection, ErrorCode};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Stream senders stop while the connection's unwritten output holds more than this: the
/// peer's windows bound what is in flight, this bounds what waits in memory for a slow
/// reader.
pub const OUTPUT_HIGH_WATER: usize = 128 * 1024;

/// State of one connection shared by its driver, stream futures and bodies.
pub struct ConnShared {
    /// The protocol state machine.
    pub conn: RefCell<Connection>,
    /// Live streams the driver knows (request delivered, future not finished).
    pub streams: RefCell<Vec<Rc<StreamShared>>>,
    /// What the request bodies tell the driver.
    pub signal: Arc<Signal>,
    /// Stream futures waiting for send window or for the output to drain.
    send_waiters: RefCell<Vec<Waker>>,
}

impl ConnShared {
    /// Shared state around `conn`.
    pub fn new(conn: Connection) -> ConnShared {
        ConnShared {
            conn: RefCell::new(conn),
            streams: RefCell::new(Vec::new()),
            signal: Arc::new(Signal::default()),
            send_waiters: RefCell::new(Vec::new()),
        }
    }

    /// Returns the bytes the bodies consumed since the last call to the flow-control windows
    /// (queueing WINDOW_UPDATEs).
    pub fn apply_releases(&self) {
        let released = std::mem::take(&mut *self.signal.released.lock());
        if released.is_empty() {
            return;
        }
        let mut conn = self.conn.borrow_mut();
        for (id, n) in released {
            conn.release_capacity(id, n);
        }
    }

    /// Registers a sender waiting for window or output room.
    pub fn wait_send(&self, waker: &Waker) {
        let mut waiters = self.send_waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    /// Wakes every waiting sender (a window grew, or the output drained).
    pub fn wake_senders(&self) {
        let waiters = std::mem::take(&mut *self.send_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Waits until stream `id` may send: the output is below [`OUTPUT_HIGH_WATER`] and the
    /// stream has send window (none needed for an empty final frame, `only_end`). False once
    /// the connection is closed.
    pub async fn send_room(&self, id: u32, only_end: bool) -> bool {
        std::future::poll_fn(|cx| {
            let conn = self.conn.borrow();
            if conn.is_closed() {
                return Poll::Ready(false);
            }
            if conn.output().len() < OUTPUT_HIGH_WATER && (only_end || conn.send_capacity(id) > 0) {
                return Poll::Ready(true);
            }
            drop(conn);
            self.wait_send(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Whether any sender waits.
    pub fn has_send_waiters(&self) -> bool {
        !self.send_waiters.borrow().is_empty()
    }

    /// The live stream `id`.
    pub fn stream(&self, id: u32) -> Option<Rc<StreamShared>> {
        self.streams.borrow().iter().find(|s| s.id == id).cloned()
    }

    /// Forgets stream `id` (its future finished or it was reset).
    pub fn remove_stream(&self, id: u32) -> Option<Rc<StreamShared>> {
        let mut streams = self.streams.borrow_mut();
        let i = streams.iter().position(|s| s.id == id)?;
        Some(streams.swap_remove(i))
    }
}

/// What request bodies tell their connection's driver.
#[derive(Default)]
pub struct Signal {
    /// The driver task.
    pub driver: AtomicWaker,
    /// (stream, bytes) consumed by bodies and not yet returned to the windows.
    released: Mutex<Vec<(u32, usize)>>,
}

impl Signal {
    /// A body consumed `n` bytes of `stream`: the driver returns them to the windows.
    pub fn release(&self, stream: u32, n: usize) {
        self.released.lock().push((stream, n));
        self.driver.wake();
    }
}

/// One stream's inbox, shared by the driver and the request body.
pub type SharedInbox = Arc<Mutex<Inbox>>;

/// One stream's state shared by the driver and its future.
pub struct StreamShared {
    /// Stream identifier.
    pub id: u32,
    /// The request body's inbox (`None` for a request without a body: nothing to share).
    pub inbox: Option<SharedInbox>,
    /// The client reset the stream: its future is to be dropped.
    pub reset: Cell<bool>,
    /// The stream future's waker (woken to drop it after a reset).
    pub task: RefCell<Option<Waker>>,
}

impl StreamShared {
    /// A stream whose request body is already complete if `ended`.
    pub fn new(id: u32, ended: bool) -> StreamShared {
        StreamShared {
            id,
            inbox: (!ended).then(SharedInbox::default),
            reset: Cell::new(false),
            task: RefCell::new(None),
        }
    }

    /// The client reset the stream: the body ends with an error and the future is dropped.
    pub fn on_reset(&self, code: ErrorCode) {
        self.reset.set(true);
        if let Some(inbox) = &self.inbox {
            let mut inbox = inbox.lock();
            inbox.reset = Some(code);
            inbox.data.clear();
            inbox.wake();
        }
        if let Some(w) = self.task.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Request body frames received and not read yet.
#[derive(Default)]
pub struct Inbox {
    /// DATA payloads in order.
    pub data: VecDeque<Bytes>,
    /// The trailers, once received.
    pub trailers: Option<http::HeaderMap>,
    /// The client ended the body (END_STREAM seen).
    pub ended: bool,
    /// The client reset the stream with this code.
    pub reset: Option<ErrorCode>,
    /// The body was dropped: later DATA is released at once.
    pub dropped: bool,
    /// The body's reader, waiting for a frame.
    pub reader: Option<Waker>,
}

impl Inbox {
    /// Queues received bytes for the reader.
    pub fn push(&mut self, data: Bytes, end: bool) {
        if !data.is_empty() {
            self.data.push_back(data);
        }
        self.ended |= end;
        self.wake();
    }

    /// Wakes the reader.
    pub fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}
