//! The network edge: accepts Kafka connections, reads frames, hands decoded
//! requests to the [`Broker`](weir_broker::Broker), and writes responses back
//! in request order while later requests on the same connection are already
//! being read (pipelining).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use weir_broker::Broker;

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
pub async fn serve(
    _listener: TcpListener,
    _broker: Arc<Broker>,
    _limits: ServerLimits,
    _shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    todo!()
}
