//! Traffic recording for replay: the gateway hands sampled requests to a [`Recorder`], which
//! writes them as JSON lines (schema below) on a thread of its own, with redaction of secret
//! headers, a body cap, and size-bounded files with rotation.
//!
//! A crate of its own, so the gateway records without depending on the load tools, and
//! `spillway replay` reads recordings with the very types that wrote them.
//!
//! The request path must never wait for a disk: [`Recorder::record`] is a `try_send` on a
//! bounded channel, and an entry that does not fit is dropped and counted. Everything costly
//! (redaction, encoding, JSON, writes) happens on the writer thread.
//!
//! # File format (`spillway.traffic/v1`)
//!
//! One JSON object per line, in the order requests were recorded:
//!
//! ```json
//! {"v":1,"seq":0,"offset_us":1520,"method":"POST","path":"/api/orders","query":"id=7",
//!  "headers":[["host","shop"],["authorization","[redacted]"]],
//!  "body":"eyJhIjoxfQ==","body_encoding":"base64","body_len":7,"body_truncated":false}
//! ```
//!
//! - `v`: schema version (1). Readers refuse other versions.
//! - `seq`: 0-based position since the recorder started (continues across rotated files).
//! - `offset_us`: arrival time in microseconds since the recorder started.
//! - `method`, `path`, `query` (absent when the URL has none).
//! - `headers`: name/value pairs in order, names lower case; secret headers (by default
//!   `authorization`, `cookie`, `set-cookie`, `proxy-authorization`) have the value
//!   `"[redacted]"`, and replay leaves them out.
//! - `body`: up to `max_body` bytes, as UTF-8 text (`body_encoding: "utf8"`) or base64;
//!   `body_len` is the original length and `body_truncated` says whether it was cut.
//!
//! Rotation: when a line would take `file` past `max_file_bytes`, `file` becomes `file.1`
//! (`file.1` becomes `file.2`, and so on, keeping `max_files` old files) and a new `file` starts.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod size;

use crate::size::parse_bytes;
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize};
use spillway_core::random::{splitmix64, GOLDEN_GAMMA};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Version written in every line's `v`.
pub const TRAFFIC_VERSION: u32 = 1;
/// Value that replaces a redacted header.
pub const REDACTED: &str = "[redacted]";
/// Headers redacted unless the config keeps them.
pub const DEFAULT_REDACT: [&str; 4] =
    ["authorization", "cookie", "set-cookie", "proxy-authorization"];
/// Default body cap.
pub const DEFAULT_MAX_BODY: u64 = 4 * 1024;
/// Default size of one file before rotation.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of rotated files kept besides the current one.
pub const DEFAULT_MAX_FILES: usize = 3;
/// Default number of entries waiting for the writer before new ones are dropped.
pub const DEFAULT_QUEUE: usize = 4096;

/// A recorder that cannot start, or a recording that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A config value out of range.
    #[error("record: {0}")]
    Config(String),
    /// The file cannot be opened or read.
    #[error("record: {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A line of a recording is not a valid entry.
    #[error("{path}:{line}: {why}")]
    Parse {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

fn default_sample() -> f64 {
    1.0
}
fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY
}
fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}
fn default_max_files() -> usize {
    DEFAULT_MAX_FILES
}
fn default_queue() -> usize {
    DEFAULT_QUEUE
}

/// A byte size in config: a number of bytes or a string such as `"4KB"`.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

/// The `record:` option of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// File to write (rotated files get `.1`, `.2`... appended).
    pub file: PathBuf,
    /// Share of requests recorded, 0..=1. Default 1 (every request; files are bounded anyway).
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Largest body prefix kept, bytes (`"4KB"` accepted). Default 4 KiB.
    #[serde(default = "default_max_body", deserialize_with = "byte_size")]
    pub max_body: u64,
    /// Size of a file before rotation. Default 64 MiB.
    #[serde(default = "default_max_file_bytes", deserialize_with = "byte_size")]
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one. Default 3.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Headers redacted in addition to [`DEFAULT_REDACT`].
    #[serde(default)]
    pub redact: Vec<String>,
    /// Headers of [`DEFAULT_REDACT`] to record in clear anyway.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Entries that may wait for the writer; more are dropped. Default 4096.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

