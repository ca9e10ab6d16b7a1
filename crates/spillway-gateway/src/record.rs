//! Traffic recording on the request path: a route with `record:` hands a sample of its
//! requests (head at arrival, body prefix as it streams upstream) to a
//! [`spillway_record::Recorder`], which writes them as JSON lines for `spillway replay`.
//!
//! The request path stays cheap: a route without `record:` pays one `Option` check; an
//! unsampled request pays one sampling draw. A sampled request copies its head once, and its
//! body is teed by `proxy::body::TeeBody`: frames go upstream unchanged and as soon as they
//! arrive, while at most `max_body` bytes are copied aside; nothing waits for the recorder
//! (its [`Recorder::record`] is a non-blocking `try_send`). The entry is handed over when the body
//! ends, or when the request ends early (rejected, upstream failure, client gone) with
//! whatever was seen.
//!
//! Recorders live as long as a config uses them: one per file, started when a config is
//! loaded, kept across a reload that leaves a route's `record:` unchanged, and closed when the
//! last snapshot using them goes away. A recorder that cannot start (an unwritable directory)
//! makes the config invalid, so a reload is refused and the old config keeps serving.

use crate::config::{Config, ConfigError, Problem};
use bytes::{Bytes, BytesMut};
use spillway_record::{RecordConfig, RecordedRequest, Recorder, RecorderStats};
use std::sync::Arc;

/// The recorder of one file, shared by the routes (and snapshots) writing it.
pub struct Recording {
    config: RecordConfig,
    /// `Some` until dropped.
    recorder: Option<Recorder>,
}

/// The recorders of a config's routes, in route order (`None`: the route does not record).
pub type RouteRecorders = Vec<Option<Arc<Recording>>>;

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("file", &self.config.file).finish_non_exhaustive()
    }
}

impl Recording {
    /// Starts a recorder for `config` (opens its file and the writer thread).
    pub fn start(config: RecordConfig) -> Result<Recording, spillway_record::RecordError> {
        let recorder = Recorder::start(config.clone())?;
        Ok(Recording { config, recorder: Some(recorder) })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &RecordConfig {
        &self.config
    }

    /// Written, dropped and rotation counters.
    pub fn stats(&self) -> Option<Arc<RecorderStats>> {
        self.recorder.as_ref().map(Recorder::stats)
    }

    /// Starts capturing `req` when the sampling draw says so: the head is copied now, with
    /// the arrival time; the body follows through `ProxyBody::teed`.
    #[inline]
    pub fn begin<B>(self: &Arc<Self>, req: &http::Request<B>) -> Option<Capture> {
        let recorder = self.recorder.as_ref()?;
        if !recorder.sampled() {
            return None;
        }
        let received_at = std::time::Instant::now();
        let limit = usize::try_from(recorder.max_body()).unwrap_or(usize::MAX);
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        Some(Capture {
            recording: self.clone(),
            request: Some(RecordedRequest {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                query: req.uri().query().map(str::to_string),
                headers: req.headers().clone(),
                body: Bytes::new(),
                body_len: None,
                received_at,
            }),
            kept: BytesMut::new(),
            seen: 0,
            declared,
            limit,
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let Some(recorder) = self.recorder.take() else { return };
        // Closing joins the writer thread once it has flushed what is queued. The last
        // snapshot using an old recorder may be released by a worker, which must not wait for a
        // disk: there, close on a short-lived thread. Elsewhere (control thread, shutdown),
        // close inline so that everything is on disk when the gateway has stopped.
        let on_worker =
            std::thread::current().name().is_some_and(|n| n.starts_with("spillway-worker"));
        if on_worker {
            // If the thread cannot be spawned, the recorder is dropped here (closing inline).
            let _ = std::thread::Builder::new()
                .name("spillway-record-close".into())
                .spawn(move || recorder.close());
        } else {
            recorder.close();
        }
    }
}

/// A sampled request being captured; handed to the recorder when dropped.
pub struct Capture {
    recording: Arc<Recording>,
    request: Option<RecordedRequest>,
    kept: BytesMut,
    /// Body bytes seen (kept or not).
    seen: u64,
    /// `Content-Length`, if given: the body's length even when it was never read (refused).
    declared: Option<u64>,
    /// `max_body`.
    limit: usize,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("seen", &self.seen).finish_non_exhaustive()
    }
}

impl Capture {
    /// Copies the part of `data` that still fits under `max_body` and counts all of it.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        let room = self.limit.saturating_sub(self.kept.len()).min(data.len());
        if room > 0 {
            self.kept.extend_from_slice(&data[..room]);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let Some(mut request) = self.request.take() else { return };
        request.body = std::mem::take(&mut self.kept).freeze();
        request.body_len = Some(self.seen.max(self.declared.unwrap_or(0)));
        if let Some(recorder) = &self.recording.recorder {
            // Never blocks: a full queue drops the entry and counts it.
            recorder.record(request);
        }
    }
}

/// Starts the recorders `config` needs: one per file, reusing one of the `previous`
/// recordings (those of the snapshot being replaced, `Router::recordings`) whose settings are
/// unchanged. An error names the route's `record.file` and why it cannot be written.
pub fn start_recorders<'a>(
    config: &Config,
    previous: impl Iterator<Item = &'a Arc<Recording>> + Clone,
) -> Result<RouteRecorders, ConfigError> {
    let mut started: Vec<Arc<Recording>> = Vec::new();
    let mut problems = Vec::new();
    let mut per_route = Vec::with_capacity(config.routes.len());
    for (i, route) in config.routes.iter().enumerate() {
        let Some(wanted) = &route.record else {
            per_route.push(None);
            continue;
        };
        if let Some(same_file) = started.iter().find(|r| r.config.file == wanted.file) {
            per_route.push(Some(same_file.clone()));
            continue;
        }
        let kept = previous.clone().find(|r| r.config == *wanted);
        let recording = match kept {
            Some(r) => r.clone(),
            None => match Recording::start(wanted.clone()) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    problems.push(Problem {
                        line: None,
                        key: format!("routes[{i}].record.file"),
                        reason: e.to_string(),
                    });
                    per_route.push(None);
                    continue;
                }
            },
        };
        started.push(recording.clone());
        per_route.push(Some(recording));
    }
    if problems.is_empty() {
        Ok(per_route)
    } else {
        Err(ConfigError::Invalid { file: config.source.clone(), problems })
    }
}

