//! Who votes: how a node with the controller role enters the quorum, and
//! how the quorum's leader adds and removes voters (KRaft's AddRaftVoter
//! and RemoveRaftVoter, `kafka-metadata-quorum add-controller` and
//! `remove-controller`).
//!
//! Raft trusts a voter never to lose its log or its vote. A voter whose
//! Raft folder is lost and that comes back empty as the same voter could
//! vote twice in a term, and could help elect a leader that lacks entries
//! it had acknowledged. So every node with the controller role has a
//! directory id ([`crate::directory`]), the leader binds each voter to
//! its directory, and a node whose Raft folder is empty enters like this
//! before it answers any Raft request:
//!
//! 1. It greets the other voters of `--voters` (`/controller/hello`).
//! 2. If one of them holds a log past its first entry, the quorum exists,
//!    and the node asks its leader to admit it (`/controller/admit`): a
//!    voter bound to no directory yet is bound to this one and taken in (it
//!    never ran: the quorum formed before it started); a voter bound to
//!    another directory is refused, and the start fails with what to do;
//!    a node that is not a voter is told to join as an observer (a Raft
//!    learner), which `add-controller` can promote once it has the log.
//! 3. Otherwise, once a majority of the voters (itself included) answer
//!    with nothing in their logs, the quorum is new: it initializes it with
//!    `--voters`, as each of them may.
//!
//! A voter change goes through openraft's joint consensus, one at a time.
//! A voter removed stays a learner, so a combined node keeps its metadata
//! as a broker; `weir cluster unregister` removes it for good.

use std::time::Duration;

use openraft::ChangeMembers;
use uuid::Uuid;

use crate::controller::{LeaderReply, Node, membership_answer};
use crate::state::Command;

/// Longest the leader waits for a new voter to catch up with the log.
pub(crate) const ADD_VOTER_CATCH_UP: Duration = Duration::from_secs(7);

/// What a node answers a greeting (`POST /controller/hello`): whether its
/// Raft holds anything. Any node answers, leader or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HelloAnswer {
    /// Its log holds an entry past the membership it was initialized
    /// with: a leader was elected with it, so the quorum exists.
    pub(crate) formed: bool,
}

/// A node with an empty Raft folder asks to be taken in
/// (`POST /controller/admit`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Admit {
    /// Its node id.
    pub(crate) id: u64,
    /// Its directory id.
    pub(crate) directory: Uuid,
}

/// The leader's answer to [`Admit`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Admission {
    /// It is a voter, bound to this directory (now, or before).
    Voter,
    /// It is no voter: it joins as an observer.
    Observer,
    /// It is a voter bound to another directory: its folder was lost.
    Refused(String),
}

/// A voter change (`POST /controller/add_voter`, `/controller/remove_voter`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct VoterChange {
    /// The node id.
    pub(crate) id: u64,
    /// Its directory id, if the asker names one; the change is refused
    /// when it is not the one the quorum knows.
    pub(crate) directory: Option<Uuid>,
}

/// Why a voter change was refused, as a Kafka client is told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "reason", content = "message", rename_all = "snake_case")]
pub enum VoterRefusal {
    /// DUPLICATE_VOTER: it already votes.
    #[error("{0}")]
    Duplicate(String),
    /// VOTER_NOT_FOUND: no such voter (or not with that directory).
    #[error("{0}")]
    NotFound(String),
    /// INVALID_REQUEST: it cannot be made a voter, or the change would
    /// leave no voter.
    #[error("{0}")]
    Invalid(String),
    /// REQUEST_TIMED_OUT: the new voter has not caught up with the log.
    #[error("{0}")]
    TimedOut(String),
}

/// The leader's answer to an admission, given whether the node is a voter
/// and the directory it is bound to: `None` when it is a voter bound to
/// nothing yet (bind it, then take it in).
pub(crate) fn admission(
    id: u64,
    directory: Uuid,
    voter: bool,
    bound: Option<Uuid>,
) -> Option<Admission> {
    if !voter {
        return Some(Admission::Observer);
    }
    match bound {
        None => None,
        Some(bound) if bound == directory => Some(Admission::Voter),
        Some(bound) => Some(Admission::Refused(format!(
            "node {id} is a voter of the metadata quorum with directory {}, but this node's \
             Raft folder is new (directory {}): the log and vote that voter held are lost, and \
             taking it back could lose committed metadata. Remove the old voter with \
             `weir cluster remove-controller --controller-id {id}` (the other voters must be \
             running), then start this node again: it joins as an observer, and \
             `weir cluster add-controller --controller-id {id}` makes it a voter",
            weir_metadata::uuid_text(bound),
            weir_metadata::uuid_text(directory),
        ))),
    }
}

