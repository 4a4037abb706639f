//! ListOffsets: not served yet (stub).

use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, HandlerError> {
    Ok(ListOffsetsResponse::default())
}
