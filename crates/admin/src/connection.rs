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

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

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
}

impl AdminListener {
    /// `listener`, accepting at most `connections_max` connections open at
    /// once ([`CONNECTIONS_MAX`](crate::CONNECTIONS_MAX) in [`crate::serve`]).
    pub(crate) fn new(listener: TcpListener, connections_max: usize) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(connections_max)),
            connections_max,
            full: false,
        }
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = AdminConnection;
    type Addr = SocketAddr;

    /// Wait for a free slot, then for a connection. Cancel-safe, as axum's
    /// graceful shutdown needs: dropped while waiting, it gives the slot back
    /// and leaves any connection in the backlog.
    async fn accept(&mut self) -> (AdminConnection, SocketAddr) {
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
            match self.listener.accept().await {
                Ok((stream, peer)) => return (AdminConnection::new(stream, peer, slot), peer),
                Err(e) => handle_accept_error(e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
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
    stream: TcpStream,
    /// Fires [`IDLE_TIMEOUT`] after the last byte read (or the accept).
    /// Polled only while a read waits. hyper's HTTP/1 server also reads
    /// while a request is handled and its answer written (to notice a
    /// client gone), unless the client has sent bytes past the request, so
    /// the deadline mostly covers those too: the handling is bounded by the
    /// shorter [`REQUEST_TIMEOUT`](crate::REQUEST_TIMEOUT), and a client
    /// that stops reading a large answer is closed. Boxed so the
    /// connection stays `Unpin`.
    idle: Pin<Box<Sleep>>,
    peer: SocketAddr,
    /// Given back to the listener when hyper drops the connection.
    _slot: OwnedSemaphorePermit,
}

impl AdminConnection {
    fn new(stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            peer,
            _slot: slot,
        }
    }
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
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
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
                        peer = %this.peer,
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

impl AsyncWrite for AdminConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
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
        AdminListener::new(listener, CONNECTIONS_MAX)
    }

    /// Serve `GET /health` through an [`AdminListener`] on loopback; its
    /// address.
    async fn serve_health() -> SocketAddr {
        let listener = listener().await;
        let addr = listener.local_addr().expect("local address");
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
        let addr = listener.local_addr().expect("local address");
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
        assert_eq!(peer, waiting.local_addr().expect("local address"));
    }
}
