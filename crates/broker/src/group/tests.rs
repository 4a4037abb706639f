//! The coordinator's state machine driven by hand: requests and the time go
//! in, answers and records come out, with no clock, socket or disk.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::classic::{
    Effects, JoinParams, JoinResult, Reply, State, SyncParams, SyncResult, Token,
};
use super::records::{self, Entry};
use super::state::{CommitPartition, Groups};
use crate::config::GroupConfig;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

/// A test harness: groups, the time, and a token counter.
struct World {
    groups: Groups,
    cfg: GroupConfig,
    now: i64,
    next: Token,
    records: Vec<Entry>,
}

impl World {
    fn new(cfg: GroupConfig) -> Self {
        Self {
            groups: Groups::default(),
            cfg,
            now: 1_000_000,
            next: 0,
            records: Vec::new(),
        }
    }

    fn absorb(&mut self, fx: Effects) -> Vec<Reply> {
        for (key, value) in fx.records {
            let entry = records::decode(&key.encode(), value.as_deref()).unwrap();
            self.records.push(entry);
        }
        fx.replies
    }

    fn join_params(&self, member: &str, fresh: &str, protocols: &[(&str, &[u8])]) -> JoinParams {
        JoinParams {
            group_id: "g".into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: String::new(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), Bytes::copy_from_slice(m)))
                .collect(),
            require_known_member_id: false,
            fresh_member_id: fresh.into(),
        }
    }

    /// Send a join; returns its token and every answer it caused.
    fn join(&mut self, p: JoinParams) -> (Token, Vec<Reply>) {
        self.next += 1;
        let token = self.next;
        let mut fx = Effects::default();
        self.groups.join(p, token, self.now, &self.cfg, &mut fx);
        (token, self.absorb(fx))
    }

    fn sync(
        &mut self,
        member: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> (Token, Vec<Reply>) {
        self.next += 1;
        let token = self.next;
        let mut fx = Effects::default();
        let p = SyncParams {
            group_id: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a)))
                .collect(),
        };
        self.groups.sync(p, token, self.now, &self.cfg, &mut fx);
        (token, self.absorb(fx))
    }

    fn advance(&mut self, ms: i64) -> Vec<Reply> {
        self.now += ms;
        let mut fx = Effects::default();
        self.groups.tick(self.now, &self.cfg, &mut fx);
        self.absorb(fx)
    }

    fn state(&self) -> &'static str {
        self.groups.describe("g").map_or("Dead", |g| g.state)
    }
}

fn join_answer(replies: &[Reply], token: Token) -> Option<JoinResult> {
    replies.iter().find_map(|r| match r {
        Reply::Join(t, result) if *t == token => Some(result.clone()),
        _ => None,
    })
}

fn sync_answer(replies: &[Reply], token: Token) -> Option<SyncResult> {
    replies.iter().find_map(|r| match r {
        Reply::Sync(t, result) if *t == token => Some(result.clone()),
        _ => None,
    })
}

const RANGE: &[(&str, &[u8])] = &[("range", b"r")];

/// Two members "a" and "b" in a stable generation 2, "a" leading.
fn two_member_group(w: &mut World) {
    let (t, r) = w.join(w.join_params("", "a", RANGE));
    assert_eq!(join_answer(&r, t).unwrap().generation, 1);
    let (t, r) = w.sync("a", 1, &[("a", b"all")]);
    assert_eq!(sync_answer(&r, t).unwrap().assignment.as_ref(), b"all");
    let (tb, r) = w.join(w.join_params("", "b", RANGE));
    assert!(r.is_empty(), "b waits for a to rejoin");
    assert_eq!(w.state(), "PreparingRebalance");
    let (ta, r) = w.join(w.join_params("a", "unused", RANGE));
    let a = join_answer(&r, ta).unwrap();
    let b = join_answer(&r, tb).unwrap();
    assert_eq!((a.generation, b.generation), (2, 2));
    assert_eq!(a.leader, "a");
    assert_eq!(a.members.len(), 2, "the leader sees every member");
    assert!(b.members.is_empty());
    let (tb, r) = w.sync("b", 2, &[]);
    assert!(r.is_empty(), "a follower waits for the leader's assignment");
    let (ta, r) = w.sync("a", 2, &[("a", b"p0"), ("b", b"p1")]);
    assert_eq!(sync_answer(&r, ta).unwrap().assignment.as_ref(), b"p0");
    assert_eq!(sync_answer(&r, tb).unwrap().assignment.as_ref(), b"p1");
    assert_eq!(w.state(), "Stable");
}

#[test]
fn first_join_without_id_gets_member_id_required_then_leads_generation_one() {
    let mut w = World::new(cfg());
    let mut p = w.join_params("", "m-1", RANGE);
    p.require_known_member_id = true;
    let (t, r) = w.join(p.clone());
    let answer = join_answer(&r, t).unwrap();
    assert_eq!(answer.error, Some(ResponseError::MemberIdRequired));
    assert_eq!(answer.member_id, "m-1");
    p.member_id = answer.member_id;
    let (t, r) = w.join(p);
    let answer = join_answer(&r, t).unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(answer.generation, 1);
    assert_eq!(answer.leader, "m-1");
    assert_eq!(answer.protocol_name.as_deref(), Some("range"));
    assert_eq!(w.state(), "CompletingRebalance");
}

#[test]
fn a_joining_member_starts_a_new_generation_for_everyone() {
    let mut w = World::new(cfg());
    two_member_group(&mut w);
    // The stored group holds both members and their assignments.
    let Some(Entry::Group { value: Some(v), .. }) = w.records.last() else {
        panic!("no group record: {:?}", w.records);
    };
    assert_eq!(v.generation, 2);
    assert_eq!(v.members.len(), 2);
}

#[test]
fn silent_member_is_removed_after_its_session_and_the_rest_rebalance() {
    let mut w = World::new(cfg());
    two_member_group(&mut w);
    // Only "a" heartbeats.
    for _ in 0..3 {
        w.now += 4_000;
        assert_eq!(w.groups.heartbeat("g", "a", None, 2, w.now), None);
        w.advance(0);
    }
    assert_eq!(w.state(), "PreparingRebalance", "b expired");
    assert_eq!(
        w.groups.heartbeat("g", "a", None, 2, w.now),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        w.groups.heartbeat("g", "b", None, 2, w.now),
        Some(ResponseError::UnknownMemberId)
    );
    let (t, r) = w.join(w.join_params("a", "x", RANGE));
    let answer = join_answer(&r, t).unwrap();
    assert_eq!(answer.generation, 3);
    assert_eq!(answer.members.len(), 1);
}

