//! One shard of the group coordinator: the groups whose home is one
//! partition of `__consumer_offsets`, as in Kafka's new group coordinator.
//!
//! A shard has its own lock, its own deadline queue and its own driver task,
//! so a slow append or fsync for one partition never stalls the heartbeats
//! of groups on another. A shard is loaded from its partition (replaying
//! every record) and can be unloaded again: the cluster work moves a shard
//! when that partition's leadership moves.
//!
//! Records are queued under the shard lock, so the log holds a shard's
//! changes in the order they were made, and appended by the shard's
//! [`RecordWriter`] on a blocking thread: nothing writes or waits for an
//! fsync with the lock held. OffsetCommit, DeleteGroups and OffsetDelete follow append,
//! wait until durable, apply to memory, answer: OffsetFetch and ListGroups
//! never show a change a crash could undo.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::{Notify, oneshot};
use weir_storage::{Clock, Partition};

use super::classic::{Effects, JoinParams, JoinResult, Reply, SyncParams, SyncResult, Token};
use super::records::{self, Key};
use super::state::{self, CommitPartition, Committed, GroupSummary};
use super::writer::{Appending, RecordWriter, ensure_strict};
use super::{LoadError, OFFSETS_TOPIC, assignor, consumer, encode_batches, share};
use crate::config::GroupConfig;

/// How long the driver sleeps when no group has a deadline; it is woken
/// earlier whenever one is set.
const IDLE_WAIT_MS: u64 = 60_000;

enum Waiter {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

/// When each group next needs its time advanced, in deadline order.
#[derive(Debug, Default)]
struct Deadlines {
    by_group: HashMap<String, i64>,
    queue: BTreeSet<(i64, String)>,
}

impl Deadlines {
    /// Set (or clear) a group's deadline. True when it became the earliest.
    fn set(&mut self, group: &str, deadline_ms: Option<i64>) -> bool {
        if let Some(old) = self.by_group.remove(group) {
            self.queue.remove(&(old, group.to_string()));
        }
        let Some(deadline_ms) = deadline_ms else {
            return false;
        };
        let earliest = self.earliest().is_none_or(|e| deadline_ms < e);
        self.by_group.insert(group.to_string(), deadline_ms);
        self.queue.insert((deadline_ms, group.to_string()));
        debug_assert_eq!(self.by_group.len(), self.queue.len());
        earliest
    }

    fn earliest(&self) -> Option<i64> {
        self.queue.first().map(|(d, _)| *d)
    }

    /// Remove and return every group whose deadline is not after `now_ms`.
    fn take_due(&mut self, now_ms: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((deadline, _)) = self.queue.first()
            && *deadline <= now_ms
        {
            if let Some((_, group)) = self.queue.pop_first() {
                self.by_group.remove(&group);
                due.push(group);
            }
        }
        due
    }

