//! Share sessions (KIP-932): the partitions a member fetches from this
//! broker, carried between ShareFetch requests so that a request names only
//! what changed, and numbered by an epoch that a client moves on by one with
//! each request.
//!
//! Epoch 0 opens a session (replacing the member's old one), -1 closes it,
//! and any other epoch must be the session's current one: a member with no
//! session here gets SHARE_SESSION_NOT_FOUND, a wrong epoch
//! INVALID_SHARE_SESSION_EPOCH. The cache is bounded
//! (`group.share.max.share.sessions`): a new session past the bound evicts
//! the one idle longest, if it has been idle a whole session timeout, or is
//! refused with SHARE_SESSION_LIMIT_REACHED.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use uuid::Uuid;

/// Most partitions one session holds: the partitions a member fetches
/// from one broker. Requests name partitions, so without a bound a client
/// could grow its session (and the cache) with every request; one that
/// would pass it is refused with INVALID_REQUEST and changes nothing.
pub(crate) const SESSION_PARTITIONS_MAX: usize = 1_000;

/// Epoch that opens a session.
pub(crate) const OPEN_EPOCH: i32 = 0;
/// Epoch that closes one.
pub(crate) const FINAL_EPOCH: i32 = -1;

/// A topic partition, by topic id.
pub(crate) type TopicIdPartition = (Uuid, i32);

/// Who a session belongs to: group and member.
pub(crate) type SessionKey = (Arc<str>, Arc<str>);

/// A session evicted to make room: whose it was, and its partitions.
pub(crate) type Evicted = (SessionKey, BTreeSet<TopicIdPartition>);

#[derive(Debug, Clone)]
struct Session {
    /// The epoch the member's next request must carry.
    epoch: i32,
    partitions: BTreeSet<TopicIdPartition>,
    last_used_ms: i64,
}

/// A session after a request moved it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionStep {
    /// Every partition of the session, to fetch from (empty once closed).
    pub partitions: BTreeSet<TopicIdPartition>,
    /// Partitions the member stopped fetching from, or all of them when the
    /// session closed or was replaced: its acquired records there are
    /// released.
    pub left: BTreeSet<TopicIdPartition>,
    /// The request closed the session.
    pub closed: bool,
}

/// Every member's share session on this broker.
#[derive(Debug)]
pub(crate) struct Sessions {
    by_member: HashMap<SessionKey, Session>,
    max: usize,
    idle_ms: i64,
}

impl Sessions {
    pub(crate) fn new(max: usize, idle_ms: i64) -> Self {
        Self {
            by_member: HashMap::new(),
            max,
            idle_ms,
        }
    }

