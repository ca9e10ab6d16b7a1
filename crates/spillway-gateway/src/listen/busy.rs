//! How busy a worker thread is: the share of wall time it spent running tasks rather than
//! parked waiting for I/O or timers, over the last whole window, fed by the worker runtime's
//! park and unpark hooks.
//!
//! What it decides: whether frames for an upstream HTTP/2 connection are written as soon as a
//! downstream connection's requests are read (`upstream::h2_client::polling_streams_then_sending`),
//! or left for the connection task, which writes everything the worker's other connections
//! added meanwhile in one go. Writing early lets the upstream start sooner (lower latency, and
//! more calls per second when the upstream shares the machine) but costs one more write, and
//! one more wake-up of the upstream, per batch: worth it while the worker has time to spare,
//! not once it is saturated, when coalescing is what keeps its throughput up (as Linux's TCP
//! autocorking coalesces writes while the device is busy).
//!
//! [`BusyShare`] is the pure estimator, driven with explicit instants; the thread-local
//! functions are its edge. The same hooks keep each worker's running time for the metrics
//! ([`BusyTime`], `spillway_worker_busy_seconds_total`).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The window busy time is measured over.
pub const WINDOW: Duration = Duration::from_millis(10);

/// A worker busy at least this share of the last window counts as saturated.
pub const SATURATED_SHARE: f64 = 0.9;

/// The busy share of one thread, window by window.
#[derive(Debug, Clone)]
pub struct BusyShare {
    window: Duration,
    /// Start of the window being measured.
    window_start: Instant,
    /// Running time seen in that window for runs that already ended.
    busy: Duration,
    /// When the current run began, if the thread is running.
    running_since: Option<Instant>,
    /// Busy share of the last whole window, in [0, 1].
    last_share: f64,
}

impl BusyShare {
    /// A thread that is running from `now`, with no whole window measured yet (share 0).
    pub fn new(now: Instant, window: Duration) -> BusyShare {
        BusyShare {
            window: window.max(Duration::from_micros(1)),
            window_start: now,
            busy: Duration::ZERO,
            running_since: Some(now),
            last_share: 0.0,
        }
    }

    /// The thread starts running tasks at `now`.
    pub fn unparked(&mut self, now: Instant) {
        self.roll(now);
        if self.running_since.is_none() {
            self.running_since = Some(now);
        }
    }

    /// The thread parks at `now`.
    pub fn parked(&mut self, now: Instant) {
        self.roll(now);
        if let Some(since) = self.running_since.take() {
            self.busy += now.saturating_duration_since(since.max(self.window_start));
        }
    }

    /// Busy share of the last whole window as of `now`, in [0, 1].
    pub fn share(&mut self, now: Instant) -> f64 {
        self.roll(now);
        self.last_share
    }

    /// Whether the thread was busy at least [`SATURATED_SHARE`] of the last whole window.
    pub fn saturated(&mut self, now: Instant) -> bool {
        self.share(now) >= SATURATED_SHARE
    }

    /// Closes the window if `now` is past its end.
    fn roll(&mut self, now: Instant) {
        let Some(end) = self.window_start.checked_add(self.window) else { return };
        if now < end {
            return;
        }
        let whole =
            now.saturating_duration_since(self.window_start).as_nanos() / self.window.as_nanos();
        if whole == 1 {
            let mut busy = self.busy;
            if let Some(since) = self.running_since {
                busy += end.saturating_duration_since(since.max(self.window_start));
            }
            self.last_share = (busy.as_secs_f64() / self.window.as_secs_f64()).min(1.0);
        } else {
            // Windows passed with no park or unpark: the last of them was all one state.
            self.last_share = if self.running_since.is_some() { 1.0 } else { 0.0 };
        }
        let whole = u32::try_from(whole).unwrap_or(u32::MAX);
        self.window_start =
            self.window_start.checked_add(self.window.saturating_mul(whole)).unwrap_or(now);
        self.busy = Duration::ZERO;
    }
}

/// A worker thread's running time, written by its park and unpark hooks (one writer) and read
/// by the admin thread for `spillway_worker_busy_seconds_total`.
#[derive(Debug, Default)]
pub struct BusyTime {
    /// Running time of the runs that ended, in nanoseconds.
    ended_nanos: AtomicU64,
    /// Start of the current run in nanoseconds since [`epoch`], plus one; 0 while parked.
    running_since: AtomicU64,
}

