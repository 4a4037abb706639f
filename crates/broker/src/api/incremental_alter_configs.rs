//! IncrementalAlterConfigs: not served yet (stub).

use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: IncrementalAlterConfigsRequest,
) -> Result<IncrementalAlterConfigsResponse, HandlerError> {
    Ok(IncrementalAlterConfigsResponse::default())
}
