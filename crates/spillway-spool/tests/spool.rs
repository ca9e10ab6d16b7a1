//! The spool's behaviour through its public API: append, hand out, acknowledge, retry,
//! expire, refuse when full, compact, reopen, lock.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use spillway_spool::{EntryId, Spool, SpoolConfig, SpoolError};

#[test]
fn append_due_delivered_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(SpoolConfig::new(dir.path()), T0).unwrap();
    let a = spool.append(&entry(1), T0).unwrap();
    let b = spool.append(&entry(2), T0).unwrap();
    assert!(a < b);

    let due = spool.due(T0, 10).unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!((due[0].id, due[0].attempts, &due[0].entry), (a, 0, &entry(1)));
    assert_eq!((due[1].id, &due[1].entry), (b, &entry(2)));

    spool.delivered(a).unwrap();
    let due = spool.due(T0, 10).unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![b]);
    assert!(spool.get(a).unwrap().is_none());
    assert_eq!(spool.get(b).unwrap(), Some(entry(2)));

    let stats = spool.stats(T0 + 5);
    assert_eq!((stats.depth, stats.appended, stats.delivered), (1, 2, 1));
    assert_eq!(stats.oldest_age_ms, Some(5));
}

#[test]
fn due_respects_limit_and_hands_out_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(SpoolConfig::new(dir.path()), T0).unwrap();
    let ids: Vec<EntryId> = (0..5).map(|i| spool.append(&entry(i), T0).unwrap()).collect();
    let due: Vec<EntryId> = spool.due(T0, 3).unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(due, ids[..3]);
    assert!(spool.due(T0, 0).unwrap().is_empty());
}

#[test]
fn delivered_twice_or_unknown_is_not_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(SpoolConfig::new(dir.path()), T0).unwrap();
    let a = spool.append(&entry(1), T0).unwrap();
    spool.delivered(a).unwrap();
    assert!(matches!(spool.delivered(a), Err(SpoolError::NotPending { id }) if id == a));
    let unknown = EntryId::from_raw(999);
    assert!(matches!(spool.failed(unknown, T0), Err(SpoolError::NotPending { .. })));
}

#[test]
fn failed_counts_attempts_and_delays_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(SpoolConfig::new(dir.path()), T0).unwrap();
    let a = spool.append(&entry(1), T0).unwrap();
    let b = spool.append(&entry(2), T0).unwrap();
    assert_eq!(spool.failed(a, T0 + 1_000).unwrap(), 1);
    assert_eq!(spool.failed(a, T0 + 2_000).unwrap(), 2);
    assert_eq!(spool.next_due_unix_ms(), Some(T0));

    let due: Vec<EntryId> = spool.due(T0 + 1_999, 10).unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(due, vec![b], "a waits for its backoff");
    let due = spool.due(T0 + 2_000, 10).unwrap();
    assert_eq!(due[0].id, a);
    assert_eq!(due[0].attempts, 2);
    assert_eq!(spool.stats(T0).failed_attempts, 2);
}

#[test]
fn ids_are_unique_and_increase_across_reopens_even_after_everything_was_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 512, 64 * 1024);
    let mut last = None;
    for round in 0..4 {
        let mut spool = Spool::open(config.clone(), T0).unwrap();
        for i in 0..10 {
            let id = spool.append(&entry(round * 10 + i), T0).unwrap();
            assert!(Some(id) > last, "{id} after {last:?}");
            last = Some(id);
        }
        // Deliver everything: the segments that held these ids are deleted.
        for d in spool.due(T0, usize::MAX).unwrap() {
            spool.delivered(d.id).unwrap();
        }
        assert!(spool.is_empty());
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
}

#[test]
fn reopen_keeps_pending_entries_and_attempts_and_forgets_delivered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let ids: Vec<EntryId> = (0..20).map(|i| spool.append(&entry(i), T0).unwrap()).collect();
    for id in ids.iter().step_by(2) {
        spool.delivered(*id).unwrap();
    }
    spool.failed(ids[1], T0 + 60_000).unwrap();
    spool.failed(ids[1], T0 + 120_000).unwrap();
    drop(spool);

    let mut spool = Spool::open(config, T0).unwrap();
    let kept: Vec<EntryId> = ids.iter().copied().skip(1).step_by(2).collect();
    assert_eq!(pending_ids(&spool), kept);
    for (n, id) in kept.iter().enumerate() {
        assert_eq!(spool.get(*id).unwrap(), Some(entry(2 * n as u64 + 1)));
    }
    let info = spool.pending().next().unwrap();
    assert_eq!((info.attempts, info.next_attempt_unix_ms), (2, T0 + 120_000));
    let due: Vec<EntryId> = spool.due(T0, 100).unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(due, kept[1..], "the retried entry still waits for its backoff");
    assert_eq!(spool.stats(T0).corrupt_records_at_open, 0);
}

