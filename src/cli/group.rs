//! `weir group`: list, describe, reset-offsets and delete consumer groups,
//! through the group APIs every Kafka broker serves (ListGroups,
//! DescribeGroups, OffsetFetch, OffsetCommit, DeleteGroups), sent to the
//! group's coordinator.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use bytes::Buf as _;
use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::Decodable as _;

use super::kafka::{self, Client, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Led};

/// The most `--topic` flags one reset takes.
const TOPICS_MAX: usize = 1_000;
/// Kafka's error code for a group that does not exist (DescribeGroups v6+).
const GROUP_ID_NOT_FOUND: i16 = 69;

const GROUP_EXAMPLES: &str = "\
Examples:
  weir group list
  weir group describe billing
  weir group reset-offsets billing --topic orders --to-datetime 2026-11-24T08:00:00Z --dry-run
  weir group reset-offsets billing --topic orders --to-earliest
  weir group delete billing";

/// `weir group` subcommands.
#[derive(Debug, Subcommand)]
#[command(after_help = GROUP_EXAMPLES)]
pub enum GroupCommand {
    /// List the consumer groups of every broker, with their state.
    #[command(after_help = "\
Examples:
  weir group list")]
    List,
    /// Show a group's members and assignment, and per partition the committed
    /// offset, the log-end offset and the lag.
    #[command(after_help = "\
Examples:
  weir group describe billing

LAG is LOG-END minus COMMITTED; `-` where the group has committed nothing.")]
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets. The group must have no active
    /// members: stop its consumers first.
    #[command(after_help = "\
Examples:
  weir group reset-offsets billing --topic orders --to-earliest
  weir group reset-offsets billing --topic orders --to-offset 1000 --dry-run
  weir group reset-offsets billing --topic orders --shift-by -50
  weir group reset-offsets billing --topic orders --to-datetime 2026-11-24T08:00:00Z

Offsets are kept between each partition's log-start and log-end offsets.
--to-datetime moves to the first record at or after the time (the log end if
none is that recent). --dry-run prints the plan and commits nothing.")]
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets. The group must be empty.
    #[command(after_help = "\
Examples:
  weir group delete billing")]
    Delete {
        /// The group.
        group: String,
    },
}

/// `weir group reset-offsets`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"])))]
pub struct ResetArgs {
    /// The group.
    group: String,
    /// A topic whose partitions are reset, all of them (repeatable).
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// To each partition's log-start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's log-end offset.
    #[arg(long)]
    to_latest: bool,
    /// To this offset.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    to_offset: Option<i64>,
    /// By this many records from the committed offset (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// To the first record at or after this UTC time, e.g. 2026-11-24T08:00:00Z.
    #[arg(long, value_name = "TIME", value_parser = super::parse_datetime_ms)]
    to_datetime: Option<i64>,
    /// Print the plan and commit nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `weir group` command against `brokers`.
pub fn run(brokers: &str, command: GroupCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(brokers)?;
    match command {
        GroupCommand::List => list(&mut client),
        GroupCommand::Describe { group } => describe(&mut client, &group),
        GroupCommand::ResetOffsets(args) => reset_offsets(&mut client, &args),
        GroupCommand::Delete { group } => delete(&mut client, &group),
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(kafka::str_bytes(group))
}

fn list(client: &mut Client) -> anyhow::Result<()> {
    let metadata = client.metadata(Some(&[]))?;
    let mut groups = BTreeMap::new();
    for broker in &metadata.brokers {
        // v4 is the newest without the group type filter.
        let response = client.send_to(broker.node_id.0, &ListGroupsRequest::default(), 4)?;
        kafka::check(response.error_code, || {
            format!("ListGroups at broker {}", broker.node_id.0)
        })?;
        for group in response.groups {
            let state = if group.group_state.is_empty() {
                "-".to_owned()
            } else {
                group.group_state.as_str().to_owned()
            };
            let protocol_type = if group.protocol_type.is_empty() {
                "-".to_owned()
            } else {
                group.protocol_type.as_str().to_owned()
            };
            groups.insert(group.group_id.0.as_str().to_owned(), (state, protocol_type));
        }
    }
    let mut rows = vec![
        ["GROUP", "STATE", "PROTOCOL-TYPE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (group, (state, protocol_type)) in groups {
        rows.push(vec![group, state, protocol_type]);
    }
    super::print_out(&super::table(&rows))?;
    Ok(())
}

/// The group as its coordinator describes it, or `None` when it does not
/// exist.
fn describe_group(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> anyhow::Result<Option<DescribedGroup>> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.send_to(coordinator, &request, 6)?;
    let Some(described) = response.groups.into_iter().next() else {
        bail!("DescribeGroups answered nothing for group {group}");
    };
    if described.error_code == GROUP_ID_NOT_FOUND || described.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    kafka::check(described.error_code, || format!("group {group}"))?;
    Ok(Some(described))
}

/// The group's committed offsets: of the given partitions by topic, or of
/// every partition it has committed when `None`.
fn committed(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(topics.map(|partitions| {
            partitions
                .iter()
                .map(|(name, indexes)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(kafka::str_bytes(name)))
                        .with_partition_indexes(indexes.clone())
                })
                .collect()
        }));
    // v7 is the newest with one group per request.
    let response = client.send_to(coordinator, &request, 7)?;
    kafka::check(response.error_code, || {
        format!("committed offsets of group {group}")
    })?;
    let mut offsets = BTreeMap::new();
    for topic in response.topics {
        let name = topic.name.0.as_str().to_owned();
        for partition in topic.partitions {
            let index = partition.partition_index;
            kafka::check(partition.error_code, || {
                format!("committed offset of group {group} on {name}/{index}")
            })?;
            if partition.committed_offset >= 0 {
                offsets.insert((name.clone(), index), partition.committed_offset);
            }
        }
    }
    Ok(offsets)
}

/// The partitions of `topics` with their leaders. A missing topic fails.
fn partitions_of(client: &mut Client, topics: &[String]) -> anyhow::Result<Vec<Led>> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let metadata = client.metadata(Some(topics))?;
    let mut led = Vec::new();
    for topic in &metadata.topics {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.as_str().to_owned())
            .unwrap_or_default();
        kafka::check(topic.error_code, || format!("topic {name}"))?;
        for p in &topic.partitions {
            if p.leader_id.0 < 0 {
                bail!("partition {name}/{} has no leader", p.partition_index);
            }
            led.push(Led {
                topic: name.clone(),
                partition: p.partition_index,
                leader: p.leader_id.0,
            });
        }
    }
    led.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(led)
}

