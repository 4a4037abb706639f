//! The Kafka requests the read views send to their own broker, in-process
//! ([`weir_broker::Broker::handle`]): what a Kafka admin tool would ask over
//! the wire (ListGroups, DescribeConfigs, DescribeTransactions, ...),
//! answered by the same handlers, without a connection. A request that
//! comes over no connection is trusted (no ACL check), as the admin
//! listener is the operator's.

use std::sync::Arc;

use axum::http::StatusCode;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::AdminError;

/// The client id the broker's logs show for these requests.
const CLIENT_ID: &str = "weir-admin";

/// Send `request` at `version` to `broker` and hand back its response.
/// `version` must be one the broker serves.
pub(crate) async fn ask<R>(
    broker: &Arc<weir_broker::Broker>,
    request: R,
    version: i16,
) -> Result<ResponseKind, AdminError>
where
    R: Request,
    RequestKind: From<R>,
{
    let api_key = ApiKey::try_from(R::KEY).map_err(|()| internal("an unknown API key"))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let request = weir_protocol::Request {
        header,
        api_key,
        version,
        body: RequestKind::from(request),
    };
    match broker.handle(request).await {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(internal(format!("{api_key:?} answered nothing"))),
        Err(weir_broker::HandlerError::ShuttingDown) => Err(AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is shutting down",
        )),
        Err(e) => Err(internal(format!("{api_key:?} failed: {e}"))),
    }
}

/// The response of one kind out of a [`ResponseKind`], or a 500 naming
/// what came instead.
macro_rules! expect_response {
    ($response:expr, $kind:ident) => {
        match $response {
            kafka_protocol::messages::ResponseKind::$kind(answer) => Ok(answer),
            other => Err($crate::kafka::internal(format!(
                "{} answered with {:?}",
                stringify!($kind),
                std::mem::discriminant(&other)
            ))),
        }
    };
}
pub(crate) use expect_response;

/// A 500: the broker answered what it should not have.
pub(crate) fn internal(message: impl Into<String>) -> AdminError {
    AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// The answer to a Kafka error code where none was expected, naming what
/// was asked and the broker's message: 503 when Kafka counts the error
/// retriable (a coordinator loading, a leader moving), 500 otherwise.
pub(crate) fn failed(what: &str, code: i16, message: Option<&StrBytes>) -> AdminError {
    let error = kafka_protocol::ResponseError::try_from_code(code);
    let name = error.map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"));
    let detail = message
        .map(|m| format!(": {}", m.as_str()))
        .unwrap_or_default();
    let status = if error.is_some_and(|e| e.is_retriable()) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    AdminError::new(status, format!("{what}: {name}{detail}"))
}

/// Runs `work` (file reads, metadata reads under locks) off the runtime's
/// workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| internal(format!("a read failed: {e}")))
}

/// Topics, records and commits made in-process, for the read views' tests.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        CreateTopicsRequest, GroupId, OffsetCommitRequest, ProduceRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::ask;
    use crate::AdminState;

    fn name(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_owned())
    }

    /// Create `topic` with `partitions` partitions and `configs`.
    pub(crate) async fn create_topic(
        state: &AdminState,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) {
        use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
        let request = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(name(topic)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(name(k))
                                    .with_value(Some(name(v)))
                            })
                            .collect(),
                    ),
            ])
            .with_timeout_ms(10_000);
        let response = ask(&state.broker, request, 5).await.expect("CreateTopics");
        let response = expect_response!(response, CreateTopics).expect("CreateTopics");
        assert_eq!(response.topics[0].error_code, 0, "{response:?}");
    }

    /// One record: key, value, timestamp and headers.
    pub(crate) type Plain<'a> = (&'a str, &'a [u8], i64, &'a [(&'a str, &'a str)]);

    /// Produce `records` to `topic`'s `partition` in one batch (acks=all).
    pub(crate) async fn produce(
        state: &AdminState,
        topic: &str,
        partition: i32,
        records: &[Plain<'_>],
    ) {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value, timestamp, headers))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i64::try_from(i).expect("few records"),
                sequence: -1,
                timestamp: *timestamp,
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
                value: Some(Bytes::copy_from_slice(value)),
                headers: headers
                    .iter()
                    .map(|(k, v)| (name(k), Some(Bytes::copy_from_slice(v.as_bytes()))))
                    .collect(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("a batch");
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(name(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch.freeze())),
                    ]),
            ]);
        let response = ask(&state.broker, request, 9).await.expect("Produce");
        let response = expect_response!(response, Produce).expect("Produce");
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, 0, "{answer:?}");
    }

    /// Commit `offset` for `group` on `topic`'s `partition`, as a consumer
    /// that assigns its partitions does (no generation).
    pub(crate) async fn commit(
        state: &AdminState,
        group: &str,
        (topic, partition): (&str, i32),
        offset: i64,
    ) {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(name(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(name(topic)))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset),
                    ]),
            ]);
        let response = ask(&state.broker, request, 8).await.expect("OffsetCommit");
        let response = expect_response!(response, OffsetCommit).expect("OffsetCommit");
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
    }
}
