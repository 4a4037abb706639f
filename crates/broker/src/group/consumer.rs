//! One KIP-848 consumer group (ConsumerGroupHeartbeat) as a state machine:
//! the group epoch, the target assignment computed by a server-side
//! assignor, and each member's reconciliation towards it.
//!
//! A member first gives up the partitions it must lose (it is told its
//! assignment without them, keeps its epoch, and acknowledges by reporting
//! what it owns); only then does it reach the new epoch and get the
//! partitions it gains that no other member still holds. Partitions are
//! therefore never owned by two members at once, and a member keeps every
//! partition the new target leaves with it.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::assignor::{self, TopicPartitions, TopicShape};
use super::records::{
    ConsumerGroupValue, ConsumerMemberValue, load_partitions, load_topics, store_partitions,
    store_topics,
};
use crate::config::GroupConfig;

/// `member_epoch` of a member joining (or rejoining after being fenced).
pub(crate) const JOIN_EPOCH: i32 = 0;
/// `member_epoch` of a member leaving.
pub(crate) const LEAVE_EPOCH: i32 = -1;
/// `member_epoch` of a static member leaving temporarily.
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;
/// `rebalance_timeout_ms` of a heartbeat that does not change it.
const UNCHANGED: i32 = -1;
/// Rebalance timeout of a member that joins without one (Kafka's
/// `max.poll.interval.ms` default).
const REBALANCE_TIMEOUT_MS_DEFAULT: i32 = 300_000;

/// A ConsumerGroupHeartbeat, decoded, with topic names resolved by the caller.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatParams {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub server_assignor: Option<String>,
    /// What the member owns now; `None`: unchanged.
    pub owned: Option<TopicPartitions>,
    pub client_id: String,
    pub client_host: String,
    /// The id a member joining without one gets (v0 clients).
    pub fresh_member_id: String,
}

/// A ConsumerGroupHeartbeat answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HeartbeatResult {
    pub error: Option<(ResponseError, String)>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed (or the member needs it whole).
    pub assignment: Option<TopicPartitions>,
}

impl HeartbeatResult {
    /// A refusal of `member_id`'s heartbeat.
    pub(crate) fn error(error: ResponseError, message: impl Into<String>, member_id: &str) -> Self {
        Self {
            error: Some((error, message.into())),
            member_id: member_id.to_string(),
            member_epoch: -1,
            ..Self::default()
        }
    }
}

/// One member of a consumer group.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscribed: BTreeSet<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub session_deadline_ms: i64,
    /// Partitions the member holds (including any it is giving up).
    pub assigned: TopicPartitions,
    /// While giving up partitions: the time by which it must have.
    pub revoke_deadline_ms: Option<i64>,
    /// A static member that left temporarily (epoch -2): it keeps its
    /// place and partitions until its session ends or its instance returns.
    pub static_left: bool,
    /// The assignment last sent, to send only changes.
    last_sent: Option<TopicPartitions>,
    /// Set for a member still on the classic protocol (JoinGroup, SyncGroup,
    /// Heartbeat) in a group being migrated between protocols.
    pub classic: Option<ClassicProtocol>,
}

impl ConsumerMember {
    /// A member of a classic group that is upgraded: it keeps its epoch
    /// (the classic generation) and the partitions it was assigned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upgraded(
        id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        epoch: i32,
        subscribed: BTreeSet<String>,
        rebalance_timeout_ms: i32,
        session_deadline_ms: i64,
        assigned: TopicPartitions,
        classic: ClassicProtocol,
    ) -> Self {
        Self {
            id,
            instance_id,
            rack_id: None,
            client_id,
            client_host,
            epoch,
            previous_epoch: epoch,
            subscribed,
            assignor: None,
            rebalance_timeout_ms,
            session_deadline_ms,
            last_sent: Some(assigned.clone()),
            assigned,
            revoke_deadline_ms: None,
            static_left: false,
            classic: Some(classic),
        }
    }
}

/// What a classic member of a consumer group sent in its JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassicProtocol {
    pub session_timeout_ms: i32,
    /// Its protocols (assignor names) with their metadata, in preference order.
    pub protocols: Vec<(String, bytes::Bytes)>,
}

/// A consumer group's membership and assignment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, TopicPartitions>,
    pub assignor: String,
    /// The subscribed topics as of the last target computation.
    pub topics: BTreeMap<String, TopicShape>,
}

