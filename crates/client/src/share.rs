//! A share group member (KIP-932), blocking, on the kafka-protocol codecs:
//! `weir consume --share-group` and `weir bench share` use it (the bundled
//! librdkafka has no share consumer).
//!
//! A [`ShareMember`] joins with ShareGroupHeartbeat at the group's
//! coordinator and fetches with ShareFetch from the leader of each assigned
//! partition, one share session per leader. Acknowledgements
//! ([`ShareMember::acknowledge`]) are queued and go out with the next
//! ShareFetch to that leader; [`ShareMember::close`] sends those still owed
//! with ShareAcknowledge closing each session, then leaves the group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{
    GroupId, ShareAcknowledgeRequest, ShareFetchRequest, ShareGroupHeartbeatRequest, TopicName,
};
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::{Client, Error, Result, check_message, str_bytes};

/// The versions of the share group APIs sent (what librdkafka's share
/// consumer sends).
const VERSION: i16 = 1;
/// Bytes one ShareFetch may return.
const FETCH_MAX_BYTES: i32 = 8 << 20;

/// How a record is acknowledged (ShareFetch's `acknowledge_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// An offset that holds no record.
    Gap = 0,
    /// Processed: the record is done.
    Accept = 1,
    /// Not processed: deliver it again.
    Release = 2,
    /// Not processable: give it up (to the group's dead-letter topic).
    Reject = 3,
}

/// A record the member acquired.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its partition.
    pub partition: i32,
    /// The record (its offset, key, value, headers, timestamp).
    pub record: Record,
    /// How often it has been delivered, this time included.
    pub delivery_count: i16,
}

/// A share session with one leader.
#[derive(Debug, Default)]
struct Session {
    epoch: i32,
    partitions: BTreeSet<i32>,
    /// Acknowledgements owed, by partition: (offset, type).
    acks: BTreeMap<i32, Vec<(i64, i8)>>,
}

/// A member of a share group, subscribed to one topic.
#[derive(Debug)]
pub struct ShareMember {
    group: String,
    id: String,
    epoch: i32,
    coordinator: i32,
    topic: String,
    topic_id: Option<uuid::Uuid>,
    assigned: BTreeSet<i32>,
    interval: Duration,
    next_heartbeat: Instant,
    leaders: HashMap<i32, i32>,
    sessions: HashMap<i32, Session>,
    /// Records one ShareFetch may acquire.
    max_records: i32,
    /// How long one ShareFetch may wait for records.
    max_wait_ms: i32,
}

impl ShareMember {
    /// Join `group` subscribed to `topic`, as member `member_id` (a fresh
    /// id, as KIP-932 members make their own). Each [`Self::poll`] acquires
    /// at most `max_records` records, waiting up to `max_wait_ms` for some.
    pub fn join(
        client: &mut Client,
        group: &str,
        topic: &str,
        member_id: &str,
        (max_records, max_wait_ms): (i32, i32),
    ) -> Result<Self> {
        let coordinator = client.coordinator(group)?;
        let mut member = Self {
            group: group.to_owned(),
            id: member_id.to_owned(),
            epoch: 0,
            coordinator,
            topic: topic.to_owned(),
            topic_id: None,
            assigned: BTreeSet::new(),
            interval: Duration::from_secs(5),
            next_heartbeat: Instant::now(),
            leaders: HashMap::new(),
            sessions: HashMap::new(),
            max_records,
            max_wait_ms,
        };
        member.heartbeat(client, false)?;
        Ok(member)
    }

    /// The partitions the group assigned this member.
    pub fn assigned(&self) -> &BTreeSet<i32> {
        &self.assigned
    }

    /// Heartbeat when due (or while nothing is assigned), then, if
    /// partitions are assigned, one ShareFetch
    /// to each leader carrying the acknowledgements owed there: the records
    /// acquired, in partition and offset order. Nothing when no partition
    /// is assigned yet.
    pub fn poll(&mut self, client: &mut Client) -> Result<Vec<Delivered>> {
        // While nothing is assigned, every poll asks again.
        if Instant::now() >= self.next_heartbeat || self.assigned.is_empty() {
            self.heartbeat(client, false)?;
        }
        let Some(topic_id) = self.topic_id.filter(|_| !self.assigned.is_empty()) else {
            return Ok(Vec::new());
        };
        let mut wanted: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
        for p in &self.assigned {
            if let Some(leader) = self.leaders.get(p) {
                wanted.entry(*leader).or_default().insert(*p);
            }
        }
        let mut out = Vec::new();
        for (leader, partitions) in wanted {
            let mut session = self.sessions.remove(&leader).unwrap_or_default();
            let fetched = self.fetch(client, topic_id, leader, &mut session, &partitions);
            self.sessions.insert(leader, session);
            out.extend(fetched?);
        }
        Ok(out)
    }

