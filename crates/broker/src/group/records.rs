//! The record format of `__consumer_offsets`: keys and values of committed
//! offsets and group metadata, their encoding, and which partition of the
//! topic holds a group. `docs/format.md` ("Consumer offsets topic") draws
//! every byte; change both together.
//!
//! A key names what a record is about, so compaction keeps the newest value
//! per key; a record without a value (a tombstone) deletes it.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::assignor::{TopicPartitions, TopicShape};

/// Key type of a committed offset: (group, topic, partition).
const KEY_TYPE_OFFSET: i16 = 0;
/// Key type of a classic group's metadata: (group).
const KEY_TYPE_GROUP: i16 = 1;
/// Key type of a KIP-848 consumer group's metadata: (group).
const KEY_TYPE_CONSUMER_GROUP: i16 = 2;
/// Key type of a KIP-932 share group's membership: (group). Builds before
/// share groups refuse to load a partition holding one.
const KEY_TYPE_SHARE_GROUP: i16 = 3;
/// The only value version written so far, for both value types.
const VALUE_VERSION: i16 = 0;

/// Why a stored record cannot be read. Start-up refuses to guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    /// The bytes end before the field they announce.
    #[error("record is truncated or malformed")]
    Malformed,
    /// A key type this version of Weir does not know.
    #[error("unknown key type {0}")]
    UnknownKeyType(i16),
    /// A value version this version of Weir does not know.
    #[error("unknown value version {0}")]
    UnknownVersion(i16),
}

/// What a record is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A group's committed offset of one partition.
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A classic group's membership and assignment.
    Group { group: String },
    /// A KIP-848 consumer group's epochs, members and assignments.
    ConsumerGroup { group: String },
    /// A KIP-932 share group's epochs, members and assignments.
    ShareGroup { group: String },
}

/// Partitions by topic id, as stored.
pub(crate) type StoredPartitions = Vec<(uuid::Uuid, Vec<i32>)>;

/// Subscribed topics as stored: name, id, partition count.
pub(crate) type StoredTopics = Vec<(String, uuid::Uuid, i32)>;

/// An assignment as stored.
pub(crate) fn store_partitions(tp: &TopicPartitions) -> StoredPartitions {
    tp.iter()
        .map(|(id, ps)| (*id, ps.iter().copied().collect()))
        .collect()
}

/// A stored assignment, back in memory.
pub(crate) fn load_partitions(stored: StoredPartitions) -> TopicPartitions {
    stored
        .into_iter()
        .map(|(id, ps)| (id, ps.into_iter().collect()))
        .collect()
}

/// Subscribed topics' shapes as stored.
pub(crate) fn store_topics(topics: &BTreeMap<String, TopicShape>) -> StoredTopics {
    topics
        .iter()
        .map(|(name, s)| (name.clone(), s.id, s.partitions))
        .collect()
}

/// Stored topics' shapes, back in memory.
pub(crate) fn load_topics(stored: StoredTopics) -> BTreeMap<String, TopicShape> {
    stored
        .into_iter()
        .map(|(name, id, partitions)| (name, TopicShape { id, partitions }))
        .collect()
}

/// One member of a stored KIP-848 consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerMemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub rebalance_timeout_ms: i32,
    pub assignor: Option<String>,
    pub subscribed: Vec<String>,
    /// Partitions the member holds.
    pub assigned: StoredPartitions,
    /// The member's part of the target assignment.
    pub target: StoredPartitions,
}

/// A KIP-848 consumer group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerGroupValue {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    /// Subscribed topics as of the last target: name, id, partition count.
    pub topics: StoredTopics,
    pub members: Vec<ConsumerMemberValue>,
}

/// One member of a stored share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareMemberValue {
    pub member_id: String,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub subscribed: Vec<String>,
    pub assigned: StoredPartitions,
}

/// A share group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareGroupValue {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// Subscribed topics as of the assignment: name, id, partition count.
    pub topics: StoredTopics,
    pub members: Vec<ShareMemberValue>,
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_timestamp_ms: i64,
    pub metadata: Option<String>,
}

/// One member of a stored classic group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A classic group as stored: the generation and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded record: the key and, unless it is a tombstone, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    ConsumerGroup {
        group: String,
        value: Option<ConsumerGroupValue>,
    },
    ShareGroup {
        group: String,
        value: Option<ShareGroupValue>,
    },
}

