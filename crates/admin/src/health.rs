//! `GET /health`: 200 with `{"status":"ok"}` whenever the admin listener
//! answers, which it does from when the broker serves Kafka clients until
//! it stops. It says nothing of partitions, replicas or the metadata
//! quorum.

use axum::routing::get;
use axum::{Json, Router};

use crate::AdminState;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/health", get(health))
}

/// The answer of `GET /health`.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}
