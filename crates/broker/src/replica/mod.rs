//! The replica manager: each partition's replication role on this broker,
//! as the controller's assignments set it, and the state that moves its
//! high watermark.
//!
//! A partition this broker leads keeps, per follower, the offset it last
//! fetched from (a follower fetches from its durable log end, so that offset
//! is what the follower holds durably) and when it was last caught up. The
//! high watermark's bound ([`Partition::set_high_watermark_bound`]) is the
//! lowest fetch offset among the in-sync followers. Followers that fall
//! behind for `replica.lag.time.max.ms` leave the ISR, and followers that
//! catch up join it, both through the controller
//! ([`MetadataStore::alter_partition`]): the leader acts on the ISR only once
//! the controller returns it, except that a pending expansion already counts
//! for the high watermark (KIP-497: the larger set is the safe one).
//!
//! A partition this broker follows is fetched by one fetcher task per
//! leader (`fetcher.rs`). A partition with no role here (a single node's,
//! never assigned) is led by this broker alone, exactly as before
//! replication: ISR = {self}, no high-watermark bound.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use weir_metadata::{AlterPartition, BrokerInfo, MetadataStore, NO_LEADER, PartitionAssignment};
use weir_storage::{Clock, Partition, PartitionId};
use weir_sync::lock;

mod fetcher;

/// How a replica fetch (or produce, or consumer fetch) meets this broker's
/// role for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leadership {
    /// This broker leads the partition (or the partition has no role: a
    /// single node's). `isr` is the committed ISR's size.
    Leader { isr: usize },
    /// Another broker leads it (or none does: `leader` is [`NO_LEADER`]).
    NotLeader { leader: i32, leader_epoch: i32 },
}

/// What the fetcher and the leader side need to know of the cluster's settings.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaSettings {
    pub node_id: i32,
    /// `replica.lag.time.max.ms`.
    pub lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: per partition, per fetch.
    pub fetch_partition_bytes_max: i32,
    /// `replica.fetch.response.max.bytes`: one whole replica fetch.
    pub fetch_response_bytes_max: i32,
}

/// One follower as its leader sees it.
#[derive(Debug, Clone)]
struct FollowerState {
    /// The offset of its latest fetch (its durable log end); -1 before any.
    fetch_offset: i64,
    /// When it last had everything the leader had (ms).
    caught_up_ms: i64,
    /// The leader's log end at its previous fetch, and when that was.
    previous_fetch: Option<(i64, i64)>,
}

#[derive(Debug)]
struct LeaderRole {
    partition: Partition,
    topic: String,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    /// The ISR the controller committed.
    isr: BTreeSet<i32>,
    /// An ISR change sent to the controller and not answered yet.
    pending_isr: Option<BTreeSet<i32>>,
    /// The log end when this broker became leader: a follower joins the
    /// ISR only once it has everything from before this leadership.
    epoch_start_offset: i64,
    followers: HashMap<i32, FollowerState>,
}

#[derive(Debug)]
enum Role {
    Leader(LeaderRole),
    Follower {
        leader: i32,
        leader_epoch: i32,
        endpoint: Option<(String, i32)>,
    },
}

/// Each partition's role on this broker and the fetchers that follow other leaders.
pub(crate) struct ReplicaManager {
    settings: ReplicaSettings,
    clock: Arc<dyn Clock>,
    metadata: Arc<dyn MetadataStore>,
    roles: Mutex<HashMap<PartitionId, Role>>,
    /// This broker's epoch, for AlterPartition (from the registrations).
    broker_epoch: Mutex<i64>,
    fetchers: Mutex<HashMap<i32, fetcher::Fetcher>>,
    /// The task that shrinks ISRs, once a partition has followers.
    isr_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Itself, for the tasks it starts (which must not keep it alive).
    this: Weak<ReplicaManager>,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for ReplicaManager {
    fn drop(&mut self) {
        if let Ok(Some(task)) = self.isr_task.get_mut().map(Option::take) {
            task.abort();
        }
        // Each fetcher's task ends when its handle drops.
    }
}

/// Errors of [`ReplicaManager::apply`].
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The storage refused the new leader epoch.
    #[error("setting the leader epoch: {0}")]
    Epoch(#[from] weir_storage::EpochError),
    /// Following another broker needs a tokio runtime for its fetcher.
    #[error("no tokio runtime to run the fetcher on")]
    NoRuntime,
    /// A lock was poisoned by a panic.
    #[error("{0}")]
    Poisoned(#[from] weir_sync::PoisonedLock),
}

fn endpoint_of(brokers: &[BrokerInfo], id: i32) -> Option<(String, i32)> {
    brokers
        .iter()
        .find(|b| b.id == id)
        .map(|b| (b.host.clone(), b.port))
}

impl ReplicaManager {
    pub(crate) fn new(
        settings: ReplicaSettings,
        clock: Arc<dyn Clock>,
        metadata: Arc<dyn MetadataStore>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            settings,
            clock,
            metadata,
            roles: Mutex::new(HashMap::new()),
            broker_epoch: Mutex::new(-1),
            fetchers: Mutex::new(HashMap::new()),
            isr_task: Mutex::new(None),
            this: this.clone(),
        })
    }

