//! InitProducerId: a producer id and epoch for an idempotent producer, or,
//! when the producer presents the id and epoch it has (KIP-360, v3+), the
//! same id with the next epoch so it can reset its sequence numbers.
//!
//! Transactional producers are not served yet: a transactional id gets
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients treat as fatal and
//! report at once instead of retrying.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

/// "No producer id" and "no epoch" on the wire.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
/// Past this epoch a producer gets a fresh id instead of a bump, as in Kafka,
/// so the epoch never wraps to a value a partition has already seen.
const PRODUCER_EPOCH_MAX: i16 = i16::MAX - 1;

pub(crate) async fn handle(
    broker: &Broker,
    _ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> Result<InitProducerIdResponse, HandlerError> {
    let answer = match assign(broker, &req) {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_error_code(0)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(err) => {
            if err.code == ResponseError::KafkaStorageError {
                tracing::error!(error = %err, "cannot reserve producer ids");
            }
            InitProducerIdResponse::default()
                .with_error_code(err.code())
                .with_producer_id(ProducerId(NO_PRODUCER_ID))
                .with_producer_epoch(NO_PRODUCER_EPOCH)
        }
    };
    Ok(answer.with_throttle_time_ms(0))
}

fn assign(broker: &Broker, req: &InitProducerIdRequest) -> Result<(i64, i16), ApiError> {
    if let Some(transactional_id) = &req.transactional_id {
        tracing::info!(
            transactional_id = %transactional_id.as_str(),
            "refused a transactional producer: transactions are not supported yet"
        );
        return Err(ApiError::new(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported yet",
        ));
    }
    let (id, epoch) = (req.producer_id.0, req.producer_epoch);
    match (id == NO_PRODUCER_ID, epoch == NO_PRODUCER_EPOCH) {
        (true, true) => {}
        (false, false) if id >= 0 && (0..PRODUCER_EPOCH_MAX).contains(&epoch) => {
            return Ok((id, epoch + 1));
        }
        (false, false) if id >= 0 && epoch >= PRODUCER_EPOCH_MAX => {}
        _ => {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("producer id {id} and epoch {epoch} must both be set or both be -1"),
            ));
        }
    }
    let id = broker.producer_ids.next(broker.metadata().as_ref())?;
    Ok((id, 0))
}
