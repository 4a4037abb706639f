//! `weir cluster`: `status` (the metadata quorum and each voter's lag, the
//! brokers, and which partitions are online, under-replicated or offline,
//! from DescribeQuorum, DescribeCluster and Metadata, as text or (`--json`)
//! one JSON document), `unregister` (Kafka's UnregisterBroker),
//! `add-controller` and `remove-controller` (KRaft's AddRaftVoter and
//! RemoveRaftVoter), and the entry points of `local` and `elect-leaders`.

use crate::Result;
use clap::{Args, Subcommand};
use kafka_protocol::messages::DescribeClusterRequest;
use serde_json::json;

/// `weir cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    /// Print the result as one JSON document (schema in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
}

/// `weir cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers, the controller, and the partition count by state.
    #[command(after_help = "\
Examples:
  weir cluster status
  weir cluster status --json
  WEIR_BROKERS=10.0.0.1:9092,10.0.0.2:9092 weir cluster status

Partition states: online (a leader, every replica in sync), under-replicated
(a leader, some replica out of sync), offline (no leader).")]
    Status,
    /// Run a cluster of `weir serve` nodes on this machine, for trying one out.
    #[command(after_help = "\
Examples:
  weir cluster local
  weir cluster local --nodes 3 --data-dir /tmp/weir-cluster
  weir cluster local --port 19092 --serve-arg=--set --serve-arg=min.insync.replicas=2

Node i (from 1) listens for clients on --port + 100*(i-1) (9092, 9192, 9292
by default), for its quorum peers on the next port (9093, 9193, 9293) and for
its admin API on the one after (9094, 9194, 9294). The bootstrap and admin
addresses are printed once every node is ready, and each node's log
follows with its name in front. Ctrl-C stops every node cleanly; the data stays
in --data-dir for the next start.")]
    Local(crate::cluster_local::LocalArgs),
    /// Elect leaders: each partition's preferred (first) replica, or a
    /// leader for partitions that have none.
    #[command(after_help = "\
Examples:
  weir cluster elect-leaders
  weir cluster elect-leaders --topic orders --partition 0 --partition 3
  weir cluster elect-leaders --topic orders --election-type unclean

A preferred election moves leadership back to each partition's first
replica when it is in sync (after a broker restarted, leadership stays where
failover put it). An unclean election gives a partition whose in-sync
replicas are all down a leader from outside the ISR: records it did not copy
are lost. Exits 1 if any partition could not get the leader asked for.")]
    ElectLeaders(crate::replicas::ElectArgs),
    /// Remove a broker that is gone for good from the cluster (Kafka's
    /// UnregisterBroker, as `kafka-cluster.sh unregister --id N`).
    #[command(after_help = "\
Examples:
  weir cluster unregister --id 4
  weir cluster unregister --id 4 --json

The broker must be stopped (fenced) and hold no replica: move its partitions
away with `weir topic reassign` first. A broker-only node also leaves the
metadata quorum's learners. Exits 1 when the cluster refuses (the broker is
alive, still a replica, or not registered) and says why.")]
    Unregister(UnregisterArgs),
    /// Make an observer of the metadata quorum a voter (KRaft's
    /// AddRaftVoter, as `kafka-metadata-quorum add-controller`).
    #[command(after_help = "\
Examples:
  weir cluster add-controller --controller-id 3
  weir cluster add-controller --controller-id 4 --controller-directory-id pnFrB4T5Sw-Wbp8BsNDMDQ

The node must run with the controller role and be an observer: a node whose
id is not in the quorum's voters joins as one when it starts (a new
controller, with --controller-listen; or a voter that lost its data and was
removed with remove-controller). The quorum's leader makes it a voter once it
has copied the metadata log. `weir cluster status` shows voters and observers
(--json also their directory ids). Exits 1 when the quorum refuses (already a
voter: DUPLICATE_VOTER; not an observer with the controller role; not caught
up in time: REQUEST_TIMED_OUT) and says why.")]
    AddController(VoterArgs),
    /// Make a voter of the metadata quorum an observer (KRaft's
    /// RemoveRaftVoter, as `kafka-metadata-quorum remove-controller`).
    #[command(after_help = "\
Examples:
  weir cluster remove-controller --controller-id 3
  weir cluster remove-controller --controller-id 3 --controller-directory-id pnFrB4T5Sw-Wbp8BsNDMDQ

Use it to replace a voter whose data is lost: remove it (a majority of the
remaining voters must run), start the node again on its empty data folder (it
joins as an observer), then `weir cluster add-controller` it. A voter removed
while it runs stays an observer and a broker. A quorum of two voters needs both:
add the replacement soon. Exits 1 when the quorum refuses (not a voter:
VOTER_NOT_FOUND; the last voter) and says why.")]
    RemoveController(VoterArgs),
}

