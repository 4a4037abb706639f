//! Every group the coordinator owns, with its committed offsets: the
//! group-level rules of each API (which group a request may create, which
//! commits are accepted, what deletes are allowed) and the replay of
//! `__consumer_offsets` at start-up. Pure: the caller passes the time and
//! carries out the [`Effects`].

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::assignor::TopicShape;
use super::classic::{
    ClassicGroup, Effects, JoinParams, JoinResult, Reply, State, SyncParams, SyncResult, Token,
};
use super::consumer::{ConsumerGroup, HeartbeatParams, HeartbeatResult, JOIN_EPOCH};
use super::records::{ConsumerGroupValue, Entry, Key, OffsetValue, ShareGroupValue};
use super::share::{ShareGroup, ShareHeartbeatParams};
use crate::config::GroupConfig;

/// A committed offset in memory.
pub(crate) type Committed = OffsetValue;

/// A group: its membership (classic or KIP-848, never both at once) and
/// its committed offsets.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub classic: ClassicGroup,
    pub consumer: ConsumerGroup,
    /// The consumer group as last written, to write only changes.
    pub(super) consumer_stored: Option<ConsumerGroupValue>,
    /// A share group's membership (KIP-932): `Some` makes the group a
    /// share group, which classic and consumer members cannot join.
    pub share: Option<ShareGroup>,
    /// The share group as last written, to write only changes.
    share_stored: Option<ShareGroupValue>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    /// Commits and offset deletions appended but not yet durable: the
    /// sequence of the newest per partition. Each is applied once durable
    /// only if it is still the newest, so memory ends with the value the log
    /// ends with.
    offsets_pending: HashMap<(String, i32), u64>,
    /// The sequence of a DeleteGroups whose tombstones are not yet durable.
    deleting: Option<u64>,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Self {
        Self {
            classic: ClassicGroup::new(id, now_ms),
            consumer: ConsumerGroup::default(),
            consumer_stored: None,
            share: None,
            share_stored: None,
            offsets: BTreeMap::new(),
            offsets_pending: HashMap::new(),
            deleting: None,
        }
    }

    /// Forget a committed offset, and any commit of it still on its way.
    fn remove_offset(&mut self, key: &(String, i32)) -> bool {
        self.offsets_pending.remove(key);
        self.offsets.remove(key).is_some()
    }

    /// The earliest time at which [`Groups::tick_group`] has something to do.
    fn next_deadline_ms(&self, cfg: &GroupConfig) -> Option<i64> {
        let classic = &self.classic;
        let sessions = classic
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none())
            .map(|m| m.session_deadline_ms);
        let pending = classic.pending.values().copied();
        let rebalance =
            (classic.state == State::PreparingRebalance).then_some(classic.rebalance_deadline_ms);
        let consumers = self
            .consumer
            .members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline_ms).chain(m.revoke_deadline_ms));
        let shares = self.share.as_ref().and_then(ShareGroup::next_deadline_ms);
        let mut next = sessions
            .chain(pending)
            .chain(rebalance)
            .chain(consumers)
            .chain(shares)
            .min();
        if self.is_empty() {
            // Offsets expire once `offsets.retention.minutes` has passed
            // since the later of their commit and the group emptying.
            let retention_ms = cfg.offsets_retention_minutes.saturating_mul(60_000);
            let since = classic.state_since_ms;
            let offsets = self
                .offsets
                .values()
                .map(|c| c.commit_timestamp_ms.max(since))
                .min()
                .unwrap_or(since);
            let expiry = offsets.saturating_add(retention_ms).saturating_add(1);
            next = Some(next.map_or(expiry, |n| n.min(expiry)));
        }
        next
    }

    /// Write the consumer group if it changed since it was last written.
    pub(super) fn persist_consumer(&mut self, fx: &mut Effects) {
        if self.consumer.group_epoch == 0 {
            return;
        }
        let value = self.consumer.to_value();
        if self.consumer_stored.as_ref() != Some(&value) {
            fx.records.push((
                Key::ConsumerGroup {
                    group: self.classic.id.clone(),
                },
                Some(value.encode()),
            ));
            self.consumer_stored = Some(value);
        }
    }

    /// Write the share group if it changed since it was last written.
    fn persist_share(&mut self, fx: &mut Effects) {
        let Some(share) = &self.share else {
            return;
        };
        let value = share.to_value();
        if self.share_stored.as_ref() != Some(&value) {
            fx.records.push((
                Key::ShareGroup {
                    group: self.classic.id.clone(),
                },
                Some(value.encode()),
            ));
            self.share_stored = Some(value);
        }
    }

    /// Whether KIP-848 members drive the group now.
    pub(super) fn is_consumer(&self) -> bool {
        !self.consumer.members.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.classic.state == State::Empty
            && !self.is_consumer()
            && self.share.as_ref().is_none_or(|s| s.members.is_empty())
    }

    /// The type ListGroups reports.
    fn group_type(&self) -> &'static str {
        if self.share.is_some() {
            SHARE_TYPE
        } else if self.is_consumer()
            || (self.consumer.group_epoch > 0 && self.classic.state == State::Empty)
        {
            CONSUMER_TYPE
        } else {
            CLASSIC_TYPE
        }
    }
}

