//! The groups this node coordinates: classic groups (JoinGroup and
//! SyncGroup), consumer groups (KIP-848) and share groups (KIP-932), what
//! `weir group list` and `weir group describe` show:
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/groups` | [`GroupList`]: per group its id, type, state, member count and total lag, by id; at most [`GROUPS_MAX`] groups (`cut` says when more exist) |
//! | `GET /v1/groups/{group}` | [`GroupDetail`]: its members (member id, client id, host, assigned partitions) and per partition the committed offset (a share group's start offset), the log end and the lag |
//!
//! 404 for a group this node does not know (on a cluster, the message
//! names the broker that coordinates it, when another does).
//!
//! The data is what Kafka's admin tools would be told: ListGroups,
//! DescribeGroups, ConsumerGroupDescribe, ShareGroupDescribe, OffsetFetch
//! and DescribeShareGroupOffsets, sent to this broker in-process. Lag is
//! the high watermark less the committed offset (for a share group, less
//! its start offset), read from the replicas held here; a partition held
//! elsewhere on a cluster has no log end or lag here, and the group's
//! total counts only the partitions held here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Buf as _;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DescribeGroupsRequest,
    DescribeShareGroupOffsetsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    OffsetFetchRequest, ShareGroupDescribeRequest,
};
use kafka_protocol::protocol::{Decodable as _, StrBytes};
use serde::Serialize;

use crate::kafka::{ask, expect_response, failed};
use crate::{AdminError, AdminState};

/// The most groups `GET /v1/groups` lists (by id); the rest are left out.
pub(crate) const GROUPS_MAX: usize = 10_000;
/// ListGroups v5: the first with the group type.
const LIST_GROUPS_VERSION: i16 = 5;
/// DescribeGroups v5: the newest before v6's GROUP_ID_NOT_FOUND.
const DESCRIBE_GROUPS_VERSION: i16 = 5;
/// ConsumerGroupDescribe and ShareGroupDescribe v1.
const GROUP_DESCRIBE_VERSION: i16 = 1;
/// OffsetFetch v7: the newest with one group per request.
const OFFSET_FETCH_VERSION: i16 = 7;
/// FindCoordinator v4: batched keys.
const FIND_COORDINATOR_VERSION: i16 = 4;
/// The group types of ListGroups v5.
const SHARE_TYPE: &str = "share";
const CONSUMER_TYPE: &str = "consumer";
/// Share groups' dead-letter topic config, and its copy flag (KIP-1191).
pub(crate) const DLQ_TOPIC_NAME: &str = "errors.deadletterqueue.topic.name";

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/groups", get(list))
        .route("/v1/groups/{group}", get(describe))
}

/// The answer of `GET /v1/groups`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupList {
    /// The groups, by id.
    pub groups: Vec<GroupSummary>,
    /// More than [`GROUPS_MAX`] groups exist: the ones after are left out.
    pub cut: bool,
}

/// One group, as listed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupSummary {
    /// The group id.
    pub group_id: String,
    /// `classic`, `consumer` (KIP-848) or `share` (KIP-932).
    pub group_type: String,
    /// The classic protocol type (`consumer`, `connect`, ...), when any.
    pub protocol_type: Option<String>,
    /// Its state, in Kafka's words (`Stable`, `Empty`, `PreparingRebalance`,
    /// ...).
    pub state: String,
    /// Its members now.
    pub members: usize,
    /// Records behind, over the partitions held here it has an offset in;
    /// `None` when it has none there.
    pub lag: Option<i64>,
}

/// One group in full.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupDetail {
    /// The group id.
    pub group_id: String,
    /// `classic`, `consumer` or `share`.
    pub group_type: String,
    /// Its state.
    pub state: String,
    /// The classic protocol type, when any.
    pub protocol_type: Option<String>,
    /// The assignor: a classic group's protocol once stable, a KIP-848 or
    /// share group's server-side assignor.
    pub assignor: Option<String>,
    /// A consumer or share group's epoch.
    pub group_epoch: Option<i32>,
    /// A share group's dead-letter topic, when it has one.
    pub dead_letter_topic: Option<String>,
    /// Its members, by member id.
    pub members: Vec<MemberDetail>,
    /// Every partition it has an offset in or a member is assigned, by
    /// topic and number.
    pub partitions: Vec<GroupPartition>,
    /// The sum of the partitions' lag known here; `None` when none is.
    pub lag: Option<i64>,
}

/// One member of a group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemberDetail {
    /// Its member id.
    pub member_id: String,
    /// Its static membership id (`group.instance.id`), when set.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// The address it connected from, as the broker saw it (`/127.0.0.1`).
    pub host: String,
    /// Its assigned partitions, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// A partition named by topic and number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// A group's position in one partition.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset; for a share group, its start offset (the
    /// first record not yet acknowledged for good). `None` when none.
    pub committed_offset: Option<i64>,
    /// The high watermark of the replica held here (what ListOffsets
    /// LATEST answers); `None` when no replica is held here.
    pub log_end_offset: Option<i64>,
    /// `log_end_offset` less `committed_offset`, at least 0.
    pub lag: Option<i64>,
    /// The members assigned it.
    pub member_ids: Vec<String>,
}

/// The groups this node coordinates, by id, with their member counts and
/// lag.
pub(crate) async fn group_list(state: &AdminState) -> Result<GroupList, AdminError> {
    let listed = listed_groups(state).await?;
    let cut = listed.len() > GROUPS_MAX;
    let listed: Vec<_> = listed.into_iter().take(GROUPS_MAX).collect();
    let ids: Vec<String> = listed.iter().map(|g| g.group_id.clone()).collect();
    let members = member_counts(state, &ids).await?;
    let mut lags: HashMap<String, i64> = HashMap::new();
    for lag in state.broker.group_lags() {
        *lags.entry(lag.group).or_default() += lag.lag;
    }
    let share_ids: Vec<String> = listed
        .iter()
        .filter(|g| g.group_type == SHARE_TYPE)
        .map(|g| g.group_id.clone())
        .collect();
    if !share_ids.is_empty() {
        let starts = share_start_offsets(state, &share_ids).await?;
        let broker = state.broker.clone();
        let share_lags = crate::kafka::blocking(move || {
            let mut lags: HashMap<String, i64> = HashMap::new();
            for (group, offsets) in starts {
                for ((topic, partition), start) in offsets {
                    if let Some(o) = crate::topics::held_offsets(&broker, &topic, partition) {
                        *lags.entry(group.clone()).or_default() +=
                            (o.high_watermark - start).max(0);
                    }
                }
            }
            lags
        })
        .await?;
        lags.extend(share_lags);
    }
    let groups = listed
        .into_iter()
        .map(|g| GroupSummary {
            members: members.get(&g.group_id).copied().unwrap_or(0),
            lag: lags.get(&g.group_id).copied(),
            group_id: g.group_id,
            group_type: g.group_type,
            protocol_type: g.protocol_type,
            state: g.state,
        })
        .collect();
    Ok(GroupList { groups, cut })
}

/// One group in full; 404 when this node does not know it.
pub(crate) async fn group_detail(
    state: &AdminState,
    group: &str,
) -> Result<GroupDetail, AdminError> {
    let listed = listed_groups(state)
        .await?
        .into_iter()
        .find(|g| g.group_id == group);
    let Some(listed) = listed else {
        // A group without members may still hold committed offsets.
        let committed = committed_offsets(state, group).await?;
        if committed.is_empty() {
            return Err(unknown_group(state, group).await);
        }
        return finish(state, Described::empty(group), committed).await;
    };
    let described = match listed.group_type.as_str() {
        SHARE_TYPE => describe_share(state, group).await?,
        CONSUMER_TYPE => describe_consumer(state, group).await?,
        _ => describe_classic(state, group).await?,
    };
    let described = described.unwrap_or_else(|| Described::empty(group));
    let offsets = if described.group_type == SHARE_TYPE {
        share_start_offsets(state, &[group.to_owned()])
            .await?
            .remove(group)
            .unwrap_or_default()
    } else {
        committed_offsets(state, group).await?
    };
    finish(state, described, offsets).await
}

/// The 404 for a group, naming its coordinator when another broker is.
async fn unknown_group(state: &AdminState, group: &str) -> AdminError {
    let missing = format!("no group {group} on this broker");
    if !state.broker.metadata().replicated() {
        return AdminError::not_found(format!("no group named {group}"));
    }
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![StrBytes::from_string(group.to_owned())]);
    let coordinator = match ask(&state.broker, request, FIND_COORDINATOR_VERSION).await {
        Ok(response) => expect_response!(response, FindCoordinator)
            .ok()
            .and_then(|r| r.coordinators.into_iter().next())
            .filter(|c| c.error_code == 0)
            .map(|c| c.node_id.0),
        Err(_) => None,
    };
    match coordinator {
        Some(node) if node != state.broker.config().node_id => AdminError::not_found(format!(
            "{missing}: broker {node} coordinates it; ask its admin API"
        )),
        _ => AdminError::not_found(missing),
    }
}

/// A group as ListGroups shows it.
struct Listed {
    group_id: String,
    group_type: String,
    protocol_type: Option<String>,
    state: String,
}

/// Every group this broker coordinates, by id.
async fn listed_groups(state: &AdminState) -> Result<Vec<Listed>, AdminError> {
    let response = ask(
        &state.broker,
        ListGroupsRequest::default(),
        LIST_GROUPS_VERSION,
    )
    .await?;
    let response = expect_response!(response, ListGroups)?;
    if response.error_code != 0 {
        return Err(failed("ListGroups", response.error_code, None));
    }
    let mut groups: Vec<Listed> = response
        .groups
        .into_iter()
        .map(|g| Listed {
            group_id: g.group_id.0.to_string(),
            group_type: g.group_type.to_string(),
            protocol_type: non_empty(&g.protocol_type),
            state: g.group_state.to_string(),
        })
        .collect();
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(groups)
}

/// Members per group (DescribeGroups answers every type here).
async fn member_counts(
    state: &AdminState,
    ids: &[String],
) -> Result<HashMap<String, usize>, AdminError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let request = DescribeGroupsRequest::default().with_groups(ids.iter().map(group_id).collect());
    let response = ask(&state.broker, request, DESCRIBE_GROUPS_VERSION).await?;
    let response = expect_response!(response, DescribeGroups)?;
    Ok(response
        .groups
        .into_iter()
        .filter(|g| g.error_code == 0)
        .map(|g| (g.group_id.0.to_string(), g.members.len()))
        .collect())
}

/// A group as its describe API shows it.
struct Described {
    group_id: String,
    group_type: String,
    state: String,
    protocol_type: Option<String>,
    assignor: Option<String>,
    group_epoch: Option<i32>,
    members: Vec<MemberDetail>,
}

impl Described {
    /// A group known only by its committed offsets.
    fn empty(group: &str) -> Self {
        Self {
            group_id: group.to_owned(),
            group_type: "classic".to_owned(),
            state: "Empty".to_owned(),
            protocol_type: None,
            assignor: None,
            group_epoch: None,
            members: Vec::new(),
        }
    }
}

async fn describe_classic(
    state: &AdminState,
    group: &str,
) -> Result<Option<Described>, AdminError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = ask(&state.broker, request, DESCRIBE_GROUPS_VERSION).await?;
    let response = expect_response!(response, DescribeGroups)?;
    let Some(g) = response.groups.into_iter().next() else {
        return Ok(None);
    };
    if g.error_code != 0 || g.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    let protocol_type = g.protocol_type.to_string();
    let members = g
        .members
        .iter()
        .map(|m| MemberDetail {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: classic_assignment(&protocol_type, &m.member_assignment),
        })
        .collect();
    Ok(Some(Described {
        group_id: group.to_owned(),
        group_type: "classic".to_owned(),
        state: g.group_state.to_string(),
        protocol_type: non_empty(&g.protocol_type),
        assignor: non_empty(&g.protocol_data),
        group_epoch: None,
        members,
    }))
}

async fn describe_consumer(
    state: &AdminState,
    group: &str,
) -> Result<Option<Described>, AdminError> {
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
    let response = ask(&state.broker, request, GROUP_DESCRIBE_VERSION).await?;
    let response = expect_response!(response, ConsumerGroupDescribe)?;
    let Some(g) = response.groups.into_iter().next() else {
        return Ok(None);
    };
    if g.error_code == ResponseError::GroupIdNotFound.code() {
        // Described as classic (a group converted back, or never KIP-848).
        return describe_classic(state, group).await;
    }
    if g.error_code != 0 {
        return Err(failed(
            &format!("group {group}"),
            g.error_code,
            g.error_message.as_ref(),
        ));
    }
    let members = g
        .members
        .iter()
        .map(|m| MemberDetail {
            member_id: m.member_id.to_string(),
            instance_id: m.instance_id.as_ref().map(ToString::to_string),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: sorted(m.assignment.topic_partitions.iter().flat_map(|t| {
                t.partitions.iter().map(|p| TopicPartition {
                    topic: t.topic_name.0.to_string(),
                    partition: *p,
                })
            })),
        })
        .collect();
    Ok(Some(Described {
        group_id: group.to_owned(),
        group_type: CONSUMER_TYPE.to_owned(),
        state: g.group_state.to_string(),
        protocol_type: Some("consumer".to_owned()),
        assignor: non_empty(&g.assignor_name),
        group_epoch: Some(g.group_epoch),
        members,
    }))
}

async fn describe_share(state: &AdminState, group: &str) -> Result<Option<Described>, AdminError> {
    let request = ShareGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
    let response = ask(&state.broker, request, GROUP_DESCRIBE_VERSION).await?;
    let response = expect_response!(response, ShareGroupDescribe)?;
    let Some(g) = response.groups.into_iter().next() else {
        return Ok(None);
    };
    if g.error_code != 0 {
        return Err(failed(
            &format!("share group {group}"),
            g.error_code,
            g.error_message.as_ref(),
        ));
    }
    let members = g
        .members
        .iter()
        .map(|m| MemberDetail {
            member_id: m.member_id.to_string(),
            instance_id: None,
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: sorted(m.assignment.topic_partitions.iter().flat_map(|t| {
                t.partitions.iter().map(|p| TopicPartition {
                    topic: t.topic_name.0.to_string(),
                    partition: *p,
                })
            })),
        })
        .collect();
    Ok(Some(Described {
        group_id: group.to_owned(),
        group_type: SHARE_TYPE.to_owned(),
        state: g.group_state.to_string(),
        protocol_type: None,
        assignor: non_empty(&g.assignor_name),
        group_epoch: Some(g.group_epoch),
        members,
    }))
}

/// Offsets by partition.
type Offsets = BTreeMap<(String, i32), i64>;

/// A classic or consumer group's committed offsets (OffsetFetch).
async fn committed_offsets(state: &AdminState, group: &str) -> Result<Offsets, AdminError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(None);
    let response = ask(&state.broker, request, OFFSET_FETCH_VERSION).await?;
    let response = expect_response!(response, OffsetFetch)?;
    if response.error_code == ResponseError::GroupIdNotFound.code() {
        return Ok(Offsets::new());
    }
    if response.error_code == ResponseError::NotCoordinator.code() {
        return Err(unknown_group(state, group).await);
    }
    if response.error_code != 0 {
        return Err(failed(
            &format!("the committed offsets of group {group}"),
            response.error_code,
            None,
        ));
    }
    let mut offsets = Offsets::new();
    for topic in response.topics {
        for p in topic.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                offsets.insert(
                    (topic.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(offsets)
}

/// Share groups' start offsets (DescribeShareGroupOffsets), by group.
async fn share_start_offsets(
    state: &AdminState,
    groups: &[String],
) -> Result<HashMap<String, Offsets>, AdminError> {
    let request = DescribeShareGroupOffsetsRequest::default().with_groups(
        groups
            .iter()
            .map(|g| {
                DescribeShareGroupOffsetsRequestGroup::default()
                    .with_group_id(group_id(g))
                    .with_topics(None)
            })
            .collect(),
    );
    let response = ask(&state.broker, request, 0).await?;
    let response = expect_response!(response, DescribeShareGroupOffsets)?;
    let mut out = HashMap::new();
    for g in response.groups {
        if g.error_code != 0 {
            continue;
        }
        let offsets: &mut Offsets = out.entry(g.group_id.0.to_string()).or_default();
        for t in g.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.start_offset >= 0 {
                    offsets.insert(
                        (t.topic_name.0.to_string(), p.partition_index),
                        p.start_offset,
                    );
                }
            }
        }
    }
    Ok(out)
}

/// The detail from the description and the offsets: every partition with
/// an offset or an assigned member, with the log end held here.
async fn finish(
    state: &AdminState,
    described: Described,
    offsets: Offsets,
) -> Result<GroupDetail, AdminError> {
    let mut owners: BTreeMap<(String, i32), Vec<String>> = BTreeMap::new();
    for m in &described.members {
        for tp in &m.assignment {
            owners
                .entry((tp.topic.clone(), tp.partition))
                .or_default()
                .push(m.member_id.clone());
        }
    }
    let keys: BTreeSet<(String, i32)> = offsets.keys().chain(owners.keys()).cloned().collect();
    let broker = state.broker.clone();
    let group = described.group_id.clone();
    let share = described.group_type == SHARE_TYPE;
    let (partitions, dead_letter_topic) = crate::kafka::blocking(move || {
        let partitions: Vec<GroupPartition> = keys
            .into_iter()
            .map(|key| {
                let committed = offsets.get(&key).copied();
                let end =
                    crate::topics::held_offsets(&broker, &key.0, key.1).map(|o| o.high_watermark);
                GroupPartition {
                    lag: committed.zip(end).map(|(c, e)| (e - c).max(0)),
                    committed_offset: committed,
                    log_end_offset: end,
                    member_ids: owners.remove(&key).unwrap_or_default(),
                    topic: key.0,
                    partition: key.1,
                }
            })
            .collect();
        let dead_letter = share
            .then(|| dead_letter_topic_of(&broker, &group))
            .flatten();
        (partitions, dead_letter)
    })
    .await?;
    let lag = partitions
        .iter()
        .filter_map(|p| p.lag)
        .reduce(|a, b| a.saturating_add(b));
    let mut members = described.members;
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    Ok(GroupDetail {
        group_id: described.group_id,
        group_type: described.group_type,
        state: described.state,
        protocol_type: described.protocol_type,
        assignor: described.assignor,
        group_epoch: described.group_epoch,
        dead_letter_topic,
        members,
        partitions,
        lag,
    })
}

/// A share group's dead-letter topic: its `errors.deadletterqueue.topic.name`
/// (empty: none), else `<errors.deadletterqueue.topic.name.prefix><group>`.
/// Reads the metadata store: call it off the runtime's workers.
pub(crate) fn dead_letter_topic_of(broker: &weir_broker::Broker, group: &str) -> Option<String> {
    match broker.metadata().group_configs(group).get(DLQ_TOPIC_NAME) {
        Some(name) => Some(name.trim().to_owned()).filter(|n| !n.is_empty()),
        None => Some(format!("{}{group}", broker.config().group.dlq_topic_prefix)),
    }
}

/// A classic member's assignment, decoded from the consumer protocol;
/// empty for other protocol types or bytes that do not decode.
fn classic_assignment(protocol_type: &str, bytes: &[u8]) -> Vec<TopicPartition> {
    if protocol_type != "consumer" || bytes.len() < 2 {
        return Vec::new();
    }
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    let version = buf.get_i16();
    let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) else {
        return Vec::new();
    };
    sorted(decoded.assigned_partitions.iter().flat_map(|t| {
        t.partitions.iter().map(|p| TopicPartition {
            topic: t.topic.0.to_string(),
            partition: *p,
        })
    }))
}

fn sorted(partitions: impl Iterator<Item = TopicPartition>) -> Vec<TopicPartition> {
    let mut out: Vec<TopicPartition> = partitions.collect();
    out.sort();
    out
}

fn group_id(group: impl AsRef<str>) -> GroupId {
    GroupId(StrBytes::from_string(group.as_ref().to_owned()))
}

fn non_empty(text: &StrBytes) -> Option<String> {
    Some(text.to_string()).filter(|t| !t.is_empty())
}

async fn list(State(state): State<AdminState>) -> Result<Json<GroupList>, AdminError> {
    group_list(&state).await.map(Json)
}

async fn describe(
    State(state): State<AdminState>,
    group: Result<Path<String>, PathRejection>,
) -> Result<Json<GroupDetail>, AdminError> {
    let Path(group) = group?;
    group_detail(&state, &group).await.map(Json)
}

/// The ids of the share groups this node coordinates, sorted.
pub(crate) async fn share_group_ids(state: &AdminState) -> Result<Vec<String>, AdminError> {
    Ok(listed_groups(state)
        .await?
        .into_iter()
        .filter(|g| g.group_type == SHARE_TYPE)
        .map(|g| g.group_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::testing::{commit, create_topic, produce};

    #[tokio::test(flavor = "multi_thread")]
    async fn a_group_with_committed_offsets_shows_its_lag() {
        let (state, _dir) = crate::tests::state();
        create_topic(&state, "work", 1, &[]).await;
        let records: Vec<_> = (0..5).map(|i| ("k", &b"v"[..], i, &[][..])).collect();
        produce(&state, "work", 0, &records).await;
        commit(&state, "billing", ("work", 0), 2).await;

        let list = group_list(&state).await.expect("groups");
        assert!(!list.cut);
        let billing = list
            .groups
            .iter()
            .find(|g| g.group_id == "billing")
            .expect("billing");
        assert_eq!(
            (billing.group_type.as_str(), billing.members),
            ("classic", 0)
        );
        assert_eq!(billing.lag, Some(3));

        let detail = group_detail(&state, "billing").await.expect("billing");
        assert_eq!(detail.lag, Some(3));
        let p = &detail.partitions[0];
        assert_eq!(
            (
                p.topic.as_str(),
                p.partition,
                p.committed_offset,
                p.log_end_offset,
                p.lag
            ),
            ("work", 0, Some(2), Some(5), Some(3))
        );
        let err = group_detail(&state, "nope").await.expect_err("unknown");
        assert_eq!(err.status(), axum::http::StatusCode::NOT_FOUND);
    }
}
