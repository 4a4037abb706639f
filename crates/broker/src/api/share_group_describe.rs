//! ShareGroupDescribe (KIP-932): a share group's epochs and members, with
//! each member's subscription and assignment.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::acls::AUTHORIZED_OPERATIONS_OMITTED;
use crate::group::share::ShareGroup;
use crate::{Broker, HandlerError, RequestContext};

/// The assignor share groups use, by Kafka's name.
const SIMPLE_ASSIGNOR: &str = "simple";

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ShareGroupDescribeRequest,
) -> Result<ShareGroupDescribeResponse, HandlerError> {
    let asked = req.include_authorized_operations;
    let groups = super::first_of_each(req.group_ids, Clone::clone)
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
            match broker.groups().share_group(&id) {
                Ok(g) => describe(described, &g),
                Err(error) => described
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        if error == ResponseError::GroupIdNotFound {
                            "no share group has this id"
                        } else {
                            "the group cannot be described"
                        },
                    )))
                    .with_group_state(StrBytes::from_static_str("Dead")),
            }
        })
        .collect();
    Ok(ShareGroupDescribeResponse::default()
        .with_throttle_time_ms(0)
        .with_groups(groups))
}

fn describe(described: DescribedGroup, g: &ShareGroup) -> DescribedGroup {
    let name_of = |id: &uuid::Uuid| {
        g.topics
            .iter()
            .find(|(_, shape)| shape.id == *id)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    };
    let text = StrBytes::from_string;
    let members = g
        .members
        .values()
        .map(|m| {
            Member::default()
                .with_member_id(text(m.id.clone()))
                .with_rack_id(m.rack_id.clone().map(text))
                .with_member_epoch(m.epoch)
                .with_client_id(text(m.client_id.clone()))
                .with_client_host(text(m.client_host.clone()))
                .with_subscribed_topic_names(
                    m.subscribed
                        .iter()
                        .map(|s| TopicName(text(s.clone())))
                        .collect(),
                )
                .with_assignment(
                    Assignment::default().with_topic_partitions(
                        m.assignment
                            .iter()
                            .map(|(id, partitions)| {
                                TopicPartitions::default()
                                    .with_topic_id(*id)
                                    .with_topic_name(TopicName(text(name_of(id))))
                                    .with_partitions(partitions.iter().copied().collect())
                            })
                            .collect(),
                    ),
                )
        })
        .collect();
    described
        .with_error_code(0)
        .with_group_state(StrBytes::from_static_str(g.state()))
        .with_group_epoch(g.group_epoch)
        .with_assignment_epoch(g.assignment_epoch)
        .with_assignor_name(StrBytes::from_static_str(SIMPLE_ASSIGNOR))
        .with_members(members)
}
