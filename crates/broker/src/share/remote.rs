//! A cluster's share-partition leader's side of share-partition state
//! (Kafka's "persister"): it reads a share-partition's state from its share
//! coordinator when it takes the share-partition up, and sends every change
//! there, in the order the changes were made. The coordinator of a
//! share-partition is the leader of its `__share_group_state` partition
//! (`coordinator`): this broker, or another one over the peer connections,
//! with Kafka's ReadShareGroupState and WriteShareGroupState.
//!
//! One task sends the writes: it takes what has queued up, keeps each
//! share-partition's newest snapshot (each is whole, so an older one
//! queued behind it need not be sent), and sends one request per
//! coordinator and group at once. Everyone whose change it covered hears
//! the outcome. A coordinator that is moving (NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, a broken connection) is looked up again and
//! tried again for up to [`RETRY_FOR`]; then the waiters hear the error,
//! and the acknowledgements waiting on it are answered with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Weak;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ReadShareGroupStateRequest, ReadShareGroupStateResponse, WriteShareGroupStateRequest,
    read_share_group_state_request, write_share_group_state_request,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;

use super::manager::{ReadState, SharePartitionKey, Write};
use super::partition::{PersistedPartition, StateBatch};
use super::state::{runs_of, wire_batches};
use crate::Broker;
use crate::error::ApiError;

/// The version of ReadShareGroupState and WriteShareGroupState sent.
const VERSION: i16 = 0;
/// Changes one round of the writer takes at most.
const ROUND_MAX: usize = 4_096;
/// Share-partitions one WriteShareGroupState carries at most: each
/// snapshot is at most `group.share.partition.max.record.locks` runs of 21
/// bytes (42 KB at the default), so a request stays near 11 MB.
const REQUEST_KEYS_MAX: usize = 256;
/// How long a change is tried against a moving coordinator.
const RETRY_FOR: Duration = Duration::from_secs(15);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The reader a cluster's share manager takes share-partitions up with.
pub(crate) fn reader(broker: Weak<Broker>) -> ReadState {
    Box::new(move |key, leader_epoch| {
        let broker = broker
            .upgrade()
            .ok_or_else(|| unavailable("the broker is stopping".into()))?;
        read(&broker, key, leader_epoch)
    })
}

/// `key`'s state as its share coordinator has it now, without taking the
/// share-partition up (an admin's describe): one try, no waiting for a
/// moving coordinator. Blocks on the network: call it on a blocking
/// thread.
pub(crate) fn look(
    broker: &Broker,
    key: &SharePartitionKey,
) -> Result<Option<PersistedPartition>, ApiError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| unavailable("share-partition state is read on the runtime".into()))?;
    read_once(broker, &handle, key, -1)
}

/// Read `key`'s state from its coordinator, trying a moving one again.
/// Blocks on the network: call it on a blocking thread.
fn read(
    broker: &Broker,
    key: &SharePartitionKey,
    leader_epoch: i32,
) -> Result<Option<PersistedPartition>, ApiError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| unavailable("share-partition state is read on the runtime".into()))?;
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = RETRY_FIRST;
    loop {
        let tried = read_once(broker, &handle, key, leader_epoch);
        match tried {
            Err(e) if retriable(e.code) && Instant::now() + backoff < deadline => {
                tracing::debug!(group = %key.group, error = %e.message,
                    "share coordinator not ready; reading again");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            other => return other,
        }
    }
}