/// The type of a group driven by JoinGroup and SyncGroup.
pub(crate) const CLASSIC_TYPE: &str = "classic";
/// The type of a group driven by ConsumerGroupHeartbeat (KIP-848).
pub(crate) const CONSUMER_TYPE: &str = "consumer";
/// The type of a group driven by ShareGroupHeartbeat (KIP-932).
pub(crate) const SHARE_TYPE: &str = "share";

/// One partition of an OffsetCommit, already checked against the topics.
#[derive(Debug, Clone)]
pub(crate) struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub(crate) struct GroupSummary {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub group_type: &'static str,
    pub members: Vec<MemberSummary>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Commits of one OffsetCommit appended to the log, to apply to memory once
/// they are durable ([`Groups::apply_commit`]).
#[derive(Debug)]
pub(crate) struct PendingCommit {
    group: String,
    sequence: u64,
    values: Vec<((String, i32), OffsetValue)>,
}

/// Tombstones of a DeleteGroups or an OffsetDelete appended to the log: they
/// are applied to memory once durable ([`Groups::apply_delete`]), so
/// OffsetFetch and ListGroups never miss what a crash would bring back.
#[derive(Debug)]
pub(crate) struct PendingDelete {
    group: String,
    sequence: u64,
    /// The committed offsets it deletes.
    keys: Vec<(String, i32)>,
    /// Whether it deletes the group itself (DeleteGroups).
    whole_group: bool,
}

/// All groups.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: HashMap<String, Group>,
    /// Numbers each OffsetCommit and deletion (see `Group::offsets_pending`).
    commit_sequence: u64,
}

impl Groups {
    /// Whether no more groups may be created.
    fn full(&self, cfg: &GroupConfig) -> bool {
        let full = self.groups.len() >= cfg.groups_max;
        if full {
            tracing::warn!(
                groups_max = cfg.groups_max,
                "refusing to create a group: groups_max reached"
            );
        }
        full
    }