    fn clear(&mut self) {
        self.by_group.clear();
        self.queue.clear();
    }
}

struct Inner {
    /// The partition this shard writes to; `None` while unloaded.
    partition: Option<Partition>,
    /// The partition's leader epoch when it was loaded: a leadership that
    /// left and came back (another broker coordinated in between) must
    /// replay again.
    loaded_epoch: i32,
    groups: state::Groups,
    /// Transactions' offsets waiting for their marker (see [`super::TxnOffsets`]).
    txn_offsets: super::TxnOffsets,
    waiters: HashMap<Token, Waiter>,
    next_token: Token,
    deadlines: Deadlines,
}

/// The groups of one `__consumer_offsets` partition.
pub(crate) struct Shard {
    index: i32,
    /// The coordinator's settings, with `groups_max` this shard's share.
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Appends the records of the shard's changes, in order, off the lock.
    writer: Arc<RecordWriter>,
    /// Wakes the driver when an earlier deadline is set (or the shard goes).
    wake: Arc<Notify>,
    driver_started: AtomicBool,
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl Shard {
    pub(crate) fn new(index: i32, config: GroupConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            index,
            config,
            clock,
            inner: Mutex::new(Inner {
                partition: None,
                loaded_epoch: -1,
                groups: state::Groups::default(),
                txn_offsets: super::TxnOffsets::default(),
                waiters: HashMap::new(),
                next_token: 0,
                deadlines: Deadlines::default(),
            }),
            writer: RecordWriter::new(index),
            wake: Arc::new(Notify::new()),
            driver_started: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock may have left a group half updated
        // (a generation bumped, its assignment not yet written): raise it
        // again rather than serve from that.
        weir_sync::lock(&self.inner).unwrap_or_else(weir_sync::PoisonedLock::reraise)
    }

    /// Become the coordinator of this partition's groups: replay it and
    /// schedule every group's deadline. Returns the records applied. Reads
    /// the whole partition: call it where blocking is allowed (start-up, or
    /// a blocking thread).
    pub(crate) fn load(self: &Arc<Self>, partition: Partition) -> Result<u64, LoadError> {
        ensure_strict(&partition, self.index);
        let epoch = partition.leader_epoch();
        let now_ms = self.clock.now_ms();
        let mut groups = state::Groups::default();
        let mut txn_offsets = super::TxnOffsets::default();
        let applied = super::replay_partition(
            self.index,
            &partition,
            (&mut groups, &mut txn_offsets),
            now_ms,
            &self.config,
        )?;
        let mut inner = self.lock();
        inner.groups = groups;
        inner.txn_offsets = txn_offsets;
        inner.partition = Some(partition);
        inner.loaded_epoch = epoch;
        inner.deadlines.clear();
        for id in inner.groups.ids() {
            let due = inner.groups.next_deadline_ms(&id, &self.config);
            inner.deadlines.set(&id, due);
        }
        drop(inner);
        self.wake.notify_one();
        self.ensure_driver();
        Ok(applied)
    }

    /// The leader epoch of the partition as this shard loaded it, while it
    /// coordinates its groups; `None` when unloaded.
    pub(crate) fn loaded_epoch(&self) -> Option<i32> {
        let inner = self.lock();
        inner.partition.as_ref().map(|_| inner.loaded_epoch)
    }

    /// Stop coordinating this partition's groups: parked requests are
    /// answered NOT_COORDINATOR and the groups leave memory (the log keeps them).
    pub(crate) fn unload(&self) {
        let mut inner = self.lock();
        inner.partition = None;
        inner.groups = state::Groups::default();
        inner.txn_offsets.clear();
        inner.deadlines.clear();
        for (_, waiter) in inner.waiters.drain() {
            match waiter {
                Waiter::Join(tx) => {
                    let _ = tx.send(JoinResult::error(ResponseError::NotCoordinator, ""));
                }
                Waiter::Sync(tx) => {
                    let _ = tx.send(SyncResult::error(ResponseError::NotCoordinator));
                }
            }
        }
    }

    /// Start the timer task on first use (it needs the async runtime, which
    /// `Broker::new` may run outside of).
    pub(crate) fn ensure_driver(self: &Arc<Self>) {
        if self.driver_started.swap(true, Ordering::SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(drive(Arc::downgrade(self), self.wake.clone()));
            }
            Err(_) => self.driver_started.store(false, Ordering::SeqCst),
        }
    }

    /// Run `op` on the loaded groups, carry out its effects and reschedule
    /// the group. `Err` when the shard is not loaded.
    fn with_groups<T>(
        self: &Arc<Self>,
        group_id: &str,
        op: impl FnOnce(&mut Inner, i64, &GroupConfig, &mut Effects) -> T,
    ) -> Result<(T, Result<Appending, String>), ResponseError> {
        self.ensure_driver();
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        if inner.partition.is_none() {
            return Err(ResponseError::NotCoordinator);
        }
        let mut fx = Effects::default();
        let out = op(&mut inner, now_ms, &self.config, &mut fx);
        let waits = self.carry_out(&mut inner, group_id, fx);
        Ok((out, waits))
    }

