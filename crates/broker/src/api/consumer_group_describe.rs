//! ConsumerGroupDescribe (KIP-848): a consumer group's epochs, assignor and
//! members, with each member's current and target assignment.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::group::assignor;
use crate::group::consumer::ConsumerGroup;
use crate::{Broker, HandlerError, RequestContext};

use crate::acls::AUTHORIZED_OPERATIONS_OMITTED;
/// `member_type` of a member using the consumer protocol (v1).
const MEMBER_TYPE_CONSUMER: i8 = 1;
/// `member_type` of a classic member of a group being migrated (v1).
const MEMBER_TYPE_CLASSIC: i8 = 0;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> Result<ConsumerGroupDescribeResponse, HandlerError> {
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
            match broker.groups().consumer_group(&id) {
                Ok(g) => describe(described, &g),
                Err(error) => described
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        if error == ResponseError::GroupIdNotFound {
                            "no consumer group has this id"
                        } else {
                            "the group cannot be described"
                        },
                    )))
                    .with_group_state(StrBytes::from_static_str("Dead")),
            }
        })
        .collect();
    Ok(ConsumerGroupDescribeResponse::default()
        .with_throttle_time_ms(0)
        .with_groups(groups))
}

fn describe(described: DescribedGroup, g: &ConsumerGroup) -> DescribedGroup {
    let name_of = |id: &uuid::Uuid| {
        g.topics
            .iter()
            .find(|(_, shape)| shape.id == *id)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    };
    let assignment = |tp: &assignor::TopicPartitions| {
        Assignment::default().with_topic_partitions(
            tp.iter()
                .map(|(id, partitions)| {
                    TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(TopicName(StrBytes::from_string(name_of(id))))
                        .with_partitions(partitions.iter().copied().collect())
                })
                .collect(),
        )
    };
    let text = StrBytes::from_string;
    let members = g
        .members
        .values()
        .map(|m| {
            Member::default()
                .with_member_id(text(m.id.clone()))
                .with_instance_id(m.instance_id.clone().map(text))
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
                .with_assignment(assignment(&m.assigned))
                .with_target_assignment(assignment(
                    g.target.get(&m.id).unwrap_or(&Default::default()),
                ))
                .with_member_type(if m.classic.is_some() {
                    MEMBER_TYPE_CLASSIC
                } else {
                    MEMBER_TYPE_CONSUMER
                })
        })
        .collect();
    described
        .with_error_code(0)
        .with_group_state(StrBytes::from_static_str(g.state()))
        .with_group_epoch(g.group_epoch)
        .with_assignment_epoch(g.assignment_epoch)
        .with_assignor_name(text(if g.assignor.is_empty() {
            assignor::UNIFORM.to_string()
        } else {
            g.assignor.clone()
        }))
        .with_members(members)
}