fn read_once(
    broker: &Broker,
    handle: &tokio::runtime::Handle,
    key: &SharePartitionKey,
    leader_epoch: i32,
) -> Result<Option<PersistedPartition>, ApiError> {
    let (node, index) = broker.share_coordinator_of(key)?;
    if node == broker.config().node_id {
        return broker.shares().coordinator().read(index, key, leader_epoch);
    }
    let request = ReadShareGroupStateRequest::default()
        .with_group_id(text(&key.group))
        .with_topics(vec![
            read_share_group_state_request::ReadStateData::default()
                .with_topic_id(key.topic_id)
                .with_partitions(vec![
                    read_share_group_state_request::PartitionData::default()
                        .with_partition(key.partition)
                        .with_leader_epoch(leader_epoch),
                ]),
        ]);
    let answer = handle
        .block_on(broker.peers.call(node, &request, VERSION))
        .map_err(|e| unavailable(format!("reading share state from broker {node}: {e}")))?;
    snapshot_of(&answer, key)
}

/// The snapshot a ReadShareGroupState answer holds for `key`.
fn snapshot_of(
    answer: &ReadShareGroupStateResponse,
    key: &SharePartitionKey,
) -> Result<Option<PersistedPartition>, ApiError> {
    let p = answer
        .results
        .iter()
        .filter(|t| t.topic_id == key.topic_id)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition == key.partition)
        .ok_or_else(|| unavailable("the share coordinator did not answer for it".into()))?;
    if p.error_code != 0 {
        let code =
            ResponseError::try_from_code(p.error_code).unwrap_or(ResponseError::UnknownServerError);
        let message = p.error_message.as_deref().unwrap_or("").to_string();
        return Err(ApiError::new(code, message));
    }
    persisted(p.start_offset, runs_of!(p.state_batches)).map_err(|e| {
        ApiError::new(
            ResponseError::UnknownServerError,
            format!("the share coordinator's state cannot be read: {e}"),
        )
    })
}

/// A snapshot as the share-state RPCs carry it: `None` for start offset
/// -1 (Kafka's "no state"), else checked as a load checks one.
fn persisted(
    start_offset: i64,
    batches: impl Iterator<Item = Result<StateBatch, crate::group::records::RecordError>>,
) -> Result<Option<PersistedPartition>, String> {
    if start_offset < 0 {
        return Ok(None);
    }
    let batches: Vec<StateBatch> = batches
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if batches.iter().any(|b| b.first_offset < start_offset) {
        return Err("a state batch starts before the start offset".into());
    }
    Ok(Some(PersistedPartition {
        start_offset,
        batches,
    }))
}

/// One share-partition's newest change in a round, and who waits for it.
struct Pending {
    key: SharePartitionKey,
    value: Option<PersistedPartition>,
    leader_epoch: i32,
    waiters: Vec<tokio::sync::watch::Sender<Option<Result<(), ApiError>>>>,
}

/// The writer: send the changes of `writes` to their coordinators, in
/// order, until the manager goes away.
pub(crate) async fn drive(broker: Weak<Broker>, mut writes: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = writes.recv().await {
        let mut round = vec![first];
        while round.len() < ROUND_MAX {
            match writes.try_recv() {
                Ok(w) => round.push(w),
                Err(_) => break,
            }
        }
        let mut pending = coalesce(round);
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = RETRY_FIRST;
        loop {
            let Some(b) = broker.upgrade() else { return };
            let failed = send_round(&b, std::mem::take(&mut pending)).await;
            drop(b);
            let (again, given_up): (Vec<_>, Vec<_>) = failed
                .into_iter()
                .partition(|(_, e)| retriable(e.code) && Instant::now() + backoff < deadline);
            for (p, e) in given_up {
                tracing::warn!(group = %p.key.group, partition = p.key.partition,
                    error = %e.message, "cannot write share-partition state");
                finish(p.waiters, Err(e));
            }
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
            pending = again.into_iter().map(|(p, _)| p).collect();
        }
    }
}

/// Changes, each with the `__share_group_state` partition it goes to.
type Located = Vec<(Pending, i32)>;

