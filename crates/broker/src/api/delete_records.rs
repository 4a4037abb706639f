//! DeleteRecords: not served yet (stub).

use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: DeleteRecordsRequest,
) -> Result<DeleteRecordsResponse, HandlerError> {
    Ok(DeleteRecordsResponse::default())
}
