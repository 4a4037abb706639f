//! Metadata: not served yet (stub).

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: MetadataRequest,
) -> Result<MetadataResponse, HandlerError> {
    Ok(MetadataResponse::default())
}