impl Key {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(KEY_TYPE_OFFSET);
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.put_i32(*partition);
            }
            Key::Group { group } => {
                out.put_i16(KEY_TYPE_GROUP);
                put_str(&mut out, group);
            }
            Key::ConsumerGroup { group } => {
                out.put_i16(KEY_TYPE_CONSUMER_GROUP);
                put_str(&mut out, group);
            }
            Key::ShareGroup { group } => {
                out.put_i16(KEY_TYPE_SHARE_GROUP);
                put_str(&mut out, group);
            }
        }
        out.freeze()
    }
}

impl OffsetValue {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        out.put_i64(self.commit_timestamp_ms);
        put_opt_str(&mut out, self.metadata.as_deref());
        out.freeze()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, RecordError> {
        Ok(Self {
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            commit_timestamp_ms: r.i64()?,
            metadata: r.opt_str()?,
        })
    }
}

impl GroupValue {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(VALUE_VERSION);
        put_str(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_opt_str(&mut out, self.protocol_name.as_deref());
        put_opt_str(&mut out, self.leader.as_deref());
        out.put_i64(self.timestamp_ms);
        out.put_i32(i32::try_from(self.members.len()).unwrap_or(i32::MAX));
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_opt_str(&mut out, m.instance_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.put_i32(m.session_timeout_ms);
            out.put_i32(m.rebalance_timeout_ms);
            put_bytes(&mut out, &m.subscription);
            put_bytes(&mut out, &m.assignment);
        }
        out.freeze()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, RecordError> {
        let protocol_type = r.str()?;
        let generation = r.i32()?;
        let protocol_name = r.opt_str()?;
        let leader = r.opt_str()?;
        let timestamp_ms = r.i64()?;
        let count = usize::try_from(r.i32()?).map_err(|_| RecordError::Malformed)?;
        // Each member takes at least 28 bytes, so the count is bounded by the
        // bytes left before anything is reserved.
        let mut members = Vec::with_capacity(count.min(r.remaining() / 28));
        for _ in 0..count {
            members.push(MemberValue {
                member_id: r.str()?,
                instance_id: r.opt_str()?,
                client_id: r.str()?,
                client_host: r.str()?,
                session_timeout_ms: r.i32()?,
                rebalance_timeout_ms: r.i32()?,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Ok(Self {
            protocol_type,
            generation,
            protocol_name,
            leader,
            timestamp_ms,
            members,
        })
    }
}

impl ConsumerGroupValue {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(VALUE_VERSION);
        out.put_i32(self.group_epoch);
        out.put_i32(self.assignment_epoch);
        put_str(&mut out, &self.assignor);
        put_topics(&mut out, &self.topics);
        put_count(&mut out, self.members.len());
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_opt_str(&mut out, m.instance_id.as_deref());
            put_opt_str(&mut out, m.rack_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.put_i32(m.epoch);
            out.put_i32(m.previous_epoch);
            out.put_i32(m.rebalance_timeout_ms);
            put_opt_str(&mut out, m.assignor.as_deref());
            put_names(&mut out, &m.subscribed);
            put_partitions(&mut out, &m.assigned);
            put_partitions(&mut out, &m.target);
        }
        out.freeze()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, RecordError> {
        let group_epoch = r.i32()?;
        let assignment_epoch = r.i32()?;
        let assignor = r.str()?;
        // Counts are bounded by the bytes left (each element's least size)
        // before anything is reserved.
        let topics = r.topics()?;
        let count = r.count(40)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(ConsumerMemberValue {
                member_id: r.str()?,
                instance_id: r.opt_str()?,
                rack_id: r.opt_str()?,
                client_id: r.str()?,
                client_host: r.str()?,
                epoch: r.i32()?,
                previous_epoch: r.i32()?,
                rebalance_timeout_ms: r.i32()?,
                assignor: r.opt_str()?,
                subscribed: r.names()?,
                assigned: r.partitions()?,
                target: r.partitions()?,
            });
        }
        Ok(Self {
            group_epoch,
            assignment_epoch,
            assignor,
            topics,
            members,
        })
    }
}

impl ShareGroupValue {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(VALUE_VERSION);
        out.put_i32(self.group_epoch);
        out.put_i32(self.assignment_epoch);
        put_topics(&mut out, &self.topics);
        put_count(&mut out, self.members.len());
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_opt_str(&mut out, m.rack_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.put_i32(m.epoch);
            put_names(&mut out, &m.subscribed);
            put_partitions(&mut out, &m.assigned);
        }
        out.freeze()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, RecordError> {
        let group_epoch = r.i32()?;
        let assignment_epoch = r.i32()?;
        // Counts are bounded by the bytes left (each element's least size)
        // before anything is reserved.
        let topics = r.topics()?;
        let count = r.count(20)?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(ShareMemberValue {
                member_id: r.str()?,
                rack_id: r.opt_str()?,
                client_id: r.str()?,
                client_host: r.str()?,
                epoch: r.i32()?,
                subscribed: r.names()?,
                assigned: r.partitions()?,
            });
        }
        Ok(Self {
            group_epoch,
            assignment_epoch,
            topics,
            members,
        })
    }
}

/// Decode one record of `__consumer_offsets`.
pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Entry, RecordError> {
    let mut k = Reader { buf: key };
    let kind = k.i16()?;
    let mut v = value.map(|buf| Reader { buf });
    if let Some(v) = v.as_mut() {
        let version = v.i16()?;
        if version != VALUE_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
    }
    match kind {
        KEY_TYPE_OFFSET => Ok(Entry::Offset {
            group: k.str()?,
            topic: k.str()?,
            partition: k.i32()?,
            value: v.as_mut().map(OffsetValue::decode).transpose()?,
        }),
        KEY_TYPE_GROUP => Ok(Entry::Group {
            group: k.str()?,
            value: v.as_mut().map(GroupValue::decode).transpose()?,
        }),
        KEY_TYPE_CONSUMER_GROUP => Ok(Entry::ConsumerGroup {
            group: k.str()?,
            value: v.as_mut().map(ConsumerGroupValue::decode).transpose()?,
        }),
        KEY_TYPE_SHARE_GROUP => Ok(Entry::ShareGroup {
            group: k.str()?,
            value: v.as_mut().map(ShareGroupValue::decode).transpose()?,
        }),
        other => Err(RecordError::UnknownKeyType(other)),
    }
}

/// The partition of `__consumer_offsets` that holds `group`, as Kafka
/// computes it, so a group lands where a Kafka cluster would put it.
pub(crate) fn partition_for(group: &str, partitions: i32) -> i32 {
    // Java's String.hashCode over UTF-16 code units.
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs maps i32::MIN to 0 instead of overflowing.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    // Every string stored comes from a Kafka string field, which is at most
    // i16::MAX bytes; a longer one would be cut, not wrapped.
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(bytes.get(..len).unwrap_or_default());
}

fn put_opt_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

pub(crate) fn put_count(out: &mut BytesMut, n: usize) {
    out.put_i32(i32::try_from(n).unwrap_or(i32::MAX));
}

/// Subscribed topics as stored: name, id, partition count.
fn put_topics(out: &mut BytesMut, topics: &StoredTopics) {
    put_count(out, topics.len());
    for (name, id, partitions) in topics {
        put_str(out, name);
        out.put_slice(id.as_bytes());
        out.put_i32(*partitions);
    }
}

fn put_names(out: &mut BytesMut, names: &[String]) {
    put_count(out, names.len());
    for name in names {
        put_str(out, name);
    }
}

fn put_partitions(out: &mut BytesMut, tp: &StoredPartitions) {
    put_count(out, tp.len());
    for (id, partitions) in tp {
        out.put_slice(id.as_bytes());
        put_count(out, partitions.len());
        for p in partitions {
            out.put_i32(*p);
        }
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
    out.put_slice(b);
}

/// A bounds-checked reader over stored bytes.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let buf: &'a [u8] = self.buf;
        let head = buf.get(..n).ok_or(RecordError::Malformed)?;
        self.buf = buf.get(n..).ok_or(RecordError::Malformed)?;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn opt_str(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Malformed)
    }

    pub(crate) fn str(&mut self) -> Result<String, RecordError> {
        self.opt_str()?.ok_or(RecordError::Malformed)
    }

    /// An element count, refused when `min_bytes` per element cannot fit.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, RecordError> {
        let n = usize::try_from(self.i32()?).map_err(|_| RecordError::Malformed)?;
        if n.saturating_mul(min_bytes) > self.remaining() {
            return Err(RecordError::Malformed);
        }
        Ok(n)
    }

