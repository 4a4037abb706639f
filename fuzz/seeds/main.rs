//! Writes the seed inputs of the fuzz targets into `fuzz/corpus/<target>/`:
//! real request frames (ApiVersions, Metadata, Produce, Fetch,
//! ShareFetch), real RecordBatch payloads (plain, and compressed with each
//! codec), SASL exchanges as clients run them (valid, refused, malformed),
//! and damage to each file of a log, so the fuzzer starts from what
//! clients and disks send. Run by `scripts/fuzz.sh` when a corpus folder is
//! empty; it rewrites its seeds and leaves every other input alone.

use std::path::Path;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    ShareFetchRequest, TopicName, fetch_request, produce_request,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;
use weir_fuzz::batch;

/// A request frame body (no length prefix), as `decode_request` takes it.
fn frame<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, request: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")))
        .encode(&mut buf, R::header_version(version))
        .expect("a header encodes");
    request
        .encode(&mut buf, version)
        .expect("a request encodes");
    buf.to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("the corpus folder");
    std::fs::write(dir.join(name), bytes).expect("a seed writes");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    let payloads = root.join("produce_payload");
    for (name, codec) in codecs {
        write(&payloads, &format!("batch-{name}"), &batch(4, codec));
    }
    let mut two = BytesMut::new();
    two.put(batch(2, Compression::None));
    two.put(batch(3, Compression::Lz4));
    write(&payloads, "two-batches", &two);

    let requests = root.join("decode_request");
    write(
        &requests,
        "api-versions-v3",
        &frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
    );
    write(
        &requests,
        "metadata-v12",
        &frame(ApiKey::Metadata, 12, &MetadataRequest::default()),
    );
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(3, Compression::Zstd))),
                ]),
        ]);
    write(
        &requests,
        "produce-v9",
        &frame(ApiKey::Produce, 9, &produce),
    );
    let fetch = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition_max_bytes(1 << 20),
                ]),
        ]);
    write(&requests, "fetch-v12", &frame(ApiKey::Fetch, 12, &fetch));
    let share = ShareFetchRequest::default()
        .with_group_id(Some(kafka_protocol::messages::GroupId(
            StrBytes::from_static_str("workers"),
        )))
        .with_member_id(Some(StrBytes::from_static_str("m")))
        .with_max_records(500);
    write(
        &requests,
        "share-fetch-v2",
        &frame(ApiKey::ShareFetch, 2, &share),
    );
    write_log_recovery(&root.join("log_recovery"));
    write_sasl_exchange(&root.join("sasl_exchange"));
    write_oauth_exchange(&root.join("oauth_exchange"));
}

