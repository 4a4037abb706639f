//! The network edge: accepts Kafka connections, reads frames, hands decoded
//! requests to the [`Broker`](weir_broker::Broker), and writes responses back
//! in request order while later requests on the same connection are already
//! being read (pipelining).
//!
//! [`serve`] owns the accept loop and graceful shutdown; `connection` owns
//! one client's reader and writer; `budget` bounds the response bytes held
//! across all connections; `idle` closes connections that stay idle.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use weir_broker::Broker;

mod budget;
mod connection;
mod idle;

/// How long the accept loop pauses after a failed accept (for example when
/// the process is out of file descriptors), so it does not spin.
const ACCEPT_RETRY_MS: u64 = 100;

/// How often at most the accept loop logs that it closed a connection
/// because `max.connections` are open, so a flood does not flood the log.
const REFUSED_LOG_INTERVAL_MS: u64 = 10_000;

/// Limits of the network edge, each bounding what a client can make the broker hold.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// `socket.request.max.bytes`: the largest frame accepted.
    pub max_request_bytes: usize,
    /// Requests one connection may have in flight before the broker stops reading from it.
    pub max_in_flight_requests: usize,
    /// `max.connections`: connections served at once; a connection accepted
    /// past it is closed at once.
    pub max_connections: usize,
    /// `connections.max.idle.ms`: a connection that reads and writes nothing
    /// for this long, while no request of it is being handled, is closed.
    pub connections_max_idle_ms: u64,
    /// `queued.max.response.bytes`: response bytes being built or waiting to
    /// be written, across all connections. A request whose response does not
    /// fit waits, and its connection is not read meanwhile.
    pub queued_max_response_bytes: usize,
    /// The share of `queued_max_response_bytes` one connection may hold, so
    /// a client that pipelines requests and never reads the answers cannot
    /// take the whole budget. At least `fetch.max.bytes`, so that one
    /// largest fetch fits.
    pub connection_response_bytes_max: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_requests: 64,
            max_connections: 10_000,
            connections_max_idle_ms: 600_000,
            queued_max_response_bytes: 1024 * 1024 * 1024,
            connection_response_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// Serve Kafka clients on `listener` until `shutdown` completes, then stop
/// accepting, let in-flight requests finish, and return.
///
/// On return every connection is closed and every task this function started
/// has ended. An error is returned only if the listener itself cannot be used.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = Arc::new(ServerLimits {
        max_in_flight_requests: limits.max_in_flight_requests.max(1),
        max_connections: limits.max_connections.max(1),
        connections_max_idle_ms: limits.connections_max_idle_ms.max(1),
        queued_max_response_bytes: limits.queued_max_response_bytes.max(1),
        connection_response_bytes_max: limits.connection_response_bytes_max.max(1),
        ..limits
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let response_bytes = Arc::new(Semaphore::new(
        limits.queued_max_response_bytes.min(Semaphore::MAX_PERMITS),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refused_logged: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                log_join_error(joined);
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_transient(&err) => {
                tracing::warn!(error = %err, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "listener failed");
                finish(connections, &stop_tx).await;
                return Err(err);
            }
        };
        // Past max.connections the connection is closed at once, so the
        // client learns it and tries again, instead of waiting unanswered.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let now = tokio::time::Instant::now();
            if refused_logged
                .is_none_or(|at| now >= at + Duration::from_millis(REFUSED_LOG_INTERVAL_MS))
            {
                refused_logged = Some(now);
                tracing::warn!(%peer, max_connections = limits.max_connections,
                    "closing new connection: max.connections are open (set max.connections to change it)");
            }
            drop(stream);
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let broker = broker.clone();
        let limits = limits.clone();
        let response_bytes = response_bytes.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            connection::serve_connection(stream, peer, broker, &limits, response_bytes, stop).await;
            drop(permit);
        });
    }

    drop(listener);
    tracing::debug!(
        connections = connections.len(),
        "stopped accepting; draining connections"
    );
    finish(connections, &stop_tx).await;
    Ok(())
}

/// Tell every connection to stop reading, then wait until each has written
/// the responses of the requests it already read and closed.
async fn finish(mut connections: JoinSet<()>, stop: &watch::Sender<bool>) {
    // Receivers are held by the connections, so a send error only means none is left.
    let _ = stop.send(true);
    while let Some(joined) = connections.join_next().await {
        log_join_error(joined);
    }
}

fn log_join_error(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined {
        tracing::error!(error = %err, "connection task failed");
    }
}

/// Accept errors that concern one connection or a passing resource shortage,
/// after which the listener is still usable.
fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) || matches!(
        err.raw_os_error(),
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory for now.
        Some(24 | 23 | 105 | 12)
    )
}
