//! DescribeLogDirs (API key 35): the broker's one log dir, its data dir,
//! where the commit log keeps every partition; the size of each partition
//! held here; and (v4) the total and usable bytes of the file system under
//! it.
//!
//! As Kafka answers: a null topic list asks for every partition held here;
//! a topic or partition in the list that is not held here is left out, not
//! reported as an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use crate::admin::str_bytes;
use crate::{Broker, HandlerError, RequestContext};

/// Kafka's `total_bytes` and `usable_bytes` when the volume cannot be read.
const VOLUME_BYTES_UNKNOWN: i64 = -1;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeLogDirsRequest,
) -> Result<DescribeLogDirsResponse, HandlerError> {
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Describe) {
        return Ok(DescribeLogDirsResponse::default()
            .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code()));
    }
    let topics = selected(broker, req.topics)
        .into_iter()
        .filter_map(|(name, partitions)| describe_topic(broker, name, partitions))
        .collect();
    let dir = broker.log().dir();
    let (total_bytes, usable_bytes) = volume_bytes(dir);
    // Kafka reports the dir's absolute path; `absolute` reads nothing from
    // the disk, so a relative `--data-dir` is resolved against the working
    // directory the broker started in, which is what it was opened under.
    let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(path.to_string_lossy()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    Ok(DescribeLogDirsResponse::default().with_results(vec![result]))
}

/// The partitions asked for, by topic name in name order, each set in
/// partition order. Only topics this broker knows and partition numbers
/// they have are kept, so however a request repeats or invents names and
/// numbers, this holds at most one entry per existing partition.
fn selected(
    broker: &Broker,
    filter: Option<Vec<DescribableLogDirTopic>>,
) -> BTreeMap<String, BTreeSet<i32>> {
    let Some(filter) = filter else {
        return broker
            .topic_list()
            .into_iter()
            .map(|state| {
                (
                    state.meta.name.clone(),
                    (0..state.meta.partitions).collect(),
                )
            })
            .collect();
    };
    let mut wanted: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for topic in filter {
        let Some(state) = broker.topic(topic.topic.as_str()) else {
            continue;
        };
        let existing = 0..state.meta.partitions;
        wanted.entry(state.meta.name.clone()).or_default().extend(
            topic
                .partitions
                .into_iter()
                .filter(|p| existing.contains(p)),
        );
    }
    wanted
}

/// One topic's partitions held here with their sizes; `None` when it holds
/// none of them (Kafka lists only topics with a partition in the dir).
fn describe_topic(
    broker: &Broker,
    name: String,
    partitions: BTreeSet<i32>,
) -> Option<DescribeLogDirsTopic> {
    let described: Vec<DescribeLogDirsPartition> = partitions
        .into_iter()
        .filter_map(|index| {
            // A partition without storage here (deleted meanwhile, or a
            // replica placed on another broker) is simply not in this dir.
            // A view has no storage: its data is its source's, listed there.
            let state = broker.topic(&name)?;
            let partition = state.local(index)?.clone();
            let size = i64::try_from(partition.size_bytes()).unwrap_or(i64::MAX);
            Some(
                DescribeLogDirsPartition::default()
                    .with_partition_index(index)
                    .with_partition_size(size)
                    // Weir has no future replicas (no AlterReplicaLogDirs
                    // between dirs): nothing lags behind a current one.
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            )
        })
        .collect();
    (!described.is_empty()).then(|| {
        DescribeLogDirsTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_partitions(described)
    })
}

