//! weir-cli: the `weir` commands for people and scripts that talk to any
//! Kafka-compatible broker: `topic`, `produce`, `consume`, `cluster`,
//! `group`, `txn`, `user`, `acl` and `quota`.
//!
//! This crate owns what they share: the exit codes, their error type
//! ([`CliError`]: `Usage` means "the command line is wrong", weir-client's
//! `Error::Unreachable` inside `Client` means "no broker answered"), the parsers of their common argument forms (`k=v`,
//! non-empty text, RFC 3339 instants), the librdkafka configuration, and the
//! JSON spelling of bytes. Each command family lives in its own module; the
//! requests whose answers must be shown in full go through weir-client.
//! `produce` and `consume` run on librdkafka and exist only with the
//! `rdkafka` feature. `cert dev` talks to no broker: it writes certificates
//! for trying TLS listeners.

pub mod acl;
pub mod admin_api;
pub mod cert;
pub mod cluster;
mod cluster_local;
#[cfg(feature = "rdkafka")]
pub mod consume;
pub mod delayed;
#[cfg(feature = "rdkafka")]
pub mod dlq;
pub mod group;
#[cfg(feature = "rdkafka")]
pub mod produce;
pub mod quota;
mod replicas;
pub mod topic;
pub mod txn;
pub mod user;

use std::borrow::Cow;
use std::process::ExitCode;

#[cfg(feature = "rdkafka")]
use rdkafka::ClientConfig;
use weir_client::Client;

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
(or WEIR_BROKERS), default 127.0.0.1:9092. `weir delayed` and the delayed
records of `weir topic describe` come from the broker's admin API instead:
--admin-url (or WEIR_ADMIN_URL), by default port 9644 on the host of the
first of --brokers; a secured one takes --admin-token (or WEIR_ADMIN_TOKEN),
and over https --admin-ca, --admin-cert and --admin-key.";

