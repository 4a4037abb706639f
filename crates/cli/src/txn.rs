//! `weir txn`: list and describe transactions, and abort a hanging one, as
//! Kafka's `kafka-transactions.sh` does, through ListTransactions (to every
//! broker), DescribeTransactions (to the id's coordinator),
//! DescribeProducers and WriteTxnMarkers (to the partition's leader). With
//! `--json` each prints one JSON document (docs/cli.md gives the schema).

use std::collections::BTreeMap;

use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TopicName,
    TransactionalId, WriteTxnMarkersRequest,
};
use serde_json::json;

use crate::{CliError, Result, print_json};
use weir_client::Client;

const TXN_EXAMPLES: &str = "\
Examples:
  weir txn list
  weir txn list --state Ongoing --json
  weir txn describe payments-1
  weir txn abort --topic orders --partition 3 --start-offset 1042

With --json every subcommand prints one JSON document on stdout instead of
text; docs/cli.md gives each one's fields.";

/// `weir txn`.
#[derive(Debug, Args)]
#[command(after_help = TXN_EXAMPLES)]
pub struct TxnArgs {
    #[command(subcommand)]
    command: TxnCommand,
    /// Print the result as one JSON document (schema in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
}

/// `weir txn` subcommands.
#[derive(Debug, Subcommand)]
pub enum TxnCommand {
    /// List the transactional ids every broker coordinates, with their
    /// producer id and state.
    #[command(after_help = "\
Examples:
  weir txn list
  weir txn list --state Ongoing --state PrepareCommit
  weir txn list --producer-id 4000 --json
  weir txn list --transactional-id-pattern 'payments-.*'

States are Kafka's: Empty, Ongoing, PrepareCommit, PrepareAbort,
CompleteCommit, CompleteAbort, PrepareEpochFence, Dead.")]
    List {
        /// Only ids in this state (repeatable).
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only ids with this producer id (repeatable).
        #[arg(long = "producer-id", value_name = "ID")]
        producer_ids: Vec<i64>,
        /// Only ids this regular expression matches whole (RE2 syntax, as
        /// Kafka's ListTransactions v2 takes it).
        #[arg(long = "transactional-id-pattern", value_name = "REGEX")]
        transactional_id_pattern: Option<String>,
    },
    /// Show a transactional id's state: its producer id and epoch, timeout,
    /// when its open transaction began and its partitions.
    #[command(after_help = "\
Examples:
  weir txn describe payments-1
  weir txn describe payments-1 --json")]
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
    /// Abort a hanging transaction in one partition: one whose producer is
    /// gone and whose coordinator no longer knows it, so nothing else ends
    /// it (it holds read_committed consumers at its first offset). Give the
    /// offset where it began (while it hangs, the partition's last stable
    /// offset), or the producer's id, epoch and coordinator epoch.
    #[command(group(ArgGroup::new("which").required(true)
        .args(["start_offset", "producer_id"])))]
    #[command(after_help = "\
Examples:
  weir txn abort --topic orders --partition 3 --start-offset 1042
  weir txn abort --topic orders --partition 3 --producer-id 4000 --producer-epoch 2 --coordinator-epoch 0

An ABORT marker is written to the partition (Kafka's WriteTxnMarkers): the
transaction's records there are dropped for read_committed consumers, and
its producer's later writes there are refused. Abort only a transaction
that is truly hanging: a live producer's transaction loses its records.")]
    Abort {
        /// The partition's topic.
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        partition: i32,
        /// The offset of the transaction's first record in the partition.
        #[arg(long, value_name = "OFFSET", conflicts_with_all = ["producer_epoch", "coordinator_epoch"])]
        start_offset: Option<i64>,
        /// The producer id of the transaction.
        #[arg(long, value_name = "ID", requires_all = ["producer_epoch", "coordinator_epoch"])]
        producer_id: Option<i64>,
        /// The producer's epoch.
        #[arg(long, value_name = "EPOCH")]
        producer_epoch: Option<i16>,
        /// The epoch of the coordinator that wrote the producer's last marker.
        #[arg(long, value_name = "EPOCH")]
        coordinator_epoch: Option<i32>,
    },
}