    /// Advance time for every group whose deadline passed.
    pub(crate) fn tick(&self) {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        if inner.partition.is_none() {
            return;
        }
        for id in inner.deadlines.take_due(now_ms) {
            let mut fx = Effects::default();
            inner.groups.tick_group(&id, now_ms, &self.config, &mut fx);
            // Each group's records are appended on their own: one failed
            // append leaves the other groups' changes alone.
            if let Err(err) = self.carry_out(&mut inner, &id, fx) {
                tracing::warn!(group = %id, error = %err, "cannot store group changes after a timeout");
            }
        }
    }

    pub(crate) fn earliest_deadline_ms(&self) -> Option<i64> {
        self.lock().deadlines.earliest()
    }

    pub(crate) async fn join(self: &Arc<Self>, p: JoinParams) -> JoinResult {
        let member_id = p.member_id.clone();
        let group_id = p.group_id.clone();
        let (tx, rx) = oneshot::channel();
        let done = self.with_groups(&group_id, |inner, now_ms, cfg, fx| {
            let token = inner.token(Waiter::Join(tx));
            inner.groups.join(p, token, now_ms, cfg, fx);
        });
        match done {
            Err(error) => return JoinResult::error(error, &member_id),
            Ok((_, Err(err))) => {
                tracing::warn!(group = %group_id, error = %err, "cannot store group metadata");
            }
            Ok(_) => {}
        }
        rx.await.unwrap_or_else(|_| {
            JoinResult::error(ResponseError::CoordinatorNotAvailable, &member_id)
        })
    }

    pub(crate) async fn sync(self: &Arc<Self>, p: SyncParams) -> SyncResult {
        let group_id = p.group_id.clone();
        let (tx, rx) = oneshot::channel();
        let done = self.with_groups(&group_id, |inner, now_ms, cfg, fx| {
            let token = inner.token(Waiter::Sync(tx));
            inner.groups.sync(p, token, now_ms, cfg, fx);
        });
        match done {
            Err(error) => return SyncResult::error(error),
            Ok((_, Err(err))) => {
                tracing::warn!(group = %group_id, error = %err, "cannot store group metadata");
            }
            Ok(_) => {}
        }
        rx.await
            .unwrap_or_else(|_| SyncResult::error(ResponseError::CoordinatorNotAvailable))
    }

    pub(crate) fn heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        self.with_groups(group_id, |inner, now_ms, _, _| {
            inner
                .groups
                .heartbeat(group_id, member_id, instance_id, generation, now_ms)
        })
        .map_or_else(Some, |(error, _)| error)
    }

