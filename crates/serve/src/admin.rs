//! The admin listener's part of `weir serve` (`--admin-listen`): bound at
//! start-up with the other listeners, before the data folder is locked, so
//! a taken port fails the start before anything is opened; served
//! (`weir_admin::serve`, on the broker's runtime) from when the broker
//! serves Kafka clients; stopped once the Kafka listener has closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_broker::Broker;

use crate::ServeError;

/// The admin listener, bound and not yet served.
pub(crate) struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// Bind `listen`.
    pub(crate) async fn bind(listen: &str) -> Result<Self, ServeError> {
        let bind_error = |error| ServeError::AdminListen {
            listen: listen.to_owned(),
            error,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(ServeError::BoundAddress)?;
        Ok(Self { listener, addr })
    }

    /// The bound address (with the port picked, for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve the admin API over `broker` until [`Serving::stop`];
    /// `unfenced` is a cluster node's standing with the quorum.
    pub(crate) fn serve(
        self,
        broker: Arc<Broker>,
        unfenced: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Serving {
        let (stop, stopped) = oneshot::channel::<()>();
        let state = weir_admin::AdminState { broker, unfenced };
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // Sent by `stop`, or dropped with it: either way, stop.
                let _ = stopped.await;
            };
            if let Err(e) = weir_admin::serve(self.listener, state, shutdown).await {
                tracing::error!(error = %e, "the admin listener stopped");
            }
        });
        Serving { stop, task }
    }
}

/// The admin API being served.
pub(crate) struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Stop accepting and wait for the server to end: at most
    /// `weir_admin::SHUTDOWN_DRAIN_TIMEOUT` for open connections.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the admin listener's task failed");
        }
    }
}
