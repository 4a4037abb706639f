//! Writes the seed inputs of the fuzz targets into `fuzz/corpus/<target>/`:
//! real request frames (ApiVersions, Metadata, Produce, Fetch,
//! ShareFetch) and real RecordBatch payloads (plain, and compressed with
//! each codec), so the fuzzer starts from what clients send. Run by
//! `scripts/fuzz.sh` when a corpus folder is empty.

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
    // log_recovery: its first byte picks how the segment is changed.
    let recovery = root.join("log_recovery");
    write(
        &recovery,
        "append-a-batch",
        &[[0u8].as_slice(), &batch(2, Compression::None)].concat(),
    );
    write(
        &recovery,
        "overwrite-at-40",
        &[1, 40, 0, 0xff, 0xff, 0xff, 0xff],
    );
    write(&recovery, "tear-at-100", &[2, 100, 0]);
}