#[test]
fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() {
    let mut w = World::new(cfg());
    two_member_group(&mut w);
    let (tc, r) = w.join(w.join_params("", "c", RANGE));
    assert!(r.is_empty());
    // "a" and "b" keep heartbeating but never rejoin.
    let mut answered = None;
    for _ in 0..8 {
        w.now += 4_000;
        w.groups.heartbeat("g", "a", None, 2, w.now);
        w.groups.heartbeat("g", "b", None, 2, w.now);
        let r = w.advance(0);
        if let Some(a) = join_answer(&r, tc) {
            answered = Some(a);
            break;
        }
    }
    let c = answered.expect("the rebalance completed at its deadline");
    assert_eq!(c.generation, 3);
    assert_eq!(c.leader, "c", "the only member left leads");
    assert_eq!(c.members.len(), 1);
}

#[test]
fn stale_generation_and_unknown_member_are_refused() {
    let mut w = World::new(cfg());
    two_member_group(&mut w);
    assert_eq!(
        w.groups.heartbeat("g", "a", None, 1, w.now),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        w.groups.heartbeat("g", "zed", None, 2, w.now),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        w.groups.heartbeat("nope", "a", None, 2, w.now),
        Some(ResponseError::UnknownMemberId)
    );
    let (t, r) = w.sync("a", 1, &[]);
    assert_eq!(
        sync_answer(&r, t).unwrap().error,
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        w.groups.check_commit("g", "a", None, 1, w.now, usize::MAX),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        w.groups.check_commit("g", "a", None, 2, w.now, usize::MAX),
        Ok(())
    );
    assert_eq!(
        w.groups.check_commit("g", "", None, -1, w.now, usize::MAX),
        Err(ResponseError::UnknownMemberId),
        "outsiders may not commit for an active group"
    );
    let (t, r) = w.join(w.join_params("zed", "x", RANGE));
    assert_eq!(
        join_answer(&r, t).unwrap().error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn static_member_restart_keeps_the_generation_and_fences_the_old_id() {
    let mut w = World::new(cfg());
    let mut p = w.join_params("", "s-1", RANGE);
    p.instance_id = Some("host-1".into());
    let (t, r) = w.join(p.clone());
    assert_eq!(join_answer(&r, t).unwrap().generation, 1);
    let (t, r) = w.sync("s-1", 1, &[("s-1", b"mine")]);
    assert_eq!(sync_answer(&r, t).unwrap().assignment.as_ref(), b"mine");

    // The process restarts: it joins without an id, under the same instance id.
    p.fresh_member_id = "s-2".into();
    let (t, r) = w.join(p);
    let answer = join_answer(&r, t).unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(answer.member_id, "s-2");
    assert_eq!(answer.generation, 1, "no rebalance");
    assert!(answer.skip_assignment, "the leader keeps the assignment");
    assert_eq!(w.state(), "Stable");
    let (t, r) = w.sync("s-2", 1, &[]);
    assert_eq!(sync_answer(&r, t).unwrap().assignment.as_ref(), b"mine");
    assert_eq!(
        w.groups.heartbeat("g", "s-1", Some("host-1"), 1, w.now),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        w.groups.heartbeat("g", "s-2", Some("host-1"), 1, w.now),
        None
    );
}

#[test]
fn initial_rebalance_delay_gathers_members_before_the_first_generation() {
    let mut w = World::new(GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..GroupConfig::default()
    });
    let (ta, r) = w.join(w.join_params("", "a", RANGE));
    assert!(r.is_empty(), "the first member waits for the delay");
    w.advance(2_000);
    let (tb, r) = w.join(w.join_params("", "b", RANGE));
    assert!(r.is_empty());
    // The delay restarts with each new member.
    assert!(w.advance(2_000).is_empty());
    let r = w.advance(1_100);
    let a = join_answer(&r, ta).unwrap();
    let b = join_answer(&r, tb).unwrap();
    assert_eq!((a.generation, b.generation), (1, 1));
    assert_eq!(a.members.len(), 2);
}

#[test]
fn the_protocol_most_members_prefer_is_chosen_among_those_all_support() {
    let mut w = World::new(GroupConfig {
        initial_rebalance_delay_ms: 1_000,
        ..GroupConfig::default()
    });
    let (t, _) = w.join(w.join_params("", "a", &[("roundrobin", b""), ("range", b"")]));
    w.join(w.join_params(
        "",
        "b",
        &[("range", b""), ("roundrobin", b""), ("sticky", b"")],
    ));
    w.join(w.join_params("", "c", &[("range", b""), ("roundrobin", b"")]));
    let r = w.advance(1_000);
    assert_eq!(
        join_answer(&r, t).unwrap().protocol_name.as_deref(),
        Some("range")
    );
    // A member sharing no protocol with the group is refused.
    let (t, r) = w.join(w.join_params("", "d", &[("sticky", b"")]));
    assert_eq!(
        join_answer(&r, t).unwrap().error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn a_full_group_refuses_new_members() {
    let mut w = World::new(GroupConfig {
        max_size: 1,
        ..cfg()
    });
    w.join(w.join_params("", "a", RANGE));
    let (t, r) = w.join(w.join_params("", "b", RANGE));
    assert_eq!(
        join_answer(&r, t).unwrap().error,
        Some(ResponseError::GroupMaxSizeReached)
    );
}

#[test]
fn oversized_metadata_and_bad_session_timeouts_are_refused() {
    let mut w = World::new(GroupConfig {
        protocol_metadata_bytes_max: 4,
        ..cfg()
    });
    let (t, r) = w.join(w.join_params("", "a", &[("range", b"12345")]));
    assert_eq!(
        join_answer(&r, t).unwrap().error,
        Some(ResponseError::InvalidRequest)
    );
    let mut p = w.join_params("", "a", RANGE);
    p.session_timeout_ms = 1;
    let (t, r) = w.join(p);
    assert_eq!(
        join_answer(&r, t).unwrap().error,
        Some(ResponseError::InvalidSessionTimeout)
    );
}

#[test]
fn last_member_leaving_empties_the_group_and_only_then_it_can_be_deleted() {
    let mut w = World::new(cfg());
    two_member_group(&mut w);
    let mut fx = Effects::default();
    assert_eq!(
        w.groups.delete("g", &mut fx).err(),
        Some(ResponseError::NonEmptyGroup)
    );
    let results = w.groups.leave(
        "g",
        &[("a".into(), None), ("b".into(), None), ("zed".into(), None)],
        w.now,
        &w.cfg,
        &mut fx,
    );
    assert_eq!(
        results,
        vec![None, None, Some(ResponseError::UnknownMemberId)]
    );
    w.absorb(fx);
    assert_eq!(w.state(), "Empty");
    let mut fx = Effects::default();
    let deleted = w.groups.delete("g", &mut fx).unwrap();
    w.groups.begin_delete(&deleted);
    assert_eq!(w.state(), "Empty", "not applied before durable");
    w.groups.apply_delete(deleted, w.now);
    assert_eq!(w.state(), "Dead");
}

#[test]
fn groups_and_offsets_replayed_from_records_are_as_they_were() {
    let mut w = World::new(cfg());
    two_member_group(&mut w);
    assert_eq!(
        w.groups.check_commit("g", "a", None, 2, w.now, usize::MAX),
        Ok(())
    );
    let mut fx = Effects::default();
    let pending = w.groups.commit(
        "g",
        vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 42,
            leader_epoch: 0,
            metadata: Some("m".into()),
        }],
        w.now,
        &mut fx,
    );
    w.absorb(fx);
    assert_eq!(
        w.groups.committed("g", "t", 0),
        None,
        "not applied before it is durable"
    );
    w.groups.apply_commit(pending.unwrap());
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(42));
    let mut again = Groups::default();
    for entry in w.records.clone() {
        again.replay(entry, w.now, &w.cfg);
    }
    assert_eq!(again.committed("g", "t", 0).map(|c| c.offset), Some(42));
    let g = again.describe("g").unwrap();
    assert_eq!(g.state, State::Stable.name());
    assert_eq!(g.members.len(), 2);
    // Members resume with their generation, then expire if they never return.
    assert_eq!(again.heartbeat("g", "a", None, 2, w.now), None);
    let mut fx = Effects::default();
    again.tick(w.now + i64::from(SESSION_MS) + 1, &w.cfg, &mut fx);
    assert_eq!(again.describe("g").unwrap().state, "Empty");
}

