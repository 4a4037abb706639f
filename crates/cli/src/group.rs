//! `weir group`: list, describe, reset-offsets and delete consumer groups,
//! and set and show group configs (IncrementalAlterConfigs and
//! DescribeConfigs on the GROUP resource), through the group APIs (ListGroups, ConsumerGroupDescribe for KIP-848
//! groups and DescribeGroups for classic ones, OffsetFetch, OffsetCommit,
//! DeleteGroups), sent to the group's coordinator. With `--json` each
//! prints one JSON document (docs/cli.md gives the schema). Share groups
//! are described by `share`.

mod share;

use std::collections::{BTreeMap, BTreeSet};

use crate::{CliError, Result, print_json};
use bytes::Buf as _;
use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DeleteGroupsRequest,
    DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::Decodable as _;
use serde_json::json;

use weir_client::{Client, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Led};

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
  weir group delete billing
  weir group config set orders-workers share.delivery.count.limit=3
  weir group describe billing --json | jq '.partitions[] | select(.lag > 0)'

With --json every subcommand prints one JSON document on stdout instead of
text; docs/cli.md gives each one's fields.";

/// `weir group`.
#[derive(Debug, Args)]
#[command(after_help = GROUP_EXAMPLES)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    /// Print the result as one JSON document (schema in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
}

/// `weir group` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups of every broker, with their state.
    #[command(after_help = "\
Examples:
  weir group list
  weir group list --json")]
    List,
    /// Show a group's members and assignment, and per partition the committed
    /// offset, the log-end offset and the lag.
    #[command(after_help = "\
Examples:
  weir group describe billing
  weir group describe billing --json

Members of KIP-848 groups (group.protocol=consumer) are described with
ConsumerGroupDescribe, classic ones with DescribeGroups; both show each
member's HOST and ASSIGNMENT. LAG is LOG-END minus COMMITTED; `-` where the
group has committed nothing.")]
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
  weir group reset-offsets billing --topic orders --to-datetime 2026-11-24T10:00:00+02:00

--to-datetime takes an RFC 3339 time with Z or a +HH:MM/-HH:MM offset; a time
without a zone is UTC. Offsets are kept between each partition's log-start and log-end offsets.
--to-datetime moves to the first record at or after the time (the log end if
none is that recent). --dry-run prints the plan and commits nothing.")]
    ResetOffsets(ResetArgs),
    /// Set, remove or show a group's configs (share.*,
    /// errors.deadletterqueue.*, weir.share.redelivery.backoff.ms), as
    /// `kafka-configs.sh --entity-type groups` does. The group need not
    /// exist yet.
    #[command(
        subcommand,
        after_help = "\
Examples:
  weir group config set orders-workers share.delivery.count.limit=3
  weir group config set orders-workers weir.share.redelivery.backoff.ms=1000,5000,10000,30000,60000,120000
  weir group config set orders-workers share.auto.offset.reset=earliest
  weir group config set orders-workers errors.deadletterqueue.copy.record.enable=true
  weir group config get orders-workers
  weir group config delete orders-workers share.delivery.count.limit

docs/operations.md lists the group configs and their defaults."
    )]
    Config(ConfigCommand),
    /// Delete a group and its committed offsets. The group must be empty.
    #[command(after_help = "\
Examples:
  weir group delete billing")]
    Delete {
        /// The group.
        group: String,
    },
}

/// `weir group config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set group configs (IncrementalAlterConfigs SET); the broker checks
    /// each value and refuses the whole change if one is wrong.
    #[command(after_help = "\
