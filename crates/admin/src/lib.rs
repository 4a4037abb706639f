//! weir-admin: the broker's HTTP admin API, served by axum on the admin
//! listener (`weir serve --admin-listen`, default `127.0.0.1:9644`) on the
//! broker's tokio runtime. It owns the routes, their JSON answers, the error
//! answer every route shares ([`AdminError`]: `{"error": "<message>"}` with
//! an HTTP status), and the bounds on what a client controls (the counts
//! are across all of the listener's connections):
//!
//! - at most [`CONNECTIONS_MAX`] connections open at once; further ones wait
//!   in the listen backlog, not accepted, until one closes;
//! - a connection is closed once it has sent nothing for [`IDLE_TIMEOUT`]
//!   while the server waits to read from it: half a request, none, or an
//!   idle keep-alive connection;
//! - a request body of at most [`BODY_BYTES_MAX`];
//! - an answer within [`REQUEST_TIMEOUT`];
//! - at most [`IN_FLIGHT_MAX`] requests handled at once.
//!
//! | route         | answer                                                 |
//! |---------------|--------------------------------------------------------|
//! | `GET /health` | 200 `{"status":"ok"}`: the process is up and serving    |
//! | `GET /metrics` | Prometheus' text format: what weir-metrics recorded, and gauges of partitions and group lag read for the answer (`metrics`) |
//! | `GET /ready`  | 200 when the broker can serve clients, 503 with the failed check otherwise (`health`) |
//! | `/v1/topics/{topic}/delayed...` | pending delayed records: counts, list, cancel (`delayed`) |
//! | `GET /v1/share-groups/{group}` | a share group's records in flight per partition (`share`) |
//! | `GET /v1/brokers` | the brokers (id, host, port, rack, this node or not, fenced or active) and a cluster's metadata quorum (`brokers`) |
//! | `GET /v1/topics`, `GET /v1/topics/{topic}` | the topics with their size and record estimate; one topic's partitions (leader, replicas, ISR, offsets, size) and configs (`topics`) |
//! | `GET /v1/topics/{topic}/messages` | records by offset, timestamp or key, rendered as text, JSON or hex, bounded (`messages`) |
//! | `GET /v1/groups`, `GET /v1/groups/{group}` | classic, consumer and share groups with member counts and lag; one group's members and per-partition offsets and lag (`groups`) |
//! | `GET /v1/transactions` | the transactional ids coordinated here, with state, producer, timeout and partitions (`transactions`) |
//! | `GET /v1/dead-letter-topics` | the share groups' dead-letter topics, their record estimates and the groups feeding them (`dead_letters`) |
//! | `POST /v1/topics`, `DELETE /v1/topics/{topic}` | create a topic (or only validate it), delete one (`topic_admin`) |
//! | `PATCH /v1/topics/{topic}/configs` | set and delete topic configs, incrementally (`topic_admin`) |
//! | `POST /v1/topics/{topic}/partitions` | grow a topic to a partition count (`topic_admin`) |
//! | `POST /v1/groups/{group}/offsets/reset` | move an empty consumer group's offsets on a topic, or plan it (`group_offsets`) |
//! | `POST /v1/dead-letter-topics/{topic}/redrive` | move a bounded part of a dead-letter topic's dead letters back to a topic, as `weir dlq redrive` (`redrive`) |
//! | `GET /login`, `POST /login`, `POST /logout` | with `admin.auth.token.file`: a browser's login form, trading a token for the cookie [`TOKEN_COOKIE`], and its logout (`login`) |
//! | `GET /`, `/console/...`, `/assets/...` | the web console: server-rendered pages over the views above, with embedded htmx and uPlot (`console`) |
//!
//! Any other path answers 404, and another method on a known path 405, both
//! with an error body.
//!
//! [`serve`] puts every route behind the guard of [`AdminSecurity`]
//! (`auth`): unless configured the listener is plain HTTP open to all;
//! with `admin.ssl.*` it is HTTPS (`connection`), and with
//! `admin.auth.token.file` (bearer tokens, `tokens`; a browser logs in at
//! `/login` for a cookie, `login`) or client certificates every route but
//! `GET /health` and `GET /ready` needs authentication. Writes from another
//! site's page (`Origin` unlike `Host`) answer 403, and every write is
//! logged with its principal. A handler reads who made its request from
//! the request extension [`AdminPrincipal`].
//!
//! Each group of routes is a module with a `routes()` function giving a
//! `Router<AdminState>`, merged by [`router`] in one line. Handlers read the
//! broker through [`AdminState`]; the crate sits above `weir-broker` and
//! below `weir-serve`, which binds the listener and stops it with the broker.

