//! The admin listener's connections, bounded: at most
//! [`CONNECTIONS_MAX`](crate::CONNECTIONS_MAX) open at once across the
//! listener, and each closed once it has sent nothing for [`IDLE_TIMEOUT`]
//! while the server waits to read from it.
//!
//! [`AdminListener`] is the `axum::serve::Listener` that [`crate::serve`]
//! hands to axum. It takes a slot (a semaphore permit) before it accepts, so
//! with every slot taken it waits and the kernel's listen backlog holds new
//! connections; the slot lives in the accepted [`AdminConnection`] and is
//! given back when hyper drops the connection. axum's `serve` has no
//! header-read or keep-alive timeout of its own, so the idle timeout sits in
//! the connection's reads: it closes a client that sends half a request, or
//! nothing, or keeps an idle keep-alive connection.
//!
//! With `admin.ssl.keystore.location` set the listener speaks TLS, through
//! the Kafka listener's own configuration (`weir_server::TlsAcceptor`,
//! reloaded when its files change). The handshake is not done in `accept`,
//! where one slow client would hold up every other, but by the
//! connection's first reads and writes, on the connection's own task; it
//! must end within the [`IDLE_TIMEOUT`] that starts at the accept. Its
//! client certificate's principal is then set in the connection's
//! [`AdminPeer`], which axum hands every request on it (`ConnectInfo`).

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use weir_server::TlsAcceptor;

use crate::IDLE_TIMEOUT;

/// How long accepting pauses after an error other than the peer's (such as
/// `EMFILE`, out of file descriptors), as axum's own `TcpListener` does, so
/// the error is not retried in a busy loop while files may yet be closed.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A `TcpListener` that holds at most `connections_max` accepted
/// connections open at once.
pub(crate) struct AdminListener {
    listener: TcpListener,
    /// One permit per connection that may still be opened.
    slots: Arc<Semaphore>,
    connections_max: usize,
    /// Whether the last accept found every slot taken: the warning is
    /// logged once each time the listener fills, not on every accept while
    /// it stays full.
    full: bool,
    /// The TLS configuration, on an HTTPS listener.
    tls: Option<Arc<TlsAcceptor>>,
}

impl AdminListener {
    /// `listener`, accepting at most `connections_max` connections open at
    /// once ([`CONNECTIONS_MAX`](crate::CONNECTIONS_MAX) in [`crate::serve`]).
    pub(crate) fn new(
        listener: TcpListener,
        connections_max: usize,
        tls: Option<Arc<TlsAcceptor>>,
    ) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(connections_max)),
            connections_max,
            full: false,
            tls,
        }
    }
}

/// Who is at the other end of an admin connection, as every request on it
/// sees it (`axum::extract::ConnectInfo<AdminPeer>`).
#[derive(Debug, Clone)]
pub struct AdminPeer {
    addr: SocketAddr,
    tls: bool,
    /// Set once the TLS handshake is done: the principal the client
    /// certificate names (`admin.ssl.principal.mapping.rules`), or `None`
    /// when it presented none. Never set on a plain connection.
    certificate: Arc<OnceLock<Option<String>>>,
}

impl AdminPeer {
    /// A peer at `addr`; `certificate` is the principal its client
    /// certificate names, when it is a TLS peer that presented one.
    pub fn new(addr: SocketAddr, tls: bool, certificate: Option<String>) -> Self {
        let known = OnceLock::new();
        if tls {
            let _ = known.set(certificate);
        }
        Self {
            addr,
            tls,
            certificate: Arc::new(known),
        }
    }

