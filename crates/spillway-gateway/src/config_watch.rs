//! Watching the config file for edits (`spillway run` without `--no-watch`): a task on the
//! control runtime reads inotify events for the file's directory and asks for a reload when
//! one names the file, or when an entry came or went under another name and the path now opens
//! another file or a changed one (a link on the way to it was swapped, as Kubernetes does).
//!
//! The directory is watched, not the file, because editors and deploy tools replace a file by
//! renaming another over it, which a watch on the old inode would miss. It is watched only for
//! the events that finish a change — a writer closing the file, a rename into or out of the
//! directory, a creation, a deletion, an attribute change — never for each `write(2)`: other
//! files in the same directory (an access log, a load tool's request log) may be written tens
//! of thousands of times a second, and each event delivered would wake the control thread on
//! the workers' cores. A file written in several steps is reloaded once it is closed.

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// The directory events that can mean the config file changed. Not `MODIFY` (one per write)
/// and not the open, access and close-without-writing events.
const CHANGES: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB);

/// Events by which an entry of the directory came or went (a link swapped in or out).
const RELINKED: EventMask = EventMask::MOVED_TO
    .union(EventMask::MOVED_FROM)
    .union(EventMask::CREATE)
    .union(EventMask::DELETE);

/// Which file `path` opens now, symlinks followed, and its last change: `None` if none.
fn identity(path: &Path) -> Option<(u64, u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// A running watch; dropping it stops the task.
pub struct ConfigWatch {
    task: tokio::task::JoinHandle<()>,
    events: Arc<AtomicU64>,
}

impl ConfigWatch {
    /// Events the kernel delivered so far, about any file of the directory.
    pub fn events_seen(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `path` on the current tokio runtime; each change to it sends `"file
/// change"` on `reload`. `Err` (with what failed) when inotify cannot be set up, e.g. when the
/// directory does not exist or the user's inotify limits are reached.
pub fn watch(path: &Path, reload: UnboundedSender<&'static str>) -> Result<ConfigWatch, String> {
    let name =
        path.file_name().ok_or_else(|| format!("{}: not a file name", path.display()))?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let inotify = Inotify::init().map_err(|e| format!("inotify: {e}"))?;
    inotify
        .watches()
        .add(&dir, CHANGES | WatchMask::ONLYDIR)
        .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    let mut stream = inotify.into_event_stream([0u8; 4096]).map_err(|e| format!("inotify: {e}"))?;
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    let path = path.to_path_buf();
    let mut last = identity(&path);
    let task = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "config watch stopped");
                    return;
                }
            };
            seen.fetch_add(1, Ordering::Relaxed);
            // An overflowed queue may have lost the event that named the file. An entry of the
            // directory that came or went under another name may be a link on the way to the
            // file (Kubernetes swaps a `..data` link): then what the path opens may have
            // changed, which its identity tells.
            let named = event.name.as_deref() == Some(name.as_os_str());
            let ours = named
                || event.mask.contains(EventMask::Q_OVERFLOW)
                || (event.mask.intersects(RELINKED) && identity(&path) != last);
            if ours {
                last = identity(&path);
                if reload.send("file change").is_err() {
                    return;
                }
            }
            if event.mask.contains(EventMask::IGNORED) {
                tracing::warn!(dir = %dir.display(), "config directory gone: watch stopped");
                return;
            }
        }
    });
    Ok(ConfigWatch { task, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spillway-watch-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A directory with a config file in it, watched.
    fn watched(
        tag: &str,
    ) -> (PathBuf, PathBuf, mpsc::UnboundedReceiver<&'static str>, ConfigWatch) {
        let dir = temp_dir(tag);
        let config = dir.join("spillway.yaml");
        std::fs::write(&config, "workers: 1\n").unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = watch(&config, tx).unwrap();
        (dir, config, rx, watch)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<&'static str>) -> Option<&'static str> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn writes_to_other_files_are_not_delivered_and_a_replaced_file_is_seen() {
        let (dir, config, mut rx, watch) = watched("siblings");

        // Two logs next to the config, open and written many times: no event per write. (Taking
        // turns, so that the kernel could not merge the events of successive writes.)
        let mut logs = ["a.log", "b.log"].map(|n| std::fs::File::create(dir.join(n)).unwrap());
        for i in 0..1000 {
            writeln!(logs[i % 2], "line {i}").unwrap();
        }
        // An editor's save: written to a temporary file, renamed over the config.
        let tmp = dir.join(".spillway.yaml.swp");
        std::fs::write(&tmp, "workers: 2\n").unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        assert_eq!(next(&mut rx).await, Some("file change"));
        // The logs' creations, the temporary file's creation, close and rename away, and the
        // config's arrival: a handful, not a thousand.
        let seen = watch.events_seen();
        assert!(seen <= 8, "{seen} events for 1000 writes to sibling files");
        drop(logs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_written_in_place_is_seen_once_closed() {
        let (dir, config, mut rx, _watch) = watched("in-place");
        let mut file =
            std::fs::OpenOptions::new().write(true).truncate(true).open(&config).unwrap();
        file.write_all(b"workers: ").unwrap();
        file.write_all(b"2\n").unwrap();
        file.sync_all().unwrap();
        // Nothing yet: the writer has not closed it.
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err());
        drop(file);
        assert_eq!(next(&mut rx).await, Some("file change"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_swapped_link_on_the_way_to_the_file_is_seen() {
        // Kubernetes' ConfigMap volume: spillway.yaml -> ..data/spillway.yaml, and an update
        // renames a new `..data` link over the old one; nothing named spillway.yaml changes.
        let dir = temp_dir("relinked");
        for (version, workers) in [("..v1", 1), ("..v2", 2)] {
            std::fs::create_dir(dir.join(version)).unwrap();
            std::fs::write(
                dir.join(version).join("spillway.yaml"),
                format!("workers: {workers}\n"),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/spillway.yaml", dir.join("spillway.yaml")).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watch = watch(&dir.join("spillway.yaml"), tx).unwrap();
        // Another file coming and going is not a change.
        std::fs::write(dir.join("other.log"), "x").unwrap();
        std::fs::remove_file(dir.join("other.log")).unwrap();
        std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_eq!(next(&mut rx).await, Some("file change"));
        assert!(rx.try_recv().is_err(), "one change, one reload request");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let err = watch(Path::new("/nonexistent-spillway-dir/spillway.yaml"), tx).err().unwrap();
        assert!(err.contains("/nonexistent-spillway-dir"), "{err}");
    }
}
