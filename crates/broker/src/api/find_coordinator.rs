//! FindCoordinator: which broker coordinates a group or a transactional
//! id. On a single broker it is always this one; on a cluster, the leader
//! of the group's `__consumer_offsets` partition, or of the transactional
//! id's `__transaction_state` partition. The batched form (v4+) answers
//! each key on its own.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use weir_auth::{AclOperation, ResourceType};

use std::sync::Arc;

use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext, blocking};

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// `key_type` of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// First version carrying a list of keys instead of one.
const BATCHED_VERSION: i16 = 4;
/// Most keys one batched request may ask about.
const COORDINATOR_KEYS_MAX: usize = 10_000;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, HandlerError> {
    // v0 has no key type: it always asks for a group.
    let key_type = if ctx.version >= 1 {
        req.key_type
    } else {
        KEY_TYPE_GROUP
    };
    if ctx.version >= BATCHED_VERSION {
        if req.coordinator_keys.len() > COORDINATOR_KEYS_MAX {
            return Err(HandlerError::InvalidRequest(format!(
                "{} coordinator keys is more than {COORDINATOR_KEYS_MAX}",
                req.coordinator_keys.len()
            )));
        }
        let keys = req.coordinator_keys;
        // On a cluster the answer may create the offsets topic through the
        // metadata quorum: off the async workers.
        let found = blocking::run({
            let broker = broker.clone();
            let keys = keys.clone();
            let ctx = ctx.clone();
            move || {
                keys.iter()
                    .map(|key| find(&broker, &ctx, key_type, key))
                    .collect::<Vec<_>>()
            }
        })
        .await?;
        let coordinators = keys
            .into_iter()
            .zip(found)
            .map(|(key, found)| {
                let coordinator = Coordinator::default().with_key(key);
                match found {
                    Ok((node, host, port)) => coordinator
                        .with_node_id(BrokerId(node))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_error_code(0),
                    Err(err) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_host(StrBytes::default())
                        .with_port(-1)
                        .with_error_code(err.code())
                        .with_error_message(Some(StrBytes::from_string(err.message))),
                }
            })
            .collect();
        return Ok(FindCoordinatorResponse::default()
            .with_throttle_time_ms(0)
            .with_coordinators(coordinators));
    }
    let found = blocking::run({
        let broker = broker.clone();
        let ctx = ctx.clone();
        move || find(&broker, &ctx, key_type, &req.key)
    })
    .await?;
    let response = FindCoordinatorResponse::default().with_throttle_time_ms(0);
    Ok(match found {
        Ok((node, host, port)) => response
            .with_error_code(0)
            .with_error_message(None)
            .with_node_id(BrokerId(node))
            .with_host(StrBytes::from_string(host))
            .with_port(port),
        Err(err) => response
            .with_error_code(err.code())
            .with_error_message(Some(StrBytes::from_string(err.message)))
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1),
    })
}

/// The coordinator of `key`: its id, and its host and port on the
/// request's listener. A client must be allowed to describe the group or
/// transactional id.
fn find(
    broker: &Broker,
    ctx: &RequestContext,
    key_type: i8,
    key: &str,
) -> Result<(i32, String, i32), ApiError> {
    check(key_type, key)?;
    let listener = &*ctx.listener;
    let (resource_type, denied) = match key_type {
        KEY_TYPE_TRANSACTION => (
            ResourceType::TransactionalId,
            ResponseError::TransactionalIdAuthorizationFailed,
        ),
        _ => (ResourceType::Group, ResponseError::GroupAuthorizationFailed),
    };
    if !broker.allowed(ctx, AclOperation::Describe, resource_type, key) {
        return Err(ApiError::new(
            denied,
            format!("{} may not describe {resource_type} '{key}'", ctx.principal),
        ));
    }
    let node = match key_type {
        KEY_TYPE_TRANSACTION => broker.txn_coordinator(key),
        _ => broker.group_coordinator(key),
    }?;
    // As Kafka: a coordinator without this listener cannot be reached by
    // this client; it is told to retry.
    let (host, port) = broker.client_endpoint(node, listener).ok_or_else(|| {
        ApiError::new(
            ResponseError::CoordinatorNotAvailable,
            format!("the coordinator, broker {node}, has no listener named {listener}"),
        )
    })?;
    Ok((node, host, port))
}

fn check(key_type: i8, key: &str) -> Result<(), ApiError> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Err(ApiError::new(
            ResponseError::InvalidRequest,
            "the group id is empty",
        )),
        KEY_TYPE_GROUP => Ok(()),
        KEY_TYPE_TRANSACTION if key.is_empty() => Err(ApiError::new(
            ResponseError::InvalidRequest,
            "the transactional id is empty",
        )),
        KEY_TYPE_TRANSACTION => Ok(()),
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("unknown coordinator key type {other}"),
        )),
    }
}