    /// The client's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The principal the client certificate names, once the handshake
    /// checked it; `None` without one.
    pub fn certificate_principal(&self) -> Option<&str> {
        self.certificate.get().and_then(Option::as_deref)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AdminListener>>
    for AdminPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, AdminListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = AdminConnection;
    type Addr = AdminPeer;

    /// Wait for a free slot, then for a connection. Cancel-safe, as axum's
    /// graceful shutdown needs: dropped while waiting, it gives the slot back
    /// and leaves any connection in the backlog.
    async fn accept(&mut self) -> (AdminConnection, AdminPeer) {
        let slots = Arc::clone(&self.slots);
        if slots.available_permits() == 0 {
            if !self.full {
                tracing::warn!(
                    "all {} admin connections are open; new ones wait in the \
                     listen backlog until one closes",
                    self.connections_max
                );
            }
            self.full = true;
        } else {
            self.full = false;
        }
        let Ok(slot) = slots.acquire_owned().await else {
            unreachable!("the admin listener's semaphore is never closed");
        };
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    handle_accept_error(e).await;
                    continue;
                }
            };
            let peer = AdminPeer {
                addr,
                tls: self.tls.is_some(),
                certificate: Arc::new(OnceLock::new()),
            };
            let transport = match &self.tls {
                None => Transport::Plain(stream),
                Some(acceptor) => {
                    let Some(config) = acceptor.config() else {
                        tracing::error!(peer = %addr,
                            "closing an admin connection: the TLS configuration is unavailable");
                        continue;
                    };
                    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    Transport::Handshake(Box::new(handshake), acceptor.clone())
                }
            };
            let connection = AdminConnection::new(transport, peer.clone(), slot);
            return (connection, peer);
        }
    }

    /// The listener's own address (as an [`AdminPeer`]: axum's trait gives
    /// it the type of the peers' addresses).
    fn local_addr(&self) -> io::Result<AdminPeer> {
        let addr = self.listener.local_addr()?;
        Ok(AdminPeer::new(addr, self.tls.is_some(), None))
    }
}

/// What an admin connection's bytes go through.
enum Transport {
    /// Plain HTTP.
    Plain(TcpStream),
    /// The TLS handshake, driven by the first reads and writes; the
    /// acceptor maps the client certificate to a principal.
    Handshake(Box<tokio_rustls::Accept<TcpStream>>, Arc<TlsAcceptor>),
    /// An established TLS session.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The handshake failed: every read and write fails.
    Closed,
}

/// axum 0.8's handling of an accept error, mirrored: an error of one
/// connection (refused, aborted, reset) is skipped; any other is logged and
/// accepting pauses for [`ACCEPT_ERROR_PAUSE`].
async fn handle_accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(
        "the admin listener cannot accept a connection: {e}; trying again in \
         {ACCEPT_ERROR_PAUSE:?}"
    );
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// An accepted admin connection: its stream, the deadline of its idle
/// timeout, and its slot of the listener's
/// [`CONNECTIONS_MAX`](crate::CONNECTIONS_MAX).
pub(crate) struct AdminConnection {
    transport: Transport,
    /// Fires [`IDLE_TIMEOUT`] after the last byte read (or the accept).
    /// Polled only while a read waits. hyper's HTTP/1 server also reads
    /// while a request is handled and its answer written (to notice a
    /// client gone), unless the client has sent bytes past the request, so
    /// the deadline mostly covers those too: the handling is bounded by the
    /// shorter [`REQUEST_TIMEOUT`](crate::REQUEST_TIMEOUT), and a client
    /// that stops reading a large answer is closed. Boxed so the
    /// connection stays `Unpin`.
    idle: Pin<Box<Sleep>>,
    peer: AdminPeer,
    /// Given back to the listener when hyper drops the connection.
    _slot: OwnedSemaphorePermit,
}

impl AdminConnection {
    fn new(transport: Transport, peer: AdminPeer, slot: OwnedSemaphorePermit) -> Self {
        Self {
            transport,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            peer,
            _slot: slot,
        }
    }

