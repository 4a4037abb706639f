//! The fault tests' history checker (tests/common/history.rs) on
//! hand-made histories: it must pass a clean one and catch each kind of
//! broken promise (a lost acknowledgement, a duplicate, a reorder, an
//! offset mismatch, a record never sent, a read above the high watermark),
//! and excuse only the copies a client sent again under a new producer epoch.
//! No broker and no root needed.

mod common;

use std::collections::HashMap;

use common::history::{History, VIOLATIONS_SHOWN_MAX, Violation, Violations, Writer};

/// Three records acknowledged on partition 0 at offsets 0..3 and read back.
fn clean() -> History {
    let mut history = History::new();
    for id in 0..3 {
        history.sent(id);
        history.acked(id, 0, i64::try_from(id).unwrap_or(0));
    }
    history
}

fn read_all(history: &mut History, reads: &[(i32, i64, u64)]) {
    for &(partition, offset, id) in reads {
        history.read(partition, offset, Some(id));
    }
}

fn violations(history: &History) -> Vec<Violation> {
    match history.check() {
        Ok(summary) => panic!("the checker passed a bad history: {summary}"),
        Err(Violations(v)) => v,
    }
}

#[test]
fn a_clean_history_passes() {
    let mut history = clean();
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2)]);
    history.high_watermark(0, 3);
    let summary = history.check().expect("a clean history");
    assert_eq!(summary.acked, 3);
    assert_eq!(summary.reads, 3);
}

#[test]
fn a_lost_acknowledged_record_is_caught() {
    let mut history = clean();
    read_all(&mut history, &[(0, 0, 0), (0, 2, 2)]);
    assert_eq!(
        violations(&history),
        vec![Violation::Lost {
            id: 1,
            partition: 0,
            offset: 1
        }]
    );
}

#[test]
fn a_duplicate_is_caught() {
    let mut history = clean();
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 1)]);
    assert_eq!(
        violations(&history),
        vec![Violation::Duplicate {
            id: 1,
            reads: vec![(0, 1), (0, 3)]
        }]
    );
}

#[test]
fn copies_in_different_epochs_of_one_producer_are_the_clients_and_others_are_duplicates() {
    // Record 1 acknowledged at its second copy, offset 3 (the first copy's
    // answer was lost, then the client bumped its epoch and sent it again).
    let mut history = History::new();
    for (id, offset) in [(0, 0), (1, 3), (2, 2)] {
        history.sent(id);
        history.acked(id, 0, offset);
    }
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 1)]);
    let writer = |producer_id, epoch| Writer { producer_id, epoch };
    let resent = HashMap::from([((0, 1), writer(7, 0)), ((0, 3), writer(7, 1))]);
    let summary = history
        .check_with(&resent)
        .expect("the client's second send");
    assert_eq!((summary.acked, summary.resent), (3, 1));

    let duplicate = Violation::Duplicate {
        id: 1,
        reads: vec![(0, 1), (0, 3)],
    };
    for (writers, why) in [
        (
            HashMap::from([((0, 1), writer(7, 1)), ((0, 3), writer(7, 1))]),
            "one epoch: the broker's duplicate",
        ),
        (
            HashMap::from([((0, 1), writer(7, 0)), ((0, 3), writer(8, 1))]),
            "two producers",
        ),
        (HashMap::from([((0, 3), writer(7, 1))]), "a writer unknown"),
        (HashMap::new(), "no writer known"),
    ] {
        match history.check_with(&writers) {
            Ok(summary) => panic!("{why}: passed ({summary})"),
            Err(Violations(v)) => assert!(v.contains(&duplicate), "{why}: {v:?}"),
        }
    }

    // Excused copies must still hold the acknowledged offset.
    let mut elsewhere = History::new();
    elsewhere.sent(1);
    elsewhere.acked(1, 0, 5);
    read_all(&mut elsewhere, &[(0, 1, 1), (0, 3, 1)]);
    match elsewhere.check_with(&resent) {
        Ok(summary) => panic!("an acknowledged offset no copy is at passed ({summary})"),
        Err(Violations(v)) => assert_eq!(
            v,
            vec![Violation::OffsetMismatch {
                id: 1,
                acked: (0, 5),
                read: (0, 1)
            }]
        ),
    }
}

