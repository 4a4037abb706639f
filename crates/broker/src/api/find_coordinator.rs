//! FindCoordinator: which broker coordinates a group. On a single broker it
//! is always this one; the batched form (v4+) answers each key on its own.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// `key_type` of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// First version carrying a list of keys instead of one.
const BATCHED_VERSION: i16 = 4;
/// Most keys one batched request may ask about.
const COORDINATOR_KEYS_MAX: usize = 10_000;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, HandlerError> {
    let config = broker.config();
    let node = BrokerId(config.node_id);
    let host = StrBytes::from_string(config.advertised_host.clone());
    let port = config.advertised_port;
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
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = check(key_type, &key);
                let coordinator = Coordinator::default().with_key(key);
                match found {
                    Ok(()) => coordinator
                        .with_node_id(node)
                        .with_host(host.clone())
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
    let response = FindCoordinatorResponse::default().with_throttle_time_ms(0);
    Ok(match check(key_type, &req.key) {
        Ok(()) => response
            .with_error_code(0)
            .with_error_message(None)
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
        Err(err) => response
            .with_error_code(err.code())
            .with_error_message(Some(StrBytes::from_string(err.message)))
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1),
    })
}

fn check(key_type: i8, key: &str) -> Result<(), ApiError> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Err(ApiError::new(
            ResponseError::InvalidRequest,
            "the group id is empty",
        )),
        KEY_TYPE_GROUP => Ok(()),
        KEY_TYPE_TRANSACTION => Err(ApiError::new(
            ResponseError::CoordinatorNotAvailable,
            "this broker has no transaction coordinator yet",
        )),
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("unknown coordinator key type {other}"),
        )),
    }
}