/// The total and usable bytes of the file system holding `dir`, as Java's
/// `FileStore.getTotalSpace` and `getUsableSpace` read them (usable: the
/// blocks free to an unprivileged user). Unknown (-1) if it cannot be read:
/// the sizes are informational, so the rest of the answer still stands.
fn volume_bytes(dir: &Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(stat) => {
            let bytes = |blocks: u64| {
                i64::try_from(blocks.saturating_mul(stat.f_frsize)).unwrap_or(i64::MAX)
            };
            (bytes(stat.f_blocks), bytes(stat.f_bavail))
        }
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot read the log dir's volume size");
            (VOLUME_BYTES_UNKNOWN, VOLUME_BYTES_UNKNOWN)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admin::testing::{self, call};
    use bytes::Bytes;
    use kafka_protocol::messages::ApiKey;

    /// One RecordBatch v2 of `count` records of `value_bytes` each.
    fn batch(count: i64, value_bytes: usize) -> Bytes {
        testing::batch_of(count, |_| Bytes::from(vec![b'v'; value_bytes]))
    }

    /// Append `batch` to `topic`-`partition` and wait until it is durable;
    /// returns its size in bytes.
    async fn append(t: &testing::TestBroker, topic: &str, partition: i32, batch: Bytes) -> i64 {
        let size = batch.len() as i64;
        let outcome = t
            .broker
            .partition(topic, partition)
            .unwrap()
            .append(batch)
            .unwrap();
        outcome.durable.wait().await.unwrap();
        size
    }

    fn create(t: &testing::TestBroker, topic: &str, partitions: i32) {
        t.broker
            .create_topic(topic, partitions, 1, BTreeMap::new(), false)
            .unwrap();
    }

    fn filter(topics: &[(&str, &[i32])]) -> DescribeLogDirsRequest {
        DescribeLogDirsRequest::default().with_topics(Some(
            topics
                .iter()
                .map(|(name, partitions)| {
                    DescribableLogDirTopic::default()
                        .with_topic(TopicName(str_bytes(*name)))
                        .with_partitions(partitions.to_vec())
                })
                .collect(),
        ))
    }

    /// `(topic, [(partition, size)])` of the response's one dir.
    fn sizes(resp: &DescribeLogDirsResponse) -> Vec<(String, Vec<(i32, i64)>)> {
        assert_eq!(resp.results.len(), 1);
        resp.results[0]
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        assert_eq!((p.offset_lag, p.is_future_key), (0, false));
                        (p.partition_index, p.partition_size)
                    })
                    .collect();
                (t.name.to_string(), partitions)
            })
            .collect()
    }

    #[tokio::test]
    async fn every_version_lists_each_partition_held_here_with_the_bytes_of_its_batches() {
        let t = testing::broker();
        create(&t, "orders", 2);
        create(&t, "audit", 1);
        let first = append(&t, "orders", 0, batch(3, 100)).await;
        let second = append(&t, "orders", 0, batch(1, 10)).await;
        let audit = append(&t, "audit", 0, batch(2, 1_000)).await;
        let dir = std::path::absolute(t.dir.path()).unwrap();
        for version in testing::versions(ApiKey::DescribeLogDirs) {
            let all = DescribeLogDirsRequest::default().with_topics(None);
            let resp = call(&t.broker, version, all).await;
            assert_eq!(resp.error_code, 0, "v{version}");
            let result = &resp.results[0];
            assert_eq!(result.error_code, 0);
            assert_eq!(result.log_dir.as_str(), dir.to_str().unwrap());
            // Internal topics are listed too, as Kafka lists them.
            let (internal, user): (Vec<_>, Vec<_>) = sizes(&resp)
                .into_iter()
                .partition(|(name, _)| name.starts_with("__"));
            assert_eq!(internal.len(), 1, "{internal:?}");
            assert_eq!(internal[0].0, "__consumer_offsets");
            assert_eq!(
                user,
                [
                    ("audit".to_string(), vec![(0, audit)]),
                    ("orders".to_string(), vec![(0, first + second), (1, 0)]),
                ],
                "v{version}"
            );
            if version >= 4 {
                assert!(result.total_bytes > 0, "{}", result.total_bytes);
                assert!((0..=result.total_bytes).contains(&result.usable_bytes));
            } else {
                assert_eq!((result.total_bytes, result.usable_bytes), (-1, -1));
            }
        }
    }

    #[tokio::test]
    async fn a_filter_keeps_only_the_partitions_held_here_once_each() {
        let t = testing::broker();
        create(&t, "orders", 3);
        create(&t, "audit", 1);
        let size = append(&t, "orders", 2, batch(1, 50)).await;
        let req = filter(&[
            ("orders", &[2, 7, -1, 0, 2]),
            ("missing", &[0]),
            ("orders", &[2]),
            ("audit", &[]),
        ]);
        let resp = call(&t.broker, 4, req).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(
            sizes(&resp),
            [("orders".to_string(), vec![(0, 0), (2, size)])]
        );
    }

    #[tokio::test]
    async fn an_empty_filter_lists_the_dir_without_partitions() {
        let t = testing::broker();
        create(&t, "orders", 1);
        let resp = call(&t.broker, 1, filter(&[])).await;
        assert_eq!(resp.results.len(), 1);
        assert!(resp.results[0].topics.is_empty());
        assert!(!resp.results[0].log_dir.is_empty());
    }
}
