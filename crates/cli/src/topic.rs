//! `weir topic`: create, list, describe, delete, alter-config,
//! add-partitions and create-view, each sent by the wire client in `kafka` (CreateTopics,
//! Metadata, ListOffsets, DescribeConfigs, DeleteTopics,
//! IncrementalAlterConfigs, CreatePartitions), so that a refusal shows the
//! broker's own error message. With `--json` each prints one JSON document
//! (docs/cli.md gives the schema).

use std::collections::{BTreeMap, HashMap};

use crate::{CliError, Result, print_json};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use serde_json::json;

use weir_client::{Client, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Led};

/// The most partitions `--partitions` and `--total` may ask for.
const PARTITIONS_MAX: i64 = 100_000;
/// The most `--config` / `--delete-config` flags one command takes.
const CONFIGS_MAX: usize = 1_000;
/// ConfigResource type of a topic in the config APIs.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// How long the broker may take to create or delete topics or partitions
/// before it answers (the requests' `timeout_ms`).
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// The topic configs that make a topic a view of another (CreateTopics).
const VIEW_SOURCE: &str = "weir.view.source";
const VIEW_TAGS: &str = "weir.view.tags";

const TOPIC_EXAMPLES: &str = "\
Examples:
  weir topic create orders --partitions 6 --replication-factor 1 --config retention.ms=86400000
  weir topic list
  weir topic describe orders
  weir topic alter-config orders --config retention.ms=3600000 --delete-config cleanup.policy
  weir topic add-partitions orders --total 12
  weir topic delete orders
  weir topic create-view VIP_ORDERS --source orders --tags \"VIP || GOLD\"
  weir topic describe orders --json | jq '.partitions[].log_end_offset'

With --json every subcommand prints one JSON document on stdout instead of
text; docs/cli.md gives each one's fields.";

/// `weir topic`.
#[derive(Debug, Args)]
#[command(after_help = TOPIC_EXAMPLES)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    /// Print the result as one JSON document (schema in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
}

/// `weir topic` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "\
Examples:
  weir topic create orders
  weir topic create orders --partitions 6 --replication-factor 3
  weir topic create events --config retention.ms=86400000 --config cleanup.policy=delete

Without --partitions or --replication-factor the broker's defaults apply. A
refusal prints the broker's reason, e.g. `InvalidConfig ...: invalid value
'abc' for retention.ms: not an integer`.")]
    Create(CreateArgs),
    /// List topic names, one a line.
    #[command(after_help = "\
Examples:
  weir topic list
  weir topic list --brokers 10.0.0.1:9092
  weir topic list --json")]
    List,
    /// Show a topic's partitions (leader, replicas, ISR, log-start and
    /// log-end offsets) and its configs.
    #[command(after_help = "\
Examples:
  weir topic describe orders
  weir topic describe orders --json

Configs marked `default` are not set on the topic; `topic` ones are.")]
    Describe {
        /// The topic.
        topic: String,
    },
    /// Delete a topic and its records.
    #[command(after_help = "\
Examples:
  weir topic delete orders")]
    Delete {
        /// The topic.
        topic: String,
    },
    /// Set or remove topic configs; the others stay as they are.
    #[command(after_help = "\
Examples:
  weir topic alter-config orders --config retention.ms=3600000
  weir topic alter-config orders --config max.message.bytes=2097152 --delete-config retention.bytes

A deleted config falls back to the broker's default.")]
    AlterConfig(AlterConfigArgs),
    /// Grow a topic to a total number of partitions.
    #[command(after_help = "\
Examples:
  weir topic add-partitions orders --total 12

--total is the partition count after the change, as in Kafka's own tool;
partitions can only be added. Keyed records may map to other partitions
afterwards.")]
    AddPartitions {
        /// The topic.
        topic: String,
        /// The topic's partition count after the change.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=PARTITIONS_MAX))]
        total: i32,
    },
    /// Move partitions' replicas to other brokers while they are served.
    #[command(after_help = "\
Examples:
  weir topic reassign orders --partition 0:2,3,4
  weir topic reassign orders --partition 0:2,3,4 --partition 1:3,4,2 --wait 600
  weir topic reassign orders --partition 0 --cancel

Each new replica copies the partition from its leader; once every new one is
in sync, the replicas left out are dropped and their data removed. The first
broker listed is the preferred leader (see weir cluster elect-leaders).
Without --wait the command returns once the move has started; weir topic
describe shows the replicas, and --wait SECONDS shows a progress bar until
the move completes.")]
    Reassign(crate::replicas::ReassignArgs),
    /// Create a view: a read-only topic serving only the records of a source
    /// topic whose `weir.tag` header matches a tag expression.
    #[command(after_help = "\
Examples:
  weir topic create-view VIP_ORDERS --source orders --tags \"VIP || GOLD\"
  weir consume VIP_ORDERS --group vip-workers

The view has the source's partitions. A consumer of the view gets only the
matching records, at their source offsets (the gaps between them are legal in
Kafka, as compaction leaves them); the broker filters, so the others never
cross the network. Consumer groups, commits and offsets-by-time work as on any
topic; producing to a view is refused. Retention follows the source, which
cannot be deleted while views read it.

The tag expression is RocketMQ's: tags separated by ||, or * for every record.
A record matches when one of its weir.tag headers equals one of the tags.
Kafka clients create the same view with CreateTopics and the configs
weir.view.source and weir.view.tags.")]
    CreateView(CreateViewArgs),
}

/// `weir topic create-view`.
#[derive(Debug, Args)]
pub struct CreateViewArgs {
    /// The view's name.
    view: String,
    /// The topic whose records the view serves.
    #[arg(long)]
    source: String,
    /// The tag expression, e.g. "VIP || GOLD".
    #[arg(long)]
    tags: String,
}

/// `weir topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The topic.
    topic: String,
    /// Number of partitions. [default: the broker's num.partitions]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=PARTITIONS_MAX))]
    partitions: Option<i32>,
    /// Copies of each partition. [default: the broker's default.replication.factor]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=i64::from(i16::MAX)))]
    replication_factor: Option<i32>,
    /// A topic config (repeatable), e.g. --config retention.ms=86400000.
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    config: Vec<(String, String)>,
}

