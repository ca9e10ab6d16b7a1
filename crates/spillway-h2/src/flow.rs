//! HTTP/2 flow-control windows (RFC 9113 §5.2, §6.9), one type per direction.
//!
//! [`RecvWindow`] is what we advertised: received DATA shrinks it, the application *releases*
//! bytes as it consumes them, and a WINDOW_UPDATE is due once half the target is released —
//! batching updates instead of sending one per frame. [`SendWindow`] is what the peer allows
//! us: WINDOW_UPDATE grows it (never past 2^31-1), a SETTINGS_INITIAL_WINDOW_SIZE change
//! shifts it and may leave it negative (§6.9.2), and DATA we send shrinks it.

use crate::frame::MAX_WINDOW;

/// Our receive window on a stream or the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWindow {
    /// Bytes the peer may still send.
    available: i64,
    /// Bytes released by the application, not yet returned with WINDOW_UPDATE.
    released: u32,
    /// The window we keep advertising.
    target: u32,
}

impl RecvWindow {
    /// A window where the peer may send `initial` bytes and we refill up to `target`.
    pub fn new(initial: u32, target: u32) -> RecvWindow {
        RecvWindow { available: initial as i64, released: 0, target }
    }

    /// Accounts `n` received bytes; `false` if they exceed the window (FLOW_CONTROL_ERROR).
    pub fn receive(&mut self, n: u32) -> bool {
        self.available -= n as i64;
        self.available >= 0
    }

    /// Returns `n` consumed bytes; gives the WINDOW_UPDATE increment to send when at least
    /// half the target is waiting (or the window would otherwise run dry).
    pub fn release(&mut self, n: u32) -> Option<u32> {
        self.released = self.released.saturating_add(n);
        let grown = self.available + self.released as i64;
        if self.released as i64 >= (self.target / 2) as i64 || grown > self.target as i64 {
            let inc = self.released.min((MAX_WINDOW as i64 - self.available.max(0)).max(0) as u32);
            self.released -= inc;
            self.available += inc as i64;
            return (inc > 0).then_some(inc);
        }
        None
    }

    /// Bytes the peer may still send.
    pub fn available(&self) -> i64 {
        self.available
    }
}

/// The peer's window for what we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow(i64);

impl SendWindow {
    /// A window of `initial` bytes.
    pub fn new(initial: u32) -> SendWindow {
        SendWindow(initial as i64)
    }

    /// Applies a WINDOW_UPDATE; `false` if it would pass 2^31-1 (FLOW_CONTROL_ERROR).
    pub fn grow(&mut self, increment: u32) -> bool {
        let next = self.0 + increment as i64;
        if next > MAX_WINDOW as i64 {
            return false;
        }
        self.0 = next;
        true
    }

    /// Shifts the window by a SETTINGS_INITIAL_WINDOW_SIZE change; `false` on overflow.
    pub fn shift(&mut self, delta: i64) -> bool {
        let next = self.0 + delta;
        if next > MAX_WINDOW as i64 {
            return false;
        }
        self.0 = next;
        true
    }

    /// Bytes we may send now (0 when negative).
    pub fn available(&self) -> usize {
        self.0.max(0) as usize
    }

    /// Accounts `n` bytes sent (never more than [`SendWindow::available`]).
    pub fn spend(&mut self, n: usize) {
        self.0 -= n as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiving_past_the_window_is_an_error() {
        let mut w = RecvWindow::new(100, 100);
        assert!(w.receive(60));
        assert!(w.receive(40));
        assert!(!w.receive(1));
    }

    #[test]
    fn updates_are_batched_until_half_the_target_is_released() {
        let mut w = RecvWindow::new(1000, 1000);
        assert!(w.receive(1000));
        assert_eq!(w.release(200), None);
        assert_eq!(w.release(299), None);
        assert_eq!(w.release(1), Some(500));
        assert_eq!(w.available(), 500);
    }

    #[test]
    fn send_window_overflow_and_negative_shift() {
        let mut w = SendWindow::new(65_535);
        assert!(!w.grow(MAX_WINDOW));
        assert!(w.shift(-70_000));
        assert_eq!(w.available(), 0);
        assert!(w.grow(10_000));
        assert_eq!(w.available(), 5_535);
    }
}
