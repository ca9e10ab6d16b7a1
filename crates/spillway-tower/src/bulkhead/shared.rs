//! The waiting half of a bulkhead, usable without tower: [`SharedBulkhead`] wraps the core's
//! `Bulkhead` state machine with a lock, a wake-up channel per waiter and an optional CoDel
//! controller, and hands out [`BulkheadPermit`]s.
//!
//! Why a separate type: the tower layer and the gateway (which drives its request path without
//! tower) must wait, wake and drop waiters exactly alike, so both use this one driver. The clock
//! is injected ([`Clock`]) because the gateway reads its own monotonic clock and the layers
//! read tokio's.
//!
//! No slot leaks, whatever happens to a request:
//! - a running request holds a [`BulkheadPermit`] that gives the slot back (or passes it to the
//!   next waiter) when dropped;
//! - a waiting request that times out or is dropped cancels its ticket under the lock; if the
//!   slot was handed to it in the meantime, it passes the slot on.
//!
//! CoDel (optional, `spillway_core::overload::Codel`): every waiter handed a slot is judged by
//! how long it waited. Under a standing queue CoDel refuses some of them (`queue_timeout`)
//! and the slot goes to the next waiter, so a queue that never drains sheds from itself
//! instead of letting every waiter time out. A drop never falls on a protected class.

use parking_lot::Mutex;
use spillway_core::bulkhead::{Acquire, Bulkhead, BulkheadConfig, BulkheadConfigError, Ticket};
use spillway_core::overload::{Codel, CodelConfig, CodelVerdict};
use spillway_core::{Clock, Criticality, Instant, RejectReason, Rejection};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a waiter is told.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A slot was passed to it: it now holds it.
    Granted,
    /// It lost its place (displaced by a more critical request, or dropped by CoDel).
    Refused(Rejection),
}

/// A bulkhead shared by many callers (threads, services, routes), with its waiting queue.
/// See the module docs.
pub struct SharedBulkhead {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    /// How long a waiter of each class may wait (by `Criticality::index`); all `max_wait`
    /// unless set with [`SharedBulkhead::with_class_waits`].
    class_waits: [Duration; 4],
    /// Waiters refused by CoDel so far.
    codel_drops: AtomicU64,
}

impl std::fmt::Debug for SharedBulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SharedBulkhead")
            .field("in_flight", &state.core.in_flight())
            .field("queued", &state.core.queued())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    core: Bulkhead,
    /// One sender per queued ticket, by ticket id. Changed only together with `core`.
    waiters: HashMap<u64, oneshot::Sender<Wake>>,
    codel: Option<Codel>,
}

impl State {
    /// Gives a slot back: passes it to the next waiter still listening (and kept by CoDel),
    /// else frees it. Returns how many waiters CoDel refused.
    fn release(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        while let Some(granted) = self.core.release(now) {
            // The slot now belongs to the granted waiter. If it is gone (cannot happen while
            // waiters and queue change together under the lock), release again.
            let Some(tx) = self.waiters.remove(&granted.ticket.id()) else { continue };
            if let Some(codel) = &mut self.codel {
                let enqueued = Instant::from_nanos(
                    now.as_nanos()
                        .saturating_sub(spillway_core::clock::duration_nanos(granted.waited)),
                );
                let left = self.core.queued();
                let verdict = codel.on_dequeue_class(granted.ticket.class(), enqueued, now, left);
                if verdict == CodelVerdict::Drop {
                    let _ = tx.send(Wake::Refused(self.core.queue_timeout()));
                    dropped += 1;
                    continue;
                }
            }
            if tx.send(Wake::Granted).is_ok() {
                return dropped;
            }
        }
        dropped
    }
}

/// The answer of [`SharedBulkhead::try_enter`]: in, refused, or a place in the queue.
#[derive(Debug)]
pub enum Entry {
    /// A slot is held.
    Acquired(BulkheadPermit),
    /// No slot and no room in the queue for this class.
    Rejected(Rejection),
    /// Queued: await [`Waiting::wait`].
    Waiting(Waiting),
}

