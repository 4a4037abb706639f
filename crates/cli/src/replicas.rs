//! Moving replicas and leaders: `weir topic reassign` (Kafka's
//! AlterPartitionReassignments, watched through ListPartitionReassignments)
//! and `weir cluster elect-leaders` (ElectLeaders).

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use serde_json::json;
use weir_client::{Client, str_bytes};

use crate::{CliError, Result};

/// How long the broker may take to answer an admin request.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// Most partitions one command moves or elects.
const PARTITIONS_MAX: usize = 10_000;
/// How often `--wait` asks how the reassignment is going.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// `weir topic reassign`.
#[derive(Debug, Args)]
pub struct ReassignArgs {
    /// The topic.
    topic: String,
    /// A partition and its new replicas, the preferred leader first:
    /// `P:B,B,B` (repeatable). With --cancel, the partition alone.
    #[arg(long = "partition", value_name = "P:BROKERS", required = true)]
    partitions: Vec<String>,
    /// Cancel the partitions' reassignments in progress instead: added
    /// replicas are dropped and the original ones stay.
    #[arg(long)]
    cancel: bool,
    /// Wait until every reassignment named is complete, with a progress
    /// bar, for at most this many seconds (0: do not wait).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
}

/// `weir cluster elect-leaders`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// Only this topic's partitions. [default: every partition that needs an election]
    #[arg(long)]
    topic: Option<String>,
    /// Only these partitions of --topic (repeatable). [default: all of them]
    #[arg(long, requires = "topic")]
    partition: Vec<i32>,
    /// preferred: give each partition back to its first replica, if it is in
    /// sync; unclean: give a partition without a leader one from outside the
    /// ISR (acknowledged records may be lost).
    #[arg(long = "election-type", value_enum, default_value_t = ElectionType::Preferred)]
    election_type: ElectionType,
}

/// Kafka's ElectionType.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ElectionType {
    /// ElectionType 0.
    Preferred,
    /// ElectionType 1.
    Unclean,
}

/// One partition's target, as `--partition P:B,B,B` gives it.
fn parse_target(spec: &str, cancel: bool) -> Result<(i32, Option<Vec<i32>>)> {
    let bad = |why: &str| crate::usage(format!("--partition {spec}: {why}"));
    if cancel {
        let partition = spec
            .trim()
            .parse()
            .map_err(|_| bad("with --cancel, give the partition number alone"))?;
        return Ok((partition, None));
    }
    let (partition, brokers) = spec
        .split_once(':')
        .ok_or_else(|| bad("expected PARTITION:BROKER,BROKER,..."))?;
    let partition: i32 = partition
        .trim()
        .parse()
        .map_err(|_| bad("the partition is not a number"))?;
    let brokers = brokers
        .split(',')
        .map(|b| b.trim().parse::<i32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("a broker id is not a number"))?;
    if brokers.is_empty() {
        return Err(bad("no broker named"));
    }
    Ok((partition, Some(brokers)))
}

/// Runs `weir topic reassign`.
pub fn reassign(client: &mut Client, args: ReassignArgs, json: bool) -> Result<()> {
    if args.partitions.len() > PARTITIONS_MAX {
        return Err(crate::usage(format!(
            "at most {PARTITIONS_MAX} --partition flags"
        )));
    }
    let targets = args
        .partitions
        .iter()
        .map(|spec| parse_target(spec, args.cancel))
        .collect::<Result<Vec<_>>>()?;
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(TopicName(str_bytes(&args.topic)))
                .with_partitions(
                    targets
                        .iter()
                        .map(|(partition, replicas)| {
                            ReassignablePartition::default()
                                .with_partition_index(*partition)
                                .with_replicas(
                                    replicas
                                        .as_ref()
                                        .map(|r| r.iter().copied().map(BrokerId).collect()),
                                )
                        })
                        .collect(),
                ),
        ]);
    let response = client.send_to_controller(&request, 0)?;
    weir_client::check_message(response.error_code, response.error_message.as_ref(), || {
        format!("cannot reassign partitions of {}", args.topic)
    })?;
    let mut failures: Vec<(i32, String)> = Vec::new();
    for topic in &response.responses {
        for p in &topic.partitions {
            if let Err(err) =
                weir_client::check_message(p.error_code, p.error_message.as_ref(), || {
                    format!("{}-{}", topic.name.0.as_str(), p.partition_index)
                })
            {
                failures.push((p.partition_index, err.to_string()));
            }
        }
    }
    let verb = if args.cancel { "cancelled" } else { "started" };
    if !json {
        for (partition, replicas) in &targets {
            let failed = failures.iter().any(|(p, _)| p == partition);
            if !failed {
                match replicas {
                    Some(r) => {
                        println!("reassignment of {}-{partition} to {r:?} {verb}", args.topic)
                    }
                    None => println!("reassignment of {}-{partition} {verb}", args.topic),
                }
            }
        }
        for (_, failure) in &failures {
            eprintln!("{failure}");
        }
    }
    if !failures.is_empty() {
        if json {
            crate::print_out(&format!(
                "{}\n",
                json!({
                    "topic": args.topic,
                    "errors": failures.iter().map(|(p, e)| json!({"partition": p, "error": e})).collect::<Vec<_>>(),
                })
            ))?;
        }
        return Err(CliError::Failed(format!(
            "{} of {} partitions refused",
            failures.len(),
            targets.len()
        )));
    }
    let partitions: Vec<i32> = targets.iter().map(|(p, _)| *p).collect();
    if args.wait > 0 && !args.cancel {
        wait_for(
            client,
            &args.topic,
            &partitions,
            Duration::from_secs(args.wait),
        )?;
        if !json {
            println!("reassignment of {} complete", args.topic);
        }
    }
    if json {
        crate::print_out(&format!(
            "{}\n",
            json!({
                "topic": args.topic,
                "partitions": targets.iter().map(|(p, r)| json!({"partition": p, "replicas": r})).collect::<Vec<_>>(),
                "cancelled": args.cancel,
                "complete": args.wait > 0 && !args.cancel,
            })
        ))?;
    }
    Ok(())
}