    /// Make this broker's role for `partition` (of topic `topic`) what
    /// `assignment` says: leader, follower of another broker, or neither.
    /// Idempotent: the same assignment again changes nothing. A new leader
    /// epoch on this broker is set in storage before anything is appended
    /// under it; a new leader elsewhere is followed by truncating to where
    /// this log and the leader's diverge (OffsetForLeaderEpoch), then
    /// fetching.
    pub fn apply(
        &self,
        topic: &str,
        partition: &Partition,
        assignment: &PartitionAssignment,
        brokers: &[BrokerInfo],
    ) -> Result<(), ReplicaError> {
        let me = self.settings.node_id;
        if let Some(b) = brokers.iter().find(|b| b.id == me) {
            *lock(&self.broker_epoch)? = b.epoch;
        }
        let id = partition.id();
        if assignment.leader == me {
            return self.become_leader(topic, partition, assignment);
        }
        let endpoint = endpoint_of(brokers, assignment.leader);
        let mut roles = lock(&self.roles)?;
        if let Some(Role::Follower {
            leader,
            leader_epoch,
            endpoint: known,
        }) = roles.get(&id)
            && *leader == assignment.leader
            && *leader_epoch == assignment.leader_epoch
            && (*known == endpoint || endpoint.is_none())
        {
            return Ok(());
        }
        roles.insert(
            id,
            Role::Follower {
                leader: assignment.leader,
                leader_epoch: assignment.leader_epoch,
                endpoint: endpoint.clone(),
            },
        );
        drop(roles);
        self.unfollow(id)?;
        let follows = assignment.leader != NO_LEADER && assignment.replicas.contains(&me);
        // Until the leader says otherwise, nothing new is committed here.
        partition.set_high_watermark_bound(Some(partition.offsets().high_watermark));
        if follows && let Some((host, port)) = endpoint {
            self.follow(
                assignment.leader,
                (host, port),
                fetcher::Followed {
                    topic: topic.to_owned(),
                    partition: partition.clone(),
                    leader_epoch: assignment.leader_epoch,
                    state: fetcher::FollowState::Truncate,
                    retry_at: None,
                },
            )?;
        }
        Ok(())
    }