    pub(crate) fn uuid(&mut self) -> Result<uuid::Uuid, RecordError> {
        Ok(uuid::Uuid::from_bytes(self.array()?))
    }

    fn topics(&mut self) -> Result<StoredTopics, RecordError> {
        let count = self.count(22)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            topics.push((self.str()?, self.uuid()?, self.i32()?));
        }
        Ok(topics)
    }

    fn names(&mut self) -> Result<Vec<String>, RecordError> {
        let n = self.count(2)?;
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(self.str()?);
        }
        Ok(names)
    }

    fn partitions(&mut self) -> Result<StoredPartitions, RecordError> {
        let n = self.count(20)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.uuid()?;
            let k = self.count(4)?;
            let mut partitions = Vec::with_capacity(k);
            for _ in 0..k {
                partitions.push(self.i32()?);
            }
            out.push((id, partitions));
        }
        Ok(out)
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = usize::try_from(self.i32()?).map_err(|_| RecordError::Malformed)?;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partition_matches_kafka_hash() {
        // Java: "my-group".hashCode() == 1_158_863_888 (well known), and
        // Kafka puts the group in abs(hash) % 50.
        let java = "my-group"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
        assert_eq!(partition_for("my-group", 50), java.abs() % 50);
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: Kafka maps it to 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    #[test]
    fn offset_and_group_records_round_trip() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let value = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            commit_timestamp_ms: 7,
            metadata: None,
        };
        let back = decode(&key.encode(), Some(&value.encode())).unwrap();
        assert_eq!(
            back,
            Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(value)
            }
        );
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            timestamp_ms: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let key = Key::Group { group: "g".into() };
        let back = decode(&key.encode(), Some(&group.encode())).unwrap();
        assert_eq!(
            back,
            Entry::Group {
                group: "g".into(),
                value: Some(group)
            }
        );
        assert_eq!(
            decode(&key.encode(), None).unwrap(),
            Entry::Group {
                group: "g".into(),
                value: None
            }
        );
    }

    #[test]
    fn consumer_group_records_round_trip_and_every_truncation_is_refused() {
        let id = uuid::Uuid::from_u128(5);
        let value = ConsumerGroupValue {
            group_epoch: 7,
            assignment_epoch: 7,
            assignor: "uniform".into(),
            topics: vec![("t".into(), id, 3)],
            members: vec![ConsumerMemberValue {
                member_id: "m".into(),
                instance_id: None,
                rack_id: Some("r".into()),
                client_id: "c".into(),
                client_host: String::new(),
                epoch: 7,
                previous_epoch: 6,
                rebalance_timeout_ms: 1_000,
                assignor: None,
                subscribed: vec!["t".into()],
                assigned: vec![(id, vec![0, 2])],
                target: vec![(id, vec![0, 1, 2])],
            }],
        };
        let key = Key::ConsumerGroup { group: "g".into() }.encode();
        let bytes = value.encode();
        assert_eq!(
            decode(&key, Some(&bytes)).unwrap(),
            Entry::ConsumerGroup {
                group: "g".into(),
                value: Some(value)
            }
        );
        for cut in 0..bytes.len() {
            assert!(decode(&key, Some(&bytes[..cut])).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn share_group_records_round_trip_and_every_truncation_is_refused() {
        let id = uuid::Uuid::from_u128(5);
        let value = ShareGroupValue {
            group_epoch: 4,
            assignment_epoch: 4,
            topics: vec![("t".into(), id, 2)],
            members: vec![ShareMemberValue {
                member_id: "m".into(),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                epoch: 4,
                subscribed: vec!["t".into()],
                assigned: vec![(id, vec![0, 1])],
            }],
        };
        let key = Key::ShareGroup { group: "g".into() }.encode();
        let bytes = value.encode();
        assert_eq!(
            decode(&key, Some(&bytes)).unwrap(),
            Entry::ShareGroup {
                group: "g".into(),
                value: Some(value)
            }
        );
        for cut in 0..bytes.len() {
            assert!(decode(&key, Some(&bytes[..cut])).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn damaged_or_unknown_records_are_errors_not_panics() {
        let key = Key::Group { group: "g".into() }.encode();
        for cut in 0..key.len() {
            assert!(decode(&key[..cut], None).is_err());
        }
        let mut future = BytesMut::new();
        future.put_i16(9);
        assert_eq!(
            decode(&key, Some(&future)),
            Err(RecordError::UnknownVersion(9))
        );
        assert_eq!(decode(&[0, 7], None), Err(RecordError::UnknownKeyType(7)));
        let mut huge = BytesMut::new();
        huge.put_i16(0);
        huge.put_i16(1);
        huge.put_slice(b"c");
        huge.put_i32(0);
        huge.put_i16(-1);
        huge.put_i16(-1);
        huge.put_i64(0);
        huge.put_i32(i32::MAX);
        assert!(decode(&key, Some(&huge)).is_err());
    }
}
