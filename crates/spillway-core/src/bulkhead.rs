//! Bulkheads: a bounded number of requests in flight plus a bounded queue with a maximum wait,
//! served by criticality.
//!
//! A bulkhead keeps one route (or one class of work) from taking every worker, connection or
//! byte of memory a service has (seed 001 §隔离; Hystrix/resilience4j semaphore bulkheads).
//! Over its limit it answers at once with [`RejectReason::BulkheadFull`], never by growing an
//! unbounded queue. The queue is short and ordered by [`Criticality`]: when a slot frees, the
//! oldest waiter of the highest class gets it, so under overload the important requests are
//! the ones that wait and the sheddable ones are the ones refused.
//!
//! [`Bulkhead`] is a pure state machine: it counts slots and orders waiters, and tells its
//! driver whom to wake. Waking, timers and cancellation belong to the driver (the tower layer,
//! the gateway).
//!
//! ```
//! use std::time::Duration;
//! use spillway_core::bulkhead::{Acquire, Bulkhead, BulkheadConfig};
//! use spillway_core::{Criticality, Instant};
//!
//! let mut bulkhead = Bulkhead::try_new(BulkheadConfig::new(1, 1, Duration::from_millis(50)))?;
//! let now = Instant::ZERO;
//! assert_eq!(bulkhead.try_acquire(Criticality::Critical, now), Acquire::Acquired);
//! let Acquire::Queued { ticket, .. } = bulkhead.try_acquire(Criticality::Sheddable, now) else {
//!     panic!("the queue has room");
//! };
//! // The holder finishes: its slot passes straight to the waiter.
//! let granted = bulkhead.release(now + Duration::from_millis(3));
//! assert_eq!(granted.map(|g| g.ticket), Some(ticket));
//! assert_eq!(bulkhead.in_flight(), 1);
//! # Ok::<(), spillway_core::bulkhead::BulkheadConfigError>(())
//! ```

use crate::clock::Instant;
use crate::criticality::Criticality;
use crate::decision::{RejectReason, Rejection};
use std::collections::VecDeque;
use std::time::Duration;

/// A bulkhead's limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Requests allowed in flight at once (at least 1).
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot; 0 for no queue (reject as soon as all slots are
    /// taken).
    pub max_queue: usize,
    /// The longest a request may wait in the queue before it fails with
    /// [`RejectReason::QueueTimeout`].
    pub max_wait: Duration,
    /// The `Retry-After` hint sent with a rejection.
    pub retry_after: Option<Duration>,
}

impl BulkheadConfig {
    /// The default `Retry-After` hint: one second, the smallest the header can express. A
    /// bulkhead's slots free up within a service time, almost always well under a second, so
    /// a longer hint would only idle clients that could have been served.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

    /// Limits with the default `Retry-After` hint.
    pub const fn new(max_concurrent: usize, max_queue: usize, max_wait: Duration) -> Self {
        BulkheadConfig {
            max_concurrent,
            max_queue,
            max_wait,
            retry_after: Some(BulkheadConfig::DEFAULT_RETRY_AFTER),
        }
    }

    /// The same limits with another `Retry-After` hint (`None` to send none).
    pub const fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        BulkheadConfig { retry_after, ..self }
    }
}

/// Bulkhead limits that cannot work.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkheadConfigError {
    /// No request could ever run.
    #[error("max_concurrent is 0: the bulkhead would reject every request")]
    ZeroConcurrency,
    /// Waiters would time out the moment they are queued.
    #[error("max_queue is {max_queue} but max_wait is 0: queued requests could never be served")]
    QueueWithoutWait {
        /// The configured queue bound.
        max_queue: usize,
    },
}

/// A place in a bulkhead's queue. Hand it back to [`Bulkhead::cancel`] when the waiter gives
/// up; [`Bulkhead::release`] returns it when the waiter gets a slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket {
    id: u64,
    class: Criticality,
}

impl Ticket {
    /// A number unique within the bulkhead that issued the ticket (increasing with arrival).
    pub const fn id(self) -> u64 {
        self.id
    }

    /// The waiter's criticality.
    pub const fn class(self) -> Criticality {
        self.class
    }
}

