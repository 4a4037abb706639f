//! Moving a consumer group's committed offsets (what `weir group
//! reset-offsets` does, with its semantics), sent to the broker in-process
//! as the Kafka requests the CLI sends: ConsumerGroupDescribe and
//! DescribeGroups (the group must have no members), Metadata, OffsetFetch,
//! ListOffsets, and OffsetCommit from outside the group (generation -1, no
//! member id):
//!
//! | route | body | answer |
//! |-------|------|--------|
//! | `POST /v1/groups/{group}/offsets/reset` | `{"topic", "partitions"?: [N], one of "to_earliest": true, "to_latest": true, "to_offset": N, "to_datetime": TIME, "shift_by": N; "dry_run"?}` | `{"group", "topic", "dry_run", "committed", "plan": [{"topic", "partition", "current_offset", "new_offset"}]}` |
//!
//! Without `partitions` every partition of the topic is reset. `to_earliest`
//! and `to_latest` go to each partition's log-start and log-end offset,
//! `to_offset` to that offset, `shift_by` moves the committed offset by N
//! (negative: back), and `to_datetime` (RFC 3339 with `Z` or `+HH:MM`, a
//! time without a zone being UTC, or milliseconds since the epoch) to the
//! first record at or after the time, the log end if none is that recent.
//! The new offset is kept between the log-start and log-end offsets.
//! `current_offset` is `null` where the group has committed none.
//! `dry_run` answers the plan and commits nothing.
//!
//! Refused with 409 while the group has members (Kafka's rule: stop its
//! consumers first), and for `shift_by` where the group has no committed
//! offset to shift from; 404 for an unknown topic or partition; 400 for no
//! target or several, or more than [`PARTITIONS_MAX`] partitions named.
//! Every reset is logged at info (a dry run as one).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, DescribeGroupsRequest, GroupId, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};

use crate::kafka::{ask, expect_response, internal};
use crate::topic_admin::{check, logged, refused};
use crate::{AdminError, AdminState};

/// The most partitions one reset may name.
pub(crate) const PARTITIONS_MAX: usize = 100_000;
/// ListOffsets' timestamp for the log-start offset.
pub(crate) const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets' timestamp for the log-end offset.
pub(crate) const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets' isolation levels.
pub(crate) const READ_UNCOMMITTED: i8 = 0;
pub(crate) const READ_COMMITTED: i8 = 1;
/// Kafka's error code for a group that does not exist (DescribeGroups v6+).
const GROUP_ID_NOT_FOUND: i16 = 69;
/// The versions sent (as `weir group` and `weir topic` send them).
const METADATA_VERSION: i16 = 12;
const LIST_OFFSETS_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 7;
const OFFSET_COMMIT_VERSION: i16 = 8;
const DESCRIBE_GROUPS_VERSION: i16 = 6;
const CONSUMER_GROUP_DESCRIBE_VERSION: i16 = 1;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/v1/groups/{group}/offsets/reset", post(reset_route))
}

/// A time as `to_datetime` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum DateTime {
    /// Milliseconds since the Unix epoch.
    Millis(i64),
    /// RFC 3339.
    Text(String),
}

/// `POST /v1/groups/{group}/offsets/reset`'s body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetOffsets {
    /// The topic whose partitions are reset.
    pub topic: String,
    /// Only these partitions; all of the topic's when absent.
    pub partitions: Option<Vec<i32>>,
    /// To each partition's log-start offset.
    #[serde(default)]
    pub to_earliest: bool,
    /// To each partition's log-end offset.
    #[serde(default)]
    pub to_latest: bool,
    /// To this offset.
    pub to_offset: Option<i64>,
    /// To the first record at or after this time.
    pub to_datetime: Option<DateTime>,
    /// By this many records from the committed offset (negative: back).
    pub shift_by: Option<i64>,
    /// Answer the plan, commit nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One line of a reset plan.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Planned {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset before; `None` when it had none.
    pub current_offset: Option<i64>,
    /// The offset committed (or, on a dry run, that would be).
    pub new_offset: i64,
}

