//! Frames: `int32 size` followed by `size` bytes of header and body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Step by which a frame larger than [`FRAME_PREALLOC_BYTES_MAX`] grows as
/// its bytes arrive.
const FRAME_CHUNK_BYTES: usize = 64 * 1024;
/// A frame up to this size gets its whole buffer at once. Growing it in
/// steps instead cost a reallocation copy of every produced byte (measured
/// in docs/benchmarks.md); above it, growth follows the bytes that arrive.
const FRAME_PREALLOC_BYTES_MAX: usize = 1024 * 1024;

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
    let size = match usize::try_from(size) {
        Ok(size) if size <= max_bytes => size,
        _ => {
            return Err(FrameError::TooLarge {
                size: size.into(),
                max: max_bytes,
            });
        }
    };
    // Past FRAME_PREALLOC_BYTES_MAX the buffer grows with the bytes that
    // actually arrive, so a peer that announces a large frame and then stalls
    // holds at most that much or what it sent.
    let first = if size <= FRAME_PREALLOC_BYTES_MAX {
        size
    } else {
        FRAME_CHUNK_BYTES
    };
    let mut frame = BytesMut::with_capacity(first);
    let mut body = reader.take(size as u64);
    while frame.len() < size {
        if frame.len() == frame.capacity() {
            let grow = frame.len().max(FRAME_CHUNK_BYTES).min(size - frame.len());
            frame.reserve(grow);
        }
        if body.read_buf(&mut frame).await? == 0 {
            return Err(FrameError::Truncated);
        }
    }
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
// A request is moved once, straight into its handler; boxing it would add an
// allocation per request to save a few bytes on the rare ApiVersions fallback.
#[allow(clippy::large_enum_variant)]
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

/// Largest response frame body (everything after the size prefix) that the
/// prefix, an `int32`, can announce.
pub const RESPONSE_BYTES_MAX: usize = i32::MAX as usize;

/// A response could not be encoded; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A field does not fit the version: a broker bug.
    #[error("cannot encode response: {0}")]
    Malformed(String),
    /// The response is larger than the limit, or than an `int32` size
    /// prefix can announce.
    #[error("response of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The encoded size, without the size prefix.
        size: usize,
        /// The limit it exceeds.
        max: usize,
    },
}

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
/// version, then the body. The frame may be as large as an `int32` prefix allows.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    encode_response_within(api, version, correlation_id, body, RESPONSE_BYTES_MAX)
}

/// Encode a response frame whose body (header included) is at most
/// `max_bytes`; a larger one is [`EncodeError::TooLarge`], never a frame
/// with a wrong or negative size prefix.
pub fn encode_response_within(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    max_bytes: usize,
) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header =
        kafka_protocol::messages::ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut out, api.response_header_version(version))
        .map_err(|e| EncodeError::Malformed(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| EncodeError::Malformed(e.to_string()))?;
    let prefix = size_prefix(out.len() - 4, max_bytes)?;
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(out.freeze())
}