/// What a node with an empty Raft folder does next, from the other
/// voters' greetings (`None` for a voter that did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The quorum exists: ask its leader to admit this node.
    AskLeader,
    /// The quorum is new and a majority is here: initialize it.
    Initialize,
    /// Too few voters answered to tell: greet them again.
    Wait,
}

/// Decide [`Entry`] from the greetings of the `others` voters (`voters`
/// counts this node too).
pub(crate) fn entry(voters: usize, others: &[Option<HelloAnswer>]) -> Entry {
    if others.iter().flatten().any(|a| a.formed) {
        return Entry::AskLeader;
    }
    let new = 1 + others.iter().flatten().count();
    if new > voters / 2 {
        Entry::Initialize
    } else {
        Entry::Wait
    }
}

impl Node {
    /// Greet: whether this node's log holds anything past its first entry.
    pub(crate) fn local_hello(&self) -> HelloAnswer {
        let last = self.raft.metrics().borrow().last_log_index;
        HelloAnswer {
            formed: last.is_some_and(|i| i > 0),
        }
    }

    /// On a leader: admit a node whose Raft folder is empty, binding a
    /// voter to its directory the first time (see the module doc).
    pub(crate) async fn local_admit(&self, admit: Admit) -> LeaderReply<Admission> {
        // Read what every committed change left, on this very leader: a
        // binding this node has not applied yet must not be missed.
        match self.local_read_index().await {
            LeaderReply::Done(_) => {}
            LeaderReply::NotLeader { leader } => return LeaderReply::NotLeader { leader },
            LeaderReply::Failed(why) => return LeaderReply::Failed(why),
        }
        let voter = self.is_voter(admit.id);
        let bound = match self.machine.read(|s| s.directories.get(&admit.id).copied()) {
            Ok(bound) => bound,
            Err(e) => return LeaderReply::Failed(e.to_string()),
        };
        if let Some(answer) = admission(admit.id, admit.directory, voter, bound) {
            if let Admission::Refused(why) = &answer {
                tracing::warn!(
                    node = admit.id,
                    "refused a voter whose Raft folder is new: {why}"
                );
            }
            return LeaderReply::Done(answer);
        }
        let bind = Command::BindDirectory {
            node: admit.id,
            directory: Some(admit.directory),
        };
        match self.local_write(bind).await {
            LeaderReply::Done(_) => LeaderReply::Done(Admission::Voter),
            LeaderReply::NotLeader { leader } => LeaderReply::NotLeader { leader },
            LeaderReply::Failed(why) => LeaderReply::Failed(why),
        }
    }

