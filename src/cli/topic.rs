//! `weir topic`: create, list, describe, delete, alter-config and
//! add-partitions. librdkafka's admin client does what it can (create,
//! delete, partitions, describing configs); the wire client in `kafka` does
//! the rest (metadata with replicas and ISR, log-start and log-end offsets,
//! incremental config changes).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use rdkafka::admin::{
    AdminClient, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;

use super::kafka::{self, Client, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Led};

/// The most partitions `--partitions` and `--total` may ask for.
const PARTITIONS_MAX: i64 = 100_000;
/// The most `--config` / `--delete-config` flags one command takes.
const CONFIGS_MAX: usize = 1_000;
/// ConfigResource type of a topic in the config APIs.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

const TOPIC_EXAMPLES: &str = "\
Examples:
  weir topic create orders --partitions 6 --replication-factor 1 --config retention.ms=86400000
  weir topic list
  weir topic describe orders
  weir topic alter-config orders --config retention.ms=3600000 --delete-config cleanup.policy
  weir topic add-partitions orders --total 12
  weir topic delete orders";

/// `weir topic` subcommands.
#[derive(Debug, Subcommand)]
#[command(after_help = TOPIC_EXAMPLES)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "\
Examples:
  weir topic create orders
  weir topic create orders --partitions 6 --replication-factor 3
  weir topic create events --config retention.ms=86400000 --config cleanup.policy=delete

Without --partitions or --replication-factor the broker's defaults apply.")]
    Create(CreateArgs),
    /// List topic names, one a line.
    #[command(after_help = "\
Examples:
  weir topic list
  weir topic list --brokers 10.0.0.1:9092")]
    List,
    /// Show a topic's partitions (leader, replicas, ISR, log-start and
    /// log-end offsets) and its configs.
    #[command(after_help = "\
Examples:
  weir topic describe orders

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
pub fn run(brokers: &str, command: TopicCommand) -> anyhow::Result<()> {
    // Every command first checks that a broker answers, so that an
    // unreachable cluster fails fast with exit code 3.
    let mut client = Client::connect(brokers)?;
    match command {
        TopicCommand::Create(args) => create(brokers, args),
        TopicCommand::List => list(&mut client),
        TopicCommand::Describe { topic } => describe(brokers, &mut client, &topic),
        TopicCommand::Delete { topic } => delete(brokers, &topic),
        TopicCommand::AlterConfig(args) => alter_config(&mut client, args),
        TopicCommand::AddPartitions { topic, total } => add_partitions(brokers, &topic, total),
    }
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    super::rdkafka_config(brokers)
        .create()
        .context("cannot create the admin client")
}

fn create(brokers: &str, args: CreateArgs) -> anyhow::Result<()> {
    if args.config.len() > CONFIGS_MAX {
        bail!("at most {CONFIGS_MAX} --config flags");
    }
    let replication = TopicReplication::Fixed(args.replication_factor.unwrap_or(-1));
    let mut topic = NewTopic::new(&args.topic, args.partitions.unwrap_or(-1), replication);
    for (key, value) in &args.config {
        topic = topic.set(key, value);
    }
    let results = super::runtime()?
        .block_on(admin(brokers)?.create_topics([&topic], &super::admin_options()))
        .with_context(|| format!("cannot create topic {}", args.topic))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("cannot create topic {name}: {code}");
        }
    }
    println!("created topic {}", args.topic);
    Ok(())
}

fn list(client: &mut Client) -> anyhow::Result<()> {
    let metadata = client.metadata(None)?;
    let mut names: Vec<String> = metadata
        .topics
        .iter()
        .filter_map(|topic| topic.name.as_ref().map(|name| name.0.as_str().to_owned()))
        .collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        out.push_str(&name);
        out.push('\n');
    }
    super::print_out(&out)?;
    Ok(())
}