impl ConsumerGroup {
    /// Kafka's names for the states of a consumer group.
    pub(crate) fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.revoke_deadline_ms.is_some())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Whether `epoch` is one the member may still use (its current one, or
    /// the one before while an answer raising it may be in flight).
    pub(crate) fn accepts_epoch(&self, member_id: &str, epoch: i32) -> Option<bool> {
        self.members
            .get(member_id)
            .map(|m| epoch == m.epoch || epoch == m.previous_epoch)
    }

    /// Handle a heartbeat. `shape` resolves a subscribed topic name.
    pub(crate) fn heartbeat(
        &mut self,
        p: HeartbeatParams,
        shape: &dyn Fn(&str) -> Option<TopicShape>,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> HeartbeatResult {
        tracing::debug!(member = %p.member_id, epoch = p.member_epoch, owned = ?p.owned, subscribed = ?p.subscribed_topic_names, "consumer group heartbeat");
        if p.member_epoch == LEAVE_EPOCH || p.member_epoch == STATIC_LEAVE_EPOCH {
            let keep = p.member_epoch == STATIC_LEAVE_EPOCH;
            match self.members.get_mut(&p.member_id) {
                // The instance is expected back within its session: nothing moves.
                Some(m) if keep && m.instance_id.is_some() => {
                    m.static_left = true;
                    m.session_deadline_ms = now_ms + i64::from(cfg.consumer_session_timeout_ms);
                }
                Some(_) => {
                    self.members.remove(&p.member_id);
                    self.target.remove(&p.member_id);
                    self.bump();
                }
                None => {}
            }
            return HeartbeatResult {
                member_id: p.member_id,
                member_epoch: p.member_epoch,
                heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
                ..HeartbeatResult::default()
            };
        }
        if let Some(name) = p.server_assignor.as_deref()
            && !assignor::is_known(name)
        {
            return HeartbeatResult::error(
                ResponseError::UnsupportedAssignor,
                format!("assignor '{name}' is not served; use uniform or range"),
                &p.member_id,
            );
        }
        let member_id = if p.member_id.is_empty() {
            p.fresh_member_id.clone()
        } else {
            p.member_id.clone()
        };
        let mut full = false;
        let returning = p
            .instance_id
            .as_ref()
            .filter(|_| p.member_epoch == JOIN_EPOCH)
            .and_then(|i| {
                self.members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(i) && m.id != member_id)
            })
            .map(|m| (m.id.clone(), m.static_left));
        if let Some((old_id, left)) = returning {
            if !left {
                return HeartbeatResult::error(
                    ResponseError::UnreleasedInstanceId,
                    format!(
                        "instance {:?} is still used by member {old_id}",
                        p.instance_id
                    ),
                    &member_id,
                );
            }
            // A static member restarted: it takes over its old self's
            // epoch and partitions under its new member id.
            if let Some(mut m) = self.members.remove(&old_id) {
                m.id = member_id.clone();
                m.static_left = false;
                m.client_id = p.client_id.clone();
                m.client_host = p.client_host.clone();
                m.last_sent = None;
                self.members.insert(member_id.clone(), m);
            }
            if let Some(target) = self.target.remove(&old_id) {
                self.target.insert(member_id.clone(), target);
            }
            full = true;
        } else if p.member_epoch == JOIN_EPOCH {
            let Some(subscribed) = p.subscribed_topic_names.as_ref() else {
                return HeartbeatResult::error(
                    ResponseError::InvalidRequest,
                    "a joining member must send its subscription",
                    &member_id,
                );
            };
            if !self.members.contains_key(&member_id) && self.members.len() >= cfg.max_size {
                return HeartbeatResult::error(
                    ResponseError::GroupMaxSizeReached,
                    format!("the group has {} members already", self.members.len()),
                    &member_id,
                );
            }
            // A rejoining member starts over: it holds nothing.
            self.members.insert(
                member_id.clone(),
                ConsumerMember {
                    id: member_id.clone(),
                    instance_id: p.instance_id.clone(),
                    rack_id: p.rack_id.clone(),
                    client_id: p.client_id.clone(),
                    client_host: p.client_host.clone(),
                    epoch: JOIN_EPOCH,
                    previous_epoch: JOIN_EPOCH,
                    subscribed: subscribed.iter().cloned().collect(),
                    assignor: p.server_assignor.clone(),
                    rebalance_timeout_ms: if p.rebalance_timeout_ms > 0 {
                        p.rebalance_timeout_ms
                    } else {
                        REBALANCE_TIMEOUT_MS_DEFAULT
                    },
                    session_deadline_ms: 0,
                    assigned: TopicPartitions::new(),
                    revoke_deadline_ms: None,
                    static_left: false,
                    last_sent: None,
                    classic: None,
                },
            );
            self.bump();
            full = true;
        } else {
            let Some(ok) = self.accepts_epoch(&member_id, p.member_epoch) else {
                return HeartbeatResult::error(
                    ResponseError::UnknownMemberId,
                    "the member is not in the group",
                    &member_id,
                );
            };
            if !ok {
                return HeartbeatResult::error(
                    ResponseError::FencedMemberEpoch,
                    format!("epoch {} is not the member's", p.member_epoch),
                    &member_id,
                );
            }
        }
        let mut changed = false;
        if let Some(m) = self.members.get_mut(&member_id) {
            m.session_deadline_ms = now_ms + i64::from(cfg.consumer_session_timeout_ms);
            if p.rebalance_timeout_ms != UNCHANGED && p.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = p.rebalance_timeout_ms;
            }
            if let Some(subscribed) = &p.subscribed_topic_names {
                let subscribed: BTreeSet<String> = subscribed.iter().cloned().collect();
                changed |= subscribed != m.subscribed;
                m.subscribed = subscribed;
            }
            if p.server_assignor.is_some() && p.server_assignor != m.assignor {
                m.assignor = p.server_assignor.clone();
                changed = true;
            }
        }
        if changed {
            self.bump();
        }
        self.refresh_target(shape);
        self.reconcile(&member_id, p.owned.as_ref(), now_ms);
        let Some(m) = self.members.get_mut(&member_id) else {
            return HeartbeatResult::error(ResponseError::UnknownMemberId, "", &member_id);
        };
        let sending = giving(m, self.target.get(&member_id));
        let assignment = if full
            || m.last_sent.as_ref() != Some(&sending)
            || p.owned.as_ref().is_some_and(|o| *o != sending)
        {
            m.last_sent = Some(sending.clone());
            Some(sending)
        } else {
            None
        };
        HeartbeatResult {
            error: None,
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
            assignment,
        }
    }

    /// What a member holds and keeps now: its assignment as sent to it.
    pub(crate) fn current_assignment(&self, member_id: &str) -> Option<TopicPartitions> {
        let m = self.members.get(member_id)?;
        Some(giving(m, self.target.get(member_id)))
    }

    /// Whether a classic member must join again: it has partitions to give
    /// up or to take, or has not reached the group's assignment epoch.
    pub(crate) fn needs_rejoin(&mut self, member_id: &str) -> bool {
        let topics = self.topics.clone();
        self.refresh_target(&|name| topics.get(name).copied());
        let held_by_others: BTreeSet<(uuid::Uuid, i32)> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| flatten(&m.assigned))
            .collect();
        let Some(m) = self.members.get(member_id) else {
            return true;
        };
        let empty = TopicPartitions::new();
        let target = self.target.get(member_id).unwrap_or(&empty);
        m.epoch != self.assignment_epoch
            || flatten(&m.assigned).any(|tp| !contains(target, &tp))
            || flatten(target)
                .any(|tp| !contains(&m.assigned, &tp) && !held_by_others.contains(&tp))
    }

    /// Remove a member (it left or its classic session ended).
    pub(crate) fn remove_member(&mut self, member_id: &str) -> bool {
        let removed = self.members.remove(member_id).is_some();
        if removed {
            self.target.remove(member_id);
            self.bump();
        }
        removed
    }

    /// Mark the assignment as sent to a member.
    pub(crate) fn sent(&mut self, member_id: &str, assignment: TopicPartitions) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_sent = Some(assignment);
        }
    }

    fn bump(&mut self) {
        self.group_epoch = self.group_epoch.wrapping_add(1).max(1);
    }

    /// Recompute the target when the group epoch moved past it, or when a
    /// subscribed topic appeared, vanished or grew.
    fn refresh_target(&mut self, shape: &dyn Fn(&str) -> Option<TopicShape>) {
        let names: BTreeSet<&String> = self.members.values().flat_map(|m| &m.subscribed).collect();
        let topics: BTreeMap<String, TopicShape> = names
            .into_iter()
            .filter_map(|n| shape(n).map(|s| (n.clone(), s)))
            .collect();
        if topics != self.topics {
            self.topics = topics;
            self.bump();
        }
        if self.group_epoch <= self.assignment_epoch {
            return;
        }
        self.assignor = self.chosen_assignor();
        let subscriptions = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        self.target = assignor::assign(&self.assignor, &subscriptions, &self.topics, &self.target);
        self.assignment_epoch = self.group_epoch;
        tracing::debug!(
            epoch = self.group_epoch,
            assignor = %self.assignor,
            target = ?self.target,
            "computed a consumer group's target assignment"
        );
    }

    /// The assignor most members ask for; `uniform` when none asks.
    fn chosen_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map_or_else(
                || assignor::UNIFORM.to_string(),
                |(name, _)| name.to_string(),
            )
    }

    /// Move one member towards its target: first give up, then take.
    fn reconcile(&mut self, member_id: &str, owned: Option<&TopicPartitions>, now_ms: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<(uuid::Uuid, i32)> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| flatten(&m.assigned))
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        let to_revoke: BTreeSet<(uuid::Uuid, i32)> = flatten(&m.assigned)
            .filter(|tp| !contains(&target, tp))
            .collect();
        if !to_revoke.is_empty() {
            let released = owned.is_some_and(|o| flatten(o).all(|tp| !to_revoke.contains(&tp)));
            if !released {
                let deadline = now_ms + i64::from(m.rebalance_timeout_ms.max(0));
                m.revoke_deadline_ms.get_or_insert(deadline);
                return;
            }
            for (topic, p) in &to_revoke {
                remove(&mut m.assigned, *topic, *p);
            }
        }
        m.revoke_deadline_ms = None;
        for tp in flatten(&target) {
            if !held_by_others.contains(&tp) {
                m.assigned.entry(tp.0).or_default().insert(tp.1);
            }
        }
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
    }

    /// Expire members whose session ended or who did not give up partitions
    /// within their rebalance timeout.
    pub(crate) fn tick(&mut self, now_ms: i64) {
        let before = self.members.len();
        self.members.retain(|id, m| {
            let alive =
                m.session_deadline_ms > now_ms && m.revoke_deadline_ms.is_none_or(|d| d > now_ms);
            if !alive {
                tracing::info!(member = %id, "consumer group member expired");
            }
            alive
        });
        if self.members.len() != before {
            self.bump();
        }
    }
}