/// `weir cluster add-controller` and `remove-controller`.
#[derive(Debug, Args)]
pub struct VoterArgs {
    /// The node's id (its --node-id).
    #[arg(long, value_name = "ID")]
    controller_id: i32,
    /// The node's metadata directory id (`weir cluster status --json` shows
    /// it); the change is refused unless it is the node's. Without it, the
    /// directory the quorum knows for the node.
    #[arg(long, value_name = "DIRECTORY_ID", value_parser = parse_directory_id)]
    controller_directory_id: Option<uuid::Uuid>,
}

/// A directory id as Kafka prints one: 22 characters of URL-safe base64.
fn parse_directory_id(text: &str) -> std::result::Result<uuid::Uuid, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| "not a directory id (22 characters of URL-safe base64)".to_owned())
}

/// A directory id as Kafka prints one.
fn directory_text(id: uuid::Uuid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// `weir cluster unregister`.
#[derive(Debug, Args)]
pub struct UnregisterArgs {
    /// The broker's id (its --node-id).
    #[arg(long, value_name = "ID")]
    id: i32,
}

/// A broker as the status lists it.
struct BrokerRow {
    id: i32,
    address: String,
    rack: Option<String>,
    fenced: bool,
}

/// Most partitions the text output names per state.
const LISTED_MAX: usize = 20;
/// DescribeQuorum's topic and partition: the metadata log, as KRaft names it.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// The metadata quorum as `status` shows it.
struct Quorum {
    leader: i32,
    epoch: i32,
    high_watermark: i64,
    voters: Vec<Voter>,
    /// Nodes that copy the metadata without voting: broker-only nodes.
    observers: Vec<Voter>,
}

struct Voter {
    id: i32,
    log_end: i64,
    /// How far behind the high watermark.
    lag: i64,
    caught_up_ago_ms: Option<i64>,
    /// Its metadata directory, when the quorum knows it.
    directory: Option<uuid::Uuid>,
}

/// One quorum member's row in `status --json` (voters and observers alike).
fn replica_json(v: &Voter) -> serde_json::Value {
    json!({
        "id": v.id,
        "log_end_offset": v.log_end,
        "lag": v.lag,
        "last_caught_up_ms_ago": v.caught_up_ago_ms,
        "directory_id": v.directory.map(directory_text),
    })
}

/// DescribeQuorum, when the broker serves it and a leader answers.
fn describe_quorum(client: &mut weir_client::Client) -> Result<Option<Quorum>> {
    use kafka_protocol::messages::DescribeQuorumRequest;
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let request = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(kafka_protocol::messages::TopicName(weir_client::str_bytes(
                METADATA_TOPIC,
            )))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let Ok(response) = client.send(&request, 2) else {
        return Ok(None);
    };
    let Some(partition) = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .filter(|p| response.error_code == 0 && p.error_code == 0)
    else {
        return Ok(Some(Quorum {
            leader: -1,
            epoch: -1,
            high_watermark: -1,
            voters: Vec::new(),
            observers: Vec::new(),
        }));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let hw = partition.high_watermark;
    let replica = |v: &kafka_protocol::messages::describe_quorum_response::ReplicaState| Voter {
        id: v.replica_id.0,
        log_end: v.log_end_offset,
        lag: (hw - v.log_end_offset).max(0),
        caught_up_ago_ms: (v.last_caught_up_timestamp >= 0)
            .then(|| (now - v.last_caught_up_timestamp).max(0)),
        directory: (!v.replica_directory_id.is_nil()).then_some(v.replica_directory_id),
    };
    Ok(Some(Quorum {
        leader: partition.leader_id.0,
        epoch: partition.leader_epoch,
        high_watermark: hw,
        voters: partition.current_voters.iter().map(replica).collect(),
        observers: partition.observers.iter().map(replica).collect(),
    }))
}

/// Runs a `weir cluster` command against `brokers`.
pub fn run(brokers: &str, args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Status => status(brokers, args.json),
        ClusterCommand::Local(local) => crate::cluster_local::run(local, args.json),
        ClusterCommand::ElectLeaders(elect) => {
            let mut client = super::connect(brokers)?;
            crate::replicas::elect(&mut client, elect, args.json)
        }
        ClusterCommand::Unregister(unregister) => {
            let mut client = super::connect(brokers)?;
            unregister_broker(&mut client, unregister.id, args.json)
        }
        ClusterCommand::AddController(voter) => {
            let mut client = super::connect(brokers)?;
            change_voter(&mut client, VoterChange::Add, &voter, args.json)
        }
        ClusterCommand::RemoveController(voter) => {
            let mut client = super::connect(brokers)?;
            change_voter(&mut client, VoterChange::Remove, &voter, args.json)
        }
    }
}

/// Which voter change.
#[derive(Debug, Clone, Copy)]
enum VoterChange {
    Add,
    Remove,
}

/// Add or remove a voter, through whichever broker answers (it forwards
/// to the quorum's leader).
fn change_voter(
    client: &mut weir_client::Client,
    change: VoterChange,
    voter: &VoterArgs,
    json: bool,
) -> Result<()> {
    use kafka_protocol::messages::{AddRaftVoterRequest, RemoveRaftVoterRequest};
    let id = voter.controller_id;
    let directory = voter.controller_directory_id.unwrap_or_default();
    let (code, message) = match change {
        VoterChange::Add => {
            let response = client.send(
                &AddRaftVoterRequest::default()
                    .with_cluster_id(None)
                    .with_timeout_ms(ADD_CONTROLLER_TIMEOUT_MS)
                    .with_voter_id(id)
                    .with_voter_directory_id(directory),
                0,
            )?;
            (response.error_code, response.error_message)
        }
        VoterChange::Remove => {
            let response = client.send(
                &RemoveRaftVoterRequest::default()
                    .with_cluster_id(None)
                    .with_voter_id(id)
                    .with_voter_directory_id(directory),
                0,
            )?;
            (response.error_code, response.error_message)
        }
    };
    let (verb, done) = match change {
        VoterChange::Add => ("adding", "added"),
        VoterChange::Remove => ("removing", "removed"),
    };
    weir_client::check_message(code, message.as_ref(), || {
        format!("{verb} voter {id} of the metadata quorum")
    })?;
    if json {
        super::print_out(&format!("{}\n", json!({ done: id })))?;
    } else {
        let now = match change {
            VoterChange::Add => "a voter",
            VoterChange::Remove => "an observer",
        };
        super::print_out(&format!(
            "{done} voter {id}: node {id} is now {now} of the metadata quorum\n"
        ))?;
    }
    Ok(())
}

/// The AddRaftVoter timeout sent (Kafka's admin client default).
const ADD_CONTROLLER_TIMEOUT_MS: i32 = 30_000;

/// Unregister broker `id`, through whichever broker answers (it forwards
/// to the quorum's leader).
fn unregister_broker(client: &mut weir_client::Client, id: i32, json: bool) -> Result<()> {
    use kafka_protocol::messages::{BrokerId, UnregisterBrokerRequest};
    let response = client.send(
        &UnregisterBrokerRequest::default().with_broker_id(BrokerId(id)),
        0,
    )?;
    weir_client::check_message(response.error_code, response.error_message.as_ref(), || {
        format!("unregistering broker {id}")
    })?;
    if json {
        super::print_out(&format!("{}\n", json!({ "unregistered": id })))?;
    } else {
        super::print_out(&format!("unregistered broker {id}\n"))?;
    }
    Ok(())
}

fn status(brokers: &str, json: bool) -> Result<()> {
    let mut client = super::connect(brokers)?;
    let metadata = client.metadata(None)?;
    let mut cluster_id = metadata
        .cluster_id
        .as_ref()
        .map(|id| id.as_str().to_owned());
    let mut controller = metadata.controller_id.0;
    let mut rows: Vec<BrokerRow> = metadata
        .brokers
        .iter()
        .map(|b| BrokerRow {
            id: b.node_id.0,
            address: format!("{}:{}", b.host.as_str(), b.port),
            rack: b.rack.as_ref().map(|r| r.as_str().to_owned()),
            fenced: false,
        })
        .collect();
    // DescribeCluster also names fenced brokers; a broker without it still
    // gets a status from Metadata alone.
    if let Ok(described) = client.send(
        &DescribeClusterRequest::default().with_include_fenced_brokers(true),
        2,
    ) {
        weir_client::check_message(
            described.error_code,
            described.error_message.as_ref(),
            || "DescribeCluster".to_owned(),
        )?;
        cluster_id = Some(described.cluster_id.as_str().to_owned());
        controller = described.controller_id.0;
        rows = described
            .brokers
            .iter()
            .map(|b| BrokerRow {
                id: b.broker_id.0,
                address: format!("{}:{}", b.host.as_str(), b.port),
                rack: b.rack.as_ref().map(|r| r.as_str().to_owned()),
                fenced: b.is_fenced,
            })
            .collect();
    }
    rows.sort_by_key(|row| row.id);

    let mut online = 0usize;
    let (mut under_replicated, mut offline) = (Vec::new(), Vec::new());
    for topic in &metadata.topics {
        let name = topic.name.as_ref().map_or("", |n| n.0.as_str());
        for partition in &topic.partitions {
            let id = format!("{name}-{}", partition.partition_index);
            if partition.leader_id.0 < 0 {
                offline.push(id);
            } else if partition.isr_nodes.len() < partition.replica_nodes.len() {
                under_replicated.push(id);
            } else {
                online += 1;
            }
        }
    }
    under_replicated.sort();
    offline.sort();
    let quorum = describe_quorum(&mut client)?;
    // The node leading the metadata quorum: Metadata's controller id names
    // a live broker to send admin requests to, as KRaft's does.
    if let Some(q) = &quorum {
        controller = q.leader;
    }

    if json {
        let document = json!({
            "cluster_id": cluster_id,
            "controller": (controller >= 0).then_some(controller),
            "brokers": rows.iter().map(|row| json!({
                "id": row.id,
                "address": row.address,
                "rack": row.rack,
                "state": if row.fenced { "fenced" } else { "active" },
            })).collect::<Vec<_>>(),
            "quorum": quorum.as_ref().map(|q| json!({
                "leader": q.leader,
                "epoch": q.epoch,
                "high_watermark": q.high_watermark,
                "voters": q.voters.iter().map(replica_json).collect::<Vec<_>>(),
                "observers": q.observers.iter().map(replica_json).collect::<Vec<_>>(),
            })),
            "topics": metadata.topics.len(),
            "partitions": {
                "online": online,
                "under_replicated": under_replicated.len(),
                "offline": offline.len(),
            },
            "under_replicated": under_replicated,
            "offline": offline,
        });
        super::print_out(&format!("{document}\n"))?;
        return Ok(());
    }
    let mut out = format!(
        "cluster: {}\ncontroller: {}\n\nbrokers: {}\n",
        cluster_id.as_deref().unwrap_or("-"),
        if controller >= 0 {
            controller.to_string()
        } else {
            "none".to_owned()
        },
        rows.len()
    );
    let mut table = vec![
        ["ID", "ADDRESS", "RACK", "STATE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for row in &rows {
        table.push(vec![
            row.id.to_string(),
            row.address.clone(),
            row.rack.clone().unwrap_or_else(|| "-".to_owned()),
            if row.fenced { "fenced" } else { "active" }.to_owned(),
        ]);
    }
    out.push_str(&super::table(&table));
    if let Some(q) = &quorum {
        out.push_str(&format!(
            "\nquorum: leader {}, epoch {}, high watermark {}\n",
            if q.leader >= 0 {
                q.leader.to_string()
            } else {
                "none".to_owned()
            },
            q.epoch,
            q.high_watermark
        ));
        let mut voters = vec![
            ["VOTER", "LOG-END", "LAG", "CAUGHT-UP"]
                .map(str::to_owned)
                .to_vec(),
        ];
        let row = |v: &Voter| {
            vec![
                v.id.to_string(),
                v.log_end.to_string(),
                v.lag.to_string(),
                v.caught_up_ago_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms ago")),
            ]
        };
        voters.extend(q.voters.iter().map(row));
        out.push_str(&super::table(&voters));
        if !q.observers.is_empty() {
            let mut observers = vec![
                ["OBSERVER", "LOG-END", "LAG", "CAUGHT-UP"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            observers.extend(q.observers.iter().map(row));
            out.push('\n');
            out.push_str(&super::table(&observers));
        }
    }
    out.push_str(&format!(
        "\ntopics: {}\npartitions: {}\n",
        metadata.topics.len(),
        online + under_replicated.len() + offline.len()
    ));
    out.push_str(&super::table(&[
        vec!["STATE".to_owned(), "COUNT".to_owned()],
        vec!["online".to_owned(), online.to_string()],
        vec![
            "under-replicated".to_owned(),
            under_replicated.len().to_string(),
        ],
        vec!["offline".to_owned(), offline.len().to_string()],
    ]));
    for (what, list) in [
        ("under-replicated", &under_replicated),
        ("offline", &offline),
    ] {
        if list.is_empty() {
            continue;
        }
        let shown: Vec<&str> = list.iter().take(LISTED_MAX).map(String::as_str).collect();
        let more = list.len().saturating_sub(LISTED_MAX);
        out.push_str(&format!("\n{what}: {}", shown.join(" ")));
        if more > 0 {
            out.push_str(&format!(" (and {more} more; --json lists all)"));
        }
        out.push('\n');
    }
    super::print_out(&out)?;
    Ok(())
}
