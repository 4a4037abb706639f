//! `weir quota describe|alter`: client quotas (bytes produced and fetched
//! per second, request time, connection creation rate) per user, client id
//! or address, through Kafka's DescribeClientQuotas and AlterClientQuotas,
//! with `rpk cluster quotas`' flags.

use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::{CliError, Result, print_json, print_out, usage};

/// The entity types Kafka's quotas are set for.
const ENTITY_TYPES: [&str; 3] = ["user", "client-id", "ip"];

/// `weir quota`.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    command: QuotaCommand,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// `weir quota` subcommands.
#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// Show the quotas set, for every entity or those the flags match.
    #[command(after_help = "\
Examples:
  weir quota describe
  weir quota describe --name user=alice
  weir quota describe --default client-id
  weir quota describe --any user --strict --json

--name, --default and --any may each be given for several entity types;
an entity matches when it matches every one. With --strict, entities that
have other components (a user with a client id, when only user is named)
are left out.")]
    Describe(DescribeArgs),
    /// Set or remove quotas of one entity.
    #[command(after_help = "\
Examples:
  weir quota alter --name user=alice --add producer_byte_rate=1048576
  weir quota alter --name user=alice --name client-id=etl --add consumer_byte_rate=5242880
  weir quota alter --default client-id --add request_percentage=50
  weir quota alter --name ip=10.0.0.7 --add connection_creation_rate=10
  weir quota alter --name user=alice --delete producer_byte_rate

Keys for users and client ids: producer_byte_rate and consumer_byte_rate
(bytes per second), request_percentage (percent of one broker thread's
time), and controller_mutation_rate (partitions created or deleted per
second by topic creation, growth and deletion). For an ip: connection_creation_rate (connections per
second). Quotas are enforced as Kafka enforces them: a
client over its quota is told to wait (throttle_time_ms) and is not read
until it has.")]
    Alter(AlterArgs),
}