    fn become_leader(
        &self,
        topic: &str,
        partition: &Partition,
        a: &PartitionAssignment,
    ) -> Result<(), ReplicaError> {
        let id = partition.id();
        {
            let mut roles = lock(&self.roles)?;
            if let Some(Role::Leader(l)) = roles.get_mut(&id)
                && l.leader_epoch == a.leader_epoch
            {
                // The same leadership: take the controller's newer ISR.
                if a.partition_epoch > l.partition_epoch {
                    l.partition_epoch = a.partition_epoch;
                    l.isr = a.isr.iter().copied().collect();
                    self.set_replicas(l, &a.replicas);
                    l.pending_isr = None;
                    self.update_hw(l);
                }
                let has_followers = !l.followers.is_empty();
                drop(roles);
                if has_followers {
                    self.start_isr_task();
                }
                return Ok(());
            }
        }
        self.unfollow(id)?;
        // The current epoch again changes nothing; an older one is refused.
        partition.set_leader_epoch(a.leader_epoch)?;
        let now = self.clock.now_ms();
        let me = self.settings.node_id;
        let followers = a
            .replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                (
                    r,
                    FollowerState {
                        fetch_offset: -1,
                        caught_up_ms: now,
                        previous_fetch: None,
                    },
                )
            })
            .collect::<HashMap<_, _>>();
        let has_followers = !followers.is_empty();
        let mut role = LeaderRole {
            partition: partition.clone(),
            topic: topic.to_owned(),
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            replicas: a.replicas.clone(),
            isr: a.isr.iter().copied().collect(),
            pending_isr: None,
            epoch_start_offset: partition.offsets().log_end,
            followers,
        };
        self.update_hw(&mut role);
        lock(&self.roles)?.insert(id, Role::Leader(role));
        if has_followers {
            self.start_isr_task();
        }
        Ok(())
    }

    /// Take a new replica set under the same leadership (a reassignment
    /// adds or removes replicas): a new follower starts with no fetch yet,
    /// and caught up as of now so it is not counted as lagging before its
    /// first fetch; a removed one is forgotten.
    fn set_replicas(&self, l: &mut LeaderRole, replicas: &[i32]) {
        let me = self.settings.node_id;
        let now = self.clock.now_ms();
        l.followers.retain(|r, _| replicas.contains(r));
        for &r in replicas.iter().filter(|&&r| r != me) {
            l.followers.entry(r).or_insert(FollowerState {
                fetch_offset: -1,
                caught_up_ms: now,
                previous_fetch: None,
            });
        }
        l.replicas = replicas.to_vec();
    }

    /// The ISR the high watermark waits for: the committed one, with a
    /// pending expansion already counted (the larger set is the safe one).
    fn hw_isr(l: &LeaderRole) -> BTreeSet<i32> {
        let mut isr = l.isr.clone();
        if let Some(p) = &l.pending_isr {
            isr.extend(p.iter().copied());
        }
        isr
    }

    /// Bound the high watermark by the in-sync followers' fetch offsets.
    fn update_hw(&self, l: &mut LeaderRole) {
        let me = self.settings.node_id;
        let bound = Self::hw_isr(l)
            .iter()
            .filter(|&&r| r != me)
            .map(|r| l.followers.get(r).map_or(-1, |f| f.fetch_offset))
            .min();
        l.partition.set_high_watermark_bound(bound);
    }

    /// This broker's role for a partition, for a produce or a consumer fetch.
    pub(crate) fn leadership(&self, id: PartitionId) -> Leadership {
        let Ok(roles) = lock(&self.roles) else {
            return Leadership::NotLeader {
                leader: NO_LEADER,
                leader_epoch: -1,
            };
        };
        match roles.get(&id) {
            // A cluster's partition with no role here is led elsewhere (or
            // this broker has not applied its assignment yet).
            None if self.metadata.replicated() => {
                drop(roles);
                self.led_elsewhere(id)
            }
            None => Leadership::Leader { isr: 1 },
            Some(Role::Leader(l)) => Leadership::Leader { isr: l.isr.len() },
            Some(Role::Follower {
                leader,
                leader_epoch,
                ..
            }) => Leadership::NotLeader {
                leader: *leader,
                leader_epoch: *leader_epoch,
            },
        }
    }

    /// A client's read of offsets (ListOffsets, OffsetForLeaderEpoch) is
    /// answered by the leader only: a follower's copy may be behind, or
    /// hold a tail the leader will have it truncate. NOT_LEADER_OR_FOLLOWER
    /// otherwise. Returns the offset this leadership began at (the log end
    /// when this broker became leader; 0 for a partition with no role).
    pub(crate) fn leader_for_clients(&self, id: PartitionId) -> Result<i64, crate::ApiError> {
        if let Leadership::NotLeader { leader, .. } = self.leadership(id) {
            return Err(crate::ApiError::new(
                kafka_protocol::ResponseError::NotLeaderOrFollower,
                format!("this broker does not lead the partition; broker {leader} does"),
            ));
        }
        let roles = lock(&self.roles).map_err(|e| {
            crate::ApiError::new(
                kafka_protocol::ResponseError::UnknownServerError,
                e.to_string(),
            )
        })?;
        Ok(match roles.get(&id) {
            Some(Role::Leader(l)) => l.epoch_start_offset,
            _ => 0,
        })
    }

    /// Whether this broker follows the partition (holds a replica another
    /// broker leads).
    pub(crate) fn follows(&self, id: PartitionId) -> bool {
        lock(&self.roles).is_ok_and(|roles| matches!(roles.get(&id), Some(Role::Follower { .. })))
    }

    /// The leadership of a partition this broker has no role for, as the
    /// metadata assigns it.
    fn led_elsewhere(&self, id: PartitionId) -> Leadership {
        let assignment = self
            .metadata
            .topic_by_id(id.topic_id)
            .and_then(|meta| meta.assignment(id.partition, self.settings.node_id));
        match assignment {
            Some(a) if a.leader != self.settings.node_id => Leadership::NotLeader {
                leader: a.leader,
                leader_epoch: a.leader_epoch,
            },
            // Assigned here but not applied yet: nobody to send the client to.
            _ => Leadership::NotLeader {
                leader: NO_LEADER,
                leader_epoch: -1,
            },
        }
    }

    /// A replica fetch from `replica` at `fetch_offset`: `Ok` when this
    /// broker leads the partition and `replica` is one of its followers,
    /// after recording the fetch (which may move the high watermark and
    /// ask the controller to add the follower to the ISR).
    pub(crate) fn follower_fetched(
        &self,
        id: PartitionId,
        replica: i32,
        fetch_offset: i64,
    ) -> Result<(), Leadership> {
        let now = self.clock.now_ms();
        let expand = {
            let Ok(mut roles) = lock(&self.roles) else {
                return Err(self.leadership(id));
            };
            let Some(Role::Leader(l)) = roles.get_mut(&id) else {
                drop(roles);
                return Err(self.leadership(id));
            };
            let log_end = l.partition.offsets().log_end;
            let Some(f) = l.followers.get_mut(&replica) else {
                drop(roles);
                return Err(self.leadership(id));
            };
            f.fetch_offset = fetch_offset;
            // Kafka's rule: caught up when it fetched from the log end, or
            // from at least where the log end was at its previous fetch.
            if fetch_offset >= log_end {
                f.caught_up_ms = now;
            } else if let Some((prev_end, prev_ms)) = f.previous_fetch
                && fetch_offset >= prev_end
            {
                f.caught_up_ms = f.caught_up_ms.max(prev_ms);
            }
            f.previous_fetch = Some((log_end, now));
            self.update_hw(l);
            let hw = l.partition.offsets().high_watermark;
            let joins = !l.isr.contains(&replica)
                && l.pending_isr.is_none()
                && fetch_offset >= hw
                && fetch_offset >= l.epoch_start_offset;
            joins.then(|| {
                let mut isr = l.isr.clone();
                isr.insert(replica);
                l.pending_isr = Some(isr.clone());
                (id, isr)
            })
        };
        if let Some((id, isr)) = expand {
            self.alter_isr(id, isr);
        }
        Ok(())
    }

    /// Send an ISR change to the controller; its answer becomes the ISR.
    fn alter_isr(&self, id: PartitionId, new_isr: BTreeSet<i32>) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let change = {
            let Ok(roles) = lock(&self.roles) else { return };
            let Some(Role::Leader(l)) = roles.get(&id) else {
                return;
            };
            AlterPartition {
                topic_id: id.topic_id,
                partition: id.partition,
                leader: self.settings.node_id,
                broker_epoch: lock(&self.broker_epoch).map_or(-1, |e| *e),
                leader_epoch: l.leader_epoch,
                partition_epoch: l.partition_epoch,
                new_isr: new_isr.iter().copied().collect(),
            }
        };
        let leader_epoch = change.leader_epoch;
        runtime.spawn_blocking(move || {
            let answer = this.metadata.alter_partition(change);
            let Ok(mut roles) = lock(&this.roles) else {
                return;
            };
            let Some(Role::Leader(l)) = roles.get_mut(&id) else {
                return;
            };
            if l.leader_epoch != leader_epoch {
                return;
            }
            l.pending_isr = None;
            match answer {
                Ok(a) if a.leader_epoch == l.leader_epoch => {
                    if a.partition_epoch >= l.partition_epoch {
                        l.partition_epoch = a.partition_epoch;
                        l.isr = a.isr.iter().copied().collect();
                        this.set_replicas(l, &a.replicas);
                    }
                    tracing::info!(topic = %l.topic, partition = id.partition, isr = ?l.isr,
                        "the controller committed an ISR change");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(topic = %l.topic, partition = id.partition, error = %err,
                        "the controller refused an ISR change");
                }
            }
            this.update_hw(l);
        });
    }

    /// Ask the controller to drop the followers that were not caught up
    /// for `replica.lag.time.max.ms` from the ISR of each partition led here.
    fn shrink_isrs(&self) {
        let now = self.clock.now_ms();
        let lag = i64::try_from(self.settings.lag_time_max_ms).unwrap_or(i64::MAX);
        let me = self.settings.node_id;
        let shrinks: Vec<(PartitionId, BTreeSet<i32>)> = {
            let Ok(mut roles) = lock(&self.roles) else {
                return;
            };
            roles
                .iter_mut()
                .filter_map(|(id, role)| {
                    let Role::Leader(l) = role else { return None };
                    if l.pending_isr.is_some() {
                        return None;
                    }
                    // Kafka's rule: a follower at the log end is in sync
                    // however long its fetch has been waiting for data.
                    let log_end = l.partition.offsets().log_end;
                    let isr: BTreeSet<i32> = l
                        .isr
                        .iter()
                        .copied()
                        .filter(|r| {
                            *r == me
                                || l.followers.get(r).is_some_and(|f| {
                                    f.fetch_offset >= log_end
                                        || now.saturating_sub(f.caught_up_ms) <= lag
                                })
                        })
                        .collect();
                    if isr.len() == l.isr.len() {
                        return None;
                    }
                    tracing::info!(topic = %l.topic, partition = id.partition, from = ?l.isr, to = ?isr,
                        "shrinking the ISR: followers not caught up for replica.lag.time.max.ms");
                    // The smaller set waits for the controller: meanwhile
                    // the high watermark keeps waiting for the larger one.
                    l.pending_isr = Some(isr.clone());
                    Some((*id, isr))
                })
                .collect()
        };
        for (id, isr) in shrinks {
            self.alter_isr(id, isr);
        }
    }

    fn start_isr_task(&self) {
        let Ok(mut task) = lock(&self.isr_task) else {
            return;
        };
        if task.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = self.this.clone();
        let period = std::time::Duration::from_millis((self.settings.lag_time_max_ms / 2).max(1));
        *task = Some(runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.shrink_isrs();
            }
        }));
    }

    /// The partition is gone (its topic was deleted): no role, no fetching.
    pub(crate) fn forget(&self, id: PartitionId) -> Result<(), weir_sync::PoisonedLock> {
        lock(&self.roles)?.remove(&id);
        self.unfollow(id)
    }

    /// Add a partition to the fetcher of `leader`, starting it if needed.
    fn follow(
        &self,
        leader: i32,
        endpoint: (String, i32),
        followed: fetcher::Followed,
    ) -> Result<(), ReplicaError> {
        let mut fetchers = lock(&self.fetchers)?;
        if let Some(f) = fetchers.get(&leader)
            && f.endpoint == endpoint
        {
            return f.add(followed);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ReplicaError::NoRuntime)?;
        let fresh = fetcher::Fetcher::start(&runtime, self.settings.clone(), endpoint);
        // The leader moved to a new address: its other partitions move with
        // it to the new connection, where they go on as they were.
        if let Some(old) = fetchers.remove(&leader) {
            for moved in old.take_all()? {
                fresh.add(moved)?;
            }
        }
        fresh.add(followed)?;
        fetchers.insert(leader, fresh);
        Ok(())
    }

    /// Stop fetching a partition from whichever leader it was fetched from.
    fn unfollow(&self, id: PartitionId) -> Result<(), weir_sync::PoisonedLock> {
        let mut fetchers = lock(&self.fetchers)?;
        for f in fetchers.values() {
            f.remove(id)?;
        }
        fetchers.retain(|_, f| !f.is_empty());
        Ok(())
    }
}

