//! Recovery at open: torn tails, damaged records and foreign files are survived without a
//! panic and without losing any entry before the damage.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use spillway_spool::{EntryId, Spool, SpoolError};
use std::fs;

/// Appends `n` entries (100-byte bodies) to a fresh spool in `dir` and returns their ids and
/// the segment file's length before each append (where each record starts).
fn fill_one_segment(dir: &std::path::Path, n: u64) -> (Vec<EntryId>, Vec<u64>) {
    let mut spool = Spool::open(small_config(dir, 1 << 20, 1 << 22), T0).unwrap();
    let mut ids = Vec::new();
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(spool.stats(T0).bytes_on_disk);
        ids.push(spool.append(&entry_sized(i, 100, T0), T0).unwrap());
    }
    assert_eq!(segment_files(dir).len(), 1);
    (ids, starts)
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record_keeps_the_earlier_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, starts) = fill_one_segment(dir.path(), 4);
    let path = segment_files(dir.path()).remove(0);
    let whole = fs::read(&path).unwrap();
    let last_start = starts[3] as usize;
    for cut in last_start..whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let mut spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
        assert_eq!(pending_ids(&spool), ids[..3], "cut at {cut}");
        for (i, id) in ids[..3].iter().enumerate() {
            assert_eq!(spool.get(*id).unwrap(), Some(entry_sized(i as u64, 100, T0)));
        }
        let stats = spool.stats(T0);
        let torn = u64::from(cut > last_start);
        assert_eq!(stats.corrupt_records_at_open, torn, "cut at {cut}");
        assert_eq!(stats.corrupt_bytes_at_open, (cut - last_start) as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), last_start as u64, "torn end cut off");
        // New records follow whole ones: a fresh append reads back after a clean reopen. (Its
        // id may be the torn record's: that append never returned, so nobody holds the id.)
        let id = spool.append(&entry(77), T0).unwrap();
        assert!(id > ids[2]);
        drop(spool);
        let spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
        assert_eq!(spool.stats(T0).corrupt_records_at_open, 0);
        assert_eq!(spool.get(id).unwrap(), Some(entry(77)));
        drop(spool);
        // Back to the torn state for the next cut.
        fs::write(&path, &whole[..cut]).unwrap();
    }
}

#[test]
fn torn_delivered_record_brings_the_entry_back_at_least_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1 << 20, 1 << 22);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let a = spool.append(&entry(1), T0).unwrap();
    let before_ack = spool.stats(T0).bytes_on_disk;
    spool.delivered(a).unwrap();
    drop(spool);
    let path = segment_files(dir.path()).remove(0);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..before_ack as usize + 5]).unwrap();
    let spool = Spool::open(config, T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![a]);
}

#[test]
fn damaged_byte_inside_a_record_skips_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, starts) = fill_one_segment(dir.path(), 5);
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&path).unwrap();
    bytes[starts[2] as usize + 100] ^= 0x20; // in the body of the third entry
    fs::write(&path, &bytes).unwrap();

    let spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![ids[0], ids[1], ids[3], ids[4]]);
    assert_eq!(spool.get(ids[4]).unwrap(), Some(entry_sized(4, 100, T0)));
    let stats = spool.stats(T0);
    assert_eq!(stats.corrupt_records_at_open, 1);
    assert_eq!(fs::metadata(&path).unwrap().len(), bytes.len() as u64, "nothing cut");
}

#[test]
fn damaged_length_loses_the_rest_of_its_segment_but_no_earlier_or_later_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let ids: Vec<EntryId> =
        (0..12).map(|i| spool.append(&entry_sized(i, 100, T0), T0).unwrap()).collect();
    drop(spool);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // Second record of the first segment: its length field (after the 28-byte header, a
    // first record, and the 8-byte checksum).
    let mut bytes = fs::read(&files[0]).unwrap();
    let first_len = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize + 13;
    let second = 28 + first_len;
    bytes[second + 8..second + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&files[0], &bytes).unwrap();

    let spool = Spool::open(config, T0).unwrap();
    let pending = pending_ids(&spool);
    assert_eq!(pending[0], ids[0], "the entry before the damage is kept");
    assert!(!pending.contains(&ids[1]));
    assert_eq!(pending.last(), Some(&ids[11]), "later segments are intact");
    assert_eq!(spool.get(ids[0]).unwrap(), Some(entry_sized(0, 100, T0)));
    assert_eq!(spool.get(ids[11]).unwrap(), Some(entry_sized(11, 100, T0)));
    assert_eq!(spool.stats(T0).corrupt_records_at_open, 1);
}

