//! Running file I/O and fsyncs off the async runtime's worker threads.
//!
//! Whatever reads or writes a file (a produce's `pwrite`, a fetch's `pread`,
//! an index file created, a metadata commit and its fsync) runs on tokio's
//! blocking pool through [`run`]. A slow disk then holds a blocking thread,
//! never a worker, so heartbeats, metadata and fetches of other connections
//! are still served while it waits.

use crate::HandlerError;

/// Run `work` on the blocking pool and wait for its result.
///
/// A panic in `work` goes on unwinding in the caller, as it would have had
/// `work` run inline (the storage's panic guards have poisoned the log by
/// then). The work can only be lost if the runtime is shutting down: that
/// is [`HandlerError::ShuttingDown`].
pub(crate) async fn run<T, F>(work: F) -> Result<T, HandlerError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The time the work takes counts as the request's (request_percentage).
    let counter = crate::quotas::work_counter();
    let timed = move || match counter {
        Some(counter) => {
            let start = std::time::Instant::now();
            let value = work();
            crate::quotas::add_work(Some(&counter), start.elapsed());
            value
        }
        None => work(),
    };
    match tokio::task::spawn_blocking(timed).await {
        Ok(value) => Ok(value),
        Err(err) => match err.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => Err(HandlerError::ShuttingDown),
        },
    }
}
