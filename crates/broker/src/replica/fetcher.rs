//! The follower side: one fetcher task per leader broker, over one TCP
//! connection to the leader's Kafka listener, fetching every partition this
//! broker follows from that leader in one FetchRequest (`replica_id` = this
//! broker), one request in flight.
//!
//! A partition starts in [`FollowState::Truncate`]: the leader is asked
//! (OffsetForLeaderEpoch) where this log's latest epoch ends in its log, and
//! the log is cut back to there, so a tail the old leader wrote and never
//! committed goes before anything is fetched. It then fetches from its log
//! end: each partition's batches are appended as the leader stored them
//! ([`Partition::append_replica`]), and the next fetch is sent only once
//! they are durable under the flush policy, so the offset a fetch names is
//! what this broker holds durably (the leader's high watermark counts on
//! it). The leader's high watermark in each answer bounds this replica's,
//! and its log start moves this replica's up (never past this replica's
//! high watermark), so records deleted on the leader (DeleteRecords,
//! retention) stay deleted after a failover.
//!
//! A fetch offset the leader answers OFFSET_OUT_OF_RANGE puts the partition
//! in [`FollowState::OutOfRange`]: the leader is asked for its log start
//! (ListOffsets EARLIEST, `replica_id` = this broker, as Kafka's follower
//! asks), and when that has passed this log's end the partition fetches
//! from there ([`FollowState::StartAfresh`]): the log starts afresh
//! ([`Partition::truncate_fully_and_start_at`]) at the base offset of the
//! first batch the leader answers (a DeleteRecords offset may lie inside a
//! batch; Kafka's follower starts at that batch's base too), and the
//! leader's log start is then adopted as after any fetch. This is a replica
//! that was down while its leader's log start moved, or a new replica of a
//! partition whose log no longer starts at 0. Otherwise (the leader is
//! behind this log) the divergence check runs again.
//! A leader that says this broker's epoch is stale or that it no longer
//! leads stops the partition here until the next assignment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::Notify;
use weir_storage::{Partition, PartitionId};
use weir_sync::lock;

use super::{ReplicaError, ReplicaSettings};
use crate::peer::{Connection, PeerError};

/// The Fetch version a follower sends: topics by id, `replica_id` in the body.
const FETCH_VERSION: i16 = 13;
/// The OffsetForLeaderEpoch version a follower sends (`replica_id` from v3).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
/// The ListOffsets version a follower sends (`current_leader_epoch` from v4).
const LIST_OFFSETS_VERSION: i16 = 4;
/// ListOffsets' timestamp for the earliest offset: the log start.
const EARLIEST_TIMESTAMP: i64 = -2;
/// How long the leader may hold a replica fetch that finds nothing new
/// (Kafka's `replica.fetch.wait.max.ms` default).
const FETCH_WAIT_MS_MAX: i32 = 500;
/// How long connecting, or one request, may take beyond the fetch wait.
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Reconnect backoff after a lost connection, doubling up to the max
/// (Kafka's `replica.fetch.backoff.ms` and `reconnect.backoff.max.ms`).
const BACKOFF_MS_MIN: u64 = 100;
const BACKOFF_MS_MAX: u64 = 1_000;
/// How long a partition waits before asking again when its leader answered
/// that it does not know the partition's current leadership yet (it has not
/// applied the same metadata). Kafka waits `replica.fetch.backoff.ms` (1 s);
/// in a failover the new leader is usually only milliseconds behind its
/// followers, and until a follower fetches, no acks=all produce can be
/// answered, so a second here would be a second added to every failover.
const PARTITION_RETRY_MS: u64 = 100;
/// The largest response frame accepted beyond the fetch size itself
/// (headers and per-partition fields of the answer).
const RESPONSE_OVERHEAD_BYTES_MAX: usize = 1 << 20;