#[test]
fn offsets_of_a_group_empty_past_retention_expire() {
    let mut w = World::new(GroupConfig {
        offsets_retention_minutes: 1,
        ..cfg()
    });
    assert_eq!(
        w.groups.check_commit("g", "", None, -1, w.now, usize::MAX),
        Ok(())
    );
    let mut fx = Effects::default();
    let pending = w.groups.commit(
        "g",
        vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        }],
        w.now,
        &mut fx,
    );
    w.groups.apply_commit(pending.unwrap());
    // The coordinator ticks the group when its deadline passes: not before.
    let due = w.groups.next_deadline_ms("g", &w.cfg).unwrap();
    assert_eq!(due, w.now + 60_000 + 1);
    w.advance(30_000);
    assert!(w.groups.committed("g", "t", 0).is_some());
    w.advance(31_000);
    assert!(w.groups.committed("g", "t", 0).is_none());
    assert_eq!(w.state(), "Dead");
}

mod kip848 {
    use std::collections::BTreeSet;

    use kafka_protocol::ResponseError;
    use uuid::Uuid;

    use super::cfg;
    use crate::group::assignor::{TopicPartitions, TopicShape};
    use crate::group::consumer::{ConsumerGroup, HeartbeatParams, HeartbeatResult};

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn shape(name: &str) -> Option<TopicShape> {
        (name == "t").then_some(TopicShape {
            id: TOPIC,
            partitions: 4,
        })
    }

    fn hb(member: &str, epoch: i32, owned: Option<&[i32]>) -> HeartbeatParams {
        HeartbeatParams {
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: if epoch == 0 { 5_000 } else { -1 },
            subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
            server_assignor: None,
            owned: owned.map(|o| TopicPartitions::from([(TOPIC, o.iter().copied().collect())])),
            client_id: "c".into(),
            client_host: String::new(),
            fresh_member_id: "unused".into(),
        }
    }

    fn partitions(r: &HeartbeatResult) -> Option<BTreeSet<i32>> {
        r.assignment
            .as_ref()
            .map(|a| a.get(&TOPIC).cloned().unwrap_or_default())
    }

    #[test]
    fn a_new_member_gets_partitions_only_after_the_old_owner_revokes_them() {
        let cfg = cfg();
        let mut g = ConsumerGroup::default();
        let now = 1_000;
        let a = g.heartbeat(hb("a", 0, Some(&[])), &shape, now, &cfg);
        assert_eq!(partitions(&a), Some(BTreeSet::from([0, 1, 2, 3])));
        let epoch_a = a.member_epoch;
        assert!(epoch_a > 0);
        let a = g.heartbeat(hb("a", epoch_a, Some(&[0, 1, 2, 3])), &shape, now, &cfg);
        assert_eq!(a.assignment, None, "nothing changed");

        // "b" joins: it reaches the new epoch but gets nothing "a" still owns.
        let b = g.heartbeat(hb("b", 0, Some(&[])), &shape, now, &cfg);
        assert_eq!(partitions(&b), Some(BTreeSet::new()));
        assert_eq!(g.state(), "Reconciling");
        // "a" is told to keep two: it stays in its epoch until it revokes.
        let a = g.heartbeat(hb("a", epoch_a, None), &shape, now, &cfg);
        let kept = partitions(&a).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(a.member_epoch, epoch_a);
        let kept_list: Vec<i32> = kept.iter().copied().collect();
        let a = g.heartbeat(hb("a", epoch_a, Some(&kept_list)), &shape, now, &cfg);
        assert!(a.member_epoch > epoch_a, "revoked: a reaches the new epoch");
        // Now "b" gets the released partitions.
        let b = g.heartbeat(hb("b", b.member_epoch, Some(&[])), &shape, now, &cfg);
        let got = partitions(&b).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.is_disjoint(&kept));
        let got_list: Vec<i32> = got.iter().copied().collect();
        g.heartbeat(hb("b", b.member_epoch, Some(&got_list)), &shape, now, &cfg);
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn a_static_member_that_left_temporarily_returns_to_its_partitions_without_a_new_epoch() {
        let cfg = cfg();
        let mut g = ConsumerGroup::default();
        let mut join = hb("a", 0, Some(&[]));
        join.instance_id = Some("host-a".into());
        let a = g.heartbeat(join.clone(), &shape, 0, &cfg);
        g.heartbeat(
            hb("a", a.member_epoch, Some(&[0, 1, 2, 3])),
            &shape,
            0,
            &cfg,
        );
        let epoch = g.group_epoch;

        // Another process claiming the instance while "a" is active is refused.
        let mut impostor = join.clone();
        impostor.member_id = "x".into();
        assert_eq!(
            g.heartbeat(impostor, &shape, 0, &cfg).error.map(|e| e.0),
            Some(ResponseError::UnreleasedInstanceId)
        );

        // "a" restarts: it leaves with epoch -2 and joins under a new id.
        let left = g.heartbeat(hb("a", -2, None), &shape, 10, &cfg);
        assert_eq!(left.member_epoch, -2);
        assert_eq!(g.group_epoch, epoch, "a static leave does not rebalance");
        let mut back = join;
        back.member_id = "a-2".into();
        let back = g.heartbeat(back, &shape, 20, &cfg);
        assert_eq!(back.error, None);
        assert_eq!(back.member_epoch, a.member_epoch);
        assert_eq!(partitions(&back), Some(BTreeSet::from([0, 1, 2, 3])));
        assert_eq!(g.group_epoch, epoch, "nor does its return");
        assert!(!g.members.contains_key("a"));
    }

