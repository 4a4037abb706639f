//! One share group's membership (ShareGroupHeartbeat, KIP-932) as a state
//! machine: members, their subscriptions, the group epoch and the
//! assignment computed on the server.
//!
//! Unlike a consumer group, a share group never revokes before it assigns:
//! members may share a partition (the share-partition hands each record to
//! one of them), so a member moves to the new group epoch and gets its new
//! assignment at its next heartbeat. Records a departing member held are
//! released by their share-partitions (its share session closes, or its
//! locks expire), not here.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::assignor::{self, TopicPartitions, TopicShape};
use super::consumer::{HeartbeatResult, JOIN_EPOCH, LEAVE_EPOCH};
use super::records::{
    ShareGroupValue, ShareMemberValue, load_partitions, load_topics, store_partitions, store_topics,
};
use crate::config::GroupConfig;

/// A ShareGroupHeartbeat, decoded.
#[derive(Debug, Clone)]
pub(crate) struct ShareHeartbeatParams {
    /// Chosen by the client (version 1 on): never empty.
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

/// One member of a share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareMember {
    pub id: String,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: BTreeSet<String>,
    /// The group epoch whose assignment the member was last sent.
    pub epoch: i32,
    pub session_deadline_ms: i64,
    pub assignment: TopicPartitions,
}

/// A share group's membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShareGroup {
    /// Raised on every change of members, subscriptions or subscribed
    /// topics' partition counts.
    pub group_epoch: i32,
    /// The group epoch the assignment was computed at.
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ShareMember>,
    /// The subscribed topics as of the assignment.
    pub topics: BTreeMap<String, TopicShape>,
}

