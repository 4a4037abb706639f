//! The budget of response bytes in flight: what the broker may hold in
//! responses that are being built or wait to be written, counted across
//! every connection (`queued.max.response.bytes`) and per connection.
//!
//! A request reserves its response's bytes before it is begun, so a client
//! that pipelines fetches and never reads its socket stops being read once
//! its connection's share is reserved, instead of making the broker build
//! every response. The reservation is an estimate made from the request
//! (a fetch's `max_bytes` and partition limits); once the response is
//! encoded, the unused part is given back at once and a larger response
//! takes the difference if it is free, without waiting. Waiting there could
//! deadlock: the writer sends responses in request order, and the bytes a
//! late response waits for may be held by responses queued behind it. The
//! bytes are released when the response has been written to the socket.

use std::sync::Arc;

use kafka_protocol::messages::RequestKind;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The smallest reservation: enough for every response that does not grow
/// with stored data, so most requests reserve once and never top up.
pub(crate) const RESERVATION_BYTES_MIN: usize = 16 * 1024;
/// A fetch response's bytes per requested partition besides its records
/// (index, error code, offsets, and the empty lists around them).
const FETCH_PARTITION_OVERHEAD_BYTES: usize = 64;
/// A permit count one `acquire_many` call can take.
const RESERVATION_BYTES_MAX: usize = u32::MAX as usize;

/// The broker-wide pool and one connection's share of it.
#[derive(Debug)]
pub(crate) struct Budget {
    shared: Arc<Semaphore>,
    connection: Arc<Semaphore>,
    /// Largest single reservation: what both pools can grant at once.
    reservation_bytes_max: usize,
}

/// Bytes reserved for one response, from both pools; given back on drop.
#[derive(Debug)]
pub(crate) struct Reserved {
    shared: OwnedSemaphorePermit,
    connection: OwnedSemaphorePermit,
}

impl Budget {
    /// A connection's budget: at most `connection_bytes_max` of the shared pool.
    pub(crate) fn new(
        shared: Arc<Semaphore>,
        shared_bytes_max: usize,
        connection_bytes_max: usize,
    ) -> Self {
        let reservation_bytes_max = shared_bytes_max
            .min(connection_bytes_max)
            .clamp(1, RESERVATION_BYTES_MAX);
        Self {
            shared,
            connection: Arc::new(Semaphore::new(
                connection_bytes_max.max(reservation_bytes_max),
            )),
            reservation_bytes_max,
        }
    }

    /// Wait until `bytes` (at most one pool's size) are free in this
    /// connection's share and in the shared pool, and take them.
    pub(crate) async fn reserve(&self, bytes: usize) -> Reserved {
        let bytes = self.clamp(bytes);
        // Neither pool is ever closed, so acquiring only ends by succeeding;
        // the connection's share is taken first so a connection waiting for
        // the shared pool holds nothing another connection needs.
        let connection = loop {
            if let Ok(permit) = self.connection.clone().acquire_many_owned(bytes).await {
                break permit;
            }
        };
        let shared = loop {
            if let Ok(permit) = self.shared.clone().acquire_many_owned(bytes).await {
                break permit;
            }
        };
        Reserved { shared, connection }
    }

    /// Make `reserved` hold `bytes`: give back what is not needed, and take
    /// what more is needed only if it is free now.
    pub(crate) fn settle(&self, reserved: &mut Reserved, bytes: usize) {
        let held = reserved.bytes();
        if bytes < held {
            drop(reserved.shared.split(held - bytes));
            drop(reserved.connection.split(held - bytes));
            return;
        }
        let Ok(more) = u32::try_from(bytes - held) else {
            return;
        };
        if more == 0 {
            return;
        }
        if let Ok(connection) = self.connection.clone().try_acquire_many_owned(more) {
            match self.shared.clone().try_acquire_many_owned(more) {
                Ok(shared) => {
                    reserved.connection.merge(connection);
                    reserved.shared.merge(shared);
                }
                Err(_) => drop(connection),
            }
        }
    }