/// Where a followed partition is in its catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowState {
    /// Ask the leader where this log diverges, and cut it there.
    Truncate,
    /// Fetch from the log end.
    Fetch,
    /// The leader answered the fetch offset out of its range: ask it for
    /// its log start, and start afresh there if this log ends below it.
    OutOfRange,
    /// Fetch from `at`, the leader's log start past this log's end, and
    /// start the log afresh at the first batch answered.
    StartAfresh { at: i64 },
    /// The leader refused it; wait for the next assignment.
    Stopped,
}

/// A partition this broker follows.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    pub topic: String,
    pub partition: Partition,
    pub leader_epoch: i32,
    pub state: FollowState,
    /// Not asked about again before this (its leader was behind on the
    /// metadata at the last try).
    pub retry_at: Option<tokio::time::Instant>,
}

/// Whether a leader's error for a partition means it has not applied the
/// metadata this follower has (it will soon): ask again after a pause.
/// Anything else stops following until the next assignment. A fenced epoch
/// means this follower is the one behind; the change feed brings the new
/// assignment.
fn leader_behind(code: Option<ResponseError>) -> bool {
    matches!(
        code,
        Some(
            ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownLeaderEpoch
                | ResponseError::UnknownTopicId
                | ResponseError::UnknownTopicOrPartition
        )
    )
}

/// Pause a followed partition after its leader answered `code`, or stop
/// following it; says which in the log.
fn refused(shared: &Shared, f: &Followed, code: i16, what: &str) {
    let id = f.partition.id();
    let error = ResponseError::try_from_code(code);
    if leader_behind(error) {
        tracing::debug!(topic = %f.topic, partition = id.partition, ?error,
            "the leader is not ready for this partition yet ({what}); asking again shortly");
        if let Ok(mut partitions) = lock(&shared.partitions)
            && let Some(followed) = partitions.get_mut(&id)
            && followed.leader_epoch == f.leader_epoch
        {
            followed.retry_at =
                Some(tokio::time::Instant::now() + Duration::from_millis(PARTITION_RETRY_MS));
        }
    } else {
        tracing::warn!(topic = %f.topic, partition = id.partition, ?error, code,
            "the leader refused {what}; following stops until the next assignment");
        set_state(shared, id, f.leader_epoch, FollowState::Stopped);
    }
}

#[derive(Default)]
struct Shared {
    partitions: Mutex<HashMap<PartitionId, Followed>>,
    /// Wakes the task when a partition is added.
    wake: Notify,
}

/// One leader's fetcher: its task ends when this handle is dropped.
pub(crate) struct Fetcher {
    pub endpoint: (String, i32),
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fetcher {
    pub fn start(
        runtime: &tokio::runtime::Handle,
        settings: ReplicaSettings,
        endpoint: (String, i32),
    ) -> Fetcher {
        let shared = Arc::new(Shared::default());
        let task = runtime.spawn(run(settings, endpoint.clone(), shared.clone()));
        Fetcher {
            endpoint,
            shared,
            task,
        }
    }

    pub fn add(&self, followed: Followed) -> Result<(), ReplicaError> {
        lock(&self.shared.partitions)?.insert(followed.partition.id(), followed);
        self.shared.wake.notify_one();
        Ok(())
    }

    pub fn remove(&self, id: PartitionId) -> Result<(), weir_sync::PoisonedLock> {
        lock(&self.shared.partitions)?.remove(&id);
        Ok(())
    }

    /// Every partition this fetcher follows, handed over (it follows none after).
    pub fn take_all(&self) -> Result<Vec<Followed>, ReplicaError> {
        Ok(std::mem::take(&mut *lock(&self.shared.partitions)?)
            .into_values()
            .collect())
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.shared.partitions).map_or(true, |p| p.is_empty())
    }
}

/// Why a fetch session ended (the task reconnects).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("connection to the leader: {0}")]
    Io(#[from] std::io::Error),
    #[error("the leader did not answer within {0} ms")]
    Timeout(u64),
    #[error("encoding or decoding a message: {0}")]
    Codec(String),
    #[error("a response frame of {0} bytes is over the bound")]
    TooLarge(usize),
    #[error("{0}")]
    Poisoned(#[from] weir_sync::PoisonedLock),
}

impl From<PeerError> for FetchError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Io(e) => Self::Io(e),
            PeerError::Timeout(ms) => Self::Timeout(ms),
            PeerError::TooLarge(size) => Self::TooLarge(size),
            PeerError::Codec(what) => Self::Codec(what),
            unknown @ PeerError::Unknown(_) => Self::Codec(unknown.to_string()),
        }
    }
}

