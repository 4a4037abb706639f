//! UnregisterBroker (API key 64, `kafka-cluster.sh unregister`): remove a
//! broker that is gone for good from the cluster's metadata, committed
//! through the metadata quorum. An unknown id is BROKER_ID_NOT_REGISTERED.
//! Weir refuses, with INVALID_REQUEST and why, a broker that is still alive
//! (unfenced: it would register again at once) and one that partitions still
//! list as a replica (move them with `weir topic reassign` first). A
//! broker-only node leaves the quorum's learners too. Served only by a
//! cluster: a single node has no other broker to remove.

use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};

use crate::admin::str_bytes;
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: UnregisterBrokerRequest,
) -> Result<UnregisterBrokerResponse, HandlerError> {
    let id = req.broker_id.0;
    let response = UnregisterBrokerResponse::default().with_throttle_time_ms(0);
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Alter) {
        let denied = crate::acls::cluster_denied(ctx, weir_auth::AclOperation::Alter);
        return Ok(response
            .with_error_code(denied.code())
            .with_error_message(Some(crate::admin::str_bytes(denied.message))));
    }
    Ok(match broker.metadata().unregister_broker(id) {
        Ok(()) => {
            tracing::info!(broker = id, "unregistered a broker");
            response.with_error_code(0).with_error_message(None)
        }
        Err(err) => {
            let error = ApiError::from(err);
            response
                .with_error_code(error.code.code())
                .with_error_message(Some(str_bytes(error.message)))
        }
    })
}
