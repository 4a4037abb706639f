//! Share groups (KIP-932): records of a partition handed out one by one to
//! the members of a group, each under a lock with a delivery count, and
//! acknowledged one by one; with a dead-letter topic (KIP-1191) and a
//! growing redelivery backoff.
//!
//! The parts, from the bottom up:
//! - [`partition`]: one share-partition's state (start offset, in-flight
//!   slots, locks, delivery counts) as a pure state machine.
//!
//! Where they run. As in Kafka, a share-partition lives with the leader of
//! its topic partition (ShareFetch and ShareAcknowledge go there), while
//! membership and assignment live with the group coordinator
//! (ShareGroupHeartbeat). A share-partition's durable state is written to
//! the internal compacted topic `__share_group_state`, keyed by group,
//! topic id and partition, so it fails over as data does.

pub(crate) mod partition;