/// `weir topic alter-config`.
#[derive(Debug, Args)]
pub struct AlterConfigArgs {
    /// The topic.
    topic: String,
    /// Set a config (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_key_value,
          required_unless_present = "delete_config")]
    config: Vec<(String, String)>,
    /// Remove a config, so the broker's default applies again (repeatable).
    #[arg(long, value_name = "KEY")]
    delete_config: Vec<String>,
}

/// Runs a `weir topic` command against `brokers`.
pub fn run(brokers: &str, admin: &crate::admin_api::AdminTarget, args: TopicArgs) -> Result<()> {
    // Connecting first fails fast, with exit code 3, when no broker answers.
    let mut client = super::connect(brokers)?;
    let json = args.json;
    match args.command {
        TopicCommand::Create(args) => create(&mut client, args, json),
        TopicCommand::List => list(&mut client, json),
        TopicCommand::Describe { topic } => describe(&mut client, admin, &topic, json),
        TopicCommand::Delete { topic } => delete(&mut client, &topic, json),
        TopicCommand::AlterConfig(args) => alter_config(&mut client, args, json),
        TopicCommand::AddPartitions { topic, total } => {
            add_partitions(&mut client, &topic, total, json)
        }
        TopicCommand::Reassign(args) => crate::replicas::reassign(&mut client, args, json),
        TopicCommand::CreateView(args) => create_view(&mut client, args, json),
    }
}

fn create(client: &mut Client, args: CreateArgs, json: bool) -> Result<()> {
    if args.config.len() > CONFIGS_MAX {
        return Err(super::usage(format!(
            "at most {CONFIGS_MAX} --config flags"
        )));
    }
    let replication_factor = match args.replication_factor {
        Some(factor) => i16::try_from(factor).map_err(CliError::ReplicationFactor)?,
        None => -1,
    };
    send_create(
        client,
        &args.topic,
        (args.partitions.unwrap_or(-1), replication_factor),
        &args.config,
    )?;
    if json {
        print_json(&json!({ "topic": args.topic, "created": true }))
    } else {
        println!("created topic {}", args.topic);
        Ok(())
    }
}

fn create_view(client: &mut Client, args: CreateViewArgs, json: bool) -> Result<()> {
    let configs = [
        (VIEW_SOURCE.to_owned(), args.source.clone()),
        (VIEW_TAGS.to_owned(), args.tags.clone()),
    ];
    send_create(client, &args.view, (-1, -1), &configs)?;
    if json {
        print_json(&json!({
            "view": args.view,
            "source": args.source,
            "tags": args.tags,
            "created": true,
        }))
    } else {
        println!(
            "created view {} of topic {} with tags {}",
            args.view, args.source, args.tags
        );
        Ok(())
    }
}

