//! A shard's record writer: the records of a shard's changes, appended to
//! its `__consumer_offsets` partition in the order the changes were made,
//! on a blocking thread.
//!
//! A change queues its records under the shard's lock (which fixes their
//! order) and goes on; one blocking thread per shard at a time takes the
//! queue in order and appends. So the shard's lock is never held across a
//! write, and no worker thread of the runtime waits for the disk: the other
//! groups' heartbeats, and this shard's, are answered meanwhile. The queue
//! holds one entry per change whose records are not yet written; each comes
//! from a request being answered (bounded by the connections and their
//! `max_in_flight_requests`) or a group's deadline (bounded by `groups.max`).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::oneshot;
use weir_storage::{AckWait, Partition};

use super::OFFSETS_TOPIC;

/// What writing one change's records came to: their waits for the high
/// watermark, which passes them once they are durable here and, on a
/// cluster, on every in-sync replica (what a commit acknowledged must
/// survive: a coordinator moving to another replica reads them there).
type Written = Result<Vec<AckWait>, String>;

/// The records one change queued; resolves once they are in the log.
pub(crate) struct Appending(Option<oneshot::Receiver<Written>>);

impl Appending {
    /// A change that wrote nothing.
    pub(crate) fn nothing() -> Self {
        Self(None)
    }

    /// Wait until the records are appended, and hand back their waits for
    /// durability. Dropping it instead leaves the writing to go on (a
    /// failure is then logged by the writer).
    pub(crate) async fn written(self) -> Written {
        match self.0 {
            None => Ok(Vec::new()),
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the group record writer stopped".to_string())),
        }
    }
}

struct Queued {
    partition: Partition,
    group: String,
    payloads: Vec<Bytes>,
    done: oneshot::Sender<Written>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    /// A writer is taking the queue; only one at a time, so records reach
    /// the log in queue order.
    running: bool,
}

/// The record writer of the shard of `__consumer_offsets` partition `index`.
pub(crate) struct RecordWriter {
    index: i32,
    queue: Mutex<Queue>,
}

impl RecordWriter {
    pub(crate) fn new(index: i32) -> Arc<Self> {
        Arc::new(Self {
            index,
            queue: Mutex::new(Queue::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing that can panic runs under this lock.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `group`'s record batches for `partition` behind every change
    /// queued before, starting the writer if it is idle. Outside the async
    /// runtime (start-up, tests) they are written before this returns.
    pub(crate) fn queue(
        self: &Arc<Self>,
        partition: &Partition,
        group: &str,
        payloads: Vec<Bytes>,
    ) -> Appending {
        let (done, rx) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.items.push_back(Queued {
                partition: partition.clone(),
                group: group.to_string(),
                payloads,
                done,
            });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let writer = self.clone();
                    // Not awaited: whoever needs the records written awaits
                    // its `Appending`.
                    drop(runtime.spawn_blocking(move || writer.write_queued()));
                }
                Err(_) => self.write_queued(),
            }
        }
        Appending(Some(rx))
    }

    /// Append every queued change in order until the queue is empty.
    fn write_queued(&self) {
        loop {
            let next = {
                let mut queue = self.lock();
                let next = queue.items.pop_front();
                queue.running = next.is_some();
                next
            };
            let Some(Queued {
                partition,
                group,
                payloads,
                done,
            }) = next
            else {
                return;
            };
            // A panic in the storage poisons the log (its panic guards);
            // it must not also leave this queue without a writer.
            let written =
                std::panic::catch_unwind(AssertUnwindSafe(|| self.append(&partition, payloads)))
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "a panic while appending to {OFFSETS_TOPIC}-{}",
                            self.index
                        ))
                    });
            if let Err(Err(err)) = done.send(written) {
                // No one waits for these records: say here that they are lost.
                tracing::warn!(group = %group, error = %err, "cannot store group changes");
            }
        }
    }

    fn append(&self, partition: &Partition, payloads: Vec<Bytes>) -> Written {
        ensure_strict(partition, self.index);
        let mut waits = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let outcome = partition
                .append(payload)
                .map_err(|e| format!("append to {OFFSETS_TOPIC}-{}: {e}", self.index))?;
            waits.push(outcome.ack_wait(true));
        }
        Ok(waits)
    }
}

/// Commits are answered once durable whatever the broker's flush policy:
/// an offsets partition whose config was relaxed (by a broker default or an
/// altered topic config) is put back to `flush.messages=1` before it is
/// written, so every append's wait is a real fsync.
pub(crate) fn ensure_strict(partition: &Partition, index: i32) {
    let config = partition.config();
    if config.flush_messages > 1 {
        tracing::warn!(
            partition = index,
            flush_messages = config.flush_messages,
            "{OFFSETS_TOPIC} is always flushed before commits are answered; ignoring flush.messages"
        );
        partition.set_config(weir_storage::PartitionConfig {
            flush_messages: 1,
            ..config
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;
    use weir_storage::{CommitLog, LogConfig, PartitionConfig, PartitionId, SystemClock};

    use super::RecordWriter;
    use crate::group::encode_batches;

    /// One batch of one record whose key is `n`.
    fn payload(n: u32) -> Vec<Bytes> {
        let key = Bytes::copy_from_slice(&n.to_be_bytes());
        encode_batches(&[(key, None)], 0).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_reach_the_log_in_the_order_they_were_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            CommitLog::open(dir.path(), LogConfig::default(), Arc::new(SystemClock)).unwrap();
        let id = PartitionId {
            topic_id: uuid::Uuid::from_u128(1),
            partition: 0,
        };
        let partition = log
            .create_partition(id, PartitionConfig::default())
            .unwrap();
        let writer = RecordWriter::new(0);
        let changes = 50u32;
        // Queued from the runtime, as the shards do: nothing is written
        // before `queue` returns, and the writes overlap the next queueing.
        let appending: Vec<_> = (0..changes)
            .map(|n| writer.queue(&partition, "g", payload(n)))
            .collect();
        for change in appending {
            for wait in change.written().await.unwrap() {
                wait.wait().await.unwrap();
            }
        }
        let read = partition.read(0, 1 << 20).unwrap();
        let mut records = read.records.clone();
        let mut keys = Vec::new();
        while !records.is_empty() {
            for record in RecordBatchDecoder::decode(&mut records).unwrap().records {
                let key = record.key.unwrap();
                keys.push(u32::from_be_bytes([key[0], key[1], key[2], key[3]]));
            }
        }
        assert_eq!(keys, (0..changes).collect::<Vec<_>>());
        log.shutdown().unwrap();
    }
}