#[test]
fn expired_entries_are_never_handed_out_and_are_removed_durably() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let old = spool.append(&entry_sized(1, 10, T0 - DAY_MS), T0).unwrap();
    let young = spool.append(&entry_sized(2, 10, T0), T0).unwrap();

    // Past max_age but not yet expired: already not handed out.
    let due: Vec<EntryId> = spool.due(T0 + 1, 10).unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(due, vec![young]);
    // Exactly max_age old is not yet expired.
    assert_eq!(spool.expire(T0).unwrap(), 0);
    assert_eq!(spool.expire(T0 + 1).unwrap(), 1);
    assert_eq!(pending_ids(&spool), vec![young]);
    assert_eq!(spool.stats(T0).expired, 1);
    assert!(matches!(spool.delivered(old), Err(SpoolError::NotPending { .. })));
    drop(spool);

    let spool = Spool::open(config.clone(), T0 + 1).unwrap();
    assert_eq!(pending_ids(&spool), vec![young]);
    drop(spool);
    // Open expires what is past max_age by then.
    let spool = Spool::open(config, T0 + DAY_MS + 1).unwrap();
    assert!(spool.is_empty());
    assert_eq!(spool.stats(T0).expired, 1);
}

#[test]
fn full_spool_refuses_appends_keeps_everything_and_accepts_again_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 4096);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        match spool.append(&entry_sized(i, 100, T0), T0) {
            Ok(id) => accepted.push((id, i)),
            Err(e @ SpoolError::Full { .. }) => {
                assert!(e.is_full());
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(accepted.len() >= 10, "{} accepted", accepted.len());
    assert_eq!(refused, 100 - accepted.len());
    let stats = spool.stats(T0);
    assert!(stats.bytes_on_disk <= 4096, "{stats:?}");
    assert_eq!(stats.refused_full, refused as u64);
    drop(spool);

    // Nothing accepted was dropped.
    let mut spool = Spool::open(config, T0).unwrap();
    assert_eq!(pending_ids(&spool), accepted.iter().map(|a| a.0).collect::<Vec<_>>());
    for (id, i) in &accepted {
        assert_eq!(spool.get(*id).unwrap(), Some(entry_sized(*i, 100, T0)));
    }
    assert!(spool.append(&entry_sized(1000, 100, T0), T0).unwrap_err().is_full());

    // Delivering frees whole segments; appends fit again.
    for (id, _) in &accepted[..accepted.len() / 2] {
        spool.delivered(*id).unwrap();
    }
    spool.append(&entry_sized(1000, 100, T0), T0).unwrap();
}

#[test]
fn full_spool_with_one_segment_makes_room_once_its_entries_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 2048, 2048);
    let mut spool = Spool::open(config, T0).unwrap();
    let mut ids = Vec::new();
    while let Ok(id) = spool.append(&entry_sized(ids.len() as u64, 100, T0), T0) {
        ids.push(id);
    }
    let keep = ids.pop().unwrap();
    for id in ids {
        spool.delivered(id).unwrap();
    }
    // The one segment is mostly garbage: the append copies the survivor forward and fits.
    let new = spool.append(&entry_sized(99, 100, T0), T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![keep, new]);
    assert!(spool.stats(T0).bytes_on_disk <= 2048);
}

#[test]
fn entry_larger_than_the_spool_is_too_large_not_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(small_config(dir.path(), 1024, 4096), T0).unwrap();
    let err = spool.append(&entry_sized(1, 5000, T0), T0).unwrap_err();
    assert!(matches!(err, SpoolError::TooLarge { max_bytes: 4096, .. }), "{err}");
    // A record larger than a segment but within max_bytes gets a segment of its own.
    let big = spool.append(&entry_sized(2, 2000, T0), T0).unwrap();
    assert_eq!(spool.get(big).unwrap(), Some(entry_sized(2, 2000, T0)));
}

