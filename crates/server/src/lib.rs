//! The network edge: accepts Kafka connections, reads frames, hands decoded
//! requests to the [`Broker`](weir_broker::Broker), and writes responses back
//! in request order while later requests on the same connection are already
//! being read (pipelining).
//!
//! [`serve`] owns the accept loops of the listeners and graceful shutdown;
//! `admission` decides which new connections are served
//! (`max.connections.per.ip`, connection creation rates); `connection`
//! owns one client's reader and writer; `tls` the TLS of an
//! `SSL` listener and the principal a client certificate names; `sasl` the
//! SASL exchange of each connection on a SASL listener, and `jwks` the
//! signing keys its OAUTHBEARER checks tokens with; `budget`
//! bounds the response bytes held across all connections; `idle` closes
//! connections that stay idle.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use weir_auth::KafkaPrincipal;
use weir_broker::{Broker, Caller};

mod admission;
mod budget;
mod connection;
mod idle;
pub mod jwks;
mod metrics;
pub mod sasl;
pub mod tls;

pub use jwks::{JwksError, JwksSource, OAuthBearer, OAuthBearerSettings};
pub use sasl::SaslSettings;
pub use tls::{ClientAuth, TlsAcceptor, TlsError, TlsSettings};

use connection::Halves;

/// How long the accept loop pauses after a failed accept (for example when
/// the process is out of file descriptors), so it does not spin.
const ACCEPT_RETRY_MS: u64 = 100;

/// The longest a client may take over its TLS handshake; the connection
/// holds a `max.connections` slot meanwhile.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// `max.connections.per.ip`: connections one client address may have
    /// open; one past it is closed at once.
    pub max_connections_per_ip: usize,
    /// `max.connections.per.ip.overrides`: other limits for some addresses.
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    /// `max.connection.creation.rate`: connections accepted per second, all
    /// listeners together; `None` for no limit.
    pub max_connection_creation_rate: Option<f64>,
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
            max_connections_per_ip: usize::MAX,
            max_connections_per_ip_overrides: HashMap::new(),
            max_connection_creation_rate: None,
        }
    }
}

/// One Kafka listener: a bound socket, its name (`PLAINTEXT`, `SSL`,
/// `CLIENT`, ...: what requests tell the broker they came in on), and its
/// TLS when its security protocol is `SSL`.
pub struct Listener {
    /// The listener's name, as in `listeners`.
    pub name: Arc<str>,
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS, for an `SSL` or `SASL_SSL` listener.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// SASL, for a `SASL_PLAINTEXT` or `SASL_SSL` listener.
    pub sasl: Option<Arc<SaslSettings>>,
}

impl Listener {
    /// A plaintext listener named `PLAINTEXT`, as `--listen` binds.
    pub fn plaintext(socket: TcpListener) -> Self {
        Self {
            name: Arc::from(weir_broker::DEFAULT_LISTENER),
            socket,
            tls: None,
            sasl: None,
        }
    }
}

/// A connection one of the accept loops took, or the error that ended it.
type Accepted = std::io::Result<(TcpStream, SocketAddr, usize)>;

/// Serve Kafka clients on `listeners` until `shutdown` completes, then stop
/// accepting, let in-flight requests finish, and return.
///
/// `max.connections` and `queued.max.response.bytes` count the connections
/// of every listener together. On return every connection is closed and
/// every task this function started has ended. An error is returned only
/// if a listener itself cannot be used.
pub async fn serve(
    listeners: Vec<Listener>,
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
    let mut admission = admission::Admission::new(&limits, broker.quota_windows());
    // Until when accepting stops, for max.connection.creation.rate.
    let mut paused_until: Option<tokio::time::Instant> = None;
    // Each listener accepts on its own task; what they take is served here.
    let (accepted_tx, mut accepted_rx) = mpsc::channel::<Accepted>(1);
    let mut background = JoinSet::new();
    // What each listener's connections need, by the index its accept loop sends.
    let mut sides = Vec::with_capacity(listeners.len());
    let failures = Arc::new(sasl::FailedAuthentications::default());
    for (index, listener) in listeners.into_iter().enumerate() {
        if let Some(acceptor) = &listener.tls {
            background.spawn(watch_certificates(acceptor.clone(), listener.name.clone()));
        }
        if let Some(bearer) = listener.sasl.as_ref().and_then(|s| s.oauthbearer.clone()) {
            background.spawn(bearer.keep_current());
        }
        background.spawn(accept_loop(listener.socket, index, accepted_tx.clone()));
        sides.push((listener.name, listener.tls, listener.sasl));
    }
    drop(accepted_tx);
    tokio::pin!(shutdown);

    let result = loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                log_join_error(joined);
                continue;
            }
            () = sleep_until(paused_until), if paused_until.is_some() => {
                paused_until = None;
                continue;
            }
            accepted = accepted_rx.recv(), if paused_until.is_none() => accepted,
        };
        let (stream, peer, index) = match accepted {
            Some(Ok(accepted)) => accepted,
            Some(Err(err)) => break Err(err),
            None => break Err(std::io::Error::other("every listener stopped")),
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
        let now = tokio::time::Instant::now();
        let pause = admission.accepted(now.into_std());
        if !pause.is_zero() {
            tracing::debug!(
                pause_ms = pause.as_millis() as u64,
                "max.connection.creation.rate reached: not accepting for a while"
            );
            paused_until = Some(now + pause);
        }
        let ip_slot = match admission.admit(peer.ip(), &broker, now.into_std()) {
            admission::Admit::Serve(slot) => slot,
            admission::Admit::Refuse { open } => {
                if refused_logged
                    .is_none_or(|at| now >= at + Duration::from_millis(REFUSED_LOG_INTERVAL_MS))
                {
                    refused_logged = Some(now);
                    tracing::warn!(%peer, open,
                        "closing new connection: its address has max.connections.per.ip open \
                         (set max.connections.per.ip or max.connections.per.ip.overrides to change it)");
                }
                drop(stream);
                continue;
            }
            admission::Admit::CloseAfter(wait, slot) => {
                tracing::debug!(%peer, wait_ms = wait.as_millis() as u64,
                    "closing new connection after a delay: its address is over its \
                     connection_creation_rate quota");
                connections.spawn(async move {
                    tokio::time::sleep(wait).await;
                    drop((stream, slot, permit));
                });
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let Some((name, tls, sasl)) = sides.get(index) else {
            continue;
        };
        let caller = Caller {
            peer,
            listener: name.clone(),
            principal: KafkaPrincipal::anonymous(),
        };
        let authenticator = sasl.as_ref().map(|settings| {
            sasl::Authenticator::new(
                settings.clone(),
                failures.clone(),
                broker.metadata().clone(),
                peer.ip(),
            )
        });
        let tls = tls.clone();
        let broker = broker.clone();
        let limits = limits.clone();
        let response_bytes = response_bytes.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let served = Served {
                broker,
                limits,
                response_bytes,
                stop,
            };
            let caller = (caller, authenticator);
            match tls {
                None => {
                    let (read, write) = stream.into_split();
                    served.serve(Halves { read, write }, caller).await;
                }
                Some(tls) => served.serve_tls(stream, caller, &tls).await,
            }
            drop((permit, ip_slot));
        });
    };

    background.shutdown().await;
    tracing::debug!(
        connections = connections.len(),
        "stopped accepting; draining connections"
    );
    finish(connections, &stop_tx).await;
    result
}