    /// Move `key`'s session on for a ShareFetch at `epoch` that names
    /// `added` partitions and drops `forgotten` ones. Returns the evicted
    /// session of another member, if one made room, with the step.
    pub(crate) fn fetch(
        &mut self,
        key: &SessionKey,
        epoch: i32,
        added: impl IntoIterator<Item = TopicIdPartition>,
        forgotten: impl IntoIterator<Item = TopicIdPartition>,
        now_ms: i64,
    ) -> Result<(SessionStep, Option<Evicted>), ResponseError> {
        let added: BTreeSet<TopicIdPartition> = added.into_iter().collect();
        let forgotten: BTreeSet<TopicIdPartition> = forgotten.into_iter().collect();
        match epoch {
            OPEN_EPOCH => {
                if added.len() > SESSION_PARTITIONS_MAX {
                    return Err(ResponseError::InvalidRequest);
                }
                let replaced = self.by_member.remove(key);
                let evicted = if replaced.is_none() && self.by_member.len() >= self.max {
                    Some(self.evict(now_ms)?)
                } else {
                    None
                };
                let partitions = added;
                let left = replaced
                    .map(|s| s.partitions.difference(&partitions).copied().collect())
                    .unwrap_or_default();
                self.by_member.insert(
                    key.clone(),
                    Session {
                        epoch: 1,
                        partitions: partitions.clone(),
                        last_used_ms: now_ms,
                    },
                );
                Ok((
                    SessionStep {
                        partitions,
                        left,
                        closed: false,
                    },
                    evicted,
                ))
            }
            FINAL_EPOCH => Ok((self.close(key)?, None)),
            epoch => {
                let session = self.current(key, epoch)?;
                // The size the session would have: what it keeps, and what
                // is added to that (a partition may be forgotten and added
                // again in one request).
                let kept: BTreeSet<&TopicIdPartition> =
                    session.partitions.difference(&forgotten).collect();
                let new = added.iter().filter(|tp| !kept.contains(tp)).count();
                if kept.len() + new > SESSION_PARTITIONS_MAX {
                    return Err(ResponseError::InvalidRequest);
                }
                let mut left = BTreeSet::new();
                for tp in forgotten {
                    if session.partitions.remove(&tp) {
                        left.insert(tp);
                    }
                }
                session.partitions.extend(added);
                session.epoch = next_epoch(epoch);
                session.last_used_ms = now_ms;
                Ok((
                    SessionStep {
                        partitions: session.partitions.clone(),
                        left,
                        closed: false,
                    },
                    None,
                ))
            }
        }
    }

    /// Move `key`'s session on for a ShareAcknowledge at `epoch`: it must
    /// exist, and epoch 0 (which would open one) is refused.
    pub(crate) fn acknowledge(
        &mut self,
        key: &SessionKey,
        epoch: i32,
        now_ms: i64,
    ) -> Result<SessionStep, ResponseError> {
        match epoch {
            OPEN_EPOCH => Err(ResponseError::InvalidShareSessionEpoch),
            FINAL_EPOCH => self.close(key),
            epoch => {
                let session = self.current(key, epoch)?;
                session.epoch = next_epoch(epoch);
                session.last_used_ms = now_ms;
                Ok(SessionStep {
                    partitions: session.partitions.clone(),
                    left: BTreeSet::new(),
                    closed: false,
                })
            }
        }
    }

    fn current(&mut self, key: &SessionKey, epoch: i32) -> Result<&mut Session, ResponseError> {
        let session = self
            .by_member
            .get_mut(key)
            .ok_or(ResponseError::ShareSessionNotFound)?;
        if session.epoch != epoch {
            return Err(ResponseError::InvalidShareSessionEpoch);
        }
        Ok(session)
    }

    fn close(&mut self, key: &SessionKey) -> Result<SessionStep, ResponseError> {
        let session = self
            .by_member
            .remove(key)
            .ok_or(ResponseError::ShareSessionNotFound)?;
        Ok(SessionStep {
            partitions: BTreeSet::new(),
            left: session.partitions,
            closed: true,
        })
    }

    /// Make room: drop the session idle longest, if idle a whole timeout.
    fn evict(&mut self, now_ms: i64) -> Result<Evicted, ResponseError> {
        let oldest = self
            .by_member
            .iter()
            .min_by_key(|(_, s)| s.last_used_ms)
            .filter(|(_, s)| now_ms.saturating_sub(s.last_used_ms) >= self.idle_ms)
            .map(|(k, _)| k.clone())
            .ok_or(ResponseError::ShareSessionLimitReached)?;
        let session = self
            .by_member
            .remove(&oldest)
            .ok_or(ResponseError::ShareSessionLimitReached)?;
        tracing::info!(group = %oldest.0, member = %oldest.1, "evicted an idle share session to open another");
        Ok((oldest, session.partitions))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_member.len()
    }
}

/// The epoch after `epoch`, wrapping past `i32::MAX` to 1 as Kafka does.
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

