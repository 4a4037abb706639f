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
