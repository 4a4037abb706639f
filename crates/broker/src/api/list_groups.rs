//! ListGroups: every group this coordinator owns, filtered by state (v4+)
//! and by type (v5+: `classic`, `consumer` or `share`).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ListGroupsRequest,
) -> Result<ListGroupsResponse, HandlerError> {
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    // DESCRIBE on the cluster lists every group; without it, the groups
    // the client may describe, as Kafka lists them.
    let every_group = broker.allowed_quietly(
        ctx,
        weir_auth::AclOperation::Describe,
        weir_auth::ResourceType::Cluster,
        weir_auth::CLUSTER_RESOURCE_NAME,
    );
    let describable = |group: &str| {
        every_group
            || broker.allowed_quietly(
                ctx,
                weir_auth::AclOperation::Describe,
                weir_auth::ResourceType::Group,
                group,
            )
    };
    let groups = broker
        .groups()
        .list()
        .into_iter()
        .filter(|g| wanted(&req.states_filter, g.state) && wanted(&req.types_filter, g.group_type))
        .filter(|g| describable(&g.group_id))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(StrBytes::from_static_str(g.state))
                .with_group_type(StrBytes::from_static_str(g.group_type))
        })
        .collect();
    Ok(ListGroupsResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_groups(groups))
}
