//! The active degradation plans on disk (`STATE_DIR/plans.json`), so that a plan switched on
//! through the admin API is still on after a restart.
//!
//! Why a file of its own: the config says which plans exist, the operator says at run time
//! which are on; only the second is state. It is written atomically (a temporary file in the
//! same directory, fsync, rename, fsync of the directory), so a crash leaves either the old
//! or the new file, never half of one. Reading never panics: a missing file is "no plan on",
//! a damaged one is an error value the gateway logs before starting with no plan on.
//!
//! ```
//! use std::collections::BTreeSet;
//! use spillway_gateway::plans_state;
//!
//! let dir = std::env::temp_dir().join(format!("spillway-doc-plans-{}", std::process::id()));
//! plans_state::prepare_dir(&dir).unwrap();
//! let active: BTreeSet<String> = ["peak-day".to_string()].into();
//! plans_state::save(&dir, &active, std::time::SystemTime::now()).unwrap();
//! assert_eq!(plans_state::load(&dir).unwrap().unwrap().active, active);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use crate::config::PlanConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// The file's name inside `state_dir`.
pub const FILE_NAME: &str = "plans.json";

/// The contents of `plans.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlansFile {
    /// Names of the plans switched on (names no longer in the config included).
    pub active: BTreeSet<String>,
    /// When the last switch was written, in milliseconds since the Unix epoch (0 if absent).
    #[serde(default)]
    pub changed_at_unix_ms: u64,
}

/// Why the plans state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PlansStateError {
    /// The directory could not be created or written.
    #[error("cannot create or write directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a plans state file.
    #[error("{}: not a plans state file ({{\"active\": [names]}}): {source}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What is wrong with its contents.
        source: serde_json::Error,
    },
    /// The file could not be written (the previous one, if any, is left as it was).
    #[error("{}: cannot write: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The state file inside `dir`.
pub fn file_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// A name for a temporary file in `dir` that no other writer in this process or another
/// process uses at the same time.
fn temp_path(dir: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(".{FILE_NAME}.{what}.{}.{}", std::process::id(), NEXT.fetch_add(1, Relaxed)))
}