    #[test]
    fn stale_epochs_are_fenced_and_unknown_members_refused() {
        let cfg = cfg();
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(hb("a", 0, Some(&[])), &shape, 0, &cfg);
        let fenced = g.heartbeat(hb("a", a.member_epoch + 5, None), &shape, 0, &cfg);
        assert_eq!(
            fenced.error.map(|e| e.0),
            Some(ResponseError::FencedMemberEpoch)
        );
        let unknown = g.heartbeat(hb("zed", 3, None), &shape, 0, &cfg);
        assert_eq!(
            unknown.error.map(|e| e.0),
            Some(ResponseError::UnknownMemberId)
        );
        let mut bad = hb("b", 0, Some(&[]));
        bad.server_assignor = Some("sticky-ish".into());
        assert_eq!(
            g.heartbeat(bad, &shape, 0, &cfg).error.map(|e| e.0),
            Some(ResponseError::UnsupportedAssignor)
        );
    }

    #[test]
    fn silent_members_and_members_that_never_revoke_expire() {
        let cfg = cfg();
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(hb("a", 0, Some(&[])), &shape, 0, &cfg);
        g.heartbeat(
            hb("a", a.member_epoch, Some(&[0, 1, 2, 3])),
            &shape,
            0,
            &cfg,
        );
        let b = g.heartbeat(hb("b", 0, Some(&[])), &shape, 0, &cfg);
        // "a" is asked to revoke but never does; its rebalance timeout is 5 s.
        g.heartbeat(hb("a", a.member_epoch, None), &shape, 0, &cfg);
        g.tick(4_000);
        assert!(g.members.contains_key("a"));
        g.heartbeat(hb("b", b.member_epoch, None), &shape, 4_000, &cfg);
        g.tick(5_001);
        assert!(!g.members.contains_key("a"), "a was removed");
        let b = g.heartbeat(hb("b", b.member_epoch, None), &shape, 5_001, &cfg);
        assert_eq!(partitions(&b), Some(BTreeSet::from([0, 1, 2, 3])));
        // Without heartbeats for the session timeout, "b" goes too.
        g.tick(5_001 + i64::from(cfg.consumer_session_timeout_ms));
        assert!(g.members.is_empty());
        assert_eq!(g.state(), "Empty");
    }
}

/// Every group API at every advertised version, through the broker's
/// encode-decode path, so no answer carries a field its version lacks.
mod wire {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    use crate::Broker;
    use crate::admin::testing::{broker_with, call};
    use crate::config::{BrokerConfig, GroupConfig};

    fn versions(api: ApiKey) -> std::ops::RangeInclusive<i16> {
        let range = Broker::served_versions(api).expect("served");
        range.min..=range.max
    }

    fn gid(s: &str) -> GroupId {
        GroupId(StrBytes::from_string(s.to_string()))
    }

