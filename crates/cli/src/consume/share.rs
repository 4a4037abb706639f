//! `weir consume --share-group G`: a share group member (KIP-932) on the
//! kafka-protocol codecs, for trying share groups by hand and for scripts
//! (the bundled librdkafka has no share consumer).
//!
//! It joins with ShareGroupHeartbeat at the group's coordinator, fetches
//! with ShareFetch from the leader of each assigned partition (one share
//! session per leader), prints each record it acquired, and acknowledges it
//! in the next request to that leader: `--ack` (accept by default), or
//! reject when `--reject-if` matches the value. Records acquired past
//! `-n` are released, not acknowledged. At the end the acknowledgements
//! still owed are sent with ShareAcknowledge closing each session, and the
//! member leaves the group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatchAck,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{
    GroupId, ShareAcknowledgeRequest, ShareFetchRequest, ShareGroupHeartbeatRequest, TopicName,
};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use uuid::Uuid;
use weir_client::{Client, check_message, str_bytes};

use super::{ConsumeArgs, Format};
use crate::{CliError, Printed, Result};

/// The versions of the share group APIs sent (what librdkafka's share
/// consumer sends).
const VERSION: i16 = 1;
/// How long one ShareFetch may wait for records.
const FETCH_WAIT_MS: i32 = 500;
/// Records one ShareFetch may acquire.
const FETCH_MAX_RECORDS: i32 = 500;
/// Bytes one ShareFetch may return.
const FETCH_MAX_BYTES: i32 = 8 << 20;
/// How long the member waits for an assignment without `--follow`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between heartbeats while no partition is assigned yet.
const UNASSIGNED_PAUSE: Duration = Duration::from_millis(200);

/// How a printed record is acknowledged (`--ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ack {
    /// Processed: the record is done.
    Accept,
    /// Not processed: deliver it again (to this or another member).
    Release,
    /// Not processable: give it up (to the group's dead-letter topic).
    Reject,
}

impl Ack {
    fn code(self) -> i8 {
        match self {
            Ack::Accept => 1,
            Ack::Release => 2,
            Ack::Reject => 3,
        }
    }
}

/// Acknowledge type of an offset that holds no record.
const GAP: i8 = 0;
const RELEASE: i8 = 2;

/// A share session with one leader: the partitions it fetches and its epoch.
#[derive(Debug, Default)]
struct Session {
    epoch: i32,
    partitions: BTreeSet<i32>,
    /// Acknowledgements owed, by partition: (offset, type).
    acks: BTreeMap<i32, Vec<(i64, i8)>>,
}

/// Runs `weir consume TOPIC --share-group GROUP`.
pub(super) fn run(
    client: &mut Client,
    args: &ConsumeArgs,
    group: &str,
    stop: &AtomicBool,
) -> Result<()> {
    let reject_if = args.reject_if.as_ref();
    let coordinator = client.coordinator(group)?;
    let mut member = Member {
        group: group.to_owned(),
        id: Uuid::new_v4().to_string(),
        epoch: 0,
        coordinator,
        topic: args.topic.clone(),
        topic_id: None,
        assigned: BTreeSet::new(),
        interval: Duration::from_secs(5),
        next_heartbeat: Instant::now(),
    };
    let mut sessions: HashMap<i32, Session> = HashMap::new();
    let mut leaders: HashMap<i32, i32> = HashMap::new();
    let started = Instant::now();
    let mut printed = 0u64;
    let mut result = Ok(());
    'run: loop {
        if stop.load(Ordering::SeqCst) || args.count.is_some_and(|n| printed >= n) {
            break;
        }
        if Instant::now() >= member.next_heartbeat {
            let before = member.assigned.clone();
            if let Err(e) = member.heartbeat(client, false) {
                result = Err(e);
                break;
            }
            if member.assigned != before {
                leaders = match leaders_of(client, &args.topic) {
                    Ok(l) => l,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
            }
        }
        if member.assigned.is_empty() {
            if !args.follow && started.elapsed() > JOIN_TIMEOUT {
                result = Err(CliError::Failed(format!(
                    "share group {group} assigned no partition of {} to this member within {} s",
                    args.topic,
                    JOIN_TIMEOUT.as_secs()
                )));
                break;
            }
            std::thread::sleep(UNASSIGNED_PAUSE);
            member.next_heartbeat = Instant::now();
            continue;
        }
        let Some(topic_id) = member.topic_id else {
            continue;
        };
        // One session per leader, over what is assigned now.
        let mut wanted: HashMap<i32, BTreeSet<i32>> = HashMap::new();
        for p in &member.assigned {
            if let Some(leader) = leaders.get(p) {
                wanted.entry(*leader).or_default().insert(*p);
            }
        }
        let mut got_any = false;
        for (leader, partitions) in wanted {
            let session = sessions.entry(leader).or_default();
            let fetched = fetch(client, &member, topic_id, leader, session, &partitions);
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    result = Err(e);
                    break 'run;
                }
            };
            for (partition, record, delivery_count) in fetched {
                got_any = true;
                let offset = record.offset;
                let acks = session.acks.entry(partition).or_default();
                if args.count.is_some_and(|n| printed >= n) || stop.load(Ordering::SeqCst) {
                    acks.push((offset, RELEASE));
                    continue;
                }
                let line = match args.format {
                    Format::Text => text_line(&record),
                    Format::Json => {
                        match json_line(&args.topic, partition, &record, delivery_count) {
                            Ok(l) => l,
                            Err(e) => {
                                result = Err(e);
                                break 'run;
                            }
                        }
                    }
                };
                match crate::print_out(&line) {
                    Ok(Printed::ReaderGone) => {
                        acks.push((offset, RELEASE));
                        stop.store(true, Ordering::SeqCst);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        result = Err(e);
                        break 'run;
                    }
                }
                printed += 1;
                let rejected = reject_if.is_some_and(|re| {
                    re.is_match(&String::from_utf8_lossy(
                        record.value.as_deref().unwrap_or_default(),
                    ))
                });
                let ack = if rejected { Ack::Reject } else { args.ack };
                acks.push((offset, ack.code()));
            }
        }
        if !got_any && !args.follow {
            break;
        }
    }
    // Owed acknowledgements go out as each session closes; then the member
    // leaves, so its partitions go to the others at once.
    for (leader, session) in &mut sessions {
        if session.epoch > 0
            && let Some(topic_id) = member.topic_id
        {
            let closed = close(client, &member, topic_id, *leader, session);
            if result.is_ok() {
                result = closed;
            }
        }
    }
    let left = member.heartbeat(client, true);
    result.and(left)
}