/// Each share-partition's newest change, in the order first seen.
fn coalesce(round: Vec<Write>) -> Vec<Pending> {
    let mut at: HashMap<SharePartitionKey, usize> = HashMap::new();
    let mut out: Vec<Pending> = Vec::new();
    for w in round {
        match at.get(&w.key) {
            Some(&i) => {
                let p = &mut out[i];
                p.value = w.value;
                p.leader_epoch = w.leader_epoch;
                p.waiters.push(w.done);
            }
            None => {
                at.insert(w.key.clone(), out.len());
                out.push(Pending {
                    key: w.key,
                    value: w.value,
                    leader_epoch: w.leader_epoch,
                    waiters: vec![w.done],
                });
            }
        }
    }
    out
}

fn finish(
    waiters: Vec<tokio::sync::watch::Sender<Option<Result<(), ApiError>>>>,
    outcome: Result<(), ApiError>,
) {
    for w in waiters {
        w.send_replace(Some(outcome.clone()));
    }
}

/// Send one round: one request per coordinator and group, all at once.
/// Returns what failed, with why; the rest's waiters have heard.
async fn send_round(
    broker: &std::sync::Arc<Broker>,
    pending: Vec<Pending>,
) -> Vec<(Pending, ApiError)> {
    let keys: Vec<SharePartitionKey> = pending.iter().map(|p| p.key.clone()).collect();
    let located = {
        let b = broker.clone();
        crate::blocking::run(move || {
            keys.iter()
                .map(|k| b.share_coordinator_of(k))
                .collect::<Vec<_>>()
        })
        .await
    };
    let Ok(located) = located else {
        let stopping = || unavailable("the broker is stopping".into());
        return pending.into_iter().map(|p| (p, stopping())).collect();
    };
    let mut failed = Vec::new();
    // By coordinator and group: each change with its state partition.
    let mut by_target: BTreeMap<(i32, std::sync::Arc<str>), Located> = BTreeMap::new();
    for (p, at) in pending.into_iter().zip(located) {
        match at {
            Ok((node, index)) => by_target
                .entry((node, p.key.group.clone()))
                .or_default()
                .push((p, index)),
            Err(e) => failed.push((p, e)),
        }
    }
    let me = broker.config().node_id;
    let mut sends = tokio::task::JoinSet::new();
    let requests = by_target
        .into_iter()
        .flat_map(|((node, group), mut items)| {
            // At most REQUEST_KEYS_MAX snapshots a request, so one stays far
            // below the peer's request size limit.
            let mut chunks = Vec::new();
            while items.len() > REQUEST_KEYS_MAX {
                let rest = items.split_off(REQUEST_KEYS_MAX);
                chunks.push((node, group.clone(), items));
                items = rest;
            }
            chunks.push((node, group, items));
            chunks
        });
    for (node, group, items) in requests {
        let b = broker.clone();
        sends.spawn(async move {
            if node == me {
                write_here(&b, items).await
            } else {
                write_to(&b, node, &group, items).await
            }
        });
    }
    while let Some(outcome) = sends.join_next().await {
        match outcome {
            Ok(outcome) => failed.extend(outcome),
            // Only when the runtime is shutting down: those waiters hear
            // that their sender went away.
            Err(e) => tracing::debug!(error = %e, "a share-state write was cut short"),
        }
    }
    failed
}

