//! CoDel admission for request queues (Nichols & Jacobson, RFC 8289) and the adaptive-LIFO switch
//! of Facebook's "Fail at Scale".
//!
//! Why: a queue that never drains (a *standing* queue) adds delay to every request without adding
//! throughput, until every waiter times out. CoDel watches how long dequeued items waited (their
//! sojourn time): a short burst is fine, but when the sojourn stays above `target` (5 ms) for a
//! whole `interval` (100 ms), it starts dropping, one item per `interval / sqrt(count)`, faster
//! the longer the queue stands, and stops as soon as one item waits less than `target`.
//!
//! Adaptive LIFO: while a queue is forming, the oldest waiters are the likeliest to have been
//! given up on by their callers, so serving the newest first keeps goodput up. [`Codel`] switches
//! to [`ServeOrder::Lifo`] when it sees the sojourn above `target` and back to FIFO only when a
//! dequeue empties the queue: with LIFO the served items are fresh, so their sojourn alone would
//! flip it straight back. Items left behind in LIFO mode are bounded by the queue's own max wait.
//!
//! The RFC's "queue holds at most one MTU" exception becomes "no item left after this dequeue":
//! a queue that just drained is not standing.
//!
//! Criticality: every dequeued item counts towards the standing delay, but a drop never falls
//! on an item of a protected class (default `CRITICAL_PLUS`): it stays due and falls on the
//! next item of a lower class. So at one moment a lower class is never kept while a higher one
//! is dropped, and the top class waits at most the queue's own max wait.

use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use std::time::Duration;

/// Settings of a [`Codel`] queue controller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CodelConfig {
    /// Acceptable standing delay (default 5 ms).
    pub target: Duration,
    /// How long the delay must stand above `target` before dropping, and the base drop spacing
    /// (default 100 ms, about a worst-case round trip).
    pub interval: Duration,
    /// Items of this class and above are never dropped; a drop due on one falls on the next
    /// item of a lower class (default `Some(CriticalPlus)`; `None` treats every class alike).
    pub protect_from: Option<Criticality>,
}

impl Default for CodelConfig {
    fn default() -> Self {
        CodelConfig {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            protect_from: Some(Criticality::CriticalPlus),
        }
    }
}

/// Why a [`CodelConfig`] was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodelConfigError {
    /// `target` was zero or not shorter than `interval`.
    #[error("CoDel needs 0 < target < interval")]
    TargetNotBelowInterval,
}

/// What to do with a dequeued item.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CodelVerdict {
    /// Serve it.
    Keep,
    /// Refuse it (`RejectReason::QueueTimeout`) and dequeue the next one.
    Drop,
}

/// Which end of the queue to serve next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServeOrder {
    /// Oldest first: the queue is not congested.
    Fifo,
    /// Newest first: a standing queue has formed and has not drained since.
    Lifo,
}

/// A CoDel controller for one queue. The queue calls [`Codel::on_dequeue_class`] (or
/// [`Codel::on_dequeue`] when it does not know criticalities) for every item it takes out, and
/// asks [`Codel::serve_order`] which end to take from.
#[derive(Clone, Debug)]
pub struct Codel {
    target: u64,
    interval: u64,
    /// When the sojourn will have stood above target for a whole interval.
    first_above: Option<Instant>,
    /// When the next drop is due while dropping.
    drop_next: Instant,
    /// Drops in the current dropping episode (sets the spacing).
    count: u32,
    /// `count` when the previous episode began.
    last_count: u32,
    dropping: bool,
    lifo: bool,
    protect_from: Option<Criticality>,
}

impl Codel {
    /// A controller for an empty queue.
    pub fn try_new(config: CodelConfig) -> Result<Codel, CodelConfigError> {
        if config.target.is_zero() || config.target >= config.interval {
            return Err(CodelConfigError::TargetNotBelowInterval);
        }
        Ok(Codel {
            target: duration_nanos(config.target),
            interval: duration_nanos(config.interval),
            first_above: None,
            drop_next: Instant::ZERO,
            count: 0,
            last_count: 0,
            dropping: false,
            lifo: false,
            protect_from: config.protect_from,
        })
    }

