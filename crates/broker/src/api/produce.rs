//! Produce: not served yet (stub).

use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: ProduceRequest,
) -> Result<Option<ProduceResponse>, HandlerError> {
    Ok(Some(ProduceResponse::default()))
}