mod auth;
mod brokers;
mod connection;
mod console;
mod dead_letters;
mod delayed;
mod error;
mod group_offsets;
mod groups;
mod health;
mod kafka;
mod login;
mod messages;
mod metrics;
mod redrive;
mod share;
mod tokens;
mod topic_admin;
mod topics;
mod transactions;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use auth::{AdminPrincipal, AdminSecurity, AdminTls, TOKEN_COOKIE};
pub use connection::AdminPeer;
pub use error::AdminError;
pub use login::LOGIN_BODY_BYTES_MAX;
pub use tokens::{
    TOKEN_BYTES_MAX, TOKEN_BYTES_MIN, TOKEN_FILE_BYTES_MAX, TOKENS_MAX, TokenFile, TokenFileError,
};

/// Largest request body a route reads, in bytes; a larger one answers 413.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest a request is handled (including its wait for one of the
/// [`IN_FLIGHT_MAX`] slots) before it answers 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most requests handled at once, across all connections; more wait.
pub const IN_FLIGHT_MAX: usize = 32;
/// Most admin connections open at once. With all open, [`serve`] accepts
/// no more (they wait in the kernel's listen backlog) until one closes;
/// Kafka clients, on their own listener, are not held up.
pub const CONNECTIONS_MAX: usize = 64;
/// Longest a connection may send nothing while the server waits to read
/// from it (for a request, the rest of one, or to notice the client gone)
/// before it is closed. Counted from the last byte received, or the accept;
/// it frees the slot (of [`CONNECTIONS_MAX`]) held by a client that sends
/// half a request, nothing, or leaves a keep-alive connection idle.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest [`serve`] waits, once told to stop, for open connections to
/// finish their requests; those still open then are left to the runtime's
/// end.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared state of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    /// The broker the routes serve views of.
    pub broker: Arc<weir_broker::Broker>,
    /// On a cluster node, whether the quorum counts it active (registered,
    /// caught up with the metadata and heartbeating: unfenced); `None` on a
    /// single node.
    pub unfenced: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Every route of the admin API, with the error fallbacks and the bounds.
pub fn router(state: AdminState) -> Router {
    let routes = Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(delayed::routes())
        .merge(share::routes())
        .merge(brokers::routes())
        .merge(topics::routes())
        .merge(messages::routes())
        .merge(groups::routes())
        .merge(transactions::routes())
        .merge(dead_letters::routes())
        .merge(topic_admin::routes())
        .merge(group_offsets::routes())
        .merge(redrive::routes())
        .merge(console::routes());
    bounded(routes).with_state(state)
}

/// `routes` with JSON answers for an unknown path or method, and the
/// limits on what a client controls. The last layer added runs first: the
/// time limit covers the wait for a slot.
fn bounded<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            IN_FLIGHT_MAX,
        ))
        .layer(middleware::from_fn(time_limit))
}

async fn no_route(method: Method, uri: Uri) -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> AdminError {
    AdminError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// Answers 503 for a request not answered within [`REQUEST_TIMEOUT`].
async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not answered within {REQUEST_TIMEOUT:?}"),
        )
        .into_response(),
    }
}

