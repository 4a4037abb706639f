//! AlterConfigs: not served yet (stub).

use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: AlterConfigsRequest,
) -> Result<AlterConfigsResponse, HandlerError> {
    Ok(AlterConfigsResponse::default())
}