#[test]
fn compaction_deletes_fully_acknowledged_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config, T0).unwrap();
    let ids: Vec<EntryId> =
        (0..60).map(|i| spool.append(&entry_sized(i, 100, T0), T0).unwrap()).collect();
    let before = segment_files(dir.path()).len();
    assert!(before >= 6, "{before} segments");
    for id in &ids[..40] {
        spool.delivered(*id).unwrap();
    }
    let after = segment_files(dir.path()).len();
    assert!(after < before, "{after} segments after delivering, {before} before");
    let stats = spool.stats(T0);
    assert_eq!(stats.segments, after as u64);
    assert!(stats.segments_deleted >= (before - after) as u64);
    assert_eq!(pending_ids(&spool), ids[40..]);
    let on_disk: u64 = segment_files(dir.path()).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert_eq!(stats.bytes_on_disk, on_disk);
}

#[test]
fn a_long_lived_entry_does_not_pin_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let pinned = spool.append(&entry_sized(0, 100, T0), T0).unwrap();
    spool.failed(pinned, T0 + 3_600_000).unwrap();
    for i in 1..200 {
        let id = spool.append(&entry_sized(i, 100, T0), T0).unwrap();
        spool.delivered(id).unwrap();
    }
    let stats = spool.stats(T0);
    assert!(stats.segments <= 3, "{stats:?}");
    assert!(stats.entries_relocated >= 1, "{stats:?}");
    drop(spool);

    let spool = Spool::open(config, T0).unwrap();
    assert_eq!(pending_ids(&spool), vec![pinned]);
    let info = spool.pending().next().unwrap();
    assert_eq!((info.attempts, info.next_attempt_unix_ms), (1, T0 + 3_600_000));
    assert_eq!(spool.get(pinned).unwrap(), Some(entry_sized(0, 100, T0)));
}

#[test]
fn attempt_records_of_a_long_outage_do_not_grow_the_disk_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), 1024, 1 << 20);
    let mut spool = Spool::open(config.clone(), T0).unwrap();
    let ids: Vec<EntryId> =
        (0..20).map(|i| spool.append(&entry_sized(i, 100, T0), T0).unwrap()).collect();
    let mut now = T0;
    for _round in 0..100 {
        now += 1_000;
        for id in &ids {
            spool.failed(*id, now + 1_000).unwrap();
        }
        let stats = spool.stats(now);
        // Without compaction: 100 × 20 attempt records of 33 bytes, 66 000 bytes.
        assert!(stats.bytes_on_disk < 2 * stats.live_bytes + 4 * 1024, "{stats:?}");
    }
    assert!(spool.stats(now).entries_relocated > 0);
    drop(spool);
    let spool = Spool::open(config, now).unwrap();
    assert_eq!(pending_ids(&spool), ids);
    assert!(spool.pending().all(|p| p.attempts == 100 && p.next_attempt_unix_ms == now + 1_000));
}

#[test]
fn a_drained_active_segment_is_replaced_so_its_bytes_are_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(small_config(dir.path(), 4096, 1 << 20), T0).unwrap();
    // About 2.6 KiB: more than half a segment, less than a whole one.
    let ids: Vec<EntryId> =
        (0..12).map(|i| spool.append(&entry_sized(i, 100, T0), T0).unwrap()).collect();
    assert_eq!(segment_files(dir.path()).len(), 1);
    for id in ids {
        spool.delivered(id).unwrap();
    }
    let stats = spool.stats(T0);
    assert!(stats.bytes_on_disk < 1024, "{stats:?}");
    assert_eq!(stats.live_bytes, 0);
}

#[test]
fn second_open_of_one_directory_is_locked_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(SpoolConfig::new(dir.path()), T0).unwrap();
    let err = Spool::open(SpoolConfig::new(dir.path()), T0).unwrap_err();
    assert!(matches!(&err, SpoolError::Locked { dir: d } if d == dir.path()), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    spool.close().unwrap();
    Spool::open(SpoolConfig::new(dir.path()), T0).unwrap();
}

#[test]
fn invalid_config_is_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SpoolConfig::new(dir.path().join("never"));
    config.segment_bytes = 10;
    assert!(matches!(Spool::open(config, T0), Err(SpoolError::InvalidConfig(_))));
    assert!(!dir.path().join("never").exists());
}

#[test]
fn spool_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Spool>();
}
