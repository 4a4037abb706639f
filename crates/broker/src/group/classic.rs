//! One classic consumer group (JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup) as a state machine: members, generations, the rebalance and
//! session timeouts, static membership, leader election and protocol
//! selection, following Kafka's `GroupCoordinator` so clients that drive
//! eager or cooperative rebalancing see what they see against Kafka.
//!
//! Every operation takes the current time and pushes what must happen
//! outside (answers to parked JoinGroup / SyncGroup requests, records to
//! persist) into [`Effects`]; nothing here does I/O or reads a clock.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::records::{GroupValue, Key, MemberValue};
use crate::config::GroupConfig;

/// Identifies a parked JoinGroup or SyncGroup request.
pub(crate) type Token = u64;

/// Kafka's classic group states, by the names DescribeGroups reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub(crate) struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a member without an id is given one and asked to join again.
    pub require_known_member_id: bool,
    /// The id a new member gets (made by the caller, which owns randomness).
    pub fresh_member_id: String,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
    /// KIP-814: a static leader rejoining a stable group must not reassign.
    pub skip_assignment: bool,
}

impl JoinResult {
    pub(crate) fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone)]
pub(crate) struct SyncParams {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub(crate) fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// An answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Join(Token, JoinResult),
    Sync(Token, SyncResult),
}

/// What an operation needs done outside the state machine.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub replies: Vec<Reply>,
    /// Records to append to `__consumer_offsets`, in order; `None` is a tombstone.
    pub records: Vec<(Key, Option<Bytes>)>,
}

/// One member of a classic group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub join_waiter: Option<Token>,
    pub sync_waiter: Option<Token>,
    /// The member is removed when this passes without a heartbeat (unless it
    /// has a request parked, which keeps it alive).
    pub session_deadline_ms: i64,
    /// Order of joining: the earliest member becomes leader when one is needed.
    pub joined_seq: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A classic member of a consumer group, as it becomes a member of the
/// classic group the consumer group is downgraded to.
#[derive(Debug, Clone)]
pub(crate) struct DowngradedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub session_deadline_ms: i64,
}

/// A classic group's membership and rebalance state.
#[derive(Debug, Clone)]
pub(crate) struct ClassicGroup {
    pub id: String,
    pub state: State,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time by which
    /// they must join again.
    pub pending: BTreeMap<String, i64>,
    /// group.instance.id to member id.
    pub static_members: HashMap<String, String>,
    /// PreparingRebalance completes by this time at the latest.
    pub rebalance_deadline_ms: i64,
    /// Set while the first rebalance of an empty group waits
    /// `group.initial.rebalance.delay.ms` for more members: when it began.
    pub initial_delay_started_ms: Option<i64>,
    /// When the group last changed state (offset retention counts from it).
    pub state_since_ms: i64,
    next_seq: u64,
}

