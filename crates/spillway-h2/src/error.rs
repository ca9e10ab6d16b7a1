//! HTTP/2 error codes (RFC 9113 §7) and the protocol error type that carries one.
//!
//! Every violation the codec or the connection finds is an [`H2Error`]: the RFC error code to
//! send, whether it ends the whole connection (GOAWAY) or one stream (RST_STREAM), and a
//! static reason for logs. Keeping the scope in the error lets the connection answer each
//! violation the way the RFC asks without a second classification.

use std::fmt;

/// An HTTP/2 error code (RFC 9113 §7). Unknown codes received from a peer are kept as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Graceful shutdown or no error.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// Unspecific protocol error.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// Unexpected internal error.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// Flow-control protocol violated.
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// SETTINGS not acknowledged in time.
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// Frame received on a half-closed or closed stream.
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// Frame of invalid size.
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// Stream refused before any processing.
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// Stream no longer needed.
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    /// HPACK state cannot be maintained.
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// CONNECT tunnel reset or closed abnormally.
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// Peer generates excessive load.
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    /// Transport properties do not meet minimum security requirements.
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    /// HTTP/1.1 required instead.
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The RFC name of the code, or `"UNKNOWN"`.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("UNKNOWN")
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.0)
    }
}

/// What a protocol error ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole connection: answered with GOAWAY (RFC 9113 §5.4.1).
    Connection,
    /// One stream: answered with RST_STREAM on it (RFC 9113 §5.4.2).
    Stream(u32),
}

/// A protocol violation: the code to send, its scope, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Error {
    /// The RFC error code.
    pub code: ErrorCode,
    /// Connection or stream error.
    pub scope: Scope,
    /// What was wrong, for logs.
    pub reason: &'static str,
}

impl H2Error {
    /// A connection error.
    pub const fn connection(code: ErrorCode, reason: &'static str) -> H2Error {
        H2Error { code, scope: Scope::Connection, reason }
    }

    /// A stream error on `stream`.
    pub const fn stream(stream: u32, code: ErrorCode, reason: &'static str) -> H2Error {
        H2Error { code, scope: Scope::Stream(stream), reason }
    }

    /// Whether the error ends the connection.
    pub fn is_connection_error(&self) -> bool {
        self.scope == Scope::Connection
    }
}

impl fmt::Display for H2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope {
            Scope::Connection => write!(f, "connection error {}: {}", self.code, self.reason),
            Scope::Stream(id) => write!(f, "stream {id} error {}: {}", self.code, self.reason),
        }
    }
}

impl std::error::Error for H2Error {}