    /// Judges an item dequeued at `now` that was enqueued at `enqueued_at`; `remaining` is how
    /// many items are still queued after it. The item is judged as a `Critical` one; use
    /// [`Codel::on_dequeue_class`] when the queue knows its items' criticality.
    pub fn on_dequeue(
        &mut self,
        enqueued_at: Instant,
        now: Instant,
        remaining: usize,
    ) -> CodelVerdict {
        self.on_dequeue_class(Criticality::Critical, enqueued_at, now, remaining)
    }

    /// [`Codel::on_dequeue`] for an item of class `class`: an item of a protected class is
    /// kept even when a drop is due, and the drop stays due for the next item.
    pub fn on_dequeue_class(
        &mut self,
        class: Criticality,
        enqueued_at: Instant,
        now: Instant,
        remaining: usize,
    ) -> CodelVerdict {
        let ok_to_drop = self.standing(now.nanos_since(enqueued_at), now, remaining);
        if remaining == 0 {
            self.lifo = false;
        } else if self.first_above.is_some() {
            self.lifo = true;
        }
        let protected = self.protect_from.is_some_and(|p| class >= p);
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                CodelVerdict::Keep
            } else if now >= self.drop_next && !protected {
                self.count = self.count.saturating_add(1);
                self.drop_next = self.control_law(self.drop_next);
                CodelVerdict::Drop
            } else {
                CodelVerdict::Keep
            }
        } else if ok_to_drop && !protected {
            self.dropping = true;
            // Re-entering soon after the last episode: resume near its drop rate instead of
            // starting over from one drop per interval (RFC 8289 §5.6).
            let delta = self.count.saturating_sub(self.last_count);
            let recent = now.nanos_since(self.drop_next) < self.interval.saturating_mul(16);
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.last_count = self.count;
            self.drop_next = self.control_law(now);
            CodelVerdict::Drop
        } else {
            CodelVerdict::Keep
        }
    }

    /// Which end of the queue to serve next (adaptive LIFO).
    pub fn serve_order(&self) -> ServeOrder {
        if self.lifo {
            ServeOrder::Lifo
        } else {
            ServeOrder::Fifo
        }
    }

    /// Whether the controller is in a dropping episode.
    pub fn is_dropping(&self) -> bool {
        self.dropping
    }

    /// Updates the standing-delay tracker; true when the sojourn has stayed above target for a
    /// whole interval.
    fn standing(&mut self, sojourn: u64, now: Instant, remaining: usize) -> bool {
        if sojourn < self.target || remaining == 0 {
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(now + Duration::from_nanos(self.interval));
                false
            }
            Some(at) => now >= at,
        }
    }

    /// `t + interval / sqrt(count)`.
    fn control_law(&self, t: Instant) -> Instant {
        let spacing = self.interval as f64 / f64::from(self.count.max(1)).sqrt();
        t + Duration::from_nanos(spacing as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn codel() -> Codel {
        Codel::try_new(CodelConfig::default()).expect("default config is valid")
    }

    /// Dequeues one item per millisecond from `from` to `to` (exclusive), each having waited
    /// `sojourn_ms`, with `remaining` items behind it; returns the instants of the drops.
    fn run(c: &mut Codel, from: u64, to: u64, sojourn_ms: u64, remaining: usize) -> Vec<u64> {
        (from..to)
            .filter(|&t| c.on_dequeue(ms(t - sojourn_ms), ms(t), remaining) == CodelVerdict::Drop)
            .collect()
    }

    #[test]
    fn delay_below_target_is_never_dropped() {
        let mut c = codel();
        assert!(run(&mut c, 10, 2_000, 4, 50).is_empty());
        assert_eq!(c.serve_order(), ServeOrder::Fifo);
    }

    #[test]
    fn standing_delay_is_tolerated_for_one_interval_then_dropped() {
        let mut c = codel();
        let drops = run(&mut c, 100, 300, 20, 50);
        // First above-target dequeue at 100 ms: first drop one interval later.
        assert_eq!(drops.first(), Some(&200));
        assert!(c.is_dropping());
    }

    #[test]
    fn drop_spacing_shrinks_as_interval_over_sqrt_count() {
        let mut c = codel();
        let drops = run(&mut c, 100, 500, 20, 50);
        // Entry at 200 (count 1, next +100/√1 = 300), then +100/√2 → 370.7, +100/√3 → 428.4,
        // +100/√4 → 478.4: items are dequeued each whole millisecond, so drops land on the next.
        assert_eq!(&drops[..5], &[200, 300, 371, 429, 479]);
    }

    #[test]
    fn one_short_wait_ends_the_dropping_episode() {
        let mut c = codel();
        run(&mut c, 100, 300, 20, 50);
        assert!(c.is_dropping());
        assert_eq!(c.on_dequeue(ms(299), ms(300), 50), CodelVerdict::Keep);
        assert!(!c.is_dropping());
        // The delay must stand a full interval again before the next drop.
        assert_eq!(run(&mut c, 301, 500, 20, 50).first(), Some(&401));
    }

    #[test]
    fn a_queue_that_just_drained_is_not_standing() {
        let mut c = codel();
        assert!(run(&mut c, 100, 400, 50, 0).is_empty());
    }

    #[test]
    fn reentering_soon_resumes_near_the_previous_drop_rate() {
        let mut c = codel();
        let first = run(&mut c, 100, 600, 20, 50); // many drops: count grows
        assert!(first.len() > 5);
        c.on_dequeue(ms(600), ms(601), 50); // delay gone: episode ends
        let second = run(&mut c, 602, 900, 20, 50);
        // Re-entry at 702 ms; the spacing right after it is already shorter than interval/√2.
        let gap = second[1] - second[0];
        assert!(gap < 70, "gap {gap} ms, drops {second:?}");
    }

    #[test]
    fn switches_to_lifo_when_a_queue_forms_and_back_once_it_drains() {
        let mut c = codel();
        c.on_dequeue(ms(0), ms(1), 3);
        assert_eq!(c.serve_order(), ServeOrder::Fifo);
        c.on_dequeue(ms(0), ms(20), 3); // waited 20 ms > 5 ms target with items behind it
        assert_eq!(c.serve_order(), ServeOrder::Lifo);
        c.on_dequeue(ms(20), ms(21), 2); // newest served fast: still congested
        assert_eq!(c.serve_order(), ServeOrder::Lifo);
        c.on_dequeue(ms(0), ms(22), 0); // queue drained
        assert_eq!(c.serve_order(), ServeOrder::Fifo);
    }

    #[test]
    fn critical_plus_is_never_dropped_and_its_due_drop_falls_on_the_next_lower_item() {
        let mut c = codel();
        for t in 100..200 {
            assert_eq!(c.on_dequeue(ms(t - 20), ms(t), 50), CodelVerdict::Keep);
        }
        // The delay has stood for an interval: a drop is due, but not on CRITICAL_PLUS.
        let top = c.on_dequeue_class(Criticality::CriticalPlus, ms(180), ms(200), 50);
        assert_eq!(top, CodelVerdict::Keep);
        assert!(!c.is_dropping());
        let next = c.on_dequeue_class(Criticality::Sheddable, ms(181), ms(201), 50);
        assert_eq!(next, CodelVerdict::Drop);
        // While dropping, a due drop also skips CRITICAL_PLUS and waits for a lower class.
        assert_eq!(run(&mut c, 202, 301, 20, 50), Vec::<u64>::new());
        let top = c.on_dequeue_class(Criticality::CriticalPlus, ms(281), ms(301), 50);
        assert_eq!(top, CodelVerdict::Keep);
        let next = c.on_dequeue_class(Criticality::Critical, ms(282), ms(302), 50);
        assert_eq!(next, CodelVerdict::Drop);
        // Without protection every class is alike.
        let config = CodelConfig { protect_from: None, ..CodelConfig::default() };
        let mut c = Codel::try_new(config).expect("valid");
        run(&mut c, 100, 200, 20, 50);
        let top = c.on_dequeue_class(Criticality::CriticalPlus, ms(180), ms(200), 50);
        assert_eq!(top, CodelVerdict::Drop);
    }

    #[test]
    fn target_must_be_shorter_than_interval() {
        let bad = CodelConfig { target: Duration::from_millis(100), ..CodelConfig::default() };
        assert!(Codel::try_new(bad).is_err());
        let zero = CodelConfig { target: Duration::ZERO, ..CodelConfig::default() };
        assert!(Codel::try_new(zero).is_err());
    }

    /// Any instant, with the ends of the clock well represented.
    fn edge() -> impl Strategy<Value = u64> {
        prop_oneof![any::<u64>(), Just(0), Just(u64::MAX), (u64::MAX - 1_000_000_000)..=u64::MAX]
    }

    proptest! {
        /// Instants anywhere on the clock (also stepping back) and huge queues never panic.
        #[test]
        fn extreme_instants_never_panic(
            steps in proptest::collection::vec((edge(), edge(), any::<usize>()), 1..100)
        ) {
            let mut c = codel();
            for (enqueued, now, remaining) in steps {
                c.on_dequeue(Instant::from_nanos(enqueued), Instant::from_nanos(now), remaining);
                let _ = (c.serve_order(), c.is_dropping());
            }
        }

        /// At one moment (same history, same item), a lower class is never kept while a higher
        /// one is dropped.
        #[test]
        fn lower_class_never_kept_while_a_higher_one_is_dropped(
            steps in proptest::collection::vec((0u64..20, 0u64..60, 0usize..20, 0usize..4), 1..300),
            protect in proptest::option::of(0usize..4),
        ) {
            let config = CodelConfig {
                protect_from: protect.map(|i| Criticality::ALL[i]),
                ..CodelConfig::default()
            };
            let mut c = Codel::try_new(config).expect("valid");
            let mut now = 0;
            for (advance, sojourn, remaining, class) in steps {
                now += advance;
                let enqueued = ms(now.saturating_sub(sojourn));
                let dropped: Vec<bool> = Criticality::ALL
                    .iter()
                    .map(|&k| c.clone().on_dequeue_class(k, enqueued, ms(now), remaining) == CodelVerdict::Drop)
                    .collect();
                for low in 0..4 {
                    for high in low + 1..4 {
                        prop_assert!(!dropped[high] || dropped[low],
                            "{:?} kept while {:?} dropped", Criticality::ALL[low], Criticality::ALL[high]);
                    }
                }
                if let Some(p) = config.protect_from {
                    prop_assert!(!dropped[p.index()..].iter().any(|d| *d), "a protected class was dropped");
                }
                c.on_dequeue_class(Criticality::ALL[class], enqueued, ms(now), remaining);
            }
        }

        /// Whatever the history, an item that waited less than the target is never dropped, and
        /// nothing is dropped before the delay has stood above target for a whole interval.
        #[test]
        fn short_waits_are_never_dropped_and_first_drop_waits_an_interval(
            steps in proptest::collection::vec((0u64..20, 0u64..30, 0usize..5), 1..500)
        ) {
            let mut c = codel();
            let mut now = 0;
            let mut above_since: Option<u64> = None;
            for (advance, sojourn, remaining) in steps {
                now += advance;
                let verdict = c.on_dequeue(ms(now.saturating_sub(sojourn)), ms(now), remaining);
                let waited = sojourn.min(now);
                if waited < 5 || remaining == 0 {
                    above_since = None;
                    prop_assert_eq!(verdict, CodelVerdict::Keep);
                } else {
                    let since = *above_since.get_or_insert(now);
                    if verdict == CodelVerdict::Drop {
                        prop_assert!(now >= since + 100, "dropped {} ms into a standing delay", now - since);
                    }
                }
            }
        }
    }
}