async fn run(settings: ReplicaSettings, endpoint: (String, i32), shared: Arc<Shared>) {
    let mut backoff_ms = BACKOFF_MS_MIN;
    loop {
        match session(&settings, &endpoint, &shared, &mut backoff_ms).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(leader = %format!("{}:{}", endpoint.0, endpoint.1), error = %err,
                    "replica fetcher lost its leader; reconnecting");
            }
        }
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
    }
}

/// One connection's life: truncate, then fetch, until it fails.
async fn session(
    settings: &ReplicaSettings,
    endpoint: &(String, i32),
    shared: &Arc<Shared>,
    backoff_ms: &mut u64,
) -> Result<(), FetchError> {
    let response_bytes_max = usize::try_from(settings.fetch_response_bytes_max)
        .unwrap_or(0)
        .saturating_add(RESPONSE_OVERHEAD_BYTES_MAX);
    let mut conn = Connection::open(
        endpoint,
        response_bytes_max,
        "weir-replica-fetcher",
        Duration::from_millis(REQUEST_TIMEOUT_MS + FETCH_WAIT_MS_MAX as u64),
    )
    .await?;
    *backoff_ms = BACKOFF_MS_MIN;
    loop {
        let now = tokio::time::Instant::now();
        let all: Vec<Followed> = lock(&shared.partitions)?.values().cloned().collect();
        let next_retry = all
            .iter()
            .filter_map(|f| f.retry_at)
            .filter(|at| *at > now)
            .min();
        let followed: Vec<Followed> = all
            .into_iter()
            .filter(|f| f.retry_at.is_none_or(|at| at <= now))
            .collect();
        let truncating: Vec<&Followed> = followed
            .iter()
            .filter(|f| f.state == FollowState::Truncate)
            .collect();
        if !truncating.is_empty() {
            truncate(settings, &mut conn, shared, &truncating).await?;
            continue;
        }
        let out_of_range: Vec<&Followed> = followed
            .iter()
            .filter(|f| f.state == FollowState::OutOfRange)
            .collect();
        if !out_of_range.is_empty() {
            start_at_leader_log_start(settings, &mut conn, shared, &out_of_range).await?;
            continue;
        }
        let fetching: Vec<&Followed> = followed
            .iter()
            .filter(|f| {
                matches!(
                    f.state,
                    FollowState::Fetch | FollowState::StartAfresh { .. }
                )
            })
            .collect();
        if fetching.is_empty() {
            match next_retry {
                Some(at) => {
                    tokio::select! {
                        () = shared.wake.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => shared.wake.notified().await,
            }
            continue;
        }
        fetch(settings, &mut conn, shared, &fetching).await?;
    }
}

/// Run `change` on a followed partition's log while it is still followed
/// under `epoch` in `state`, holding the set of followed partitions: once
/// [`Fetcher::remove`] returns (a new role was applied), nothing this
/// fetcher read from the old leader reaches the log. `None` when it is not
/// followed so any more.
async fn while_followed<T: Send + 'static>(
    shared: &Arc<Shared>,
    id: PartitionId,
    epoch: i32,
    state: FollowState,
    change: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, FetchError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let partitions = lock(&shared.partitions)?;
        let followed = partitions
            .get(&id)
            .is_some_and(|f| f.leader_epoch == epoch && f.state == state);
        // The lock is held across the change on purpose (see above).
        Ok(followed.then(change))
    })
    .await
    .map_err(|e| FetchError::Codec(format!("a replica log task: {e}")))?
}

