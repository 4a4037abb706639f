//! DeleteTopics: not served yet (stub).

use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: DeleteTopicsRequest,
) -> Result<DeleteTopicsResponse, HandlerError> {
    Ok(DeleteTopicsResponse::default())
}