impl RecordConfig {
    /// A config writing every request to `file` with the defaults.
    pub fn new(file: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            file: file.into(),
            sample: default_sample(),
            max_body: DEFAULT_MAX_BODY,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: DEFAULT_MAX_FILES,
            redact: Vec::new(),
            keep: Vec::new(),
            queue: DEFAULT_QUEUE,
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), RecordError> {
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(RecordError::Config(format!(
                "sample must be within 0..=1, got {}",
                self.sample
            )));
        }
        if self.max_file_bytes < 1024 {
            return Err(RecordError::Config("max_file_bytes must be at least 1KB".into()));
        }
        if self.queue == 0 {
            return Err(RecordError::Config("queue must be at least 1".into()));
        }
        Ok(())
    }

    /// Names (lower case) of the headers to redact.
    pub fn redacted_headers(&self) -> Vec<String> {
        let keep: Vec<String> = self.keep.iter().map(|h| h.to_ascii_lowercase()).collect();
        DEFAULT_REDACT
            .iter()
            .map(|h| h.to_string())
            .filter(|h| !keep.contains(h))
            .chain(self.redact.iter().map(|h| h.to_ascii_lowercase()))
            .collect()
    }
}

/// A request as the gateway hands it over.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method.
    pub method: http::Method,
    /// Path.
    pub path: String,
    /// Query string without `?`.
    pub query: Option<String>,
    /// Headers as received.
    pub headers: HeaderMap,
    /// Body, or its first bytes (the recorder keeps at most `max_body`).
    pub body: Bytes,
    /// Full body length when known (`body.len()` otherwise).
    pub body_len: Option<u64>,
    /// When the request arrived.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// From a request's head and (a prefix of) its body.
    pub fn from_parts(
        parts: &http::request::Parts,
        body: Bytes,
        received_at: Instant,
    ) -> RecordedRequest {
        RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers.clone(),
            body,
            body_len: None,
            received_at,
        }
    }
}

/// One line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficEntry {
    /// Schema version ([`TRAFFIC_VERSION`]).
    pub v: u32,
    /// Position since the recorder started.
    pub seq: u64,
    /// Arrival, µs since the recorder started.
    pub offset_us: u64,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query without `?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Headers, names lower case, secrets redacted.
    pub headers: Vec<(String, String)>,
    /// Body prefix (see `body_encoding`).
    #[serde(default)]
    pub body: String,
    /// `utf8` or `base64`.
    #[serde(default = "utf8")]
    pub body_encoding: String,
    /// Original body length.
    #[serde(default)]
    pub body_len: u64,
    /// Whether `body` was cut at `max_body`.
    #[serde(default)]
    pub body_truncated: bool,
}

fn utf8() -> String {
    "utf8".to_string()
}

impl TrafficEntry {
    /// The body bytes as recorded.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        match self.body_encoding.as_str() {
            "utf8" => Ok(self.body.as_bytes().to_vec()),
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(&self.body)
                .map_err(|e| format!("bad base64 body: {e}")),
            other => Err(format!("unknown body_encoding `{other}`")),
        }
    }
}

/// Counters of a recorder (for metrics).
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Entries written.
    pub written: AtomicU64,
    /// Entries dropped because the writer queue was full.
    pub dropped: AtomicU64,
    /// Files rotated.
    pub rotations: AtomicU64,
    /// Failed writes (entries lost).
    pub write_errors: AtomicU64,
}

/// What happened to a request handed to [`Recorder::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Queued for writing.
    Queued,
    /// Queue full (or writer gone): dropped and counted.
    Dropped,
}

struct Pending {
    request: RecordedRequest,
}

/// Records sampled requests to a rotated JSONL file from a writer thread.
///
/// How a proxy uses it, per request:
///
/// ```
/// use spillway_record::{RecordConfig, RecordedRequest, Recorder};
/// # let dir = tempfile::tempdir().unwrap();
/// let recorder = Recorder::start(RecordConfig {
///     sample: 0.1,
///     ..RecordConfig::new(dir.path().join("traffic.jsonl"))
/// })
/// .unwrap();
/// let (parts, _body) = http::Request::get("/orders?id=7").body(()).unwrap().into_parts();
/// if recorder.sampled() {
///     // Hand over at most `recorder.max_body()` bytes of the body.
///     let body = bytes::Bytes::from_static(b"");
///     recorder.record(RecordedRequest::from_parts(&parts, body, std::time::Instant::now()));
/// }
/// recorder.close(); // flushes; dropping it does the same
/// ```
pub struct Recorder {
    sender: Option<SyncSender<Pending>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<RecorderStats>,
    sample: f64,
    max_body: u64,
    random: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("sample", &self.sample)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Whether a request is sampled, given a uniform random `u64` and the sample share.
pub fn sample_hit(random: u64, sample: f64) -> bool {
    if sample >= 1.0 {
        return true;
    }
    // Top 53 bits as a uniform value in [0, 1).
    ((random >> 11) as f64 / (1u64 << 53) as f64) < sample
}

impl Recorder {
    /// Validates `config`, opens (appends to) its file and starts the writer thread.
    pub fn start(config: RecordConfig) -> Result<Recorder, RecordError> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        Recorder::start_inner(config, seed, None)
    }