/// A member's assignment, `topic/partition` strings, decoded from the
/// consumer protocol; empty for other protocol types.
fn assignment(protocol_type: &str, bytes: &[u8]) -> Vec<(String, i32)> {
    if protocol_type != "consumer" || bytes.len() < 2 {
        return Vec::new();
    }
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    let version = buf.get_i16();
    let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) else {
        return Vec::new();
    };
    decoded
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            let name = topic.topic.0.as_str().to_owned();
            topic.partitions.iter().map(move |p| (name.clone(), *p))
        })
        .collect()
}

fn describe(client: &mut Client, group: &str) -> anyhow::Result<()> {
    let coordinator = client.coordinator(group)?;
    let described = describe_group(client, coordinator, group)?;
    let offsets = committed(client, coordinator, group, None)?;
    let Some(described) = described.or_else(|| {
        // A group without members may still hold committed offsets.
        (!offsets.is_empty()).then(DescribedGroup::default)
    }) else {
        bail!("group {group} does not exist");
    };

    let protocol_type = described.protocol_type.as_str();
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut members = vec![
        ["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for member in &described.members {
        let assigned = assignment(protocol_type, &member.member_assignment);
        let shown: Vec<String> = assigned.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        for key in assigned {
            owner.insert(key, member.member_id.as_str().to_owned());
        }
        members.push(vec![
            member.member_id.as_str().to_owned(),
            member.client_id.as_str().to_owned(),
            member.client_host.as_str().to_owned(),
            if shown.is_empty() {
                "-".to_owned()
            } else {
                shown.join(",")
            },
        ]);
    }

    let topics: BTreeSet<String> = offsets
        .keys()
        .chain(owner.keys())
        .map(|(topic, _)| topic.clone())
        .collect();
    let topics: Vec<String> = topics.into_iter().collect();
    let led = partitions_of(client, &topics)?;
    let ends = client.list_offsets(&led, LATEST_TIMESTAMP)?;

    let state = if described.group_state.is_empty() {
        "Empty"
    } else {
        described.group_state.as_str()
    };
    let mut out = format!(
        "group: {group}\nstate: {state}\nprotocol: {}\nmembers: {}\n",
        if described.protocol_data.is_empty() {
            "-".to_owned()
        } else {
            format!("{protocol_type}/{}", described.protocol_data.as_str())
        },
        described.members.len()
    );
    if !described.members.is_empty() {
        out.push('\n');
        out.push_str(&super::table(&members));
    }
    out.push('\n');
    let mut rows = vec![
        [
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOG-END",
            "LAG",
            "MEMBER",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for p in &led {
        let key = (p.topic.clone(), p.partition);
        let committed = offsets.get(&key).copied();
        let end = ends.get(&key).copied().flatten();
        let show = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
        let lag = match (committed, end) {
            (Some(committed), Some(end)) => Some((end - committed).max(0)),
            _ => None,
        };
        rows.push(vec![
            p.topic.clone(),
            p.partition.to_string(),
            show(committed),
            show(end),
            show(lag),
            owner.get(&key).cloned().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    out.push_str(&super::table(&rows));
    super::print_out(&out)?;
    Ok(())
}

/// One line of a reset plan.
struct Planned {
    topic: String,
    partition: i32,
    current: Option<i64>,
    new: i64,
}

fn reset_offsets(client: &mut Client, args: &ResetArgs) -> anyhow::Result<()> {
    if args.topic.len() > TOPICS_MAX {
        bail!("at most {TOPICS_MAX} --topic flags");
    }
    let group = args.group.as_str();
    let coordinator = client.coordinator(group)?;
    if let Some(described) = describe_group(client, coordinator, group)?
        && !described.members.is_empty()
    {
        bail!(
            "group {group} has {} active members (state {}); stop its consumers before \
             resetting its offsets",
            described.members.len(),
            described.group_state.as_str()
        );
    }
    let led = partitions_of(client, &args.topic)?;
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in &led {
        by_topic
            .entry(p.topic.clone())
            .or_default()
            .push(p.partition);
    }
    let current = committed(client, coordinator, group, Some(&by_topic))?;
    let starts = client.list_offsets(&led, EARLIEST_TIMESTAMP)?;
    let ends = client.list_offsets(&led, LATEST_TIMESTAMP)?;
    let by_time = match args.to_datetime {
        Some(ms) => Some(client.list_offsets(&led, ms)?),
        None => None,
    };

    let mut plan = Vec::with_capacity(led.len());
    for p in &led {
        let key = (p.topic.clone(), p.partition);
        let name = format!("{}/{}", p.topic, p.partition);
        let start = starts.get(&key).copied().flatten().context(name.clone())?;
        let end = ends.get(&key).copied().flatten().context(name.clone())?;
        let committed = current.get(&key).copied();
        let wanted = if args.to_earliest {
            start
        } else if args.to_latest {
            end
        } else if let Some(offset) = args.to_offset {
            offset
        } else if let Some(shift) = args.shift_by {
            let Some(committed) = committed else {
                bail!("group {group} has no committed offset on {name} to shift from");
            };
            committed.saturating_add(shift)
        } else if let Some(by_time) = &by_time {
            by_time.get(&key).copied().flatten().unwrap_or(end)
        } else {
            bail!("no reset target given");
        };
        plan.push(Planned {
            topic: p.topic.clone(),
            partition: p.partition,
            current: committed,
            new: wanted.clamp(start, end),
        });
    }

    if !args.dry_run {
        commit(client, coordinator, group, &plan)?;
    }
    let mut rows = vec![
        ["TOPIC", "PARTITION", "CURRENT", "NEW"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for line in &plan {
        rows.push(vec![
            line.topic.clone(),
            line.partition.to_string(),
            line.current
                .map_or_else(|| "-".to_owned(), |o| o.to_string()),
            line.new.to_string(),
        ]);
    }
    let mut out = super::table(&rows);
    out.push_str(if args.dry_run {
        "dry run: nothing committed\n"
    } else {
        "committed\n"
    });
    super::print_out(&out)?;
    Ok(())
}

fn commit(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    plan: &[Planned],
) -> anyhow::Result<()> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for line in plan {
        topics.entry(&line.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(line.partition)
                .with_committed_offset(line.new),
        );
    }
    // Generation -1 and no member id: a commit from outside the group, which
    // a coordinator accepts only while the group has no members.
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(kafka::str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send_to(coordinator, &request, 9)?;
    for topic in &response.topics {
        for partition in &topic.partitions {
            kafka::check(partition.error_code, || {
                format!(
                    "cannot commit group {group}'s offset on {}/{}",
                    topic.name.0.as_str(),
                    partition.partition_index
                )
            })?;
        }
    }
    Ok(())
}

fn delete(client: &mut Client, group: &str) -> anyhow::Result<()> {
    let coordinator = client.coordinator(group)?;
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let response = client.send_to(coordinator, &request, 2)?;
    for result in &response.results {
        kafka::check(result.error_code, || {
            format!("cannot delete group {}", result.group_id.0.as_str())
        })?;
    }
    println!("deleted group {group}");
    Ok(())
}
