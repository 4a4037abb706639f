//! InitProducerId: a producer id and epoch.
//!
//! As in Kafka, an idempotent producer (no transactional id) always gets a
//! fresh producer id at epoch 0, also when it presents the id and epoch it
//! has (KIP-360, v3+): it bumps its epoch itself and only asks the broker
//! when it needs a new id, so the broker never bumps an id a client names.
//! A transactional id keeps its producer id, and each InitProducerId bumps
//! its epoch (fencing an older producer of the id): the transaction
//! coordinator decides (`crate::txn`), with the rules in [`next_epochs`].

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use weir_auth::{AclOperation, ResourceType};

use crate::error::ApiError;
use crate::producer_ids::{
    InitError, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, ProducerIdAndEpoch, next_epochs,
};
use crate::{Broker, HandlerError, RequestContext};

/// First version that answers a fenced producer with PRODUCER_FENCED;
/// older ones get INVALID_PRODUCER_EPOCH (KIP-588).
const PRODUCER_FENCED_VERSION: i16 = 4;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> Result<InitProducerIdResponse, HandlerError> {
    let assigned = match presented(&req) {
        Err(err) => Err(err),
        Ok(expected) => match req.transactional_id.as_ref().map(|id| id.as_str()) {
            Some("") => Err(ApiError::new(
                ResponseError::InvalidRequest,
                "the transactional id is empty",
            )),
            // A transactional producer needs WRITE on its transactional id.
            Some(id)
                if !broker.allowed(ctx, AclOperation::Write, ResourceType::TransactionalId, id) =>
            {
                Err(ApiError::new(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    format!("{} may not use transactional id '{id}'", ctx.principal),
                ))
            }
            Some(id) => {
                broker
                    .txns()
                    .init_producer_id(broker, id, req.transaction_timeout_ms, expected)
                    .await
            }
            // An idempotent one IDEMPOTENT_WRITE on the cluster, or (as
            // Kafka 2.8+ allows) WRITE on some topic.
            None if !broker.allowed_on_any(
                ctx,
                AclOperation::IdempotentWrite,
                ResourceType::Cluster,
            ) && !broker.allowed_on_any(ctx, AclOperation::Write, ResourceType::Topic) =>
            {
                broker.audit_denial(
                    ctx,
                    AclOperation::IdempotentWrite,
                    (ResourceType::Cluster, weir_auth::CLUSTER_RESOURCE_NAME),
                    &"no IDEMPOTENT_WRITE on the cluster and no WRITE on any topic",
                );
                Err(ApiError::new(
                    ResponseError::ClusterAuthorizationFailed,
                    format!(
                        "{} may not produce idempotently: it has neither IDEMPOTENT_WRITE on \
                         the cluster nor WRITE on any topic",
                        ctx.principal
                    ),
                ))
            }
            // Reserving ids may write to the metadata store: off the workers.
            None => {
                let broker = broker.clone();
                crate::blocking::run(move || idempotent(&broker, expected)).await?
            }
        },
    };
    let answer = match assigned {
        Ok(assigned) => InitProducerIdResponse::default()
            .with_error_code(0)
            .with_producer_id(ProducerId(assigned.producer_id))
            .with_producer_epoch(assigned.epoch),
        Err(err) => {
            if err.code == ResponseError::KafkaStorageError {
                tracing::error!(error = %err, "cannot reserve producer ids");
            }
            let code = match err.code {
                ResponseError::ProducerFenced if ctx.version < PRODUCER_FENCED_VERSION => {
                    ResponseError::InvalidProducerEpoch.code()
                }
                _ => err.code(),
            };
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(NO_PRODUCER_ID))
                .with_producer_epoch(NO_PRODUCER_EPOCH)
        }
    };
    Ok(answer.with_throttle_time_ms(0))
}

/// An idempotent producer's id: always a fresh one, at epoch 0.
fn idempotent(
    broker: &Broker,
    expected: Option<ProducerIdAndEpoch>,
) -> Result<ProducerIdAndEpoch, ApiError> {
    // Nothing is kept for an idempotent producer.
    let next = next_epochs(None, expected, || {
        broker.producer_ids.next(broker.metadata().as_ref())
    })
    .map_err(init_error)?;
    Ok(next.current)
}

/// The id and epoch the producer presents (v3+): both or neither, as Kafka checks.
fn presented(req: &InitProducerIdRequest) -> Result<Option<ProducerIdAndEpoch>, ApiError> {
    let (producer_id, epoch) = (req.producer_id.0, req.producer_epoch);
    match (producer_id == NO_PRODUCER_ID, epoch == NO_PRODUCER_EPOCH) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(ProducerIdAndEpoch { producer_id, epoch })),
        _ => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("producer id {producer_id} and epoch {epoch} must both be set or both be -1"),
        )),
    }
}

fn init_error(err: InitError) -> ApiError {
    match err {
        InitError::Fenced { .. } => ApiError::new(ResponseError::ProducerFenced, err.to_string()),
        InitError::Store(err) => err.into(),
    }
}
