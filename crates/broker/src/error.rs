//! Kafka error codes: every failure a handler can report, mapped to its code
//! in one place.

use kafka_protocol::ResponseError;
use weir_metadata::MetadataError;
use weir_storage::{AppendError, ReadError, StorageError};

/// A failure reported to the client as a Kafka error code plus a message
/// (for the versions that carry one).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The Kafka error.
    pub code: ResponseError,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The numeric Kafka error code.
    pub fn code(&self) -> i16 {
        self.code.code()
    }

    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn unknown_topic(topic: &str) -> Self {
        Self::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{topic}' does not exist"),
        )
    }

    /// UNKNOWN_TOPIC_OR_PARTITION for a partition index out of range.
    pub fn unknown_partition(topic: &str, partition: i32) -> Self {
        Self::new(
            ResponseError::UnknownTopicOrPartition,
            format!("partition {partition} of topic '{topic}' does not exist"),
        )
    }
}

/// A panic while a broker lock was held (a bug): the request is refused
/// rather than served from what the panic left half updated.
impl From<weir_sync::PoisonedLock> for ApiError {
    fn from(err: weir_sync::PoisonedLock) -> Self {
        Self::new(ResponseError::UnknownServerError, err.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        let code = match err {
            // A batch truncated away before it committed: the producer sends
            // it again once it finds the new leader.
            StorageError::Truncated { .. } => ResponseError::NotLeaderOrFollower,
            _ => ResponseError::KafkaStorageError,
        };
        Self::new(code, err.to_string())
    }
}

impl From<AppendError> for ApiError {
    fn from(err: AppendError) -> Self {
        let code = match &err {
            AppendError::CorruptBatch => ResponseError::CorruptMessage,
            AppendError::InvalidBatch(_) | AppendError::InvalidRecordCount { .. } => {
                ResponseError::InvalidRecord
            }
            AppendError::UnsupportedCompression { .. } => ResponseError::UnsupportedCompressionType,
            AppendError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            AppendError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            AppendError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            AppendError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
            AppendError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
            AppendError::Truncating => ResponseError::NotLeaderOrFollower,
            AppendError::ReplicaOffsetOrder { .. } => ResponseError::InvalidRecord,
            AppendError::Storage(_) => ResponseError::KafkaStorageError,
        };
        Self::new(code, err.to_string())
    }
}

impl From<ReadError> for ApiError {
    fn from(err: ReadError) -> Self {
        let code = match &err {
            ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            ReadError::Storage(_) => ResponseError::KafkaStorageError,
        };
        Self::new(code, err.to_string())
    }
}

impl From<MetadataError> for ApiError {
    fn from(err: MetadataError) -> Self {
        let code = match &err {
            MetadataError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            MetadataError::TopicIdTaken(_) => ResponseError::UnknownServerError,
            MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            MetadataError::StalePartitionChange(_) => ResponseError::FencedLeaderEpoch,
            MetadataError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
            MetadataError::NoController(_) => ResponseError::RequestTimedOut,
            MetadataError::Storage(_) => ResponseError::KafkaStorageError,
            MetadataError::BrokerNotRegistered(_) => ResponseError::BrokerIdNotRegistered,
            MetadataError::BrokerInUse(_)
            | MetadataError::TooManyGroupConfigs(_)
            | MetadataError::TooManyAcls(_)
            | MetadataError::TooManyClientQuotas(_) => ResponseError::InvalidRequest,
            MetadataError::DuplicateVoter(_) => ResponseError::DuplicateVoter,
            MetadataError::VoterNotFound(_) => ResponseError::VoterNotFound,
            MetadataError::InvalidVoterChange(_) => ResponseError::InvalidRequest,
        };
        Self::new(code, err.to_string())
    }
}
