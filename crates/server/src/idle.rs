//! Idle connections (`connections.max.idle.ms`): a connection on which no
//! byte was read or written for that long, while the broker owed it no
//! work, is closed, as Kafka does. A connection whose peer stopped reading
//! counts as idle once its writes stop making progress, so it cannot hold
//! its responses' memory forever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last moved a byte, and whether the broker is working
/// for it (a request being begun, or a handler the writer waits on).
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last byte moved or work finished.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    /// Something happened now.
    pub(crate) fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Mark the broker as working for this connection until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Complete once the connection has been idle for `max_idle`.
    pub(crate) async fn idle_for(&self, max_idle: Duration) {
        loop {
            let deadline = self.last() + max_idle;
            if Instant::now() < deadline {
                tokio::time::sleep_until(deadline).await;
                continue;
            }
            if self.busy.load(Ordering::Relaxed) == 0 {
                return;
            }
            // Working for the peer is not idleness: count from now again.
            self.touch();
        }
    }
}

/// Held while the broker works for a connection.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket half that records every byte moved as activity.
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_when_nothing_moves_and_nothing_is_owed() {
        let activity = Activity::new();
        let max_idle = Duration::from_millis(1000);
        let start = Instant::now();
        activity.idle_for(max_idle).await;
        assert_eq!(start.elapsed(), max_idle);

        // Work owed to the peer defers idleness until it is done.
        let busy = activity.busy();
        let waited = tokio::spawn({
            let activity = activity.clone();
            async move {
                let start = Instant::now();
                activity.idle_for(max_idle).await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(5000)).await;
        assert!(!waited.is_finished());
        drop(busy);
        let waited = waited.await.expect("watcher");
        assert!(
            waited >= Duration::from_millis(5000) + max_idle,
            "{waited:?}"
        );
    }
}
