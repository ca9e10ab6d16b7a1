//! What a plain HTTP/1.1 listener answers to a client that opens with the HTTP/2 preface
//! (an h2c client with prior knowledge, or a gRPC client pointed at the wrong listener).
//!
//! Closing without a word leaves the client with "connection reset" and no hint. Instead the
//! lean path answers in the client's own protocol: an empty SETTINGS frame (the server preface
//! RFC 9113 §3.4 requires first), then GOAWAY with `HTTP_1_1_REQUIRED` (RFC 9113 §7) whose
//! debug data names the setting to change, and logs a warning once per worker.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The start of the HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Whether `buf` begins like the HTTP/2 preface (the first line is enough to tell).
pub fn is_h2_preface(buf: &[u8]) -> bool {
    buf.len() >= PREFACE_START.len() && &buf[..PREFACE_START.len()] == PREFACE_START
}

/// The GOAWAY frame's debug data.
pub const GOAWAY_MESSAGE: &[u8] =
    b"this listener speaks HTTP/1.1 only: set `protocol: auto` (or h2c) on it for HTTP/2";

/// HTTP/2 error code `HTTP_1_1_REQUIRED`.
const HTTP_1_1_REQUIRED: u32 = 0xd;

/// An empty SETTINGS frame, then GOAWAY (last stream 0, `HTTP_1_1_REQUIRED`, the message).
pub fn goaway(out: &mut Vec<u8>) {
    out.clear();
    // SETTINGS: length 0, type 0x4, flags 0, stream 0.
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = 8 + GOAWAY_MESSAGE.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    out.extend_from_slice(GOAWAY_MESSAGE);
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Logs, once per process, that HTTP/2 reached an HTTP/1.1-only listener.
pub fn warn_once(listener: &str) {
    if !WARNED.swap(true, Relaxed) {
        tracing::warn!(
            listener,
            "a client opened with the HTTP/2 preface on an http1 listener; it got GOAWAY \
             (HTTP_1_1_REQUIRED). Set `protocol: auto` or `h2c` on the listener to serve HTTP/2"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_by_its_first_line() {
        assert!(is_h2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!is_h2_preface(b"PRI * HTTP/2"));
        assert!(!is_h2_preface(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn goaway_follows_an_empty_settings_frame_and_names_the_setting() {
        let mut out = Vec::new();
        goaway(&mut out);
        assert_eq!(&out[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let len = usize::from(out[9]) << 16 | usize::from(out[10]) << 8 | usize::from(out[11]);
        assert_eq!(out[12], 0x7);
        assert_eq!(len, out.len() - 18);
        assert_eq!(&out[22..26], &[0, 0, 0, 0xd]);
        assert!(out.ends_with(GOAWAY_MESSAGE));
    }
}
