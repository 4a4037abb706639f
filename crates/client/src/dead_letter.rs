//! What a redrive of dead letters means, shared by `weir dlq redrive` (on
//! librdkafka) and the admin API's `POST /v1/dead-letter-topics/{topic}/redrive`
//! (in-process Kafka requests), so the two can be used in turn on one
//! dead-letter topic: the progress group and its default name, the
//! dead-letter headers (KIP-1191's `__dlq.errors.*`) and the `--where`
//! filters on them, whether a dead letter carries a copy of its record,
//! the `weir.redriven-from` header a redriven record gets, and where it
//! goes. Nothing here does I/O.

use std::collections::BTreeMap;

/// The dead-letter headers (KIP-1191) start with this.
pub const HEADER_PREFIX: &str = "__dlq.errors.";
/// The header a redriven record carries: the dead letter it came from, as
/// `topic/partition/offset`.
pub const REDRIVEN_FROM: &str = "weir.redriven-from";
/// The progress group of a dead-letter topic is this followed by the
/// topic's name, unless the caller names one.
pub const PROGRESS_GROUP_PREFIX: &str = "weir-dlq-redrive.";
/// The keys a filter may name: each is the `__dlq.errors.KEY` header.
pub const FILTER_KEYS: [&str; 6] = [
    "topic",
    "partition",
    "offset",
    "group",
    "delivery.count",
    "message",
];

/// The group whose committed offsets keep how far `topic` was redriven:
/// `group` when given, `weir-dlq-redrive.<topic>` otherwise.
pub fn progress_group(topic: &str, group: Option<&str>) -> String {
    group.map_or_else(|| format!("{PROGRESS_GROUP_PREFIX}{topic}"), str::to_owned)
}

/// `Err` naming the first filter key that is not one of [`FILTER_KEYS`].
pub fn check_filter_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for key in keys {
        if !FILTER_KEYS.contains(&key) {
            return Err(format!(
                "{key}: a filter key is one of {}",
                FILTER_KEYS.join(", ")
            ));
        }
    }
    Ok(())
}

/// A record's dead-letter headers by name, without the prefix; a header
/// with a null value is left out, and a value that is not UTF-8 is read
/// lossily.
pub fn dead_letter_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(HEADER_PREFIX)?;
            Some((
                name.to_owned(),
                String::from_utf8_lossy(value?).into_owned(),
            ))
        })
        .collect()
}

/// Whether every filter `(key, value)` holds: the dead letter's
/// `__dlq.errors.KEY` header is `value`.
pub fn matches<'a>(
    dead_letter: &BTreeMap<String, String>,
    filters: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    filters
        .into_iter()
        .all(|(key, value)| dead_letter.get(key).map(String::as_str) == Some(value))
}

/// The value of the [`REDRIVEN_FROM`] header for the dead letter at
/// `offset` of `partition` of `topic`.
pub fn redriven_from(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// Where a dead letter's record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

impl Source {
    /// From a dead letter's headers ([`dead_letter_headers`]); `None` when
    /// the record is not a dead letter (no topic, partition or offset).
    pub fn of(dead_letter: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            topic: dead_letter.get("topic")?.clone(),
            partition: dead_letter.get("partition")?.parse().ok()?,
            offset: dead_letter.get("offset")?.parse().ok()?,
        })
    }

    /// The partition a redriven record goes to when `to` has
    /// `to_partitions` partitions: its own when `to` is its topic and still
    /// has it; `None` leaves the choice to the partitioner.
    pub fn keeps_partition(&self, to: &str, to_partitions: usize) -> Option<i32> {
        (self.topic == to && usize::try_from(self.partition).is_ok_and(|p| p < to_partitions))
            .then_some(self.partition)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A record to send: key, value and headers, duplicate header keys kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a null value.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// The headers of a record that are neither dead-letter headers nor
/// [`REDRIVEN_FROM`]: what a redriven record keeps of them.
pub fn own_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .into_iter()
        .filter(|(key, _)| !key.starts_with(HEADER_PREFIX) && *key != REDRIVEN_FROM)
        .map(|(key, value)| (key.to_owned(), value.map(<[u8]>::to_vec)))
        .collect()
}

