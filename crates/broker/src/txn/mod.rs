//! The transaction coordinator: transactional ids, their producer ids and
//! epochs, and the transactions they run, as Kafka's coordinator keeps them.
//!
//! Each transactional id lives in one partition of the internal topic
//! `__transaction_state` (`abs(javaStringHashCode(id)) % partitions`, as in
//! Kafka), and one [`Shard`] per partition holds the ids that live there
//! while this broker leads it. Every change of an id's state is decided in
//! `state.rs`, written to the partition (and waited on until committed),
//! and only then applied, so a coordinator that takes the partition over
//! replays exactly what was promised. While a change is being written the
//! id answers CONCURRENT_TRANSACTIONS.
//!
//! Ending a transaction is two writes around the markers: PrepareCommit or
//! PrepareAbort is written (the decision), then a COMMIT or ABORT marker is
//! appended to every partition of the transaction, and once all are
//! committed, CompleteCommit or CompleteAbort; EndTxn is answered then (or
//! after a bounded wait, the decision being durable). A coordinator that
//! loads an id in a Prepare state finishes its markers. A driver task
//! aborts transactions past their timeout (fencing their producer with a
//! bumped epoch) and forgets ids idle past `transactional.id.expiration.ms`.

pub(crate) mod checkback;
pub(crate) mod records;
pub(crate) mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;
use weir_storage::{Clock, Partition, TxnMarker, batches};

use crate::config::TxnConfig;
use crate::error::ApiError;
use crate::producer_ids::ProducerIdAndEpoch;
use records::{TXN_TOPIC, TxnStatus, TxnValue};

/// The AddPartitionsToTxn version a partition leader sends the coordinator
/// of a transaction it verifies or adds to (Kafka's brokers send the newest).
const PEER_ADD_PARTITIONS_VERSION: i16 = 5;

