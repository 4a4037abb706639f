//! What a share group (KIP-932) has in flight on this broker, for `weir
//! group describe` and operators:
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/share-groups/{group}` | per share-partition this broker leads: topic, partition, start and end offsets, records acquired, redeliverable, backing off and dead-lettering, and how many have each delivery count |
//!
//! 404 when share groups are off or no share group has this id.

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::{AdminError, AdminState};

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/v1/share-groups/{group}", get(describe))
}

async fn describe(
    State(state): State<AdminState>,
    group: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, AdminError> {
    let Path(group) = group?;
    let Some(views) = state.broker.share_group_in_flight(&group) else {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("no share group {group} on this broker (or group.share.enable is off)"),
        ));
    };
    let partitions: Vec<Value> = views
        .iter()
        .map(|v| {
            let f = &v.in_flight;
            let counts: serde_json::Map<String, Value> = f
                .delivery_counts
                .iter()
                .map(|(count, n)| (count.to_string(), json!(n)))
                .collect();
            json!({
                "topic": v.topic,
                "topic_id": v.topic_id.to_string(),
                "partition": v.partition,
                "start_offset": f.start_offset,
                "end_offset": f.end_offset,
                "acquired": f.acquired,
                "redeliverable": f.redeliverable,
                "backing_off": f.backing_off,
                "dead_lettering": f.dead_lettering,
                "delivery_counts": counts,
            })
        })
        .collect();
    Ok(Json(json!({ "group": group, "partitions": partitions })))
}