Examples:
  weir group config set orders-workers share.record.lock.duration.ms=15000 share.delivery.count.limit=3")]
    Set {
        /// The group.
        group: String,
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Show every group config with its value and where it comes from
    /// (group: set on the group; default: the broker's or Weir's).
    #[command(after_help = "\
Examples:
  weir group config get orders-workers
  weir group config get orders-workers --json")]
    Get {
        /// The group.
        group: String,
    },
    /// Remove group configs, so they take the broker's default again
    /// (IncrementalAlterConfigs DELETE).
    #[command(after_help = "\
Examples:
  weir group config delete orders-workers share.delivery.count.limit")]
    Delete {
        /// The group.
        group: String,
        /// Config names.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
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
    /// To the first record at or after this time: RFC 3339 with Z or an
    /// offset (2026-11-24T10:00:00+02:00); a time without a zone is UTC.
    #[arg(long, value_name = "TIME", value_parser = super::parse_datetime_ms)]
    to_datetime: Option<i64>,
    /// Print the plan and commit nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `weir group` command against `brokers`.
pub fn run(brokers: &str, admin: &crate::admin_api::AdminTarget, args: GroupArgs) -> Result<()> {
    let mut client = super::connect(brokers)?;
    let json = args.json;
    match args.command {
        GroupCommand::List => list(&mut client, json),
        GroupCommand::Describe { group } => {
            if share::describe(&mut client, admin, &group, json)? {
                return Ok(());
            }
            describe(&mut client, &group, json)
        }
        GroupCommand::ResetOffsets(args) => reset_offsets(&mut client, &args, json),
        GroupCommand::Delete { group } => delete(&mut client, &group, json),
        GroupCommand::Config(command) => config(&mut client, command, json),
    }
}

/// Kafka's ConfigResource type for a group.
const RESOURCE_TYPE_GROUP: i8 = 32;
/// The most configs one `weir group config` command names.
const CONFIGS_MAX: usize = 100;

fn config(client: &mut Client, command: ConfigCommand, json: bool) -> Result<()> {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let (group, changes) = match command {
        ConfigCommand::Get { group } => return config_get(client, &group, json),
        ConfigCommand::Set { group, configs } => {
            let changes: Vec<(String, Option<String>)> =
                configs.into_iter().map(|(k, v)| (k, Some(v))).collect();
            (group, changes)
        }
        ConfigCommand::Delete { group, keys } => {
            (group, keys.into_iter().map(|k| (k, None)).collect())
        }
    };
    if changes.len() > CONFIGS_MAX {
        return Err(super::usage(format!(
            "at most {CONFIGS_MAX} configs at once"
        )));
    }
    let configs = changes
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(weir_client::str_bytes(key))
                // Kafka's operations: 0 SET, 1 DELETE.
                .with_config_operation(if value.is_some() { 0 } else { 1 })
                .with_value(value.as_deref().map(weir_client::str_bytes))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_GROUP)
            .with_resource_name(weir_client::str_bytes(&group))
            .with_configs(configs),
    ]);
    let response = client.send(&request, 1)?;
    for result in &response.responses {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!("cannot alter the configs of group {group}")
        })?;
    }
    let set: Vec<&str> = changes
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    let deleted: Vec<&str> = changes
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    if json {
        return print_json(&json!({ "group": group, "set": set, "deleted": deleted }));
    }
    println!(
        "altered group {group}: {} set, {} deleted",
        set.len(),
        deleted.len()
    );
    Ok(())
}

fn config_get(client: &mut Client, group: &str, json: bool) -> Result<()> {
    let rows = group_configs(client, group)?;
    if json {
        let configs: Vec<_> = rows
            .iter()
            .map(|(name, value, source)| json!({ "name": name, "value": value, "source": source }))
            .collect();
        return print_json(&json!({ "group": group, "configs": configs }));
    }
    let width = rows
        .iter()
        .map(|(n, _, _)| n.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}  {:7}  VALUE", "NAME", "SOURCE");
    for (name, value, source) in rows {
        println!("{name:width$}  {source:7}  {value}");
    }
    Ok(())
}

/// `group`'s configs: (name, value, source: `group` or `default`).
fn group_configs(client: &mut Client, group: &str) -> Result<Vec<(String, String, &'static str)>> {
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_GROUP)
            .with_resource_name(weir_client::str_bytes(group))
            .with_configuration_keys(None),
    ]);
    let response = client.send(&request, 4)?;
    let mut rows = Vec::new();
    for result in response.results {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!("cannot describe the configs of group {group}")
        })?;
        for entry in result.configs {
            // Kafka's ConfigSource numbering: 8 is GROUP_CONFIG.
            let source = if entry.config_source == 8 {
                "group"
            } else {
                "default"
            };
            let value = entry
                .value
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            rows.push((entry.name.as_str().to_owned(), value, source));
        }
    }
    Ok(rows)
}

/// `None` for an empty string, as the JSON documents show absent values.
fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn group_id(group: &str) -> GroupId {
    GroupId(weir_client::str_bytes(group))
}