/// Set a followed partition's state, if it is still followed under the same epoch.
fn set_state(shared: &Shared, id: PartitionId, epoch: i32, state: FollowState) {
    if let Ok(mut partitions) = lock(&shared.partitions)
        && let Some(f) = partitions.get_mut(&id)
        && f.leader_epoch == epoch
    {
        f.state = state;
    }
}

/// Ask the leader where each partition's latest epoch ends, and cut each log there.
async fn truncate(
    settings: &ReplicaSettings,
    conn: &mut Connection,
    shared: &Arc<Shared>,
    items: &[&Followed],
) -> Result<(), FetchError> {
    let mut topics: HashMap<&str, Vec<OffsetForLeaderPartition>> = HashMap::new();
    for f in items {
        topics.entry(&f.topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(f.partition.id().partition)
                .with_current_leader_epoch(f.leader_epoch)
                .with_leader_epoch(f.partition.leader_epoch()),
        );
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = conn.call(&request, OFFSET_FOR_LEADER_EPOCH_VERSION).await?;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some(f) = items.iter().find(|f| {
                f.topic == topic.topic.as_str() && f.partition.id().partition == answer.partition
            }) else {
                continue;
            };
            let id = f.partition.id();
            if answer.error_code != 0 {
                refused(shared, f, answer.error_code, "OffsetForLeaderEpoch");
                continue;
            }
            let offsets = f.partition.offsets();
            // Where this log and the leader's agree: the end of the epoch
            // they share, as this log has it too, never below the log
            // start; an epoch the leader cannot place leaves the committed
            // part (Kafka falls back to the high watermark).
            let end = if answer.end_offset < 0 {
                offsets.high_watermark
            } else {
                let ours = f
                    .partition
                    .end_offset_for_epoch(answer.leader_epoch)
                    .map_or(offsets.log_end, |(_, end)| end);
                answer.end_offset.min(ours)
            }
            .max(offsets.log_start);
            let partition = f.partition.clone();
            let cut = while_followed(
                shared,
                id,
                f.leader_epoch,
                FollowState::Truncate,
                move || {
                    let new_end = partition.truncate_to(end)?;
                    // What this log had committed past the cut is not
                    // committed here any more: the leader's next answer
                    // says how far it is.
                    let hw = partition.offsets().high_watermark;
                    partition.set_high_watermark_bound(Some(hw));
                    Ok::<_, weir_storage::TruncateError>(new_end)
                },
            )
            .await?;
            match cut {
                None => {}
                Some(Ok(new_end)) => {
                    if new_end < offsets.log_end {
                        tracing::info!(topic = %f.topic, partition = id.partition,
                            from = offsets.log_end, to = new_end,
                            "truncated the divergent tail before following the new leader");
                    }
                    set_state(shared, id, f.leader_epoch, FollowState::Fetch);
                }
                Some(Err(err)) => {
                    tracing::error!(topic = %f.topic, partition = id.partition, error = %err,
                        "cannot truncate; following stops");
                    set_state(shared, id, f.leader_epoch, FollowState::Stopped);
                }
            }
        }
    }
    Ok(())
}