impl SharedBulkhead {
    /// A bulkhead with these limits, reading time from `clock`, with CoDel on its queue when
    /// `codel` is given.
    pub fn try_new(
        config: BulkheadConfig,
        codel: Option<CodelConfig>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<SharedBulkhead>, SharedBulkheadError> {
        Ok(Arc::new(SharedBulkhead::build(config, codel, clock, [config.max_wait; 4])?))
    }

    /// The same bulkhead where a waiter of class `c` waits at most `waits[c.index()]`, e.g. a
    /// longer wait for `CRITICAL_PLUS`: under a standing queue one `max_wait` for all must stay
    /// short to bound latency, and then a top-class waiter can give up just before the slot
    /// that a lower class, arriving later, takes. Refused unless the waits never shrink with
    /// the class (a higher class never gives up sooner than a lower one).
    pub fn with_class_waits(
        config: BulkheadConfig,
        waits: [Duration; 4],
        codel: Option<CodelConfig>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<SharedBulkhead>, SharedBulkheadError> {
        if waits.windows(2).any(|w| w[1] < w[0]) {
            return Err(SharedBulkheadError::ClassWaitsShrink);
        }
        let mut config = config;
        // The core's own expiry (for drivers without timers) uses the longest wait.
        config.max_wait = waits[3].max(config.max_wait);
        Ok(Arc::new(SharedBulkhead::build(config, codel, clock, waits)?))
    }

    fn build(
        config: BulkheadConfig,
        codel: Option<CodelConfig>,
        clock: Arc<dyn Clock>,
        class_waits: [Duration; 4],
    ) -> Result<SharedBulkhead, SharedBulkheadError> {
        let core = Bulkhead::try_new(config)?;
        let codel = codel.map(Codel::try_new).transpose()?;
        let waiters = HashMap::with_capacity(config.max_queue.min(1024));
        Ok(SharedBulkhead {
            state: Mutex::new(State { core, waiters, codel }),
            clock,
            class_waits,
            codel_drops: AtomicU64::new(0),
        })
    }

    /// Takes a slot, or a place in the queue, for a request of `class`. A queued request waits
    /// at most `max_wait`, or `deadline_left` when that is sooner (then it fails with
    /// `deadline_exceeded`: past its deadline the answer is useless).
    pub fn try_enter(
        self: &Arc<Self>,
        class: Criticality,
        deadline_left: Option<Duration>,
    ) -> Entry {
        self.try_enter_at(class, deadline_left, self.clock.now())
    }

    /// [`try_enter`](Self::try_enter) at `now`, read by the caller from this bulkhead's clock
    /// (a request path that already read the clock saves a read).
    pub fn try_enter_at(
        self: &Arc<Self>,
        class: Criticality,
        deadline_left: Option<Duration>,
        now: Instant,
    ) -> Entry {
        let mut state = self.state.lock();
        match state.core.try_acquire(class, now) {
            Acquire::Acquired => {
                drop(state);
                Entry::Acquired(BulkheadPermit { shared: self.clone() })
            }
            Acquire::Queued { ticket, displaced } => {
                if let Some(out) = displaced.and_then(|d| state.waiters.remove(&d.id())) {
                    let _ = out.send(Wake::Refused(state.core.bulkhead_full()));
                }
                let (tx, rx) = oneshot::channel();
                state.waiters.insert(ticket.id(), tx);
                let max_wait = self.class_waits[class.index()];
                let queue_timeout = state.core.queue_timeout();
                drop(state);
                let (wait, on_timeout) = match deadline_left {
                    Some(left) if left < max_wait => {
                        (left, Rejection::new(RejectReason::DeadlineExceeded))
                    }
                    _ => (max_wait, queue_timeout),
                };
                let guard = WaitGuard { shared: self.clone(), ticket, rx, settled: false };
                Entry::Waiting(Waiting { guard, wait, on_timeout })
            }
            Acquire::Rejected(rejection) => Entry::Rejected(rejection),
        }
    }

    /// [`try_enter`](Self::try_enter), then waits (tokio timer) when queued.
    pub async fn acquire(
        self: &Arc<Self>,
        class: Criticality,
        deadline_left: Option<Duration>,
    ) -> Result<BulkheadPermit, Rejection> {
        match self.try_enter(class, deadline_left) {
            Entry::Acquired(permit) => Ok(permit),
            Entry::Rejected(rejection) => Err(rejection),
            Entry::Waiting(waiting) => waiting.wait().await,
        }
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().core.in_flight()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.state.lock().core.queued()
    }

    /// The limits.
    pub fn config(&self) -> BulkheadConfig {
        *self.state.lock().core.config()
    }

    /// Waiters CoDel refused so far.
    pub fn codel_drops(&self) -> u64 {
        self.codel_drops.load(Relaxed)
    }

    fn release(&self) {
        let mut state = self.state.lock();
        // The time matters only to a waiter (its wait, CoDel): no clock read without one.
        let now = if state.core.queued() > 0 { self.clock.now() } else { Instant::ZERO };
        let dropped = state.release(now);
        drop(state);
        if dropped > 0 {
            self.codel_drops.fetch_add(dropped, Relaxed);
        }
    }
}

/// Why a [`SharedBulkhead`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SharedBulkheadError {
    /// The bulkhead's limits.
    #[error(transparent)]
    Bulkhead(#[from] BulkheadConfigError),
    /// The CoDel settings.
    #[error(transparent)]
    Codel(#[from] spillway_core::overload::CodelConfigError),
    /// Per-class waits that shrink as the class rises.
    #[error("per-class waits must not shrink from SHEDDABLE to CRITICAL_PLUS")]
    ClassWaitsShrink,
}

/// A held slot; dropping it gives the slot back (to the next waiter, if any).
#[derive(Debug)]
#[must_use = "dropping the permit frees the slot at once"]
pub struct BulkheadPermit {
    shared: Arc<SharedBulkhead>,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// A request waiting in the queue.
#[derive(Debug)]
pub struct Waiting {
    guard: WaitGuard,
    wait: Duration,
    on_timeout: Rejection,
}

impl Waiting {
    /// How long it may wait at most.
    pub fn max_wait(&self) -> Duration {
        self.wait
    }

    /// Waits for a slot (at most [`max_wait`](Self::max_wait), on a tokio timer).
    pub async fn wait(mut self) -> Result<BulkheadPermit, Rejection> {
        let sleep = tokio::time::sleep(self.wait);
        tokio::pin!(sleep);
        let decided = std::future::poll_fn(|cx| match self.guard.poll_wake(cx) {
            Poll::Ready(d) => Poll::Ready(Some(d)),
            Poll::Pending => sleep.as_mut().poll(cx).map(|()| None),
        })
        .await;
        match decided {
            Some(d) => d,
            None => self.guard.give_up(self.on_timeout),
        }
    }

    /// Splits into the guard and its timeout, for hand-written futures.
    pub(crate) fn into_parts(self) -> (WaitGuard, Duration, Rejection) {
        (self.guard, self.wait, self.on_timeout)
    }
}

/// A place in the queue; dropping it before it settled leaves the queue, passing on a slot
/// that was granted in the meantime.
#[derive(Debug)]
pub(crate) struct WaitGuard {
    shared: Arc<SharedBulkhead>,
    ticket: Ticket,
    rx: oneshot::Receiver<Wake>,
    /// True once the outcome is known and owned elsewhere (a permit, or an error returned).
    settled: bool,
}

impl WaitGuard {
    fn settle(&mut self, wake: Wake) -> Result<BulkheadPermit, Rejection> {
        self.settled = true;
        match wake {
            Wake::Granted => Ok(BulkheadPermit { shared: self.shared.clone() }),
            Wake::Refused(rejection) => Err(rejection),
        }
    }

    /// Ready when the bulkhead has decided about this waiter.
    pub(crate) fn poll_wake(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BulkheadPermit, Rejection>> {
        let wake = match ready!(Pin::new(&mut self.rx).poll(cx)) {
            Ok(wake) => wake,
            // The sender is only ever dropped after sending; treat the impossible as "full".
            Err(_) => Wake::Refused(Rejection::new(RejectReason::BulkheadFull)),
        };
        Poll::Ready(self.settle(wake))
    }

    /// The waiter's timer fired: leave the queue — unless a decision raced the timer, which
    /// then wins (a granted slot is used rather than wasted).
    pub(crate) fn give_up(&mut self, on_timeout: Rejection) -> Result<BulkheadPermit, Rejection> {
        {
            let mut state = self.shared.state.lock();
            if state.core.cancel(self.ticket) {
                state.waiters.remove(&self.ticket.id());
                self.settled = true;
                return Err(on_timeout);
            }
        }
        // Not queued any more: the decision was sent under the lock, so it is here.
        let wake = self.rx.try_recv().unwrap_or(Wake::Refused(on_timeout));
        self.settle(wake)
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock();
        if state.core.cancel(self.ticket) {
            state.waiters.remove(&self.ticket.id());
        } else if let Ok(Wake::Granted) = self.rx.try_recv() {
            // Granted after the request was abandoned: pass the slot on.
            state.release(now);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use spillway_core::ManualClock;

    fn waiting(entry: Entry) -> Waiting {
        match entry {
            Entry::Waiting(w) => w,
            other => panic!("expected a place in the queue, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn codel_refuses_waiters_of_a_standing_queue_but_never_a_protected_class() {
        let clock = ManualClock::new();
        let config = BulkheadConfig::new(1, 16, Duration::from_secs(10));
        let bulkhead =
            SharedBulkhead::try_new(config, Some(CodelConfig::default()), Arc::new(clock.clone()))
                .unwrap();
        let Entry::Acquired(mut held) = bulkhead.try_enter(Criticality::Critical, None) else {
            panic!("the first request takes the free slot");
        };
        let mut queue: Vec<_> = (0..6)
            .map(|i| {
                let class = if i == 2 { Criticality::CriticalPlus } else { Criticality::Sheddable };
                (class, tokio::spawn(waiting(bulkhead.try_enter(class, None)).wait()))
            })
            .collect();
        tokio::task::yield_now().await;
        // Every waiter stands 150 ms behind a slow slot holder: well past CoDel's 5 ms target
        // for longer than its 100 ms interval.
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            clock.advance(Duration::from_millis(150));
            drop(held);
            tokio::task::yield_now().await;
            // Whoever got the slot holds it next; refused waiters finish with an error.
            let mut next = None;
            let mut i = 0;
            while i < queue.len() {
                if queue[i].1.is_finished() {
                    let (class, handle) = queue.remove(i);
                    match handle.await.unwrap() {
                        Ok(permit) if next.is_none() => next = Some(permit),
                        Ok(_) => panic!("two waiters granted one slot"),
                        Err(rejection) => outcomes.push((class, rejection.reason)),
                    }
                } else {
                    i += 1;
                }
            }
            match next {
                Some(permit) => held = permit,
                None => break,
            }
        }
        assert!(
            outcomes.iter().any(|(_, r)| *r == RejectReason::QueueTimeout),
            "a standing queue sheds from itself: {outcomes:?}"
        );
        assert!(outcomes.iter().all(|(c, _)| *c != Criticality::CriticalPlus));
        assert_eq!(bulkhead.codel_drops(), outcomes.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_top_class_waiter_outwaits_a_lower_one_with_class_waits() {
        let clock = ManualClock::new();
        let config = BulkheadConfig::new(1, 4, Duration::from_millis(10));
        let ms = Duration::from_millis;
        let bulkhead = SharedBulkhead::with_class_waits(
            config,
            [ms(10), ms(10), ms(10), ms(50)],
            None,
            Arc::new(clock),
        )
        .unwrap();
        let held = bulkhead.acquire(Criticality::Critical, None).await.unwrap();
        let low = tokio::spawn({
            let b = bulkhead.clone();
            async move { b.acquire(Criticality::Critical, None).await }
        });
        let top = tokio::spawn({
            let b = bulkhead.clone();
            async move { b.acquire(Criticality::CriticalPlus, None).await }
        });
        tokio::time::sleep(ms(30)).await;
        assert_eq!(low.await.unwrap().unwrap_err().reason, RejectReason::QueueTimeout);
        drop(held);
        assert!(top.await.unwrap().is_ok(), "the top class still waited for the slot");
        let shrinking = [ms(20), ms(10), ms(10), ms(10)];
        let err =
            SharedBulkhead::with_class_waits(config, shrinking, None, Arc::new(ManualClock::new()));
        assert!(matches!(err, Err(SharedBulkheadError::ClassWaitsShrink)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_times_out_leaves_the_queue_and_the_slot_goes_to_the_next() {
        let clock = ManualClock::new();
        let config = BulkheadConfig::new(1, 4, Duration::from_millis(50));
        let bulkhead = SharedBulkhead::try_new(config, None, Arc::new(clock)).unwrap();
        let held = bulkhead.acquire(Criticality::Critical, None).await.unwrap();
        let late = bulkhead.acquire(Criticality::Critical, None).await;
        assert_eq!(late.unwrap_err().reason, RejectReason::QueueTimeout);
        assert_eq!(bulkhead.queued(), 0);
        let next = tokio::spawn({
            let b = bulkhead.clone();
            async move { b.acquire(Criticality::Critical, None).await }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(next.await.unwrap().is_ok());
        assert_eq!(bulkhead.in_flight(), 0);
    }
}