#[cfg(test)]
mod tests {
    // Test code: a failed step should panic and fail the test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn key(member: &str) -> SessionKey {
        (Arc::from("g"), Arc::from(member))
    }

    fn tp(p: i32) -> TopicIdPartition {
        (Uuid::from_u128(1), p)
    }

    #[test]
    fn a_session_opens_moves_on_by_one_and_closes() {
        let mut s = Sessions::new(10, 1_000);
        let (step, _) = s.fetch(&key("a"), 0, [tp(0)], [], 0).unwrap();
        assert_eq!(step.partitions, BTreeSet::from([tp(0)]));
        let (step, _) = s.fetch(&key("a"), 1, [tp(1)], [tp(0)], 0).unwrap();
        assert_eq!(step.partitions, BTreeSet::from([tp(1)]));
        assert_eq!(step.left, BTreeSet::from([tp(0)]));
        // The same epoch again, or one ahead, is refused.
        for stale in [1, 3] {
            assert_eq!(
                s.fetch(&key("a"), stale, [], [], 0).unwrap_err(),
                ResponseError::InvalidShareSessionEpoch
            );
        }
        assert_eq!(s.acknowledge(&key("a"), 2, 0).unwrap().partitions.len(), 1);
        let closed = s.acknowledge(&key("a"), -1, 0).unwrap();
        assert!(closed.closed);
        assert_eq!(closed.left, BTreeSet::from([tp(1)]));
        assert_eq!(
            s.fetch(&key("a"), 4, [], [], 0).unwrap_err(),
            ResponseError::ShareSessionNotFound
        );
        assert_eq!(
            s.acknowledge(&key("a"), 0, 0).unwrap_err(),
            ResponseError::InvalidShareSessionEpoch
        );
    }

    #[test]
    fn a_session_never_holds_more_than_its_bound_of_partitions() {
        let mut s = Sessions::new(10, 1_000);
        let many = |from: i32, n: i32| (from..from + n).map(tp).collect::<Vec<_>>();
        let max = SESSION_PARTITIONS_MAX as i32;
        assert_eq!(
            s.fetch(&key("a"), 0, many(0, max + 1), [], 0).unwrap_err(),
            ResponseError::InvalidRequest
        );
        s.fetch(&key("a"), 0, many(0, max), [], 0).unwrap();
        // One more is refused, and the epoch does not move on.
        assert_eq!(
            s.fetch(&key("a"), 1, many(max, 1), [], 0).unwrap_err(),
            ResponseError::InvalidRequest
        );
        // Forgetting one makes room for one.
        let (step, _) = s.fetch(&key("a"), 1, many(max, 1), [tp(0)], 0).unwrap();
        assert_eq!(step.partitions.len(), SESSION_PARTITIONS_MAX);
        // Forgotten and named again in one request, it stays, and counts.
        assert_eq!(
            s.fetch(&key("a"), 2, many(0, 2), [tp(1)], 0).unwrap_err(),
            ResponseError::InvalidRequest
        );
        let (step, _) = s.fetch(&key("a"), 2, many(1, 1), [tp(1)], 0).unwrap();
        assert_eq!(step.partitions.len(), SESSION_PARTITIONS_MAX);
    }

    #[test]
    fn a_full_cache_evicts_only_sessions_idle_a_whole_timeout() {
        let mut s = Sessions::new(1, 1_000);
        s.fetch(&key("a"), 0, [tp(0)], [], 0).unwrap();
        assert_eq!(
            s.fetch(&key("b"), 0, [tp(0)], [], 999).unwrap_err(),
            ResponseError::ShareSessionLimitReached
        );
        let (_, evicted) = s.fetch(&key("b"), 0, [tp(0)], [], 1_000).unwrap();
        assert_eq!(evicted, Some((key("a"), BTreeSet::from([tp(0)]))));
        assert_eq!(s.len(), 1);
        // Reopening one's own session never needs room.
        let (step, evicted) = s.fetch(&key("b"), 0, [tp(1)], [], 1_000).unwrap();
        assert_eq!((step.left, evicted), (BTreeSet::from([tp(0)]), None));
    }
}
