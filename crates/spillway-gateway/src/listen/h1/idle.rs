//! Idle keep-alive connections of one worker: parked without buffers or timers, closed by a
//! periodic sweep when their idle timeout passes, and all woken at shutdown.
//!
//! An idle HTTP/1.1 connection holds only its socket and a small task: no read buffer (it
//! waits for readability, then takes a buffer from the pool) and no timer of its own. One
//! slot per connection records its waker and idle deadline; [`IdleSet::sweep`] runs every
//! fraction of a second and wakes the connections whose deadline passed, and
//! [`IdleSet::close_all`] wakes every parked connection when the worker shuts down.

use std::cell::{Cell, RefCell};
use std::task::Waker;

#[derive(Debug, Default)]
struct Slot {
    waker: Option<Waker>,
    /// Nanoseconds (worker clock) after which the parked connection should close; 0 while
    /// the connection is busy.
    deadline_ns: u64,
    /// Nanoseconds after which the parked connection should go dormant (0: never).
    dormant_ns: u64,
    expired: bool,
    dormant: bool,
    in_use: bool,
}

/// Why an idle connection stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEnd {
    /// Its idle deadline passed.
    TimedOut,
    /// The worker is shutting down.
    Closing,
    /// It has been idle long enough to go dormant (see [`super::dormant`]).
    Dormant,
}

/// The idle slots of one worker.
#[derive(Debug, Default)]
pub struct IdleSet {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    closing: Cell<bool>,
}

impl IdleSet {
    /// A slot for a new connection.
    pub fn register(&self) -> usize {
        let mut slots = self.slots.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                slots.push(Slot::default());
                slots.len() - 1
            }
        };
        if let Some(slot) = slots.get_mut(index) {
            *slot = Slot { in_use: true, ..Slot::default() };
        }
        index
    }

    /// Frees the slot of a closed connection.
    pub fn release(&self, index: usize) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            *slot = Slot::default();
            self.free.borrow_mut().push(index);
        }
    }

    /// Whether the worker is shutting down.
    #[inline]
    pub fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Parks connection `index` until `deadline_ns` (and, unless `dormant_ns` is 0, until it
    /// should go dormant at `dormant_ns`), to be woken through `waker`; or says why it must
    /// stop waiting now.
    pub fn park(
        &self,
        index: usize,
        waker: &Waker,
        deadline_ns: u64,
        dormant_ns: u64,
    ) -> Option<IdleEnd> {
        if self.closing.get() {
            return Some(IdleEnd::Closing);
        }
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(index)?;
        if slot.expired {
            return Some(IdleEnd::TimedOut);
        }
        if slot.dormant {
            return Some(IdleEnd::Dormant);
        }
        slot.deadline_ns = deadline_ns;
        slot.dormant_ns = dormant_ns;
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        None
    }

    /// Bounds a busy connection's current wait by `deadline_ns` (a long timeout: see
    /// [`IdleSet::sweep`]), to be woken through `waker`; true once the deadline has passed.
    /// Shutdown does not end such a wait. [`IdleSet::unpark`] clears it.
    pub fn arm(&self, index: usize, waker: &Waker, deadline_ns: u64) -> bool {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(index) else { return false };
        if slot.expired {
            return true;
        }
        slot.deadline_ns = deadline_ns;
        slot.dormant_ns = 0;
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        false
    }

    /// Marks connection `index` busy (it no longer times out as idle).
    pub fn unpark(&self, index: usize) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(index) {
            slot.deadline_ns = 0;
            slot.dormant_ns = 0;
            slot.expired = false;
            slot.dormant = false;
        }
    }

    /// Wakes the parked connections whose deadline is at or before `now_ns` (to close), and
    /// those due to go dormant.
    pub fn sweep(&self, now_ns: u64) -> usize {
        let mut woken = 0;
        for slot in self.slots.borrow_mut().iter_mut() {
            if !slot.in_use || slot.deadline_ns == 0 || slot.expired || slot.dormant {
                continue;
            }
            if slot.deadline_ns <= now_ns {
                slot.expired = true;
            } else if slot.dormant_ns != 0 && slot.dormant_ns <= now_ns {
                slot.dormant = true;
            } else {
                continue;
            }
            if let Some(w) = &slot.waker {
                w.wake_by_ref();
            }
            woken += 1;
        }
        woken
    }

    /// Starts shutdown: every parked connection is woken to close, and busy ones close after
    /// their current response.
    pub fn close_all(&self) {
        self.closing.set(true);
        for slot in self.slots.borrow().iter() {
            if slot.in_use && slot.deadline_ns != 0 {
                if let Some(w) = &slot.waker {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Number of connections with a slot.
    pub fn connections(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_parked_connection_is_woken_once_its_deadline_passes() {
        let set = IdleSet::default();
        let (count, waker) = counter();
        let i = set.register();
        assert_eq!(set.park(i, &waker, 100, 0), None);
        assert_eq!(set.sweep(99), 0);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(set.sweep(100), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(set.park(i, &waker, 100, 0), Some(IdleEnd::TimedOut));
        assert_eq!(set.sweep(200), 0, "woken once");
    }

    #[test]
    fn a_busy_connection_never_times_out_as_idle() {
        let set = IdleSet::default();
        let (count, waker) = counter();
        let i = set.register();
        set.park(i, &waker, 100, 0);
        set.unpark(i);
        assert_eq!(set.sweep(1_000), 0);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn shutdown_wakes_parked_connections_and_refuses_new_parking() {
        let set = IdleSet::default();
        let (count, waker) = counter();
        let parked = set.register();
        let busy = set.register();
        set.park(parked, &waker, 100, 0);
        set.close_all();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(set.park(busy, &waker, 100, 0), Some(IdleEnd::Closing));
    }

    #[test]
    fn a_connection_idle_past_its_dormant_time_is_woken_to_go_dormant() {
        let set = IdleSet::default();
        let (count, waker) = counter();
        let i = set.register();
        assert_eq!(set.park(i, &waker, 1_000, 100), None);
        assert_eq!(set.sweep(50), 0);
        assert_eq!(set.sweep(100), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(set.park(i, &waker, 1_000, 100), Some(IdleEnd::Dormant));
    }

    #[test]
    fn an_armed_wait_expires_at_its_deadline_and_not_at_shutdown() {
        let set = IdleSet::default();
        let (count, waker) = counter();
        let i = set.register();
        assert!(!set.arm(i, &waker, 100));
        set.close_all();
        assert!(!set.arm(i, &waker, 100), "shutdown lets a busy wait run on");
        assert_eq!(set.sweep(100), 1);
        assert!(count.0.load(Ordering::SeqCst) >= 1);
        assert!(set.arm(i, &waker, 100));
        set.unpark(i);
        assert!(!set.arm(i, &waker, 200), "unpark clears the expiry");
    }

    #[test]
    fn released_slots_are_reused() {
        let set = IdleSet::default();
        let a = set.register();
        let _b = set.register();
        set.release(a);
        assert_eq!(set.connections(), 1);
        assert_eq!(set.register(), a);
        assert_eq!(set.connections(), 2);
    }
}
