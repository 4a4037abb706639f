//! The admin listener's part of `weir serve` (`--admin-listen`): bound at
//! start-up with the other listeners, before the data folder is locked, so
//! a taken port fails the start before anything is opened; served
//! (`weir_admin::serve`, on the broker's runtime) from when the broker
//! serves Kafka clients; stopped once the Kafka listener has closed.
//!
//! Its security is built at bind time too, so a certificate or a token
//! file that cannot be used fails the start: TLS from `admin.ssl.*` (the
//! Kafka listeners' `TlsAcceptor`), bearer tokens from
//! `admin.auth.token.file`. A listener on a non-loopback address with
//! neither tokens nor client certificates is served, as before, but the
//! start logs a warning: anyone who reaches the address may use it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_admin::{AdminSecurity, AdminTls, TokenFile};
use weir_broker::Broker;
use weir_server::{TlsAcceptor, TlsSettings};

use crate::ServeError;

/// The admin listener, bound and not yet served.
pub(crate) struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    security: AdminSecurity,
}

impl Bound {
    /// Bind `listen`, with TLS from `tls` (`admin.ssl.*`) and the tokens
    /// of `token_file` (`admin.auth.token.file`) when given.
    pub(crate) async fn bind(
        listen: &str,
        tls: Option<&TlsSettings>,
        token_file: Option<&Path>,
    ) -> Result<Self, ServeError> {
        let bind_error = |error| ServeError::AdminListen {
            listen: listen.to_owned(),
            error,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(ServeError::BoundAddress)?;
        let tls = match tls {
            Some(settings) => Some(AdminTls {
                client_auth: settings.client_auth,
                acceptor: Arc::new(
                    TlsAcceptor::load(settings.clone()).map_err(ServeError::AdminTls)?,
                ),
            }),
            None => None,
        };
        let tokens = match token_file {
            Some(path) => Some(Arc::new(
                TokenFile::load(path).map_err(ServeError::AdminTokens)?,
            )),
            None => None,
        };
        let security = AdminSecurity { tls, tokens };
        if !addr.ip().is_loopback() && !security.authenticates() {
            tracing::warn!(admin_listen = %addr,
                "the admin API listens on a non-loopback address without authentication: \
                 anyone who reaches it may read and change the broker; set \
                 admin.auth.token.file, or admin.ssl.client.auth with admin.ssl.* (see \
                 docs/operations.md), or bind --admin-listen to 127.0.0.1");
        }
        tracing::debug!(admin_listen = %addr, tls = security.tls.is_some(),
            tokens = security.tokens.as_ref().map_or(0, |t| t.len()),
            "admin listener bound");
        Ok(Self {
            listener,
            addr,
            security,
        })
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
            if let Err(e) = weir_admin::serve(self.listener, state, self.security, shutdown).await {
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