/// Exit code of a failed operation.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a command line that cannot be run as written.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when no broker answered.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Why a command failed. The message says what could not be done; the
/// cause, when there is one, is its [`source`](std::error::Error::source),
/// printed after it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A command line that cannot be run as written: a value no parser
    /// could check alone, or flags that do not go together. Exit code 2, as
    /// clap gives for the errors it finds itself.
    #[error("{0}")]
    Usage(String),
    /// A request through weir-client failed, the broker answered with an
    /// error, or no broker answered (`Error::Unreachable`, exit code 3).
    #[error(transparent)]
    Client(#[from] weir_client::Error),
    /// The broker's metadata answer has no entry for the topic asked about.
    #[error("the broker returned no metadata for topic {topic}")]
    NoMetadata {
        /// The topic asked about.
        topic: String,
    },
    /// The operation cannot be done as asked, as the message explains
    /// (a partition that does not exist, a group with active members, ...).
    #[error("{0}")]
    Failed(String),
    /// `--replication-factor` does not fit Kafka's 16-bit field.
    #[error("--replication-factor")]
    ReplicationFactor(#[source] std::num::TryFromIntError),
    /// Some records were not delivered.
    #[error("{failed} records failed; first: {first}")]
    Undelivered {
        /// How many records failed.
        failed: u64,
        /// The first failure, as librdkafka or the input check told it.
        first: String,
    },
    /// A file, stdin or stdout could not be used.
    #[error("{what}")]
    Io {
        /// What could not be done.
        what: Cow<'static, str>,
        /// The system's error.
        source: std::io::Error,
    },
    /// The broker's admin API could not be asked, or answered no JSON.
    #[error("{what}")]
    Admin {
        /// What could not be done.
        what: Cow<'static, str>,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The admin API refused the request as unauthenticated (401): no
    /// token or client certificate, or one it does not take.
    #[error("{what}")]
    AdminUnauthorized {
        /// What was refused, why, and what to give.
        what: String,
    },
    /// No admin API answered at the address given (exit code 3).
    #[error("{what}")]
    AdminUnreachable {
        /// What could not be done.
        what: Cow<'static, str>,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// A certificate or key could not be made (`weir cert dev`).
    #[error("{what}")]
    Certificate {
        /// What could not be made.
        what: Cow<'static, str>,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A consumed record could not be written as JSON.
    #[error("cannot format a record as JSON")]
    Json(#[source] serde_json::Error),
    /// librdkafka refused or failed an operation.
    #[cfg(feature = "rdkafka")]
    #[error("{what}")]
    Kafka {
        /// What could not be done.
        what: Cow<'static, str>,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
}

impl CliError {
    /// Wraps an I/O error with what could not be done (for `map_err`).
    fn io(what: impl Into<Cow<'static, str>>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }

    /// Wraps a librdkafka error with what could not be done (for `map_err`).
    #[cfg(feature = "rdkafka")]
    fn kafka(
        what: impl Into<Cow<'static, str>>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> CliError {
        let what = what.into();
        move |source| CliError::Kafka { what, source }
    }
}

/// The commands' result.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// A [`CliError::Usage`].
pub fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

/// The process exit code for an error returned by any command: 2 for a
/// usage error, 3 when no broker answered, 1 otherwise.
pub fn exit_code(err: &CliError) -> ExitCode {
    ExitCode::from(match err {
        CliError::Usage(_) => EXIT_USAGE,
        CliError::Client(client) if client.is_unreachable() => EXIT_UNREACHABLE,
        CliError::AdminUnreachable { .. } => EXIT_UNREACHABLE,
        _ => EXIT_FAILED,
    })
}

/// The exit code for an error of a crate that has no typed error of its own
/// yet (weir-bench's `anyhow::Error`, seen as its chain of causes): 3 when
/// any cause is weir-client's `Error::Unreachable`, 1 otherwise.
pub fn exit_code_of_chain(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    let unreachable = std::iter::successors(Some(err), |cause| cause.source()).any(|cause| {
        cause
            .downcast_ref::<weir_client::Error>()
            .is_some_and(weir_client::Error::is_unreachable)
    });
    ExitCode::from(if unreachable {
        EXIT_UNREACHABLE
    } else {
        EXIT_FAILED
    })
}

/// The client id the commands send.
const CLIENT_ID: &str = "weir-cli";

/// Connects to the first broker of `brokers` that answers; when none does,
/// the error is weir-client's `Error::Unreachable` (exit code 3).
fn connect(brokers: &str) -> Result<Client, weir_client::Error> {
    Client::connect(brokers, &weir_client::Config::new(CLIENT_ID))
}

/// The librdkafka settings every CLI client shares. librdkafka's own logs
/// go through the `log` crate, which the binary leaves unset: the commands
/// report errors themselves, once, instead of librdkafka's reconnect chatter.
#[cfg(feature = "rdkafka")]
fn rdkafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", CLIENT_ID)
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// A single-threaded runtime for librdkafka's admin futures.
#[cfg(feature = "rdkafka")]
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::io("cannot start the async runtime"))
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

/// Parses text that must not be empty (a separator, a name).
pub fn parse_non_empty(arg: &str) -> Result<String, String> {
    if arg.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(arg.to_owned())
    }
}

pub use weir_client::datetime::{DATETIME_FORMS, parse_datetime_ms};

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
fn print_out(text: &str) -> Result<Printed> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Printed::Written),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(Printed::ReaderGone),
        Err(err) => Err(CliError::io("cannot write to stdout")(err)),
    }
}

/// Prints `value` as one JSON document on a line.
fn print_json(value: &serde_json::Value) -> Result<()> {
    print_out(&format!("{value}\n"))?;
    Ok(())
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
    fn bytes_that_are_not_utf8_print_as_base64_objects() {
        assert_eq!(bytes_json(b"hi"), serde_json::json!("hi"));
        assert_eq!(
            bytes_json(&[0xff, 0x00]),
            serde_json::json!({ "base64": "/wA=" })
        );
    }

    #[test]
    fn exit_codes_follow_the_error_kind() {
        let unreachable = || weir_client::Error::Unreachable {
            brokers: "127.0.0.1:1".to_owned(),
            cause: "refused".to_owned(),
        };
        assert_eq!(exit_code(&usage("bad flag")), ExitCode::from(EXIT_USAGE));
        assert_eq!(
            exit_code(&CliError::Client(unreachable())),
            ExitCode::from(EXIT_UNREACHABLE)
        );
        assert_eq!(
            exit_code(&CliError::Client(weir_client::Error::NoBrokers)),
            ExitCode::from(EXIT_FAILED)
        );
        assert_eq!(
            exit_code(&CliError::Failed("no reset target given".to_owned())),
            ExitCode::from(EXIT_FAILED)
        );
        // A cause deeper in a chain still counts (weir-bench's errors).
        #[derive(Debug, thiserror::Error)]
        #[error("bench failed")]
        struct Wrapped(#[source] weir_client::Error);
        let wrapped = Wrapped(unreachable());
        assert_eq!(
            exit_code_of_chain(&wrapped),
            ExitCode::from(EXIT_UNREACHABLE)
        );
        assert_eq!(
            exit_code_of_chain(&usage("bad flag")),
            ExitCode::from(EXIT_FAILED)
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