fn list(client: &mut Client, json: bool) -> Result<()> {
    let metadata = client.metadata(Some(&[]))?;
    // Group id -> (state, protocol type); an empty string is "not given".
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    for broker in &metadata.brokers {
        // v4 is the newest without the group type filter.
        let response = client.send_to(broker.node_id.0, &ListGroupsRequest::default(), 4)?;
        weir_client::check(response.error_code, || {
            format!("ListGroups at broker {}", broker.node_id.0)
        })?;
        for group in response.groups {
            groups.insert(
                group.group_id.0.as_str().to_owned(),
                (
                    group.group_state.as_str().to_owned(),
                    group.protocol_type.as_str().to_owned(),
                ),
            );
        }
    }
    if json {
        return print_json(&json!({
            "groups": groups.iter().map(|(group, (state, protocol_type))| json!({
                "group": group,
                "state": non_empty(state),
                "protocol_type": non_empty(protocol_type),
            })).collect::<Vec<_>>(),
        }));
    }
    let dash = |text: &str| non_empty(text).unwrap_or("-").to_owned();
    let mut rows = vec![
        ["GROUP", "STATE", "PROTOCOL-TYPE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (group, (state, protocol_type)) in &groups {
        rows.push(vec![group.clone(), dash(state), dash(protocol_type)]);
    }
    super::print_out(&super::table(&rows))?;
    Ok(())
}

/// Which rebalance protocol a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupProtocol {
    /// JoinGroup/SyncGroup, described by DescribeGroups.
    Classic,
    /// KIP-848 (`group.protocol=consumer`), described by ConsumerGroupDescribe.
    Consumer,
}

impl GroupProtocol {
    fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

/// A group as its coordinator describes it, whatever its protocol.
struct Described {
    group_protocol: GroupProtocol,
    state: String,
    /// The classic protocol type (`consumer`, `connect`, ...); empty when none.
    protocol_type: String,
    /// The classic protocol (the assignor, once stable) or the KIP-848
    /// server-side assignor; empty when none.
    assignor: String,
    members: Vec<Member>,
}

/// A group member.
struct Member {
    member_id: String,
    client_id: String,
    /// The address the member connected from, as the broker saw it.
    host: String,
    /// Its partitions, sorted.
    assignment: Vec<(String, i32)>,
}

impl Member {
    /// A member as either describe API reports it; sorts its partitions.
    fn new(
        member_id: &str,
        client_id: &str,
        host: &str,
        mut assignment: Vec<(String, i32)>,
    ) -> Self {
        assignment.sort();
        Self {
            member_id: member_id.to_owned(),
            client_id: client_id.to_owned(),
            host: host.to_owned(),
            assignment,
        }
    }
}

/// The group as its coordinator describes it, or `None` when it does not
/// exist. KIP-848 groups are asked with ConsumerGroupDescribe, which carries
/// their assignment; a coordinator that answers GROUP_ID_NOT_FOUND there (a
/// classic group, as Kafka answers) or does not serve it is asked with
/// DescribeGroups.
fn describe_group(client: &mut Client, coordinator: i32, group: &str) -> Result<Option<Described>> {
    if client.serves::<ConsumerGroupDescribeRequest>(coordinator)?
        && let Some(described) = describe_consumer_group(client, coordinator, group)?
    {
        return Ok(Some(described));
    }
    describe_classic_group(client, coordinator, group)
}

/// A KIP-848 group, or `None` when the coordinator has no consumer group
/// of that id.
fn describe_consumer_group(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> Result<Option<Described>> {
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
    // v1 is the newest; it only adds response fields.
    let response = client.send_to(coordinator, &request, 1)?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(CliError::Failed(format!(
            "ConsumerGroupDescribe answered nothing for group {group}"
        )));
    };
    if described.error_code == GROUP_ID_NOT_FOUND {
        return Ok(None);
    }
    weir_client::check_message(
        described.error_code,
        described.error_message.as_ref(),
        || format!("group {group}"),
    )?;
    let members = described
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<(String, i32)> = m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|topic| {
                    let name = topic.topic_name.0.as_str().to_owned();
                    topic.partitions.iter().map(move |p| (name.clone(), *p))
                })
                .collect();
            Member::new(&m.member_id, &m.client_id, &m.client_host, assignment)
        })
        .collect();
    Ok(Some(Described {
        group_protocol: GroupProtocol::Consumer,
        state: described.group_state.as_str().to_owned(),
        protocol_type: "consumer".to_owned(),
        assignor: described.assignor_name.as_str().to_owned(),
        members,
    }))
}

