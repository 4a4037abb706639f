//! DescribeCluster: not served yet (stub).

use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    _broker: &Broker,
    _ctx: &RequestContext,
    _req: DescribeClusterRequest,
) -> Result<DescribeClusterResponse, HandlerError> {
    Ok(DescribeClusterResponse::default())
}
