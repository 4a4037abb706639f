//! LeaveGroup: members leave a classic group at once, triggering a
//! rebalance for those who stay. v3+ carries a batch of members, each
//! answered on its own (static members leave by group.instance.id).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::{Broker, HandlerError, RequestContext};

/// First version that names a batch of members.
const BATCHED_VERSION: i16 = 3;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
) -> Result<LeaveGroupResponse, HandlerError> {
    if !broker.allowed_on_group(ctx, weir_auth::AclOperation::Read, &req.group_id) {
        return Ok(LeaveGroupResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()));
    }
    let members: Vec<(String, Option<String>)> = if ctx.version >= BATCHED_VERSION {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let results = broker.groups().leave(&req.group_id, &members);
    let response = LeaveGroupResponse::default().with_throttle_time_ms(0);
    if ctx.version < BATCHED_VERSION {
        let error = results.first().copied().flatten();
        return Ok(response.with_error_code(error.map_or(0, |e| e.code())));
    }
    Ok(response.with_error_code(0).with_members(
        req.members
            .into_iter()
            .zip(results)
            .map(|(m, error)| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(error.map_or(0, |e| e.code()))
            })
            .collect(),
    ))
}
