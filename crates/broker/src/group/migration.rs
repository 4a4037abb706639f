//! Online migration between the classic protocol and the consumer protocol
//! (KIP-848), as Kafka 4.x does under `group.consumer.migration.policy`.
//!
//! Upgrade: when the first consumer-protocol member joins a stable classic
//! group, every classic member becomes a member of a consumer group, keeping
//! its epoch (the classic generation) and its partitions. Classic members
//! then go on with JoinGroup, SyncGroup and Heartbeat: a JoinGroup is
//! answered at once with the member's reconciled assignment (which never
//! holds a partition another member still owns), SyncGroup hands it out,
//! and a Heartbeat answers REBALANCE_IN_PROGRESS whenever the member has
//! partitions to give up or to take, so it joins again.
//!
//! Downgrade: when the last consumer-protocol member leaves and classic
//! members remain, the group becomes a classic group whose members keep
//! their assignments, and a rebalance starts at once.
//!
//! A classic member's protocols are not stored in `__consumer_offsets`: after
//! a restart it is unknown to the group and joins again as a new member.

use std::collections::BTreeSet;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::assignor::{TopicPartitions, TopicShape};
use super::classic::{
    ClassicGroup, DowngradedMember, Effects, JoinParams, JoinResult, Reply, State, SyncParams,
    SyncResult, Token,
};
use super::consumer::{ClassicProtocol, ConsumerGroup, ConsumerMember, HeartbeatParams};
use super::state::Group;
use crate::config::GroupConfig;

/// The protocol type of consumers in a classic group.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Highest ConsumerProtocolSubscription / Assignment version decoded.
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;
/// Version of the ConsumerProtocolAssignment written to classic members.
const ASSIGNMENT_VERSION: i16 = 0;

/// A member's subscription, from its JoinGroup metadata.
fn subscription(metadata: &Bytes) -> Option<ConsumerProtocolSubscription> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, CONSUMER_PROTOCOL_VERSION_MAX))
        .ok()
}

/// A classic assignment, by topic id; topics unknown to `shape` are dropped.
fn decode_assignment(
    assignment: &Bytes,
    shape: &dyn Fn(&str) -> Option<TopicShape>,
) -> Option<TopicPartitions> {
    let mut buf = assignment.clone();
    if buf.remaining() < 2 {
        return Some(TopicPartitions::new());
    }
    let version = buf.get_i16();
    let decoded = ConsumerProtocolAssignment::decode(
        &mut buf,
        version.clamp(0, CONSUMER_PROTOCOL_VERSION_MAX),
    )
    .ok()?;
    let mut out = TopicPartitions::new();
    for t in decoded.assigned_partitions {
        if let Some(s) = shape(t.topic.as_str()) {
            out.entry(s.id).or_default().extend(
                t.partitions
                    .into_iter()
                    .filter(|p| (0..s.partitions).contains(p)),
            );
        }
    }
    Some(out)
}

/// Partitions by topic name, as a classic member owns them.
fn by_id(
    owned: &[kafka_protocol::messages::consumer_protocol_subscription::TopicPartition],
    g: &ConsumerGroup,
) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for t in owned {
        if let Some(s) = g.topics.get(t.topic.as_str()) {
            out.entry(s.id)
                .or_default()
                .extend(t.partitions.iter().copied());
        }
    }
    out
}

/// A consumer group's assignment encoded for a classic member.
fn encode_assignment(tp: &TopicPartitions, g: &ConsumerGroup) -> Bytes {
    let name_of = |id: &uuid::Uuid| {
        g.topics
            .iter()
            .find(|(_, s)| s.id == *id)
            .map(|(name, _)| name.clone())
    };
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        tp.iter()
            .filter_map(|(id, ps)| {
                Some(
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string(name_of(id)?)))
                        .with_partitions(ps.iter().copied().collect()),
                )
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&ASSIGNMENT_VERSION.to_be_bytes());
    if assignment.encode(&mut buf, ASSIGNMENT_VERSION).is_err() {
        return Bytes::new();
    }
    buf.freeze()
}

