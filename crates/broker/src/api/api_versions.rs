//! ApiVersions: not served yet (stub).

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: ApiVersionsRequest,
) -> Result<ApiVersionsResponse, HandlerError> {
    Ok(ApiVersionsResponse::default())
}
