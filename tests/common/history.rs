//! The history checker of the fault tests. Producers record what they sent
//! and how each send ended (acknowledged at a partition and offset, or
//! "maybe": failed, timed out or never reported, so it may or may not be
//! stored); consumers record every record they read and the high watermarks
//! they saw. [`History::check`] then says whether the broker kept its
//! promises: every acknowledged record read exactly once at its acknowledged
//! offset, offsets strictly increasing per partition, nothing read twice,
//! nothing read that was never sent, nothing read at or above a high
//! watermark observed after it was read.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Violations listed in a failure message; the rest are only counted.
pub const VIOLATIONS_SHOWN_MAX: usize = 20;

/// How a send ended, as far as the producer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: stored at this partition and offset.
    Acked { partition: i32, offset: i64 },
    /// Failed, timed out or never reported: may be stored (once) or not.
    Maybe { reason: String },
}

/// One record a consumer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Partition it was read from.
    pub partition: i32,
    /// Offset it was read at.
    pub offset: i64,
    /// The payload id, `None` when the payload is not one the test writes.
    pub id: Option<u64>,
}

/// A broken promise found by [`History::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged record was never read.
    Lost {
        id: u64,
        partition: i32,
        offset: i64,
    },
    /// A record was read more than once.
    Duplicate { id: u64, reads: Vec<(i32, i64)> },
    /// An acknowledged record was read somewhere other than where it was acknowledged.
    OffsetMismatch {
        id: u64,
        acked: (i32, i64),
        read: (i32, i64),
    },
    /// A partition's offsets did not strictly increase in read order.
    Reordered {
        partition: i32,
        offset: i64,
        after: i64,
    },
    /// A record that was never sent (or not one of the test's) was read.
    NeverSent {
        partition: i32,
        offset: i64,
        id: Option<u64>,
    },
    /// A record was read at or above a high watermark observed after the read.
    AboveHighWatermark {
        partition: i32,
        offset: i64,
        high_watermark: i64,
    },
    /// The producer side reported two different outcomes for one id.
    AckedTwice {
        id: u64,
        first: (i32, i64),
        second: (i32, i64),
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost {
                id,
                partition,
                offset,
            } => write!(
                f,
                "lost: record {id} acknowledged at {partition}/{offset} was never read"
            ),
            Self::Duplicate { id, reads } => write!(f, "duplicate: record {id} read at {reads:?}"),
            Self::OffsetMismatch { id, acked, read } => write!(
                f,
                "offset mismatch: record {id} acknowledged at {}/{} but read at {}/{}",
                acked.0, acked.1, read.0, read.1
            ),
            Self::Reordered {
                partition,
                offset,
                after,
            } => write!(
                f,
                "reordered: partition {partition} offset {offset} read after offset {after}"
            ),
            Self::NeverSent {
                partition,
                offset,
                id,
            } => write!(
                f,
                "never sent: read {id:?} at {partition}/{offset}, which no producer sent"
            ),
            Self::AboveHighWatermark {
                partition,
                offset,
                high_watermark,
            } => write!(
                f,
                "above the high watermark: read {partition}/{offset}, high watermark {high_watermark}"
            ),
            Self::AckedTwice { id, first, second } => write!(
                f,
                "acknowledged twice: record {id} at {}/{} and at {}/{}",
                first.0, first.1, second.0, second.1
            ),
        }
    }
}

/// What a passing check counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records acknowledged (each read exactly once at its offset).
    pub acked: usize,
    /// Records whose fate was unknown.
    pub maybe: usize,
    /// Of those, how many were read (once).
    pub maybe_read: usize,
    /// Records read in all.
    pub reads: usize,
    /// Records read twice or more that the client sent again under a new
    /// producer epoch (see [`History::check_with`]).
    pub resent: usize,
}

