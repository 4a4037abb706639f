//! Fetch: not served yet (stub).

use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: FetchRequest,
) -> Result<FetchResponse, HandlerError> {
    Ok(FetchResponse::default())
}
