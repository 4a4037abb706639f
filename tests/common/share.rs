//! A share group member (KIP-932) built on the kafka-protocol codecs, at
//! the versions librdkafka's share consumer sends: the bundled librdkafka
//! has no share consumer. Used by `tests/share_groups.rs` and the cluster
//! tests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use kafka_protocol::messages::{
    GroupId, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest,
    ShareFetchResponse, ShareGroupHeartbeatRequest, TopicName, share_acknowledge_request,
    share_fetch_request,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use uuid::Uuid;

use super::raw::RawClient;

/// The versions librdkafka's share consumer sends.
pub const VERSION: i16 = 1;
/// The versions with the Renew acknowledgement (KIP-1222) and the acquire
/// mode (KIP-1206), which Kafka 4.2's clients send.
pub const VERSION_RENEW: i16 = 2;
/// Acknowledge types.
pub const ACCEPT: i8 = 1;
pub const RELEASE: i8 = 2;
pub const REJECT: i8 = 3;
pub const RENEW: i8 = 4;
/// How long [`Member::fetch_until`] tries.
const WAIT: Duration = Duration::from_secs(60);

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A record as a share member got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub offset: i64,
    pub value: String,
    pub delivery_count: i16,
}

/// One share group member: heartbeats on a connection to the group's
/// coordinator, fetches and acknowledgements on one to the leader of
/// partition 0 of its topic (the same broker on a single node).
pub struct Member {
    pub coordinator: RawClient,
    pub conn: RawClient,
    pub group: String,
    pub id: String,
    pub epoch: i32,
    pub session_epoch: i32,
    pub topic_id: Option<Uuid>,
}

impl Member {
    /// Join `group`, subscribed to `topic`, on a single node.
    pub fn join(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<Self> {
        Self::join_at(bootstrap, bootstrap, group, topic)
    }

    /// Join `group` through its coordinator at `coordinator`, fetching from
    /// the partition leader at `leader`.
    pub fn join_at(
        coordinator: &str,
        leader: &str,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<Self> {
        let mut m = Self {
            coordinator: RawClient::connect(coordinator)?,
            conn: RawClient::connect(leader)?,
            group: group.to_string(),
            id: Uuid::new_v4().to_string(),
            epoch: 0,
            session_epoch: 0,
            topic_id: None,
        };
        let r = m.heartbeat(Some(topic))?;
        anyhow::ensure!(r.0 == 0, "join failed with error {}", r.0);
        Ok(m)
    }

    /// A heartbeat at the member's epoch: (error, assigned partitions).
    pub fn heartbeat(&mut self, subscribe: Option<&str>) -> anyhow::Result<(i16, BTreeSet<i32>)> {
        let r = self.coordinator.call(
            &ShareGroupHeartbeatRequest::default()
                .with_group_id(GroupId(str(&self.group)))
                .with_member_id(str(&self.id))
                .with_member_epoch(self.epoch)
                .with_subscribed_topic_names(subscribe.map(|t| vec![TopicName(str(t))])),
            VERSION,
        )?;
        if r.error_code != 0 {
            return Ok((r.error_code, BTreeSet::new()));
        }
        self.epoch = r.member_epoch;
        let mut parts = BTreeSet::new();
        for tp in r.assignment.iter().flat_map(|a| a.topic_partitions.iter()) {
            self.topic_id = Some(tp.topic_id);
            parts.extend(tp.partitions.iter().copied());
        }
        Ok((0, parts))
    }

    pub fn topic_id(&self) -> anyhow::Result<Uuid> {
        self.topic_id.context("the member was assigned no topic")
    }

    /// A ShareFetch of partition 0 at the member's session epoch carrying
    /// `acks` (first, last, type), waiting up to `wait_ms`.
    pub fn fetch_raw(
        &mut self,
        acks: &[(i64, i64, i8)],
        wait_ms: i32,
    ) -> anyhow::Result<ShareFetchResponse> {
        let limits = |r: ShareFetchRequest| {
            r.with_max_wait_ms(wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(4 << 20)
                .with_max_records(500)
                .with_batch_size(500)
        };
        self.fetch_shaped(acks, limits, VERSION)
    }

    /// A ShareFetch of partition 0 at the member's session epoch carrying
    /// `acks`, sent at `version`, its limits (and version 2's fields) set
    /// by `shape`.
    pub fn fetch_shaped(
        &mut self,
        acks: &[(i64, i64, i8)],
        shape: impl FnOnce(ShareFetchRequest) -> ShareFetchRequest,
        version: i16,
    ) -> anyhow::Result<ShareFetchResponse> {
        let topic_id = self.topic_id()?;
        let partition = share_fetch_request::FetchPartition::default()
            .with_partition_index(0)
            .with_partition_max_bytes(1 << 20)
            .with_acknowledgement_batches(
                acks.iter()
                    .map(|(first, last, t)| {
                        share_fetch_request::AcknowledgementBatch::default()
                            .with_first_offset(*first)
                            .with_last_offset(*last)
                            .with_acknowledge_types(vec![*t])
                    })
                    .collect(),
            );
        let request = ShareFetchRequest::default()
            .with_group_id(Some(GroupId(str(&self.group))))
            .with_member_id(Some(str(&self.id)))
            .with_share_session_epoch(self.session_epoch)
            .with_topics(vec![
                share_fetch_request::FetchTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![partition]),
            ]);
        let r = self.conn.call(&shape(request), version)?;
        if r.error_code == 0 {
            self.session_epoch = if self.session_epoch == -1 {
                0
            } else {
                self.session_epoch + 1
            };
        }
        Ok(r)
    }

    /// Fetch, failing on any error; the records acquired.
    pub fn fetch(&mut self, acks: &[(i64, i64, i8)], wait_ms: i32) -> anyhow::Result<Vec<Got>> {
        acquired(&self.fetch_raw(acks, wait_ms)?)
    }

    /// Fetch until `n` records are acquired (a fetch may return fewer than
    /// the partition holds, as a Fetch may), without acknowledging any.
    pub fn fetch_until(&mut self, n: usize) -> anyhow::Result<Vec<Got>> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            anyhow::ensure!(Instant::now() < deadline, "only {got:?} of {n}");
            got.extend(self.fetch(&[], 1_000)?);
        }
        Ok(got)
    }