/// What `POST /v1/groups/{group}/offsets/reset` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OffsetsReset {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// Only planned.
    pub dry_run: bool,
    /// The plan was committed.
    pub committed: bool,
    /// Per partition, the offset before and after.
    pub plan: Vec<Planned>,
}

/// Where a reset moves each partition.
#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Shift(i64),
    Time(i64),
}

async fn reset_route(
    State(state): State<AdminState>,
    group: Result<Path<String>, PathRejection>,
    body: Result<Json<ResetOffsets>, JsonRejection>,
) -> Result<Json<OffsetsReset>, AdminError> {
    let (Path(group), Json(input)) = (group?, body?);
    Ok(Json(reset_offsets(&state, &group, input).await?))
}

/// Plan and (unless a dry run) commit a reset of `group`'s offsets on a
/// topic, as `weir group reset-offsets` does.
pub(crate) async fn reset_offsets(
    state: &AdminState,
    group: &str,
    input: ResetOffsets,
) -> Result<OffsetsReset, AdminError> {
    let target_name = format!("{group} on {}", input.topic);
    let outcome = plan_and_commit(state, group, input).await;
    match outcome {
        Ok(reset) if reset.dry_run => {
            tracing::info!(
                operation = "reset group offsets",
                target = target_name,
                outcome = "dry run",
                "admin API write"
            );
            Ok(reset)
        }
        outcome => logged("reset group offsets", &target_name, outcome),
    }
}

async fn plan_and_commit(
    state: &AdminState,
    group: &str,
    input: ResetOffsets,
) -> Result<OffsetsReset, AdminError> {
    let target = target_of(&input)?;
    if let Some(partitions) = &input.partitions
        && partitions.len() > PARTITIONS_MAX
    {
        return Err(AdminError::bad_request(format!(
            "{} partitions named, at most {PARTITIONS_MAX}",
            partitions.len()
        )));
    }
    if let Some((members, group_state)) = members_of(state, group).await?
        && members > 0
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            format!(
                "group {group} has {members} active members (state {group_state}); stop its \
                 consumers before resetting its offsets"
            ),
        ));
    }
    let topic = input.topic.as_str();
    let all = partitions_of(state, topic).await?;
    let partitions: Vec<i32> = match &input.partitions {
        None => all,
        Some(named) => {
            let named: BTreeSet<i32> = named.iter().copied().collect();
            if let Some(missing) = named.iter().find(|p| !all.contains(p)) {
                return Err(AdminError::not_found(format!(
                    "topic {topic} has no partition {missing}"
                )));
            }
            named.into_iter().collect()
        }
    };
    let current = committed(state, group, topic, &partitions).await?;
    let starts = list_offsets(
        state,
        topic,
        &partitions,
        EARLIEST_TIMESTAMP,
        READ_UNCOMMITTED,
    )
    .await?;
    let ends = list_offsets(
        state,
        topic,
        &partitions,
        LATEST_TIMESTAMP,
        READ_UNCOMMITTED,
    )
    .await?;
    let by_time = match target {
        Target::Time(ms) => {
            Some(list_offsets(state, topic, &partitions, ms, READ_UNCOMMITTED).await?)
        }
        _ => None,
    };
    let mut plan = Vec::with_capacity(partitions.len());
    for p in &partitions {
        let name = format!("{topic}/{p}");
        let no_offset = || internal(format!("ListOffsets answered no offset for {name}"));
        let start = starts.get(p).copied().flatten().ok_or_else(no_offset)?;
        let end = ends.get(p).copied().flatten().ok_or_else(no_offset)?;
        let committed = current.get(p).copied();
        let wanted = match target {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(offset) => offset,
            Target::Shift(shift) => {
                let Some(committed) = committed else {
                    return Err(AdminError::new(
                        StatusCode::CONFLICT,
                        format!("group {group} has no committed offset on {name} to shift from"),
                    ));
                };
                committed.saturating_add(shift)
            }
            Target::Time(_) => by_time
                .as_ref()
                .and_then(|found| found.get(p).copied().flatten())
                .unwrap_or(end),
        };
        plan.push(Planned {
            topic: topic.to_owned(),
            partition: *p,
            current_offset: committed,
            new_offset: wanted.clamp(start, end),
        });
    }
    if !input.dry_run {
        let offsets: Vec<(i32, i64)> = plan.iter().map(|l| (l.partition, l.new_offset)).collect();
        commit(state, group, topic, &offsets).await?;
    }
    Ok(OffsetsReset {
        group: group.to_owned(),
        topic: topic.to_owned(),
        dry_run: input.dry_run,
        committed: !input.dry_run,
        plan,
    })
}