impl ClassicGroup {
    pub(crate) fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            state: State::Empty,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_started_ms: None,
            state_since_ms: now_ms,
            next_seq: 0,
        }
    }

    /// Members counted against `group.max.size`: joined and promised ids.
    pub(crate) fn size(&self) -> usize {
        self.members.len() + self.pending.len()
    }

    fn set_state(&mut self, state: State, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// FENCED_INSTANCE_ID when `instance_id` belongs to another member.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|owner| owner != member_id)
    }

    /// Whether every member supports one common protocol with `protocols`.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Handle a JoinGroup. The answer (now or later) goes to `token`.
    pub(crate) fn join(
        &mut self,
        p: JoinParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let reply = |fx: &mut Effects, result| fx.replies.push(Reply::Join(token, result));
        if !self.supports(&p.protocol_type, &p.protocols) {
            return reply(
                fx,
                JoinResult::error(ResponseError::InconsistentGroupProtocol, &p.member_id),
            );
        }
        if p.member_id.is_empty() {
            return self.join_unknown(p, token, now_ms, cfg, fx);
        }
        if self.pending.remove(&p.member_id).is_some() {
            self.add_member(&p, p.member_id.clone(), token, now_ms);
            return self.after_new_member(now_ms, cfg, fx);
        }
        if self.fenced(&p.member_id, p.instance_id.as_deref()) {
            return reply(
                fx,
                JoinResult::error(ResponseError::FencedInstanceId, &p.member_id),
            );
        }
        if !self.members.contains_key(&p.member_id) || self.state == State::Empty {
            return reply(
                fx,
                JoinResult::error(ResponseError::UnknownMemberId, &p.member_id),
            );
        }
        self.join_known(p, token, now_ms, cfg, fx);
    }

    fn join_unknown(
        &mut self,
        p: JoinParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let existing = p
            .instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i))
            .cloned();
        if let Some(old_id) = existing {
            return self.replace_static_member(p, &old_id, token, now_ms, cfg, fx);
        }
        if self.size() >= cfg.max_size {
            fx.replies.push(Reply::Join(
                token,
                JoinResult::error(ResponseError::GroupMaxSizeReached, ""),
            ));
            return;
        }
        let new_id = p.fresh_member_id.clone();
        if p.require_known_member_id && p.instance_id.is_none() {
            // The id is the member's from now on: it counts against the
            // group's size until it joins with it or its session passes.
            self.pending
                .insert(new_id.clone(), now_ms + i64::from(p.session_timeout_ms));
            fx.replies.push(Reply::Join(
                token,
                JoinResult::error(ResponseError::MemberIdRequired, &new_id),
            ));
            return;
        }
        self.add_member(&p, new_id, token, now_ms);
        self.after_new_member(now_ms, cfg, fx);
    }

    /// A static member restarted: it takes over its old member's place under
    /// a new id, and the old id is fenced. A stable group does not rebalance
    /// when the member's protocols are unchanged.
    fn replace_static_member(
        &mut self,
        p: JoinParams,
        old_id: &str,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            // The map and the members disagree; repair by treating it as new.
            if let Some(i) = &p.instance_id {
                self.static_members.remove(i);
            }
            return self.join_unknown(p, token, now_ms, cfg, fx);
        };
        if let Some(old) = member.join_waiter.take() {
            fx.replies.push(Reply::Join(
                old,
                JoinResult::error(ResponseError::FencedInstanceId, old_id),
            ));
        }
        if let Some(old) = member.sync_waiter.take() {
            fx.replies.push(Reply::Sync(
                old,
                SyncResult::error(ResponseError::FencedInstanceId),
            ));
        }
        let new_id = p.fresh_member_id.clone();
        member.id = new_id.clone();
        member.client_id = p.client_id.clone();
        member.client_host = p.client_host.clone();
        member.session_timeout_ms = p.session_timeout_ms;
        member.rebalance_timeout_ms = p.rebalance_timeout_ms;
        member.protocols = p.protocols.clone();
        member.session_deadline_ms = now_ms + i64::from(p.session_timeout_ms);
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if let Some(i) = &p.instance_id {
            self.static_members.insert(i.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        // As in Kafka, a restarted static member disturbs a stable group only
        // if its protocols change the protocol the group would select.
        let unchanged =
            self.protocol_name.is_some() && self.select_protocol() == self.protocol_name;
        if self.state == State::Stable && unchanged {
            let members = if was_leader {
                self.joined_members()
            } else {
                Vec::new()
            };
            let result = JoinResult {
                error: None,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: self.leader.clone().unwrap_or_default(),
                member_id: new_id,
                members,
                skip_assignment: was_leader,
            };
            fx.replies.push(Reply::Join(token, result));
            self.persist(now_ms, fx);
            return;
        }
        if let Some(m) = self.members.get_mut(&new_id) {
            m.join_waiter = Some(token);
        }
        match self.state {
            State::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            _ => self.prepare_rebalance(now_ms, cfg, fx),
        }
    }

    fn join_known(
        &mut self,
        p: JoinParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let state = self.state;
        let is_leader = self.leader.as_deref() == Some(p.member_id.as_str());
        let protocol_name = self.protocol_name.clone();
        let Some(member) = self.members.get_mut(&p.member_id) else {
            return;
        };
        let unchanged = member.protocols == p.protocols;
        member.session_deadline_ms = now_ms + i64::from(p.session_timeout_ms);
        let resend = match state {
            State::CompletingRebalance => unchanged,
            State::Stable => unchanged && !is_leader,
            _ => false,
        };
        if resend {
            // The member lost the answer (or asks again); it gets the
            // current generation without disturbing the group.
            let _ = protocol_name;
            let result = self.current_join_result(&p.member_id, is_leader);
            fx.replies.push(Reply::Join(token, result));
            return;
        }
        member.protocols = p.protocols;
        member.session_timeout_ms = p.session_timeout_ms;
        member.rebalance_timeout_ms = p.rebalance_timeout_ms;
        if let Some(old) = member.join_waiter.replace(token) {
            fx.replies.push(Reply::Join(
                old,
                JoinResult::error(ResponseError::RebalanceInProgress, &p.member_id),
            ));
        }
        match state {
            State::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            _ => self.prepare_rebalance(now_ms, cfg, fx),
        }
    }

    fn current_join_result(&self, member_id: &str, is_leader: bool) -> JoinResult {
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.joined_members()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        members
            .into_iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    fn add_member(&mut self, p: &JoinParams, id: String, token: Token, now_ms: i64) {
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if let Some(i) = &p.instance_id {
            self.static_members.insert(i.clone(), id.clone());
        }
        self.next_seq += 1;
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: p.instance_id.clone(),
                client_id: p.client_id.clone(),
                client_host: p.client_host.clone(),
                session_timeout_ms: p.session_timeout_ms,
                rebalance_timeout_ms: p.rebalance_timeout_ms,
                protocols: p.protocols.clone(),
                assignment: Bytes::new(),
                join_waiter: Some(token),
                sync_waiter: None,
                session_deadline_ms: now_ms + i64::from(p.session_timeout_ms),
                joined_seq: self.next_seq,
            },
        );
    }

    fn after_new_member(&mut self, now_ms: i64, cfg: &GroupConfig, fx: &mut Effects) {
        match self.state {
            State::PreparingRebalance => {
                if let Some(started) = self.initial_delay_started_ms {
                    // Each new member during the initial delay waits a little
                    // longer for the next, up to the rebalance timeout.
                    let cap = started + self.max_rebalance_timeout_ms();
                    self.rebalance_deadline_ms = (now_ms + cfg.initial_rebalance_delay_ms).min(cap);
                }
                self.maybe_complete_join(now_ms, fx);
            }
            _ => self.prepare_rebalance(now_ms, cfg, fx),
        }
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Start a rebalance: every member must join again before the deadline.
    fn prepare_rebalance(&mut self, now_ms: i64, cfg: &GroupConfig, fx: &mut Effects) {
        if self.state == State::CompletingRebalance {
            self.fail_sync_waiters(ResponseError::RebalanceInProgress, fx);
        }
        let from_empty = self.state == State::Empty;
        self.set_state(State::PreparingRebalance, now_ms);
        if from_empty && cfg.initial_rebalance_delay_ms > 0 {
            self.initial_delay_started_ms = Some(now_ms);
            self.rebalance_deadline_ms = now_ms
                + cfg
                    .initial_rebalance_delay_ms
                    .min(self.max_rebalance_timeout_ms());
        } else {
            self.initial_delay_started_ms = None;
            self.rebalance_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        }
        self.maybe_complete_join(now_ms, fx);
    }

    fn fail_sync_waiters(&mut self, error: ResponseError, fx: &mut Effects) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(token) = m.sync_waiter.take() {
                fx.replies
                    .push(Reply::Sync(token, SyncResult::error(error)));
            }
        }
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Complete the join phase once every member joined (outside the initial
    /// delay) or the deadline passed.
    fn maybe_complete_join(&mut self, now_ms: i64, fx: &mut Effects) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let due = now_ms >= self.rebalance_deadline_ms;
        let ready = self.initial_delay_started_ms.is_none() && self.all_joined();
        if due || ready {
            self.complete_join(now_ms, fx);
        }
    }

    fn complete_join(&mut self, now_ms: i64, fx: &mut Effects) {
        // Members that did not join in time are out, static ones too.
        let late: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in late {
            self.remove_member(&id, fx);
        }
        self.pending.clear();
        self.initial_delay_started_ms = None;
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.protocol_type = None;
            self.leader = None;
            self.set_state(State::Empty, now_ms);
            self.persist(now_ms, fx);
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.id.clone());
        }
        self.set_state(State::CompletingRebalance, now_ms);
        let leader = self.leader.clone().unwrap_or_default();
        let everyone = self.joined_members();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            m.assignment = Bytes::new();
            m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            let Some(token) = m.join_waiter.take() else {
                continue;
            };
            let result = JoinResult {
                error: None,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
                skip_assignment: false,
            };
            fx.replies.push(Reply::Join(token, result));
        }
    }

    /// Kafka's vote: among protocols every member supports, each member
    /// votes for the first in its own preference order; most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        let first = members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in &members {
            let choice = m
                .protocols
                .iter()
                .map(|(n, _)| n)
                .find(|n| candidates.contains(n));
            if let Some(slot) = votes.iter_mut().find(|(c, _)| Some(*c) == choice) {
                slot.1 += 1;
            }
        }
        // Ties go to the protocol the longest-standing member prefers.
        let best = votes.iter().map(|(_, v)| *v).max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(c, _)| c.clone())
    }

    /// Remove a member, answering its parked requests with UNKNOWN_MEMBER_ID.
    fn remove_member(&mut self, id: &str, fx: &mut Effects) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(token) = m.join_waiter.take() {
            fx.replies.push(Reply::Join(
                token,
                JoinResult::error(ResponseError::UnknownMemberId, id),
            ));
        }
        if let Some(token) = m.sync_waiter.take() {
            fx.replies.push(Reply::Sync(
                token,
                SyncResult::error(ResponseError::UnknownMemberId),
            ));
        }
        if let Some(i) = &m.instance_id
            && self.static_members.get(i).map(String::as_str) == Some(id)
        {
            self.static_members.remove(i);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// After members left or expired: rebalance, or finish the one under way.
    fn after_removal(&mut self, now_ms: i64, cfg: &GroupConfig, fx: &mut Effects) {
        match self.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(now_ms, cfg, fx),
            State::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            State::Empty => {}
        }
    }

    /// Handle a SyncGroup. The answer (now or later) goes to `token`.
    pub(crate) fn sync(
        &mut self,
        p: SyncParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let mut reply = |result| fx.replies.push(Reply::Sync(token, result));
        if self.fenced(&p.member_id, p.instance_id.as_deref()) {
            return reply(SyncResult::error(ResponseError::FencedInstanceId));
        }
        if !self.members.contains_key(&p.member_id) {
            return reply(SyncResult::error(ResponseError::UnknownMemberId));
        }
        if p.generation != self.generation {
            return reply(SyncResult::error(ResponseError::IllegalGeneration));
        }
        let mismatch = |asked: &Option<String>, ours: &Option<String>| {
            asked.as_ref().is_some_and(|a| Some(a) != ours.as_ref())
        };
        if mismatch(&p.protocol_type, &self.protocol_type)
            || mismatch(&p.protocol_name, &self.protocol_name)
        {
            return reply(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        if p.assignments
            .iter()
            .any(|(_, a)| a.len() > cfg.protocol_metadata_bytes_max)
        {
            return reply(SyncResult::error(ResponseError::InvalidRequest));
        }
        match self.state {
            State::Empty => reply(SyncResult::error(ResponseError::UnknownMemberId)),
            State::PreparingRebalance => {
                reply(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            State::Stable => {
                let result = self.sync_result(&p.member_id);
                if let Some(m) = self.members.get_mut(&p.member_id) {
                    m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                }
                reply(result);
            }
            State::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(p.member_id.as_str());
                if let Some(m) = self.members.get_mut(&p.member_id) {
                    m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                    if let Some(old) = m.sync_waiter.replace(token) {
                        fx.replies.push(Reply::Sync(
                            old,
                            SyncResult::error(ResponseError::RebalanceInProgress),
                        ));
                    }
                }
                if is_leader {
                    let mut given: HashMap<String, Bytes> = p.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.set_state(State::Stable, now_ms);
                    self.persist(now_ms, fx);
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let result = self.sync_result(&id);
                        if let Some(token) =
                            self.members.get_mut(&id).and_then(|m| m.sync_waiter.take())
                        {
                            fx.replies.push(Reply::Sync(token, result));
                        }
                    }
                }
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Handle a Heartbeat; returns its error, if any.
    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if self.fenced(member_id, instance_id) {
            return Some(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        match self.state {
            State::Empty => Some(ResponseError::UnknownMemberId),
            State::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            State::CompletingRebalance | State::Stable => None,
        }
    }

    /// Handle one member of a LeaveGroup; returns its error, if any.
    pub(crate) fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> Option<ResponseError> {
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => return Some(ResponseError::UnknownMemberId),
                Some(owner) if !member_id.is_empty() && owner != member_id => {
                    return Some(ResponseError::FencedInstanceId);
                }
                Some(owner) => owner.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.maybe_complete_join(now_ms, fx);
            return None;
        }
        if !self.members.contains_key(&id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id, fx);
        self.after_removal(now_ms, cfg, fx);
        None
    }

    /// Validate the member behind an OffsetCommit. `Ok` lets it commit.
    pub(crate) fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if generation < 0 && self.state == State::Empty {
            // Offsets set from outside the group (admin tools, assign-only consumers).
            return Ok(());
        }
        if self.fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        if self.state == State::CompletingRebalance {
            // The member has its new generation but not its assignment yet.
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Expire sessions and finish rebalances whose time is up.
    pub(crate) fn tick(&mut self, now_ms: i64, cfg: &GroupConfig, fx: &mut Effects) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && m.session_deadline_ms <= now_ms
            })
            .map(|m| m.id.clone())
            .collect();
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(id, fx);
        }
        if !expired.is_empty() {
            self.after_removal(now_ms, cfg, fx);
        } else if self.pending.len() != pending_before {
            self.maybe_complete_join(now_ms, fx);
        }
        self.maybe_complete_join(now_ms, fx);
    }

    /// The group as stored in `__consumer_offsets`.
    pub(crate) fn to_value(&self, now_ms: i64) -> GroupValue {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            timestamp_ms: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Rebuild a group from its stored value at start-up. Members get a full
    /// session from now to come back.
    pub(crate) fn from_value(id: &str, v: GroupValue, now_ms: i64) -> Self {
        let mut g = Self::new(id, now_ms);
        g.generation = v.generation;
        g.protocol_name = v.protocol_name.clone();
        g.leader = v.leader;
        let protocol = v.protocol_name.unwrap_or_default();
        for m in v.members {
            g.next_seq += 1;
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                    joined_seq: g.next_seq,
                },
            );
        }
        if g.members.is_empty() {
            g.protocol_name = None;
            g.leader = None;
        } else {
            g.protocol_type = Some(v.protocol_type);
            g.state = State::Stable;
        }
        g
    }

    /// A group downgraded from the consumer protocol: its remaining members
    /// (all classic) keep their assignments, and a rebalance starts at once
    /// so they agree on a classic generation, as Kafka does.
    pub(crate) fn downgraded(
        id: &str,
        generation: i32,
        members: Vec<DowngradedMember>,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> Self {
        let mut g = Self::new(id, now_ms);
        g.generation = generation;
        g.protocol_type = Some("consumer".into());
        for m in members {
            g.next_seq += 1;
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.id.clone());
            }
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m.protocols,
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline_ms: m.session_deadline_ms,
                    joined_seq: g.next_seq,
                },
            );
        }
        g.protocol_name = g.select_protocol();
        g.leader = g.members.values().next().map(|m| m.id.clone());
        g.state = State::Stable;
        g.prepare_rebalance(now_ms, cfg, fx);
        g
    }

    pub(crate) fn persist(&self, now_ms: i64, fx: &mut Effects) {
        fx.records.push((
            Key::Group {
                group: self.id.clone(),
            },
            Some(self.to_value(now_ms).encode()),
        ));
    }
}