/// How a partition enters a producer's transaction when the producer
/// writes to it (a transactional produce, a TxnOffsetCommit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joining {
    /// The producer added it with AddPartitionsToTxn (or AddOffsetsToTxn)
    /// first; the coordinator is only asked whether it did (KIP-890 part 1).
    Verify,
    /// Transaction version 2 (Produce v12, TxnOffsetCommit v5): the
    /// coordinator adds it now, opening the transaction if none is open.
    Add,
}
/// The WriteTxnMarkers version a coordinator sends to partition leaders.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// Bytes read per step when loading a `__transaction_state` partition.
const LOAD_READ_BYTES: usize = 4 * 1024 * 1024;
/// How often the driver looks for work: markers to finish, timeouts, expiry.
const DRIVER_TICK: Duration = Duration::from_millis(200);
/// Markers of one transaction being written at once.
const MARKERS_IN_FLIGHT: usize = 32;
/// Longest wait between two attempts at a marker that failed.
const MARKER_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long EndTxn waits for the markers before it answers anyway (the
/// decision is durable once PrepareCommit or PrepareAbort is written).
/// Answering once they are written spares the producer's next transaction
/// a CONCURRENT_TRANSACTIONS answer and the client's retry backoff (100 ms
/// in librdkafka).
const END_TXN_WAIT: Duration = Duration::from_secs(5);

/// One transactional id's state, and whether a change of it is being written.
#[derive(Debug, Clone)]
struct Entry {
    value: TxnValue,
    /// A change is being written: other requests get CONCURRENT_TRANSACTIONS.
    pending: bool,
    /// No state was ever written for it (the first InitProducerId is being
    /// written): forgotten if that write fails.
    unwritten: bool,
    /// Found with a transaction open when the partition was loaded: with
    /// check-back on, the service is asked about it at once.
    recovered: bool,
}

impl Entry {
    /// A state as written (or replayed).
    fn settled(value: TxnValue) -> Self {
        Self {
            value,
            pending: false,
            unwritten: false,
            recovered: false,
        }
    }
}

/// The ids of one `__transaction_state` partition.
#[derive(Default)]
struct ShardInner {
    /// The partition, while this broker leads it and has loaded it.
    partition: Option<Partition>,
    /// Its leader epoch when loaded: the coordinator epoch of the markers
    /// this shard writes.
    loaded_epoch: Option<i32>,
    /// Bumped at each load and unload: a write or marker task started under
    /// an older one applies nothing.
    generation: u64,
    txns: HashMap<String, Entry>,
    /// Ids whose markers a task is writing now.
    completing: HashSet<String>,
    /// Ids whose open transaction a check-back task is asking about.
    checking: HashSet<String>,
}

struct Shard {
    index: i32,
    inner: Mutex<ShardInner>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardInner> {
        // A panic while the lock was held left the ids as the last
        // completed change wrote them: carry on with them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a `__transaction_state` partition could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load {TXN_TOPIC}-{partition}: {detail}")]
pub(crate) struct LoadError {
    partition: i32,
    detail: String,
}

/// What DescribeTransactions and ListTransactions show of one id.
#[derive(Debug, Clone)]
pub(crate) struct TxnSummary {
    pub transactional_id: String,
    pub value: TxnValue,
}

/// The transaction coordinator of this broker.
pub(crate) struct TxnCoordinator {
    config: TxnConfig,
    clock: Arc<dyn Clock>,
    shards: OnceLock<Vec<Arc<Shard>>>,
    driver_started: AtomicBool,
    /// Bumped whenever a transaction completes (its Complete state written).
    completed: tokio::sync::watch::Sender<u64>,
    checkback: checkback::Checkback,
}

impl std::fmt::Debug for TxnCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnCoordinator").finish_non_exhaustive()
    }
}

impl TxnCoordinator {
    pub(crate) fn new(config: TxnConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            checkback: checkback::Checkback::new(&config.checkback),
            config,
            clock,
            shards: OnceLock::new(),
            driver_started: AtomicBool::new(false),
            completed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Make one shard per partition of `__transaction_state` (once), and
    /// load each partition given. Blocks on file I/O.
    pub(crate) fn load(&self, partitions: Vec<(i32, Option<Partition>)>) -> Result<(), LoadError> {
        if self.shards.get().is_none() {
            let shards = (0..partitions.len())
                .map(|i| {
                    Arc::new(Shard {
                        index: i32::try_from(i).unwrap_or(i32::MAX),
                        inner: Mutex::new(ShardInner::default()),
                    })
                })
                .collect();
            let _ = self.shards.set(shards);
        }
        for (index, partition) in partitions {
            if let Some(partition) = partition {
                self.load_shard(index, partition)?;
            }
        }
        Ok(())
    }

    /// Whether the shards exist (the topic was made and loaded).
    pub(crate) fn loaded(&self) -> bool {
        self.shards.get().is_some()
    }

    fn shards(&self) -> &[Arc<Shard>] {
        self.shards.get().map_or(&[], Vec::as_slice)
    }

    fn shard_at(&self, index: i32) -> Option<&Arc<Shard>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.shards().get(i))
    }

    /// Coordinate the ids of one partition, replaying it from its log
    /// start to its log end (everything in it is this leadership's, and
    /// every change a client was told of is in it). Blocks on file I/O.
    pub(crate) fn load_shard(&self, index: i32, partition: Partition) -> Result<(), LoadError> {
        let shard = self.shard_at(index).ok_or_else(|| LoadError {
            partition: index,
            detail: "no such partition".into(),
        })?;
        let txns = replay(index, &partition)?;
        let mut inner = shard.lock();
        inner.generation += 1;
        inner.loaded_epoch = Some(partition.leader_epoch());
        inner.partition = Some(partition);
        inner.completing.clear();
        inner.checking.clear();
        inner.txns = txns
            .into_iter()
            .map(|(id, value)| {
                let recovered = value.status == TxnStatus::Ongoing;
                (
                    id,
                    Entry {
                        recovered,
                        ..Entry::settled(value)
                    },
                )
            })
            .collect();
        Ok(())
    }

    /// The leader epoch shard `index` was loaded at, while it coordinates
    /// its ids.
    fn shard_epoch(&self, index: i32) -> Option<i32> {
        self.shard_at(index).and_then(|shard| {
            let inner = shard.lock();
            inner.partition.as_ref().and(inner.loaded_epoch)
        })
    }

    /// Stop coordinating the ids of one partition (its leadership moved):
    /// tasks started under this load apply nothing more, and requests hear
    /// NOT_COORDINATOR.
    pub(crate) fn unload_shard(&self, index: i32) {
        if let Some(shard) = self.shard_at(index) {
            let mut inner = shard.lock();
            inner.generation += 1;
            inner.partition = None;
            inner.loaded_epoch = None;
            inner.txns.clear();
            inner.completing.clear();
            inner.checking.clear();
        }
    }

    /// Whether this broker coordinates `transactional_id` now.
    pub(crate) fn coordinates(&self, transactional_id: &str) -> bool {
        self.shard(transactional_id).is_ok()
    }

    /// The shard of `transactional_id`; NOT_COORDINATOR when this broker
    /// does not coordinate it now.
    fn shard(&self, transactional_id: &str) -> Result<&Arc<Shard>, ResponseError> {
        let shards = self
            .shards
            .get()
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let count = i32::try_from(shards.len()).unwrap_or(i32::MAX);
        let index = crate::group::records::partition_for(transactional_id, count);
        let shard = usize::try_from(index)
            .ok()
            .and_then(|i| shards.get(i))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        if shard.lock().partition.is_none() {
            return Err(ResponseError::NotCoordinator);
        }
        Ok(shard)
    }

    /// Start the driver once (see the module comment).
    pub(crate) fn ensure_driver(&self, broker: &Arc<crate::Broker>) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.driver_started.swap(true, Ordering::SeqCst)
        {
            return;
        }
        tokio::spawn(drive(Arc::downgrade(broker)));
    }

    /// Decide a change of `id`'s state under its shard's lock, write what
    /// was decided, and apply it once committed. `decide` sees the id's
    /// state (`None` when unknown) and the time, and returns the state to
    /// write (`None`: nothing to write) and the answer.
    async fn change<T>(
        &self,
        id: &str,
        decide: impl FnOnce(Option<&TxnValue>, i64) -> Result<(Option<TxnValue>, T), ResponseError>,
    ) -> Result<T, ResponseError> {
        let shard = self.shard(id)?.clone();
        let now_ms = self.clock.now_ms();
        let (value, answer, generation, partition) = {
            let mut inner = shard.lock();
            let partition = inner
                .partition
                .clone()
                .ok_or(ResponseError::NotCoordinator)?;
            let entry = inner.txns.get(id);
            if entry.is_some_and(|e| e.pending) {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let (value, answer) = decide(entry.map(|e| &e.value), now_ms)?;
            let Some(value) = value else {
                return Ok(answer);
            };
            match inner.txns.get_mut(id) {
                Some(e) => e.pending = true,
                None => {
                    if inner.txns.len() >= self.config.transactional_ids_max_per_shard() {
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                    inner.txns.insert(
                        id.to_string(),
                        Entry {
                            pending: true,
                            unwritten: true,
                            ..Entry::settled(value.clone())
                        },
                    );
                }
            }
            (value, answer, inner.generation, partition)
        };
        // Its own task: a request dropped mid-write (its client went away)
        // must not leave the id pending for ever.
        let id = id.to_string();
        let applied = tokio::spawn(async move {
            let written = write(&partition, &id, Some(&value), now_ms).await;
            let mut inner = shard.lock();
            if inner.generation != generation {
                return Err(ResponseError::NotCoordinator);
            }
            match written {
                Ok(()) => {
                    inner.txns.insert(id, Entry::settled(value));
                    Ok(())
                }
                Err(err) => {
                    if inner.txns.get(&id).is_some_and(|e| e.unwritten) {
                        inner.txns.remove(&id);
                    } else if let Some(e) = inner.txns.get_mut(&id) {
                        e.pending = false;
                    }
                    Err(err)
                }
            }
        })
        .await
        .unwrap_or(Err(ResponseError::NotCoordinator));
        applied.map(|()| answer)
    }

    /// InitProducerId for a transactional id: its producer id and epoch.
    /// An open transaction of the id is aborted first (its producer fenced)
    /// and the caller told CONCURRENT_TRANSACTIONS, to retry.
    pub(crate) async fn init_producer_id(
        &self,
        broker: &Arc<crate::Broker>,
        id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
    ) -> Result<ProducerIdAndEpoch, ApiError> {
        self.ensure_driver(broker);
        if timeout_ms <= 0 || i64::from(timeout_ms) > self.config.transaction_max_timeout_ms {
            return Err(ApiError::new(
                ResponseError::InvalidTransactionTimeout,
                format!(
                    "transaction.timeout.ms {timeout_ms} is not in 1..={} (transaction.max.timeout.ms)",
                    self.config.transaction_max_timeout_ms
                ),
            ));
        }
        let fresh = {
            let broker = broker.clone();
            move || broker.producer_ids.next(broker.metadata().as_ref())
        };
        // A fresh id may need the metadata store: reserve one only when needed.
        let needs_fresh = {
            let shard = self.shard(id).map_err(code_error)?;
            let inner = shard.lock();
            inner.txns.get(id).is_none_or(|e| {
                e.value.producer_epoch >= crate::producer_ids::PRODUCER_EPOCH_EXHAUSTED - 1
            })
        };
        let reserved = if needs_fresh {
            Some(
                crate::blocking::run(fresh)
                    .await
                    .map_err(|_| code_error(ResponseError::CoordinatorNotAvailable))?
                    .map_err(ApiError::from)?,
            )
        } else {
            None
        };
        let outcome = self
            .change(id, |existing, now_ms| {
                let decided = state::init(existing, expected, timeout_ms, now_ms, || {
                    reserved.ok_or(weir_metadata::MetadataError::Storage(
                        "no producer id was reserved".into(),
                    ))
                });
                match decided {
                    Ok(state::InitDecision::Answer(v)) => {
                        let answer = Ok(ProducerIdAndEpoch {
                            producer_id: v.producer_id,
                            epoch: v.producer_epoch,
                        });
                        Ok((Some(v), answer))
                    }
                    Ok(state::InitDecision::FenceAndAbort(v)) => {
                        Ok((Some(v), Err(ResponseError::ConcurrentTransactions)))
                    }
                    Err(state::InitFailure::Code(code)) => Err(code),
                    Err(state::InitFailure::Init(crate::producer_ids::InitError::Fenced {
                        ..
                    })) => Err(ResponseError::ProducerFenced),
                    Err(state::InitFailure::Init(_)) => Err(ResponseError::CoordinatorNotAvailable),
                }
            })
            .await
            .map_err(code_error)?;
        match outcome {
            Ok(answer) => Ok(answer),
            Err(code) => {
                // The open transaction is aborted now, with the bumped epoch.
                self.spawn_completion(broker, id);
                Err(code_error(code))
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn): the partitions join the
    /// producer's transaction, which opens if none is.
    pub(crate) async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), ResponseError> {
        self.change(id, |existing, now_ms| {
            let v = existing.ok_or(ResponseError::InvalidProducerIdMapping)?;
            Ok((
                state::add_partitions(v, producer_id, epoch, partitions, now_ms)?,
                (),
            ))
        })
        .await
    }

    /// Whether `producer_id` at `epoch` may write to `partition` in the
    /// transaction of `id` (KIP-890 verification of a transactional produce).
    pub(crate) fn verify(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        let shard = self.shard(id)?;
        let inner = shard.lock();
        let entry = inner
            .txns
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        state::verify(&entry.value, producer_id, epoch, partition)
    }

    /// EndTxn: commit or abort the producer's transaction, and the producer
    /// id and epoch it goes on with. The decision is durable once
    /// PrepareCommit or PrepareAbort is written; the answer also waits for
    /// the markers and the Complete state, up to [`END_TXN_WAIT`].
    pub(crate) async fn end(
        &self,
        broker: &Arc<crate::Broker>,
        id: &str,
        (producer_id, epoch): (i64, i16),
        commit: bool,
        rules: state::EndRules,
    ) -> Result<ProducerIdAndEpoch, ResponseError> {
        self.ensure_driver(broker);
        // A bump that takes the producer id's last epoch moves the
        // producer to a new id, which may need the metadata store: reserve
        // one only then.
        let needs_fresh = rules == state::EndRules::V2 && {
            let shard = self.shard(id)?;
            let inner = shard.lock();
            inner.txns.get(id).is_some_and(|e| {
                e.value.producer_epoch >= crate::producer_ids::PRODUCER_EPOCH_EXHAUSTED
            })
        };
        let fresh = if needs_fresh {
            let broker = broker.clone();
            Some(
                crate::blocking::run(move || broker.producer_ids.next(broker.metadata().as_ref()))
                    .await
                    .map_err(|_| ResponseError::CoordinatorNotAvailable)?
                    .map_err(|_| ResponseError::CoordinatorNotAvailable)?,
            )
        } else {
            None
        };
        let (prepared, answer) = self
            .change(id, |existing, now_ms| {
                let v = existing.ok_or(ResponseError::InvalidProducerIdMapping)?;
                match state::end(v, (producer_id, epoch), commit, rules, (now_ms, fresh))? {
                    state::EndDecision::Prepare(next) => {
                        let answer = state::after_end(&next);
                        Ok((Some(next), (true, answer)))
                    }
                    state::EndDecision::Done(answer) => Ok((None, (false, answer))),
                }
            })
            .await?;
        if prepared {
            let mut completed = self.completed.subscribe();
            self.spawn_completion(broker, id);
            let finished = || {
                self.shard(id).is_ok_and(|shard| {
                    shard.lock().txns.get(id).is_none_or(|e| {
                        !matches!(
                            e.value.status,
                            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
                        )
                    })
                })
            };
            let _ = tokio::time::timeout(END_TXN_WAIT, async {
                while !finished() {
                    if completed.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
        Ok(answer)
    }

    /// Every id of the shards this broker coordinates.
    pub(crate) fn list(&self) -> Vec<TxnSummary> {
        let mut all: Vec<TxnSummary> = self
            .shards()
            .iter()
            .flat_map(|s| {
                s.lock()
                    .txns
                    .iter()
                    .filter(|(_, e)| !e.unwritten)
                    .map(|(id, e)| TxnSummary {
                        transactional_id: id.clone(),
                        value: e.value.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// One id's state: NOT_COORDINATOR when another broker coordinates it,
    /// TRANSACTIONAL_ID_NOT_FOUND when it is unknown.
    pub(crate) fn describe(&self, id: &str) -> Result<TxnSummary, ResponseError> {
        let shard = self.shard(id)?;
        let inner = shard.lock();
        inner
            .txns
            .get(id)
            .filter(|e| !e.unwritten)
            .map(|e| TxnSummary {
                transactional_id: id.to_string(),
                value: e.value.clone(),
            })
            .ok_or(ResponseError::TransactionalIdNotFound)
    }

    /// Write the markers of `id`'s transaction (in a Prepare state) in the
    /// background, then its Complete state.
    fn spawn_completion(&self, broker: &Arc<crate::Broker>, id: &str) {
        let Ok(shard) = self.shard(id) else { return };
        if !shard.lock().completing.insert(id.to_string()) {
            return;
        }
        let shard = shard.clone();
        let id = id.to_string();
        tokio::spawn(complete(Arc::downgrade(broker), shard, id));
    }

    /// One pass of the driver: finish transactions left in a Prepare state
    /// (a load found them), abort those past their timeout (or, with
    /// check-back, ask about them and about those a load found open),
    /// forget ids idle past their expiration.
    async fn tick(&self, broker: &Arc<crate::Broker>, check_timeouts: bool) {
        let now_ms = self.clock.now_ms();
        let mut to_finish = Vec::new();
        let mut to_abort = Vec::new();
        let mut to_check = Vec::new();
        let mut to_expire = Vec::new();
        for shard in self.shards() {
            let inner = shard.lock();
            if inner.partition.is_none() {
                continue;
            }
            for (id, e) in &inner.txns {
                if e.pending || inner.completing.contains(id) || inner.checking.contains(id) {
                    continue;
                }
                let timed_out = check_timeouts && state::timed_out(&e.value, now_ms);
                match e.value.status {
                    TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                        to_finish.push(id.clone())
                    }
                    TxnStatus::Ongoing if timed_out || e.recovered => {
                        match self.config.checkback.url_for(id) {
                            Some(url) => {
                                let reason = if timed_out {
                                    checkback::Reason::Timeout
                                } else {
                                    checkback::Reason::Recovered
                                };
                                to_check.push((shard.clone(), id.clone(), url.to_string(), reason));
                            }
                            None if timed_out => to_abort.push(id.clone()),
                            None => {}
                        }
                    }
                    _ if check_timeouts
                        && state::expired(
                            &e.value,
                            now_ms,
                            self.config.transactional_id_expiration_ms,
                        ) =>
                    {
                        to_expire.push((shard.clone(), id.clone()));
                    }
                    _ => {}
                }
            }
        }
        for id in to_finish {
            self.spawn_completion(broker, &id);
        }
        for (shard, id, url, reason) in to_check {
            self.spawn_check(broker, shard, id, url, reason);
        }
        for id in to_abort {
            let aborted = self
                .change(&id, |existing, now_ms| match existing {
                    Some(v) if state::timed_out(v, now_ms) => {
                        Ok((Some(state::fenced_abort(v, now_ms)), true))
                    }
                    _ => Ok((None, false)),
                })
                .await;
            if let Ok(true) = aborted {
                tracing::info!(transactional_id = %id, "aborting a transaction past its transaction.timeout.ms");
                self.spawn_completion(broker, &id);
            }
        }
        for (shard, id) in to_expire {
            expire(
                &shard,
                &id,
                now_ms,
                self.config.transactional_id_expiration_ms,
            )
            .await;
        }
    }
}

impl TxnCoordinator {
    /// Ask the check-back service about `id`'s open transaction in the
    /// background (see [`check`]).
    fn spawn_check(
        &self,
        broker: &Arc<crate::Broker>,
        shard: Arc<Shard>,
        id: String,
        url: String,
        reason: checkback::Reason,
    ) {
        let (open, generation) = {
            let mut inner = shard.lock();
            let Some(open) = inner
                .txns
                .get(&id)
                .map(|e| e.value.clone())
                .filter(|v| v.status == TxnStatus::Ongoing)
            else {
                return;
            };
            if !inner.checking.insert(id.clone()) {
                return;
            }
            (open, inner.generation)
        };
        let checking = Checking {
            shard,
            id,
            generation,
        };
        tokio::spawn(check(Arc::downgrade(broker), checking, open, url, reason));
    }
}

/// A check-back task's claim on its id: while it lives, the driver neither
/// aborts the transaction nor starts another check of it.
struct Checking {
    shard: Arc<Shard>,
    id: String,
    generation: u64,
}

impl Checking {
    /// The transaction asked about, if it is still open as it was (the same
    /// producer, epoch and start) and the shard was not reloaded since.
    fn still_open(&self, asked: &TxnValue) -> Option<TxnValue> {
        let inner = self.shard.lock();
        if inner.generation != self.generation {
            return None;
        }
        inner
            .txns
            .get(&self.id)
            .map(|e| &e.value)
            .filter(|v| same_transaction(v, asked))
            .cloned()
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        let mut inner = self.shard.lock();
        if inner.generation == self.generation {
            inner.checking.remove(&self.id);
        }
    }
}

/// Whether `v` is still the open transaction `asked` was.
fn same_transaction(v: &TxnValue, asked: &TxnValue) -> bool {
    v.status == TxnStatus::Ongoing
        && v.producer_id == asked.producer_id
        && v.producer_epoch == asked.producer_epoch
        && v.start_ms == asked.start_ms
}

/// Ask the check-back service at `url` about an open transaction until an
/// answer decides it, it ends some other way (its producer commits or
/// aborts it, a new producer fences it), or the shard is unloaded.
/// `unknown` and failed checks are asked again with backoff, up to
/// `weir.txn.checkback.max.checks`; after that the default action decides
/// once the transaction is past its timeout (an id found open at a load
/// may have a live producer that finishes it first).
async fn check(
    broker: Weak<crate::Broker>,
    checking: Checking,
    asked: TxnValue,
    url: String,
    reason: checkback::Reason,
) {
    let id = checking.id.clone();
    let mut keys: Option<Vec<String>> = None;
    let mut checks = 0u32;
    let mut decision: Option<bool> = None;
    let (max_checks, default_commit, mut backoff, backoff_max) = match broker.upgrade() {
        Some(b) => {
            let c = &b.txns.config.checkback;
            (
                c.max_checks,
                c.default_commit,
                Duration::from_millis(c.backoff_ms),
                Duration::from_millis(c.backoff_max_ms),
            )
        }
        None => return,
    };
    loop {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let Some(open) = checking.still_open(&asked) else {
            tracing::debug!(transactional_id = %id, "check-back: the transaction ended without it");
            return;
        };
        if decision.is_none() && checks < max_checks {
            checks += 1;
            let keys = match &keys {
                Some(keys) => keys.clone(),
                None => {
                    let found = transaction_keys(&broker, &id, &open).await;
                    keys = Some(found.clone());
                    found
                }
            };
            match broker
                .txns
                .checkback
                .ask(&url, &id, &open, &keys, checks, reason)
                .await
            {
                Ok(checkback::Action::Commit) => decision = Some(true),
                Ok(checkback::Action::Abort) => decision = Some(false),
                Ok(checkback::Action::Unknown) => {
                    tracing::info!(transactional_id = %id, check = checks, max_checks, %url,
                        "check-back: the service does not know yet; asking again later");
                }
                Err(err) => {
                    tracing::warn!(transactional_id = %id, check = checks, max_checks, %url, error = %err,
                        "check-back failed; retrying with backoff (a check that fails counts toward weir.txn.checkback.max.checks)");
                }
            }
        }
        if decision.is_none()
            && checks >= max_checks
            && state::timed_out(&open, broker.clock.now_ms())
        {
            tracing::warn!(transactional_id = %id, checks, commit = default_commit,
                "check-back: no answer after weir.txn.checkback.max.checks; weir.txn.checkback.default.action decides");
            decision = Some(default_commit);
        }
        if let Some(commit) = decision {
            let decided = broker
                .txns
                .change(&id, |existing, now_ms| match existing {
                    Some(v) if same_transaction(v, &asked) => {
                        Ok((Some(state::fenced_end(v, commit, now_ms)), true))
                    }
                    _ => Ok((None, false)),
                })
                .await;
            match decided {
                Ok(true) => {
                    tracing::info!(transactional_id = %id, commit, checks,
                        "check-back decided the transaction; its producer is fenced");
                    drop(checking);
                    broker.txns.spawn_completion(&broker, &id);
                    return;
                }
                Ok(false) => return,
                // The producer's own change is being written: look again.
                Err(ResponseError::ConcurrentTransactions) => {}
                Err(err) => {
                    tracing::warn!(transactional_id = %id, error = ?err,
                        "check-back: cannot write the decision; the coordinator moved");
                    return;
                }
            }
        }
        drop(broker);
        if decision.is_some() {
            tokio::time::sleep(DRIVER_TICK).await;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(backoff_max.max(backoff));
        }
    }
}

/// The keys the check-back service is sent: the `weir.txn-key` values of
/// the transaction's records on the partitions this broker holds a replica
/// of (on a cluster, a partition with no replica here is left out, and
/// that is logged).
async fn transaction_keys(broker: &Arc<crate::Broker>, id: &str, open: &TxnValue) -> Vec<String> {
    let mut partitions: Vec<Partition> = Vec::new();
    for (topic, index) in &open.partitions {
        if topic == crate::group::OFFSETS_TOPIC {
            continue;
        }
        match broker
            .topic(topic)
            .map(|state| crate::topics::local_partition(&state, *index))
        {
            Some(Ok(partition)) => partitions.push(partition),
            Some(Err(_)) => {
                tracing::warn!(transactional_id = %id, %topic, partition = index,
                    "check-back: no replica of a partition of the transaction here; its keys are left out");
            }
            // Deleted since: it has no records to name.
            None => {}
        }
    }
    let producer_id = open.producer_id;
    let owned_id = id.to_string();
    let (keys, complete) =
        crate::blocking::run(move || checkback::keys_of(&partitions, producer_id, &owned_id))
            .await
            .unwrap_or_default();
    if !complete {
        tracing::warn!(transactional_id = %id, keys = keys.len(), "check-back: asking with the keys found");
    }
    keys
}

/// An error code as an [`ApiError`] with Kafka's words for it.
fn code_error(code: ResponseError) -> ApiError {
    let message = match code {
        ResponseError::ConcurrentTransactions => {
            "a change of this transactional id is in progress; retry"
        }
        ResponseError::NotCoordinator => "this broker does not coordinate the transactional id",
        ResponseError::CoordinatorNotAvailable => "the transaction coordinator is not available",
        ResponseError::ProducerFenced => "a newer producer has taken over the transactional id",
        _ => "the transaction coordinator refused the request",
    };
    ApiError::new(code, message)
}

/// Append one state record (`None`: a tombstone) for `id` and wait until it
/// is committed.
async fn write(
    partition: &Partition,
    id: &str,
    value: Option<&TxnValue>,
    now_ms: i64,
) -> Result<(), ResponseError> {
    let entry = [(records::encode_key(id), value.map(TxnValue::encode))];
    let batch = crate::group::encode_batches(&entry, now_ms)
        .ok()
        .and_then(|mut b| b.pop())
        .ok_or(ResponseError::UnknownServerError)?;
    let appending = partition.clone();
    let outcome = crate::blocking::run(move || appending.append(batch))
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?
        .map_err(|err| {
            tracing::error!(transactional_id = %id, error = %err, "cannot write transaction state");
            ResponseError::NotCoordinator
        })?;
    outcome.ack_wait(true).wait().await.map_err(|err| {
        tracing::error!(transactional_id = %id, error = %err, "transaction state was not committed");
        ResponseError::NotCoordinator
    })
}

/// Forget an expired id: a tombstone, then the entry.
async fn expire(shard: &Arc<Shard>, id: &str, now_ms: i64, expiration_ms: i64) {
    let (partition, generation) = {
        let mut inner = shard.lock();
        let Some(partition) = inner.partition.clone() else {
            return;
        };
        let Some(e) = inner.txns.get_mut(id) else {
            return;
        };
        if e.pending || !state::expired(&e.value, now_ms, expiration_ms) {
            return;
        }
        e.pending = true;
        (partition, inner.generation)
    };
    let written = write(&partition, id, None, now_ms).await;
    let mut inner = shard.lock();
    if inner.generation != generation {
        return;
    }
    if written.is_ok() {
        inner.txns.remove(id);
        tracing::info!(transactional_id = %id, "forgot a transactional id idle past transactional.id.expiration.ms");
    } else if let Some(e) = inner.txns.get_mut(id) {
        e.pending = false;
    }
}

/// Write the markers of `id`'s transaction, then its Complete state,
/// retrying with backoff until done or until the shard is unloaded.
async fn complete(broker: Weak<crate::Broker>, shard: Arc<Shard>, id: String) {
    let mut done: HashSet<(String, i32)> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let (value, generation, coordinator_epoch) = {
            let inner = shard.lock();
            let Some(e) = inner.txns.get(&id) else {
                return;
            };
            if !matches!(
                e.value.status,
                TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
            ) {
                drop(inner);
                shard.lock().completing.remove(&id);
                return;
            }
            (
                e.value.clone(),
                inner.generation,
                inner.loaded_epoch.unwrap_or(0),
            )
        };
        let marker = TxnMarker {
            commit: value.status == TxnStatus::PrepareCommit,
            coordinator_epoch,
        };
        let mut failed = None;
        // The markers go out together, up to MARKERS_IN_FLIGHT at a time:
        // each waits for its partition's commit (on a cluster, its
        // leader's replication), and those waits overlap.
        let mut pending: Vec<(String, i32)> = value
            .partitions
            .iter()
            .filter(|p| !done.contains(*p))
            .cloned()
            .collect();
        let mut writing = tokio::task::JoinSet::new();
        let mut results = Vec::with_capacity(pending.len());
        while !pending.is_empty() || !writing.is_empty() {
            while writing.len() < MARKERS_IN_FLIGHT
                && let Some((topic, partition)) = pending.pop()
            {
                let broker = broker.clone();
                let (producer_id, epoch) = (value.producer_id, value.producer_epoch);
                writing.spawn(async move {
                    let written = broker
                        .write_marker(&topic, partition, producer_id, epoch, marker)
                        .await;
                    ((topic, partition), written)
                });
            }
            match writing.join_next().await {
                Some(Ok(result)) => results.push(result),
                // A marker task that panicked: retried with the others.
                Some(Err(_)) => {
                    failed = Some((
                        TXN_TOPIC.to_string(),
                        shard.index,
                        ResponseError::UnknownServerError,
                    ));
                }
                None => {}
            }
        }
        for ((topic, partition), written) in results {
            match written {
                Ok(()) => {
                    done.insert((topic, partition));
                }
                // The partition has seen a newer producer epoch or a newer
                // coordinator: this marker can never be written, and the
                // newer one ends the transaction there. Kafka's coordinator
                // gives up on such a partition the same way.
                Err(
                    err @ (ResponseError::InvalidProducerEpoch
                    | ResponseError::ProducerFenced
                    | ResponseError::TransactionCoordinatorFenced),
                ) => {
                    tracing::warn!(transactional_id = %id, %topic, partition, error = ?err,
                        "a transaction marker was refused as stale; the partition has a newer one");
                    done.insert((topic, partition));
                }
                Err(err) => failed = Some((topic, partition, err)),
            }
        }
        if failed.is_none() {
            let now_ms = broker.clock.now_ms();
            let next = state::complete(&value, now_ms);
            let partition = {
                let mut inner = shard.lock();
                if inner.generation != generation {
                    return;
                }
                let Some(e) = inner.txns.get_mut(&id) else {
                    return;
                };
                e.pending = true;
                inner.partition.clone()
            };
            let written = match partition {
                Some(p) => write(&p, &id, Some(&next), now_ms).await,
                None => Err(ResponseError::NotCoordinator),
            };
            let mut inner = shard.lock();
            if inner.generation != generation {
                return;
            }
            match written {
                Ok(()) => {
                    inner.txns.insert(id.clone(), Entry::settled(next));
                    inner.completing.remove(&id);
                    drop(inner);
                    broker
                        .txns
                        .completed
                        .send_modify(|n| *n = n.wrapping_add(1));
                    return;
                }
                Err(err) => {
                    if let Some(e) = inner.txns.get_mut(&id) {
                        e.pending = false;
                    }
                    failed = Some((TXN_TOPIC.to_string(), shard.index, err));
                }
            }
        }
        if let Some((topic, partition, err)) = failed {
            tracing::warn!(transactional_id = %id, %topic, partition, error = ?err,
                "cannot complete a transaction yet; retrying");
        }
        drop(broker);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MARKER_RETRY_MAX);
    }
}

/// The driver: finishes loaded Prepare states at once, and every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` aborts
/// timed-out transactions and forgets expired ids.
async fn drive(broker: Weak<crate::Broker>) {
    let mut last_check = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(DRIVER_TICK).await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let interval = Duration::from_millis(
            u64::try_from(broker.txns.config.abort_timed_out_interval_ms).unwrap_or(u64::MAX),
        );
        let check = last_check.elapsed() >= interval;
        if check {
            last_check = tokio::time::Instant::now();
        }
        broker.txns.tick(&broker, check).await;
    }
}

/// Replay one partition: each id's newest state (a tombstone forgets it).
fn replay(index: i32, partition: &Partition) -> Result<BTreeMap<String, TxnValue>, LoadError> {
    let end = partition.offsets().log_end;
    let mut next = partition.offsets().log_start;
    let mut out = BTreeMap::new();
    let fail = |detail: String| LoadError {
        partition: index,
        detail,
    };
    while next < end {
        let read = partition
            .read_replica(next, LOAD_READ_BYTES)
            .map_err(|e| fail(e.to_string()))?;
        if read.records.is_empty() {
            break;
        }
        let before = next;
        for framed in batches(&read.records) {
            let (header, batch) = framed.map_err(|e| fail(e.to_string()))?;
            let mut batch = read.records.slice_ref(batch);
            let records = RecordBatchDecoder::decode(&mut batch)
                .map(|set| set.records)
                .map_err(|e| fail(format!("batch at {}: {e}", header.base_offset)))?;
            for record in records {
                if record.offset < next || record.control {
                    continue;
                }
                let key = record
                    .key
                    .as_deref()
                    .ok_or_else(|| fail(format!("record {} has no key", record.offset)))?;
                // Unlike a foreign group record, a state this build cannot
                // read refuses the load: guessing could lose a commit.
                let (id, value) = records::decode(key, record.value.as_deref())
                    .map_err(|e| fail(format!("record {}: {e}", record.offset)))?;
                match value {
                    Some(v) => {
                        out.insert(id, v);
                    }
                    None => {
                        out.remove(&id);
                    }
                }
            }
            next = next.max(header.last_offset().saturating_add(1));
        }
        if next <= before {
            return Err(fail("reading made no progress".into()));
        }
    }
    Ok(out)
}

impl crate::Broker {
    /// The transaction coordinator.
    pub(crate) fn txns(&self) -> &Arc<TxnCoordinator> {
        &self.txns
    }

    /// Load the ids of every `__transaction_state` partition on a single
    /// node, if the topic exists (it is made on the first FindCoordinator
    /// of a transactional id). Blocks on file I/O.
    pub(crate) fn load_transactions(&self) -> Result<(), ApiError> {
        if self.metadata.replicated() {
            return self.follow_txn_coordinators();
        }
        let Some(state) = self.topic(TXN_TOPIC) else {
            return Ok(());
        };
        let partitions = state
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i32::try_from(i).unwrap_or(i32::MAX), p.clone()))
            .collect();
        self.txns
            .load(partitions)
            .map_err(|e| ApiError::new(ResponseError::KafkaStorageError, e.to_string()))
    }

    /// On a cluster: coordinate the ids of each `__transaction_state`
    /// partition this broker leads, and only those, as the group
    /// coordinator follows `__consumer_offsets` (`follow_coordinators`). A
    /// shard is replayed from the local replica when its leadership arrives
    /// (every state a client was answered on waited for the ISR), and its
    /// Prepare states are finished and its open transactions checked back
    /// by the driver as after a restart. Blocks on file I/O.
    pub(crate) fn follow_txn_coordinators(&self) -> Result<(), ApiError> {
        let Some(state) = self.topic(TXN_TOPIC) else {
            return Ok(());
        };
        let storage = |e: LoadError| ApiError::new(ResponseError::KafkaStorageError, e.to_string());
        if !self.txns.loaded() {
            let unloaded = vec![None; usize::try_from(state.meta.partitions).unwrap_or(0)];
            self.txns
                .load(
                    unloaded
                        .into_iter()
                        .enumerate()
                        .map(|(i, p)| (i32::try_from(i).unwrap_or(i32::MAX), p))
                        .collect(),
                )
                .map_err(storage)?;
        }
        let (loaded, unloaded) = self.follow_leadership(
            &state,
            |index| self.txns.shard_epoch(index),
            |index| self.txns.unload_shard(index),
            |index, partition| {
                self.txns
                    .load_shard(index, partition)
                    .map_err(|e| e.to_string())
            },
        )?;
        if !loaded.is_empty() || !unloaded.is_empty() {
            tracing::info!(took_over = ?loaded, handed_over = ?unloaded,
                "transaction coordination follows the leadership of {TXN_TOPIC} partitions");
        }
        Ok(())
    }

    /// The broker coordinating `transactional_id`, as `(id, host, port)`:
    /// this one on a single node, making `__transaction_state` on first
    /// use; on a cluster the leader of the id's `__transaction_state`
    /// partition (the topic made on first use with
    /// `transaction.state.log.replication.factor` replicas). Blocks on file
    /// I/O, or on the metadata quorum, when it makes the topic.
    pub(crate) fn txn_coordinator(&self, transactional_id: &str) -> Result<i32, ApiError> {
        if self.metadata.replicated() {
            return self.internal_topic_leader(
                TXN_TOPIC,
                transactional_id,
                self.txns.config.state_log_num_partitions,
                self.txns.config.state_log_replication_factor,
            );
        }
        if !self.txns.loaded() {
            if self.topic(TXN_TOPIC).is_none() {
                // Commits of state are answered once durable whatever the
                // broker's flush policy: the topic never inherits a relaxed one.
                let configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("flush.messages".to_string(), "1".to_string()),
                ]);
                let partitions = self.txns.config.state_log_num_partitions;
                match self.create_topic(TXN_TOPIC, partitions, -1, configs, false) {
                    Ok(_) => {}
                    Err(err) if err.code == ResponseError::TopicAlreadyExists => {}
                    Err(err) => return Err(err),
                }
            }
            self.load_transactions()?;
        }
        Ok(self.config.node_id)
    }

    /// Have each of `partitions` join the open transaction of `producer`
    /// (id, epoch) of `transactional_id` (KIP-890): verified, or added
    /// (`joining`), with this broker's shard when it coordinates the id,
    /// else, on a cluster, with the coordinator (AddPartitionsToTxn, as
    /// Kafka's partition leaders send it). A coordinator that cannot be
    /// asked now is NOT_ENOUGH_REPLICAS, which producers retry (Kafka's
    /// answer too); so is a busy one, but to a producer of transaction
    /// version 2, which retries CONCURRENT_TRANSACTIONS itself.
    pub(crate) async fn join_transaction(
        &self,
        transactional_id: &str,
        (producer_id, epoch): (i64, i16),
        partitions: &[(String, i32)],
        joining: Joining,
    ) -> Vec<Result<(), ResponseError>> {
        let answers = if self.txns.coordinates(transactional_id) || !self.metadata.replicated() {
            match joining {
                Joining::Verify => partitions
                    .iter()
                    .map(|p| self.txns.verify(transactional_id, producer_id, epoch, p))
                    .collect(),
                Joining::Add => {
                    let added = self
                        .txns
                        .add_partitions(transactional_id, producer_id, epoch, partitions)
                        .await;
                    vec![added; partitions.len()]
                }
            }
        } else {
            match self
                .join_remotely(transactional_id, (producer_id, epoch), partitions, joining)
                .await
            {
                Ok(answers) => answers,
                Err(err) => {
                    tracing::debug!(transactional_id, error = ?err, "cannot reach a transaction's coordinator now");
                    vec![Err(ResponseError::NotEnoughReplicas); partitions.len()]
                }
            }
        };
        answers
            .into_iter()
            .map(|answer| match answer {
                Err(
                    ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress,
                ) => Err(ResponseError::NotEnoughReplicas),
                Err(ResponseError::ConcurrentTransactions) if joining == Joining::Verify => {
                    Err(ResponseError::NotEnoughReplicas)
                }
                other => other,
            })
            .collect()
    }

    async fn join_remotely(
        &self,
        transactional_id: &str,
        (producer_id, epoch): (i64, i16),
        partitions: &[(String, i32)],
        joining: Joining,
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        use kafka_protocol::messages::add_partitions_to_txn_request::{
            AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
        };
        use kafka_protocol::messages::{AddPartitionsToTxnRequest, TopicName, TransactionalId};
        use kafka_protocol::protocol::StrBytes;
        let meta = self
            .metadata
            .topic(TXN_TOPIC)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let index = crate::group::records::partition_for(transactional_id, meta.partitions);
        let coordinator = meta
            .assignment(index, self.config.node_id)
            .map_or(weir_metadata::NO_LEADER, |a| a.leader);
        if coordinator == weir_metadata::NO_LEADER || coordinator == self.config.node_id {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, p) in partitions {
            by_topic.entry(topic).or_default().push(*p);
        }
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    transactional_id.to_string(),
                )))
                .with_producer_id(producer_id.into())
                .with_producer_epoch(epoch)
                .with_verify_only(joining == Joining::Verify)
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(topic, ps)| {
                            AddPartitionsToTxnTopic::default()
                                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                                .with_partitions(ps)
                        })
                        .collect(),
                ),
        ]);
        let response = self
            .peers
            .call(coordinator, &request, PEER_ADD_PARTITIONS_VERSION)
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        if let Some(err) = ResponseError::try_from_code(response.error_code) {
            return Err(err);
        }
        let results = response
            .results_by_transaction
            .iter()
            .find(|r| r.transactional_id.as_str() == transactional_id)
            .ok_or(ResponseError::UnknownServerError)?;
        Ok(partitions
            .iter()
            .map(|(topic, p)| {
                let code = results
                    .topic_results
                    .iter()
                    .filter(|t| t.name.as_str() == topic)
                    .flat_map(|t| &t.results_by_partition)
                    .find(|r| r.partition_index == *p)
                    .map_or(ResponseError::UnknownServerError.code(), |r| {
                        r.partition_error_code
                    });
                match ResponseError::try_from_code(code) {
                    None => Ok(()),
                    Some(err) => Err(err),
                }
            })
            .collect())
    }

    /// Write a transaction marker to a partition and wait until it is
    /// committed: appended here when this broker leads it, else sent to its
    /// leader as WriteTxnMarkers, as Kafka's coordinator sends it.
    pub(crate) async fn write_marker(
        &self,
        topic: &str,
        index: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: TxnMarker,
    ) -> Result<(), ResponseError> {
        if !self.metadata.replicated() {
            return self
                .write_marker_here(topic, index, producer_id, producer_epoch, marker)
                .await;
        }
        let Some(meta) = self.metadata.topic(topic) else {
            // The topic was deleted: there is nothing left to mark.
            return Ok(());
        };
        let leader = meta
            .assignment(index, self.config.node_id)
            .map_or(weir_metadata::NO_LEADER, |a| a.leader);
        if leader == weir_metadata::NO_LEADER {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if leader == self.config.node_id {
            return self
                .write_marker_here(topic, index, producer_id, producer_epoch, marker)
                .await;
        }
        use kafka_protocol::messages::write_txn_markers_request::{
            WritableTxnMarker, WritableTxnMarkerTopic,
        };
        let request =
            kafka_protocol::messages::WriteTxnMarkersRequest::default().with_markers(vec![
                WritableTxnMarker::default()
                    .with_producer_id(producer_id.into())
                    .with_producer_epoch(producer_epoch)
                    .with_transaction_result(marker.commit)
                    .with_coordinator_epoch(marker.coordinator_epoch)
                    .with_topics(vec![
                        WritableTxnMarkerTopic::default()
                            .with_name(kafka_protocol::messages::TopicName(
                                kafka_protocol::protocol::StrBytes::from_string(topic.to_string()),
                            ))
                            .with_partition_indexes(vec![index]),
                    ]),
            ]);
        let response = self
            .peers
            .call(leader, &request, WRITE_TXN_MARKERS_VERSION)
            .await
            .map_err(|err| {
                tracing::warn!(%topic, partition = index, leader, error = %err,
                    "cannot send a transaction marker to the partition's leader");
                ResponseError::NotLeaderOrFollower
            })?;
        let code = response
            .markers
            .iter()
            .flat_map(|m| &m.topics)
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == index)
            .map(|p| p.error_code)
            .ok_or(ResponseError::UnknownServerError)?;
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }

    /// Append a transaction marker to a partition this broker leads and
    /// wait until it is committed (WriteTxnMarkers' handler, and the
    /// coordinator for partitions it leads).
    pub(crate) async fn write_marker_here(
        &self,
        topic: &str,
        index: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: TxnMarker,
    ) -> Result<(), ResponseError> {
        let Some(state) = self.topic(topic) else {
            // The topic was deleted: there is nothing left to mark.
            return Ok(());
        };
        let partition = crate::topics::local_partition(&state, index).map_err(|e| e.code)?;
        if let crate::replica::Leadership::NotLeader { .. } =
            self.replicas.leadership(partition.id())
        {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let appending = partition.clone();
        let outcome = crate::blocking::run(move || {
            appending.append_marker(producer_id, producer_epoch, marker)
        })
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?
        .map_err(|err| crate::error::ApiError::from(err).code)?;
        outcome
            .ack_wait(true)
            .wait()
            .await
            .map_err(|err| crate::error::ApiError::from(err).code)?;
        if topic == crate::group::OFFSETS_TOPIC {
            // A consume-transform-produce transaction's offsets take effect
            // (or are dropped) with its marker.
            self.groups()
                .txn_completed(index, producer_id, marker.commit);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::admin::testing::{broker_with, open};
    use crate::config::BrokerConfig;

    /// A transactional batch of one record from `producer` (id, epoch).
    fn txn_batch(producer: (i64, i16), sequence: i32) -> bytes::Bytes {
        weir_client::transactional_batch(&[b"v"], producer, sequence).unwrap()
    }

    /// Wait (up to 30 s) until `id`'s transaction is CompleteCommit.
    async fn committed(txns: &TxnCoordinator, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while txns.describe(id).unwrap().value.status != TxnStatus::CompleteCommit {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the transaction was not finished"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A broker with topic `t` (one partition) that coordinates the
    /// transactional id `tx`, and its config, to open it again.
    fn coordinating() -> (crate::admin::testing::TestBroker, BrokerConfig) {
        let config = BrokerConfig {
            txn: crate::config::TxnConfig {
                state_log_num_partitions: 2,
                ..Default::default()
            },
            ..BrokerConfig::default()
        };
        let t = broker_with(config.clone());
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        t.broker.txn_coordinator("tx").unwrap();
        (t, config)
    }

    /// A coordinator that stops between the decision (PrepareCommit) and the
    /// markers finishes the transaction when it loads the state again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_decided_before_a_restart_is_finished_after_it() {
        let (t, config) = coordinating();
        let txns = t.broker.txns().clone();
        let producer = txns
            .init_producer_id(&t.broker, "tx", 60_000, None)
            .await
            .unwrap();
        txns.add_partitions(
            "tx",
            producer.producer_id,
            producer.epoch,
            &[("t".to_string(), 0)],
        )
        .await
        .unwrap();
        let partition = t.broker.partition("t", 0).unwrap();
        let written = partition
            .append(txn_batch((producer.producer_id, producer.epoch), 0))
            .unwrap();
        written.committed.wait().await.unwrap();
        assert_eq!(partition.offsets().last_stable, 0);
        // The decision is written; the broker stops before any marker.
        txns.change("tx", |v, now_ms| {
            let v = v.unwrap();
            Ok((
                Some(TxnValue {
                    status: TxnStatus::PrepareCommit,
                    update_ms: now_ms,
                    ..v.clone()
                }),
                (),
            ))
        })
        .await
        .unwrap();
        drop((txns, partition));
        drop(t.broker);

        let again = open(t.dir.path(), config);
        assert_eq!(
            again.txns().describe("tx").unwrap().value.status,
            TxnStatus::PrepareCommit
        );
        again.start_background();
        let partition = again.partition("t", 0).unwrap();
        committed(again.txns(), "tx").await;
        // The COMMIT marker is in the partition: its record is stable.
        let offsets = partition.offsets();
        assert_eq!(offsets.log_end, 2);
        assert_eq!(offsets.last_stable, 2);
        assert!(
            partition
                .read_committed(0, 1 << 20)
                .unwrap()
                .aborted
                .is_empty()
        );
    }

    /// A producer of transaction version 2 at its id's last epoch: the end
    /// moves it to a new id at epoch 0, the markers carry the old id's very
    /// last epoch, and the state (the Prepare state holds the new id) reads
    /// back after a restart, where a retry of the end is still known.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_end_at_the_last_epoch_moves_the_producer_to_a_new_id() {
        let (t, config) = coordinating();
        let txns = t.broker.txns().clone();
        let first = txns
            .init_producer_id(&t.broker, "tx", 60_000, None)
            .await
            .unwrap();
        // Where 32,766 ends of transaction version 2 would have taken it.
        let last = (
            first.producer_id,
            crate::producer_ids::PRODUCER_EPOCH_EXHAUSTED,
        );
        txns.change("tx", |v, now_ms| {
            Ok((
                Some(TxnValue {
                    producer_epoch: last.1,
                    update_ms: now_ms,
                    ..v.unwrap().clone()
                }),
                (),
            ))
        })
        .await
        .unwrap();
        txns.add_partitions("tx", last.0, last.1, &[("t".to_string(), 0)])
            .await
            .unwrap();
        let partition = t.broker.partition("t", 0).unwrap();
        let written = partition.append(txn_batch(last, 0)).unwrap();
        written.committed.wait().await.unwrap();

        let next = txns
            .end(&t.broker, "tx", last, true, state::EndRules::V2)
            .await
            .unwrap();
        assert_ne!(next.producer_id, last.0);
        assert_eq!(next.epoch, 0);
        committed(&txns, "tx").await;
        let old = partition
            .producers()
            .into_iter()
            .find(|s| s.producer_id == last.0)
            .unwrap();
        assert_eq!(old.producer_epoch, i16::MAX, "the marker's epoch");
        assert_eq!(partition.offsets().last_stable, 2);
        drop((txns, partition));
        drop(t.broker);

        let again = open(t.dir.path(), config);
        let v = again.txns().describe("tx").unwrap().value;
        assert_eq!(
            (v.producer_id, v.producer_epoch, v.last_producer_id),
            (next.producer_id, 0, last.0)
        );
        assert_eq!(v.next_producer_id, -1);
        let retried = again
            .txns()
            .end(&again, "tx", last, true, state::EndRules::V2)
            .await
            .unwrap();
        assert_eq!(retried, next, "a retry from the old id is answered again");
    }
}
