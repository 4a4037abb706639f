//! What the scale modes (`partitions`, `batches`, `lookup`) share: their
//! weir-client connection with long timeouts, retried while a broker
//! restarts, their typed errors, and the arithmetic of their reports.

use std::time::{Duration, Instant};

use weir_client::{Client, Config};

/// How long a mode that does not wait for a restart tries to connect, as the
/// librdkafka modes do.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two connection attempts to a broker that is starting.
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// The client id the scale modes send.
const CLIENT_ID: &str = "weir-bench";

/// Why a scale mode failed, beyond the client's own errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScaleError {
    /// The broker did not show the partitions in time.
    #[error(
        "{what}: {ready} of {wanted} partitions had a leader after {}",
        humantime::format_duration(*timeout)
    )]
    NotReady {
        what: String,
        ready: i64,
        wanted: i64,
        timeout: Duration,
    },
    /// A partition answered with an error code.
    #[error("{what}: {error:?}")]
    Partition {
        what: String,
        error: kafka_protocol::ResponseError,
    },
    /// The broker's answer does not match what was asked.
    #[error("unexpected answer to {what}")]
    Unexpected { what: String },
}

/// A client whose requests may each take `timeout`: a CreateTopics of many
/// partitions must be measured, not cut off by the socket timeout.
pub(crate) fn client_config(timeout: Duration) -> Config {
    Config {
        io_timeout: timeout,
        ..Config::new(CLIENT_ID)
    }
}

/// Connects to `brokers`, retrying for `within` while none answers (a
/// broker that is still starting refuses connections).
pub(crate) fn connect_retrying(
    brokers: &str,
    config: &Config,
    within: Duration,
) -> weir_client::Result<Client> {
    let deadline = Instant::now() + within;
    loop {
        match Client::connect(brokers, config) {
            Ok(client) => return Ok(client),
            Err(err @ weir_client::Error::Unreachable { .. }) => {
                if Instant::now() >= deadline {
                    return Err(err);
                }
                std::thread::sleep(CONNECT_RETRY);
            }
            Err(err) => return Err(err),
        }
    }
}

/// A duration in milliseconds, as the reports print them.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The median, or `None` for no values.
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => values.get(mid).copied(),
        _ => Some((values.get(mid - 1)? + values.get(mid)?) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