/// What a member is told it has: what it holds, minus what it must give up.
fn giving(m: &ConsumerMember, target: Option<&TopicPartitions>) -> TopicPartitions {
    let empty = TopicPartitions::new();
    let target = target.unwrap_or(&empty);
    let mut out = TopicPartitions::new();
    for (topic, p) in flatten(&m.assigned) {
        if contains(target, &(topic, p)) {
            out.entry(topic).or_default().insert(p);
        }
    }
    out
}

fn flatten(tp: &TopicPartitions) -> impl Iterator<Item = (uuid::Uuid, i32)> + '_ {
    tp.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn contains(tp: &TopicPartitions, (topic, p): &(uuid::Uuid, i32)) -> bool {
    tp.get(topic).is_some_and(|ps| ps.contains(p))
}

fn remove(tp: &mut TopicPartitions, topic: uuid::Uuid, p: i32) {
    if let Some(ps) = tp.get_mut(&topic) {
        ps.remove(&p);
        if ps.is_empty() {
            tp.remove(&topic);
        }
    }
}

impl ConsumerGroup {
    /// The group as stored in `__consumer_offsets`.
    pub(crate) fn to_value(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            topics: store_topics(&self.topics),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    assignor: m.assignor.clone(),
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assigned: store_partitions(&m.assigned),
                    target: store_partitions(
                        self.target.get(&m.id).unwrap_or(&TopicPartitions::new()),
                    ),
                })
                .collect(),
        }
    }

    /// Rebuild a group from its stored value at start-up. Members get a full
    /// session from now to heartbeat again.
    pub(crate) fn from_value(v: ConsumerGroupValue, now_ms: i64, cfg: &GroupConfig) -> Self {
        let mut g = ConsumerGroup {
            group_epoch: v.group_epoch,
            assignment_epoch: v.assignment_epoch,
            assignor: v.assignor,
            topics: load_topics(v.topics),
            ..ConsumerGroup::default()
        };
        for m in v.members {
            g.target
                .insert(m.member_id.clone(), load_partitions(m.target));
            g.members.insert(
                m.member_id.clone(),
                ConsumerMember {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    subscribed: m.subscribed.into_iter().collect(),
                    assignor: m.assignor,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_deadline_ms: now_ms + i64::from(cfg.consumer_session_timeout_ms),
                    assigned: load_partitions(m.assigned),
                    revoke_deadline_ms: None,
                    static_left: false,
                    last_sent: None,
                    classic: None,
                },
            );
        }
        g
    }
}
