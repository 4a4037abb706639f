//! AddRaftVoter (API key 80) and RemoveRaftVoter (81), KIP-853's voter
//! changes (`weir cluster add-controller` / `remove-controller`, as
//! `kafka-metadata-quorum add-controller` / `remove-controller`), forwarded
//! to the metadata quorum's leader. Served only by a cluster.
//!
//! - AddRaftVoter makes an observer with the controller role a voter once
//!   it has caught up with the metadata log. Its endpoint is the controller
//!   listener it joined with, so the request's `listeners` are not used.
//!   Already a voter: DUPLICATE_VOTER. Not an observer, broker-only, or
//!   another directory: INVALID_REQUEST. Not caught up in time:
//!   REQUEST_TIMED_OUT.
//! - RemoveRaftVoter makes a voter an observer. Not a voter, or another
//!   directory: VOTER_NOT_FOUND. The last voter: INVALID_REQUEST.
//!
//! A nil directory id names whatever directory the quorum knows for the
//! node. A cluster id that is not this cluster's is INCONSISTENT_CLUSTER_ID
//! (none, or an empty one, is not checked).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::admin::str_bytes;
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

/// A voter change needs ALTER on the cluster.
fn may_alter(broker: &Broker, ctx: &RequestContext) -> Result<(), ApiError> {
    match broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Alter) {
        true => Ok(()),
        false => Err(crate::acls::cluster_denied(
            ctx,
            weir_auth::AclOperation::Alter,
        )),
    }
}

pub(crate) async fn add(
    broker: &Broker,
    ctx: &RequestContext,
    req: AddRaftVoterRequest,
) -> Result<AddRaftVoterResponse, HandlerError> {
    let id = req.voter_id;
    let answer = may_alter(broker, ctx)
        .and_then(|()| same_cluster(broker, req.cluster_id.as_ref()))
        .and_then(|()| {
            broker
                .metadata()
                .add_voter(id, named(req.voter_directory_id))
                .map_err(ApiError::from)
        })
        .map(|()| tracing::info!(node = id, "added a voter to the metadata quorum"));
    let (code, message) = answer_of(answer);
    Ok(AddRaftVoterResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code)
        .with_error_message(message))
}

pub(crate) async fn remove(
    broker: &Broker,
    ctx: &RequestContext,
    req: RemoveRaftVoterRequest,
) -> Result<RemoveRaftVoterResponse, HandlerError> {
    let id = req.voter_id;
    let answer = may_alter(broker, ctx)
        .and_then(|()| same_cluster(broker, req.cluster_id.as_ref()))
        .and_then(|()| {
            broker
                .metadata()
                .remove_voter(id, named(req.voter_directory_id))
                .map_err(ApiError::from)
        })
        .map(|()| tracing::info!(node = id, "removed a voter from the metadata quorum"));
    let (code, message) = answer_of(answer);
    Ok(RemoveRaftVoterResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code)
        .with_error_message(message))
}

/// A directory id, unless nil (any).
fn named(directory: Uuid) -> Option<Uuid> {
    (!directory.is_nil()).then_some(directory)
}

/// Kafka's check of the request's cluster id, when it names one.
fn same_cluster(broker: &Broker, asked: Option<&StrBytes>) -> Result<(), ApiError> {
    let ours = broker.metadata().cluster_id();
    match asked {
        Some(asked) if !asked.is_empty() && **asked != *ours => Err(ApiError::new(
            ResponseError::InconsistentClusterId,
            format!("this is cluster {ours}, not {}", &**asked),
        )),
        _ => Ok(()),
    }
}

fn answer_of(answer: Result<(), ApiError>) -> (i16, Option<StrBytes>) {
    match answer {
        Ok(()) => (0, None),
        Err(error) => (error.code(), Some(str_bytes(error.message))),
    }
}
