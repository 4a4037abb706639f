//! CreateTopics: not served yet (stub).

use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: CreateTopicsRequest,
) -> Result<CreateTopicsResponse, HandlerError> {
    Ok(CreateTopicsResponse::default())
}