/// The one target a reset names.
fn target_of(input: &ResetOffsets) -> Result<Target, AdminError> {
    let mut targets = Vec::new();
    if input.to_earliest {
        targets.push(Target::Earliest);
    }
    if input.to_latest {
        targets.push(Target::Latest);
    }
    if let Some(offset) = input.to_offset {
        if offset < 0 {
            return Err(AdminError::bad_request(format!(
                "to_offset is {offset}, at least 0"
            )));
        }
        targets.push(Target::Offset(offset));
    }
    if let Some(shift) = input.shift_by {
        targets.push(Target::Shift(shift));
    }
    if let Some(time) = &input.to_datetime {
        let ms = match time {
            DateTime::Millis(ms) if *ms >= 0 => *ms,
            DateTime::Millis(ms) => {
                return Err(AdminError::bad_request(format!(
                    "to_datetime is {ms}, before 1970"
                )));
            }
            DateTime::Text(text) => weir_client::datetime::parse_datetime_ms(text)
                .map_err(|why| AdminError::bad_request(format!("to_datetime {why}")))?,
        };
        targets.push(Target::Time(ms));
    }
    match targets.as_slice() {
        [one] => Ok(*one),
        _ => Err(AdminError::bad_request(
            "give exactly one of to_earliest, to_latest, to_offset, to_datetime, shift_by",
        )),
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// How many members `group` has and its state, `None` when no group has
/// that id: ConsumerGroupDescribe for a KIP-848 group, else DescribeGroups.
pub(crate) async fn members_of(
    state: &AdminState,
    group: &str,
) -> Result<Option<(usize, String)>, AdminError> {
    let what = format!("cannot describe group {group}");
    let request =
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(text(group))]);
    let response = ask(&state.broker, request, CONSUMER_GROUP_DESCRIBE_VERSION).await?;
    let response = expect_response!(response, ConsumerGroupDescribe)?;
    if let Some(described) = response.groups.into_iter().next()
        && described.error_code != GROUP_ID_NOT_FOUND
    {
        check(
            described.error_code,
            described.error_message.as_ref(),
            &what,
        )?;
        return Ok(Some((
            described.members.len(),
            described.group_state.as_str().to_owned(),
        )));
    }
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]);
    let response = ask(&state.broker, request, DESCRIBE_GROUPS_VERSION).await?;
    let response = expect_response!(response, DescribeGroups)?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(internal(format!(
            "DescribeGroups answered nothing for group {group}"
        )));
    };
    if described.error_code == GROUP_ID_NOT_FOUND || described.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    check(
        described.error_code,
        described.error_message.as_ref(),
        &what,
    )?;
    Ok(Some((
        described.members.len(),
        described.group_state.as_str().to_owned(),
    )))
}

/// The partitions of `topic` (Metadata, never creating it), in order; 404
/// when it does not exist.
pub(crate) async fn partitions_of(state: &AdminState, topic: &str) -> Result<Vec<i32>, AdminError> {
    Ok(partition_leaders(state, topic).await?.into_keys().collect())
}

/// The partitions of `topic` with their leaders' node ids (-1 for none).
pub(crate) async fn partition_leaders(
    state: &AdminState,
    topic: &str,
) -> Result<BTreeMap<i32, i32>, AdminError> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(text(topic)))),
        ]))
        .with_allow_auto_topic_creation(false);
    let response = ask(&state.broker, request, METADATA_VERSION).await?;
    let response = expect_response!(response, Metadata)?;
    let found = response
        .topics
        .into_iter()
        .next()
        .ok_or_else(|| internal(format!("Metadata answered nothing for topic {topic}")))?;
    check(found.error_code, None, &format!("topic {topic}"))?;
    Ok(found
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect())
}