#[derive(Debug, Args)]
struct DescribeArgs {
    /// Match entities of this type with this name (TYPE=NAME; TYPE is user,
    /// client-id or ip).
    #[arg(long, value_name = "TYPE=NAME")]
    name: Vec<String>,
    /// Match the default entity of this type.
    #[arg(long, value_name = "TYPE")]
    default: Vec<String>,
    /// Match any entity of this type, the default included.
    #[arg(long, value_name = "TYPE")]
    any: Vec<String>,
    /// Leave out entities with components no flag names.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
struct AlterArgs {
    /// The entity: a component of this type with this name (TYPE=NAME).
    #[arg(long, value_name = "TYPE=NAME")]
    name: Vec<String>,
    /// The entity: the default component of this type.
    #[arg(long, value_name = "TYPE")]
    default: Vec<String>,
    /// Set a quota (KEY=VALUE).
    #[arg(long, value_name = "KEY=VALUE")]
    add: Vec<String>,
    /// Remove a quota.
    #[arg(long, value_name = "KEY")]
    delete: Vec<String>,
    /// Have the broker check the change without making it.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `weir quota` command against `brokers`.
pub fn run(brokers: &str, args: QuotaArgs) -> Result<()> {
    match args.command {
        QuotaCommand::Describe(describe) => {
            let components = components(&describe)?;
            let mut client = super::connect(brokers)?;
            self::describe(&mut client, components, describe.strict, args.json)
        }
        QuotaCommand::Alter(alter) => {
            let entry = entry(&alter)?;
            let mut client = super::connect(brokers)?;
            self::alter(&mut client, entry, alter.dry_run, args.json)
        }
    }
}

fn entity_type(text: &str) -> Result<String> {
    let text = text.trim();
    if ENTITY_TYPES.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(usage(format!(
            "'{text}' is not an entity type: user, client-id or ip"
        )))
    }
}

fn named(text: &str) -> Result<(String, String)> {
    let (kind, name) = text
        .split_once('=')
        .ok_or_else(|| usage(format!("--name '{text}' is not TYPE=NAME")))?;
    if name.is_empty() {
        return Err(usage(format!(
            "--name '{text}' names no one: use --default {kind} for the default"
        )));
    }
    Ok((entity_type(kind)?, name.to_owned()))
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// The entity as (type, name or default), each type once.
fn entity(names: &[String], defaults: &[String]) -> Result<Vec<(String, Option<String>)>> {
    let mut parts = Vec::new();
    for text in names {
        let (kind, name) = named(text)?;
        parts.push((kind, Some(name)));
    }
    for kind in defaults {
        parts.push((entity_type(kind)?, None));
    }
    for (i, (kind, _)) in parts.iter().enumerate() {
        if parts[..i].iter().any(|(k, _)| k == kind) {
            return Err(usage(format!("entity type {kind} is given twice")));
        }
    }
    Ok(parts)
}

fn components(args: &DescribeArgs) -> Result<Vec<ComponentData>> {
    let mut components: Vec<ComponentData> = entity(&args.name, &args.default)?
        .into_iter()
        .map(|(kind, name)| {
            let match_type = if name.is_some() { 0 } else { 1 };
            ComponentData::default()
                .with_entity_type(str_bytes(&kind))
                .with_match_type(match_type)
                .with_match(name.as_deref().map(str_bytes))
        })
        .collect();
    for kind in &args.any {
        let kind = entity_type(kind)?;
        if components.iter().any(|c| c.entity_type.as_str() == kind) {
            return Err(usage(format!("entity type {kind} is given twice")));
        }
        components.push(
            ComponentData::default()
                .with_entity_type(str_bytes(&kind))
                .with_match_type(2)
                .with_match(None),
        );
    }
    Ok(components)
}

fn entry(args: &AlterArgs) -> Result<EntryData> {
    let parts = entity(&args.name, &args.default)?;
    if parts.is_empty() {
        return Err(usage(
            "name the entity with --name TYPE=NAME or --default TYPE",
        ));
    }
    if args.add.is_empty() && args.delete.is_empty() {
        return Err(usage("give --add KEY=VALUE or --delete KEY"));
    }
    let mut ops = Vec::new();
    for text in &args.add {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| usage(format!("--add '{text}' is not KEY=VALUE")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| usage(format!("--add '{text}': '{value}' is not a number")))?;
        ops.push(
            OpData::default()
                .with_key(str_bytes(key.trim()))
                .with_value(value),
        );
    }
    for key in &args.delete {
        ops.push(
            OpData::default()
                .with_key(str_bytes(key.trim()))
                .with_remove(true),
        );
    }
    Ok(EntryData::default()
        .with_entity(
            parts
                .iter()
                .map(|(kind, name)| {
                    EntityData::default()
                        .with_entity_type(str_bytes(kind))
                        .with_entity_name(name.as_deref().map(str_bytes))
                })
                .collect(),
        )
        .with_ops(ops))
}

/// `user=alice, client-id=<default>`.
fn entity_text<'a>(parts: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    parts
        .map(|(kind, name)| format!("{kind}={}", name.unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn entity_json<'a>(parts: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> serde_json::Value {
    parts
        .map(|(kind, name)| json!({ "type": kind, "name": name }))
        .collect()
}

fn describe(
    client: &mut weir_client::Client,
    components: Vec<ComponentData>,
    strict: bool,
    json: bool,
) -> Result<()> {
    let request = DescribeClientQuotasRequest::default()
        .with_components(components)
        .with_strict(strict);
    let response = client.send(&request, 0)?;
    weir_client::check_message(response.error_code, response.error_message.as_ref(), || {
        "describing client quotas".to_owned()
    })?;
    let entries = response.entries.unwrap_or_default();
    fn parts(
        entry: &kafka_protocol::messages::describe_client_quotas_response::EntryData,
    ) -> Vec<(&str, Option<&str>)> {
        entry
            .entity
            .iter()
            .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref()))
            .collect()
    }
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|entry| {
                let values: serde_json::Map<String, serde_json::Value> = entry
                    .values
                    .iter()
                    .map(|v| (v.key.to_string(), json!(v.value)))
                    .collect();
                json!({
                    "entity": entity_json(parts(entry).into_iter()),
                    "values": values,
                })
            })
            .collect();
        return print_json(&json!({ "quotas": rows }));
    }
    if entries.is_empty() {
        return print_out("no quotas match\n").map(|_| ());
    }
    let mut text = String::new();
    for entry in &entries {
        text.push_str(&entity_text(parts(entry).into_iter()));
        text.push('\n');
        for value in &entry.values {
            text.push_str(&format!("\t{}={}\n", value.key.as_str(), value.value));
        }
    }
    print_out(&text).map(|_| ())
}

fn alter(
    client: &mut weir_client::Client,
    entry: EntryData,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let entity = entity_text(
        entry
            .entity
            .iter()
            .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
    );
    let changes: Vec<(String, Option<f64>)> = entry
        .ops
        .iter()
        .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
        .collect();
    let request = AlterClientQuotasRequest::default()
        .with_entries(vec![entry])
        .with_validate_only(dry_run);
    let response = client.send(&request, 0)?;
    for answer in &response.entries {
        weir_client::check_message(answer.error_code, answer.error_message.as_ref(), || {
            format!("altering the quotas of {entity}")
        })?;
    }
    if response.entries.is_empty() {
        return Err(CliError::Failed(format!(
            "the broker answered nothing for {entity}"
        )));
    }
    if json {
        let changes: Vec<serde_json::Value> = changes
            .iter()
            .map(|(key, value)| match value {
                Some(value) => json!({ "key": key, "value": value }),
                None => json!({ "key": key, "removed": true }),
            })
            .collect();
        return print_json(&json!({
            "entity": entity,
            "changes": changes,
            "dry_run": dry_run,
        }));
    }
    let mut text = String::new();
    let verb = if dry_run { "would alter" } else { "altered" };
    text.push_str(&format!("{verb} the quotas of {entity}:\n"));
    for (key, value) in &changes {
        match value {
            Some(value) => text.push_str(&format!("\t{key}={value}\n")),
            None => text.push_str(&format!("\t{key} removed\n")),
        }
    }
    print_out(&text).map(|_| ())
}