/// Appends the counters of the recorders in use to a Prometheus text page: entries by result
/// (`written`, `dropped` because the writer queue was full, `write_error`) and file rotations,
/// by file, given the recordings of the routes in use (`Router::recordings`). Nothing when no
/// route records.
pub fn render_metrics<'a>(recordings: impl Iterator<Item = &'a Arc<Recording>>, out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let mut distinct: Vec<&Arc<Recording>> = Vec::new();
    for r in recordings {
        if !distinct.iter().any(|seen| Arc::ptr_eq(seen, r)) {
            distinct.push(r);
        }
    }
    let stats: Vec<(String, Arc<RecorderStats>)> = distinct
        .iter()
        .filter_map(|r| {
            let file = r.config.file.display().to_string();
            Some((file.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"), r.stats()?))
        })
        .collect();
    if stats.is_empty() {
        return;
    }
    out.push_str("# HELP spillway_record_entries_total Sampled requests handed to a traffic recorder, by file and result.\n");
    out.push_str("# TYPE spillway_record_entries_total counter\n");
    for (file, s) in &stats {
        for (result, n) in
            [("written", &s.written), ("dropped", &s.dropped), ("write_error", &s.write_errors)]
        {
            let _ = writeln!(
                out,
                "spillway_record_entries_total{{file=\"{file}\",result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
    out.push_str("# HELP spillway_record_rotations_total Traffic recording files rotated.\n");
    out.push_str("# TYPE spillway_record_rotations_total counter\n");
    for (file, s) in &stats {
        let _ = writeln!(
            out,
            "spillway_record_rotations_total{{file=\"{file}\"}} {}",
            s.rotations.load(Relaxed)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn capture(limit: usize) -> Capture {
        let recording = Arc::new(Recording { config: RecordConfig::new("unused"), recorder: None });
        Capture { recording, request: None, kept: BytesMut::new(), seen: 0, declared: None, limit }
    }

    #[test]
    fn capture_keeps_at_most_max_body_across_frames_and_counts_everything() {
        let mut c = capture(7);
        for frame in [&b"01234"[..], b"56789", b"abcde"] {
            c.push(frame);
        }
        assert_eq!((&c.kept[..], c.seen), (&b"0123456"[..], 15));
        let mut none = capture(0);
        none.push(b"xyz");
        assert_eq!((none.kept.len(), none.seen), (0, 3));
    }
}
