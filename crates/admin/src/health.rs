//! `GET /health` and `GET /ready`, for orchestrators' liveness and
//! readiness probes.
//!
//! `/health` answers 200 with `{"status":"ok"}` whenever the admin listener
//! answers. `/ready` answers 200 with `{"status":"ready", "checks": {...}}`
//! when the broker can serve clients, and 503 with `"status":"not ready"`
//! and the check that failed otherwise. The checks:
//!
//! - `metadata_loaded` and `log_recovered`: the listener serves only once
//!   the metadata is loaded and the commit log recovered, so both are true
//!   in every answer; before then a probe's connection waits in the listen
//!   backlog unanswered, which a probe counts as not ready;
//! - `caught_up`: on a cluster node, that the quorum counts it active
//!   (registered, caught up with the metadata and heartbeating; KRaft's
//!   unfenced). It goes false when the node is fenced, for example cut off
//!   from the quorum. Always true on a single node.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::AdminState;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The answer of `GET /health`.
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The answer of `GET /ready`.
#[derive(serde::Serialize)]
struct Ready {
    status: &'static str,
    checks: Checks,
}

#[derive(serde::Serialize)]
struct Checks {
    metadata_loaded: bool,
    log_recovered: bool,
    caught_up: bool,
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<Ready>) {
    let caught_up = state
        .unfenced
        .as_ref()
        .is_none_or(|active| *active.borrow());
    let checks = Checks {
        metadata_loaded: true,
        log_recovered: true,
        caught_up,
    };
    let (code, status) = if caught_up {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (code, Json(Ready { status, checks }))
}
