// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn batch(base: i64, last: i64) -> FetchedBatch {
    FetchedBatch {
        base_offset: base,
        last_offset: last,
        control: false,
        present: None,
    }
}

fn member(id: &str) -> Arc<str> {
    Arc::from(id)
}

fn ack(first: i64, last: i64, t: AckType) -> AckBatch {
    AckBatch {
        first_offset: first,
        last_offset: last,
        types: vec![t],
    }
}

fn range(first: i64, last: i64, delivery_count: u16) -> AcquiredRange {
    AcquiredRange {
        first_offset: first,
        last_offset: last,
        delivery_count,
    }
}

fn settings() -> ShareSettings {
    ShareSettings {
        record_lock_duration_ms: 1_000,
        delivery_count_limit: 3,
        max_record_locks: 10,
        redelivery_backoff_ms: Vec::new(),
    }
}

#[test]
fn two_members_acquire_distinct_records_and_together_all() {
    let s = settings();
    let mut p = SharePartition::new(0);
    let (a, b) = (member("a"), member("b"));
    assert_eq!(p.next_fetch_offset(0, &s), Some(0));
    let got_a = p.acquire(&a, &[batch(0, 4), batch(5, 9)], 4, 0, &s);
    assert_eq!(got_a.ranges, [range(0, 3, 1)]);
    // The second member reads from where the first stopped.
    assert_eq!(p.next_fetch_offset(0, &s), Some(4));
    let got_b = p.acquire(&b, &[batch(0, 4), batch(5, 9)], 100, 0, &s);
    assert_eq!(got_b.ranges, [range(4, 9, 1)]);
    assert_eq!(got_a.records + got_b.records, 10);
    // The window is full: nothing more until the start offset moves.
    assert_eq!(p.next_fetch_offset(0, &s), None);
    let changes = p
        .acknowledge("a", &[ack(0, 3, AckType::Accept)], 1, &s)
        .unwrap();
    assert!(changes.persist && changes.dead_letters.is_empty());
    assert_eq!(p.start_offset(), 4);
    assert_eq!(p.next_fetch_offset(1, &s), Some(10));
}

#[test]
fn an_expired_lock_releases_the_record_with_its_delivery_count_kept() {
    let s = settings();
    let mut p = SharePartition::new(0);
    let a = member("a");
    p.acquire(&a, &[batch(0, 1)], 10, 0, &s);
    assert_eq!(p.next_deadline_ms(), Some(1_000));
    assert_eq!(p.expire_locks(999, &s), Changes::default());
    let changes = p.expire_locks(1_000, &s);
    assert!(changes.persist);
    assert_eq!(p.acquired_count(), 0);
    // Acknowledging after expiry is refused: the record is not held.
    assert_eq!(
        p.acknowledge("a", &[ack(0, 0, AckType::Accept)], 1_001, &s),
        Err(ResponseError::InvalidRecordState)
    );
    let again = p.acquire(&member("b"), &[batch(0, 1)], 10, 1_001, &s);
    assert_eq!(again.ranges, [range(0, 1, 2)]);
}

#[test]
fn acknowledgements_for_records_not_held_change_nothing() {
    let s = settings();
    let mut p = SharePartition::new(0);
    p.acquire(&member("a"), &[batch(0, 3)], 2, 0, &s);
    let before = p.clone().persisted();
    // Held by another member; past the end offset; one bad offset in a
    // batch whose other offsets are fine.
    for bad in [
        vec![ack(0, 0, AckType::Accept)],
        vec![ack(5, 5, AckType::Accept)],
        vec![ack(1, 2, AckType::Accept)],
    ] {
        let who = if bad[0].first_offset == 0 { "b" } else { "a" };
        assert_eq!(
            p.acknowledge(who, &bad, 0, &s),
            Err(ResponseError::InvalidRecordState),
            "{bad:?}"
        );
    }
    assert_eq!(p.persisted(), before);
    assert_eq!(p.acquired_count(), 2);
    // Malformed: types neither one nor one per offset; last before first.
    let malformed = AckBatch {
        first_offset: 0,
        last_offset: 1,
        types: vec![AckType::Accept; 3],
    };
    assert_eq!(
        p.acknowledge("a", &[malformed], 0, &s),
        Err(ResponseError::InvalidRequest)
    );
    assert_eq!(
        p.acknowledge("a", &[ack(1, 0, AckType::Accept)], 0, &s),
        Err(ResponseError::InvalidRequest)
    );
}