impl crate::Broker {
    /// KIP-392's rack-aware replica selector, for a consumer in `rack`
    /// fetching a partition this broker leads: another in-sync replica on
    /// an unfenced broker in that rack, when this broker is not in it.
    /// `None` (read from the leader) unless `replica.selector.class` names
    /// the rack-aware selector, as Kafka's default leader-only selector does.
    pub(crate) fn closest_replica(&self, id: PartitionId, rack: &str) -> Option<i32> {
        if !self.config.rack_aware_replica_selector || self.config.rack.as_deref() == Some(rack) {
            return None;
        }
        let assignment = self
            .metadata
            .topic_by_id(id.topic_id)?
            .assignment(id.partition, self.config.node_id)?;
        let brokers = self.metadata.brokers();
        assignment.isr.iter().copied().find(|&replica| {
            replica != self.config.node_id
                && brokers
                    .iter()
                    .any(|b| b.id == replica && !b.fenced && b.rack.as_deref() == Some(rack))
        })
    }

    /// Apply the metadata store's partition assignments to every partition
    /// this broker holds (the change feed calls it after each change).
    /// Topics without assignments (a single node's) are left as they are:
    /// led here alone.
    pub fn apply_replica_assignments(&self) -> Result<(), ReplicaError> {
        let brokers = self.metadata.brokers();
        for state in self.topic_list() {
            let Some(meta) = self.metadata.topic_by_id(state.meta.id) else {
                continue;
            };
            if meta.assignments.is_empty() {
                continue;
            }
            for (index, partition) in state.local_partitions() {
                if let Some(a) = meta.assignment(index, self.config.node_id) {
                    self.replicas.apply(&meta.name, partition, &a, &brokers)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