/// Who wrote a stored record: its batch's producer id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Writer {
    pub producer_id: i64,
    pub epoch: i16,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acknowledged, {} maybe ({} of them read), {} read, {} sent again under a new producer epoch",
            self.acked, self.maybe, self.maybe_read, self.reads, self.resent
        )
    }
}

/// The failure of [`History::check`]: every violation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the history checker found {} violations:", self.0.len())?;
        for violation in self.0.iter().take(VIOLATIONS_SHOWN_MAX) {
            writeln!(f, "  {violation}")?;
        }
        if self.0.len() > VIOLATIONS_SHOWN_MAX {
            writeln!(f, "  ... and {} more", self.0.len() - VIOLATIONS_SHOWN_MAX)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// What producers sent and consumers read, in the order recorded.
#[derive(Debug, Default)]
pub struct History {
    /// Every id sent, with its outcome (`Maybe` until reported).
    sent: HashMap<u64, Outcome>,
    /// Outcomes reported twice (kept for the check).
    acked_twice: Vec<Violation>,
    /// Reads in the order the consumer returned them.
    reads: Vec<Read>,
    /// High watermarks observed: partition, value, and how many reads had
    /// been recorded when it was observed.
    watermarks: Vec<(i32, i64, usize)>,
}

impl History {
    /// A new, empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A record with `id` was handed to a producer. Until its delivery is
    /// reported it counts as "maybe".
    pub fn sent(&mut self, id: u64) {
        self.sent.entry(id).or_insert_with(|| Outcome::Maybe {
            reason: "no delivery report".into(),
        });
    }

    /// The record `id` was acknowledged at `partition`/`offset` (an offset
    /// below 0 when the client did not learn it).
    pub fn acked(&mut self, id: u64, partition: i32, offset: i64) {
        let outcome = self.sent.entry(id).or_insert(Outcome::Maybe {
            reason: String::new(),
        });
        if let Outcome::Acked {
            partition: p,
            offset: o,
        } = *outcome
        {
            self.acked_twice.push(Violation::AckedTwice {
                id,
                first: (p, o),
                second: (partition, offset),
            });
            return;
        }
        *outcome = Outcome::Acked { partition, offset };
    }

    /// The delivery of `id` failed or timed out: it may or may not be stored.
    pub fn maybe(&mut self, id: u64, reason: impl Into<String>) {
        let outcome = self.sent.entry(id).or_insert(Outcome::Maybe {
            reason: String::new(),
        });
        if matches!(outcome, Outcome::Maybe { .. }) {
            *outcome = Outcome::Maybe {
                reason: reason.into(),
            };
        }
    }

    /// A consumer read `id` (`None`: not a payload of the test) at `partition`/`offset`.
    pub fn read(&mut self, partition: i32, offset: i64, id: Option<u64>) {
        self.reads.push(Read {
            partition,
            offset,
            id,
        });
    }

    /// A consumer saw `partition`'s high watermark at `high_watermark`:
    /// every record read so far from it must lie below.
    pub fn high_watermark(&mut self, partition: i32, high_watermark: i64) {
        self.watermarks
            .push((partition, high_watermark, self.reads.len()));
    }

    /// Records acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.sent
            .values()
            .filter(|o| matches!(o, Outcome::Acked { .. }))
            .count()
    }

    /// Records sent so far.
    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }

    /// Check every promise; all violations on failure.
    pub fn check(&self) -> Result<Summary, Violations> {
        self.check_with(&HashMap::new())
    }

    /// [`Self::check`], knowing who wrote some of the reads (`writers`, by
    /// partition and offset). A record read more than once is not the
    /// broker's duplicate when every copy's writer is known, all are one
    /// producer id, and each copy is in a different producer epoch: the
    /// client sent it again after bumping its epoch, which restarts the
    /// sequence numbers a broker deduplicates by. librdkafka does that
    /// while a record's fate is unknown (confluentinc/librdkafka#4953; a
    /// Kafka broker sees the same), so the promise checked is the broker's:
    /// no record stored twice within one producer epoch. Such a record's
    /// acknowledgement may be at any of its copies.
    pub fn check_with(&self, writers: &HashMap<(i32, i64), Writer>) -> Result<Summary, Violations> {
        let mut violations = self.acked_twice.clone();
        // Where each id was read, in read order.
        let mut reads_of: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
        let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
        for read in &self.reads {
            if let Some(&after) = last_offset.get(&read.partition)
                && read.offset <= after
            {
                violations.push(Violation::Reordered {
                    partition: read.partition,
                    offset: read.offset,
                    after,
                });
            }
            last_offset.insert(read.partition, read.offset);
            match read.id.filter(|id| self.sent.contains_key(id)) {
                Some(id) => reads_of
                    .entry(id)
                    .or_default()
                    .push((read.partition, read.offset)),
                None => violations.push(Violation::NeverSent {
                    partition: read.partition,
                    offset: read.offset,
                    id: read.id,
                }),
            }
        }
        for &(partition, high_watermark, reads_before) in &self.watermarks {
            for read in self.reads.iter().take(reads_before) {
                if read.partition == partition && read.offset >= high_watermark {
                    violations.push(Violation::AboveHighWatermark {
                        partition,
                        offset: read.offset,
                        high_watermark,
                    });
                }
            }
        }
        let mut summary = Summary {
            reads: self.reads.len(),
            ..Summary::default()
        };
        // Sorted, so the first violations listed are the earliest ids.
        let mut ids: Vec<&u64> = self.sent.keys().collect();
        ids.sort_unstable();
        for &id in ids {
            let reads = reads_of.get(&id).map(Vec::as_slice).unwrap_or(&[]);
            let resent = reads.len() > 1 && sent_again(reads, writers);
            if resent {
                summary.resent += 1;
            } else if reads.len() > 1 {
                violations.push(Violation::Duplicate {
                    id,
                    reads: reads.to_vec(),
                });
            }
            match self.sent.get(&id) {
                Some(&Outcome::Acked { partition, offset }) => {
                    summary.acked += 1;
                    // librdkafka acknowledges a batch without its offset
                    // (-1001) when a later batch's success proves it
                    // stored (its own answer was lost): it must then be
                    // read in its partition, anywhere.
                    let at_ack = |read: &(i32, i64)| {
                        *read == (partition, offset) || (offset < 0 && read.0 == partition)
                    };
                    let acked_copy = match resent {
                        true => reads.iter().any(at_ack),
                        false => reads.first().is_none_or(at_ack),
                    };
                    match reads.first() {
                        None => violations.push(Violation::Lost {
                            id,
                            partition,
                            offset,
                        }),
                        Some(&read) if !acked_copy => {
                            violations.push(Violation::OffsetMismatch {
                                id,
                                acked: (partition, offset),
                                read,
                            });
                        }
                        Some(_) => {}
                    }
                }
                Some(Outcome::Maybe { .. }) | None => {
                    summary.maybe += 1;
                    if !reads.is_empty() {
                        summary.maybe_read += 1;
                    }
                }
            }
        }
        if violations.is_empty() {
            Ok(summary)
        } else {
            Err(Violations(violations))
        }
    }
}

/// Whether the copies at `reads` were written by one producer id, each in
/// a different epoch (every writer known).
fn sent_again(reads: &[(i32, i64)], writers: &HashMap<(i32, i64), Writer>) -> bool {
    let Some(found) = reads
        .iter()
        .map(|read| writers.get(read).copied())
        .collect::<Option<Vec<Writer>>>()
    else {
        return false;
    };
    let one_producer = found
        .windows(2)
        .all(|w| w[0].producer_id == w[1].producer_id && w[0].producer_id >= 0);
    let mut epochs: Vec<i16> = found.iter().map(|w| w.epoch).collect();
    epochs.sort_unstable();
    epochs.dedup();
    one_producer && epochs.len() == found.len()
}