    #[tokio::test]
    async fn every_group_api_answers_at_every_version() {
        let t = broker_with(BrokerConfig {
            group: GroupConfig {
                initial_rebalance_delay_ms: 0,
                ..GroupConfig::default()
            },
            ..BrokerConfig::default()
        });
        let b = &t.broker;
        b.create_topic("t", 2, -1, Default::default(), false)
            .unwrap();
        for v in versions(ApiKey::FindCoordinator) {
            let r = call(
                b,
                v,
                FindCoordinatorRequest::default()
                    .with_key(if v < 4 {
                        StrBytes::from_static_str("g")
                    } else {
                        StrBytes::default()
                    })
                    .with_coordinator_keys(if v >= 4 {
                        vec![StrBytes::from_static_str("g")]
                    } else {
                        vec![]
                    }),
            )
            .await;
            let code = if v >= 4 {
                r.coordinators[0].error_code
            } else {
                r.error_code
            };
            assert_eq!(code, 0, "FindCoordinator v{v}");
        }
        for v in versions(ApiKey::JoinGroup) {
            let group = format!("join-{v}");
            let join = |member: StrBytes| {
                JoinGroupRequest::default()
                    .with_group_id(gid(&group))
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_member_id(member)
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(vec![
                        join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str("range"))
                            .with_metadata(bytes::Bytes::from_static(b"m")),
                    ])
            };
            let mut r = call(b, v, join(StrBytes::default())).await;
            if v >= 4 {
                assert_eq!(r.error_code, ResponseError::MemberIdRequired.code(), "v{v}");
                r = call(b, v, join(r.member_id.clone())).await;
            }
            assert_eq!(r.error_code, 0, "JoinGroup v{v}");
            assert_eq!(r.leader, r.member_id);
            assert_eq!(r.members.len(), 1);
            let member = r.member_id.clone();
            let generation = r.generation_id;
            let sv = v.min(5);
            let s = call(
                b,
                sv,
                SyncGroupRequest::default()
                    .with_group_id(gid(&group))
                    .with_generation_id(generation)
                    .with_member_id(member.clone())
                    .with_assignments(vec![
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(member.clone())
                            .with_assignment(bytes::Bytes::from_static(b"a")),
                    ]),
            )
            .await;
            assert_eq!(
                (s.error_code, s.assignment.as_ref()),
                (0, &b"a"[..]),
                "SyncGroup v{sv}"
            );
            let h = call(
                b,
                v.min(4),
                HeartbeatRequest::default()
                    .with_group_id(gid(&group))
                    .with_generation_id(generation)
                    .with_member_id(member.clone()),
            )
            .await;
            assert_eq!(h.error_code, 0);
            let lv = v.min(5);
            let l = call(
                b,
                lv,
                LeaveGroupRequest::default()
                    .with_group_id(gid(&group))
                    .with_member_id(if lv < 3 {
                        member.clone()
                    } else {
                        StrBytes::default()
                    })
                    .with_members(if lv >= 3 {
                        vec![
                            leave_group_request::MemberIdentity::default()
                                .with_member_id(member.clone()),
                        ]
                    } else {
                        vec![]
                    }),
            )
            .await;
            let code = if lv >= 3 {
                l.members[0].error_code
            } else {
                l.error_code
            };
            assert_eq!(code, 0, "LeaveGroup v{lv}");
        }
        for v in versions(ApiKey::OffsetCommit) {
            let r = call(
                b,
                v,
                OffsetCommitRequest::default()
                    .with_group_id(gid("offsets"))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partitions(vec![
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(1)
                                    .with_committed_offset(i64::from(v)),
                            ]),
                    ]),
            )
            .await;
            assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v{v}");
        }
        for v in versions(ApiKey::OffsetFetch) {
            let r = if v >= 8 {
                let r = call(
                    b,
                    v,
                    OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(gid("offsets"))
                            .with_topics(Some(vec![
                                OffsetFetchRequestTopics::default()
                                    .with_name(TopicName(StrBytes::from_static_str("t")))
                                    .with_partition_indexes(vec![0, 1]),
                            ])),
                    ]),
                )
                .await;
                let p = &r.groups[0].topics[0].partitions;
                (p[0].committed_offset, p[1].committed_offset)
            } else {
                let r = call(
                    b,
                    v,
                    OffsetFetchRequest::default()
                        .with_group_id(gid("offsets"))
                        .with_topics(Some(vec![
                            OffsetFetchRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_static_str("t")))
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                )
                .await;
                let p = &r.topics[0].partitions;
                (p[0].committed_offset, p[1].committed_offset)
            };
            assert_eq!(r, (-1, 9), "OffsetFetch v{v}");
        }
        for v in versions(ApiKey::DescribeGroups) {
            let r = call(
                b,
                v,
                DescribeGroupsRequest::default().with_groups(vec![
                    gid("offsets"),
                    gid(""),
                    gid("none"),
                ]),
            )
            .await;
            assert_eq!(
                r.groups[0].group_state.as_str(),
                "Empty",
                "DescribeGroups v{v}"
            );
            assert_eq!(r.groups[1].error_code, ResponseError::InvalidGroupId.code());
        }
        for v in versions(ApiKey::ListGroups) {
            let r = call(b, v, ListGroupsRequest::default()).await;
            assert!(
                r.groups.iter().any(|g| g.group_id.as_str() == "offsets"),
                "ListGroups v{v}"
            );
        }
        for v in versions(ApiKey::OffsetDelete) {
            let r = call(
                b,
                v,
                OffsetDeleteRequest::default()
                    .with_group_id(gid("offsets"))
                    .with_topics(vec![
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default()
                                    .with_partition_index(1),
                            ]),
                    ]),
            )
            .await;
            assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
        }
        for v in versions(ApiKey::DeleteGroups) {
            let group = format!("del-{v}");
            let r = call(
                b,
                v,
                DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)]),
            )
            .await;
            assert_eq!(
                r.results[0].error_code,
                ResponseError::GroupIdNotFound.code()
            );
        }
        let topic_id = b.topic("t").unwrap().meta.id;
        for v in versions(ApiKey::ConsumerGroupHeartbeat) {
            let r = call(
                b,
                v,
                ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(gid("kip848"))
                    .with_member_id(StrBytes::from_string(format!("member-{v}")))
                    .with_member_epoch(0)
                    .with_rebalance_timeout_ms(10_000)
                    .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str(
                        "t",
                    ))]))
                    .with_topic_partitions(Some(Vec::<TopicPartitions>::new())),
            )
            .await;
            assert_eq!(r.error_code, 0, "ConsumerGroupHeartbeat v{v}");
            assert!(r.member_epoch > 0);
        }
        for v in versions(ApiKey::ConsumerGroupDescribe) {
            let r = call(
                b,
                v,
                ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![gid("kip848"), gid("offsets")]),
            )
            .await;
            assert_eq!(r.groups[0].error_code, 0, "ConsumerGroupDescribe v{v}");
            assert_eq!(r.groups[0].members.len(), 2);
            assert!(
                r.groups[0]
                    .members
                    .iter()
                    .flat_map(|m| &m.target_assignment.topic_partitions)
                    .all(|t| t.topic_id == topic_id && t.topic_name.as_str() == "t")
            );
            assert_eq!(
                r.groups[1].error_code,
                ResponseError::GroupIdNotFound.code()
            );
        }
        // OffsetFetch v9 checks a KIP-848 member's epoch.
        let fetch = |member: &str, epoch: i32| {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid("kip848"))
                    .with_member_id(Some(StrBytes::from_string(member.to_string())))
                    .with_member_epoch(epoch)
                    .with_topics(None),
            ])
        };
        let epoch = b.groups().consumer_group("kip848").unwrap().members["member-0"].epoch;
        let codes = [
            call(b, 9, fetch("member-0", epoch)).await.groups[0].error_code,
            call(b, 9, fetch("member-0", epoch + 7)).await.groups[0].error_code,
            call(b, 9, fetch("nobody", epoch)).await.groups[0].error_code,
        ];
        assert_eq!(
            codes,
            [
                0,
                ResponseError::StaleMemberEpoch.code(),
                ResponseError::UnknownMemberId.code()
            ]
        );
    }
}

#[test]
fn a_commit_overtaken_by_a_later_one_or_a_delete_is_not_applied_when_durable() {
    let mut w = World::new(cfg());
    assert_eq!(
        w.groups.check_commit("g", "", None, -1, w.now, usize::MAX),
        Ok(())
    );
    let commit = |w: &mut World, offset: i64| {
        let mut fx = Effects::default();
        let p = CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset,
            leader_epoch: -1,
            metadata: None,
        };
        w.groups.commit("g", vec![p], w.now, &mut fx).unwrap()
    };
    let first = commit(&mut w, 1);
    let second = commit(&mut w, 2);
    // Both are durable; their tasks apply them in the other order.
    w.groups.apply_commit(second);
    w.groups.apply_commit(first);
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(2));
    let third = commit(&mut w, 3);
    let mut fx = Effects::default();
    let (results, deleted) = w
        .groups
        .delete_offsets("g", &[("t".into(), 0)], |_, _| false, &mut fx)
        .unwrap();
    assert_eq!(results, vec![None]);
    w.groups.begin_delete(&deleted);
    w.groups.apply_commit(third);
    w.groups.apply_delete(deleted, w.now);
    assert_eq!(
        w.groups.committed("g", "t", 0),
        None,
        "the delete came last"
    );
}

