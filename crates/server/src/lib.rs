//! The network edge: accepts Kafka connections, reads frames, hands decoded
//! requests to the [`Broker`](weir_broker::Broker), and writes responses back
//! in request order while later requests on the same connection are already
//! being read (pipelining).
//!
//! [`serve`] owns the accept loop and graceful shutdown; `connection` owns
//! one client's reader and writer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use weir_broker::Broker;

mod connection;

/// How long the accept loop pauses after a failed accept (for example when
/// the process is out of file descriptors), so it does not spin.
const ACCEPT_RETRY_MS: u64 = 100;

/// Limits of the network edge, each bounding what a client can make the broker hold.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// `socket.request.max.bytes`: the largest frame accepted.
    pub max_request_bytes: usize,
    /// Requests one connection may have in flight before the broker stops reading from it.
    pub max_in_flight_requests: usize,
    /// Connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_requests: 64,
            max_connections: 10_000,
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
        ..limits
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // A slot is taken before accepting, so a full broker leaves further
        // connections in the kernel's accept queue instead of holding them.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                log_join_error(joined);
                continue;
            }
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
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
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let broker = broker.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            connection::serve_connection(stream, peer, broker, &limits, stop).await;
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
