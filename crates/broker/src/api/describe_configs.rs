//! DescribeConfigs: not served yet (stub).

use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: DescribeConfigsRequest,
) -> Result<DescribeConfigsResponse, HandlerError> {
    Ok(DescribeConfigsResponse::default())
}