    fn clamp(&self, bytes: usize) -> u32 {
        let bytes = bytes.clamp(1, self.reservation_bytes_max);
        // reservation_bytes_max is at most u32::MAX.
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

impl Reserved {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        debug_assert_eq!(self.shared.num_permits(), self.connection.num_permits());
        self.shared.num_permits()
    }
}

/// Bytes to reserve for the response to `body` before it is begun.
///
/// A fetch answers at most `max_bytes` (capped by the broker's
/// `fetch.max.bytes`) and at most each partition's `partition_max_bytes` of
/// records, besides one whole batch when the first one is larger (KIP-74),
/// which `settle` accounts for. Other responses are small or bounded by what
/// the request names; `settle` accounts for them once encoded.
pub(crate) fn reservation(body: &RequestKind, fetch_max_bytes: usize) -> usize {
    let RequestKind::Fetch(fetch) = body else {
        return RESERVATION_BYTES_MIN;
    };
    let partitions = fetch.topics.iter().flat_map(|t| t.partitions.iter());
    let (count, partition_bytes) = partitions.fold((0usize, 0usize), |(count, bytes), p| {
        let max = usize::try_from(p.partition_max_bytes).unwrap_or(0);
        (count + 1, bytes.saturating_add(max))
    });
    let records = usize::try_from(fetch.max_bytes)
        .unwrap_or(0)
        .min(fetch_max_bytes)
        .min(partition_bytes);
    records
        .saturating_add(count.saturating_mul(FETCH_PARTITION_OVERHEAD_BYTES))
        .max(RESERVATION_BYTES_MIN)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};

    use super::*;

    fn fetch(max_bytes: i32, partition_max_bytes: &[i32]) -> RequestKind {
        let partitions = partition_max_bytes
            .iter()
            .map(|max| FetchPartition::default().with_partition_max_bytes(*max))
            .collect();
        RequestKind::Fetch(
            FetchRequest::default()
                .with_max_bytes(max_bytes)
                .with_topics(vec![FetchTopic::default().with_partitions(partitions)]),
        )
    }

    #[test]
    fn a_fetch_reserves_what_its_limits_allow() {
        const MIB: i32 = 1024 * 1024;
        // Four partitions of 1 MiB under a 50 MiB max: 4 MiB of records.
        assert_eq!(
            reservation(&fetch(50 * MIB, &[MIB; 4]), 55 << 20),
            (4 << 20) + 4 * FETCH_PARTITION_OVERHEAD_BYTES
        );
        // The request's max_bytes, then the broker's fetch.max.bytes, cap it.
        assert_eq!(
            reservation(&fetch(2 * MIB, &[MIB; 4]), 55 << 20),
            (2 << 20) + 4 * FETCH_PARTITION_OVERHEAD_BYTES
        );
        assert_eq!(
            reservation(&fetch(i32::MAX, &[i32::MAX; 2]), 8 << 20),
            (8 << 20) + 2 * FETCH_PARTITION_OVERHEAD_BYTES
        );
        // Negative limits read nothing; the floor remains.
        assert_eq!(
            reservation(&fetch(-1, &[-5]), 1 << 20),
            RESERVATION_BYTES_MIN
        );
        let metadata = RequestKind::Metadata(Default::default());
        assert_eq!(reservation(&metadata, 1 << 20), RESERVATION_BYTES_MIN);
    }

    #[tokio::test]
    async fn reservations_wait_for_the_connection_share_and_are_given_back() {
        let shared = Arc::new(Semaphore::new(1000));
        let budget = Budget::new(shared.clone(), 1000, 300);
        let first = budget.reserve(200).await;
        assert_eq!((first.bytes(), shared.available_permits()), (200, 800));
        // The connection's share has 100 left: a second reservation waits.
        let second = budget.reserve(200);
        tokio::pin!(second);
        assert!(futures_poll_once(&mut second).await.is_none());
        drop(first);
        let second = second.await;
        assert_eq!((second.bytes(), shared.available_permits()), (200, 800));
        // A reservation larger than the share is clamped to it.
        drop(second);
        let whole = budget.reserve(5000).await;
        assert_eq!(whole.bytes(), 300);
    }

    #[tokio::test]
    async fn settling_gives_back_the_unused_part_and_takes_more_only_if_free() {
        let shared = Arc::new(Semaphore::new(1000));
        let budget = Budget::new(shared.clone(), 1000, 600);
        let mut reserved = budget.reserve(400).await;
        budget.settle(&mut reserved, 100);
        assert_eq!((reserved.bytes(), shared.available_permits()), (100, 900));
        budget.settle(&mut reserved, 500);
        assert_eq!((reserved.bytes(), shared.available_permits()), (500, 500));
        // Past the connection's share nothing more is taken, and nothing waits.
        budget.settle(&mut reserved, 700);
        assert_eq!((reserved.bytes(), shared.available_permits()), (500, 500));
        drop(reserved);
        assert_eq!(shared.available_permits(), 1000);
    }

    /// Poll a future once: `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