/// Every route of [`router`], the login pages when tokens are configured,
/// all behind the guard of `security` (authentication, the cross-origin
/// check of writes, the write log). What [`serve`] serves.
pub fn secured(state: AdminState, security: &AdminSecurity) -> Router {
    auth::secure(router(state), security)
}

/// Serve [`secured`] on `listener` (over TLS when `security` says so),
/// with at most [`CONNECTIONS_MAX`] connections open and each closed
/// after [`IDLE_TIMEOUT`] of silence, until `shutdown` resolves; then stop
/// accepting and let open connections finish their requests for at most
/// [`SHUTDOWN_DRAIN_TIMEOUT`]. Until then the TLS files and the token file
/// are read again whenever they change.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    security: AdminSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    // Aborted when dropped, as this function returns.
    let mut watchers = tokio::task::JoinSet::new();
    if let Some(tls) = &security.tls {
        watchers.spawn(weir_server::watch_certificates(
            tls.acceptor.clone(),
            Arc::from("admin"),
        ));
    }
    if let Some(tokens) = &security.tokens {
        watchers.spawn(tokens.clone().keep_current());
    }
    let app = secured(state, &security);
    let tls = security.tls.map(|tls| tls.acceptor);
    let listener = connection::AdminListener::new(listener, CONNECTIONS_MAX, tls);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<AdminPeer>(),
    )
    .with_graceful_shutdown(signal)
    .into_future();
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return served,
        // Sent, or dropped with the server: either way it is stopping.
        _ = stopping => {}
    }
    match tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, server).await {
        Ok(served) => served,
        Err(_) => {
            tracing::warn!(
                "the admin listener's connections did not finish within \
                 {SHUTDOWN_DRAIN_TIMEOUT:?} of the stop; leaving them"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    /// A broker over a fresh data folder, and the folder.
    pub(crate) fn state() -> (AdminState, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(weir_storage::SystemClock);
        let (log, _) = weir_storage::CommitLog::open(dir.path(), Default::default(), clock.clone())
            .expect("open the log");
        let metadata =
            Arc::new(weir_metadata::LocalMetadataStore::open(dir.path()).expect("metadata"));
        let broker =
            weir_broker::Broker::new(Default::default(), log, metadata, clock).expect("broker");
        (
            AdminState {
                broker: Arc::new(broker),
                unfenced: None,
            },
            dir,
        )
    }

    async fn call(app: Router, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), BODY_BYTES_MAX)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes).expect("a JSON body");
        (status, json)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn health_answers_ok() {
        let (state, _dir) = state();
        let (status, body) = call(router(state), Method::GET, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"status": "ok"}));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ready_follows_a_cluster_nodes_standing_with_the_quorum() {
        let (mut state, _dir) = state();
        let (status, body) = call(router(state.clone()), Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::OK, "a single node serving is ready");
        assert_eq!(body["status"], "ready");
        let (active, unfenced) = tokio::sync::watch::channel(true);
        state.unfenced = Some(unfenced);
        let app = router(state);
        let (status, _) = call(app.clone(), Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::OK);
        active.send_replace(false);
        let (status, body) = call(app.clone(), Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a fenced node");
        assert_eq!(
            body,
            serde_json::json!({"status": "not ready", "checks": {
                "metadata_loaded": true, "log_recovered": true, "caught_up": false}})
        );
        active.send_replace(true);
        let (status, _) = call(app, Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unknown_path_or_method_answers_a_json_error() {
        let (state, _dir) = state();
        let app = router(state);
        let (status, body) = call(app.clone(), Method::GET, "/no/such/route").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            serde_json::json!({"error": "no route for GET /no/such/route"})
        );
        let (status, body) = call(app, Method::POST, "/health").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            body,
            serde_json::json!({"error": "/health does not take POST"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_time_limit_answers_503() {
        let slow = Router::new().route("/slow", get(std::future::pending::<()>));
        let (status, body) = call(bounded(slow), Method::GET, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            serde_json::json!({"error": format!("not answered within {REQUEST_TIMEOUT:?}")})
        );
    }
}
