//! OffsetForLeaderEpoch: not served yet (stub).

use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: OffsetForLeaderEpochRequest,
) -> Result<OffsetForLeaderEpochResponse, HandlerError> {
    Ok(OffsetForLeaderEpochResponse::default())
}