    /// On a leader: make observer `change.id` a voter, once it holds the
    /// log as of the call, waiting at most [`ADD_VOTER_CATCH_UP`] for it to
    /// catch up. Answers the index of the new membership.
    pub(crate) async fn local_add_voter(
        &self,
        change: VoterChange,
    ) -> LeaderReply<Result<u64, VoterRefusal>> {
        let timeout = ADD_VOTER_CATCH_UP;
        if self.leading_term().is_none() {
            return self.not_leader();
        }
        let id = change.id;
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == id) {
            return LeaderReply::Done(Err(VoterRefusal::Duplicate(format!(
                "node {id} is already a voter"
            ))));
        }
        if !membership.learner_ids().any(|l| l == id) {
            return LeaderReply::Done(Err(VoterRefusal::Invalid(format!(
                "node {id} is not an observer of the metadata quorum: start it first (with the \
                 controller role and a --controller-listen the voters reach); it joins as an \
                 observer, and can then be added"
            ))));
        }
        let bound = match self.machine.read(|s| s.directories.get(&id).copied()) {
            Ok(bound) => bound,
            Err(e) => return LeaderReply::Failed(e.to_string()),
        };
        let Some(bound) = bound else {
            return LeaderReply::Done(Err(VoterRefusal::Invalid(format!(
                "node {id} runs without the controller role (--process-roles broker): it can \
                 copy the metadata but not vote"
            ))));
        };
        if let Some(asked) = change.directory
            && asked != bound
        {
            return LeaderReply::Done(Err(VoterRefusal::Invalid(format!(
                "node {id} has directory {}, not {}",
                weir_metadata::uuid_text(bound),
                weir_metadata::uuid_text(asked)
            ))));
        }
        // Promote only a learner that holds the log: a voter that lags
        // would make every commit wait for it or count it short.
        let target = metrics.last_log_index.unwrap_or(0);
        let mut progress = self.raft.metrics();
        let caught_up = tokio::time::timeout(
            timeout,
            progress.wait_for(|m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .is_some_and(|log| log.index >= target)
            }),
        )
        .await
        .is_ok_and(|waited| waited.is_ok());
        if !caught_up {
            return LeaderReply::Done(Err(VoterRefusal::TimedOut(format!(
                "node {id} has not caught up with the metadata log within {timeout:?}; is it \
                 running, and does it reach the leader?"
            ))));
        }
        let answer = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds([id].into_iter().collect()), true)
            .await;
        self.voters_changed(id, "added a voter", answer)
    }

    /// On a leader: make voter `change.id` an observer. The last voter
    /// cannot be removed.
    pub(crate) async fn local_remove_voter(
        &self,
        change: VoterChange,
    ) -> LeaderReply<Result<u64, VoterRefusal>> {
        if self.leading_term().is_none() {
            return self.not_leader();
        }
        let id = change.id;
        let membership = self.membership();
        if !membership.voter_ids().any(|v| v == id) {
            return LeaderReply::Done(Err(VoterRefusal::NotFound(format!(
                "node {id} is not a voter"
            ))));
        }
        if let Some(asked) = change.directory {
            let bound = match self.machine.read(|s| s.directories.get(&id).copied()) {
                Ok(bound) => bound,
                Err(e) => return LeaderReply::Failed(e.to_string()),
            };
            if bound != Some(asked) {
                return LeaderReply::Done(Err(VoterRefusal::NotFound(format!(
                    "voter {id} does not have directory {}",
                    weir_metadata::uuid_text(asked)
                ))));
            }
        }
        if membership.voter_ids().count() == 1 {
            return LeaderReply::Done(Err(VoterRefusal::Invalid(format!(
                "node {id} is the only voter; the quorum cannot be left without one"
            ))));
        }
        let answer = self
            .raft
            .change_membership(
                ChangeMembers::RemoveVoters([id].into_iter().collect()),
                true,
            )
            .await;
        self.voters_changed(id, "removed a voter; it stays an observer", answer)
    }

    fn voters_changed<T>(
        &self,
        id: u64,
        what: &'static str,
        answer: Result<
            T,
            openraft::error::RaftError<
                u64,
                openraft::error::ClientWriteError<u64, openraft::BasicNode>,
            >,
        >,
    ) -> LeaderReply<Result<u64, VoterRefusal>> {
        match membership_answer(answer) {
            LeaderReply::Done(Ok(())) => {
                let voters: Vec<u64> = self.membership().voter_ids().collect();
                tracing::info!(node = id, ?voters, "{what}");
                let index = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
                LeaderReply::Done(Ok(index))
            }
            LeaderReply::Done(Err(why)) => LeaderReply::Done(Err(VoterRefusal::Invalid(why))),
            LeaderReply::NotLeader { leader } => LeaderReply::NotLeader { leader },
            LeaderReply::Failed(why) => LeaderReply::Failed(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voter_is_taken_back_only_with_the_directory_it_was_bound_to() {
        let (mine, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(admission(3, mine, false, None), Some(Admission::Observer));
        assert_eq!(
            admission(3, mine, false, Some(other)),
            Some(Admission::Observer)
        );
        assert_eq!(admission(3, mine, true, None), None, "bound first");
        assert_eq!(admission(3, mine, true, Some(mine)), Some(Admission::Voter));
        let Some(Admission::Refused(why)) = admission(3, mine, true, Some(other)) else {
            panic!("a voter with a new folder was taken back");
        };
        assert!(why.contains("remove-controller --controller-id 3"), "{why}");
    }

    #[test]
    fn a_new_folder_initializes_only_a_new_quorum_and_only_with_a_majority() {
        let new = Some(HelloAnswer { formed: false });
        let formed = Some(HelloAnswer { formed: true });
        // Alone in a one-voter quorum.
        assert_eq!(entry(1, &[]), Entry::Initialize);
        // Three voters: itself and one more new one are a majority.
        assert_eq!(entry(3, &[new, None]), Entry::Initialize);
        assert_eq!(entry(3, &[None, None]), Entry::Wait);
        // Any voter with a history means the quorum exists, whoever else
        // is new or silent.
        assert_eq!(entry(3, &[new, formed]), Entry::AskLeader);
        assert_eq!(entry(3, &[None, formed]), Entry::AskLeader);
        // Five voters need three.
        assert_eq!(entry(5, &[new, None, None, None]), Entry::Wait);
        assert_eq!(entry(5, &[new, new, None, None]), Entry::Initialize);
    }
}