    /// Drive the TLS handshake, if one is under way: ready once the
    /// session is established (at once on a plain connection), an error
    /// when the handshake failed or the certificate names no principal.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Transport::Handshake(handshake, acceptor) = &mut self.transport else {
            return Poll::Ready(Ok(()));
        };
        let peer = self.peer.addr;
        let session = match Pin::new(&mut **handshake).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(session)) => session,
            Poll::Ready(Err(e)) => {
                // An untrusted or missing client certificate ends here: an
                // operator needs to see who was refused and why.
                tracing::warn!(%peer, error = %e,
                    "closing an admin connection: TLS handshake failed");
                self.transport = Transport::Closed;
                return Poll::Ready(Err(e));
            }
        };
        match acceptor.principal(session.get_ref().1.peer_certificates()) {
            Ok(principal) => {
                let named = (principal != weir_auth::KafkaPrincipal::anonymous())
                    .then(|| principal.to_string());
                let _ = self.peer.certificate.set(named);
                self.transport = Transport::Tls(Box::new(session));
                Poll::Ready(Ok(()))
            }
            Err(why) => {
                tracing::warn!(%peer, reason = %why,
                    "closing an admin connection: the client certificate names no principal \
                     (admin.ssl.principal.mapping.rules)");
                self.transport = Transport::Closed;
                Poll::Ready(Err(io::Error::new(io::ErrorKind::PermissionDenied, why)))
            }
        }
    }
}

/// The error of a read or write on a connection whose handshake failed.
fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed")
}

impl AsyncRead for AdminConnection {
    /// The stream's read; a read that waits past the idle deadline fails
    /// with `TimedOut`, and one that returns bytes moves the deadline.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let read = match this.poll_handshake(cx) {
            Poll::Ready(Ok(())) => match &mut this.transport {
                Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
                Transport::Tls(session) => Pin::new(&mut **session).poll_read(cx, buf),
                Transport::Handshake(..) | Transport::Closed => Poll::Ready(Err(closed())),
            },
            not_established => not_established,
        };
        match read {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > filled_before {
                    this.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    tracing::debug!(
                        peer = %this.peer.addr,
                        "closing an admin connection that sent nothing for {IDLE_TIMEOUT:?}"
                    );
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client sent nothing for {IDLE_TIMEOUT:?}"),
                    )))
                }
            },
        }
    }
}