/// Commit offset `offset` of t-0 for `group` from outside group management.
fn commit_one(w: &mut World, group: &str, offset: i64) -> super::state::PendingCommit {
    assert_eq!(
        w.groups
            .check_commit(group, "", None, -1, w.now, usize::MAX),
        Ok(())
    );
    let mut fx = Effects::default();
    let p = CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: None,
    };
    w.groups.commit(group, vec![p], w.now, &mut fx).unwrap()
}

#[test]
fn an_offset_delete_is_applied_only_when_durable_and_orders_with_commits() {
    let mut w = World::new(cfg());
    let first = commit_one(&mut w, "g", 1);
    w.groups.apply_commit(first);
    let before = commit_one(&mut w, "g", 2);
    let mut fx = Effects::default();
    let (results, deleted) = w
        .groups
        .delete_offsets("g", &[("t".into(), 0)], |_, _| false, &mut fx)
        .unwrap();
    assert_eq!(results, vec![None]);
    assert_eq!(fx.records.len(), 1, "one tombstone");
    w.groups.begin_delete(&deleted);
    assert_eq!(
        w.groups.committed("g", "t", 0).map(|c| c.offset),
        Some(1),
        "the delete is not visible before it is durable"
    );
    let after = commit_one(&mut w, "g", 3);
    // All durable; their tasks apply them in any order.
    w.groups.apply_commit(after);
    w.groups.apply_delete(deleted, w.now);
    w.groups.apply_commit(before);
    assert_eq!(
        w.groups.committed("g", "t", 0).map(|c| c.offset),
        Some(3),
        "the commit appended after the delete wins, the one before loses"
    );

    // A delete that never became durable changes nothing.
    let mut fx = Effects::default();
    let (_, failed) = w
        .groups
        .delete_offsets("g", &[("t".into(), 0)], |_, _| false, &mut fx)
        .unwrap();
    w.groups.begin_delete(&failed);
    w.groups.abandon_delete(&failed);
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(3));
    let later = commit_one(&mut w, "g", 4);
    w.groups.apply_commit(later);
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(4));
}

#[test]
fn a_group_delete_is_applied_only_when_durable_and_orders_with_commits() {
    let mut w = World::new(cfg());
    let first = commit_one(&mut w, "g", 1);
    w.groups.apply_commit(first);
    // A commit appended before the delete, not yet durable: it is deleted
    // too (its record is in the log before the tombstones).
    let before = commit_one(&mut w, "g", 2);
    let mut fx = Effects::default();
    let deleted = w.groups.delete("g", &mut fx).unwrap();
    w.groups.begin_delete(&deleted);
    assert_eq!(w.state(), "Empty", "still listed before durable");
    assert_eq!(w.groups.list().len(), 1);
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(1));
    w.groups.apply_commit(before);
    w.groups.apply_delete(deleted, w.now);
    assert_eq!(w.state(), "Dead");
    assert!(w.groups.list().is_empty());
    assert_eq!(w.groups.committed("g", "t", 0), None);

    // A commit appended after the delete survives it, in a new group.
    let first = commit_one(&mut w, "g", 5);
    w.groups.apply_commit(first);
    let mut fx = Effects::default();
    let deleted = w.groups.delete("g", &mut fx).unwrap();
    w.groups.begin_delete(&deleted);
    let after = commit_one(&mut w, "g", 6);
    w.groups.apply_commit(after);
    w.groups.apply_delete(deleted, w.now);
    assert_eq!(w.state(), "Empty");
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(6));

    // A delete that never became durable leaves the group as it was.
    let mut fx = Effects::default();
    let failed = w.groups.delete("g", &mut fx).unwrap();
    w.groups.begin_delete(&failed);
    w.groups.abandon_delete(&failed);
    assert_eq!(w.state(), "Empty");
    assert_eq!(w.groups.committed("g", "t", 0).map(|c| c.offset), Some(6));
}

#[test]
fn groups_past_groups_max_are_not_created() {
    let mut w = World::new(GroupConfig {
        groups_max: 1,
        ..cfg()
    });
    let (t, r) = w.join(w.join_params("", "a", RANGE));
    assert_eq!(join_answer(&r, t).unwrap().error, None);
    let mut p = w.join_params("", "b", RANGE);
    p.group_id = "another".into();
    let (t, r) = w.join(p);
    assert_eq!(
        join_answer(&r, t).unwrap().error,
        Some(ResponseError::CoordinatorNotAvailable)
    );
    assert_eq!(
        w.groups.check_commit("third", "", None, -1, w.now, 1),
        Err(ResponseError::CoordinatorNotAvailable)
    );
}

#[test]
fn a_consumer_group_replayed_from_its_record_keeps_epochs_and_assignments() {
    use std::collections::BTreeSet;

    use super::assignor::TopicShape;
    use super::consumer::HeartbeatParams;

    let cfg = cfg();
    let topic = uuid::Uuid::from_u128(9);
    let shape = |name: &str| {
        (name == "t").then_some(TopicShape {
            id: topic,
            partitions: 3,
        })
    };
    let mut groups = Groups::default();
    let mut fx = Effects::default();
    let joined = groups.consumer_heartbeat(
        "cg",
        HeartbeatParams {
            member_id: "m".into(),
            member_epoch: 0,
            instance_id: None,
            rack_id: Some("rack-1".into()),
            rebalance_timeout_ms: 5_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            server_assignor: Some("range".into()),
            owned: Some(Default::default()),
            client_id: "c".into(),
            client_host: String::new(),
            fresh_member_id: "unused".into(),
        },
        &shape,
        0,
        &cfg,
        &mut fx,
    );
    assert!(joined.member_epoch > 0);
    let mut again = Groups::default();
    for (key, value) in fx.records {
        again.replay(
            records::decode(&key.encode(), value.as_deref()).unwrap(),
            10,
            &cfg,
        );
    }
    let before = groups.consumer_group("cg").unwrap();
    let after = again.consumer_group("cg").unwrap();
    assert_eq!(after.group_epoch, before.group_epoch);
    assert_eq!(after.assignor, "range");
    let m = &after.members["m"];
    assert_eq!(m.epoch, joined.member_epoch);
    assert_eq!(m.rack_id.as_deref(), Some("rack-1"));
    assert_eq!(m.assigned.get(&topic), Some(&BTreeSet::from([0, 1, 2])));
    assert_eq!(
        again.describe("cg").map(|g| (g.state, g.group_type)),
        Some(("Stable", "consumer"))
    );
}