/// The instant busy times are counted from (the first time one is needed).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl BusyTime {
    /// The thread starts running at `now`.
    pub fn unparked(&self, now: Instant) {
        if self.running_since.load(Ordering::Relaxed) == 0 {
            self.running_since.store(nanos_since_epoch(now).saturating_add(1), Ordering::Release);
        }
    }

    /// The thread parks at `now`.
    pub fn parked(&self, now: Instant) {
        let since = self.running_since.load(Ordering::Relaxed);
        if since != 0 {
            let run = nanos_since_epoch(now).saturating_add(1).saturating_sub(since);
            let ended = self.ended_nanos.load(Ordering::Relaxed).saturating_add(run);
            self.ended_nanos.store(ended, Ordering::Release);
            self.running_since.store(0, Ordering::Release);
        }
    }

    /// Running time up to `now`, the current run included.
    pub fn seconds(&self, now: Instant) -> f64 {
        let mut total = 0;
        // A park or unpark between the loads changes `running_since`: read again.
        for _ in 0..4 {
            let since = self.running_since.load(Ordering::Acquire);
            let ended = self.ended_nanos.load(Ordering::Acquire);
            let again = self.running_since.load(Ordering::Acquire);
            let running = match since {
                0 => 0,
                s => nanos_since_epoch(now).saturating_add(1).saturating_sub(s),
            };
            total = ended.saturating_add(running);
            if since == again {
                break;
            }
        }
        total as f64 / 1e9
    }
}

/// Writes `spillway_worker_busy_seconds_total`, one sample per worker.
pub fn render_metrics(workers: &[Arc<BusyTime>], out: &mut String) {
    out.push_str(
        "# HELP spillway_worker_busy_seconds_total Time each worker thread spent running \
         rather than parked; its rate is the worker's utilisation (at 0.9 a worker coalesces \
         upstream HTTP/2 writes).\n",
    );
    out.push_str("# TYPE spillway_worker_busy_seconds_total counter\n");
    let now = Instant::now();
    for (id, busy) in workers.iter().enumerate() {
        let _ = writeln!(
            out,
            "spillway_worker_busy_seconds_total{{worker=\"{id}\"}} {:.6}",
            busy.seconds(now)
        );
    }
}

/// One thread's estimator, and where its running time is published (workers only).
struct ThreadBusy {
    share: BusyShare,
    time: Option<Arc<BusyTime>>,
}

thread_local! {
    /// This thread's estimator, made by [`publish_to`] or the first hook; `None` on threads
    /// whose runtime has no hooks (tests, the admin runtime): never saturated.
    static THREAD_BUSY: RefCell<Option<ThreadBusy>> = const { RefCell::new(None) };
}

/// This thread's hooks publish its running time to `time` from now on (a worker, at start:
/// it is running).
pub fn publish_to(time: Option<Arc<BusyTime>>) {
    let now = Instant::now();
    if let Some(time) = &time {
        time.unparked(now);
    }
    let _ = THREAD_BUSY.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            *b = Some(ThreadBusy { share: BusyShare::new(now, WINDOW), time });
        }
    });
}

/// The worker runtime's unpark hook.
pub fn thread_unparked() {
    on_hook(BusyShare::unparked, BusyTime::unparked);
}

/// The worker runtime's park hook.
pub fn thread_parked() {
    on_hook(BusyShare::parked, BusyTime::parked);
}

/// Applies a hook to this thread's estimator (made on the first one) and published time.
fn on_hook(share: fn(&mut BusyShare, Instant), time: fn(&BusyTime, Instant)) {
    let now = Instant::now();
    let _ = THREAD_BUSY.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            let b = b.get_or_insert_with(|| ThreadBusy {
                share: BusyShare::new(now, WINDOW),
                time: None,
            });
            share(&mut b.share, now);
            if let Some(t) = &b.time {
                time(t, now);
            }
        }
    });
}

