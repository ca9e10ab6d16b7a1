//! The compaction policy: given the oldest segment's usage, delete it, copy its live entries
//! forward and delete it, or leave it. A pure function, so the policy is tested on numbers.
//!
//! Segments are only ever deleted oldest first. That keeps replay simple and safe: a
//! delivered, expired or attempt record always sits in the same segment as its entry or a
//! later one, so deleting the oldest segment can never bring a delivered entry back.

use crate::segment::SEGMENT_HEADER;

/// How full the oldest segment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    /// File length, header included.
    pub(crate) len: u64,
    /// Pending entries whose record is in this segment.
    pub(crate) live: u64,
    /// Bytes of this segment's records still needed.
    pub(crate) live_bytes: u64,
}

/// Why compaction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Goal {
    /// After `delivered` / `expire`, or on request: free what is cheap to free.
    Housekeeping,
    /// An append does not fit; `relocate` says whether copying live entries forward can free
    /// enough (the caller checked the total garbage), so compaction never churns in vain.
    Room { relocate: bool },
}

/// What to do with the oldest segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Delete it: nothing in it is needed.
    Delete,
    /// Copy its live entries into the active segment, then delete it. For the active segment
    /// itself this starts a new active segment first.
    Relocate,
    /// Leave it.
    Stop,
}

/// The policy. `segment_bytes` is the configured rotation size.
pub(crate) fn plan(usage: Usage, is_active: bool, goal: Goal, segment_bytes: u64) -> Step {
    let body = usage.len.saturating_sub(SEGMENT_HEADER);
    let garbage = body.saturating_sub(usage.live_bytes);
    match (is_active, goal) {
        (false, _) if usage.live == 0 && usage.live_bytes == 0 => Step::Delete,
        // Only the latest attempt records of entries that live elsewhere: rewrite them.
        (false, _) if usage.live == 0 => Step::Relocate,
        // A segment at least half garbage, pinned by a few long-lived entries: copying them
        // forward costs less than the space it frees.
        (false, Goal::Housekeeping) if usage.live_bytes <= garbage => Step::Relocate,
        // Making room: the garbage may sit in a later segment, and segments go oldest first,
        // so even a segment without garbage is copied forward (the caller checked that the
        // garbage on disk covers the room needed).
        (false, Goal::Room { relocate: true }) => Step::Relocate,
        // The active segment is everything delivered and large: start a fresh one so its
        // bytes are freed (otherwise a spool with one segment never shrinks).
        (true, Goal::Housekeeping) if usage.live == 0 && body >= segment_bytes / 2 => {
            Step::Relocate
        }
        (true, Goal::Room { relocate: true }) if garbage > SEGMENT_HEADER => Step::Relocate,
        _ => Step::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1000;

    fn usage(len: u64, live: u64, live_bytes: u64) -> Usage {
        Usage { len, live, live_bytes }
    }

    #[test]
    fn fully_resolved_old_segment_is_deleted_whatever_the_goal() {
        for goal in [Goal::Housekeeping, Goal::Room { relocate: false }] {
            assert_eq!(plan(usage(SEG, 0, 0), false, goal, SEG), Step::Delete);
        }
    }

    #[test]
    fn old_segment_holding_only_attempt_records_of_live_entries_is_relocated() {
        assert_eq!(plan(usage(SEG, 0, 33), false, Goal::Housekeeping, SEG), Step::Relocate);
        assert_eq!(
            plan(usage(SEG, 0, 33), false, Goal::Room { relocate: false }, SEG),
            Step::Relocate
        );
    }

    #[test]
    fn mostly_dead_old_segment_is_relocated_mostly_live_one_kept() {
        let h = SEGMENT_HEADER;
        assert_eq!(plan(usage(h + 1000, 1, 400), false, Goal::Housekeeping, SEG), Step::Relocate);
        assert_eq!(plan(usage(h + 1000, 1, 500), false, Goal::Housekeeping, SEG), Step::Relocate);
        assert_eq!(plan(usage(h + 1000, 9, 501), false, Goal::Housekeeping, SEG), Step::Stop);
    }

    #[test]
    fn room_relocates_every_old_segment_only_when_allowed() {
        let h = SEGMENT_HEADER;
        let u = usage(h + 1000, 9, 900);
        assert_eq!(plan(u, false, Goal::Room { relocate: true }, SEG), Step::Relocate);
        assert_eq!(plan(u, false, Goal::Room { relocate: false }, SEG), Step::Stop);
        // No garbage of its own, but it stands before segments that have some.
        assert_eq!(
            plan(usage(h + 1000, 9, 1000), false, Goal::Room { relocate: true }, SEG),
            Step::Relocate
        );
    }

    #[test]
    fn active_segment_is_renewed_when_drained_and_large_never_deleted() {
        let h = SEGMENT_HEADER;
        assert_eq!(plan(usage(h + 600, 0, 0), true, Goal::Housekeeping, SEG), Step::Relocate);
        assert_eq!(plan(usage(h + 100, 0, 0), true, Goal::Housekeeping, SEG), Step::Stop);
        assert_eq!(plan(usage(h, 0, 0), true, Goal::Room { relocate: true }, SEG), Step::Stop);
        assert_eq!(plan(usage(h + 600, 2, 100), true, Goal::Housekeeping, SEG), Step::Stop);
        assert_eq!(
            plan(usage(h + 600, 2, 100), true, Goal::Room { relocate: true }, SEG),
            Step::Relocate
        );
    }
}