#[test]
fn a_rejected_record_is_dead_lettered_once_and_holds_the_start_until_confirmed() {
    let s = settings();
    let mut p = SharePartition::new(0);
    p.acquire(&member("a"), &[batch(0, 2)], 10, 0, &s);
    let per_offset = AckBatch {
        first_offset: 0,
        last_offset: 2,
        types: vec![AckType::Reject, AckType::Accept, AckType::Accept],
    };
    let changes = p.acknowledge("a", &[per_offset], 0, &s).unwrap();
    assert_eq!(
        changes.dead_letters,
        [DeadLetter {
            offset: 0,
            delivery_count: 1,
            reason: ArchiveReason::Rejected,
            since_ms: 0,
        }]
    );
    assert_eq!(p.start_offset(), 0);
    assert_eq!(p.pending_dead_letters().len(), 1);
    // Not redelivered while its dead letter is pending.
    assert_eq!(p.next_fetch_offset(0, &s), Some(3));
    let done = p.dead_lettered(&[0]);
    assert!(done.persist);
    assert_eq!(p.start_offset(), 3);
    // A second confirmation changes nothing.
    assert_eq!(p.dead_lettered(&[0]), Changes::default());
}

#[test]
fn a_record_released_at_the_delivery_limit_is_dead_lettered() {
    let s = settings();
    let mut p = SharePartition::new(0);
    let a = member("a");
    for delivery in 1..=3u16 {
        let got = p.acquire(&a, &[batch(0, 0)], 10, 0, &s);
        assert_eq!(got.ranges, [range(0, 0, delivery)]);
        let changes = p
            .acknowledge("a", &[ack(0, 0, AckType::Release)], 0, &s)
            .unwrap();
        let dead = !changes.dead_letters.is_empty();
        assert_eq!(dead, delivery == 3, "delivery {delivery}");
    }
    assert_eq!(
        p.pending_dead_letters(),
        [DeadLetter {
            offset: 0,
            delivery_count: 3,
            reason: ArchiveReason::DeliveryLimit,
            since_ms: 0,
        }]
    );
}

#[test]
fn released_records_wait_out_the_growing_backoff() {
    let s = ShareSettings {
        redelivery_backoff_ms: vec![1_000, 5_000],
        delivery_count_limit: 10,
        ..settings()
    };
    let mut p = SharePartition::new(0);
    let a = member("a");
    let mut now = 0;
    for (delivery, wait) in [(1u16, 1_000), (2, 5_000), (3, 5_000)] {
        let got = p.acquire(&a, &[batch(0, 0)], 10, now, &s);
        assert_eq!(got.ranges, [range(0, 0, delivery)]);
        p.acknowledge("a", &[ack(0, 0, AckType::Release)], now, &s)
            .unwrap();
        assert_eq!(p.next_deadline_ms(), Some(now + wait));
        // Not before its time: the fetch goes past it.
        assert_eq!(p.next_fetch_offset(now + wait - 1, &s), Some(1));
        let early = p.acquire(&a, &[batch(0, 0)], 10, now + wait - 1, &s);
        assert_eq!(early.records, 0);
        now += wait;
        assert_eq!(p.next_fetch_offset(now, &s), Some(0));
    }
}

#[test]
fn a_record_persisted_at_the_delivery_limit_is_dead_lettered_not_acquired() {
    let s = settings();
    let persisted = PersistedPartition {
        start_offset: 0,
        batches: vec![StateBatch {
            first_offset: 0,
            last_offset: 0,
            state: PersistedState::Available,
            delivery_count: 3,
        }],
    };
    let mut p = SharePartition::from_persisted(&persisted);
    let got = p.acquire(&member("a"), &[batch(0, 1)], 10, 0, &s);
    assert_eq!(got.ranges, [range(1, 1, 1)]);
    assert_eq!(
        got.changes.dead_letters,
        [DeadLetter {
            offset: 0,
            delivery_count: 3,
            reason: ArchiveReason::DeliveryLimit,
            since_ms: 0,
        }]
    );
    assert!(got.changes.persist);
}