    pub(crate) fn leave(
        self: &Arc<Self>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Option<ResponseError>> {
        match self.with_groups(group_id, |inner, now_ms, cfg, fx| {
            inner.groups.leave(group_id, members, now_ms, cfg, fx)
        }) {
            Ok((results, waits)) => {
                if let Err(err) = waits {
                    tracing::warn!(group = %group_id, error = %err, "cannot store group metadata");
                }
                results
            }
            Err(error) => vec![Some(error); members.len()],
        }
    }

    pub(crate) async fn commit(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        partitions: Vec<CommitPartition>,
    ) -> Result<(), ResponseError> {
        let (pending, waits) = self.with_groups(group_id, |inner, now_ms, cfg, fx| {
            inner
                .groups
                .check_commit(
                    group_id,
                    member_id,
                    instance_id,
                    generation,
                    now_ms,
                    cfg.groups_max,
                )
                .inspect_err(|error| {
                    tracing::debug!(group = %group_id, member = %member_id, generation, %error, "commit refused");
                })?;
            Ok(inner.groups.commit(group_id, partitions, now_ms, fx))
        })?;
        let pending = pending?;
        // The lock is not held here: other groups go on while this waits.
        let written = match waits {
            Ok(appending) => appending.written().await,
            Err(err) => Err(err),
        };
        let waits = written.map_err(|err| {
            tracing::error!(group = %group_id, error = %err, "cannot store committed offsets");
            ResponseError::NotCoordinator
        })?;
        for wait in waits {
            wait.wait().await.map_err(|err| {
                tracing::error!(group = %group_id, error = %err, "committed offsets are not durable");
                ResponseError::NotCoordinator
            })?;
        }
        if let Some(pending) = pending {
            self.lock().groups.apply_commit(pending);
        }
        Ok(())
    }

    /// TxnOffsetCommit: validate the member as a commit does, append the
    /// offsets as the producer's transactional records, wait until they are
    /// durable, and keep them for the transaction's marker: COMMIT applies
    /// them, ABORT drops them ([`Self::txn_completed`]).
    pub(crate) async fn txn_commit(
        self: &Arc<Self>,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        producer: (i64, i16),
        partitions: Vec<CommitPartition>,
    ) -> Result<(), ResponseError> {
        let (member_id, instance_id, generation) = member;
        self.ensure_driver();
        let (appending, entries) = {
            let now_ms = self.clock.now_ms();
            let mut inner = self.lock();
            let partition = inner
                .partition
                .clone()
                .ok_or(ResponseError::NotCoordinator)?;
            inner.groups.check_commit(
                group_id,
                member_id,
                instance_id,
                generation,
                now_ms,
                self.config.groups_max,
            )?;
            let entries: Vec<records::Entry> = partitions
                .into_iter()
                .map(|p| records::Entry::Offset {
                    group: group_id.to_string(),
                    topic: p.topic,
                    partition: p.partition,
                    value: Some(records::OffsetValue {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        commit_timestamp_ms: now_ms,
                        metadata: p.metadata,
                    }),
                })
                .collect();
            let encoded: Vec<(Bytes, Option<Bytes>)> = entries
                .iter()
                .filter_map(|e| match e {
                    records::Entry::Offset {
                        group,
                        topic,
                        partition,
                        value: Some(v),
                    } => Some((
                        Key::Offset {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                        }
                        .encode(),
                        Some(v.encode()),
                    )),
                    _ => None,
                })
                .collect();
            let payloads = super::encode_batches_as(&encoded, now_ms, Some(producer))
                .map_err(|_| ResponseError::UnknownServerError)?;
            (self.writer.queue(&partition, group_id, payloads), entries)
        };
        // Its own task: once written, the offsets must wait for the marker
        // even if this request is dropped (its client went away), as a
        // load would find them.
        let shard = self.clone();
        let group = group_id.to_string();
        tokio::spawn(async move {
            let waits = appending.written().await.map_err(|err| {
                tracing::error!(%group, error = %err, "cannot store a transaction's offsets");
                ResponseError::NotCoordinator
            })?;
            // Kept before the wait for durability: a marker may only come
            // after this answer, and a load would find them if they stay.
            shard
                .lock()
                .txn_offsets
                .entry(producer.0)
                .or_default()
                .extend(entries);
            for wait in waits {
                wait.wait().await.map_err(|err| {
                    tracing::error!(%group, error = %err, "a transaction's offsets are not durable");
                    ResponseError::NotCoordinator
                })?;
            }
            Ok(())
        })
        .await
        .unwrap_or(Err(ResponseError::NotCoordinator))
    }

    /// A marker for `producer_id` was committed to this shard's partition:
    /// its transaction's offsets are applied (COMMIT) or dropped (ABORT).
    pub(crate) fn txn_completed(&self, producer_id: i64, commit: bool) {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let Some(entries) = inner.txn_offsets.remove(&producer_id) else {
            return;
        };
        if commit {
            for entry in entries {
                inner.groups.replay(entry, now_ms, &self.config);
            }
        }
    }

    /// Whether a transaction's offset for the partition is waiting for its
    /// marker (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT).
    pub(crate) fn unstable(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.lock().txn_offsets.values().flatten().any(|e| {
            matches!(e, records::Entry::Offset { group, topic: t, partition: p, .. }
                if group == group_id && t == topic && *p == partition)
        })
    }

    pub(crate) fn consumer_heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        p: consumer::HeartbeatParams,
        shape: &dyn Fn(&str) -> Option<assignor::TopicShape>,
    ) -> consumer::HeartbeatResult {
        let member_id = p.member_id.clone();
        self.answer_heartbeat(group_id, &member_id, |groups, now_ms, cfg, fx| {
            groups.consumer_heartbeat(group_id, p, shape, now_ms, cfg, fx)
        })
    }