/// Write `items` to this broker's own share coordinator.
async fn write_here(broker: &std::sync::Arc<Broker>, items: Located) -> Vec<(Pending, ApiError)> {
    let (b, now_ms) = (broker.clone(), broker.shares().now_ms());
    let specs: Vec<(i32, SharePartitionKey, Option<PersistedPartition>, i32)> = items
        .iter()
        .map(|(p, index)| (*index, p.key.clone(), p.value.clone(), p.leader_epoch))
        .collect();
    let appended = crate::blocking::run(move || {
        specs
            .into_iter()
            .map(|(index, key, value, epoch)| {
                b.shares()
                    .coordinator()
                    .write(index, &key, value, epoch, now_ms)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(appended) = appended else {
        let stopping = || unavailable("the broker is stopping".into());
        return items.into_iter().map(|(p, _)| (p, stopping())).collect();
    };
    let mut failed = Vec::new();
    for ((p, _), appended) in items.into_iter().zip(appended) {
        let outcome = match appended {
            Ok(committed) => committed.wait().await.map_err(|e| {
                ApiError::new(
                    ResponseError::NotCoordinator,
                    format!("share state was not replicated: {e}"),
                )
            }),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => finish(p.waiters, Ok(())),
            Err(e) => failed.push((p, e)),
        }
    }
    failed
}

/// Write `items` (all of `group`) to broker `node`'s share coordinator.
async fn write_to(
    broker: &Broker,
    node: i32,
    group: &str,
    items: Located,
) -> Vec<(Pending, ApiError)> {
    let mut topics: BTreeMap<uuid::Uuid, Vec<write_share_group_state_request::PartitionData>> =
        BTreeMap::new();
    for (p, _) in &items {
        topics
            .entry(p.key.topic_id)
            .or_default()
            .push(partition_data(p));
    }
    let request = WriteShareGroupStateRequest::default()
        .with_group_id(text(group))
        .with_topics(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    write_share_group_state_request::WriteStateData::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let answer = match broker.peers.call(node, &request, VERSION).await {
        Ok(answer) => answer,
        Err(e) => {
            let why = format!("writing share state to broker {node}: {e}");
            return items
                .into_iter()
                .map(|(p, _)| (p, unavailable(why.clone())))
                .collect();
        }
    };
    let mut codes: HashMap<(uuid::Uuid, i32), (i16, String)> = HashMap::new();
    for t in &answer.results {
        for r in &t.partitions {
            let message = r.error_message.as_deref().unwrap_or("").to_string();
            codes.insert((t.topic_id, r.partition), (r.error_code, message));
        }
    }
    let mut failed = Vec::new();
    for (p, _) in items {
        match codes.remove(&(p.key.topic_id, p.key.partition)) {
            Some((0, _)) => finish(p.waiters, Ok(())),
            Some((code, message)) => {
                let code =
                    ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
                failed.push((p, ApiError::new(code, message)));
            }
            None => failed.push((
                p,
                unavailable(format!(
                    "broker {node} did not answer for a share-partition"
                )),
            )),
        }
    }
    failed
}

/// A change as WriteShareGroupState carries it; a tombstone is a state
/// with start offset -1 and no batches (as Kafka's DeleteShareGroupState
/// leaves one).
fn partition_data(p: &Pending) -> write_share_group_state_request::PartitionData {
    let (start_offset, batches) = match &p.value {
        Some(v) => (v.start_offset, v.batches.as_slice()),
        None => (-1, &[][..]),
    };
    write_share_group_state_request::PartitionData::default()
        .with_partition(p.key.partition)
        .with_leader_epoch(p.leader_epoch)
        .with_start_offset(start_offset)
        .with_state_batches(wire_batches!(
            write_share_group_state_request::StateBatch,
            batches
        ))
}

/// Errors that say the coordinator is moving: look it up and try again.
fn retriable(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
    )
}

fn unavailable(why: String) -> ApiError {
    ApiError::new(ResponseError::CoordinatorNotAvailable, why)
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The state key a WriteShareGroupState names.
pub(crate) fn written_key(group: &str, topic_id: uuid::Uuid, partition: i32) -> SharePartitionKey {
    SharePartitionKey {
        group: std::sync::Arc::from(group),
        topic_id,
        partition,
    }
}

/// The snapshot a WriteShareGroupState carries for one partition (`None`:
/// a tombstone).
pub(crate) fn written_value(
    p: &write_share_group_state_request::PartitionData,
) -> Result<Option<PersistedPartition>, ApiError> {
    persisted(p.start_offset, runs_of!(p.state_batches)).map_err(|e| {
        ApiError::new(
            ResponseError::InvalidRequest,
            format!("a state batch cannot be read: {e}"),
        )
    })
}
