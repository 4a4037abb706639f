//! Heartbeat: a classic group member says it is alive, and learns whether
//! a rebalance has begun.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, HandlerError> {
    if !broker.allowed_on_group(ctx, weir_auth::AclOperation::Read, &req.group_id) {
        return Ok(HeartbeatResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()));
    }
    let error = broker.groups().heartbeat(
        &req.group_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    Ok(HeartbeatResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(error.map_or(0, |e| e.code())))
}