#[test]
fn a_maybe_read_twice_is_a_duplicate_and_once_is_fine() {
    let mut history = clean();
    history.sent(9);
    history.maybe(9, "timed out");
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 9)]);
    let summary = history.check().expect("a maybe read once");
    assert_eq!((summary.maybe, summary.maybe_read), (1, 1));
    history.read(0, 4, Some(9));
    assert!(matches!(
        violations(&history).as_slice(),
        [Violation::Duplicate { id: 9, .. }]
    ));
}

#[test]
fn a_reorder_is_caught() {
    let mut history = clean();
    read_all(&mut history, &[(0, 0, 0), (0, 2, 2), (0, 1, 1)]);
    assert_eq!(
        violations(&history),
        vec![Violation::Reordered {
            partition: 0,
            offset: 1,
            after: 2
        }]
    );
}

#[test]
fn an_offset_mismatch_is_caught() {
    let mut history = clean();
    // Record 2 acknowledged at offset 2 but read at offset 5.
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 5, 2)]);
    assert_eq!(
        violations(&history),
        vec![Violation::OffsetMismatch {
            id: 2,
            acked: (0, 2),
            read: (0, 5)
        }]
    );
}

#[test]
fn an_acknowledgement_without_an_offset_must_be_read_in_its_partition() {
    // Record 2 acknowledged with no offset (librdkafka's -1001), read at 2.
    let mut history = History::new();
    for id in 0..3 {
        history.sent(id);
    }
    history.acked(0, 0, 0);
    history.acked(1, 0, 1);
    history.acked(2, 0, -1001);
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2)]);
    assert!(history.check().is_ok());
    // Read in another partition, it is a mismatch; never read, it is lost.
    let mut moved = History::new();
    moved.sent(0);
    moved.acked(0, 0, -1001);
    moved.read(1, 0, Some(0));
    assert_eq!(
        violations(&moved),
        vec![Violation::OffsetMismatch {
            id: 0,
            acked: (0, -1001),
            read: (1, 0)
        }]
    );
    let mut lost = History::new();
    lost.sent(0);
    lost.acked(0, 0, -1001);
    assert!(matches!(
        violations(&lost).as_slice(),
        [Violation::Lost { id: 0, .. }]
    ));
}

#[test]
fn a_record_never_sent_is_caught() {
    let mut history = clean();
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 77)]);
    history.read(0, 4, None);
    assert_eq!(
        violations(&history),
        vec![
            Violation::NeverSent {
                partition: 0,
                offset: 3,
                id: Some(77)
            },
            Violation::NeverSent {
                partition: 0,
                offset: 4,
                id: None
            }
        ]
    );
}

#[test]
fn a_read_above_a_later_high_watermark_is_caught() {
    let mut history = clean();
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2)]);
    history.high_watermark(0, 2);
    assert_eq!(
        violations(&history),
        vec![Violation::AboveHighWatermark {
            partition: 0,
            offset: 2,
            high_watermark: 2
        }]
    );
}

#[test]
fn a_record_acknowledged_twice_is_caught() {
    let mut history = clean();
    history.acked(1, 0, 7);
    read_all(&mut history, &[(0, 0, 0), (0, 1, 1), (0, 2, 2)]);
    assert_eq!(
        violations(&history),
        vec![Violation::AckedTwice {
            id: 1,
            first: (0, 1),
            second: (0, 7)
        }]
    );
}

#[test]
fn the_failure_message_is_bounded() {
    let mut history = History::new();
    for id in 0..100 {
        history.sent(id);
        history.acked(id, 0, i64::try_from(id).unwrap_or(0));
    }
    let message = violations(&history).len();
    assert_eq!(message, 100);
    let text = history
        .check()
        .err()
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert_eq!(text.lines().count(), 1 + VIOLATIONS_SHOWN_MAX + 1);
    assert!(text.contains("and 80 more"));
}