/// Whether this worker thread is saturated (see [`BusyShare::saturated`]).
pub fn thread_saturated() -> bool {
    THREAD_BUSY
        .try_with(|b| {
            b.try_borrow_mut()
                .is_ok_and(|mut b| b.as_mut().is_some_and(|b| b.share.saturated(Instant::now())))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn share_is_the_running_part_of_the_last_whole_window() {
        let t0 = Instant::now();
        let mut busy = BusyShare::new(t0, 10 * MS);
        busy.parked(t0 + 2 * MS);
        busy.unparked(t0 + 5 * MS);
        busy.parked(t0 + 8 * MS);
        // Window not over yet: nothing measured.
        assert_eq!(busy.share(t0 + 9 * MS), 0.0);
        // 2 + 3 ms of 10.
        assert!((busy.share(t0 + 11 * MS) - 0.5).abs() < 1e-9);
        assert!(!busy.saturated(t0 + 11 * MS));
    }

    #[test]
    fn a_run_across_the_window_end_counts_in_both_windows() {
        let t0 = Instant::now();
        let mut busy = BusyShare::new(t0, 10 * MS);
        busy.parked(t0 + MS);
        busy.unparked(t0 + 2 * MS);
        // Running 0-1 ms, then 2-19 ms: 9 ms of the first window, 9 of the second.
        busy.parked(t0 + 19 * MS);
        assert!((busy.share(t0 + 19 * MS) - 0.9).abs() < 1e-9);
        busy.unparked(t0 + 19 * MS + MS / 2);
        assert!((busy.share(t0 + 20 * MS) - 0.95).abs() < 1e-9);
        assert!(busy.saturated(t0 + 20 * MS));
    }

    #[test]
    fn long_runs_and_long_parks_fill_whole_windows() {
        let t0 = Instant::now();
        let mut busy = BusyShare::new(t0, 10 * MS);
        assert_eq!(busy.share(t0 + 35 * MS), 1.0);
        busy.parked(t0 + 36 * MS);
        assert!((busy.share(t0 + 40 * MS) - 0.6).abs() < 1e-9);
        assert_eq!(busy.share(t0 + 95 * MS), 0.0);
        assert!(!busy.saturated(t0 + 95 * MS));
    }

    #[test]
    fn the_thread_hooks_keep_one_estimator_per_thread() {
        std::thread::spawn(|| {
            assert!(!thread_saturated(), "no hook yet: never saturated");
            thread_parked();
            thread_unparked();
            thread_parked();
            thread_unparked();
            let busy = THREAD_BUSY.with(|b| b.borrow().as_ref().map(|b| b.share.clone()));
            assert!(busy.is_some_and(|b| b.running_since.is_some()));
            // Once published to, the same hooks move the worker's running time.
            let time = Arc::new(BusyTime::default());
            publish_to(Some(time.clone()));
            assert_ne!(time.running_since.load(Ordering::Relaxed), 0, "running from publish_to");
            thread_parked();
            assert_eq!(time.running_since.load(Ordering::Relaxed), 0, "parked");
            thread_unparked();
            assert_ne!(time.running_since.load(Ordering::Relaxed), 0, "running again");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn busy_time_counts_ended_runs_and_the_current_one() {
        let t0 = epoch() + Duration::from_secs(1);
        let time = BusyTime::default();
        time.parked(t0);
        assert_eq!(time.seconds(t0 + 5 * MS), 0.0);
        time.unparked(t0 + 10 * MS);
        time.unparked(t0 + 12 * MS);
        time.parked(t0 + 30 * MS);
        time.parked(t0 + 40 * MS);
        assert!((time.seconds(t0 + 50 * MS) - 0.020).abs() < 1e-9);
        time.unparked(t0 + 60 * MS);
        assert!((time.seconds(t0 + 65 * MS) - 0.025).abs() < 1e-9);
        let mut out = String::new();
        render_metrics(&[Arc::new(BusyTime::default())], &mut out);
        assert!(
            out.contains("spillway_worker_busy_seconds_total{worker=\"0\"} 0.000000\n"),
            "{out}"
        );
    }

    #[test]
    fn repeated_hooks_of_the_same_kind_change_nothing() {
        let t0 = Instant::now();
        let mut busy = BusyShare::new(t0, 10 * MS);
        busy.unparked(t0 + 3 * MS);
        busy.parked(t0 + 5 * MS);
        busy.parked(t0 + 7 * MS);
        assert!((busy.share(t0 + 10 * MS) - 0.5).abs() < 1e-9);
    }
}