fn describe(brokers: &str, client: &mut Client, topic: &str) -> anyhow::Result<()> {
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    let Some(found) = metadata.topics.first() else {
        bail!("the broker returned no metadata for topic {topic}");
    };
    kafka::check(found.error_code, || format!("topic {topic}"))?;
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
    let configs = describe_configs(brokers, topic)?;

    let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
        nodes
            .iter()
            .map(|id| id.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let offset = |offsets: &std::collections::HashMap<(String, i32), Option<i64>>, p: i32| {
        offsets
            .get(&(topic.to_owned(), p))
            .copied()
            .flatten()
            .map_or_else(|| "-".to_owned(), |o| o.to_string())
    };
    let mut out = format!("topic: {topic}\npartitions: {}\n\n", partitions.len());
    let mut rows = vec![
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
    for p in &partitions {
        let index = p.partition_index;
        rows.push(vec![
            index.to_string(),
            if p.leader_id.0 >= 0 {
                p.leader_id.0.to_string()
            } else {
                "none".to_owned()
            },
            ids(&p.replica_nodes),
            ids(&p.isr_nodes),
            offset(&starts, index),
            offset(&ends, index),
        ]);
    }
    out.push_str(&super::table(&rows));
    out.push_str("\nconfigs:\n");
    let mut rows = vec![["NAME", "VALUE", "SOURCE"].map(str::to_owned).to_vec()];
    for (name, (value, source)) in configs {
        rows.push(vec![name, value, source.to_owned()]);
    }
    out.push_str(&super::table(&rows));
    super::print_out(&out)?;
    Ok(())
}

/// The topic's configs by name: value (`-` when unset or sensitive) and
/// where it comes from.
fn describe_configs(
    brokers: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, (String, &'static str)>> {
    let results = super::runtime()?
        .block_on(
            admin(brokers)?
                .describe_configs([&ResourceSpecifier::Topic(topic)], &super::admin_options()),
        )
        .with_context(|| format!("cannot describe the configs of topic {topic}"))?;
    let mut configs = BTreeMap::new();
    for result in results {
        let resource = match result {
            Ok(resource) => resource,
            Err(code) => bail!("cannot describe the configs of topic {topic}: {code}"),
        };
        for entry in resource.entries {
            let source = match entry.source {
                ConfigSource::DynamicTopic => "topic",
                ConfigSource::DynamicBroker
                | ConfigSource::DynamicDefaultBroker
                | ConfigSource::StaticBroker => "broker",
                ConfigSource::Default => "default",
                ConfigSource::Unknown => "unknown",
            };
            let value = match entry.value {
                Some(value) if !entry.is_sensitive => value,
                _ => "-".to_owned(),
            };
            configs.insert(entry.name, (value, source));
        }
    }
    Ok(configs)
}

fn delete(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let results = super::runtime()?
        .block_on(admin(brokers)?.delete_topics(&[topic], &super::admin_options()))
        .with_context(|| format!("cannot delete topic {topic}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("cannot delete topic {name}: {code}");
        }
    }
    println!("deleted topic {topic}");
    Ok(())
}

fn alter_config(client: &mut Client, args: AlterConfigArgs) -> anyhow::Result<()> {
    if args.config.len() + args.delete_config.len() > CONFIGS_MAX {
        bail!("at most {CONFIGS_MAX} --config and --delete-config flags");
    }
    let mut changes: Vec<AlterableConfig> = args
        .config
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(kafka::str_bytes(key))
                .with_config_operation(OP_SET)
                .with_value(Some(kafka::str_bytes(value)))
        })
        .collect();
    changes.extend(args.delete_config.iter().map(|key| {
        AlterableConfig::default()
            .with_name(kafka::str_bytes(key))
            .with_config_operation(OP_DELETE)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(kafka::str_bytes(&args.topic))
            .with_configs(changes),
    ]);
    let response = client.send(&request, 1)?;
    for result in &response.responses {
        let detail = result
            .error_message
            .as_ref()
            .map(|m| format!(" ({})", m.as_str()))
            .unwrap_or_default();
        kafka::check(result.error_code, || {
            format!(
                "cannot alter the configs of topic {}{detail}",
                result.resource_name.as_str()
            )
        })?;
    }
    println!(
        "altered topic {}: {} set, {} deleted",
        args.topic,
        args.config.len(),
        args.delete_config.len()
    );
    Ok(())
}

fn add_partitions(brokers: &str, topic: &str, total: i32) -> anyhow::Result<()> {
    let total_usize = usize::try_from(total).context("--total")?;
    let partitions = NewPartitions::new(topic, total_usize);
    let results = super::runtime()?
        .block_on(admin(brokers)?.create_partitions([&partitions], &super::admin_options()))
        .with_context(|| format!("cannot add partitions to topic {topic}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("cannot grow topic {name} to {total} partitions: {code}");
        }
    }
    println!("topic {topic} now has {total} partitions");
    Ok(())
}
