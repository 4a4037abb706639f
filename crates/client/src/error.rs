//! The errors of talking to a broker: one variant for each way a connection,
//! a frame, a message or a broker's answer can fail, each naming the broker's
//! address so that a command's message says where it went wrong.

use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::{BOOTSTRAP_BROKERS_MAX, RESPONSE_BYTES_MAX};

/// A failure cause that is not this crate's (an encoding error of
/// `kafka-protocol`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No broker of the bootstrap list could be reached: nothing was done.
    #[error(
        "cannot reach any broker at {brokers}: {cause} (is `weir serve` running there? set --brokers or WEIR_BROKERS)"
    )]
    Unreachable {
        /// The bootstrap list, as given.
        brokers: String,
        /// Why the last address failed (refused, timed out, no ApiVersions answer).
        cause: String,
    },
    /// The bootstrap list names no address.
    #[error("--brokers is empty")]
    NoBrokers,
    /// The bootstrap list names more than [`BOOTSTRAP_BROKERS_MAX`] addresses.
    #[error("--brokers lists more than {BOOTSTRAP_BROKERS_MAX} addresses")]
    TooManyBrokers,
    /// The address did not resolve.
    #[error("cannot resolve {address}")]
    Resolve {
        /// `host:port`.
        address: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The address resolved to nothing.
    #[error("{address} resolves to no address")]
    NoAddress {
        /// `host:port`.
        address: String,
    },
    /// No resolved address accepted the connection.
    #[error("cannot connect to {address}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The last address's error.
        source: std::io::Error,
    },
    /// The socket options (timeouts, no delay) could not be set.
    #[error("cannot set up the connection to {address}")]
    Socket {
        /// `host:port`.
        address: String,
        /// The error of the system call.
        source: std::io::Error,
    },
    /// The broker answered ApiVersions with an error.
    #[error("{address} refused ApiVersions: {error}")]
    ApiVersionsRefused {
        /// `host:port`.
        address: String,
        /// Its error.
        error: ResponseError,
    },
    /// The broker does not serve this API at all.
    #[error("the broker at {address} does not serve {api}")]
    NotServed {
        /// `host:port`.
        address: String,
        /// The API's name.
        api: String,
    },
    /// The broker serves this API only at versions this client cannot send.
    #[error(
        "the broker at {address} serves {api} only at versions {min}..={max}, which this tool does not speak"
    )]
    NoCommonVersion {
        /// `host:port`.
        address: String,
        /// The API's name.
        api: String,
        /// The broker's oldest version.
        min: i16,
        /// The broker's newest version.
        max: i16,
    },
    /// `kafka-protocol` could not encode a request.
    #[error("cannot encode {what}")]
    Encode {
        /// The message (`Metadata v12`, `the Metadata request header`).
        what: String,
        /// The encoder's error.
        source: BoxError,
    },
    /// A frame is longer than a length prefix can say.
    #[error("request of {len} bytes is too large")]
    RequestTooLarge {
        /// Its length.
        len: usize,
    },
    /// Writing to the broker failed.
    #[error("cannot write to {address}")]
    Write {
        /// `host:port`.
        address: String,
        /// The socket's error.
        source: std::io::Error,
    },
    /// Reading from the broker failed (or timed out).
    #[error("cannot read from {address}")]
    Read {
        /// `host:port`.
        address: String,
        /// The socket's error.
        source: std::io::Error,
    },
    /// The broker closed the connection instead of answering.
    #[error("{address} closed the connection instead of answering")]
    Closed {
        /// `host:port`.
        address: String,
    },
    /// The broker closed the connection in the middle of a frame.
    #[error("{address} closed the connection inside a {len}-byte response")]
    ClosedInside {
        /// `host:port`.
        address: String,
        /// The frame's announced length.
        len: usize,
    },
    /// A response's length prefix is negative.
    #[error("{address} sent a negative frame length ({len})")]
    NegativeLength {
        /// `host:port`.
        address: String,
        /// The prefix.
        len: i32,
    },
    /// A response is over [`RESPONSE_BYTES_MAX`].
    #[error("response of {len} bytes from {address} is over the limit of {RESPONSE_BYTES_MAX}")]
    ResponseTooLarge {
        /// `host:port`.
        address: String,
        /// The frame's announced length.
        len: usize,
    },
    /// `kafka-protocol` could not decode a response.
    #[error("cannot decode {what} from {address}")]
    Decode {
        /// The message (`Metadata v12`, `the Metadata response header`).
        what: String,
        /// `host:port`.
        address: String,
        /// The decoder's error.
        source: BoxError,
    },
    /// A response answers another request.
    #[error("{address} answered correlation id {got} to request {sent}")]
    CorrelationMismatch {
        /// `host:port`.
        address: String,
        /// The request's correlation id.
        sent: i32,
        /// The response's.
        got: i32,
    },
    /// A response was decoded with bytes left over: client and broker
    /// disagree on the message's layout.
    #[error("{len} bytes left after the {what} response from {address}")]
    TrailingBytes {
        /// The message (`Metadata v12`).
        what: String,
        /// `host:port`.
        address: String,
        /// How many.
        len: usize,
    },
    /// [`Connection::wait_closed`] ran out of time.
    #[error("{address} kept the connection open for {timeout:?} ({discarded} bytes received)")]
    StillOpen {
        /// `host:port`.
        address: String,
        /// How long it waited.
        timeout: Duration,
        /// Bytes the broker sent meanwhile.
        discarded: usize,
    },
    /// A broker's answer carries a Kafka error code.
    #[error("{what}: {error} (error code {code}){}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(), code = error.code())]
    Broker {
        /// What was asked (`topic t`, `ListOffsets of t/0`).
        what: String,
        /// The error.
        error: ResponseError,
        /// The broker's own message, when it sent one.
        message: Option<String>,
    },
    /// The cluster metadata does not name this broker.
    #[error("broker {node} is not in the cluster metadata")]
    UnknownNode {
        /// Its node id.
        node: i32,
    },
    /// A broker named by the metadata could not be reached.
    #[error("cannot reach broker {node} at {address}")]
    NodeUnreachable {
        /// Its node id.
        node: i32,
        /// Its address.
        address: String,
        /// Why.
        source: Box<Error>,
    },
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether no broker could be reached at all (the commands' exit code 3).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}
