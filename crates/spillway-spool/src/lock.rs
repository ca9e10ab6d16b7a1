//! The directory lock: an exclusive `flock` on `<dir>/LOCK`, so two gateways (or two spools
//! in one process) never write one spool directory at the same time.
//!
//! The kernel drops the lock when the process dies, `kill -9` included, so a crash never
//! leaves a stale lock behind (a lock file made with `create_new` would).

use crate::error::SpoolError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the spool directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Holds the lock until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir` without waiting, and writes this process's id into the lock
    /// file for whoever finds the directory busy.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, SpoolError> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(SpoolError::io(&path, "open the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked { dir: dir.to_path_buf() })
            }
            Err(TryLockError::Error(e)) => {
                return Err(SpoolError::io(&path, "lock the lock file")(e));
            }
        }
        // Informational only: a failure here does not weaken the lock.
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file })
    }
}