    pub(crate) fn share_heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        p: share::ShareHeartbeatParams,
        shape: &dyn Fn(&str) -> Option<assignor::TopicShape>,
    ) -> consumer::HeartbeatResult {
        let member_id = p.member_id.clone();
        self.answer_heartbeat(group_id, &member_id, |groups, now_ms, cfg, fx| {
            groups.share_heartbeat(group_id, p, shape, now_ms, cfg, fx)
        })
    }

    /// Answer a heartbeat that `op` decides, storing the group's changes.
    fn answer_heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        op: impl FnOnce(
            &mut state::Groups,
            i64,
            &GroupConfig,
            &mut Effects,
        ) -> consumer::HeartbeatResult,
    ) -> consumer::HeartbeatResult {
        match self.with_groups(group_id, |inner, now_ms, cfg, fx| {
            op(&mut inner.groups, now_ms, cfg, fx)
        }) {
            Ok((result, waits)) => {
                if let Err(err) = waits {
                    tracing::warn!(group = %group_id, error = %err, "cannot store group metadata");
                }
                result
            }
            Err(error) => consumer::HeartbeatResult::error(
                error,
                "this broker does not coordinate the group",
                member_id,
            ),
        }
    }

    pub(crate) fn share_group(&self, group_id: &str) -> Result<share::ShareGroup, ResponseError> {
        self.lock().groups.share_group(group_id).cloned()
    }

    pub(crate) fn consumer_group(
        &self,
        group_id: &str,
    ) -> Result<consumer::ConsumerGroup, ResponseError> {
        self.lock().groups.consumer_group(group_id).cloned()
    }

    pub(crate) fn check_member_epoch(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Result<(), ResponseError> {
        match self.lock().groups.consumer_group(group_id) {
            Ok(g) if !g.members.is_empty() => match g.accepts_epoch(member_id, epoch) {
                None => Err(ResponseError::UnknownMemberId),
                Some(false) => Err(ResponseError::StaleMemberEpoch),
                Some(true) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    pub(crate) fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<Committed> {
        self.lock()
            .groups
            .committed(group_id, topic, partition)
            .cloned()
    }

    pub(crate) fn all_committed(&self, group_id: &str) -> Vec<(String, i32, Committed)> {
        self.lock().groups.all_committed(group_id)
    }

    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.lock().groups.describe(group_id)
    }

    pub(crate) fn list(&self) -> Vec<GroupSummary> {
        self.lock().groups.list()
    }

    /// DeleteGroups of one group: append the tombstones, wait until they
    /// are durable, then forget the group.
    pub(crate) async fn delete(self: &Arc<Self>, group_id: &str) -> Option<ResponseError> {
        self.delete_durably(group_id, |groups, fx| {
            groups.delete(group_id, fx).map(|pending| ((), pending))
        })
        .await
        .err()
    }

    /// OffsetDelete: append the tombstones, wait until they are durable,
    /// then forget the offsets.
    pub(crate) async fn delete_offsets(
        self: &Arc<Self>,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        self.delete_durably(group_id, |groups, fx| {
            groups.delete_offsets(group_id, partitions, super::subscribes_to, fx)
        })
        .await
    }

    /// A deletion in the order commits follow: append, wait until durable,
    /// apply to memory, answer. A failed append or fsync answers
    /// NOT_COORDINATOR, as for commits, and memory keeps what it had.
    async fn delete_durably<T>(
        self: &Arc<Self>,
        group_id: &str,
        plan: impl FnOnce(
            &mut state::Groups,
            &mut Effects,
        ) -> Result<(T, state::PendingDelete), ResponseError>,
    ) -> Result<T, ResponseError> {
        self.ensure_driver();
        let (out, pending, waits) = {
            let mut inner = self.lock();
            if inner.partition.is_none() {
                return Err(ResponseError::NotCoordinator);
            }
            let mut fx = Effects::default();
            let (out, pending) = plan(&mut inner.groups, &mut fx)?;
            let appending = self.carry_out(&mut inner, group_id, fx).map_err(|err| {
                tracing::error!(group = %group_id, error = %err, "cannot store group deletion");
                ResponseError::NotCoordinator
            })?;
            // Registered under the lock that queued the tombstones, so a
            // commit queued after them wins and one queued before loses.
            inner.groups.begin_delete(&pending);
            (out, pending, appending)
        };
        // The lock is not held here: other groups go on while this waits.
        let waits = match waits.written().await {
            Ok(waits) => waits,
            Err(err) => {
                tracing::error!(group = %group_id, error = %err, "cannot store group deletion");
                self.lock().groups.abandon_delete(&pending);
                return Err(ResponseError::NotCoordinator);
            }
        };
        for wait in waits {
            if let Err(err) = wait.wait().await {
                tracing::error!(group = %group_id, error = %err, "group deletion is not durable");
                self.lock().groups.abandon_delete(&pending);
                return Err(ResponseError::NotCoordinator);
            }
        }
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        inner.groups.apply_delete(pending, now_ms);
        let due = inner.groups.next_deadline_ms(group_id, &self.config);
        if inner.deadlines.set(group_id, due) {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// Answer parked requests, queue the records (under the lock, so the
    /// log holds changes in the order they were made) and reschedule the
    /// group. The records' writing is the caller's to await, without the lock.
    fn carry_out(
        &self,
        inner: &mut Inner,
        group_id: &str,
        fx: Effects,
    ) -> Result<Appending, String> {
        for reply in fx.replies {
            match reply {
                Reply::Join(token, result) => {
                    if let Some(Waiter::Join(tx)) = inner.waiters.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Reply::Sync(token, result) => {
                    if let Some(Waiter::Sync(tx)) = inner.waiters.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
        let due = inner.groups.next_deadline_ms(group_id, &self.config);
        if inner.deadlines.set(group_id, due) {
            self.wake.notify_one();
        }
        if fx.records.is_empty() {
            return Ok(Appending::nothing());
        }
        let Some(partition) = inner.partition.as_ref() else {
            return Err(format!("{OFFSETS_TOPIC}-{} is not loaded", self.index));
        };
        let entries: Vec<(Bytes, Option<Bytes>)> = fx
            .records
            .into_iter()
            .map(|(key, value)| {
                debug_assert_eq!(key.group(), group_id, "a group writes only its own records");
                (key.encode(), value)
            })
            .collect();
        let payloads = encode_batches(&entries, self.clock.now_ms())?;
        Ok(self.writer.queue(partition, group_id, payloads))
    }
}

impl Inner {
    fn token(&mut self, waiter: Waiter) -> Token {
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        self.waiters.insert(token, waiter);
        token
    }
}

impl Key {
    fn group(&self) -> &str {
        match self {
            records::Key::Offset { group, .. }
            | records::Key::Group { group }
            | records::Key::ConsumerGroup { group }
            | records::Key::ShareGroup { group } => group,
        }
    }
}

/// The shard's driver: sleep until the earliest deadline (or until woken by
/// an earlier one), then advance the groups that are due. No scan of every
/// group: each wake-up touches only the groups whose time came.
async fn drive(shard: Weak<Shard>, wake: Arc<Notify>) {
    loop {
        let wait_ms = {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            let now_ms = shard.clock.now_ms();
            shard.earliest_deadline_ms().map_or(IDLE_WAIT_MS, |d| {
                u64::try_from(d.saturating_sub(now_ms)).unwrap_or(0)
            })
        };
        // At least a millisecond: a deadline that a tick cannot clear must
        // not turn the driver into a busy loop.
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {}
        }
        let Some(shard) = shard.upgrade() else {
            return;
        };
        shard.tick();
    }
}
