//! JoinGroup: a member joins (or rejoins) a classic group. The answer waits
//! until the rebalance completes; the leader's answer lists every member's
//! protocol metadata so it can compute the assignment.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::{JoinParams, JoinResult};
use crate::{Broker, HandlerError, RequestContext};

/// First version with a rebalance timeout; before it the session timeout is both.
const REBALANCE_TIMEOUT_VERSION: i16 = 1;
/// First version where a member without an id must join again with the id it is given.
const MEMBER_ID_REQUIRED_VERSION: i16 = 4;
/// First version whose protocol name may be null.
const NULLABLE_PROTOCOL_NAME_VERSION: i16 = 7;
/// First version that can tell a rejoining static leader not to reassign (KIP-814).
const SKIP_ASSIGNMENT_VERSION: i16 = 9;
/// Most protocols one member may offer; clients offer one per assignor.
const JOIN_PROTOCOLS_MAX: usize = 64;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: JoinGroupRequest,
) -> Result<JoinGroupResponse, HandlerError> {
    let version = ctx.version;
    let member_id = req.member_id.to_string();
    let result = if !broker.allowed_on_group(ctx, weir_auth::AclOperation::Read, &req.group_id) {
        JoinResult::error(ResponseError::GroupAuthorizationFailed, &member_id)
    } else if req.protocols.len() > JOIN_PROTOCOLS_MAX {
        JoinResult::error(ResponseError::InvalidRequest, &member_id)
    } else {
        let client_id = ctx
            .header
            .client_id
            .as_deref()
            .unwrap_or_default()
            .to_string();
        let fresh_member_id = format!("{client_id}-{}", uuid::Uuid::new_v4());
        let params = JoinParams {
            group_id: req.group_id.to_string(),
            member_id,
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id,
            client_host: ctx.client_host(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: if version >= REBALANCE_TIMEOUT_VERSION {
                req.rebalance_timeout_ms
            } else {
                req.session_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= MEMBER_ID_REQUIRED_VERSION,
            fresh_member_id,
        };
        broker.groups().join(params).await
    };
    Ok(response(version, result))
}

fn response(version: i16, r: JoinResult) -> JoinGroupResponse {
    let text = |s: String| StrBytes::from_string(s);
    let protocol_name = match r.protocol_name {
        Some(name) => Some(text(name)),
        None if version < NULLABLE_PROTOCOL_NAME_VERSION => Some(StrBytes::default()),
        None => None,
    };
    JoinGroupResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(text))
        .with_protocol_name(protocol_name)
        .with_leader(text(r.leader))
        // Older leaders get the member list instead and reassign; the group
        // stays stable since SyncGroup in a stable group keeps the assignment.
        .with_skip_assignment(r.skip_assignment && version >= SKIP_ASSIGNMENT_VERSION)
        .with_member_id(text(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(m.member_id))
                        .with_group_instance_id(m.instance_id.map(text))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::protocol::Encodable;

    use super::*;
    use crate::group::classic::JoinedMember;

    #[test]
    fn every_answer_encodes_at_every_version() {
        let leader = JoinResult {
            error: None,
            generation: 3,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: "m".into(),
            member_id: "m".into(),
            members: vec![JoinedMember {
                member_id: "m".into(),
                instance_id: Some("i".into()),
                metadata: Bytes::from_static(b"x"),
            }],
            skip_assignment: true,
        };
        for version in 0..=9 {
            for r in [
                leader.clone(),
                JoinResult::error(ResponseError::UnknownMemberId, "m"),
            ] {
                let mut buf = BytesMut::new();
                response(version, r)
                    .encode(&mut buf, version)
                    .expect("encodes");
            }
        }
    }
}