/// The copy of its record a dead letter carries
/// (`errors.deadletterqueue.copy.record.enable`), given the dead letter's
/// key, value and [`own_headers`]; `None` when it carries none (no key, no
/// value, no header of its own), and the original must be read back.
pub fn copied(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: Vec<(String, Option<Vec<u8>>)>,
) -> Option<Content> {
    if key.is_none() && value.is_none() && headers.is_empty() {
        return None;
    }
    Some(Content {
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers,
    })
}

/// The partition librdkafka's default partitioner (`consistent_random`)
/// gives a record with `key` among `partitions`: the CRC-32 of the key
/// modulo the count. `None` for a null key (which librdkafka places at
/// random) or no partitions.
pub fn partition_for_key(key: Option<&[u8]>, partitions: usize) -> Option<i32> {
    let count = u32::try_from(partitions).ok().filter(|n| *n > 0)?;
    i32::try_from(crc32(key?) % count).ok()
}

/// CRC-32 (IEEE 802.3, as librdkafka's `rd_crc32`), bit by bit: keys are
/// short.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(
        pairs: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, Option<&'static [u8]>)> {
        pairs
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect()
    }

    #[test]
    fn a_dead_letter_names_its_source_and_filters_match_its_headers() {
        let dead = dead_letter_headers(headers(&[
            ("__dlq.errors.topic", "orders"),
            ("__dlq.errors.partition", "2"),
            ("__dlq.errors.offset", "41"),
            ("__dlq.errors.message", "Offset rejected by client."),
            ("trace", "x"),
        ]));
        let source = Source::of(&dead).expect("a dead letter");
        assert_eq!(source.to_string(), "orders/2/41");
        assert_eq!(source.keeps_partition("orders", 3), Some(2));
        assert_eq!(source.keeps_partition("orders", 2), None);
        assert_eq!(source.keeps_partition("retry", 3), None);
        assert!(matches(&dead, [("partition", "2"), ("offset", "41")]));
        assert!(!matches(&dead, [("group", "g")]));
        assert!(Source::of(&dead_letter_headers(headers(&[("trace", "x")]))).is_none());
    }

    #[test]
    fn only_known_filter_keys_are_taken() {
        assert!(check_filter_keys(["offset", "delivery.count"]).is_ok());
        let err = check_filter_keys(["colour"]).expect_err("unknown");
        assert!(err.starts_with("colour: "), "{err}");
    }

    #[test]
    fn a_copy_keeps_its_own_headers_and_none_means_read_the_original() {
        let own = own_headers(headers(&[
            ("__dlq.errors.topic", "orders"),
            ("weir.redriven-from", "dlq/0/1"),
            ("a", "1"),
            ("a", "2"),
        ]));
        assert_eq!(
            own,
            vec![
                ("a".to_owned(), Some(b"1".to_vec())),
                ("a".to_owned(), Some(b"2".to_vec()))
            ]
        );
        assert!(copied(None, None, Vec::new()).is_none());
        assert!(copied(None, Some(b"v"), Vec::new()).is_some());
        assert_eq!(progress_group("dlq.g", None), "weir-dlq-redrive.dlq.g");
        assert_eq!(progress_group("dlq.g", Some("mine")), "mine");
    }

    #[test]
    fn keys_are_placed_as_librdkafkas_consistent_partitioner_places_them() {
        // CRC-32 check value of the standard.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            partition_for_key(Some(b"123456789"), 7),
            Some(i32::try_from(0xCBF4_3926u32 % 7).unwrap_or(-1))
        );
        assert_eq!(partition_for_key(None, 7), None);
        assert_eq!(partition_for_key(Some(b"k"), 0), None);
    }
}