/// Loading `__consumer_offsets` at start-up, over a real log in a temp dir.
mod load {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use crate::admin::testing::{broker_with, call, open};
    use crate::config::BrokerConfig;
    use crate::group::{OFFSETS_TOPIC, records};

    /// A batch of one record as a client producing to the topic would write it.
    fn foreign_batch(key: &[u8], value: &[u8]) -> Bytes {
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: Some(Bytes::copy_from_slice(key)),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [record].iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    async fn commit(b: &std::sync::Arc<crate::Broker>, group: &str, offset: i64) -> i16 {
        let r = call(
            b,
            8,
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("t")))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(offset),
                        ]),
                ]),
        )
        .await;
        r.topics[0].partitions[0].error_code
    }

    #[tokio::test]
    async fn a_record_the_loader_cannot_decode_is_skipped_and_the_rest_loads() {
        let config = BrokerConfig::default();
        let t = broker_with(config.clone());
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        assert_eq!(commit(&t.broker, "g", 5).await, 0);
        let count = t.broker.groups().config().offsets_topic_num_partitions;
        let home = records::partition_for("g", count);
        let partition = t.broker.partition(OFFSETS_TOPIC, home).unwrap();
        // What `kcat -P -t __consumer_offsets -k zzz` wrote before produce
        // to internal topics was refused, and a batch that is no record batch.
        for batch in [
            foreign_batch(b"zzz", b"garbage\n"),
            foreign_batch(&[0, 0], b"\x00"),
        ] {
            partition
                .append(batch)
                .unwrap()
                .durable
                .wait()
                .await
                .unwrap();
        }
        // A commit after the garbage still counts.
        assert_eq!(commit(&t.broker, "g", 7).await, 0);
        drop(t.broker);

        let again = open(t.dir.path(), config);
        let committed = again.groups().committed("g", "t", 0).map(|c| c.offset);
        assert_eq!(committed, Some(7));
        assert_eq!(commit(&again, "g", 9).await, 0);
    }

    #[tokio::test]
    async fn an_unloaded_shard_refuses_its_groups_and_loading_it_again_restores_them() {
        use kafka_protocol::ResponseError;

        use crate::group::JoinParams;
        let t = broker_with(BrokerConfig::default());
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        assert_eq!(commit(&t.broker, "g", 5).await, 0);
        let groups = t.broker.groups().clone();
        let home = records::partition_for("g", groups.config().offsets_topic_num_partitions);
        // A member parked in a join (the initial rebalance delay holds it).
        let join = JoinParams {
            group_id: "g".into(),
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
            fresh_member_id: "m".into(),
        };
        let parked = tokio::spawn({
            let groups = groups.clone();
            async move { groups.join(join).await }
        });
        while groups.describe("g").is_none_or(|g| g.members.is_empty()) {
            tokio::task::yield_now().await;
        }
        groups.unload_shard(home);
        assert_eq!(
            parked.await.unwrap().error,
            Some(ResponseError::NotCoordinator)
        );
        assert_eq!(
            groups.heartbeat("g", "m", None, 1),
            Some(ResponseError::NotCoordinator)
        );
        assert_eq!(groups.committed("g", "t", 0), None);
        assert_ne!(commit(&t.broker, "g", 6).await, 0);
        // Another group, on another shard, is not affected.
        let other = (0..)
            .map(|i| format!("other-{i}"))
            .find(|g| {
                records::partition_for(g, groups.config().offsets_topic_num_partitions) != home
            })
            .unwrap();
        assert_eq!(commit(&t.broker, &other, 1).await, 0);

        let partition = t.broker.partition(OFFSETS_TOPIC, home).unwrap();
        groups.load_shard(home, partition).unwrap();
        assert_eq!(groups.committed("g", "t", 0).map(|c| c.offset), Some(5));
        assert_eq!(commit(&t.broker, "g", 6).await, 0);
    }

    #[tokio::test]
    async fn a_leadership_that_left_and_came_back_replays_what_the_leaders_between_wrote() {
        let t = broker_with(BrokerConfig::default());
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        let groups = t.broker.groups().clone();
        let home = records::partition_for("g", groups.config().offsets_topic_num_partitions);
        let partition = t.broker.partition(OFFSETS_TOPIC, home).unwrap();
        let before = partition.offsets().log_end;
        assert_eq!(commit(&t.broker, "g", 5).await, 0);
        let commit_5 = partition.read(before, 1 << 20).unwrap().records;
        assert_eq!(commit(&t.broker, "g", 7).await, 0);
        // Another coordinator, in a later leader epoch, committed 5 again;
        // this broker never saw itself lose the lead, only its return.
        partition
            .set_leader_epoch(partition.leader_epoch() + 2)
            .unwrap();
        let appended = partition.append(commit_5).unwrap();
        appended.durable.wait().await.unwrap();
        assert_eq!(groups.committed("g", "t", 0).map(|c| c.offset), Some(7));

        t.broker.follow_coordinators().unwrap();
        assert_eq!(groups.committed("g", "t", 0).map(|c| c.offset), Some(5));
        // The same leadership again changes nothing.
        assert_eq!(commit(&t.broker, "g", 8).await, 0);
        t.broker.follow_coordinators().unwrap();
        assert_eq!(groups.committed("g", "t", 0).map(|c| c.offset), Some(8));
    }

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct ManualClock(std::sync::atomic::AtomicI64);

    impl weir_storage::Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_shard_times_out_only_the_groups_whose_deadline_passed() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;

        use crate::config::GroupConfig;
        use crate::group::JoinParams;
        use crate::group::shard::Shard;
        let t = broker_with(BrokerConfig::default());
        let clock = Arc::new(ManualClock::default());
        clock.0.store(1_000_000, Ordering::SeqCst);
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        };
        let shard = Arc::new(Shard::new(0, cfg, clock.clone()));
        shard
            .load(t.broker.partition(OFFSETS_TOPIC, 0).unwrap())
            .unwrap();
        assert_eq!(shard.earliest_deadline_ms(), None, "nothing to wait for");
        let join = |group: &str, session_timeout_ms: i32| JoinParams {
            group_id: group.into(),
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
            fresh_member_id: format!("{group}-member"),
        };
        for (group, session) in [("short", 6_000), ("long", 60_000)] {
            let joined = shard.join(join(group, session)).await;
            assert_eq!(joined.error, None);
            let synced = shard
                .sync(crate::group::SyncParams {
                    group_id: group.into(),
                    generation: joined.generation,
                    member_id: joined.member_id.clone(),
                    instance_id: None,
                    protocol_type: None,
                    protocol_name: None,
                    assignments: Vec::new(),
                })
                .await;
            assert_eq!(synced.error, None);
        }
        assert_eq!(shard.earliest_deadline_ms(), Some(1_000_000 + 6_000));
        // Not yet due: nothing changes.
        clock.0.store(1_000_000 + 5_999, Ordering::SeqCst);
        shard.tick();
        assert_eq!(shard.describe("short").unwrap().members.len(), 1);
        // Due: only the short session ends; the queue moves on to the next.
        clock.0.store(1_000_000 + 6_000, Ordering::SeqCst);
        shard.tick();
        assert_eq!(shard.describe("short").unwrap().state, "Empty");
        assert_eq!(shard.describe("long").unwrap().state, "Stable");
        assert_eq!(shard.earliest_deadline_ms(), Some(1_000_000 + 60_000));
    }

    #[tokio::test]
    async fn a_failed_delete_append_changes_nothing_and_spares_groups_on_other_shards() {
        use kafka_protocol::ResponseError;

        let t = broker_with(BrokerConfig::default());
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        let groups = t.broker.groups().clone();
        let count = groups.config().offsets_topic_num_partitions;
        let home = records::partition_for("g", count);
        let other = (0..)
            .map(|i| format!("other-{i}"))
            .find(|g| records::partition_for(g, count) != home)
            .unwrap();
        assert_eq!(commit(&t.broker, "g", 5).await, 0);
        assert_eq!(commit(&t.broker, &other, 7).await, 0);
        // The home partition goes away under its shard: every append to it
        // fails, and only to it.
        let partition = t.broker.partition(OFFSETS_TOPIC, home).unwrap();
        t.broker.log().remove_partition(partition.id()).unwrap();

        assert_eq!(
            groups.delete_offsets("g", &[("t".into(), 0)]).await,
            Err(ResponseError::NotCoordinator)
        );
        assert_eq!(
            groups.delete("g").await,
            Some(ResponseError::NotCoordinator)
        );
        assert_eq!(groups.committed("g", "t", 0).map(|c| c.offset), Some(5));
        assert!(groups.list().iter().any(|g| g.group_id == "g"));

        // The group on another shard is deleted as usual.
        assert_eq!(
            groups.delete_offsets(&other, &[("t".into(), 0)]).await,
            Ok(vec![None])
        );
        assert_eq!(groups.committed(&other, "t", 0), None);
        assert_eq!(groups.delete(&other).await, None);
        assert!(!groups.list().iter().any(|g| g.group_id == other));
    }

    #[tokio::test]
    async fn offsets_are_flushed_before_commits_are_answered_whatever_the_flush_policy() {
        let relaxed = BrokerConfig {
            log_defaults: [(
                "log.flush.interval.messages".to_string(),
                "1000".to_string(),
            )]
            .into(),
            ..BrokerConfig::default()
        };
        let t = broker_with(relaxed);
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        let home =
            records::partition_for("g", t.broker.groups().config().offsets_topic_num_partitions);
        let partition = t.broker.partition(OFFSETS_TOPIC, home).unwrap();
        assert_eq!(
            t.broker.partition("t", 0).unwrap().config().flush_messages,
            1000
        );
        assert_eq!(partition.config().flush_messages, 1, "created strict");
        // Relaxed later (an old data dir, or an altered topic config): the
        // coordinator puts it back before it writes.
        t.broker
            .alter_topic_configs(
                OFFSETS_TOPIC,
                &[weir_metadata::ConfigChange::Set(
                    "flush.messages".into(),
                    "1000".into(),
                )],
                false,
            )
            .unwrap();
        let partition = t.broker.partition(OFFSETS_TOPIC, home).unwrap();
        assert_eq!(partition.config().flush_messages, 1000);
        assert_eq!(commit(&t.broker, "g", 5).await, 0);
        assert_eq!(partition.config().flush_messages, 1, "strict again");
    }
}

