//! Kafka wire framing on top of the `kafka-protocol` crate.
//!
//! This crate owns the bytes between the socket and a typed request: reading
//! a length-prefixed frame under a size limit, decoding the request header and
//! body for the versions the broker serves, and encoding a response with the
//! right header version. It never decides what a request means; the broker
//! does.

mod frame;

pub use frame::{
    DecodeError, Decoded, EncodeError, FrameError, RESPONSE_BYTES_MAX, Request,
    api_versions_unsupported_response, decode_request, encode_response, encode_response_within,
    read_frame,
};
pub use kafka_protocol;