    /// Queue `ack` for the record at `offset` of `partition`; it goes out
    /// with the next request to the partition's leader.
    pub fn acknowledge(&mut self, partition: i32, offset: i64, ack: AckType) {
        let Some(leader) = self.leaders.get(&partition) else {
            return;
        };
        self.sessions
            .entry(*leader)
            .or_default()
            .acks
            .entry(partition)
            .or_default()
            .push((offset, ack as i8));
    }

    /// Send the acknowledgements owed with ShareAcknowledge, closing each
    /// session (what the member still holds is released at once), then
    /// leave the group.
    pub fn close(&mut self, client: &mut Client) -> Result<()> {
        let mut result = Ok(());
        let sessions: Vec<(i32, Session)> = self.sessions.drain().collect();
        if let Some(topic_id) = self.topic_id {
            for (leader, mut session) in sessions {
                if session.epoch > 0 {
                    let closed = self.close_session(client, topic_id, leader, &mut session);
                    if result.is_ok() {
                        result = closed;
                    }
                }
            }
        }
        let left = self.heartbeat(client, true);
        result.and(left)
    }

    /// A ShareGroupHeartbeat (leaving with epoch -1 when `leave`).
    fn heartbeat(&mut self, client: &mut Client, leave: bool) -> Result<()> {
        let epoch = if leave { -1 } else { self.epoch };
        let request = ShareGroupHeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(&self.group)))
            .with_member_id(str_bytes(&self.id))
            .with_member_epoch(epoch)
            .with_subscribed_topic_names(
                (self.epoch == 0 && !leave).then(|| vec![TopicName(str_bytes(&self.topic))]),
            );
        let response = client.send_to(self.coordinator, &request, VERSION)?;
        check_message(response.error_code, response.error_message.as_ref(), || {
            format!("ShareGroupHeartbeat of share group {}", self.group)
        })?;
        if leave {
            return Ok(());
        }
        self.epoch = response.member_epoch;
        self.interval = Duration::from_millis(
            u64::try_from(response.heartbeat_interval_ms)
                .unwrap_or(5_000)
                .max(100),
        );
        self.next_heartbeat = Instant::now() + self.interval;
        if let Some(assignment) = response.assignment {
            let mut assigned = BTreeSet::new();
            for tp in assignment.topic_partitions {
                self.topic_id = Some(tp.topic_id);
                assigned.extend(tp.partitions);
            }
            if assigned != self.assigned || self.leaders.is_empty() {
                // A new assignment: where its partitions are led.
                self.assigned = assigned;
                let metadata = client.metadata(Some(std::slice::from_ref(&self.topic)))?;
                self.leaders = metadata
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| (p.partition_index, p.leader_id.0))
                    .collect();
            }
        }
        Ok(())
    }

    /// One ShareFetch from `leader`, carrying the acknowledgements owed there.
    fn fetch(
        &self,
        client: &mut Client,
        topic_id: uuid::Uuid,
        leader: i32,
        session: &mut Session,
        partitions: &BTreeSet<i32>,
    ) -> Result<Vec<Delivered>> {
        // A changed set of partitions is added to and forgotten from the
        // session, as Kafka's share sessions allow.
        let forgotten: Vec<i32> = session.partitions.difference(partitions).copied().collect();
        let named: BTreeSet<i32> = if session.epoch == 0 {
            partitions.clone()
        } else {
            partitions
                .iter()
                .filter(|p| !session.partitions.contains(p) || session.acks.contains_key(p))
                .copied()
                .collect()
        };
        let acks = std::mem::take(&mut session.acks);
        let fetch_partitions: Vec<FetchPartition> = named
            .iter()
            .chain(acks.keys().filter(|p| !named.contains(p)))
            .map(|p| {
                FetchPartition::default()
                    .with_partition_index(*p)
                    .with_partition_max_bytes(FETCH_MAX_BYTES)
                    .with_acknowledgement_batches(
                        batches(acks.get(p).map(Vec::as_slice).unwrap_or_default())
                            .into_iter()
                            .map(|(first, last, t)| {
                                AcknowledgementBatch::default()
                                    .with_first_offset(first)
                                    .with_last_offset(last)
                                    .with_acknowledge_types(vec![t])
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = ShareFetchRequest::default()
            .with_group_id(Some(GroupId(str_bytes(&self.group))))
            .with_member_id(Some(str_bytes(&self.id)))
            .with_share_session_epoch(session.epoch)
            .with_max_wait_ms(self.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_max_records(self.max_records)
            .with_batch_size(self.max_records)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(fetch_partitions),
            ])
            .with_forgotten_topics_data(if forgotten.is_empty() || session.epoch == 0 {
                Vec::new()
            } else {
                vec![
                    ForgottenTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(forgotten),
                ]
            });
        let response = client.send_to(leader, &request, VERSION)?;
        check_message(response.error_code, response.error_message.as_ref(), || {
            format!("ShareFetch from broker {leader}")
        })?;
        session.epoch = next_epoch(session.epoch);
        session.partitions = partitions.clone();
        let mut out = Vec::new();
        for topic in response.responses {
            for p in topic.partitions {
                let index = p.partition_index;
                check_message(p.acknowledge_error_code, None, || {
                    format!("acknowledging records of {}/{index}", self.topic)
                })?;
                check_message(p.error_code, p.error_message.as_ref(), || {
                    format!("ShareFetch of {}/{index}", self.topic)
                })?;
                let mut records: HashMap<i64, Record> = HashMap::new();
                let mut bytes: Bytes = p.records.unwrap_or_default();
                while !bytes.is_empty() {
                    let decoded =
                        RecordBatchDecoder::decode(&mut bytes).map_err(|e| Error::Decode {
                            what: format!("the records of {}/{index}", self.topic),
                            address: format!("broker {leader}"),
                            source: e.into(),
                        })?;
                    // Batches come whole: keep only the records acquired.
                    let acquired = |offset: i64| {
                        p.acquired_records
                            .iter()
                            .any(|r| r.first_offset <= offset && offset <= r.last_offset)
                    };
                    for r in decoded.records {
                        if acquired(r.offset) {
                            records.insert(r.offset, r);
                        }
                    }
                }
                for range in p.acquired_records {
                    for offset in range.first_offset..=range.last_offset {
                        match records.remove(&offset) {
                            Some(record) => out.push(Delivered {
                                partition: index,
                                record,
                                delivery_count: range.delivery_count,
                            }),
                            // No record at this offset: acknowledged as a gap.
                            None => session
                                .acks
                                .entry(index)
                                .or_default()
                                .push((offset, AckType::Gap as i8)),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// ShareAcknowledge of what is owed to `leader`, closing its session.
    fn close_session(
        &self,
        client: &mut Client,
        topic_id: uuid::Uuid,
        leader: i32,
        session: &mut Session,
    ) -> Result<()> {
        let acks = std::mem::take(&mut session.acks);
        let partitions: Vec<AcknowledgePartition> = acks
            .iter()
            .map(|(p, acks)| {
                AcknowledgePartition::default()
                    .with_partition_index(*p)
                    .with_acknowledgement_batches(
                        batches(acks)
                            .into_iter()
                            .map(|(first, last, t)| {
                                AckBatch::default()
                                    .with_first_offset(first)
                                    .with_last_offset(last)
                                    .with_acknowledge_types(vec![t])
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(str_bytes(&self.group))))
            .with_member_id(Some(str_bytes(&self.id)))
            .with_share_session_epoch(-1)
            .with_topics(if partitions.is_empty() {
                Vec::new()
            } else {
                vec![
                    AcknowledgeTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions),
                ]
            });
        let response = client.send_to(leader, &request, VERSION)?;
        check_message(response.error_code, response.error_message.as_ref(), || {
            format!("ShareAcknowledge to broker {leader}")
        })?;
        for topic in response.responses {
            for p in topic.partitions {
                let index = p.partition_index;
                check_message(p.error_code, p.error_message.as_ref(), || {
                    format!("acknowledging records of {}/{index}", self.topic)
                })?;
            }
        }
        session.epoch = 0;
        Ok(())
    }
}

/// The session epoch after `epoch`: 1 after 0, wrapping to 1 after i32::MAX.
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

/// Acknowledgements as batches of consecutive offsets with one type.
fn batches(acks: &[(i64, i8)]) -> Vec<(i64, i64, i8)> {
    let mut sorted = acks.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(i64, i64, i8)> = Vec::new();
    for (offset, t) in sorted {
        match out.last_mut() {
            Some(last) if last.1 + 1 == offset && last.2 == t => last.1 = offset,
            _ => out.push((offset, offset, t)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_go_out_as_runs_of_one_type() {
        let acks = [(5, 1), (3, 1), (4, 1), (6, 3), (8, 1), (7, 3)];
        assert_eq!(batches(&acks), [(3, 5, 1), (6, 7, 3), (8, 8, 1)]);
        assert!(batches(&[]).is_empty());
    }
}
