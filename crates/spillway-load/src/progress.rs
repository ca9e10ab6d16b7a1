//! The live progress bar of `load`, `capacity` and `replay` (indicatif, on stderr): elapsed
//! time against the planned length, current rate, errors and the interval's p50/p99.
//!
//! Drawn only on a terminal (indicatif hides itself otherwise), so piping the output or running
//! under CI prints just the final summary.

use crate::engine::Live;
use crate::units::{format_duration, format_micros};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

/// A progress bar for one run.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for a run of `duration`, labelled `label`; hidden when `quiet`.
    pub fn new(label: &str, duration: Duration, quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(
            Some(duration.as_millis() as u64),
            if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
        );
        let template = "{prefix} [{bar:30}] {msg}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        Progress { bar }
    }

    /// Shows the interval that just ended.
    pub fn update(&self, live: &Live) {
        self.bar
            .set_position((live.elapsed.as_millis() as u64).min(live.duration.as_millis() as u64));
        let p = &live.point;
        let target = p.target_rate.map(|r| format!("/{r:.0}")).unwrap_or_default();
        let latency =
            |v: Option<f64>| v.map(|ms| format_micros(ms * 1000.0)).unwrap_or_else(|| "-".into());
        let retries = live.attempts.saturating_sub(live.sent);
        let retries = if retries > 0 { format!(" (+{retries} retries)") } else { String::new() };
        self.bar.set_message(format!(
            "{:.1}s/{}  {:.0}{target} rps  sent {}{retries}  errors {}  p50 {}  p99 {}",
            live.elapsed.as_secs_f64(),
            format_duration(live.duration),
            p.sent_rate,
            live.sent,
            live.errors,
            latency(p.p50_ms),
            latency(p.p99_ms)
        ));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
