//! The delayed records a broker holds back (`weir delayed`, and the
//! pending counts of `weir topic describe`), on `weir_broker::delay`'s
//! tools:
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/topics/{topic}/delayed?partition=&limit=&bytes=` | the topic's pending count per partition, the next due time, and the earliest `limit` (default 0, at most 1,000) pending records, each key, value and header value cut to `bytes` (default 1,024, at most 65,536), and no more records once they hold 4 MiB or 16 MiB of stored batches were read for them (`records_cut`) |
//! | `DELETE /v1/topics/{topic}/partitions/{partition}/delayed/{offset}` | cancels that pending record; answers once the cancel is committed (leader only) |
//!
//! Bytes are spelled as `weir consume --json` spells them: a string when
//! they are UTF-8, else `{"base64": "..."}`, and `null` for a null key or
//! value.

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_broker::delay::{self, DelayQueryError, LIST_MAX, ListedRecord, TopicDelays};

use crate::{AdminError, AdminState};

/// Bytes of each key, value and header value shown when not asked.
const SHOWN_BYTES_DEFAULT: usize = 1_024;
/// The most bytes of each a client may ask for.
const SHOWN_BYTES_MAX: usize = 64 * 1024;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/topics/{topic}/delayed", get(list))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/delayed/{offset}",
            delete(cancel),
        )
}

/// `GET /v1/topics/{topic}/delayed`'s query.
#[derive(Debug, Deserialize)]
struct ListQuery {
    partition: Option<i32>,
    #[serde(default)]
    limit: usize,
    bytes: Option<usize>,
}

// The extractors' refusals are taken as results, so that they answer JSON.
async fn list(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let (Path(topic), Query(query)) = (topic?, query?);
    if query.limit > LIST_MAX {
        return Err(AdminError::bad_request(format!(
            "limit is {}, at most {LIST_MAX}",
            query.limit
        )));
    }
    let bytes = query.bytes.unwrap_or(SHOWN_BYTES_DEFAULT);
    if bytes > SHOWN_BYTES_MAX {
        return Err(AdminError::bad_request(format!(
            "bytes is {bytes}, at most {SHOWN_BYTES_MAX}"
        )));
    }
    let listed = delay::list(&state.broker, &topic, query.partition, query.limit, bytes)
        .await
        .map_err(refused)?;
    let mut answer = delays_json(&topic, &listed.delays);
    answer["records"] = listed.records.iter().map(record_json).collect();
    answer["records_exact"] = json!(listed.exact);
    answer["records_cut"] = json!(listed.cut);
    Ok(Json(answer))
}

async fn cancel(
    State(state): State<AdminState>,
    path: Result<Path<(String, i32, i64)>, PathRejection>,
) -> Result<Json<Value>, AdminError> {
    let Path((topic, partition, offset)) = path?;
    let cancelled = delay::cancel(&state.broker, &topic, partition, offset)
        .await
        .map_err(refused)?;
    tracing::info!(
        topic,
        partition,
        offset,
        marker = cancelled.marker_offset,
        "a delayed record was cancelled through the admin API"
    );
    Ok(Json(json!({
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "cancelled": true,
        "marker_offset": cancelled.marker_offset,
    })))
}

/// The HTTP answer to a refused question (the console's pages give the same).
pub(crate) fn refused(err: DelayQueryError) -> AdminError {
    let status = match &err {
        DelayQueryError::UnknownTopic(_)
        | DelayQueryError::UnknownPartition { .. }
        | DelayQueryError::NotPending(_) => StatusCode::NOT_FOUND,
        DelayQueryError::View { .. } => StatusCode::BAD_REQUEST,
        DelayQueryError::NoLongerPending(_) => StatusCode::CONFLICT,
        // RFC 9110's "sent to a server that cannot answer for it".
        DelayQueryError::NotLeader { .. } => StatusCode::MISDIRECTED_REQUEST,
        DelayQueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    AdminError::new(status, err.to_string())
}

fn delays_json(topic: &str, delays: &TopicDelays) -> Value {
    json!({
        "topic": topic,
        "pending": delays.pending(),
        "next_due_ms": delays.next_due_ms,
        "exact": delays.exact,
        "partitions": delays.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "pending": p.pending,
        })).collect::<Vec<_>>(),
    })
}

fn record_json(listed: &ListedRecord) -> Value {
    let mut out = json!({
        "partition": listed.partition,
        "offset": listed.offset,
        "due_ms": listed.due_ms,
    });
    match &listed.record {
        Ok(record) => {
            out["timestamp_ms"] = json!(record.timestamp_ms);
            out["key"] = opt_bytes(record.key.as_deref());
            out["value"] = opt_bytes(record.value.as_deref());
            out["value_bytes"] = json!(record.value_len);
            out["headers"] = record
                .headers
                .iter()
                .map(|(k, v)| json!({ "key": bytes(k), "value": opt_bytes(v.as_deref()) }))
                .collect();
            out["error"] = Value::Null;
        }
        Err(why) => out["error"] = json!(why),
    }
    out
}

fn opt_bytes(value: Option<&[u8]>) -> Value {
    value.map_or(Value::Null, bytes)
}

/// A string when UTF-8, else `{"base64": ...}`.
fn bytes(value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(value) }),
    }
}