/// CreateTopics for one topic; -1 takes the broker's (or a view's source's)
/// partition count and replication factor.
fn send_create(
    client: &mut Client,
    name: &str,
    (partitions, replication_factor): (i32, i16),
    configs: &[(String, String)],
) -> Result<()> {
    let topic = CreatableTopic::default()
        .with_name(TopicName(weir_client::str_bytes(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(key, value)| {
                    CreatableTopicConfig::default()
                        .with_name(weir_client::str_bytes(key))
                        .with_value(Some(weir_client::str_bytes(value)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    // v7 is the newest; every request field is set above.
    let response = client.send_to_controller(&request, 7)?;
    for result in &response.topics {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!("cannot create topic {}", result.name.0.as_str())
        })?;
    }
    Ok(())
}

fn list(client: &mut Client, json: bool) -> Result<()> {
    let metadata = client.metadata(None)?;
    let mut names: Vec<String> = metadata
        .topics
        .iter()
        .filter_map(|topic| topic.name.as_ref().map(|name| name.0.as_str().to_owned()))
        .collect();
    names.sort();
    if json {
        return print_json(&json!({ "topics": names }));
    }
    let mut out = String::new();
    for name in names {
        out.push_str(&name);
        out.push('\n');
    }
    super::print_out(&out)?;
    Ok(())
}

/// One partition as `describe` shows it.
struct PartitionRow {
    partition: i32,
    leader: Option<i32>,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start: Option<i64>,
    log_end: Option<i64>,
}

fn describe(
    client: &mut Client,
    admin: &crate::admin_api::AdminTarget,
    topic: &str,
    json: bool,
) -> Result<()> {
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    let Some(found) = metadata.topics.first() else {
        return Err(CliError::NoMetadata {
            topic: topic.to_owned(),
        });
    };
    weir_client::check(found.error_code, || format!("topic {topic}"))?;
    let mut partitions = found.partitions.clone();
    partitions.sort_by_key(|p| p.partition_index);
    let led: Vec<Led> = partitions
        .iter()
        .filter(|p| p.leader_id.0 >= 0)
        .map(|p| Led {
            topic: topic.to_owned(),
            partition: p.partition_index,
            leader: p.leader_id.0,
        })
        .collect();
    let starts = client.list_offsets(&led, EARLIEST_TIMESTAMP)?;
    let ends = client.list_offsets(&led, LATEST_TIMESTAMP)?;
    let configs = describe_configs(client, topic)?;
    // A view's records, pending ones included, are its source's.
    let delayed = match view_of(&configs) {
        Some(_) => None,
        None => Some(
            crate::admin_api::AdminApi::new(admin)
                .and_then(|api| crate::delayed::pending(&api, topic, None, 0)),
        ),
    };

    let ids = |nodes: &[BrokerId]| nodes.iter().map(|id| id.0).collect::<Vec<i32>>();
    let offset = |offsets: &HashMap<(String, i32), Option<i64>>, p: i32| {
        offsets.get(&(topic.to_owned(), p)).copied().flatten()
    };
    let rows: Vec<PartitionRow> = partitions
        .iter()
        .map(|p| PartitionRow {
            partition: p.partition_index,
            leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
            replicas: ids(&p.replica_nodes),
            isr: ids(&p.isr_nodes),
            log_start: offset(&starts, p.partition_index),
            log_end: offset(&ends, p.partition_index),
        })
        .collect();
    if json {
        let mut described = describe_json(topic, &rows, &configs);
        if let Some(delayed) = &delayed {
            described["delayed"] = match delayed {
                Ok(answer) => json!({
                    "pending": answer["pending"],
                    "next_due_ms": answer["next_due_ms"],
                    "partitions": answer["partitions"],
                }),
                Err(err) => json!({ "error": err.to_string() }),
            };
        }
        return print_json(&described);
    }

    let joined = |nodes: &[i32]| {
        nodes
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let show = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
    let mut out = format!("topic: {topic}\n");
    if let Some((source, tags)) = view_of(&configs) {
        out.push_str(&format!("view of: {source}\ntags: {tags}\n"));
    }
    match &delayed {
        Some(Ok(answer)) => {
            out.push_str(&crate::delayed::summary_line(answer));
            out.push('\n');
        }
        Some(Err(err)) => out.push_str(&format!("delayed records pending: unknown ({err})\n")),
        None => {}
    }
    out.push_str(&format!("partitions: {}\n\n", rows.len()));
    let mut table = vec![
        [
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "LOG-END",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for row in &rows {
        table.push(vec![
            row.partition.to_string(),
            row.leader
                .map_or_else(|| "none".to_owned(), |l| l.to_string()),
            joined(&row.replicas),
            joined(&row.isr),
            show(row.log_start),
            show(row.log_end),
        ]);
    }
    out.push_str(&super::table(&table));
    out.push_str("\nconfigs:\n");
    let mut table = vec![["NAME", "VALUE", "SOURCE"].map(str::to_owned).to_vec()];
    for (name, config) in configs {
        table.push(vec![
            name,
            config.value.unwrap_or_else(|| "-".to_owned()),
            config.source.to_owned(),
        ]);
    }
    out.push_str(&super::table(&table));
    super::print_out(&out)?;
    Ok(())
}

fn describe_json(
    topic: &str,
    rows: &[PartitionRow],
    configs: &BTreeMap<String, Config>,
) -> serde_json::Value {
    json!({
        "topic": topic,
        "view": view_of(configs).map(|(source, tags)| json!({ "source": source, "tags": tags })),
        "partitions": rows.iter().map(|row| json!({
            "partition": row.partition,
            "leader": row.leader,
            "replicas": row.replicas,
            "isr": row.isr,
            "log_start_offset": row.log_start,
            "log_end_offset": row.log_end,
        })).collect::<Vec<_>>(),
        "configs": configs.iter().map(|(name, config)| json!({
            "name": name,
            "value": config.value,
            "source": config.source,
        })).collect::<Vec<_>>(),
    })
}

/// A view's source topic and tag expression, from its configs.
fn view_of(configs: &BTreeMap<String, Config>) -> Option<(&str, &str)> {
    let value = |key| configs.get(key).and_then(|c: &Config| c.value.as_deref());
    Some((value(VIEW_SOURCE)?, value(VIEW_TAGS).unwrap_or("*")))
}

/// A topic config as `describe` shows it.
struct Config {
    /// `None` when unset or sensitive.
    value: Option<String>,
    /// `topic`, `broker`, `default` or `unknown`.
    source: &'static str,
}

/// The topic's configs by name (DescribeConfigs).
fn describe_configs(client: &mut Client, topic: &str) -> Result<BTreeMap<String, Config>> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(weir_client::str_bytes(topic))
            .with_configuration_keys(None),
    ]);
    // v4 is the newest; its request fields are all set above.
    let response = client.send(&request, 4)?;
    let mut configs = BTreeMap::new();
    for result in response.results {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!("cannot describe the configs of topic {topic}")
        })?;
        for entry in result.configs {
            // Kafka's ConfigSource numbering (DescribeConfigs v1+).
            let source = match entry.config_source {
                1 => "topic",
                2..=4 => "broker",
                5 => "default",
                _ => "unknown",
            };
            let value = entry
                .value
                .filter(|_| !entry.is_sensitive)
                .map(|v| v.as_str().to_owned());
            configs.insert(entry.name.as_str().to_owned(), Config { value, source });
        }
    }
    Ok(configs)
}

fn delete(client: &mut Client, topic: &str, json: bool) -> Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(weir_client::str_bytes(topic))])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    // v5 is the newest that names topics in `topic_names`.
    let response = client.send_to_controller(&request, 5)?;
    for result in &response.responses {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!(
                "cannot delete topic {}",
                result.name.as_ref().map_or(topic, |n| n.0.as_str())
            )
        })?;
    }
    if json {
        print_json(&json!({ "topic": topic, "deleted": true }))
    } else {
        println!("deleted topic {topic}");
        Ok(())
    }
}

