//! CreatePartitions: not served yet (stub).

use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: CreatePartitionsRequest,
) -> Result<CreatePartitionsResponse, HandlerError> {
    Ok(CreatePartitionsResponse::default())
}
