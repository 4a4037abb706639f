//! The `weir` commands for people and scripts that talk to any
//! Kafka-compatible broker: `topic`, `produce`, `consume`, `cluster` and
//! `group`.
//!
//! This module owns what they share: the exit codes, the error that means
//! "no broker answered", the parsers of their common argument forms
//! (`k=v`, durations with a unit, RFC 3339 instants), the librdkafka
//! configuration, and the JSON spelling of bytes. Each command family lives
//! in its own submodule; `kafka` is the small wire client for the requests
//! librdkafka cannot send.

pub mod cluster;
pub mod consume;
pub mod group;
mod kafka;
pub mod produce;
pub mod topic;

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::ClientConfig;

/// Where the commands look for a broker when neither `--brokers` nor
/// `WEIR_BROKERS` says otherwise.
pub const BROKERS_DEFAULT: &str = "127.0.0.1:9092";

/// The exit codes, as the top-level `--help` and docs/cli.md state them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  an operation failed (the broker answered with an error, a record was not delivered, ...)
  2  usage error (unknown flag, bad value)
  3  broker unreachable: no broker in --brokers answered in time

Every command that talks to a broker takes --brokers HOST:PORT[,HOST:PORT...]
(or WEIR_BROKERS), default 127.0.0.1:9092.";

/// Exit code of a failed operation.
const EXIT_FAILED: u8 = 1;
/// Exit code when no broker answered.
const EXIT_UNREACHABLE: u8 = 3;

/// Time each command allows for every operation against the brokers that
/// has no timeout of its own (an admin request, a metadata request).
const OPERATION_TIMEOUT_MS: u64 = 30_000;

/// No broker in `--brokers` could be reached: the command did nothing.
/// `main` turns it into exit code 3, whatever context was added on the way.
#[derive(Debug)]
pub struct Unreachable {
    /// The `--brokers` value.
    pub brokers: String,
    /// Why the last address failed (refused, timed out, no ApiVersions answer).
    pub cause: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach any broker at {}: {} (is `weir serve` running there? set --brokers or WEIR_BROKERS)",
            self.brokers, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// The process exit code for an error returned by any command.
pub fn exit_code(err: &anyhow::Error) -> std::process::ExitCode {
    let unreachable = err.chain().any(|cause| cause.is::<Unreachable>());
    std::process::ExitCode::from(if unreachable {
        EXIT_UNREACHABLE
    } else {
        EXIT_FAILED
    })
}

/// The librdkafka settings every CLI client shares. librdkafka's own logs
/// go through the `log` crate, which the binary leaves unset: the commands
/// report errors themselves, once, instead of librdkafka's reconnect chatter.
fn rdkafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "weir-cli")
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// A single-threaded runtime for librdkafka's admin futures.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Admin options bounding every admin request by [`OPERATION_TIMEOUT_MS`].
fn admin_options() -> rdkafka::admin::AdminOptions {
    let timeout = Duration::from_millis(OPERATION_TIMEOUT_MS);
    rdkafka::admin::AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout))
}

/// Parses `KEY=VALUE`; the value may itself hold `=`.
pub fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

/// The longest `--delay` accepted: one year. The broker applies its own
/// limit too; this one catches a typo before anything is sent.
const DELAY_MS_MAX: u64 = 365 * 24 * 3_600_000;

/// Parses a duration as a whole number followed by one unit: `ms`, `s`, `m`,
/// `h` or `d` (`30s`, `1500ms`, `2h`), into milliseconds.
pub fn parse_delay_ms(arg: &str) -> Result<u64, String> {
    let digits_end = arg
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{arg:?} has no unit; write e.g. 30s (units: ms, s, m, h, d)"))?;
    let (number, unit) = arg.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{arg:?} does not start with a whole number"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?} (units: ms, s, m, h, d)")),
    };
    match number.checked_mul(unit_ms) {
        Some(ms) if ms <= DELAY_MS_MAX => Ok(ms),
        _ => Err(format!("{arg:?} is longer than the limit of 365d")),
    }
}

/// Parses an RFC 3339 instant in UTC (`2026-11-24T08:00:00Z`, fractions of a
/// second allowed) into milliseconds since the Unix epoch, as Kafka's
/// timestamps count.
pub fn parse_datetime_ms(arg: &str) -> Result<i64, String> {
    let instant = humantime::parse_rfc3339_weak(arg).map_err(|err| {
        format!("{arg:?} is not an RFC 3339 UTC time like 2026-11-24T08:00:00Z ({err})")
    })?;
    let since_epoch = instant
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{arg:?} is before 1970"))?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| format!("{arg:?} is too far ahead"))
}

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": "..."}`,
/// so that a script can always tell text from binary and get the bytes back.
pub fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => {
            serde_json::json!({ "base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes) })
        }
    }
}

/// Writes `text` on stdout. A closed pipe (`weir consume ... | head`) ends
/// the output quietly instead of failing: the reader has what it wanted.
fn print_out(text: &str) -> anyhow::Result<Printed> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Printed::Written),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(Printed::ReaderGone),
        Err(err) => Err(err).context("cannot write to stdout"),
    }
}

/// Whether stdout still has a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printed {
    Written,
    ReaderGone,
}

/// Lays out rows as columns separated by two spaces, for people; the first
/// row is the header.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_take_each_documented_unit() {
        assert_eq!(parse_delay_ms("30s"), Ok(30_000));
        assert_eq!(parse_delay_ms("1500ms"), Ok(1_500));
        assert_eq!(parse_delay_ms("5m"), Ok(300_000));
        assert_eq!(parse_delay_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_delay_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_delay_ms("0s"), Ok(0));
    }

    #[test]
    fn delays_without_a_known_unit_or_too_long_are_refused() {
        for bad in [
            "30",
            "s",
            "10x",
            "1.5s",
            "-1s",
            "366d",
            "99999999999999999999d",
            "",
        ] {
            assert!(parse_delay_ms(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn datetimes_are_utc_milliseconds() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(
            parse_datetime_ms("2026-11-24T08:00:00Z"),
            Ok(1_795_507_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-24T08:00:00.250Z"),
            Ok(1_795_507_200_250)
        );
        assert!(parse_datetime_ms("yesterday").is_err());
    }

    #[test]
    fn bytes_that_are_not_utf8_print_as_base64_objects() {
        assert_eq!(bytes_json(b"hi"), serde_json::json!("hi"));
        assert_eq!(
            bytes_json(&[0xff, 0x00]),
            serde_json::json!({ "base64": "/wA=" })
        );
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }
}