    /// A ShareAcknowledge of partition 0 at the member's session epoch:
    /// (top-level error, partition error).
    pub fn acknowledge(&mut self, acks: &[(i64, i64, i8)]) -> anyhow::Result<(i16, i16)> {
        let r = self.acknowledge_raw(acks, false, VERSION)?;
        let partition = r
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .next()
            .unwrap_or(0);
        Ok((r.error_code, partition))
    }

    /// A ShareAcknowledge of partition 0 at the member's session epoch,
    /// sent at `version` with `is_renew_ack` as given (version 2).
    pub fn acknowledge_raw(
        &mut self,
        acks: &[(i64, i64, i8)],
        is_renew_ack: bool,
        version: i16,
    ) -> anyhow::Result<ShareAcknowledgeResponse> {
        let topic_id = self.topic_id()?;
        let r = self.conn.call(
            &ShareAcknowledgeRequest::default()
                .with_group_id(Some(GroupId(str(&self.group))))
                .with_member_id(Some(str(&self.id)))
                .with_share_session_epoch(self.session_epoch)
                .with_is_renew_ack(is_renew_ack)
                .with_topics(vec![
                    share_acknowledge_request::AcknowledgeTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(vec![
                            share_acknowledge_request::AcknowledgePartition::default()
                                .with_partition_index(0)
                                .with_acknowledgement_batches(
                                    acks.iter()
                                        .map(|(first, last, t)| {
                                            share_acknowledge_request::AcknowledgementBatch::default()
                                                .with_first_offset(*first)
                                                .with_last_offset(*last)
                                                .with_acknowledge_types(vec![*t])
                                        })
                                        .collect(),
                                ),
                        ]),
                ]),
            version,
        )?;
        if r.error_code == 0 {
            self.session_epoch += 1;
        }
        Ok(r)
    }
}

/// The records a ShareFetch answer acquired, failing on any error in it.
pub fn acquired(r: &ShareFetchResponse) -> anyhow::Result<Vec<Got>> {
    anyhow::ensure!(r.error_code == 0, "share fetch error {}", r.error_code);
    let mut out = Vec::new();
    for p in r.responses.iter().flat_map(|t| t.partitions.iter()) {
        anyhow::ensure!(p.error_code == 0, "partition error {}", p.error_code);
        anyhow::ensure!(
            p.acknowledge_error_code == 0,
            "acknowledge error {}",
            p.acknowledge_error_code
        );
        let mut bytes = p.records.clone().unwrap_or_default();
        let mut records = BTreeMap::new();
        while !bytes.is_empty() {
            for r in RecordBatchDecoder::decode(&mut bytes)?.records {
                let value = r.value.unwrap_or_else(Bytes::new);
                records.insert(r.offset, String::from_utf8_lossy(&value).into_owned());
            }
        }
        for a in &p.acquired_records {
            for offset in a.first_offset..=a.last_offset {
                let value = records
                    .get(&offset)
                    .with_context(|| format!("acquired offset {offset} is not in the batches"))?;
                out.push(Got {
                    offset,
                    value: value.clone(),
                    delivery_count: a.delivery_count,
                });
            }
        }
    }
    Ok(out)
}