/// log_recovery: the first byte picks the change (`% 3`: append,
/// overwrite at, tear at), the file (`/ 3 % 4`: newest segment, index,
/// checkpoint, leader epochs) and whether its checksums are computed again
/// (`/ 12 % 2`); a position, little-endian, follows for overwrites and
/// tears. Positions below are those of the base log's fields
/// (docs/format.md).
fn write_log_recovery(dir: &Path) {
    let mode = |change: u8, file: u8, reseal: bool| change + 3 * file + 12 * u8::from(reseal);
    let at = |position: u16| position.to_le_bytes();
    let (segment, index, checkpoint, epochs) = (0, 1, 2, 3);
    let (append, overwrite, tear) = (0, 1, 2);
    let seeds: [(&str, Vec<u8>); 15] = [
        (
            "append-a-batch",
            [
                &[mode(append, segment, false)],
                &batch(2, Compression::None)[..],
            ]
            .concat(),
        ),
        (
            "overwrite-at-40",
            [&[mode(overwrite, segment, false)][..], &at(40), &[0xff; 4]].concat(),
        ),
        (
            "tear-at-100",
            [&[mode(tear, segment, false)][..], &at(100)].concat(),
        ),
        // Index entries are 64 bytes after a 64-byte header.
        (
            "index-append-a-zero-entry",
            [&[mode(append, index, false)][..], &[0; 64]].concat(),
        ),
        (
            "index-tear-inside-entry-2",
            [&[mode(tear, index, false)][..], &at(64 + 2 * 64 + 20)].concat(),
        ),
        (
            "index-tear-after-entry-7",
            [&[mode(tear, index, false)][..], &at(64 + 8 * 64)].concat(),
        ),
        (
            "index-tear-inside-header",
            [&[mode(tear, index, false)][..], &at(40)].concat(),
        ),
        // Entry 1's position (bytes 16..24) made entry 0's, checksummed.
        (
            "index-entry-1-points-at-entry-0-resealed",
            [
                &[mode(overwrite, index, true)][..],
                &at(64 + 64 + 16),
                &[0; 8],
            ]
            .concat(),
        ),
        // Entry 0's last offset delta (bytes 8..12) made 5, checksummed.
        (
            "index-entry-0-spans-6-offsets-resealed",
            [
                &[mode(overwrite, index, true)][..],
                &at(64 + 8),
                &[0, 0, 0, 5],
            ]
            .concat(),
        ),
        // The checkpoint's partition record starts at 24: index end
        // offset at 48, log start at 56.
        (
            "checkpoint-tear-at-50",
            [&[mode(tear, checkpoint, false)][..], &at(50)].concat(),
        ),
        (
            "checkpoint-log-start-3-resealed",
            [
                &[mode(overwrite, checkpoint, true)][..],
                &at(56),
                &3i64.to_be_bytes(),
            ]
            .concat(),
        ),
        (
            "checkpoint-index-end-3-resealed",
            [
                &[mode(overwrite, checkpoint, true)][..],
                &at(48),
                &3i64.to_be_bytes(),
            ]
            .concat(),
        ),
        // The leader epochs' partition record starts at 16: leader epoch
        // at 36, its first entry (epoch, start offset) at 44.
        (
            "epochs-tear-at-20",
            [&[mode(tear, epochs, false)][..], &at(20)].concat(),
        ),
        (
            "epochs-leader-epoch-7-resealed",
            [
                &[mode(overwrite, epochs, true)][..],
                &at(36),
                &7i32.to_be_bytes(),
            ]
            .concat(),
        ),
        (
            "epochs-first-epoch-starts-at-5-resealed",
            [
                &[mode(overwrite, epochs, true)][..],
                &at(48),
                &5i64.to_be_bytes(),
            ]
            .concat(),
        ),
    ];
    for (name, input) in seeds {
        write(dir, name, &input);
    }
}

/// oauth_exchange: the claims of the token the harness signs, then client
/// messages, separated by 0xFF. In the first message the harness puts the
/// signed token in place of `%t`.
fn write_oauth_exchange(dir: &Path) {
    let exchange = |claims: &str, messages: &[&str]| {
        let mut input = claims.as_bytes().to_vec();
        for message in messages {
            input.push(0xff);
            input.extend_from_slice(message.as_bytes());
        }
        input
    };
    let valid = r#"{"sub":"alice","iss":"https://issuer.example","aud":"weir","exp":1700000600}"#;
    let expired = r#"{"sub":"alice","iss":"https://issuer.example","aud":"weir","exp":1600000000}"#;
    let other_audience =
        r#"{"sub":"alice","iss":"https://issuer.example","aud":["kafka"],"exp":1700000600}"#;
    let plain = "n,,\x01auth=Bearer %t\x01\x01";
    let seeds = [
        ("valid", exchange(valid, &[plain])),
        (
            "valid-with-authzid-and-extension",
            exchange(
                valid,
                &["n,a=alice,\x01host=broker\x01auth=Bearer %t\x01\x01"],
            ),
        ),
        (
            "other-authzid",
            exchange(valid, &["n,a=bob,\x01auth=Bearer %t\x01\x01"]),
        ),
        ("expired-then-ack", exchange(expired, &[plain, "\x01"])),
        (
            "other-audience-then-garbage",
            exchange(other_audience, &[plain, "again"]),
        ),
        ("claims-not-json", exchange("{sub", &[plain, "\x01"])),
        ("after-done", exchange(valid, &[plain, plain])),
        (
            "unsigned-token",
            exchange(
                valid,
                &["n,,\x01auth=Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.\x01\x01"],
            ),
        ),
    ];
    for (name, input) in seeds {
        write(dir, name, &input);
    }
}