    fn start_inner(
        config: RecordConfig,
        seed: u64,
        gate: Option<Receiver<()>>,
    ) -> Result<Recorder, RecordError> {
        config.validate()?;
        let file = FileRotator::open(&config)?;
        let (sender, receiver) = sync_channel(config.queue);
        let stats = Arc::new(RecorderStats::default());
        let writer_stats = stats.clone();
        let redact = config.redacted_headers();
        let max_body = config.max_body;
        let origin = Instant::now();
        let writer = std::thread::Builder::new()
            .name("spillway-record".into())
            .spawn(move || {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                write_loop(receiver, file, writer_stats, redact, max_body, origin)
            })
            .map_err(|source| RecordError::Io { path: config.file.clone(), source })?;
        Ok(Recorder {
            sender: Some(sender),
            writer: Some(writer),
            stats,
            sample: config.sample,
            max_body: config.max_body,
            random: AtomicU64::new(seed),
        })
    }

    /// Whether to record the next request (draws against `sample`). Call it before building a
    /// [`RecordedRequest`] so unsampled requests cost nothing more.
    pub fn sampled(&self) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        if self.sample <= 0.0 {
            return false;
        }
        let state = self.random.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed);
        sample_hit(splitmix64(state), self.sample)
    }

    /// Largest body prefix worth handing over.
    pub fn max_body(&self) -> u64 {
        self.max_body
    }

    /// Hands a (sampled) request to the writer without blocking; drops and counts it when the
    /// queue is full.
    pub fn record(&self, request: RecordedRequest) -> RecordOutcome {
        let Some(sender) = &self.sender else { return RecordOutcome::Dropped };
        match sender.try_send(Pending { request }) {
            Ok(()) => RecordOutcome::Queued,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                RecordOutcome::Dropped
            }
        }
    }

    /// Counters (shared: still readable after [`Recorder::close`]).
    pub fn stats(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    /// Writes what is queued, flushes and stops the writer.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The current file and its rotated predecessors.
struct FileRotator {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    max_files: usize,
}

fn rotated_name(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl FileRotator {
    fn open(config: &RecordConfig) -> Result<FileRotator, RecordError> {
        let io = |source| RecordError::Io { path: config.file.clone(), source };
        let file = OpenOptions::new().create(true).append(true).open(&config.file).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(FileRotator {
            path: config.file.clone(),
            out: BufWriter::new(file),
            size,
            max_bytes: config.max_file_bytes,
            max_files: config.max_files,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.max_files == 0 {
            let file =
                OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
            self.out = BufWriter::new(file);
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated_name(&self.path, self.max_files));
        for n in (1..self.max_files).rev() {
            let from = rotated_name(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_name(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated_name(&self.path, 1))?;
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }

    /// Writes one line, rotating first when it would not fit. Returns whether it rotated.
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<bool> {
        let len = line.len() as u64 + 1;
        let rotated = self.size > 0 && self.size + len > self.max_bytes;
        if rotated {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(rotated)
    }
}

/// Builds the entry for `request`: redaction, body cap and encoding.
pub fn to_entry(
    request: &RecordedRequest,
    seq: u64,
    offset_us: u64,
    redact: &[String],
    max_body: u64,
) -> TrafficEntry {
    let headers = request
        .headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_string();
            let value = if redact.contains(&name) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect();
    let keep = (request.body.len() as u64).min(max_body) as usize;
    let body = &request.body[..keep];
    let body_len = request.body_len.unwrap_or(request.body.len() as u64);
    let (body, body_encoding) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), "utf8"),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), "base64"),
    };
    TrafficEntry {
        v: TRAFFIC_VERSION,
        seq,
        offset_us,
        method: request.method.to_string(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers,
        body,
        body_encoding: body_encoding.to_string(),
        body_len,
        body_truncated: (keep as u64) < body_len,
    }
}

fn write_loop(
    receiver: Receiver<Pending>,
    mut file: FileRotator,
    stats: Arc<RecorderStats>,
    redact: Vec<String>,
    max_body: u64,
    origin: Instant,
) {
    let mut seq = 0u64;
    let mut write = |pending: Pending, file: &mut FileRotator| {
        let offset =
            pending.request.received_at.saturating_duration_since(origin).as_micros() as u64;
        let entry = to_entry(&pending.request, seq, offset, &redact, max_body);
        seq += 1;
        let result = serde_json::to_vec(&entry)
            .map_err(std::io::Error::other)
            .and_then(|line| file.write_line(&line));
        match result {
            Ok(rotated) => {
                stats.written.fetch_add(1, Ordering::Relaxed);
                stats.rotations.fetch_add(u64::from(rotated), Ordering::Relaxed);
            }
            Err(_) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    // Block for the next entry, then drain what is queued, then flush: one flush per burst.
    while let Ok(pending) = receiver.recv() {
        write(pending, &mut file);
        while let Ok(pending) = receiver.try_recv() {
            write(pending, &mut file);
        }
        let _ = file.out.flush();
    }
    let _ = file.out.flush();
}

/// Reads a recording (one file), checking every line.
pub fn read_traffic(path: &Path) -> Result<Vec<TrafficEntry>, RecordError> {
    let io = |source| RecordError::Io { path: path.to_path_buf(), source };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut entries = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parse = |why: String| RecordError::Parse { path: path.to_path_buf(), line: i + 1, why };
        let entry: TrafficEntry = serde_json::from_str(&line).map_err(|e| parse(e.to_string()))?;
        if entry.v != TRAFFIC_VERSION {
            return Err(parse(format!(
                "unsupported version {} (this build reads {TRAFFIC_VERSION})",
                entry.v
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// The rotated files of `path` that exist, oldest first, followed by `path` itself.
pub fn with_rotated(path: &Path) -> Vec<PathBuf> {
    let mut older: Vec<PathBuf> =
        (1..=1000).map(|n| rotated_name(path, n)).take_while(|p| p.exists()).collect();
    older.reverse();
    older.push(path.to_path_buf());
    older
}

#[cfg(test)]
impl Recorder {
    /// A recorder whose writer waits for `gate` before writing anything, with a fixed seed.
    pub(crate) fn start_gated(
        config: RecordConfig,
        seed: u64,
        gate: Receiver<()>,
    ) -> Result<Recorder, RecordError> {
        Recorder::start_inner(config, seed, Some(gate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn request(path: &str, body: &[u8], at: Instant) -> RecordedRequest {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop"));
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("cookie", HeaderValue::from_static("sid=1"));
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        headers.insert("x-spillway-criticality", HeaderValue::from_static("SHEDDABLE"));
        RecordedRequest {
            method: http::Method::POST,
            path: path.to_string(),
            query: Some("a=1".into()),
            headers,
            body: Bytes::copy_from_slice(body),
            body_len: None,
            received_at: at,
        }
    }

    fn header<'a>(e: &'a TrafficEntry, name: &str) -> Option<&'a str> {
        e.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn secrets_are_redacted_by_default_and_config_can_keep_or_add() {
        let r = request("/", b"", Instant::now());
        let default = to_entry(&r, 0, 0, &RecordConfig::new("x").redacted_headers(), 10);
        assert_eq!(header(&default, "authorization"), Some(REDACTED));
        assert_eq!(header(&default, "cookie"), Some(REDACTED));
        assert_eq!(header(&default, "x-api-key"), Some("k"));
        assert_eq!(header(&default, "x-spillway-criticality"), Some("SHEDDABLE"));
        let config = RecordConfig {
            keep: vec!["Cookie".into()],
            redact: vec!["X-Api-Key".into()],
            ..RecordConfig::new("x")
        };
        let custom = to_entry(&r, 0, 0, &config.redacted_headers(), 10);
        assert_eq!(header(&custom, "cookie"), Some("sid=1"));
        assert_eq!(header(&custom, "x-api-key"), Some(REDACTED));
        assert_eq!(header(&custom, "authorization"), Some(REDACTED));
    }

    #[test]
    fn bodies_are_capped_and_binary_ones_base64_encoded() {
        let text = to_entry(&request("/", b"hello world", Instant::now()), 0, 0, &[], 5);
        assert_eq!((text.body.as_str(), text.body_len, text.body_truncated), ("hello", 11, true));
        let binary = to_entry(&request("/", &[0xff, 0, 1], Instant::now()), 0, 0, &[], 4096);
        assert_eq!(binary.body_encoding, "base64");
        assert_eq!(binary.body_bytes().unwrap(), vec![0xff, 0, 1]);
        assert!(!binary.body_truncated);
    }

    #[test]
    fn recorder_writes_jsonl_in_order_with_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traffic.jsonl");
        let recorder = Recorder::start(RecordConfig::new(&path)).unwrap();
        let t0 = Instant::now();
        for i in 0..5 {
            let outcome = recorder.record(request(
                &format!("/r{i}"),
                b"{}",
                t0 + Duration::from_millis(10 * i),
            ));
            assert_eq!(outcome, RecordOutcome::Queued);
        }
        recorder.close();
        let entries = read_traffic(&path).unwrap();
        assert_eq!(entries.len(), 5);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64);
            assert_eq!(e.path, format!("/r{i}"));
            assert_eq!(e.query.as_deref(), Some("a=1"));
            assert_eq!(e.v, TRAFFIC_VERSION);
        }
        let gap = entries[4].offset_us - entries[0].offset_us;
        assert!((39_000..=41_000).contains(&gap), "gap {gap}");
    }

    #[test]
    fn files_rotate_at_the_size_bound_and_keep_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let config =
            RecordConfig { max_file_bytes: 2048, max_files: 2, ..RecordConfig::new(&path) };
        let recorder = Recorder::start(config).unwrap();
        let t0 = Instant::now();
        for i in 0..100 {
            recorder.record(request(&format!("/{i}"), b"0123456789", t0));
        }
        let stats = recorder.stats();
        recorder.close();
        let rotations = stats.rotations.load(Ordering::Relaxed);
        assert_eq!(stats.written.load(Ordering::Relaxed), 100);
        let files = with_rotated(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(!rotated_name(&path, 3).exists());
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 2048, "{f:?} too big");
        }
        // Oldest first, so the sequence numbers keep increasing across the kept files.
        let seqs: Vec<u64> =
            files.iter().flat_map(|f| read_traffic(f).unwrap()).map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(seqs.last(), Some(&99));
        assert!(rotations >= 2, "rotations {rotations}");
    }

    #[test]
    fn full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let (open_gate, gate) = std::sync::mpsc::channel();
        let recorder =
            Recorder::start_gated(RecordConfig { queue: 3, ..RecordConfig::new(&path) }, 1, gate)
                .unwrap();
        let outcomes: Vec<RecordOutcome> = (0..5)
            .map(|i| recorder.record(request(&format!("/{i}"), b"", Instant::now())))
            .collect();
        assert_eq!(outcomes.iter().filter(|o| **o == RecordOutcome::Dropped).count(), 2);
        assert_eq!(recorder.stats().dropped.load(Ordering::Relaxed), 2);
        open_gate.send(()).unwrap();
        recorder.close();
        assert_eq!(read_traffic(&path).unwrap().len(), 3);
    }

    #[test]
    fn sampling_keeps_about_the_configured_share() {
        let dir = tempfile::tempdir().unwrap();
        let (gate_sender, gate) = std::sync::mpsc::channel();
        let config = RecordConfig { sample: 0.1, ..RecordConfig::new(dir.path().join("t.jsonl")) };
        let recorder = Recorder::start_gated(config, 42, gate).unwrap();
        let hits = (0..10_000).filter(|_| recorder.sampled()).count();
        assert!((800..=1200).contains(&hits), "hits {hits}");
        assert!(sample_hit(u64::MAX, 1.0));
        assert!(!sample_hit(0, 0.0));
        // Closing the gate lets the (idle) writer finish when the recorder drops.
        drop(gate_sender);
    }

    #[test]
    fn config_parses_sizes_and_refuses_bad_values() {
        let yaml_like = r#"{"file": "traffic.jsonl", "sample": 0.1, "max_body": "4KB", "max_file_bytes": "1MB"}"#;
        let c: RecordConfig = serde_json::from_str(yaml_like).unwrap();
        assert_eq!(
            (c.sample, c.max_body, c.max_file_bytes, c.max_files),
            (0.1, 4096, 1 << 20, DEFAULT_MAX_FILES)
        );
        assert!(serde_json::from_str::<RecordConfig>(r#"{"file": "x", "smaple": 1}"#).is_err());
        let bad = RecordConfig { sample: 1.5, ..RecordConfig::new("x") };
        assert!(Recorder::start(bad).is_err());
    }

    #[test]
    fn reader_refuses_other_versions_and_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "\n{\"v\":2,\"seq\":0,\"offset_us\":0,\"method\":\"GET\",\"path\":\"/\",\"headers\":[]}\n").unwrap();
        let err = read_traffic(&path).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("version 2"), "{err}");
    }
}