/// The member's side of the group.
struct Member {
    group: String,
    id: String,
    epoch: i32,
    coordinator: i32,
    topic: String,
    topic_id: Option<Uuid>,
    assigned: BTreeSet<i32>,
    interval: Duration,
    next_heartbeat: Instant,
}

impl Member {
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
            self.assigned.clear();
            for tp in assignment.topic_partitions {
                self.topic_id = Some(tp.topic_id);
                self.assigned.extend(tp.partitions);
            }
        }
        Ok(())
    }
}

/// The leader of each partition of `topic`.
fn leaders_of(client: &mut Client, topic: &str) -> Result<HashMap<i32, i32>> {
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    Ok(metadata
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect())
}

/// One ShareFetch from `leader`, carrying the acknowledgements owed there:
/// the records acquired, as (partition, record, delivery count), in order.
fn fetch(
    client: &mut Client,
    member: &Member,
    topic_id: Uuid,
    leader: i32,
    session: &mut Session,
    partitions: &BTreeSet<i32>,
) -> Result<Vec<(i32, Record, i16)>> {
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
        .with_group_id(Some(GroupId(str_bytes(&member.group))))
        .with_member_id(Some(str_bytes(&member.id)))
        .with_share_session_epoch(session.epoch)
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_max_records(FETCH_MAX_RECORDS)
        .with_batch_size(FETCH_MAX_RECORDS)
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
                format!("acknowledging records of {}/{index}", member.topic)
            })?;
            check_message(p.error_code, p.error_message.as_ref(), || {
                format!("ShareFetch of {}/{index}", member.topic)
            })?;
            let mut records: HashMap<i64, Record> = HashMap::new();
            let mut bytes: Bytes = p.records.unwrap_or_default();
            while !bytes.is_empty() {
                let decoded = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
                    CliError::Failed(format!(
                        "cannot decode records of {}/{index}: {e}",
                        member.topic
                    ))
                })?;
                for r in decoded.records {
                    records.insert(r.offset, r);
                }
            }
            for range in p.acquired_records {
                for offset in range.first_offset..=range.last_offset {
                    match records.remove(&offset) {
                        Some(record) => out.push((index, record, range.delivery_count)),
                        // No record at this offset: acknowledged as a gap.
                        None => session.acks.entry(index).or_default().push((offset, GAP)),
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Send the acknowledgements owed to `leader` with ShareAcknowledge,
/// closing the session (epoch -1), so what the member still held is
/// released at once.
fn close(
    client: &mut Client,
    member: &Member,
    topic_id: Uuid,
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
                            AckBatchAck::default()
                                .with_first_offset(first)
                                .with_last_offset(last)
                                .with_acknowledge_types(vec![t])
                        })
                        .collect(),
                )
        })
        .collect();
    let request = ShareAcknowledgeRequest::default()
        .with_group_id(Some(GroupId(str_bytes(&member.group))))
        .with_member_id(Some(str_bytes(&member.id)))
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
                format!("acknowledging records of {}/{index}", member.topic)
            })?;
        }
    }
    session.epoch = 0;
    Ok(())
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

fn text_line(record: &Record) -> String {
    let mut line =
        String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
    line.push('\n');
    line
}

fn json_line(topic: &str, partition: i32, record: &Record, delivery_count: i16) -> Result<String> {
    let optional =
        |bytes: Option<&Bytes>| bytes.map_or(serde_json::Value::Null, |b| crate::bytes_json(b));
    let headers: Vec<serde_json::Value> = record
        .headers
        .iter()
        .map(|(key, value)| {
            serde_json::json!({
                "key": key.as_str(),
                "value": optional(value.as_ref()),
            })
        })
        .collect();
    let line = serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": optional(record.key.as_ref()),
        "value": optional(record.value.as_ref()),
        "headers": headers,
        "delivery_count": delivery_count,
    });
    let mut line = serde_json::to_string(&line).map_err(CliError::Json)?;
    line.push('\n');
    Ok(line)
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
