//! A durable on-disk retry queue for the gateway's failback strategy: a non-urgent write
//! whose upstream failed is appended here (and synced) before the client gets 202 with its
//! id, then retried in the background until the upstream takes it or it expires.
//!
//! This first part holds the vocabulary and the on-disk format: entries and their ids, the
//! config, the errors, record framing and segment files. The queue itself follows.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// The format functions are used by the queue, which lands in the next commit.
#![allow(dead_code)]

mod config;
mod entry;
mod error;
mod record;
mod segment;

pub use config::SpoolConfig;
pub use entry::{DueEntry, Entry, EntryId, ParseEntryIdError, PendingInfo};
pub use error::SpoolError;