impl ShareGroup {
    /// The state DescribeGroups and ListGroups report.
    pub(crate) fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    /// A ShareGroupHeartbeat: join (epoch 0), leave (epoch -1), or stay.
    pub(crate) fn heartbeat(
        &mut self,
        p: ShareHeartbeatParams,
        shape: &dyn Fn(&str) -> Option<TopicShape>,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> HeartbeatResult {
        let fail = |error, message: &str| HeartbeatResult::error(error, message, &p.member_id);
        if p.member_id.is_empty() {
            return fail(ResponseError::InvalidRequest, "the member id is empty");
        }
        match p.member_epoch {
            LEAVE_EPOCH => {
                if self.members.remove(&p.member_id).is_some() {
                    self.group_epoch += 1;
                    self.reassign(shape);
                }
                return HeartbeatResult {
                    member_id: p.member_id,
                    member_epoch: LEAVE_EPOCH,
                    ..HeartbeatResult::default()
                };
            }
            JOIN_EPOCH => {
                let subscribed = p.subscribed_topic_names.as_ref().filter(|s| !s.is_empty());
                if subscribed.is_none() && !self.members.contains_key(&p.member_id) {
                    return fail(
                        ResponseError::InvalidRequest,
                        "a joining member must subscribe to at least one topic",
                    );
                }
                if !self.members.contains_key(&p.member_id)
                    && self.members.len() >= cfg.share_max_size
                {
                    return fail(
                        ResponseError::GroupMaxSizeReached,
                        "the group has group.share.max.size members",
                    );
                }
            }
            epoch => match self.members.get(&p.member_id) {
                None => {
                    return fail(
                        ResponseError::UnknownMemberId,
                        "the member is not in the group",
                    );
                }
                Some(m) if m.epoch != epoch => {
                    return fail(
                        ResponseError::FencedMemberEpoch,
                        "the member epoch is not the member's current epoch",
                    );
                }
                Some(_) => {}
            },
        }
        let joining = !self.members.contains_key(&p.member_id);
        let member = self
            .members
            .entry(p.member_id.clone())
            .or_insert_with(|| ShareMember {
                id: p.member_id.clone(),
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                subscribed: BTreeSet::new(),
                epoch: 0,
                session_deadline_ms: 0,
                assignment: TopicPartitions::new(),
            });
        member.session_deadline_ms = now_ms.saturating_add(i64::from(cfg.share_session_timeout_ms));
        member.rack_id = p.rack_id;
        member.client_id = p.client_id;
        member.client_host = p.client_host;
        let mut changed = joining;
        if let Some(names) = p.subscribed_topic_names {
            let names: BTreeSet<String> = names.into_iter().collect();
            if names != member.subscribed {
                member.subscribed = names;
                changed = true;
            }
        }
        // A subscribed topic created, deleted or grown also moves the group on.
        if changed || self.topics != self.subscribed_shapes(shape) {
            self.group_epoch += 1;
        }
        if self.assignment_epoch < self.group_epoch {
            self.reassign(shape);
        }
        let Some(member) = self.members.get_mut(&p.member_id) else {
            return fail(
                ResponseError::UnknownMemberId,
                "the member is not in the group",
            );
        };
        // A joining member is always sent its assignment, whole.
        let send = p.member_epoch == JOIN_EPOCH || member.epoch != self.group_epoch;
        member.epoch = self.group_epoch;
        HeartbeatResult {
            error: None,
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            heartbeat_interval_ms: cfg.share_heartbeat_interval_ms,
            assignment: send.then(|| member.assignment.clone()),
        }
    }

    /// The topics the members subscribe to that exist, as they are now.
    fn subscribed_shapes(
        &self,
        shape: &dyn Fn(&str) -> Option<TopicShape>,
    ) -> BTreeMap<String, TopicShape> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter())
            .filter_map(|name| shape(name).map(|s| (name.clone(), s)))
            .collect()
    }

    /// Compute the assignment at the group epoch.
    fn reassign(&mut self, shape: &dyn Fn(&str) -> Option<TopicShape>) {
        self.topics = self.subscribed_shapes(shape);
        let subs: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        let mut target = assignor::share(&subs, &self.topics);
        for (id, m) in &mut self.members {
            m.assignment = target.remove(id).unwrap_or_default();
        }
        self.assignment_epoch = self.group_epoch;
    }

    /// Remove members whose session ended by `now_ms`; true when any did.
    /// The group moves to a new epoch; the others get their new assignment
    /// at their next heartbeat, which computes it.
    pub(crate) fn expire_sessions(&mut self, now_ms: i64) -> bool {
        let before = self.members.len();
        self.members.retain(|_, m| m.session_deadline_ms > now_ms);
        let expired = self.members.len() != before;
        if expired {
            self.group_epoch += 1;
        }
        expired
    }

    /// The earliest session deadline.
    pub(crate) fn next_deadline_ms(&self) -> Option<i64> {
        self.members.values().map(|m| m.session_deadline_ms).min()
    }

    /// The group as stored in `__consumer_offsets`.
    pub(crate) fn to_value(&self) -> ShareGroupValue {
        ShareGroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            topics: store_topics(&self.topics),
            members: self
                .members
                .values()
                .map(|m| ShareMemberValue {
                    member_id: m.id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    epoch: m.epoch,
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assigned: store_partitions(&m.assignment),
                })
                .collect(),
        }
    }

    /// A stored group, its members' sessions starting at `now_ms`.
    pub(crate) fn from_value(v: ShareGroupValue, now_ms: i64, cfg: &GroupConfig) -> Self {
        let deadline = now_ms.saturating_add(i64::from(cfg.share_session_timeout_ms));
        Self {
            group_epoch: v.group_epoch,
            assignment_epoch: v.assignment_epoch,
            topics: load_topics(v.topics),
            members: v
                .members
                .into_iter()
                .map(|m| {
                    let member = ShareMember {
                        id: m.member_id.clone(),
                        rack_id: m.rack_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        subscribed: m.subscribed.into_iter().collect(),
                        epoch: m.epoch,
                        session_deadline_ms: deadline,
                        assignment: load_partitions(m.assigned),
                    };
                    (m.member_id, member)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed step should panic and fail the test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const T: uuid::Uuid = uuid::Uuid::from_u128(7);

    fn shape(partitions: i32) -> impl Fn(&str) -> Option<TopicShape> {
        move |name| (name == "t").then_some(TopicShape { id: T, partitions })
    }

    fn hb(member: &str, epoch: i32, subs: Option<&[&str]>) -> ShareHeartbeatParams {
        ShareHeartbeatParams {
            member_id: member.into(),
            member_epoch: epoch,
            rack_id: None,
            subscribed_topic_names: subs.map(|s| s.iter().map(|t| t.to_string()).collect()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn parts(r: &HeartbeatResult) -> BTreeSet<i32> {
        r.assignment
            .as_ref()
            .and_then(|a| a.get(&T))
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn members_share_a_partition_and_move_to_the_new_epoch_at_once() {
        let cfg = GroupConfig::default();
        let mut g = ShareGroup::default();
        let one = shape(1);
        let a = g.heartbeat(hb("a", 0, Some(&["t"])), &one, 0, &cfg);
        assert_eq!((a.error.clone(), a.member_epoch), (None, 1));
        assert_eq!(parts(&a), BTreeSet::from([0]));
        let b = g.heartbeat(hb("b", 0, Some(&["t"])), &one, 0, &cfg);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(parts(&b), BTreeSet::from([0]));
        // `a` is told the new epoch and its (unchanged) assignment.
        let a = g.heartbeat(hb("a", 1, None), &one, 1, &cfg);
        assert_eq!((a.member_epoch, parts(&a)), (2, BTreeSet::from([0])));
        // Nothing changed: no assignment sent.
        let a = g.heartbeat(hb("a", 2, None), &one, 2, &cfg);
        assert_eq!((a.member_epoch, a.assignment), (2, None));
    }

    #[test]
    fn unknown_members_stale_epochs_and_empty_ids_are_refused() {
        let cfg = GroupConfig::default();
        let mut g = ShareGroup::default();
        let one = shape(1);
        g.heartbeat(hb("a", 0, Some(&["t"])), &one, 0, &cfg);
        let unknown = g.heartbeat(hb("x", 3, None), &one, 0, &cfg);
        assert_eq!(unknown.error.unwrap().0, ResponseError::UnknownMemberId);
        let stale = g.heartbeat(hb("a", 7, None), &one, 0, &cfg);
        assert_eq!(stale.error.unwrap().0, ResponseError::FencedMemberEpoch);
        let empty = g.heartbeat(hb("", 0, Some(&["t"])), &one, 0, &cfg);
        assert_eq!(empty.error.unwrap().0, ResponseError::InvalidRequest);
        let no_subs = g.heartbeat(hb("z", 0, None), &one, 0, &cfg);
        assert_eq!(no_subs.error.unwrap().0, ResponseError::InvalidRequest);
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn leaving_and_expiring_move_the_epoch_and_spread_partitions_again() {
        let cfg = GroupConfig::default();
        let mut g = ShareGroup::default();
        let two = shape(2);
        g.heartbeat(hb("a", 0, Some(&["t"])), &two, 0, &cfg);
        g.heartbeat(hb("b", 0, Some(&["t"])), &two, 0, &cfg);
        assert_eq!(g.members["a"].assignment[&T].len(), 1);
        let left = g.heartbeat(hb("b", -1, None), &two, 1, &cfg);
        assert_eq!((left.error, left.member_epoch), (None, -1));
        assert_eq!(g.members["a"].assignment[&T], BTreeSet::from([0, 1]));
        let session = i64::from(cfg.share_session_timeout_ms);
        assert!(!g.expire_sessions(session - 1));
        assert!(g.expire_sessions(session));
        assert!(g.members.is_empty());
        assert_eq!(g.state(), "Empty");
    }

    #[test]
    fn a_grown_topic_moves_the_group_to_a_new_epoch() {
        let cfg = GroupConfig::default();
        let mut g = ShareGroup::default();
        let a = g.heartbeat(hb("a", 0, Some(&["t"])), &shape(1), 0, &cfg);
        let grown = shape(3);
        let a = g.heartbeat(hb("a", a.member_epoch, None), &grown, 1, &cfg);
        assert_eq!(a.member_epoch, 2);
        assert_eq!(parts(&a), BTreeSet::from([0, 1, 2]));
    }

    #[test]
    fn the_stored_group_reloads_as_it_was() {
        let cfg = GroupConfig::default();
        let mut g = ShareGroup::default();
        g.heartbeat(hb("a", 0, Some(&["t"])), &shape(2), 0, &cfg);
        g.heartbeat(hb("b", 0, Some(&["t"])), &shape(2), 0, &cfg);
        let value = g.to_value();
        let back = ShareGroup::from_value(value.clone(), 0, &cfg);
        assert_eq!(back, g);
        assert_eq!(back.to_value(), value);
    }
}