/// The answer to [`Bulkhead::try_acquire`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A slot is taken: run now, then call [`Bulkhead::release`].
    Acquired,
    /// No free slot; wait for [`Bulkhead::release`] to return this ticket, at most
    /// `max_wait`.
    Queued {
        /// The new waiter's place.
        ticket: Ticket,
        /// A lower-class waiter pushed out of the full queue to make room: the driver must
        /// fail it with [`RejectReason::BulkheadFull`].
        displaced: Option<Ticket>,
    },
    /// Slots and queue are full (of requests at least as critical as this one).
    Rejected(Rejection),
}

/// A waiter handed a slot by [`Bulkhead::release`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The waiter to wake. It now holds the slot and must [`Bulkhead::release`] it when done;
    /// if it is gone, the driver releases on its behalf.
    pub ticket: Ticket,
    /// How long it waited (for queue-delay metrics).
    pub waited: Duration,
}

#[derive(Copy, Clone, Debug)]
struct Waiter {
    id: u64,
    since: Instant,
}

/// Bounded concurrency with a bounded, criticality-ordered queue. See the module docs.
///
/// Policy, deliberately:
/// - A slot freed by [`release`](Bulkhead::release) goes to the oldest waiter of the highest
///   class waiting: strict priority, FIFO within a class. Lower classes can starve while higher
///   ones keep the queue busy; that is what criticality means under overload.
/// - When the queue is full, an arrival of a higher class than the lowest class waiting takes
///   the place of the *youngest* waiter of that lowest class (who has the least invested in
///   waiting); otherwise the arrival is rejected. Requests are never displaced by their own
///   class or a lower one.
/// - Waiters are removed only by [`release`](Bulkhead::release), [`cancel`](Bulkhead::cancel),
///   displacement and [`expire`](Bulkhead::expire): a driver with a timer per waiter cancels on
///   timeout; a driver without one calls `expire` before each operation and at
///   [`next_expiry`](Bulkhead::next_expiry).
#[derive(Clone, Debug)]
pub struct Bulkhead {
    config: BulkheadConfig,
    in_flight: usize,
    /// One FIFO per class, indexed by [`Criticality::index`]; ids increase front to back.
    queues: [VecDeque<Waiter>; 4],
    queued: usize,
    next_id: u64,
}

impl Bulkhead {
    /// A bulkhead with these limits, or why they cannot work.
    pub fn try_new(config: BulkheadConfig) -> Result<Bulkhead, BulkheadConfigError> {
        if config.max_concurrent == 0 {
            return Err(BulkheadConfigError::ZeroConcurrency);
        }
        if config.max_queue > 0 && config.max_wait.is_zero() {
            return Err(BulkheadConfigError::QueueWithoutWait { max_queue: config.max_queue });
        }
        // Queues grow to at most max_queue in total; small ones are allocated up front.
        let per_class = config.max_queue.min(64);
        Ok(Bulkhead {
            config,
            in_flight: 0,
            queues: std::array::from_fn(|_| VecDeque::with_capacity(per_class)),
            queued: 0,
            next_id: 0,
        })
    }

    /// The limits.
    pub fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    /// Slots taken.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Requests of `class` waiting.
    pub fn queued_in(&self, class: Criticality) -> usize {
        self.queues[class.index()].len()
    }

    /// Asks for a slot at `now` for a request of `class`.
    pub fn try_acquire(&mut self, class: Criticality, now: Instant) -> Acquire {
        if self.in_flight < self.config.max_concurrent {
            // Slots are handed to waiters as they free, so a free slot means nobody waits.
            debug_assert_eq!(self.queued, 0);
            self.in_flight += 1;
            return Acquire::Acquired;
        }
        let mut displaced = None;
        if self.queued >= self.config.max_queue {
            let lowest = self.queues.iter().position(|q| !q.is_empty());
            match lowest {
                Some(l) if l < class.index() => {
                    if let Some(w) = self.queues[l].pop_back() {
                        self.queued -= 1;
                        displaced = Some(Ticket { id: w.id, class: Criticality::ALL[l] });
                    }
                }
                _ => return Acquire::Rejected(self.rejection(RejectReason::BulkheadFull)),
            }
        }
        let ticket = Ticket { id: self.next_id, class };
        self.next_id += 1;
        self.queues[class.index()].push_back(Waiter { id: ticket.id, since: now });
        self.queued += 1;
        Acquire::Queued { ticket, displaced }
    }