impl Member {
    /// Join again as a new member on a new connection (the broker
    /// restarted, or the old member is gone).
    pub fn rejoin(&mut self, bootstrap: &str, topic: &str) -> anyhow::Result<()> {
        self.coordinator = RawClient::connect(bootstrap)?;
        self.conn = RawClient::connect(bootstrap)?;
        self.id = Uuid::new_v4().to_string();
        self.epoch = 0;
        self.session_epoch = 0;
        let (error, _) = self.heartbeat(Some(topic))?;
        anyhow::ensure!(error == 0, "rejoin failed with error {error}");
        Ok(())
    }
}

/// DescribeShareGroupOffsets of `group`: (topic, partition, start offset,
/// error) of every partition described; every partition with state when
/// `topic` is `None`, else partition 0 of `topic`.
pub fn start_offsets(
    admin: &mut RawClient,
    group: &str,
    topic: Option<&str>,
) -> anyhow::Result<Vec<(String, i32, i64, i16)>> {
    use kafka_protocol::messages::DescribeShareGroupOffsetsRequest;
    use kafka_protocol::messages::describe_share_group_offsets_request as describe;
    let r = admin.call(
        &DescribeShareGroupOffsetsRequest::default().with_groups(vec![
            describe::DescribeShareGroupOffsetsRequestGroup::default()
                .with_group_id(GroupId(str(group)))
                .with_topics(topic.map(|t| {
                    vec![
                        describe::DescribeShareGroupOffsetsRequestTopic::default()
                            .with_topic_name(TopicName(str(t)))
                            .with_partitions(vec![0]),
                    ]
                })),
        ]),
        0,
    )?;
    let g = &r.groups[0];
    anyhow::ensure!(g.error_code == 0, "describe: error {}", g.error_code);
    Ok(g.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.topic_name.0.to_string(),
                    p.partition_index,
                    p.start_offset,
                    p.error_code,
                )
            })
        })
        .collect())
}

/// AlterShareGroupOffsets of `group`, partition 0 of `topic` to `offset`:
/// (top-level error, partition error).
pub fn alter_start(
    admin: &mut RawClient,
    group: &str,
    topic: &str,
    offset: i64,
) -> anyhow::Result<(i16, i16)> {
    alter_start_of(admin, group, (topic, 0), offset)
}

/// AlterShareGroupOffsets of `group`, partition `partition` of `topic` to
/// `offset`: (top-level error, partition error).
pub fn alter_start_of(
    admin: &mut RawClient,
    group: &str,
    (topic, partition): (&str, i32),
    offset: i64,
) -> anyhow::Result<(i16, i16)> {
    use kafka_protocol::messages::AlterShareGroupOffsetsRequest;
    use kafka_protocol::messages::alter_share_group_offsets_request as alter;
    let r = admin.call(
        &AlterShareGroupOffsetsRequest::default()
            .with_group_id(GroupId(str(group)))
            .with_topics(vec![
                alter::AlterShareGroupOffsetsRequestTopic::default()
                    .with_topic_name(TopicName(str(topic)))
                    .with_partitions(vec![
                        alter::AlterShareGroupOffsetsRequestPartition::default()
                            .with_partition_index(partition)
                            .with_start_offset(offset),
                    ]),
            ]),
        0,
    )?;
    let partition = r
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(0, |p| p.error_code);
    Ok((r.error_code, partition))
}

/// DeleteShareGroupOffsets of `group` for `topic`: (top-level error,
/// topic error).
pub fn delete_offsets(
    admin: &mut RawClient,
    group: &str,
    topic: &str,
) -> anyhow::Result<(i16, i16)> {
    use kafka_protocol::messages::DeleteShareGroupOffsetsRequest;
    use kafka_protocol::messages::delete_share_group_offsets_request as delete;
    let r = admin.call(
        &DeleteShareGroupOffsetsRequest::default()
            .with_group_id(GroupId(str(group)))
            .with_topics(vec![
                delete::DeleteShareGroupOffsetsRequestTopic::default()
                    .with_topic_name(TopicName(str(topic))),
            ]),
        0,
    )?;
    Ok((
        r.error_code,
        r.responses.first().map_or(0, |t| t.error_code),
    ))
}