/// One fetch for every partition in `items`: append what came, wait until
/// it is durable, take the leader's high watermark as the bound.
async fn fetch(
    settings: &ReplicaSettings,
    conn: &mut Connection,
    shared: &Arc<Shared>,
    items: &[&Followed],
) -> Result<(), FetchError> {
    let mut topics: HashMap<uuid::Uuid, Vec<FetchPartition>> = HashMap::new();
    for f in items {
        let offsets = f.partition.offsets();
        let fetch_offset = match f.state {
            FollowState::StartAfresh { at } => at,
            _ => offsets.log_end,
        };
        topics.entry(f.partition.id().topic_id).or_default().push(
            FetchPartition::default()
                .with_partition(f.partition.id().partition)
                .with_current_leader_epoch(f.leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_log_start_offset(offsets.log_start)
                .with_partition_max_bytes(settings.fetch_partition_bytes_max),
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_replica_state(ReplicaState::default())
        .with_max_wait_ms(FETCH_WAIT_MS_MAX)
        .with_min_bytes(1)
        .with_max_bytes(settings.fetch_response_bytes_max)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(id)
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = conn.call(&request, FETCH_VERSION).await?;
    let mut durable = Vec::new();
    let mut bounds = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            let Some(f) = items.iter().find(|f| {
                f.partition.id().topic_id == topic.topic_id
                    && f.partition.id().partition == data.partition_index
            }) else {
                continue;
            };
            let id = f.partition.id();
            if data.error_code == ResponseError::OffsetOutOfRange.code() {
                tracing::info!(topic = %f.topic, partition = id.partition,
                    fetch_offset = f.partition.offsets().log_end,
                    "the leader answered this replica's fetch offset out of range; asking for its log start");
                set_state(shared, id, f.leader_epoch, FollowState::OutOfRange);
                continue;
            }
            if data.error_code != 0 {
                refused(shared, f, data.error_code, "a replica fetch");
                continue;
            }
            let records = data.records.unwrap_or_default();
            if let FollowState::StartAfresh { at } = f.state
                && !start_afresh(shared, f, at, &records).await?
            {
                continue;
            }
            if !records.is_empty() {
                let partition = f.partition.clone();
                let appended =
                    while_followed(shared, id, f.leader_epoch, FollowState::Fetch, move || {
                        partition.append_replica(records)
                    })
                    .await?;
                match appended {
                    // No longer followed from here: dropped.
                    None => continue,
                    Some(Ok(outcome)) => durable.push(outcome.durable),
                    Some(Err(err)) => {
                        tracing::error!(topic = %f.topic, partition = id.partition, error = %err,
                            "cannot append the leader's batches; following stops");
                        set_state(shared, id, f.leader_epoch, FollowState::Stopped);
                        continue;
                    }
                }
            }
            bounds.push((
                f.topic.clone(),
                f.partition.clone(),
                f.leader_epoch,
                data.high_watermark,
                data.log_start_offset,
            ));
        }
    }
    for wait in durable {
        if let Err(err) = wait.wait().await {
            // The log is poisoned: nothing more can be appended here.
            tracing::error!(error = %err, "a replicated batch never became durable");
        }
    }
    // Only while still followed under the same epoch: a partition led
    // here by now has its own bound.
    let mut starts = Vec::new();
    {
        let partitions = lock(&shared.partitions)?;
        for (topic, partition, epoch, hw, log_start) in bounds {
            if partitions
                .get(&partition.id())
                .is_some_and(|f| f.leader_epoch == epoch)
            {
                let our_hw = partition.set_high_watermark_bound(Some(hw));
                // The leader's log start, never past what this replica
                // has committed (Kafka's follower bounds it the same way).
                let target = log_start.min(our_hw);
                if target > partition.offsets().log_start {
                    starts.push((topic, partition, epoch, target));
                }
            }
        }
    }
    for (topic, partition, epoch, target) in starts {
        adopt_log_start(shared, topic, partition, epoch, target).await?;
    }
    Ok(())
}

/// Move a followed partition's log start up to `target` (the leader's,
/// bounded by this replica's high watermark), durably, while it is still
/// followed under `epoch`. A failure is logged: the next fetch tries again.
async fn adopt_log_start(
    shared: &Arc<Shared>,
    topic: String,
    partition: Partition,
    epoch: i32,
    target: i64,
) -> Result<(), FetchError> {
    let id = partition.id();
    let moved = while_followed(shared, id, epoch, FollowState::Fetch, move || {
        partition.delete_records_before(target)
    })
    .await?;
    match moved {
        None => {}
        Some(Ok(start)) => {
            tracing::debug!(topic = %topic, partition = id.partition, log_start = start,
                "moved the log start up to the leader's");
        }
        Some(Err(err)) => {
            tracing::warn!(topic = %topic, partition = id.partition, target, error = %err,
                "cannot move the log start up to the leader's; trying again at the next fetch");
        }
    }
    Ok(())
}

/// Start a followed partition's log afresh for the leader's answer to a
/// fetch from `at` (its log start, past this log's end): at the base offset
/// of the first batch answered, which holds `at`, or at `at` when none came.
/// Returns whether the partition now fetches on (its state is
/// [`FollowState::Fetch`]).
async fn start_afresh(
    shared: &Arc<Shared>,
    f: &Followed,
    at: i64,
    records: &bytes::Bytes,
) -> Result<bool, FetchError> {
    let id = f.partition.id();
    let first_base = RecordBatchDecoder::decode_batch_info(&mut records.clone())
        .ok()
        .and_then(|batches| batches.first().map(|b| b.min_offset));
    let start = first_base.map_or(at, |base| base.min(at));
    let partition = f.partition.clone();
    let started = while_followed(
        shared,
        id,
        f.leader_epoch,
        FollowState::StartAfresh { at },
        move || {
            let start = partition.truncate_fully_and_start_at(start)?;
            // Nothing is committed here past the new start until the
            // leader says so.
            partition.set_high_watermark_bound(Some(start));
            Ok::<_, weir_storage::TruncateError>(start)
        },
    )
    .await?;
    match started {
        None => Ok(false),
        Some(Ok(start)) => {
            tracing::info!(topic = %f.topic, partition = id.partition, log_start = start,
                leader_start = at, "started the log afresh; following the leader from there");
            set_state(shared, id, f.leader_epoch, FollowState::Fetch);
            Ok(true)
        }
        Some(Err(err)) => {
            tracing::error!(topic = %f.topic, partition = id.partition, error = %err,
                "cannot start the log afresh at the leader's log start; following stops");
            set_state(shared, id, f.leader_epoch, FollowState::Stopped);
            Ok(false)
        }
    }
}

/// Ask the leader for each partition's log start (ListOffsets EARLIEST),
/// and fetch from there to start the log afresh when it ends below it, as
/// Kafka's follower does on OFFSET_OUT_OF_RANGE (`truncateFullyAndStartAt`). A log
/// that ends at or past the leader's log start was answered out of range
/// for another reason (the leader's log ends below it): the divergence
/// check runs again, after a pause.
async fn start_at_leader_log_start(
    settings: &ReplicaSettings,
    conn: &mut Connection,
    shared: &Arc<Shared>,
    items: &[&Followed],
) -> Result<(), FetchError> {
    let mut topics: HashMap<&str, Vec<ListOffsetsPartition>> = HashMap::new();
    for f in items {
        topics.entry(&f.topic).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(f.partition.id().partition)
                .with_current_leader_epoch(f.leader_epoch)
                .with_timestamp(EARLIEST_TIMESTAMP),
        );
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = conn.call(&request, LIST_OFFSETS_VERSION).await?;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some(f) = items.iter().find(|f| {
                f.topic == topic.name.as_str()
                    && f.partition.id().partition == answer.partition_index
            }) else {
                continue;
            };
            let id = f.partition.id();
            if answer.error_code != 0 {
                refused(
                    shared,
                    f,
                    answer.error_code,
                    "ListOffsets for its log start",
                );
                continue;
            }
            let leader_start = answer.offset;
            let log_end = f.partition.offsets().log_end;
            if leader_start <= log_end {
                tracing::warn!(topic = %f.topic, partition = id.partition, leader_start, log_end,
                    "out of range, though the leader's log starts at or below this log's end; checking for divergence again");
                if let Ok(mut partitions) = lock(&shared.partitions)
                    && let Some(followed) = partitions.get_mut(&id)
                    && followed.leader_epoch == f.leader_epoch
                {
                    followed.state = FollowState::Truncate;
                    followed.retry_at = Some(
                        tokio::time::Instant::now() + Duration::from_millis(PARTITION_RETRY_MS),
                    );
                }
                continue;
            }
            tracing::info!(topic = %f.topic, partition = id.partition, log_end, leader_start,
                "the leader's log starts past this log's end: starting afresh there");
            set_state(
                shared,
                id,
                f.leader_epoch,
                FollowState::StartAfresh { at: leader_start },
            );
        }
    }
    Ok(())
}