    /// Gives a slot back at `now`. If anyone waits, the slot passes straight to the oldest
    /// waiter of the highest class (in flight stays the same) and that waiter is returned for
    /// the driver to wake; otherwise the slot is freed.
    ///
    /// A release without a slot taken is ignored (the count never goes below zero).
    pub fn release(&mut self, now: Instant) -> Option<Granted> {
        for (index, queue) in self.queues.iter_mut().enumerate().rev() {
            if let Some(w) = queue.pop_front() {
                self.queued -= 1;
                let ticket = Ticket { id: w.id, class: Criticality::ALL[index] };
                return Some(Granted { ticket, waited: now.saturating_duration_since(w.since) });
            }
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        None
    }

    /// Removes a waiter that gave up (timed out on its own timer, was dropped). True if it was
    /// still waiting; false if it had already been granted a slot, displaced or expired — a
    /// granted waiter holds a slot and must release it.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        let queue = &mut self.queues[ticket.class.index()];
        match queue.binary_search_by_key(&ticket.id, |w| w.id) {
            Ok(pos) => {
                queue.remove(pos);
                self.queued -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Removes every waiter that has waited `max_wait` or longer at `now` and returns them, to
    /// be failed with [`RejectReason::QueueTimeout`] (see [`Bulkhead::queue_timeout`]).
    pub fn expire(&mut self, now: Instant) -> Vec<Ticket> {
        let mut expired = Vec::new();
        let max_wait = self.config.max_wait;
        for (index, queue) in self.queues.iter_mut().enumerate() {
            // Same max wait for all, FIFO per class: the expired ones are at the front.
            while let Some(w) = queue.front().copied() {
                if w.since + max_wait > now {
                    break;
                }
                queue.pop_front();
                expired.push(Ticket { id: w.id, class: Criticality::ALL[index] });
            }
        }
        self.queued -= expired.len();
        expired
    }

    /// When the next waiter will have waited `max_wait`, if anyone waits.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.queues.iter().filter_map(|q| q.front()).map(|w| w.since + self.config.max_wait).min()
    }

    /// The rejection for a full bulkhead (a displaced waiter gets this too).
    pub fn bulkhead_full(&self) -> Rejection {
        self.rejection(RejectReason::BulkheadFull)
    }

    /// The rejection for a waiter whose max wait passed.
    pub fn queue_timeout(&self) -> Rejection {
        self.rejection(RejectReason::QueueTimeout)
    }

    fn rejection(&self, reason: RejectReason) -> Rejection {
        Rejection { reason, retry_after: self.config.retry_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Criticality::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bulkhead(max_concurrent: usize, max_queue: usize) -> Bulkhead {
        let built = Bulkhead::try_new(BulkheadConfig::new(max_concurrent, max_queue, ms(100)));
        assert!(built.is_ok());
        built.unwrap_or_else(|_| unreachable!())
    }

    fn queued(a: Acquire) -> Ticket {
        match a {
            Acquire::Queued { ticket, .. } => ticket,
            other => unreachable!("expected Queued, got {other:?}"),
        }
    }

    const T0: Instant = Instant::ZERO;

    #[test]
    fn admits_up_to_max_concurrent_then_queues_then_rejects_bulkhead_full() {
        let mut b = bulkhead(2, 1);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        assert!(matches!(b.try_acquire(Critical, T0), Acquire::Queued { displaced: None, .. }));
        let rejected = b.try_acquire(Critical, T0);
        assert_eq!(
            rejected,
            Acquire::Rejected(
                Rejection::new(RejectReason::BulkheadFull).retry_after(Duration::from_secs(1))
            )
        );
        assert_eq!((b.in_flight(), b.queued()), (2, 1));
    }

    #[test]
    fn without_a_queue_the_first_request_over_the_limit_is_rejected() {
        let mut b = bulkhead(1, 0);
        assert_eq!(b.try_acquire(CriticalPlus, T0), Acquire::Acquired);
        assert!(matches!(b.try_acquire(CriticalPlus, T0), Acquire::Rejected(_)));
    }

    #[test]
    fn release_hands_the_slot_to_the_highest_class_then_oldest_waiter() {
        let mut b = bulkhead(1, 10);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        let shed_old = queued(b.try_acquire(Sheddable, T0));
        let crit_old = queued(b.try_acquire(Critical, T0 + ms(1)));
        let crit_new = queued(b.try_acquire(Critical, T0 + ms(2)));
        let plus = queued(b.try_acquire(CriticalPlus, T0 + ms(3)));
        let order: Vec<_> = (0..4).filter_map(|_| b.release(T0 + ms(10))).collect();
        let tickets: Vec<_> = order.iter().map(|g| g.ticket).collect();
        assert_eq!(tickets, vec![plus, crit_old, crit_new, shed_old]);
        assert_eq!(order[0].waited, ms(7));
        assert_eq!(b.in_flight(), 1, "each grant kept the slot taken");
        assert_eq!(b.release(T0 + ms(20)), None);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn full_queue_displaces_the_youngest_waiter_of_the_lowest_class() {
        let mut b = bulkhead(1, 3);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        let _shed_old = queued(b.try_acquire(Sheddable, T0));
        let shed_young = queued(b.try_acquire(Sheddable, T0 + ms(1)));
        let _plus = queued(b.try_acquire(SheddablePlus, T0 + ms(2)));
        match b.try_acquire(Critical, T0 + ms(3)) {
            Acquire::Queued { displaced, .. } => assert_eq!(displaced, Some(shed_young)),
            other => unreachable!("{other:?}"),
        }
        assert_eq!((b.queued(), b.queued_in(Sheddable)), (3, 1));
    }

    #[test]
    fn full_queue_rejects_an_arrival_not_above_every_waiter() {
        let mut b = bulkhead(1, 2);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        queued(b.try_acquire(SheddablePlus, T0));
        queued(b.try_acquire(Critical, T0));
        // Same class as the lowest waiter: no displacement.
        assert!(matches!(b.try_acquire(SheddablePlus, T0), Acquire::Rejected(_)));
        assert!(matches!(b.try_acquire(Sheddable, T0), Acquire::Rejected(_)));
        assert!(matches!(
            b.try_acquire(Critical, T0),
            Acquire::Queued { displaced: Some(t), .. } if t.class() == SheddablePlus
        ));
    }

    #[test]
    fn cancelled_waiter_leaves_the_queue_and_is_never_granted() {
        let mut b = bulkhead(1, 5);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        let first = queued(b.try_acquire(Critical, T0));
        let second = queued(b.try_acquire(Critical, T0));
        assert!(b.cancel(first));
        assert!(!b.cancel(first), "cancelling twice is a no-op");
        assert_eq!(b.release(T0).map(|g| g.ticket), Some(second));
        assert!(!b.cancel(second), "a granted ticket is no longer waiting");
    }

    #[test]
    fn waiters_expire_after_max_wait_with_queue_timeout() {
        let mut b = bulkhead(1, 5);
        assert_eq!(b.try_acquire(Critical, T0), Acquire::Acquired);
        let early = queued(b.try_acquire(Sheddable, T0));
        let late = queued(b.try_acquire(CriticalPlus, T0 + ms(40)));
        assert_eq!(b.next_expiry(), Some(T0 + ms(100)));
        assert_eq!(b.expire(T0 + ms(99)), vec![]);
        assert_eq!(b.expire(T0 + ms(100)), vec![early]);
        assert_eq!(b.next_expiry(), Some(T0 + ms(140)));
        assert_eq!(b.expire(T0 + ms(200)), vec![late]);
        assert_eq!((b.queued(), b.next_expiry()), (0, None));
        assert_eq!(b.queue_timeout().reason, RejectReason::QueueTimeout);
    }

    #[test]
    fn impossible_limits_are_refused_at_construction() {
        assert_eq!(
            Bulkhead::try_new(BulkheadConfig::new(0, 0, ms(1))).err(),
            Some(BulkheadConfigError::ZeroConcurrency)
        );
        assert_eq!(
            Bulkhead::try_new(BulkheadConfig::new(1, 4, Duration::ZERO)).err(),
            Some(BulkheadConfigError::QueueWithoutWait { max_queue: 4 })
        );
        assert!(Bulkhead::try_new(BulkheadConfig::new(1, 0, Duration::ZERO)).is_ok());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire(Criticality),
        Release,
        Cancel(usize),
        Expire,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..4).prop_map(|i| Op::Acquire(Criticality::ALL[i])),
            3 => Just(Op::Release),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => Just(Op::Expire),
            2 => (0u64..30).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Drives a bulkhead like a well-behaved driver and checks, after every step, the
        /// bounds and the priority rules against a simple model of who holds and who waits,
        /// and that no lower class would be let in while a higher one would be rejected.
        #[test]
        fn bounds_hold_and_no_lower_class_goes_ahead_of_a_higher_one(
            max_concurrent in 1usize..4,
            max_queue in 0usize..5,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let config = BulkheadConfig::new(max_concurrent, max_queue, ms(50));
            let mut b = Bulkhead::try_new(config).unwrap_or_else(|_| unreachable!());
            let mut now = T0;
            let mut holders = 0usize;
            // The model: waiting tickets with the time they were queued.
            let mut waiting: Vec<(Ticket, Instant)> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(class) => match b.try_acquire(class, now) {
                        Acquire::Acquired => {
                            prop_assert!(waiting.is_empty(), "admitted past waiters");
                            holders += 1;
                        }
                        Acquire::Queued { ticket, displaced } => {
                            prop_assert_eq!(holders, max_concurrent, "queued with a free slot");
                            prop_assert_eq!(ticket.class(), class);
                            if let Some(d) = displaced {
                                let lowest = waiting.iter().map(|(t, _)| t.class()).min();
                                prop_assert_eq!(Some(d.class()), lowest);
                                prop_assert!(d.class() < class);
                                let youngest = waiting.iter().filter(|(t, _)| t.class() == d.class()).map(|(t, _)| t.id()).max();
                                prop_assert_eq!(Some(d.id()), youngest);
                                waiting.retain(|(t, _)| *t != d);
                            } else {
                                prop_assert!(waiting.len() < max_queue);
                            }
                            waiting.push((ticket, now));
                        }
                        Acquire::Rejected(r) => {
                            prop_assert_eq!(r.reason, RejectReason::BulkheadFull);
                            prop_assert_eq!(holders, max_concurrent);
                            prop_assert_eq!(waiting.len(), max_queue);
                            prop_assert!(waiting.iter().all(|(t, _)| t.class() >= class));
                        }
                    },
                    Op::Release if holders > 0 => match b.release(now) {
                        Some(g) => {
                            let best = waiting.iter().map(|(t, _)| t.class()).max();
                            prop_assert_eq!(Some(g.ticket.class()), best, "a higher class was waiting");
                            let oldest = waiting.iter().filter(|(t, _)| t.class() == g.ticket.class()).map(|(t, _)| t.id()).min();
                            prop_assert_eq!(Some(g.ticket.id()), oldest, "not FIFO within the class");
                            let since = waiting.iter().find(|(t, _)| *t == g.ticket).map(|(_, s)| *s);
                            prop_assert_eq!(Some(g.waited), since.map(|s| now - s));
                            waiting.retain(|(t, _)| *t != g.ticket);
                        }
                        None => {
                            prop_assert!(waiting.is_empty());
                            holders -= 1;
                        }
                    },
                    Op::Release => {}
                    Op::Cancel(i) if !waiting.is_empty() => {
                        let (t, _) = waiting.remove(i % waiting.len());
                        prop_assert!(b.cancel(t));
                    }
                    Op::Cancel(_) => {}
                    Op::Expire => {
                        let mut expired = b.expire(now);
                        expired.sort();
                        let mut want: Vec<Ticket> = waiting.iter().filter(|(_, s)| *s + ms(50) <= now).map(|(t, _)| *t).collect();
                        want.sort();
                        prop_assert_eq!(&expired, &want);
                        waiting.retain(|(t, _)| !expired.contains(t));
                    }
                    Op::Advance(n) => now += ms(n),
                }
                // At this moment, a lower class is never let in (slot or queue) while a higher
                // one is rejected. Each class asks a copy, so the probe changes nothing.
                let let_in: Vec<bool> = Criticality::ALL
                    .iter()
                    .map(|&c| !matches!(b.clone().try_acquire(c, now), Acquire::Rejected(_)))
                    .collect();
                for low in 0..4 {
                    for high in low + 1..4 {
                        prop_assert!(!let_in[low] || let_in[high],
                            "{:?} let in while {:?} rejected", Criticality::ALL[low], Criticality::ALL[high]);
                    }
                }
                prop_assert!(b.in_flight() <= max_concurrent);
                prop_assert!(b.queued() <= max_queue);
                prop_assert_eq!(b.in_flight(), holders);
                prop_assert_eq!(b.queued(), waiting.len());
                prop_assert!(b.queued() == 0 || b.in_flight() == max_concurrent);
            }
        }
    }
}
