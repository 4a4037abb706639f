//! InitProducerId: not served yet (stub).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: InitProducerIdRequest,
) -> Result<InitProducerIdResponse, HandlerError> {
    Ok(InitProducerIdResponse::default())
}
