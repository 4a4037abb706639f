//! The end-to-end tests' raw Kafka client is weir-client's `Connection`: one
//! TCP connection that sends requests at exact versions (`call`) and writes
//! hand-made frames, for requests librdkafka cannot send
//! (IncrementalAlterConfigs, bad input).

// Each test binary uses a different subset of these re-exports.
#![allow(unused_imports)]

use anyhow::Context as _;
use kafka_protocol::messages::ProduceResponse;

pub use weir_client::Connection as RawClient;
pub use weir_client::{produce_request, record_batch};

/// The error code of the only partition in a Produce response.
pub fn produce_error(response: &ProduceResponse) -> anyhow::Result<i16> {
    weir_client::produce_error(response).context("a Produce response without a partition")
}

/// InitProducerId (v5) for `transactional_id`, new to the coordinator or
/// not: the response, whatever its error code.
pub fn init_producer_id(
    raw: &mut RawClient,
    transactional_id: &str,
    timeout_ms: i32,
) -> anyhow::Result<kafka_protocol::messages::InitProducerIdResponse> {
    use kafka_protocol::messages::{InitProducerIdRequest, TransactionalId};
    Ok(raw.call(
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(transactional_id.to_string().into())))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
        5,
    )?)
}

/// One transactional batch of one record from `producer` (id, epoch).
pub fn txn_batch(producer: (i64, i16)) -> anyhow::Result<bytes::Bytes> {
    txn_record(producer, 0, "v")
}

/// One transactional batch of one record, `value`, from `producer` (id,
/// epoch) at `sequence`.
pub fn txn_record(
    producer: (i64, i16),
    sequence: i32,
    value: &str,
) -> anyhow::Result<bytes::Bytes> {
    Ok(weir_client::transactional_batch(
        &[value.as_bytes()],
        producer,
        sequence,
    )?)
}