#[test]
fn a_consumer_protocol_member_is_refused_a_classic_group_when_the_policy_forbids_upgrades() {
    use super::assignor::TopicShape;
    use super::consumer::HeartbeatParams;
    use crate::config::MigrationPolicy;

    for (policy, upgraded) in [
        (MigrationPolicy::Disabled, false),
        (MigrationPolicy::Downgrade, false),
        (MigrationPolicy::Upgrade, true),
        (MigrationPolicy::Bidirectional, true),
    ] {
        let mut w = World::new(GroupConfig {
            consumer_migration_policy: policy,
            ..cfg()
        });
        let topic = uuid::Uuid::from_u128(3);
        let shape = |name: &str| {
            (name == "t").then_some(TopicShape {
                id: topic,
                partitions: 2,
            })
        };
        // A stable classic group whose member's metadata is a real subscription.
        let mut subscription = bytes::BytesMut::from(&0i16.to_be_bytes()[..]);
        kafka_protocol::protocol::Encodable::encode(
            &kafka_protocol::messages::ConsumerProtocolSubscription::default().with_topics(vec![
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ]),
            &mut subscription,
            0,
        )
        .unwrap();
        let metadata = subscription.freeze();
        let (t, r) = w.join(w.join_params("", "a", &[("range", &metadata)]));
        let generation = join_answer(&r, t).unwrap().generation;
        w.sync("a", generation, &[("a", b"")]);
        assert_eq!(w.state(), "Stable");
        let mut fx = Effects::default();
        let joined = w.groups.consumer_heartbeat(
            "g",
            HeartbeatParams {
                member_id: "k".into(),
                member_epoch: 0,
                instance_id: None,
                rack_id: None,
                rebalance_timeout_ms: 5_000,
                subscribed_topic_names: Some(vec!["t".into()]),
                server_assignor: None,
                owned: Some(Default::default()),
                client_id: "c".into(),
                client_host: String::new(),
                fresh_member_id: "unused".into(),
            },
            &shape,
            w.now,
            &w.cfg,
            &mut fx,
        );
        let refused = joined.error.map(|e| e.0);
        if upgraded {
            assert_eq!(refused, None, "{policy:?}");
            let g = w.groups.consumer_group("g").unwrap();
            assert_eq!(g.members.len(), 2, "{policy:?}");
            assert!(g.members["a"].classic.is_some(), "a stays a classic member");
        } else {
            assert_eq!(refused, Some(ResponseError::GroupIdNotFound), "{policy:?}");
            assert_eq!(w.state(), "Stable", "{policy:?}");
        }
    }
}
