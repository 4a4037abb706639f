//! DescribeLogDirs and DescribeQuorum against a real `weir serve`, over TCP:
//! records produced with librdkafka show up in the size of their partition
//! in the data dir, across a restart; and a single node describes itself as
//! its metadata quorum's leader and only voter. librdkafka sends neither
//! request, so the raw client does (kafka-python's admin client covers both
//! in tests/compat/kafka-python).

mod common;

use anyhow::Context;
use common::Broker;
use common::raw::RawClient;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeQuorumRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::BaseRecord;

/// Records produced, and the bytes of each one's value.
const RECORDS: u64 = 200;
const VALUE_BYTES: usize = 100;

/// The only log dir of a DescribeLogDirs answer.
struct LogDir {
    path: String,
    /// `(topic, partition, size in bytes)`.
    partitions: Vec<(String, i32, i64)>,
    total_bytes: i64,
    usable_bytes: i64,
}

fn describe_log_dirs(bootstrap: &str, topics: Option<&[(&str, &[i32])]>) -> anyhow::Result<LogDir> {
    let request = DescribeLogDirsRequest::default().with_topics(topics.map(|topics| {
        topics
            .iter()
            .map(|(name, partitions)| {
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(StrBytes::from_string((*name).to_owned())))
                    .with_partitions(partitions.to_vec())
            })
            .collect()
    }));
    let response: DescribeLogDirsResponse = RawClient::connect(bootstrap)?.call(&request, 4)?;
    anyhow::ensure!(response.error_code == 0, "error {}", response.error_code);
    let [dir] = response.results.as_slice() else {
        anyhow::bail!("{} log dirs, not one", response.results.len());
    };
    anyhow::ensure!(dir.error_code == 0, "dir error {}", dir.error_code);
    let partitions = dir
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.partition_size))
        })
        .collect();
    Ok(LogDir {
        path: dir.log_dir.to_string(),
        partitions,
        total_bytes: dir.total_bytes,
        usable_bytes: dir.usable_bytes,
    })
}

#[test]
fn produced_records_count_in_their_partition_size_in_the_data_dir_across_a_restart()
-> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "sized", 2, &[])?;
    let producer = common::tracked_producer(&common::producer_config(&bootstrap))?;
    let value = vec![b'v'; VALUE_BYTES];
    for i in 0..RECORDS {
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to("sized", Box::new(i))
                .partition(0)
                .payload(&value),
        )?;
    }
    common::flush_all_delivered(&producer, RECORDS as usize)?;
    drop(producer);

    let dir = describe_log_dirs(&bootstrap, Some(&[("sized", &[0, 1, 9]), ("absent", &[0])]))?;
    assert_eq!(
        std::fs::canonicalize(&dir.path).with_context(|| format!("log dir {}", dir.path))?,
        std::fs::canonicalize(broker.data_dir())?
    );
    let (total, usable) = (dir.total_bytes, dir.usable_bytes);
    assert!(
        total > 0 && (0..=total).contains(&usable),
        "{total} {usable}"
    );
    let [(topic, 0, size), (_, 1, empty)] = dir.partitions.as_slice() else {
        anyhow::bail!("not partitions 0 and 1 of one topic: {:?}", dir.partitions);
    };
    assert_eq!(topic, "sized");
    assert_eq!(*empty, 0);
    // Every value, plus batch and record framing: but not, say, the whole
    // commit log segment the batches share with other partitions.
    let values = (RECORDS as usize * VALUE_BYTES) as i64;
    assert!(
        (values..2 * values).contains(size),
        "{size} bytes for {values} bytes of values"
    );

    broker.restart()?;
    let all = describe_log_dirs(&broker.bootstrap(), None)?;
    let sized: Vec<_> = all
        .partitions
        .iter()
        .filter(|(t, _, _)| t == "sized")
        .collect();
    assert_eq!(
        sized,
        [
            &("sized".to_string(), 0, *size),
            &("sized".to_string(), 1, 0)
        ]
    );
    Ok(())
}

#[test]
fn a_single_node_describes_itself_as_its_quorum() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "node.id=4"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "counted", 1, &[])?;
    let request = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let response = RawClient::connect(&bootstrap)?.call(&request, 2)?;
    assert_eq!(response.error_code, 0);
    let partition = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the answer")?;
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.leader_id.0, 4);
    assert_eq!(partition.leader_epoch, 1);
    // At least the topic just created is a committed change.
    assert!(
        partition.high_watermark >= 1,
        "{}",
        partition.high_watermark
    );
    let voters: Vec<(i32, i64)> = partition
        .current_voters
        .iter()
        .map(|v| (v.replica_id.0, v.log_end_offset))
        .collect();
    assert_eq!(voters, [(4, partition.high_watermark)]);
    assert!(partition.observers.is_empty());
    Ok(())
}