/// Creates `dir` if it is missing and checks that a file can be written in it (at start and
/// when a reload changes `state_dir`), so that the first switch does not find out.
pub fn prepare_dir(dir: &Path) -> Result<(), PlansStateError> {
    let fail = |source| PlansStateError::Dir { dir: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = temp_path(dir, "probe");
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Reads `dir/plans.json`: `None` when there is none (no plan was ever switched there).
pub fn load(dir: &Path) -> Result<Option<PlansFile>, PlansStateError> {
    let file = file_path(dir);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PlansStateError::Read { file, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PlansStateError::Parse { file, source })
}

/// Replaces `dir/plans.json` atomically with `active`, stamped `changed_at`; returns the file.
/// On error no temporary file is left behind and the previous file is untouched (unless only
/// the last step, flushing the directory, failed: then the new file is in place but might not
/// survive a power loss, and the error says the write is not to be relied on).
pub fn save(
    dir: &Path,
    active: &BTreeSet<String>,
    changed_at: SystemTime,
) -> Result<PathBuf, PlansStateError> {
    let file = file_path(dir);
    let changed_at_unix_ms = changed_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let doc = PlansFile { active: active.clone(), changed_at_unix_ms };
    match write_atomically(dir, &file, &doc) {
        Ok(()) => Ok(file),
        Err(source) => Err(PlansStateError::Write { file, source }),
    }
}

/// Writes `doc` to a temporary file in `dir`, flushed, then renames it over `file` and
/// flushes the directory; removes the temporary file if any step before the rename fails.
fn write_atomically(dir: &Path, file: &Path, doc: &PlansFile) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
    text.push(b'\n');
    // The directory may have been removed since start: recreate it rather than fail.
    std::fs::create_dir_all(dir)?;
    let temp = temp_path(dir, "tmp");
    if let Err(e) = replace(&temp, file, &text) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is on disk.
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `temp`, flushes them to disk and renames `temp` over `file`.
fn replace(temp: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(temp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(temp, file)
}

/// The active plans to start with from `dir`, logged: what the file holds (names of plans
/// that `plans` no longer has are kept, so they stay in the file, and warned about; they do
/// nothing), or none when there is no file or it cannot be used (an error naming the file and
/// why; the file is left alone until the next switch overwrites it).
pub fn restore(dir: &Path, plans: &[PlanConfig]) -> BTreeSet<String> {
    let file = file_path(dir);
    match load(dir) {
        Ok(None) => BTreeSet::new(),
        Ok(Some(state)) => {
            let unknown: Vec<&str> = state
                .active
                .iter()
                .filter(|name| !plans.iter().any(|p| &p.name == *name))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(
                    file = %file.display(),
                    plans = ?unknown,
                    "active plans in the state file are not in the config: ignored (kept in the file)"
                );
            }
            if !state.active.is_empty() {
                tracing::warn!(file = %file.display(), active = ?state.active, "degradation plans restored");
            }
            state.active
        }
        Err(e) => {
            tracing::error!(
                file = %file.display(),
                error = %e,
                "plans state unusable: starting with no active plan; the file is overwritten at the next plan switch"
            );
            BTreeSet::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fresh empty directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "spillway-plans-state-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Every file name in the directory.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn plan(name: &str) -> PlanConfig {
        PlanConfig { name: name.to_string(), actions: Vec::new() }
    }

    fn at_ms(ms: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_millis(ms)
    }

    #[test]
    fn saved_plans_load_back_with_their_time() {
        let dir = TempDir::new("round-trip");
        let file = save(&dir.0, &set(&["peak-day", "no-recs"]), at_ms(1_700_000_000_123)).unwrap();
        assert_eq!(file, dir.0.join("plans.json"));
        let state = load(&dir.0).unwrap().unwrap();
        assert_eq!(state.active, set(&["no-recs", "peak-day"]));
        assert_eq!(state.changed_at_unix_ms, 1_700_000_000_123);
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["active"], serde_json::json!(["no-recs", "peak-day"]));
    }

    #[test]
    fn a_save_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = TempDir::new("replace");
        save(&dir.0, &set(&["a", "b"]), at_ms(1)).unwrap();
        save(&dir.0, &set(&[]), at_ms(2)).unwrap();
        assert_eq!(dir.names(), vec!["plans.json".to_string()]);
        assert_eq!(
            load(&dir.0).unwrap().unwrap(),
            PlansFile { active: set(&[]), changed_at_unix_ms: 2 }
        );
    }

    #[test]
    fn a_failed_save_names_the_file_leaves_what_was_there_and_no_temporary_file() {
        let dir = TempDir::new("failed");
        // A non-empty directory where the file should go: the rename over it fails.
        std::fs::create_dir(file_path(&dir.0)).unwrap();
        std::fs::write(file_path(&dir.0).join("keep"), b"x").unwrap();
        let err = save(&dir.0, &set(&["new"]), at_ms(2)).unwrap_err();
        assert!(matches!(err, PlansStateError::Write { .. }), "{err}");
        assert!(err.to_string().contains(&file_path(&dir.0).display().to_string()), "{err}");
        assert_eq!(dir.names(), vec!["plans.json".to_string()]);
        assert_eq!(std::fs::read(file_path(&dir.0).join("keep")).unwrap(), b"x");
    }

    #[test]
    fn a_missing_file_is_no_active_plan() {
        let dir = TempDir::new("missing");
        assert_eq!(load(&dir.0).unwrap(), None);
        assert_eq!(restore(&dir.0, &[plan("peak-day")]), set(&[]));
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it_and_restores_nothing_and_stays() {
        let dir = TempDir::new("corrupt");
        for garbage in ["", "{\"active\": ", "[1, 2]", "{\"active\": [3]}", "\u{0}\u{1}"] {
            std::fs::write(file_path(&dir.0), garbage).unwrap();
            let err = load(&dir.0).unwrap_err();
            assert!(matches!(err, PlansStateError::Parse { .. }), "{garbage:?}: {err}");
            assert!(err.to_string().contains(&file_path(&dir.0).display().to_string()), "{err}");
            assert_eq!(restore(&dir.0, &[plan("peak-day")]), set(&[]));
            assert_eq!(std::fs::read_to_string(file_path(&dir.0)).unwrap(), garbage);
        }
    }

    #[test]
    fn an_unreadable_file_is_a_read_error() {
        let dir = TempDir::new("unreadable");
        std::fs::create_dir(file_path(&dir.0)).unwrap();
        assert!(matches!(load(&dir.0), Err(PlansStateError::Read { .. })));
        assert_eq!(restore(&dir.0, &[]), set(&[]));
    }

    #[test]
    fn plans_gone_from_the_config_are_restored_but_stay_in_the_file_at_the_next_save() {
        let dir = TempDir::new("unknown");
        save(&dir.0, &set(&["gone", "peak-day"]), at_ms(1)).unwrap();
        let mut active = restore(&dir.0, &[plan("peak-day")]);
        assert_eq!(active, set(&["gone", "peak-day"]));
        active.remove("peak-day");
        save(&dir.0, &active, at_ms(2)).unwrap();
        assert_eq!(load(&dir.0).unwrap().unwrap().active, set(&["gone"]));
    }

    #[test]
    fn prepare_creates_missing_directories_and_refuses_a_file() {
        let root = TempDir::new("prepare");
        let nested = root.0.join("a").join("b");
        prepare_dir(&nested).unwrap();
        assert!(nested.is_dir());
        assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 0, "the probe is removed");
        let file = root.0.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_dir(&file.join("sub")).unwrap_err();
        assert!(matches!(err, PlansStateError::Dir { .. }), "{err}");
        assert!(err.to_string().contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn a_file_without_a_time_still_loads() {
        let dir = TempDir::new("no-time");
        std::fs::write(file_path(&dir.0), "{\"active\": [\"peak-day\"]}").unwrap();
        assert_eq!(load(&dir.0).unwrap().unwrap().active, set(&["peak-day"]));
    }
}