/// Runs a `weir txn` command against `brokers`.
pub fn run(brokers: &str, args: TxnArgs) -> Result<()> {
    let mut client = super::connect(brokers)?;
    let json = args.json;
    match args.command {
        TxnCommand::List {
            states,
            producer_ids,
            transactional_id_pattern,
        } => {
            let filters = (
                states.as_slice(),
                producer_ids.as_slice(),
                transactional_id_pattern.as_deref(),
            );
            list(&mut client, filters, json)
        }
        TxnCommand::Describe { transactional_id } => describe(&mut client, &transactional_id, json),
        TxnCommand::Abort {
            topic,
            partition,
            start_offset,
            producer_id,
            producer_epoch,
            coordinator_epoch,
        } => {
            let which = match (start_offset, producer_id, producer_epoch, coordinator_epoch) {
                (Some(offset), _, _, _) => Which::StartOffset(offset),
                (None, Some(id), Some(epoch), Some(coordinator_epoch)) => {
                    Which::Producer(id, epoch, coordinator_epoch)
                }
                _ => {
                    return Err(CliError::Usage(
                        "give --start-offset, or --producer-id with --producer-epoch and \
                         --coordinator-epoch"
                            .into(),
                    ));
                }
            };
            abort(&mut client, (&topic, partition), which, json)
        }
    }
}

/// The first ListTransactions version with a transactional id pattern.
const PATTERN_VERSION: i16 = 2;

