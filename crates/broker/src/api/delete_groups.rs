//! DeleteGroups: remove empty groups and their committed offsets.

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
        let error = broker.groups().delete(&group).await;
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
