//! DeleteGroups: remove empty groups and their committed offsets, or a
//! share group's share-partition state (on a cluster, on every broker:
//! `share_group_offsets::forget_everywhere`).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::share_group_offsets::forget_everywhere;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &std::sync::Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> Result<DeleteGroupsResponse, HandlerError> {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group in req.groups_names {
        if !broker.allowed_on_group(ctx, weir_auth::AclOperation::Delete, &group) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group)
                    .with_error_code(
                        kafka_protocol::ResponseError::GroupAuthorizationFailed.code(),
                    ),
            );
            continue;
        }
        // An empty share group's state goes first, so that a failure
        // leaves the group to be deleted again; then the group, so a new
        // group of the same id starts afresh.
        let empty_share = broker
            .groups()
            .share_group(&group)
            .is_ok_and(|g| g.members.is_empty());
        let forgotten = if empty_share {
            forget_everywhere(broker, &group, None).await?
        } else {
            Ok(())
        };
        let error = match forgotten {
            Ok(()) => broker.groups().delete(&group).await,
            Err(e) => {
                tracing::warn!(group = %group.0, error = %e.message,
                    "a share group's state is not gone everywhere; the group is kept");
                Some(e.code)
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    Ok(DeleteGroupsResponse::default()
        .with_throttle_time_ms(0)
        .with_results(results))
}