fn list(
    client: &mut Client,
    (states, producer_ids, pattern): (&[String], &[i64], Option<&str>),
    json: bool,
) -> Result<()> {
    let metadata = client.metadata(Some(&[]))?;
    let request = ListTransactionsRequest::default()
        .with_state_filters(states.iter().map(|s| weir_client::str_bytes(s)).collect())
        .with_producer_id_filters(producer_ids.iter().map(|id| (*id).into()).collect())
        .with_duration_filter(-1)
        .with_transactional_id_pattern(pattern.map(weir_client::str_bytes));
    let version = if pattern.is_some() {
        PATTERN_VERSION
    } else {
        1
    };
    // Transactional id -> (producer id, state).
    let mut found: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for broker in &metadata.brokers {
        let response = client.send_to(broker.node_id.0, &request, version)?;
        if response.error_code == kafka_protocol::ResponseError::InvalidRegularExpression.code() {
            return Err(CliError::Usage(format!(
                "--transactional-id-pattern {:?} is not a valid regular expression (RE2 syntax)",
                pattern.unwrap_or_default()
            )));
        }
        weir_client::check(response.error_code, || {
            format!("ListTransactions at broker {}", broker.node_id.0)
        })?;
        if let Some(unknown) = response.unknown_state_filters.first() {
            return Err(CliError::Usage(format!(
                "unknown transaction state {}: the states are Empty, Ongoing, PrepareCommit, \
                 PrepareAbort, CompleteCommit, CompleteAbort, PrepareEpochFence and Dead",
                unknown.as_str()
            )));
        }
        for t in response.transaction_states {
            found.insert(
                t.transactional_id.as_str().to_owned(),
                (t.producer_id.0, t.transaction_state.as_str().to_owned()),
            );
        }
    }
    if json {
        return print_json(&json!({
            "transactions": found.iter().map(|(id, (producer_id, state))| json!({
                "transactional_id": id,
                "producer_id": producer_id,
                "state": state,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut rows = vec![
        ["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for (id, (producer_id, state)) in &found {
        rows.push(vec![id.clone(), producer_id.to_string(), state.clone()]);
    }
    super::print_out(&super::table(&rows))?;
    Ok(())
}

fn describe(client: &mut Client, transactional_id: &str, json: bool) -> Result<()> {
    client.metadata(Some(&[]))?;
    let coordinator = client.txn_coordinator(transactional_id)?;
    let request =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
            weir_client::str_bytes(transactional_id),
        )]);
    let response = client.send_to(coordinator, &request, 0)?;
    let Some(state) = response.transaction_states.into_iter().next() else {
        return Err(CliError::Failed(format!(
            "DescribeTransactions answered nothing for {transactional_id}"
        )));
    };
    weir_client::check(state.error_code, || {
        format!("transactional id {transactional_id}")
    })?;
    let partitions: Vec<(String, i32)> = state
        .topics
        .iter()
        .flat_map(|t| {
            let topic = t.topic.as_str().to_owned();
            t.partitions.iter().map(move |p| (topic.clone(), *p))
        })
        .collect();
    let start = (state.transaction_start_time_ms >= 0).then_some(state.transaction_start_time_ms);
    if json {
        return print_json(&json!({
            "transactional_id": transactional_id,
            "coordinator": coordinator,
            "state": state.transaction_state.as_str(),
            "producer_id": state.producer_id.0,
            "producer_epoch": state.producer_epoch,
            "timeout_ms": state.transaction_timeout_ms,
            "start_time_ms": start,
            "partitions": partitions.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
        }));
    }
    let mut rows = vec![
        [
            "COORDINATOR",
            "TRANSACTIONAL-ID",
            "PRODUCER-ID",
            "EPOCH",
            "STATE",
            "TIMEOUT-MS",
            "START-TIME-MS",
            "PARTITIONS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let listed: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}-{p}")).collect();
    rows.push(vec![
        coordinator.to_string(),
        transactional_id.to_owned(),
        state.producer_id.0.to_string(),
        state.producer_epoch.to_string(),
        state.transaction_state.as_str().to_owned(),
        state.transaction_timeout_ms.to_string(),
        start.map_or("-".to_owned(), |s| s.to_string()),
        if listed.is_empty() {
            "-".to_owned()
        } else {
            listed.join(",")
        },
    ]);
    super::print_out(&super::table(&rows))?;
    Ok(())
}

/// The node id of the leader of `topic`-`partition`.
fn leader_of(client: &mut Client, topic: &str, partition: i32) -> Result<i32> {
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    let Some(t) = metadata.topics.first() else {
        return Err(CliError::NoMetadata {
            topic: topic.to_owned(),
        });
    };
    weir_client::check(t.error_code, || format!("topic {topic}"))?;
    t.partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .map(|p| p.leader_id.0)
        .filter(|leader| *leader >= 0)
        .ok_or_else(|| CliError::Failed(format!("{topic}-{partition} has no leader now")))
}

/// Which transaction `weir txn abort` ends.
enum Which {
    /// The one that began at this offset.
    StartOffset(i64),
    /// This producer id, epoch and coordinator epoch.
    Producer(i64, i16, i32),
}

fn abort(
    client: &mut Client,
    (topic, partition): (&str, i32),
    which: Which,
    json: bool,
) -> Result<()> {
    let leader = leader_of(client, topic, partition)?;
    let (producer_id, producer_epoch, coordinator_epoch) = match which {
        Which::Producer(id, epoch, coordinator_epoch) => (id, epoch, coordinator_epoch),
        Which::StartOffset(offset) => {
            let request = DescribeProducersRequest::default().with_topics(vec![
                TopicRequest::default()
                    .with_name(TopicName(weir_client::str_bytes(topic)))
                    .with_partition_indexes(vec![partition]),
            ]);
            let response = client.send_to(leader, &request, 0)?;
            let answer = response
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| {
                    CliError::Failed(format!(
                        "DescribeProducers answered nothing for {topic}-{partition}"
                    ))
                })?;
            weir_client::check_message(answer.error_code, answer.error_message.as_ref(), || {
                format!("{topic}-{partition}")
            })?;
            let producer = answer
                .active_producers
                .iter()
                .find(|p| p.current_txn_start_offset == offset)
                .ok_or_else(|| {
                    CliError::Failed(format!(
                        "no transaction open in {topic}-{partition} began at offset {offset}"
                    ))
                })?;
            (
                producer.producer_id.0,
                i16::try_from(producer.producer_epoch).unwrap_or(i16::MAX),
                producer.coordinator_epoch.max(0),
            )
        }
    };
    let request = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(producer_id.into())
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(false)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(weir_client::str_bytes(topic)))
                    .with_partition_indexes(vec![partition]),
            ]),
    ]);
    let response = client.send_to(leader, &request, 1)?;
    let code = response
        .markers
        .first()
        .and_then(|m| m.topics.first())
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.error_code);
    weir_client::check(code, || {
        format!("aborting the transaction in {topic}-{partition}")
    })?;
    if json {
        return print_json(&json!({
            "topic": topic,
            "partition": partition,
            "producer_id": producer_id,
            "producer_epoch": producer_epoch,
            "coordinator_epoch": coordinator_epoch,
            "aborted": true,
        }));
    }
    super::print_out(&format!(
        "aborted the transaction of producer {producer_id} (epoch {producer_epoch}) in {topic}-{partition}\n"
    ))?;
    Ok(())
}