#[test]
fn gaps_and_control_records_are_archived_never_acquired() {
    let s = settings();
    let mut p = SharePartition::new(0);
    let sparse = FetchedBatch {
        present: Some(vec![0, 2]),
        ..batch(0, 2)
    };
    let marker = FetchedBatch {
        control: true,
        ..batch(3, 3)
    };
    // Offsets 4 and 5 are gone from the log (a gap between batches).
    let got = p.acquire(&member("a"), &[sparse, marker, batch(6, 6)], 10, 0, &s);
    assert_eq!(got.ranges, [range(0, 0, 1), range(2, 2, 1), range(6, 6, 1)]);
    assert_eq!(p.slot(1).unwrap().state, SlotState::Archived);
    assert_eq!(p.slot(3).unwrap().state, SlotState::Archived);
    // A client acknowledging a gap it saw is fine; accepting one is not.
    assert!(
        p.acknowledge("a", &[ack(1, 1, AckType::Gap)], 0, &s)
            .is_ok()
    );
    assert_eq!(
        p.acknowledge("a", &[ack(4, 4, AckType::Accept)], 0, &s),
        Err(ResponseError::InvalidRecordState)
    );
    p.acknowledge(
        "a",
        &[ack(0, 0, AckType::Accept), ack(2, 2, AckType::Accept)],
        0,
        &s,
    )
    .unwrap();
    assert_eq!(p.start_offset(), 6);
}

#[test]
fn a_member_that_leaves_has_its_records_released() {
    let s = settings();
    let mut p = SharePartition::new(0);
    p.acquire(&member("a"), &[batch(0, 1)], 10, 0, &s);
    p.acquire(&member("b"), &[batch(2, 3)], 10, 0, &s);
    assert!(p.release_member("a", 5, &s).persist);
    assert_eq!(p.acquired_count(), 2);
    assert_eq!(p.next_fetch_offset(5, &s), Some(0));
}

#[test]
fn a_renewed_lock_outlives_its_first_deadline() {
    let s = settings();
    let mut p = SharePartition::new(0);
    p.acquire(&member("a"), &[batch(0, 0)], 10, 0, &s);
    let renewed = p
        .acknowledge("a", &[ack(0, 0, AckType::Renew)], 900, &s)
        .unwrap();
    assert!(!renewed.persist);
    p.expire_locks(1_000, &s);
    assert_eq!(p.acquired_count(), 1);
    assert_eq!(p.next_deadline_ms(), Some(1_900));
}

#[test]
fn the_persisted_state_reloads_with_acquired_records_available() {
    let s = settings();
    let mut p = SharePartition::new(5);
    p.acquire(&member("a"), &[batch(5, 9)], 10, 0, &s);
    p.acknowledge("a", &[ack(6, 6, AckType::Accept)], 0, &s)
        .unwrap();
    p.acknowledge("a", &[ack(7, 7, AckType::Reject)], 0, &s)
        .unwrap();
    let persisted = p.persisted();
    assert_eq!(persisted.start_offset, 5);
    let reloaded = SharePartition::from_persisted(&persisted);
    assert_eq!(reloaded.start_offset(), 5);
    assert_eq!(reloaded.end_offset(), 10);
    assert_eq!(reloaded.acquired_count(), 0);
    assert_eq!(reloaded.slot(6).unwrap().state, SlotState::Acknowledged);
    assert_eq!(reloaded.pending_dead_letters().len(), 1);
    assert_eq!(reloaded.slot(8).unwrap().delivery_count, 1);
    // Round trip.
    assert_eq!(reloaded.persisted(), persisted);
}

#[test]
fn moving_the_start_drops_what_is_below_and_hands_back_pending_dead_letters() {
    let s = settings();
    let mut p = SharePartition::new(0);
    p.acquire(&member("a"), &[batch(0, 3)], 10, 0, &s);
    p.acknowledge("a", &[ack(1, 1, AckType::Reject)], 0, &s)
        .unwrap();
    let dropped = p.move_start(2);
    assert_eq!(dropped.len(), 1);
    assert_eq!(p.start_offset(), 2);
    assert_eq!(p.end_offset(), 4);
    // Past the end offset: the window is empty and starts there.
    p.move_start(50);
    assert_eq!((p.start_offset(), p.end_offset()), (50, 50));
}

#[test]
fn acknowledgement_ranges_as_wide_as_a_client_likes_are_checked_without_walking_them() {
    let s = settings();
    let mut p = SharePartition::new(100);
    p.acquire(&member("a"), &[batch(100, 101)], 10, 0, &s);
    // Gaps over everything below the start offset: nothing to do there.
    let below = ack(-(1 << 62), 99, AckType::Gap);
    assert_eq!(p.acknowledge("a", &[below], 0, &s), Ok(Changes::default()));
    // Anything else there, or anything past the end offset, is refused.
    for bad in [
        ack(-(1 << 62), 100, AckType::Accept),
        ack(100, 1 << 62, AckType::Accept),
    ] {
        assert_eq!(
            p.acknowledge("a", &[bad], 0, &s),
            Err(ResponseError::InvalidRecordState)
        );
    }
    assert_eq!(p.acquired_count(), 2);
}
