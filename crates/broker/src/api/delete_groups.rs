//! DeleteGroups: remove empty groups and their committed offsets, or a
//! share group's share-partition state.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    _ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> Result<DeleteGroupsResponse, HandlerError> {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group in req.groups_names {
        let share = broker.groups().share_group(&group).is_ok();
        let mut error = broker.groups().delete(&group).await;
        if share && error.is_none() {
            // What the share group had consumed goes with it, so a new
            // group of the same id starts afresh.
            error = forget_share_group(broker, &group).await?;
        }
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

/// Drop every share-partition of `group` on this broker and write their
/// tombstones to `__share_group_state`; answered once they are durable.
async fn forget_share_group(
    broker: &Broker,
    group: &str,
) -> Result<Option<kafka_protocol::ResponseError>, HandlerError> {
    let (shares, group) = (broker.shares().clone(), group.to_string());
    let waits = crate::blocking::run(move || shares.forget_group(&group)).await?;
    for wait in waits {
        if let Err(e) = wait.wait().await {
            tracing::warn!(error = %e, "a deleted share group's state is not durably gone");
            return Ok(Some(kafka_protocol::ResponseError::KafkaStorageError));
        }
    }
    Ok(None)
}