/// `group`'s committed offsets on `partitions` of `topic` (OffsetFetch);
/// a partition without one is left out.
pub(crate) async fn committed(
    state: &AdminState,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, AdminError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partition_indexes(partitions.to_vec()),
        ]));
    let response = ask(&state.broker, request, OFFSET_FETCH_VERSION).await?;
    let response = expect_response!(response, OffsetFetch)?;
    let what = format!("cannot read group {group}'s committed offsets on {topic}");
    check(response.error_code, None, &what)?;
    let mut offsets = BTreeMap::new();
    for found in response.topics {
        for p in found.partitions {
            check(p.error_code, None, &what)?;
            if p.committed_offset >= 0 {
                offsets.insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(offsets)
}

/// ListOffsets of `partitions` of `topic` at `timestamp` (or
/// [`EARLIEST_TIMESTAMP`], [`LATEST_TIMESTAMP`]): per partition the offset,
/// `None` where none answers the timestamp.
pub(crate) async fn list_offsets(
    state: &AdminState,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    isolation_level: i8,
) -> Result<BTreeMap<i32, Option<i64>>, AdminError> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                ),
        ]);
    let response = ask(&state.broker, request, LIST_OFFSETS_VERSION).await?;
    let response = expect_response!(response, ListOffsets)?;
    let mut offsets = BTreeMap::new();
    for found in response.topics {
        for p in found.partitions {
            check(
                p.error_code,
                None,
                &format!("cannot list the offsets of {topic}/{}", p.partition_index),
            )?;
            offsets.insert(p.partition_index, (p.offset >= 0).then_some(p.offset));
        }
    }
    Ok(offsets)
}

/// Commit `offsets` (partition, offset) of `topic` for `group` from outside
/// the group: generation -1 and no member id, which a coordinator accepts
/// only while the group has no members.
pub(crate) async fn commit(
    state: &AdminState,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), AdminError> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, offset)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*offset)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                ),
        ]);
    let response = ask(&state.broker, request, OFFSET_COMMIT_VERSION).await?;
    let response = expect_response!(response, OffsetCommit)?;
    for found in &response.topics {
        for p in &found.partitions {
            if p.error_code != 0 {
                return Err(refused(
                    p.error_code,
                    None,
                    &format!(
                        "cannot commit group {group}'s offset on {topic}/{}",
                        p.partition_index
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_names_exactly_one_target() {
        let reset = |f: fn(&mut ResetOffsets)| {
            let mut input = ResetOffsets {
                topic: "t".to_owned(),
                ..Default::default()
            };
            f(&mut input);
            target_of(&input).map_err(|e| e.status())
        };
        assert!(matches!(
            reset(|i| i.to_earliest = true),
            Ok(Target::Earliest)
        ));
        assert_eq!(
            reset(|_| {}).err(),
            Some(StatusCode::BAD_REQUEST),
            "no target"
        );
        assert_eq!(
            reset(|i| {
                i.to_earliest = true;
                i.shift_by = Some(-1);
            })
            .err(),
            Some(StatusCode::BAD_REQUEST),
            "two targets"
        );
        assert_eq!(
            reset(|i| i.to_offset = Some(-5)).err(),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn a_datetime_is_text_as_the_cli_reads_it_or_milliseconds() {
        let at = |time: DateTime| {
            let input = ResetOffsets {
                topic: "t".to_owned(),
                to_datetime: Some(time),
                ..Default::default()
            };
            match target_of(&input) {
                Ok(Target::Time(ms)) => Ok(ms),
                Ok(other) => panic!("{other:?} is not a time"),
                Err(e) => Err(e.status()),
            }
        };
        let text = |t: &str| DateTime::Text(t.to_owned());
        assert_eq!(at(text("1970-01-01T02:00:01+02:00")), Ok(1_000));
        assert_eq!(at(text("1970-01-01T00:00:01")), Ok(1_000));
        assert_eq!(at(DateTime::Millis(1_000)), Ok(1_000));
        assert_eq!(at(text("yesterday")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(at(DateTime::Millis(-1)), Err(StatusCode::BAD_REQUEST));
    }
}