/// sasl_exchange: the first byte picks the mechanism (0 PLAIN, 1
/// SCRAM-SHA-256, 2 SCRAM-SHA-512); client messages follow, separated by
/// 0xFF. In a SCRAM final message the harness fills in `%r` (the server's
/// nonce) and a closing `,p=%p` (the password's proof).
fn write_sasl_exchange(dir: &Path) {
    let exchange = |mechanism: u8, messages: &[&str]| {
        let mut input = vec![mechanism];
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                input.push(0xff);
            }
            input.extend_from_slice(message.as_bytes());
        }
        input
    };
    let (plain, sha256, sha512) = (0, 1, 2);
    let first = "n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
    let seeds = [
        ("plain-valid", exchange(plain, &["\0alice\0alice-secret"])),
        (
            "plain-valid-with-authzid",
            exchange(plain, &["alice\0alice\0alice-secret"]),
        ),
        ("plain-wrong-password", exchange(plain, &["\0alice\0guess"])),
        (
            "plain-unknown-user",
            exchange(plain, &["\0bob\0alice-secret"]),
        ),
        (
            "plain-other-authzid",
            exchange(plain, &["bob\0alice\0alice-secret"]),
        ),
        (
            "plain-after-done",
            exchange(plain, &["\0alice\0alice-secret", "\0alice\0alice-secret"]),
        ),
        ("scram-sha-256-client-first", exchange(sha256, &[first])),
        ("scram-sha-512-client-first", exchange(sha512, &[first])),
        (
            "scram-sha-256-valid",
            exchange(sha256, &[first, "c=biws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-512-valid",
            exchange(sha512, &[first, "c=biws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-256-after-done",
            exchange(sha256, &[first, "c=biws,r=%r,p=%p", "c=biws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-512-authzid",
            exchange(
                sha512,
                &["n,a=alice,n=alice,r=abc", "c=bixhPWFsaWNlLA==,r=%r,p=%p"],
            ),
        ),
        (
            "scram-sha-256-flag-y",
            exchange(sha256, &["y,,n=alice,r=abc", "c=eSws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-512-doubled-nonce",
            exchange(sha512, &["n,,n=alice,r=abc", "c=biws,r=abc%r,p=%p"]),
        ),
        (
            "scram-sha-256-extensions",
            exchange(
                sha256,
                &["n,,n=alice,r=abc,ext=1", "c=biws,r=%r,ext=2,p=%p"],
            ),
        ),
        (
            "scram-sha-512-unknown-user",
            exchange(sha512, &["n,,n=bob,r=abc", "c=biws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-256-escaped-user",
            exchange(sha256, &["n,,n=al=2Cice=3D,r=abc", "c=biws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-256-wrong-proof",
            exchange(
                sha256,
                &[
                    first,
                    "c=biws,r=%r,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                ],
            ),
        ),
        (
            "scram-sha-256-wrong-nonce",
            exchange(sha256, &[first, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=%p"]),
        ),
        (
            "scram-sha-512-wrong-binding",
            exchange(sha512, &[first, "c=eSws,r=%r,p=%p"]),
        ),
        (
            "scram-sha-256-tokenauth",
            exchange(sha256, &["n,,n=alice,r=abc,tokenauth=true"]),
        ),
        (
            "scram-sha-512-channel-binding",
            exchange(sha512, &["p=tls-unique,,n=alice,r=abc"]),
        ),
        (
            "scram-sha-256-mandatory-extension",
            exchange(sha256, &["n,,m=x,n=alice,r=abc"]),
        ),
    ];
    for (name, input) in seeds {
        write(dir, name, &input);
    }
}
