//! A rolling window of time buckets: the shared building block for "what happened in the last
//! N seconds" (BBR's pass and RT samples, SRE throttling's requests and accepts, retry budgets,
//! breaker time windows, sliding-window counters).
//!
//! Bucket `e` covers `[e·width, (e+1)·width)`. A bucket is reused in place once it falls out of
//! the window, so memory is fixed at construction and there is no per-tick work: expired
//! buckets are recognised by their epoch when touched.

use crate::clock::{duration_nanos, Instant};
use std::time::Duration;

mod totals;

pub(crate) use totals::{Tally, WindowTotals};

/// A ring of `len` buckets, each `width` long, holding a `T` per bucket.
#[derive(Clone, Debug)]
pub struct RollingWindow<T> {
    slots: Box<[Slot<T>]>,
    width_nanos: u64,
}

#[derive(Clone, Debug)]
struct Slot<T> {
    /// Which bucket (time / width) this slot currently holds; `u64::MAX` when never used.
    epoch: u64,
    value: T,
}

impl<T: Default> RollingWindow<T> {
    /// A window of `len` buckets of `width` each: it covers `len × width`.
    ///
    /// # Panics
    /// When `len` is zero or `width` is below one nanosecond (a configuration bug, caught at
    /// construction, never on the request path).
    pub fn new(len: usize, width: Duration) -> RollingWindow<T> {
        assert!(len > 0, "a rolling window needs at least one bucket");
        let width_nanos = duration_nanos(width);
        assert!(width_nanos > 0, "a rolling window's buckets must be longer than zero");
        let slots = (0..len).map(|_| Slot { epoch: u64::MAX, value: T::default() }).collect();
        RollingWindow { slots, width_nanos }
    }

    /// The bucket that `now` falls in, emptied first if it held an older bucket's data.
    #[inline]
    pub fn current_mut(&mut self, now: Instant) -> &mut T {
        let epoch = self.epoch(now);
        let index = self.index(epoch);
        let slot = &mut self.slots[index];
        if slot.epoch != epoch {
            slot.epoch = epoch;
            slot.value = T::default();
        }
        &mut slot.value
    }

    /// Empties every bucket.
    pub fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.epoch = u64::MAX;
            slot.value = T::default();
        }
    }
}

impl<T> RollingWindow<T> {
    /// Number of buckets.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: a window has at least one bucket.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// One bucket's width.
    #[inline]
    pub fn bucket_width(&self) -> Duration {
        Duration::from_nanos(self.width_nanos)
    }

    /// The whole window's span.
    #[inline]
    pub fn span(&self) -> Duration {
        Duration::from_nanos(self.width_nanos.saturating_mul(self.slots.len() as u64))
    }

    /// The buckets inside the window ending at `now`, including the current (partial) one.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = &T> + '_ {
        let current = self.epoch(now);
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(move |s| s.epoch <= current && current - s.epoch < len)
            .map(|s| &s.value)
    }

    /// The completed buckets inside the window ending at `now`: the current, partial bucket is
    /// left out (BBR's max-pass estimate must not be dragged down by a bucket just begun).
    pub fn iter_completed(&self, now: Instant) -> impl Iterator<Item = &T> + '_ {
        let current = self.epoch(now);
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(move |s| s.epoch < current && current - s.epoch < len)
            .map(|s| &s.value)
    }

    #[inline]
    fn epoch(&self, now: Instant) -> u64 {
        now.as_nanos() / self.width_nanos
    }

    #[inline]
    fn index(&self, epoch: u64) -> usize {
        (epoch % self.slots.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn counts_fall_out_of_the_window_after_its_span() {
        let mut w: RollingWindow<u64> = RollingWindow::new(10, Duration::from_millis(100));
        *w.current_mut(at_ms(0)) += 1;
        *w.current_mut(at_ms(550)) += 2;
        assert_eq!(w.iter(at_ms(999)).sum::<u64>(), 3);
        // At 1000 ms bucket 0 ([0,100)) is out; bucket 5 stays until 1500 ms.
        assert_eq!(w.iter(at_ms(1000)).sum::<u64>(), 2);
        assert_eq!(w.iter(at_ms(1499)).sum::<u64>(), 2);
        assert_eq!(w.iter(at_ms(1500)).sum::<u64>(), 0);
    }

    #[test]
    fn reusing_a_slot_clears_the_old_bucket() {
        let mut w: RollingWindow<u64> = RollingWindow::new(2, Duration::from_millis(10));
        *w.current_mut(at_ms(0)) += 5;
        *w.current_mut(at_ms(20)) += 1; // same slot as epoch 0
        assert_eq!(w.iter(at_ms(20)).sum::<u64>(), 1);
    }

    #[test]
    fn completed_buckets_leave_out_the_current_one() {
        let mut w: RollingWindow<u64> = RollingWindow::new(5, Duration::from_millis(100));
        *w.current_mut(at_ms(50)) += 1;
        *w.current_mut(at_ms(150)) += 10;
        assert_eq!(w.iter_completed(at_ms(160)).sum::<u64>(), 1);
        assert_eq!(w.iter(at_ms(160)).sum::<u64>(), 11);
    }

    #[test]
    fn a_clock_that_steps_back_sees_no_future_buckets() {
        let mut w: RollingWindow<u64> = RollingWindow::new(5, Duration::from_millis(100));
        *w.current_mut(at_ms(450)) += 1;
        assert_eq!(w.iter(at_ms(100)).sum::<u64>(), 0);
    }
}
