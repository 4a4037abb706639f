//! SyncGroup: the leader hands out the assignment it computed, and every
//! member of the generation receives its own part.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::SyncParams;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: SyncGroupRequest,
) -> Result<SyncGroupResponse, HandlerError> {
    if !broker.allowed_on_group(ctx, weir_auth::AclOperation::Read, &req.group_id) {
        return Ok(SyncGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()));
    }
    let params = SyncParams {
        group_id: req.group_id.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let r = broker.groups().sync(params).await;
    Ok(SyncGroupResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
        .with_assignment(r.assignment))
}
