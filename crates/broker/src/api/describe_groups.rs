//! DescribeGroups: each classic group's state, protocol and members, with
//! their metadata and assignment once the group is stable.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use crate::{Broker, HandlerError, RequestContext};

use crate::acls::AUTHORIZED_OPERATIONS_OMITTED;
/// First version answering an unknown group with GROUP_ID_NOT_FOUND
/// instead of an empty "Dead" group.
const NOT_FOUND_VERSION: i16 = 6;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeGroupsRequest,
) -> Result<DescribeGroupsResponse, HandlerError> {
    let asked = req.include_authorized_operations;
    let text = StrBytes::from_string;
    // Kafka answers every repetition of an id; one answer per id is what a
    // client can use, and repetitions would multiply a large group's answer.
    let groups = super::first_of_each(req.groups, GroupId::clone)
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let described = match broker.describable_group(ctx, asked, &id) {
                Ok(operations) => described.with_authorized_operations(operations),
                Err(denied) => {
                    return described
                        .with_error_code(denied.code())
                        .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
                }
            };
            match broker.groups().describe(&id) {
                Some(g) => described
                    .with_error_code(0)
                    .with_group_state(StrBytes::from_static_str(g.state))
                    .with_protocol_type(text(g.protocol_type))
                    .with_protocol_data(text(g.protocol_name))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(m.member_id))
                                    .with_group_instance_id(m.instance_id.map(text))
                                    .with_client_id(text(m.client_id))
                                    .with_client_host(text(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                None => {
                    let (code, message) = if id.is_empty() {
                        (
                            ResponseError::InvalidGroupId.code(),
                            "the group id is empty",
                        )
                    } else if ctx.version >= NOT_FOUND_VERSION {
                        (
                            ResponseError::GroupIdNotFound.code(),
                            "the group does not exist",
                        )
                    } else {
                        (0, "")
                    };
                    let message = (code != 0 && ctx.version >= NOT_FOUND_VERSION)
                        .then(|| StrBytes::from_static_str(message));
                    described
                        .with_error_code(code)
                        .with_error_message(message)
                        .with_group_state(StrBytes::from_static_str("Dead"))
                }
            }
        })
        .collect();
    Ok(DescribeGroupsResponse::default()
        .with_throttle_time_ms(0)
        .with_groups(groups))
}
