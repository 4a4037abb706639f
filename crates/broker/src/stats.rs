//! What the admin API reads of the broker's state when scraped: each
//! partition's offsets and size, and each consumer group's lag, for the
//! gauges of `GET /metrics`. Read on demand, so nothing is kept for them.

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