/// A classic group, or `None` when it does not exist.
fn describe_classic_group(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> Result<Option<Described>> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let response = client.send_to(coordinator, &request, 6)?;
    let Some(described) = response.groups.into_iter().next() else {
        return Err(CliError::Failed(format!(
            "DescribeGroups answered nothing for group {group}"
        )));
    };
    if described.error_code == GROUP_ID_NOT_FOUND || described.group_state.as_str() == "Dead" {
        return Ok(None);
    }
    weir_client::check_message(
        described.error_code,
        described.error_message.as_ref(),
        || format!("group {group}"),
    )?;
    let protocol_type = described.protocol_type.as_str().to_owned();
    let members = described
        .members
        .iter()
        .map(|m| {
            Member::new(
                &m.member_id,
                &m.client_id,
                &m.client_host,
                assignment(&protocol_type, &m.member_assignment),
            )
        })
        .collect();
    Ok(Some(Described {
        group_protocol: GroupProtocol::Classic,
        state: described.group_state.as_str().to_owned(),
        protocol_type,
        assignor: described.protocol_data.as_str().to_owned(),
        members,
    }))
}

/// The group's committed offsets: of the given partitions by topic, or of
/// every partition it has committed when `None`.
fn committed(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> Result<BTreeMap<(String, i32), i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(topics.map(|partitions| {
            partitions
                .iter()
                .map(|(name, indexes)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(weir_client::str_bytes(name)))
                        .with_partition_indexes(indexes.clone())
                })
                .collect()
        }));
    // v7 is the newest with one group per request.
    let response = client.send_to(coordinator, &request, 7)?;
    weir_client::check(response.error_code, || {
        format!("committed offsets of group {group}")
    })?;
    let mut offsets = BTreeMap::new();
    for topic in response.topics {
        let name = topic.name.0.as_str().to_owned();
        for partition in topic.partitions {
            let index = partition.partition_index;
            weir_client::check(partition.error_code, || {
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
fn partitions_of(client: &mut Client, topics: &[String]) -> Result<Vec<Led>> {
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
        weir_client::check(topic.error_code, || format!("topic {name}"))?;
        for p in &topic.partitions {
            if p.leader_id.0 < 0 {
                return Err(CliError::Failed(format!(
                    "partition {name}/{} has no leader",
                    p.partition_index
                )));
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

fn describe(client: &mut Client, group: &str, json: bool) -> Result<()> {
    let coordinator = client.coordinator(group)?;
    let described = describe_group(client, coordinator, group)?;
    let offsets = committed(client, coordinator, group, None)?;
    let Some(described) = described.or_else(|| {
        // A group without members may still hold committed offsets.
        (!offsets.is_empty()).then(|| Described {
            group_protocol: GroupProtocol::Classic,
            state: "Empty".to_owned(),
            protocol_type: String::new(),
            assignor: String::new(),
            members: Vec::new(),
        })
    }) else {
        return Err(CliError::Failed(format!("group {group} does not exist")));
    };

    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for member in &described.members {
        for key in &member.assignment {
            owner.insert(key.clone(), member.member_id.clone());
        }
    }
    let topics: BTreeSet<String> = offsets
        .keys()
        .chain(owner.keys())
        .map(|(topic, _)| topic.clone())
        .collect();
    let topics: Vec<String> = topics.into_iter().collect();
    let led = partitions_of(client, &topics)?;
    let ends = client.list_offsets(&led, LATEST_TIMESTAMP)?;
    let partitions: Vec<Lag> = led
        .iter()
        .map(|p| {
            let key = (p.topic.clone(), p.partition);
            let committed = offsets.get(&key).copied();
            let log_end = ends.get(&key).copied().flatten();
            Lag {
                topic: p.topic.clone(),
                partition: p.partition,
                committed,
                log_end,
                lag: committed.zip(log_end).map(|(c, e)| (e - c).max(0)),
                member: owner.get(&key).cloned(),
            }
        })
        .collect();
    let state = non_empty(&described.state).unwrap_or("Empty");
    if json {
        return print_json(&describe_json(group, state, &described, &partitions));
    }

    let mut out = format!(
        "group: {group}\nstate: {state}\ngroup protocol: {}\nprotocol: {}\nmembers: {}\n",
        described.group_protocol.name(),
        match non_empty(&described.assignor) {
            Some(assignor) => format!("{}/{assignor}", described.protocol_type),
            None => "-".to_owned(),
        },
        described.members.len()
    );
    if !described.members.is_empty() {
        let mut members = vec![
            ["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for member in &described.members {
            let shown: Vec<String> = member
                .assignment
                .iter()
                .map(|(t, p)| format!("{t}/{p}"))
                .collect();
            members.push(vec![
                member.member_id.clone(),
                non_empty(&member.client_id).unwrap_or("-").to_owned(),
                non_empty(&member.host).unwrap_or("-").to_owned(),
                if shown.is_empty() {
                    "-".to_owned()
                } else {
                    shown.join(",")
                },
            ]);
        }
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
    let show = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
    for p in &partitions {
        rows.push(vec![
            p.topic.clone(),
            p.partition.to_string(),
            show(p.committed),
            show(p.log_end),
            show(p.lag),
            p.member.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    out.push_str(&super::table(&rows));
    super::print_out(&out)?;
    Ok(())
}

/// A partition's committed offset and lag, as `describe` shows them.
struct Lag {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    lag: Option<i64>,
    member: Option<String>,
}

fn describe_json(
    group: &str,
    state: &str,
    described: &Described,
    partitions: &[Lag],
) -> serde_json::Value {
    json!({
        "group": group,
        "state": state,
        "group_protocol": described.group_protocol.name(),
        "protocol_type": non_empty(&described.protocol_type),
        "assignor": non_empty(&described.assignor),
        "members": described.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "host": m.host,
            "assignment": m.assignment.iter().map(|(topic, partition)| json!({
                "topic": topic,
                "partition": partition,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "partitions": partitions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "committed_offset": p.committed,
            "log_end_offset": p.log_end,
            "lag": p.lag,
            "member_id": p.member,
        })).collect::<Vec<_>>(),
    })
}

/// One line of a reset plan.
struct Planned {
    topic: String,
    partition: i32,
    current: Option<i64>,
    new: i64,
}

fn reset_offsets(client: &mut Client, args: &ResetArgs, json: bool) -> Result<()> {
    if args.topic.len() > TOPICS_MAX {
        return Err(super::usage(format!("at most {TOPICS_MAX} --topic flags")));
    }
    let group = args.group.as_str();
    let coordinator = client.coordinator(group)?;
    if let Some(described) = describe_group(client, coordinator, group)?
        && !described.members.is_empty()
    {
        return Err(CliError::Failed(format!(
            "group {group} has {} active members (state {}); stop its consumers before \
             resetting its offsets",
            described.members.len(),
            described.state
        )));
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
        let start = starts
            .get(&key)
            .copied()
            .flatten()
            .ok_or_else(|| CliError::Failed(name.clone()))?;
        let end = ends
            .get(&key)
            .copied()
            .flatten()
            .ok_or_else(|| CliError::Failed(name.clone()))?;
        let committed = current.get(&key).copied();
        let wanted = if args.to_earliest {
            start
        } else if args.to_latest {
            end
        } else if let Some(offset) = args.to_offset {
            offset
        } else if let Some(shift) = args.shift_by {
            let Some(committed) = committed else {
                return Err(CliError::Failed(format!(
                    "group {group} has no committed offset on {name} to shift from"
                )));
            };
            committed.saturating_add(shift)
        } else if let Some(by_time) = &by_time {
            by_time.get(&key).copied().flatten().unwrap_or(end)
        } else {
            return Err(CliError::Failed("no reset target given".to_owned()));
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
    if json {
        return print_json(&json!({
            "group": group,
            "dry_run": args.dry_run,
            "committed": !args.dry_run,
            "plan": plan.iter().map(|line| json!({
                "topic": line.topic,
                "partition": line.partition,
                "current_offset": line.current,
                "new_offset": line.new,
            })).collect::<Vec<_>>(),
        }));
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

fn commit(client: &mut Client, coordinator: i32, group: &str, plan: &[Planned]) -> Result<()> {
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
                        .with_name(TopicName(weir_client::str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send_to(coordinator, &request, 9)?;
    for topic in &response.topics {
        for partition in &topic.partitions {
            weir_client::check(partition.error_code, || {
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

fn delete(client: &mut Client, group: &str, json: bool) -> Result<()> {
    let coordinator = client.coordinator(group)?;
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let response = client.send_to(coordinator, &request, 2)?;
    for result in &response.results {
        weir_client::check(result.error_code, || {
            format!("cannot delete group {}", result.group_id.0.as_str())
        })?;
    }
    if json {
        return print_json(&json!({ "group": group, "deleted": true }));
    }
    println!("deleted group {group}");
    Ok(())
}