/// The transport of an established connection, after the handshake.
macro_rules! established {
    ($this:ident, $cx:ident, $stream:ident => $call:expr) => {{
        match $this.poll_handshake($cx) {
            Poll::Ready(Ok(())) => match &mut $this.transport {
                Transport::Plain($stream) => {
                    let $stream = Pin::new($stream);
                    $call
                }
                Transport::Tls(session) => {
                    let $stream = Pin::new(&mut **session);
                    $call
                }
                Transport::Handshake(..) | Transport::Closed => Poll::Ready(Err(closed())),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }};
}

impl AsyncWrite for AdminConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        established!(this, cx, stream => stream.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        established!(this, cx, stream => stream.poll_flush(cx))
    }

    /// Shuts down the TCP stream (after TLS's close_notify); a connection
    /// still in, or failed in, its handshake is closed when dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(session) => Pin::new(&mut **session).poll_shutdown(cx),
            Transport::Handshake(..) | Transport::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        established!(this, cx, stream => stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(session) => session.is_write_vectored(),
            Transport::Handshake(..) | Transport::Closed => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::CONNECTIONS_MAX;
    use axum::Router;
    use axum::routing::get;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A loopback listener, bounded as [`crate::serve`] bounds it.
    async fn listener() -> AdminListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        AdminListener::new(listener, CONNECTIONS_MAX, None)
    }

    /// Serve `GET /health` through an [`AdminListener`] on loopback; its
    /// address.
    async fn serve_health() -> SocketAddr {
        let listener = listener().await;
        let addr = listener.local_addr().expect("local address").addr();
        let app = Router::new().route("/health", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
        let addr = serve_health().await;
        let connected = Instant::now();
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut answer = Vec::new();
        // The paused clock jumps to the earliest timer: the connection's
        // deadline, before the test's own bound.
        let read = tokio::time::timeout(2 * IDLE_TIMEOUT, client.read_to_end(&mut answer))
            .await
            .expect("closed within twice the idle timeout");
        let waited = connected.elapsed();
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}, answered {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(waited >= IDLE_TIMEOUT, "closed after {waited:?}");
        assert!(
            waited < IDLE_TIMEOUT + Duration::from_secs(1),
            "closed after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_keeps_sending_is_not_closed() {
        let addr = serve_health().await;
        let started = Instant::now();
        let mut client = TcpStream::connect(addr).await.expect("connect");
        // Each piece comes just within the idle timeout of the one before;
        // the whole request takes three times the timeout.
        let pause = IDLE_TIMEOUT - Duration::from_secs(1);
        for piece in ["GET /hea", "lth HTTP/1.1\r\n", "Host: weir\r\n", "\r\n"] {
            tokio::time::sleep(pause).await;
            client.write_all(piece.as_bytes()).await.expect("write");
        }
        assert!(started.elapsed() > 3 * IDLE_TIMEOUT - Duration::from_secs(1));
        let mut answer = Vec::new();
        let mut buf = [0_u8; 1024];
        while !answer.ends_with(b"ok") {
            let n = tokio::time::timeout(IDLE_TIMEOUT, client.read(&mut buf))
                .await
                .expect("answered within the idle timeout")
                .expect("read the answer");
            assert_ne!(
                n,
                0,
                "closed; answered {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(buf.get(..n).expect("n <= buf.len()"));
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[tokio::test]
    async fn past_the_limit_an_accept_waits_until_a_connection_is_dropped() {
        let mut listener = listener().await;
        let addr = listener.local_addr().expect("local address").addr();
        let mut clients = Vec::new();
        let mut open = Vec::new();
        for _ in 0..CONNECTIONS_MAX {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            open.push(listener.accept().await.0);
        }
        // Connected: the kernel's backlog holds it until a slot frees.
        let waiting = TcpStream::connect(addr).await.expect("connect");
        let accept = listener.accept();
        tokio::pin!(accept);
        let early = tokio::time::timeout(Duration::from_millis(200), &mut accept).await;
        assert!(
            early.is_err(),
            "accepted a connection past the limit of {CONNECTIONS_MAX}"
        );

        // hyper drops a connection it is done with; its slot frees.
        drop(open.pop());
        let (_, peer) = tokio::time::timeout(Duration::from_secs(10), accept)
            .await
            .expect("accepted once a connection was dropped");
        assert_eq!(peer.addr(), waiting.local_addr().expect("local address"));
    }

    /// Serve `GET /health` over TLS through an [`AdminListener`] whose
    /// certificate is made here; its address and the certificate (DER).
    async fn serve_health_over_tls(
        dir: &std::path::Path,
    ) -> (
        SocketAddr,
        tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    ) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        let keystore = dir.join("admin.pem");
        let pem = format!("{}{}", made.signing_key.serialize_pem(), made.cert.pem());
        std::fs::write(&keystore, pem).expect("write");
        let acceptor = TlsAcceptor::load(weir_server::TlsSettings {
            keystore,
            truststore: None,
            client_auth: weir_server::ClientAuth::None,
            principal_mapping: Default::default(),
        })
        .expect("TLS");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listener = AdminListener::new(tcp, CONNECTIONS_MAX, Some(Arc::new(acceptor)));
        let addr = listener.local_addr().expect("local address").addr();
        let app = Router::new().route("/health", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, made.cert.der().clone())
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_does_not_hold_up_other_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, certificate) = serve_health_over_tls(dir.path()).await;
        // Connected, and never says a word of TLS.
        let _stalled = TcpStream::connect(addr).await.expect("connect");

        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(certificate).expect("a root");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name =
            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        let served = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = connector.connect(name, tcp).await.expect("handshake");
            tls.write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.expect("read");
            answer
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("served while another handshake stalls");
        assert!(
            answer.starts_with(b"HTTP/1.1 200 OK\r\n") && answer.ends_with(b"ok"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}