/// The size prefix announcing `size` bytes, if `size` is within `max_bytes`
/// and fits an `int32`.
fn size_prefix(size: usize, max_bytes: usize) -> Result<i32, EncodeError> {
    let max = max_bytes.min(RESPONSE_BYTES_MAX);
    match i32::try_from(size) {
        Ok(prefix) if size <= max => Ok(prefix),
        _ => Err(EncodeError::TooLarge { size, max }),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, RequestKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    const LIMIT: usize = 1024;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A request frame body (header and body, no size prefix).
    fn request_bytes(api: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> Bytes {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .encode(&mut out, api.request_header_version(version))
            .expect("header encodes");
        body.encode(&mut out, version).expect("body encodes");
        out.freeze()
    }

    fn serves_only_api_versions_and_metadata(api: ApiKey) -> Option<VersionRange> {
        match api {
            ApiKey::ApiVersions => Some(VersionRange { min: 0, max: 3 }),
            ApiKey::Metadata => Some(VersionRange { min: 1, max: 12 }),
            _ => None,
        }
    }

    #[tokio::test]
    async fn whole_frame_is_read_and_the_next_one_waits() {
        let mut wire = framed(b"first");
        wire.extend(framed(b"second"));
        let mut reader = wire.as_slice();
        let first = read_frame(&mut reader, LIMIT)
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(first.as_ref(), b"first");
        let second = read_frame(&mut reader, LIMIT)
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(second.as_ref(), b"second");
        assert!(
            read_frame(&mut reader, LIMIT)
                .await
                .expect("clean close")
                .is_none()
        );
    }

    #[tokio::test]
    async fn frame_arriving_in_pieces_is_reassembled() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let wire = framed(&body);
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in wire.chunks(777) {
                client.write_all(piece).await.expect("write");
            }
        });
        let frame = read_frame(&mut server, 1 << 20)
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(frame.as_ref(), body.as_slice());
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn frame_over_the_limit_is_refused_without_reading_it() {
        let wire = framed(&vec![0u8; LIMIT + 1]);
        let err = read_frame(&mut wire.as_slice(), LIMIT).await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { size, max } if size == LIMIT as i64 + 1 && max == LIMIT)
        );
        // A peer announcing 2 GiB and sending nothing more is refused at once.
        let err = read_frame(&mut &i32::MAX.to_be_bytes()[..], LIMIT)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn negative_size_is_refused() {
        let err = read_frame(&mut &(-1i32).to_be_bytes()[..], LIMIT)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { size: -1, .. }));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_a_clean_close() {
        let wire = framed(b"0123456789");
        let err = read_frame(&mut &wire[..8], LIMIT).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        let err = read_frame(&mut &wire[..2], LIMIT).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
    }

    #[test]
    fn served_request_decodes_with_its_header() {
        let body = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
        let frame = request_bytes(ApiKey::Metadata, 9, 77, &body);
        let Decoded::Request(req) =
            decode_request(frame, serves_only_api_versions_and_metadata).expect("decodes")
        else {
            panic!("expected a request");
        };
        assert_eq!((req.api_key, req.version), (ApiKey::Metadata, 9));
        assert_eq!(req.header.correlation_id, 77);
        assert!(matches!(req.body, RequestKind::Metadata(m) if m.topics.is_none()));
    }

    #[test]
    fn unknown_or_unserved_api_keys_are_refused() {
        let mut frame = BytesMut::new();
        frame.put_i16(999);
        frame.put_i16(0);
        frame.put_i32(1);
        frame.put_i16(-1);
        let err = decode_request(frame.freeze(), serves_only_api_versions_and_metadata);
        assert!(matches!(err, Err(DecodeError::UnknownApi(999))));
        let produce = request_bytes(
            ApiKey::Produce,
            9,
            1,
            &RequestKind::Produce(Default::default()),
        );
        let err = decode_request(produce, serves_only_api_versions_and_metadata);
        assert!(matches!(err, Err(DecodeError::UnknownApi(0))));
    }

    #[test]
    fn versions_outside_the_served_range_are_refused() {
        let body = RequestKind::Metadata(MetadataRequest::default());
        for version in [0, 13] {
            let frame = request_bytes(ApiKey::Metadata, version, 1, &body);
            let err = decode_request(frame, serves_only_api_versions_and_metadata);
            assert!(
                matches!(err, Err(DecodeError::UnsupportedVersion { api: ApiKey::Metadata, version: v }) if v == version),
                "v{version}: {err:?}"
            );
        }
    }

    #[test]
    fn newer_api_versions_request_gets_the_kip_511_answer() {
        // The body of a version the broker does not know cannot be parsed, so
        // only the fixed header fields are read.
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::ApiVersions as i16);
        frame.put_i16(4);
        frame.put_i32(4242);
        frame.put_slice(b"\x00\x07unknown future layout");
        let decoded = decode_request(frame.freeze(), serves_only_api_versions_and_metadata);
        assert!(matches!(
            decoded,
            Ok(Decoded::UnsupportedApiVersions {
                correlation_id: 4242
            })
        ));
    }

    #[test]
    fn malformed_or_short_frames_are_refused() {
        let err = decode_request(
            Bytes::from_static(b"\x00\x03\x00"),
            serves_only_api_versions_and_metadata,
        );
        assert!(matches!(err, Err(DecodeError::TooShort(3))));
        let mut whole = BytesMut::from(
            request_bytes(
                ApiKey::ApiVersions,
                3,
                5,
                &RequestKind::ApiVersions(
                    ApiVersionsRequest::default()
                        .with_client_software_name("kcat".into())
                        .with_client_software_version("1.7".into()),
                ),
            )
            .as_ref(),
        );
        whole.truncate(whole.len() - 4);
        let err = decode_request(whole.freeze(), serves_only_api_versions_and_metadata);
        assert!(
            matches!(
                err,
                Err(DecodeError::Malformed {
                    api: ApiKey::ApiVersions,
                    version: 3,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unsupported_api_versions_answer_is_a_v0_body_with_error_35() {
        let served = [
            (ApiKey::ApiVersions, VersionRange { min: 0, max: 3 }),
            (ApiKey::Metadata, VersionRange { min: 1, max: 12 }),
        ];
        let mut frame = api_versions_unsupported_response(4242, &served).expect("encodes");
        let size = frame.get_i32();
        assert_eq!(size as usize, frame.len());
        assert_eq!(
            frame.get_i32(),
            4242,
            "correlation id, in a v0 response header"
        );
        let body = ApiVersionsResponse::decode(&mut frame, 0).expect("v0 body");
        assert!(frame.is_empty(), "nothing after the v0 body");
        assert_eq!(body.error_code, 35);
        let listed: Vec<(i16, i16, i16)> = body
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        assert_eq!(listed, [(18, 0, 3), (3, 1, 12)]);
    }

    #[test]
    fn a_size_that_overflows_an_int32_prefix_is_refused() {
        assert_eq!(size_prefix(10, usize::MAX).expect("fits"), 10);
        assert_eq!(
            size_prefix(RESPONSE_BYTES_MAX, usize::MAX).expect("fits"),
            i32::MAX
        );
        for size in [RESPONSE_BYTES_MAX + 1, u32::MAX as usize + 5, usize::MAX] {
            assert!(
                matches!(
                    size_prefix(size, usize::MAX),
                    Err(EncodeError::TooLarge {
                        max: RESPONSE_BYTES_MAX,
                        ..
                    })
                ),
                "{size}"
            );
        }
    }

    #[test]
    fn a_response_over_the_limit_is_an_error_not_a_frame() {
        use kafka_protocol::messages::MetadataResponse;
        use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
        let topics = (0..100)
            .map(|i| {
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(format!("topic-{i}")))))
            })
            .collect();
        let body = ResponseKind::Metadata(MetadataResponse::default().with_topics(topics));
        let whole = encode_response(ApiKey::Metadata, 12, 1, &body).expect("encodes");
        let size = whole.len() - 4;
        let exact = encode_response_within(ApiKey::Metadata, 12, 1, &body, size).expect("fits");
        assert_eq!(exact, whole);
        let err = encode_response_within(ApiKey::Metadata, 12, 1, &body, size - 1).unwrap_err();
        assert!(
            matches!(err, EncodeError::TooLarge { size: s, max } if s == size && max == size - 1),
            "{err:?}"
        );
    }

    #[test]
    fn flexible_response_gets_a_tagged_header_except_api_versions() {
        let body = ResponseKind::Metadata(Default::default());
        let mut v9 = encode_response(ApiKey::Metadata, 9, 8, &body).expect("encodes");
        let mut v8 = encode_response(ApiKey::Metadata, 8, 8, &body).expect("encodes");
        assert_eq!(v9.get_i32() as usize, v9.len());
        assert_eq!(v8.get_i32() as usize, v8.len());
        assert_eq!(
            (v9.get_i32(), v9.get_u8()),
            (8, 0),
            "v9 header ends with empty tagged fields"
        );
        assert_eq!(v8.get_i32(), 8);
        let api = ResponseKind::ApiVersions(Default::default());
        let mut v3 = encode_response(ApiKey::ApiVersions, 3, 9, &api).expect("encodes");
        v3.get_i32();
        assert_eq!(v3.get_i32(), 9);
        let decoded =
            ApiVersionsResponse::decode(&mut v3, 3).expect("v3 body right after a v0 header");
        assert_eq!(decoded.error_code, 0);
    }
}
