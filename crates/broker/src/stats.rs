//! What the admin API reads of the broker's state when scraped: each
//! partition's offsets and size, each consumer group's lag, the partitions
//! short of replicas or of a leader, and each share-partition's records in
//! flight, for the gauges of `GET /metrics`. Read on demand, so nothing is
//! kept for them.

use crate::Broker;

/// One partition held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    /// Its topic.
    pub topic: String,
    /// Its number.
    pub partition: i32,
    /// Kafka's log-start offset.
    pub log_start: i64,
    /// The high watermark.
    pub high_watermark: i64,
    /// The offset after the last record appended.
    pub log_end: i64,
    /// Bytes its batches take in the commit log.
    pub size_bytes: u64,
}

/// How the partitions stand with their replicas, as this broker's
/// metadata says (Kafka's UnderReplicatedPartitions, UnderMinIsrPartitionCount
/// and OfflinePartitionsCount).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Partitions this broker leads whose ISR is smaller than their replicas.
    pub under_replicated: u64,
    /// Partitions this broker leads whose ISR is smaller than their
    /// `min.insync.replicas`: produces with acks=all to them are refused.
    pub under_min_isr: u64,
    /// Partitions with no leader, in the whole cluster: nobody can produce
    /// to or consume from them.
    pub offline: u64,
}

/// One share-partition's records in flight on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareInFlightStats {
    /// The share group.
    pub group: String,
    /// The partition's topic (its id, when the topic is gone).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Records held by a member under an acquisition lock.
    pub acquired: u64,
    /// Records given up on whose dead letters are not written yet.
    pub dead_lettering: u64,
}

/// One consumer group's committed position in one partition held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// The group.
    pub group: String,
    /// The partition's topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset.
    pub committed: i64,
    /// Records between the committed offset and the high watermark.
    pub lag: i64,
}

impl Broker {
    /// Every partition this broker holds, sorted by topic and number.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        let mut stats = Vec::new();
        for topic in self.topic_list() {
            for (index, partition) in topic.local_partitions() {
                let offsets = partition.offsets();
                stats.push(PartitionStats {
                    topic: topic.meta.name.clone(),
                    partition: index,
                    log_start: offsets.log_start,
                    high_watermark: offsets.high_watermark,
                    log_end: offsets.log_end,
                    size_bytes: partition.size_bytes(),
                });
            }
        }
        stats.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        stats
    }

    /// The partitions short of in-sync replicas or of a leader. A single
    /// node's partitions have one replica, itself, and never are.
    pub fn replication_stats(&self) -> ReplicationStats {
        let mut stats = ReplicationStats::default();
        let local = self.config.node_id;
        let defaults = self.broker_topic_defaults();
        for topic in self.metadata().topics() {
            let min_isr = crate::topic_config::min_insync_replicas(&topic.configs, &defaults);
            for assignment in &topic.assignments {
                if assignment.leader == weir_metadata::NO_LEADER {
                    stats.offline += 1;
                } else if assignment.leader == local {
                    if assignment.isr.len() < assignment.replicas.len() {
                        stats.under_replicated += 1;
                    }
                    if assignment.isr.len() < min_isr {
                        stats.under_min_isr += 1;
                    }
                }
            }
        }
        stats
    }

    /// What every share-partition this broker leads has in flight; empty
    /// when share groups are off.
    pub fn share_in_flight_stats(&self) -> Vec<ShareInFlightStats> {
        if !self.shares_enabled() {
            return Vec::new();
        }
        let mut stats: Vec<ShareInFlightStats> = self
            .shares()
            .all_in_flight()
            .into_iter()
            .map(|(key, in_flight)| ShareInFlightStats {
                group: key.group.to_string(),
                topic: self
                    .topic_by_id(key.topic_id)
                    .map_or_else(|| key.topic_id.to_string(), |t| t.meta.name.clone()),
                partition: key.partition,
                acquired: in_flight.acquired,
                dead_lettering: in_flight.dead_lettering,
            })
            .collect();
        stats.sort_by(|a, b| {
            (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition))
        });
        stats
    }

    /// The lag of every group this broker coordinates, in every partition
    /// it holds that the group has committed an offset for.
    pub fn group_lags(&self) -> Vec<GroupLag> {
        let groups = self.groups();
        let mut lags = Vec::new();
        for group in groups.list() {
            for (topic, partition, committed) in groups.all_committed(&group.group_id) {
                let Ok(held) = self.partition(&topic, partition) else {
                    continue;
                };
                let high_watermark = held.offsets().high_watermark;
                lags.push(GroupLag {
                    group: group.group_id.clone(),
                    topic,
                    partition,
                    committed: committed.offset,
                    lag: high_watermark.saturating_sub(committed.offset).max(0),
                });
            }
        }
        lags
    }
}