    /// Replay one record of `__consumer_offsets` (start-up).
    pub(crate) fn replay(&mut self, entry: Entry, now_ms: i64, cfg: &GroupConfig) {
        match entry {
            Entry::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    self.groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms))
                        .offsets
                        .insert((topic, partition), v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.remove_offset(&(topic, partition));
                    }
                }
            },
            Entry::Group { group, value } => match value {
                Some(v) => {
                    let classic = ClassicGroup::from_value(&group, v, now_ms);
                    self.groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms))
                        .classic = classic;
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            Entry::ConsumerGroup { group, value } => match value {
                Some(v) => {
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms));
                    g.consumer = ConsumerGroup::from_value(v.clone(), now_ms, cfg);
                    g.consumer_stored = Some(v);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
            Entry::ShareGroup { group, value } => match value {
                Some(v) => {
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_ms));
                    g.share = Some(ShareGroup::from_value(v.clone(), now_ms, cfg));
                    g.share_stored = Some(v);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
        }
    }

    /// A JoinGroup, creating the group for a member without an id.
    pub(crate) fn join(
        &mut self,
        p: JoinParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let fail = |fx: &mut Effects, error, member: &str| {
            fx.replies
                .push(Reply::Join(token, JoinResult::error(error, member)));
        };
        if p.group_id.is_empty() {
            return fail(fx, ResponseError::InvalidGroupId, &p.member_id);
        }
        if p.session_timeout_ms < cfg.min_session_timeout_ms
            || p.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return fail(fx, ResponseError::InvalidSessionTimeout, &p.member_id);
        }
        if p.protocols
            .iter()
            .any(|(_, m)| m.len() > cfg.protocol_metadata_bytes_max)
        {
            return fail(fx, ResponseError::InvalidRequest, &p.member_id);
        }
        if !self.groups.contains_key(&p.group_id) {
            if !p.member_id.is_empty() {
                return fail(fx, ResponseError::UnknownMemberId, &p.member_id);
            }
            if self.full(cfg) {
                return fail(fx, ResponseError::CoordinatorNotAvailable, &p.member_id);
            }
            self.groups
                .insert(p.group_id.clone(), Group::new(&p.group_id, now_ms));
        }
        if let Some(g) = self.groups.get_mut(&p.group_id) {
            if g.share.is_some() {
                return fail(fx, ResponseError::InconsistentGroupProtocol, &p.member_id);
            }
            if g.is_consumer() {
                // A classic member of a group on the consumer protocol.
                return g.classic_join(p, token, now_ms, cfg, fx);
            }
            g.classic.join(p, token, now_ms, cfg, fx);
        }
    }

    /// A SyncGroup.
    pub(crate) fn sync(
        &mut self,
        p: SyncParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        match self.groups.get_mut(&p.group_id) {
            Some(g) if g.is_consumer() => g.classic_sync(p, token, fx),
            Some(g) if g.share.is_none() => g.classic.sync(p, token, now_ms, cfg, fx),
            _ => fx.replies.push(Reply::Sync(
                token,
                SyncResult::error(ResponseError::UnknownMemberId),
            )),
        }
    }

    /// A Heartbeat.
    pub(crate) fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        match self.groups.get_mut(group_id) {
            Some(g) if g.is_consumer() => g.classic_heartbeat(member_id, generation, now_ms),
            Some(g) if g.share.is_none() => {
                g.classic
                    .heartbeat(member_id, instance_id, generation, now_ms)
            }
            _ => Some(ResponseError::UnknownMemberId),
        }
    }

    /// A LeaveGroup of several members; one result per member.
    pub(crate) fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> Vec<Option<ResponseError>> {
        let Some(g) = self.groups.get_mut(group_id).filter(|g| g.share.is_none()) else {
            return vec![Some(ResponseError::UnknownMemberId); members.len()];
        };
        if g.is_consumer() {
            let results = members
                .iter()
                .map(|(member, _)| g.classic_leave(member))
                .collect();
            g.maybe_downgrade(now_ms, cfg, fx);
            g.persist_consumer(fx);
            return results;
        }
        members
            .iter()
            .map(|(member, instance)| {
                g.classic
                    .leave(member, instance.as_deref(), now_ms, cfg, fx)
            })
            .collect()
    }

    /// Validate an OffsetCommit's member, creating the group for a commit
    /// from outside group management (generation -1).
    pub(crate) fn check_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
        groups_max: usize,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        match self.groups.get_mut(group_id) {
            // A share group's progress lives in its share-partitions.
            Some(g) if g.share.is_some() => Err(ResponseError::GroupIdNotFound),
            Some(g) if g.is_consumer() => match g.consumer.accepts_epoch(member_id, generation) {
                None => Err(ResponseError::UnknownMemberId),
                Some(false) => Err(ResponseError::StaleMemberEpoch),
                Some(true) => Ok(()),
            },
            Some(g) => g
                .classic
                .check_commit(member_id, instance_id, generation, now_ms),
            None if generation < 0 => {
                if self.groups.len() >= groups_max {
                    tracing::warn!(groups_max, "refusing to create a group: groups_max reached");
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
                self.groups
                    .insert(group_id.to_string(), Group::new(group_id, now_ms));
                Ok(())
            }
            // A member of a generation this coordinator never saw.
            None => Err(ResponseError::IllegalGeneration),
        }
    }

    /// Push the records of accepted commits; they are applied to memory by
    /// [`Groups::apply_commit`] once durable, so OffsetFetch never returns
    /// an offset a crash could lose.
    pub(crate) fn commit(
        &mut self,
        group_id: &str,
        partitions: Vec<CommitPartition>,
        now_ms: i64,
        fx: &mut Effects,
    ) -> Option<PendingCommit> {
        let g = self.groups.get_mut(group_id)?;
        self.commit_sequence += 1;
        let mut pending = PendingCommit {
            group: group_id.to_string(),
            sequence: self.commit_sequence,
            values: Vec::with_capacity(partitions.len()),
        };
        for p in partitions {
            let value = OffsetValue {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                commit_timestamp_ms: now_ms,
                metadata: p.metadata,
            };
            fx.records.push((
                Key::Offset {
                    group: group_id.to_string(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                },
                Some(value.encode()),
            ));
            let key = (p.topic, p.partition);
            g.offsets_pending.insert(key.clone(), pending.sequence);
            pending.values.push((key, value));
        }
        Some(pending)
    }

    /// Apply durable commits, except those a later commit or a deletion of
    /// the same partition overtook.
    pub(crate) fn apply_commit(&mut self, pending: PendingCommit) {
        let Some(g) = self.groups.get_mut(&pending.group) else {
            return;
        };
        for (key, value) in pending.values {
            if g.offsets_pending.get(&key) == Some(&pending.sequence) {
                g.offsets_pending.remove(&key);
                g.offsets.insert(key, value);
            }
        }
    }

    /// A group's committed offset of one partition.
    pub(crate) fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&Committed> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
    }

    /// Every committed offset of a group, by topic then partition.
    pub(crate) fn all_committed(&self, group_id: &str) -> Vec<(String, i32, Committed)> {
        self.groups
            .get(group_id)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A group's description; `None` if it does not exist.
    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        let group = self.groups.get(group_id)?;
        let group_type = group.group_type();
        if let Some(share) = &group.share {
            return Some(GroupSummary {
                group_id: group_id.to_string(),
                state: share.state(),
                protocol_type: SHARE_TYPE.into(),
                protocol_name: String::new(),
                group_type,
                members: share
                    .members
                    .values()
                    .map(|m| MemberSummary {
                        member_id: m.id.clone(),
                        instance_id: None,
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: Bytes::new(),
                        assignment: Bytes::new(),
                    })
                    .collect(),
            });
        }
        if group.is_consumer() {
            return Some(GroupSummary {
                group_id: group_id.to_string(),
                state: group.consumer.state(),
                protocol_type: "consumer".into(),
                protocol_name: group.consumer.assignor.clone(),
                group_type,
                members: group
                    .consumer
                    .members
                    .values()
                    .map(|m| MemberSummary {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: Bytes::new(),
                        assignment: Bytes::new(),
                    })
                    .collect(),
            });
        }
        let g = &group.classic;
        let stable = g.state == State::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let mut members: Vec<_> = g.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        Some(GroupSummary {
            group_id: group_id.to_string(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            group_type,
            members: members
                .into_iter()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    // Kafka shows metadata and assignment only once stable.
                    metadata: if stable {
                        m.protocols
                            .iter()
                            .find(|(n, _)| *n == protocol)
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default()
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// Every group, sorted by id.
    pub(crate) fn list(&self) -> Vec<GroupSummary> {
        let mut ids: Vec<&String> = self.groups.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.describe(id)).collect()
    }

    /// Push the tombstones of an empty group and its offsets (DeleteGroups).
    /// Memory is unchanged: once the tombstones are appended the caller
    /// registers the deletion ([`Groups::begin_delete`]) and applies it once
    /// durable ([`Groups::apply_delete`]).
    pub(crate) fn delete(
        &mut self,
        group_id: &str,
        fx: &mut Effects,
    ) -> Result<PendingDelete, ResponseError> {
        let Some(g) = self.groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if !g.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        // Commits still on their way are deleted too: the log holds them
        // before these tombstones.
        let mut keys: Vec<(String, i32)> = g
            .offsets
            .keys()
            .chain(g.offsets_pending.keys())
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        for (topic, partition) in &keys {
            fx.records.push((
                Key::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                },
                None,
            ));
        }
        if g.consumer_stored.is_some() {
            fx.records.push((
                Key::ConsumerGroup {
                    group: group_id.to_string(),
                },
                None,
            ));
        }
        if g.share_stored.is_some() {
            fx.records.push((
                Key::ShareGroup {
                    group: group_id.to_string(),
                },
                None,
            ));
        }
        fx.records.push((
            Key::Group {
                group: group_id.to_string(),
            },
            None,
        ));
        self.commit_sequence += 1;
        Ok(PendingDelete {
            group: group_id.to_string(),
            sequence: self.commit_sequence,
            keys,
            whole_group: true,
        })
    }

    /// Push the tombstones of committed offsets of a group (OffsetDelete).
    /// `subscribed` says whether an active member still consumes a topic;
    /// those offsets stay. Returns one error per partition, and the deletion
    /// to register once appended, as for [`Groups::delete`].
    pub(crate) fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&ClassicGroup, &str) -> bool,
        fx: &mut Effects,
    ) -> Result<(Vec<Option<ResponseError>>, PendingDelete), ResponseError> {
        let g = self
            .groups
            .get(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let active = g.classic.state != State::Empty;
        let mut keys = Vec::new();
        let results = partitions
            .iter()
            .map(|(topic, partition)| {
                let in_use = (active && subscribed(&g.classic, topic))
                    || g.consumer
                        .members
                        .values()
                        .any(|m| m.subscribed.contains(topic));
                if in_use {
                    return Some(ResponseError::GroupSubscribedToTopic);
                }
                let key = (topic.clone(), *partition);
                let known = g.offsets.contains_key(&key) || g.offsets_pending.contains_key(&key);
                if known && !keys.contains(&key) {
                    fx.records.push((
                        Key::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition: *partition,
                        },
                        None,
                    ));
                    keys.push(key);
                }
                None
            })
            .collect();
        self.commit_sequence += 1;
        Ok((
            results,
            PendingDelete {
                group: group_id.to_string(),
                sequence: self.commit_sequence,
                keys,
                whole_group: false,
            },
        ))
    }

    /// A deletion's tombstones are in the log: commits appended before it
    /// are no longer applied when durable, those appended after it are.
    pub(crate) fn begin_delete(&mut self, pending: &PendingDelete) {
        let Some(g) = self.groups.get_mut(&pending.group) else {
            return;
        };
        for key in &pending.keys {
            g.offsets_pending.insert(key.clone(), pending.sequence);
        }
        if pending.whole_group {
            g.deleting = Some(pending.sequence);
        }
    }

    /// A deletion whose tombstones did not become durable: memory keeps
    /// what it had (commits it overtook stay unapplied, as the log may hold
    /// the tombstones after them).
    pub(crate) fn abandon_delete(&mut self, pending: &PendingDelete) {
        let Some(g) = self.groups.get_mut(&pending.group) else {
            return;
        };
        for key in &pending.keys {
            if g.offsets_pending.get(key) == Some(&pending.sequence) {
                g.offsets_pending.remove(key);
            }
        }
        if g.deleting == Some(pending.sequence) {
            g.deleting = None;
        }
    }

    /// Apply durable tombstones, except for the partitions a later commit
    /// overtook. A deleted group whose later commits remain lives on as a
    /// new group holding only those, as a replay of the log would show it.
    pub(crate) fn apply_delete(&mut self, pending: PendingDelete, now_ms: i64) {
        let Some(g) = self.groups.get_mut(&pending.group) else {
            return;
        };
        for key in &pending.keys {
            if g.offsets_pending.get(key) == Some(&pending.sequence) {
                g.offsets_pending.remove(key);
                g.offsets.remove(key);
            }
        }
        if !pending.whole_group || g.deleting != Some(pending.sequence) {
            return;
        }
        g.deleting = None;
        if !g.is_empty() {
            // A member joined after the tombstones: its records follow them.
            return;
        }
        if g.offsets.is_empty() && g.offsets_pending.is_empty() {
            self.groups.remove(&pending.group);
            return;
        }
        let mut fresh = Group::new(&pending.group, now_ms);
        fresh.offsets = std::mem::take(&mut g.offsets);
        fresh.offsets_pending = std::mem::take(&mut g.offsets_pending);
        *g = fresh;
    }

    /// Advance time for every group (the coordinator advances only the
    /// groups whose deadline passed, with [`Groups::tick_group`]).
    #[cfg(test)]
    pub(crate) fn tick(&mut self, now_ms: i64, cfg: &GroupConfig, fx: &mut Effects) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            self.tick_group(&id, now_ms, cfg, fx);
        }
    }

    /// Every group's id.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// When `group_id` next needs [`Groups::tick_group`]; `None` when it
    /// does not exist or waits for nothing.
    pub(crate) fn next_deadline_ms(&self, group_id: &str, cfg: &GroupConfig) -> Option<i64> {
        self.groups.get(group_id)?.next_deadline_ms(cfg)
    }

    /// Advance time for one group: expire sessions, finish a due rebalance,
    /// and drop offsets (then the group) empty for longer than
    /// `offsets.retention.minutes`.
    pub(crate) fn tick_group(
        &mut self,
        group_id: &str,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let retention_ms = cfg.offsets_retention_minutes.saturating_mul(60_000);
        let mut gone = Vec::new();
        if let Some(g) = self.groups.get_mut(group_id) {
            let id = group_id.to_string();
            g.classic.tick(now_ms, cfg, fx);
            let had_members = g.is_consumer();
            g.consumer.tick(now_ms);
            if had_members && !g.is_consumer() {
                g.classic.state_since_ms = now_ms;
            }
            g.maybe_downgrade(now_ms, cfg, fx);
            g.persist_consumer(fx);
            if let Some(share) = g.share.as_mut()
                && share.expire_sessions(now_ms)
            {
                if share.members.is_empty() {
                    g.classic.state_since_ms = now_ms;
                }
                g.persist_share(fx);
            }
            if !g.is_empty() {
                return;
            }
            let since = g.classic.state_since_ms;
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| {
                    now_ms.saturating_sub(c.commit_timestamp_ms.max(since)) > retention_ms
                })
                .map(|(k, _)| k.clone())
                .collect();
            for (topic, partition) in expired {
                g.remove_offset(&(topic.clone(), partition));
                fx.records.push((
                    Key::Offset {
                        group: id.clone(),
                        topic,
                        partition,
                    },
                    None,
                ));
            }
            if g.offsets.is_empty() && now_ms.saturating_sub(since) > retention_ms {
                gone.push(id);
            }
        }
        for id in gone {
            if self
                .groups
                .get(&id)
                .is_some_and(|g| g.consumer_stored.is_some())
            {
                fx.records
                    .push((Key::ConsumerGroup { group: id.clone() }, None));
            }
            if self
                .groups
                .get(&id)
                .is_some_and(|g| g.share_stored.is_some())
            {
                fx.records
                    .push((Key::ShareGroup { group: id.clone() }, None));
            }
            fx.records.push((Key::Group { group: id.clone() }, None));
            self.groups.remove(&id);
        }
    }
    /// The group a ConsumerGroupHeartbeat (`share` false) or a
    /// ShareGroupHeartbeat (`share` true) is for, created for a joining
    /// member (epoch 0). A group of the other kind is not found, as in Kafka.
    fn heartbeat_group(
        &mut self,
        group_id: &str,
        member_epoch: i32,
        now_ms: i64,
        cfg: &GroupConfig,
        share: bool,
    ) -> Result<&mut Group, (ResponseError, &'static str)> {
        if group_id.is_empty() {
            return Err((ResponseError::InvalidGroupId, "the group id is empty"));
        }
        if !self.groups.contains_key(group_id) {
            if member_epoch != JOIN_EPOCH {
                return Err((ResponseError::UnknownMemberId, "the group does not exist"));
            }
            if self.full(cfg) {
                return Err((
                    ResponseError::CoordinatorNotAvailable,
                    "the coordinator holds groups_max groups",
                ));
            }
            let mut g = Group::new(group_id, now_ms);
            g.share = share.then(ShareGroup::default);
            self.groups.insert(group_id.to_string(), g);
        }
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or((ResponseError::GroupIdNotFound, "the group does not exist"))?;
        match (share, g.share.is_some()) {
            (false, true) => Err((ResponseError::GroupIdNotFound, "the group is a share group")),
            (true, false) => Err((
                ResponseError::GroupIdNotFound,
                "the group is not a share group",
            )),
            _ => Ok(g),
        }
    }

    /// A ConsumerGroupHeartbeat (KIP-848), creating the group for a joining member.
    pub(crate) fn consumer_heartbeat(
        &mut self,
        group_id: &str,
        p: HeartbeatParams,
        shape: &dyn Fn(&str) -> Option<TopicShape>,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> HeartbeatResult {
        let fail = |error: ResponseError, message: &str| {
            HeartbeatResult::error(error, message, &p.member_id)
        };
        let g = match self.heartbeat_group(group_id, p.member_epoch, now_ms, cfg, false) {
            Ok(g) => g,
            Err((error, message)) => return fail(error, message),
        };
        if g.classic.state != State::Empty {
            // Kafka's online upgrade: the classic members become members of
            // a consumer group, keeping their partitions; when it cannot
            // happen the member is told the group is not a consumer group.
            if let Err(why) = g.upgrade(shape, now_ms, cfg, fx) {
                return fail(ResponseError::GroupIdNotFound, why);
            }
            tracing::info!(group = %group_id, "upgraded a classic group to the consumer protocol");
        }
        let was_empty = g.consumer.members.is_empty();
        let result = g.consumer.heartbeat(p, shape, now_ms, cfg);
        tracing::debug!(group = %group_id, ?result, "consumer group heartbeat answered");
        if was_empty != g.consumer.members.is_empty() {
            g.classic.state_since_ms = now_ms;
        }
        g.maybe_downgrade(now_ms, cfg, fx);
        g.persist_consumer(fx);
        result
    }

    /// A ShareGroupHeartbeat (KIP-932), creating the group for a joining
    /// member. A group of another type is not a share group
    /// (GROUP_ID_NOT_FOUND), as in Kafka.
    pub(crate) fn share_heartbeat(
        &mut self,
        group_id: &str,
        p: ShareHeartbeatParams,
        shape: &dyn Fn(&str) -> Option<TopicShape>,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> HeartbeatResult {
        let g = match self.heartbeat_group(group_id, p.member_epoch, now_ms, cfg, true) {
            Ok(g) => g,
            Err((error, message)) => return HeartbeatResult::error(error, message, &p.member_id),
        };
        let Some(share) = g.share.as_mut() else {
            return HeartbeatResult::error(
                ResponseError::GroupIdNotFound,
                "the group is not a share group",
                &p.member_id,
            );
        };
        let was_empty = share.members.is_empty();
        let result = share.heartbeat(p, shape, now_ms, cfg);
        tracing::debug!(group = %group_id, ?result, "share group heartbeat answered");
        if was_empty != share.members.is_empty() {
            g.classic.state_since_ms = now_ms;
        }
        g.persist_share(fx);
        result
    }

    /// A share group, for ShareGroupDescribe: `Err` when the group is
    /// missing or of another type.
    pub(crate) fn share_group(&self, group_id: &str) -> Result<&ShareGroup, ResponseError> {
        self.groups
            .get(group_id)
            .and_then(|g| g.share.as_ref())
            .ok_or(ResponseError::GroupIdNotFound)
    }

    /// A KIP-848 group, for ConsumerGroupDescribe: `Err` when the group is
    /// missing or is a classic group.
    pub(crate) fn consumer_group(&self, group_id: &str) -> Result<&ConsumerGroup, ResponseError> {
        let g = self
            .groups
            .get(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        if g.group_type() == CONSUMER_TYPE {
            Ok(&g.consumer)
        } else {
            Err(ResponseError::GroupIdNotFound)
        }
    }
}