#[test]
fn zeros_after_the_last_record_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = fill_one_segment(dir.path(), 2);
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&path).unwrap();
    let whole = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, &bytes).unwrap();
    let spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
    assert_eq!(pending_ids(&spool), ids);
    assert_eq!(spool.stats(T0).corrupt_bytes_at_open, 4096);
    assert_eq!(fs::metadata(&path).unwrap().len(), whole);
}

#[test]
fn segment_created_but_torn_before_its_header_was_whole_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = fill_one_segment(dir.path(), 2);
    let torn = dir.path().join("00000009.spool");
    fs::write(&torn, b"SPWSP").unwrap();
    let mut spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
    assert_eq!(pending_ids(&spool), ids);
    assert!(!torn.exists());
    let id = spool.append(&entry(5), T0).unwrap();
    assert!(id > ids[1]);
}

#[test]
fn damaged_segment_header_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = fill_one_segment(dir.path(), 3);
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&path).unwrap();
    bytes[15] ^= 0xff; // inside first_id
    fs::write(&path, &bytes).unwrap();
    let mut spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
    assert_eq!(pending_ids(&spool), ids);
    assert_eq!(spool.stats(T0).corrupt_records_at_open, 1);
    assert!(spool.append(&entry(9), T0).unwrap() > ids[2]);
}

#[test]
fn foreign_file_with_a_segment_name_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fill_one_segment(dir.path(), 1);
    let foreign = dir.path().join("00000005.spool");
    fs::write(&foreign, vec![b'x'; 100]).unwrap();
    let err = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap_err();
    assert!(
        matches!(&err, SpoolError::Corrupt { path, offset: 0, .. } if *path == foreign),
        "{err}"
    );
    assert!(err.to_string().contains("00000005.spool"), "{err}");
}

#[test]
fn other_files_in_the_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, _) = fill_one_segment(dir.path(), 2);
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    fs::write(dir.path().join("00000001.spool.bak"), b"hello").unwrap();
    let spool = Spool::open(small_config(dir.path(), 1 << 20, 1 << 22), T0).unwrap();
    assert_eq!(pending_ids(&spool), ids);
}

#[test]
fn entry_damaged_after_open_is_discarded_and_counted_not_stalling_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1 << 20, 1 << 22);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let mut starts = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        starts.push(spool.stats(T0).bytes_on_disk);
        ids.push(spool.append(&entry_sized(i, 100, T0), T0).unwrap());
    }
    // The disk changes under the open spool.
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&path).unwrap();
    bytes[starts[1] as usize + 90] ^= 1;
    fs::write(&path, &bytes).unwrap();

    assert!(matches!(spool.get(ids[1]), Err(SpoolError::Corrupt { .. })));
    let due: Vec<EntryId> = spool.due(T0, 10).unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(due, vec![ids[0], ids[2]]);
    assert_eq!(spool.stats(T0).discarded_unreadable, 1);
    assert_eq!(pending_ids(&spool), vec![ids[0], ids[2]]);
    drop(spool);
    let spool = Spool::open(config, T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![ids[0], ids[2]]);
}

#[test]
fn crash_between_copying_an_entry_forward_and_deleting_its_old_segment_folds_the_copies() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    // Four entries fill segment 1; the fifth starts segment 2. Segment 1 never changes again.
    let pinned = spool.append(&entry_sized(0, 100, T0), T0).unwrap();
    let others: Vec<EntryId> =
        (1..4).map(|i| spool.append(&entry_sized(i, 100, T0), T0).unwrap()).collect();
    let last = spool.append(&entry_sized(4, 100, T0), T0).unwrap();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    let old_segment = fs::read(&files[0]).unwrap();

    spool.failed(pinned, T0 + 5_000).unwrap();
    for id in &others {
        spool.delivered(*id).unwrap();
    }
    assert!(!files[0].exists(), "the pinned entry was copied forward and segment 1 deleted");
    assert!(spool.stats(T0).entries_relocated >= 1);
    drop(spool);

    // The crash: segment 1's deletion never reached the disk.
    fs::write(&files[0], &old_segment).unwrap();
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![pinned, last]);
    let info = spool.pending().next().unwrap();
    assert_eq!((info.attempts, info.next_attempt_unix_ms), (1, T0 + 5_000));
    assert_eq!(spool.get(pinned).unwrap(), Some(entry_sized(0, 100, T0)));
    assert_eq!(spool.stats(T0).corrupt_records_at_open, 0);
    assert!(!files[0].exists(), "open deletes the resurrected segment again");

    spool.delivered(pinned).unwrap();
    drop(spool);
    let spool = Spool::open(config, T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![last], "both copies are resolved by one delivery");
}