fn alter_config(client: &mut Client, args: AlterConfigArgs, json: bool) -> Result<()> {
    if args.config.len() + args.delete_config.len() > CONFIGS_MAX {
        return Err(super::usage(format!(
            "at most {CONFIGS_MAX} --config and --delete-config flags"
        )));
    }
    let mut changes: Vec<AlterableConfig> = args
        .config
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(weir_client::str_bytes(key))
                .with_config_operation(OP_SET)
                .with_value(Some(weir_client::str_bytes(value)))
        })
        .collect();
    changes.extend(args.delete_config.iter().map(|key| {
        AlterableConfig::default()
            .with_name(weir_client::str_bytes(key))
            .with_config_operation(OP_DELETE)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(weir_client::str_bytes(&args.topic))
            .with_configs(changes),
    ]);
    let response = client.send(&request, 1)?;
    for result in &response.responses {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!(
                "cannot alter the configs of topic {}",
                result.resource_name.as_str()
            )
        })?;
    }
    if json {
        let set: Vec<&str> = args.config.iter().map(|(key, _)| key.as_str()).collect();
        return print_json(&json!({
            "topic": args.topic,
            "set": set,
            "deleted": args.delete_config,
        }));
    }
    println!(
        "altered topic {}: {} set, {} deleted",
        args.topic,
        args.config.len(),
        args.delete_config.len()
    );
    Ok(())
}

fn add_partitions(client: &mut Client, topic: &str, total: i32, json: bool) -> Result<()> {
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(weir_client::str_bytes(topic)))
                .with_count(total)
                .with_assignments(None),
        ])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    // v3 is the newest; its request fields are all set above.
    let response = client.send_to_controller(&request, 3)?;
    for result in &response.results {
        weir_client::check_message(result.error_code, result.error_message.as_ref(), || {
            format!(
                "cannot grow topic {} to {total} partitions",
                result.name.0.as_str()
            )
        })?;
    }
    if json {
        print_json(&json!({ "topic": topic, "partitions": total }))
    } else {
        println!("topic {topic} now has {total} partitions");
        Ok(())
    }
}