/// What a connection task needs to serve its client.
struct Served {
    broker: Arc<Broker>,
    limits: Arc<ServerLimits>,
    response_bytes: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl Served {
    async fn serve<R, W>(self, halves: Halves<R, W>, caller: (Caller, Option<sasl::Authenticator>))
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        connection::serve_connection(
            halves,
            caller,
            self.broker,
            &self.limits,
            self.response_bytes,
            self.stop,
        )
        .await;
    }

    /// Complete the TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`], take
    /// the principal the client certificate names, and serve the session.
    /// On a SASL_SSL listener the principal is the SASL exchange's, not
    /// the certificate's.
    async fn serve_tls(
        self,
        stream: TcpStream,
        (mut caller, sasl): (Caller, Option<sasl::Authenticator>),
        tls: &TlsAcceptor,
    ) {
        let peer = caller.peer;
        let Some(config) = tls.config() else {
            tracing::error!(%peer, "closing connection: the TLS configuration is unavailable");
            return;
        };
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let session = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(session)) => session,
            Ok(Err(err)) => {
                // An untrusted or missing client certificate ends here: an
                // operator needs to see who was refused and why.
                tracing::warn!(%peer, listener = %caller.listener, error = %err,
                    "closing connection: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, listener = %caller.listener,
                    timeout_ms = TLS_HANDSHAKE_TIMEOUT.as_millis() as u64,
                    "closing connection: no TLS handshake in time");
                return;
            }
        };
        match tls.principal(session.get_ref().1.peer_certificates()) {
            Ok(principal) => caller.principal = principal,
            Err(why) => {
                tracing::warn!(%peer, listener = %caller.listener, reason = %why,
                    "closing connection: the client certificate names no principal \
                     (ssl.principal.mapping.rules)");
                return;
            }
        }
        tracing::debug!(%peer, principal = %caller.principal, "TLS session established");
        let (read, write) = tokio::io::split(session);
        self.serve(Halves { read, write }, (caller, sasl)).await;
    }
}

/// Wait until `at`, or forever when there is no such time.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Accept connections on `socket` and hand each over, until the receiver
/// is gone or the socket fails for good (the error is handed over).
async fn accept_loop(socket: TcpListener, index: usize, accepted: mpsc::Sender<Accepted>) {
    loop {
        let next = match socket.accept().await {
            Ok((stream, peer)) => Ok((stream, peer, index)),
            Err(err) if is_transient(&err) => {
                tracing::warn!(error = %err, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "listener failed");
                Err(err)
            }
        };
        let failed = next.is_err();
        if accepted.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// Rebuild a TLS listener's configuration whenever its certificate files
/// change, so a renewed certificate is served without a restart. Runs
/// until dropped; the admin listener (`weir-admin`) runs it too.
pub async fn watch_certificates(acceptor: Arc<TlsAcceptor>, listener: Arc<str>) {
    let mut ticks = tokio::time::interval(tls::RELOAD_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let checking = acceptor.clone();
        let Ok(reloaded) = tokio::task::spawn_blocking(move || checking.reload_if_changed()).await
        else {
            continue;
        };
        match reloaded {
            None => {}
            Some(Ok(())) => tracing::info!(%listener,
                "TLS certificates reloaded: new connections use the changed files"),
            Some(Err(err)) => tracing::warn!(%listener, error = %err,
                "cannot reload the TLS certificates; new connections keep the ones in use \
                 (tried again when the files change)"),
        }
    }
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