/// Wait until none of `partitions` is being reassigned, showing a progress
/// bar of those done.
fn wait_for(client: &mut Client, topic: &str, partitions: &[i32], limit: Duration) -> Result<()> {
    let total = partitions.len() as u64;
    let bar = indicatif::ProgressBar::new(total).with_message(format!("reassigning {topic}"));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} partitions ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    loop {
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(Some(vec![
                ListPartitionReassignmentsTopics::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partition_indexes(partitions.to_vec()),
            ]));
        let response = client.send_to_controller(&request, 0)?;
        weir_client::check_message(response.error_code, response.error_message.as_ref(), || {
            "cannot list reassignments".to_owned()
        })?;
        let pending: u64 = response
            .topics
            .iter()
            .map(|t| t.partitions.len() as u64)
            .sum();
        bar.set_position(total.saturating_sub(pending));
        if pending == 0 {
            bar.finish_and_clear();
            return Ok(());
        }
        if started.elapsed() >= limit {
            bar.abandon();
            return Err(CliError::Failed(format!(
                "{pending} of {total} reassignments of {topic} still in progress after {limit:?}; \
                 they go on: check again with --wait, or cancel with --cancel"
            )));
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// Runs `weir cluster elect-leaders`.
pub fn elect(client: &mut Client, args: ElectArgs, json: bool) -> Result<()> {
    if args.partition.len() > PARTITIONS_MAX {
        return Err(crate::usage(format!(
            "at most {PARTITIONS_MAX} --partition flags"
        )));
    }
    let topic_partitions = match &args.topic {
        None => None,
        Some(topic) => {
            let partitions = if args.partition.is_empty() {
                let metadata = client.metadata(Some(std::slice::from_ref(topic)))?;
                metadata
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
                    .collect()
            } else {
                args.partition.clone()
            };
            Some(vec![
                TopicPartitions::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partitions(partitions),
            ])
        }
    };
    let election_type = match args.election_type {
        ElectionType::Preferred => 0,
        ElectionType::Unclean => 1,
    };
    let request = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_topic_partitions(topic_partitions)
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let response = client.send_to_controller(&request, 2)?;
    weir_client::check(response.error_code, || "cannot elect leaders".to_owned())?;
    let mut rows = vec![["TOPIC", "PARTITION", "RESULT"].map(str::to_owned).to_vec()];
    let mut documents = Vec::new();
    let mut failed = 0usize;
    for topic in &response.replica_election_results {
        for p in &topic.partition_result {
            let outcome = match ResponseError::try_from_code(p.error_code) {
                None => "elected".to_owned(),
                Some(ResponseError::ElectionNotNeeded) => "not needed".to_owned(),
                Some(error) => {
                    failed += 1;
                    format!("{error:?}")
                }
            };
            rows.push(vec![
                topic.topic.0.to_string(),
                p.partition_id.to_string(),
                outcome.clone(),
            ]);
            documents.push(json!({
                "topic": topic.topic.0.as_str(),
                "partition": p.partition_id,
                "result": outcome,
            }));
        }
    }
    if json {
        crate::print_out(&format!("{}\n", json!({ "partitions": documents })))?;
    } else if rows.len() == 1 {
        println!("no partition needed an election");
    } else {
        crate::print_out(&crate::table(&rows))?;
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} partitions could not get the leader asked for"
        )));
    }
    Ok(())
}