impl Group {
    /// Classic to consumer, when a consumer-protocol member joins.
    pub(super) fn upgrade(
        &mut self,
        shape: &dyn Fn(&str) -> Option<TopicShape>,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> Result<(), &'static str> {
        let c = &self.classic;
        if !cfg.consumer_migration_policy.upgrades() {
            return Err("the group has classic members and \
                 group.consumer.migration.policy does not allow upgrades");
        }
        if c.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return Err("the classic group's members are not consumers");
        }
        if c.state != State::Stable {
            return Err("the classic group is rebalancing; it can be upgraded once stable");
        }
        let protocol = c.protocol_name.clone().unwrap_or_default();
        let mut consumer = ConsumerGroup {
            group_epoch: c.generation,
            assignment_epoch: c.generation,
            ..ConsumerGroup::default()
        };
        let mut names = BTreeSet::new();
        for m in c.members.values() {
            let metadata = m
                .protocols
                .iter()
                .find(|(n, _)| *n == protocol)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            let sub = subscription(&metadata).ok_or("a member's subscription cannot be read")?;
            let assigned = decode_assignment(&m.assignment, shape)
                .ok_or("a member's assignment cannot be read")?;
            let subscribed: BTreeSet<String> = sub.topics.iter().map(|t| t.to_string()).collect();
            names.extend(subscribed.iter().cloned());
            consumer.target.insert(m.id.clone(), assigned.clone());
            consumer.members.insert(
                m.id.clone(),
                ConsumerMember::upgraded(
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    c.generation,
                    subscribed,
                    m.rebalance_timeout_ms,
                    m.session_deadline_ms,
                    assigned,
                    ClassicProtocol {
                        session_timeout_ms: m.session_timeout_ms,
                        protocols: m.protocols.clone(),
                    },
                ),
            );
        }
        consumer.topics = names
            .into_iter()
            .filter_map(|n| shape(&n).map(|s| (n, s)))
            .collect();
        self.consumer = consumer;
        // The classic group is stored empty (not deleted: a tombstone of the
        // group would drop its offsets on replay).
        self.classic = ClassicGroup::new(&self.classic.id, now_ms);
        self.classic.persist(now_ms, fx);
        Ok(())
    }

    /// Consumer to classic, once only classic members remain.
    pub(super) fn maybe_downgrade(&mut self, now_ms: i64, cfg: &GroupConfig, fx: &mut Effects) {
        let g = &self.consumer;
        if g.members.is_empty()
            || !g.members.values().all(|m| m.classic.is_some())
            || !cfg.consumer_migration_policy.downgrades()
        {
            return;
        }
        let members: Vec<DowngradedMember> = g
            .members
            .values()
            .filter_map(|m| {
                let classic = m.classic.clone()?;
                let assignment = g.current_assignment(&m.id).unwrap_or_default();
                Some(DowngradedMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: classic.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: classic.protocols,
                    assignment: encode_assignment(&assignment, g),
                    session_deadline_ms: m.session_deadline_ms,
                })
            })
            .collect();
        // The members' heartbeats carry their epoch as the generation.
        let epochs: BTreeSet<i32> = g.members.values().map(|m| m.epoch).collect();
        let generation = match (epochs.first(), epochs.len()) {
            (Some(e), 1) => *e,
            _ => g.group_epoch,
        };
        let id = self.classic.id.clone();
        self.classic = ClassicGroup::downgraded(&id, generation, members, now_ms, cfg, fx);
        self.consumer.members.clear();
        self.consumer.target.clear();
        tracing::info!(group = %id, "downgraded a consumer group to the classic protocol");
    }

    /// A JoinGroup of a classic member in a consumer group: answered at once.
    pub(super) fn classic_join(
        &mut self,
        p: JoinParams,
        token: Token,
        now_ms: i64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let reply = |fx: &mut Effects, result| fx.replies.push(Reply::Join(token, result));
        let fail = |fx: &mut Effects, error, member: &str| {
            fx.replies
                .push(Reply::Join(token, JoinResult::error(error, member)))
        };
        let known = self
            .consumer
            .members
            .get(&p.member_id)
            .filter(|m| m.classic.is_some())
            .map(|m| m.epoch);
        if p.protocol_type != CONSUMER_PROTOCOL_TYPE
            || (known.is_none() && !cfg.consumer_migration_policy.downgrades())
        {
            return fail(fx, ResponseError::InconsistentGroupProtocol, &p.member_id);
        }
        let member_id = if p.member_id.is_empty() {
            if p.require_known_member_id {
                return fail(fx, ResponseError::MemberIdRequired, &p.fresh_member_id);
            }
            p.fresh_member_id.clone()
        } else {
            p.member_id.clone()
        };
        let Some((protocol, metadata)) = p.protocols.first().cloned() else {
            return fail(fx, ResponseError::InconsistentGroupProtocol, &member_id);
        };
        let Some(sub) = subscription(&metadata) else {
            return fail(fx, ResponseError::InconsistentGroupProtocol, &member_id);
        };
        let owned = by_id(&sub.owned_partitions, &self.consumer);
        let params = HeartbeatParams {
            member_id: member_id.clone(),
            member_epoch: known.unwrap_or(super::consumer::JOIN_EPOCH),
            instance_id: p.instance_id.clone(),
            rack_id: None,
            rebalance_timeout_ms: p.rebalance_timeout_ms,
            subscribed_topic_names: Some(sub.topics.iter().map(|t| t.to_string()).collect()),
            server_assignor: None,
            owned: Some(owned),
            client_id: p.client_id.clone(),
            client_host: p.client_host.clone(),
            fresh_member_id: member_id.clone(),
        };
        let topics = self.consumer.topics.clone();
        let result = self
            .consumer
            .heartbeat(params, &|n| topics.get(n).copied(), now_ms, cfg);
        if let Some((error, _)) = result.error {
            return fail(fx, error, &member_id);
        }
        if let Some(m) = self.consumer.members.get_mut(&member_id) {
            m.session_deadline_ms = now_ms + i64::from(p.session_timeout_ms);
            m.classic = Some(ClassicProtocol {
                session_timeout_ms: p.session_timeout_ms,
                protocols: p.protocols,
            });
        }
        self.persist_consumer(fx);
        reply(
            fx,
            JoinResult {
                error: None,
                generation: result.member_epoch,
                protocol_type: Some(CONSUMER_PROTOCOL_TYPE.into()),
                protocol_name: Some(protocol),
                // No member leads: the assignment is computed here, so every
                // member syncs as a follower.
                leader: String::new(),
                member_id,
                members: Vec::new(),
                skip_assignment: false,
            },
        );
    }

    /// A SyncGroup of a classic member in a consumer group.
    pub(super) fn classic_sync(&mut self, p: SyncParams, token: Token, fx: &mut Effects) {
        let mut reply = |result| fx.replies.push(Reply::Sync(token, result));
        let Some(m) = self
            .consumer
            .members
            .get(&p.member_id)
            .filter(|m| m.classic.is_some())
        else {
            return reply(SyncResult::error(ResponseError::UnknownMemberId));
        };
        if p.generation != m.epoch {
            return reply(SyncResult::error(ResponseError::IllegalGeneration));
        }
        let protocol = m
            .classic
            .as_ref()
            .and_then(|c| c.protocols.first())
            .map(|(n, _)| n.clone());
        let assignment = self
            .consumer
            .current_assignment(&p.member_id)
            .unwrap_or_default();
        let bytes = encode_assignment(&assignment, &self.consumer);
        self.consumer.sent(&p.member_id, assignment);
        reply(SyncResult {
            error: None,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.into()),
            protocol_name: protocol,
            assignment: bytes,
        });
    }

    /// A Heartbeat of a classic member in a consumer group.
    pub(super) fn classic_heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        let Some(m) = self
            .consumer
            .members
            .get_mut(member_id)
            .filter(|m| m.classic.is_some())
        else {
            return Some(ResponseError::UnknownMemberId);
        };
        if generation != m.epoch {
            return Some(ResponseError::IllegalGeneration);
        }
        let session_ms = m.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
        m.session_deadline_ms = now_ms + i64::from(session_ms);
        self.consumer
            .needs_rejoin(member_id)
            .then_some(ResponseError::RebalanceInProgress)
    }

    /// One member of a LeaveGroup in a consumer group.
    pub(super) fn classic_leave(&mut self, member_id: &str) -> Option<ResponseError> {
        if self.consumer.remove_member(member_id) {
            None
        } else {
            Some(ResponseError::UnknownMemberId)
        }
    }
}
