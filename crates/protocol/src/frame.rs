//! Frames: `int32 size` followed by `size` bytes of header and body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read; the connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The size prefix is negative or over the configured maximum.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced size.
        size: i64,
        /// The limit (`socket.request.max.bytes`).
        max: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Read one frame into a fresh buffer. `Ok(None)` means the peer closed the
/// connection cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as usize > max_bytes {
        return Err(FrameError::TooLarge {
            size: size.into(),
            max: max_bytes,
        });
    }
    let mut frame = BytesMut::zeroed(size as usize);
    reader
        .read_exact(&mut frame)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some(frame.freeze()))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// The request header.
    pub header: RequestHeader,
    /// The API.
    pub api_key: ApiKey,
    /// The API version.
    pub version: i16,
    /// The body.
    pub body: RequestKind,
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A request the broker serves.
    Request(Request),
    /// ApiVersions at a version newer than served: Kafka answers it with a
    /// v0 body carrying UNSUPPORTED_VERSION (KIP-511).
    UnsupportedApiVersions {
        /// Echoed in the response.
        correlation_id: i32,
    },
}

/// Why a frame could not be decoded; Kafka closes the connection in each case.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a request header.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// An API key Kafka does not define, or one the broker does not serve.
    #[error("unsupported API key {0}")]
    UnknownApi(i16),
    /// A version the broker does not serve.
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The header or body is malformed.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// The version.
        version: i16,
        /// The decoder's complaint.
        reason: String,
    },
}

/// A response could not be encoded (a field does not fit the version); a broker bug.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode response: {0}")]
pub struct EncodeError(pub String);

/// Decode a frame. `served` gives the versions the broker serves per API, or
/// `None` for an API it does not serve.
pub fn decode_request(
    frame: Bytes,
    served: impl Fn(ApiKey) -> Option<VersionRange>,
) -> Result<Decoded, DecodeError> {
    let mut peek = frame.as_ref();
    if peek.remaining() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api = ApiKey::try_from(key).map_err(|_| DecodeError::UnknownApi(key))?;
    let range = served(api).ok_or(DecodeError::UnknownApi(key))?;
    if version < range.min || version > range.max {
        if api == ApiKey::ApiVersions && version > range.max {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        return Err(DecodeError::UnsupportedVersion { api, version });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api,
        version,
        reason,
    };
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    let body = RequestKind::decode(api, &mut buf, version).map_err(|e| malformed(e.to_string()))?;
    Ok(Decoded::Request(Request {
        header,
        api_key: api,
        version,
        body,
    }))
}

/// The v0 ApiVersions response Kafka sends to a client that asked for a newer
/// version than served, listing what is served so the client can retry.
pub fn api_versions_unsupported_response(
    correlation_id: i32,
    served: &[(ApiKey, VersionRange)],
) -> Result<Bytes, EncodeError> {
    let mut body = ApiVersionsResponse::default();
    body.error_code = 35; // UNSUPPORTED_VERSION
    body.api_keys = served
        .iter()
        .map(|(key, range)| {
            kafka_protocol::messages::api_versions_response::ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect();
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
}

/// Encode a response frame: size prefix, response header of the right
/// version, then the body.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header =
        kafka_protocol::messages::ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut out, api.response_header_version(version))
        .map_err(|e| EncodeError(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| EncodeError(e.to_string()))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}
