//! `weir produce`: one record per line of stdin (or a file), sent by a
//! librdkafka producer, with the same headers on every record. It waits for every delivery report, then says how many records
//! were sent and how many failed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{CliError, Result};
use clap::{Args, ValueEnum};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};

/// The longest line read as one record; a longer one fails that record.
/// Kafka's default `message.max.bytes` is about 1 MiB, so longer ones would
/// be refused by the broker anyway.
const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most `--header` flags.
const HEADERS_MAX: usize = 1_000;
/// How long librdkafka keeps trying to deliver a record.
const MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// How long the final flush waits beyond the message timeout.
const FLUSH_MARGIN_MS: u64 = 10_000;
/// The record header that tags a record (RocketMQ's tag), which views filter on.
const TAG_HEADER: &str = "weir.tag";
/// The record header asking the broker to deliver a record this many
/// milliseconds after its timestamp (decimal), set by `--delay`.
const DELAY_MS_HEADER: &str = "weir.delay-ms";
/// The record header asking the broker to deliver a record at this time, in
/// milliseconds since the Unix epoch (decimal), set by `--deliver-at`.
const DELIVER_AT_HEADER: &str = "weir.deliver-at-ms";
/// What `--delay` accepts, for its errors.
const DELAY_FORMS: &str = "a number with a unit (ms, s, m, h, d), or several in a row, \
such as 30s, 1500ms or 1h30m";

const PRODUCE_EXAMPLES: &str = "\
Examples:
  echo hello | weir produce orders
  printf 'k1:v1\\nk2:v2\\n' | weir produce orders --key-separator :
  weir produce orders --file records.txt --header source=import --acks 1 --compression zstd
  weir produce orders --idempotent --partition 0 < records.txt
  weir produce orders --tag VIP < vip-orders.txt
  weir produce orders --delay 30s < orders.txt
  weir produce orders --deliver-at 2026-12-24T18:00:00Z < greetings.txt

Each line is one record (the line break is not part of it; an empty line is
an empty record).

At the end, `sent N records, M failed` goes to stderr. Exit code 1 if any
record failed, 3 if no broker answered.";

/// `weir produce`.
#[derive(Debug, Args)]
#[command(after_help = PRODUCE_EXAMPLES)]
pub struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Read records from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of this text (not empty)
    /// into key and value; a line without it fails.
    #[arg(long, value_name = "TEXT", value_parser = super::parse_non_empty)]
    key_separator: Option<String>,
    /// A header on every record (repeatable), e.g. --header source=import.
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    header: Vec<(String, String)>,
    /// Send every record to this partition. [default: by key, or spread]
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Acknowledgements to wait for.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    /// Compression codec of record batches.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Tag every record (the `weir.tag` header), so views that filter on
    /// the tag serve it: `weir topic create-view --help`.
    #[arg(long, value_name = "TAG", value_parser = super::parse_non_empty)]
    tag: Option<String>,
    /// Deliver every record this long after its timestamp: a number with a
    /// unit (ms, s, m, h, d), or several, e.g. 30s, 1500ms, 1h30m, 0s.
    ///
    /// Sets the `weir.delay-ms` header. The broker acknowledges at once and
    /// delivers the record when due, as a copy with the headers
    /// weir.delayed-from-offset and weir.produce-time-ms. A delay longer
    /// than the topic config weir.delay.max.ms (default 40 days), or than
    /// its retention.ms (default 7 days), is refused, and so is any delay on
    /// a compacted topic or in a transaction (INVALID_RECORD).
    #[arg(long, value_name = "DURATION", value_parser = parse_delay_ms,
          conflicts_with = "deliver_at")]
    delay: Option<i64>,
    /// Deliver every record at this time: an RFC 3339 time such as
    /// 2026-12-24T18:00:00Z, or milliseconds since the Unix epoch.
    ///
    /// Sets the `weir.deliver-at-ms` header. The time takes Z or a
    /// +HH:MM/-HH:MM offset (2026-12-24T19:00:00+01:00), and may have a
    /// fraction of a second (2026-12-24T18:00:00.250Z); a time without a
    /// zone is UTC. The broker acknowledges at once and delivers the record
    /// when due, as a copy with the headers weir.delayed-from-offset and
    /// weir.produce-time-ms; a time already past is delivered at once. A
    /// time further ahead than the topic config weir.delay.max.ms (default
    /// 40 days), or than its retention.ms (default 7 days), is refused, and
    /// so is any delay on a compacted topic or in a transaction
    /// (INVALID_RECORD).
    #[arg(long, value_name = "TIME", value_parser = parse_deliver_at_ms)]
    deliver_at: Option<i64>,
    /// Idempotent producer: retries never write a record twice (needs --acks all).
    #[arg(long)]
    idempotent: bool,
}

/// Producer acknowledgements (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Acks {
    /// None: a record counts as sent once written to the socket.
    #[value(name = "0")]
    None,
    /// The leader appended the record.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica has the record.
    #[value(name = "all", alias = "-1")]
    All,
}

/// Batch compression codecs (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Counts delivery reports and keeps the first error for the summary.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, line: Box<u64>) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => self.fail(format!("line {line}: {err}")),
        }
    }
}

/// Runs `weir produce` against `brokers`.
pub fn run(brokers: &str, args: ProduceArgs) -> Result<()> {
    check_usage(&args)?;
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            File::open(path).map_err(CliError::io(format!("cannot open {}", path.display())))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    // Fails fast, with exit code 3, when no broker answers.
    let mut client = super::connect(brokers)?;
    let metadata = client.metadata(Some(std::slice::from_ref(&args.topic)))?;
    if let Some(topic) = metadata.topics.first() {
        // A missing topic is left to the broker: it may auto-create it.
        let code = topic.error_code;
        if code != 0 && code != 3 {
            weir_client::check(code, || format!("topic {}", args.topic))?;
        }
    }

    let producer = producer(brokers, &args)?;
    let headers = headers(&args);
    let mut reader = Lines::new(input);
    let mut line_number = 0u64;
    while let Some(line) = reader.next_line()? {
        line_number += 1;
        let line = match line {
            Line::Complete(line) => line,
            Line::TooLong => {
                producer.context().fail(format!(
                    "line {line_number}: longer than {LINE_BYTES_MAX} bytes"
                ));
                continue;
            }
        };
        let (key, value) = match &args.key_separator {
            None => (None, line.as_slice()),
            Some(separator) => match split_once(&line, separator.as_bytes()) {
                Some((key, value)) => (Some(key), value),
                None => {
                    producer.context().fail(format!(
                        "line {line_number}: no key separator {separator:?}"
                    ));
                    continue;
                }
            },
        };
        let mut record = BaseRecord::with_opaque_to(&args.topic, Box::new(line_number))
            .payload(value)
            .headers(headers.clone());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        send(&producer, record)?;
    }
    let flush_timeout = Duration::from_millis(MESSAGE_TIMEOUT_MS + FLUSH_MARGIN_MS);
    if let Err(err) = producer.flush(flush_timeout) {
        producer.context().fail(format!("flush: {err}"));
    }

    let deliveries = producer.context();
    let sent = deliveries.delivered.load(Ordering::Relaxed);
    let failed = deliveries.failed.load(Ordering::Relaxed);
    eprintln!("sent {sent} records, {failed} failed");
    if failed > 0 {
        let first = deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|first| first.clone())
            .unwrap_or_default();
        return Err(CliError::Undelivered { failed, first });
    }
    Ok(())
}

/// The checks of the command line that clap cannot make alone.
fn check_usage(args: &ProduceArgs) -> Result<()> {
    if args.delay.is_some() || args.deliver_at.is_some() {
        // The broker refuses a record with a delay header twice.
        let set_twice = args
            .header
            .iter()
            .find(|(key, _)| key == DELAY_MS_HEADER || key == DELIVER_AT_HEADER);
        if let Some((key, _)) = set_twice {
            return Err(super::usage(format!(
                "--header {key}=... and --delay or --deliver-at both ask for a delay; keep one"
            )));
        }
    }
    if args.header.len() > HEADERS_MAX {
        return Err(super::usage(format!(
            "at most {HEADERS_MAX} --header flags"
        )));
    }
    if args.idempotent && args.acks != Acks::All {
        return Err(super::usage(
            "--idempotent needs --acks all (an idempotent producer waits for every in-sync replica)",
        ));
    }
    Ok(())
}

fn producer(brokers: &str, args: &ProduceArgs) -> Result<BaseProducer<Deliveries>> {
    let mut config = super::rdkafka_config(brokers);
    config
        .set(
            "acks",
            match args.acks {
                Acks::None => "0",
                Acks::Leader => "1",
                Acks::All => "all",
            },
        )
        .set(
            "compression.type",
            match args.compression {
                Compression::None => "none",
                Compression::Gzip => "gzip",
                Compression::Snappy => "snappy",
                Compression::Lz4 => "lz4",
                Compression::Zstd => "zstd",
            },
        )
        .set("enable.idempotence", args.idempotent.to_string())
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("linger.ms", "5");
    config
        .create_with_context(Deliveries::default())
        .map_err(CliError::kafka("cannot create the producer"))
}

fn headers(args: &ProduceArgs) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(args.header.len() + 2);
    if let Some(tag) = &args.tag {
        headers = headers.insert(Header {
            key: TAG_HEADER,
            value: Some(tag.as_bytes()),
        });
    }
    let delay = match (args.delay, args.deliver_at) {
        (Some(delay_ms), _) => Some((DELAY_MS_HEADER, delay_ms)),
        (None, Some(deliver_at_ms)) => Some((DELIVER_AT_HEADER, deliver_at_ms)),
        (None, None) => None,
    };
    if let Some((key, ms)) = delay {
        headers = headers.insert(Header {
            key,
            value: Some(ms.to_string().as_bytes()),
        });
    }
    for (key, value) in &args.header {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

/// Queues one record, serving delivery reports while librdkafka's queue is
/// full. A record librdkafka refuses outright counts as failed.
fn send(
    producer: &BaseProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8], Box<u64>>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(MESSAGE_TIMEOUT_MS);
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if Instant::now() >= deadline {
                    return Err(CliError::Failed(format!(
                        "the producer queue stayed full for {MESSAGE_TIMEOUT_MS} ms"
                    )));
                }
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((err, back)) => {
                producer
                    .context()
                    .fail(format!("line {}: {err}", back.delivery_opaque));
                return Ok(());
            }
        }
    }
}

/// Parses `--delay`: one or more numbers each followed by a unit (`ms`,
/// `s`, `m`, `h`, `d`), summed, in milliseconds. A bare number is refused,
/// since nothing says whether it counts seconds or milliseconds.
fn parse_delay_ms(arg: &str) -> Result<i64, String> {
    let bad = |why: String| format!("{why}; write {DELAY_FORMS}");
    if arg.is_empty() {
        return Err(bad("empty".to_owned()));
    }
    if arg.starts_with('-') {
        return Err(bad(format!("{arg:?} is negative")));
    }
    let mut total_ms = 0i64;
    let mut rest = arg;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if digits.is_empty() {
            return Err(bad(format!("{arg:?} has {unit:?} where a number belongs")));
        }
        let unit_ms: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "{arg:?} has no unit after {digits}: add one (ms, s, m, h or d), \
                     such as 30s or 1500ms"
                ));
            }
            _ => return Err(bad(format!("{arg:?} has the unknown unit {unit:?}"))),
        };
        let too_long = || bad(format!("{arg:?} is too long to count in milliseconds"));
        let n: i64 = digits.parse().map_err(|_| too_long())?;
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_long)?;
        rest = next;
    }
    Ok(total_ms)
}

/// Parses `--deliver-at`: a plain decimal number is milliseconds since the
/// Unix epoch; anything else is an RFC 3339 time, read as `--from-datetime`
/// reads it ([`super::parse_datetime_ms`]).
fn parse_deliver_at_ms(arg: &str) -> Result<i64, String> {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        return arg
            .parse()
            .map_err(|_| format!("{arg:?} is too large for milliseconds since the Unix epoch"));
    }
    super::parse_datetime_ms(arg).map_err(|why| {
        format!("{why}; or write milliseconds since the Unix epoch, such as 1798135200000")
    })
}

fn split_once<'a>(line: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if separator.is_empty() {
        return None;
    }
    let at = line
        .windows(separator.len())
        .position(|window| window == separator)?;
    Some((line.get(..at)?, line.get(at + separator.len()..)?))
}

/// One input line.
enum Line {
    Complete(Vec<u8>),
    TooLong,
}

/// Reads lines as bytes (records need not be UTF-8), each bounded by
/// [`LINE_BYTES_MAX`]; a too-long line is skipped to its end.
struct Lines {
    input: Box<dyn BufRead>,
}

impl Lines {
    fn new(input: Box<dyn BufRead>) -> Lines {
        Lines { input }
    }

    fn next_line(&mut self) -> Result<Option<Line>> {
        let mut line = Vec::new();
        let limit = u64::try_from(LINE_BYTES_MAX).unwrap_or(u64::MAX) + 1;
        let read = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(CliError::io("cannot read the input"))?;
        if read == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(Line::Complete(line)));
        }
        if line.len() > LINE_BYTES_MAX {
            self.skip_rest_of_line()?;
            return Ok(Some(Line::TooLong));
        }
        // The last line of the input, without a line break.
        Ok(Some(Line::Complete(line)))
    }

    fn skip_rest_of_line(&mut self) -> Result<()> {
        loop {
            let buffer = self
                .input
                .fill_buf()
                .map_err(CliError::io("cannot read the input"))?;
            if buffer.is_empty() {
                return Ok(());
            }
            match buffer.iter().position(|byte| *byte == b'\n') {
                Some(at) => {
                    self.input.consume(at + 1);
                    return Ok(());
                }
                None => {
                    let len = buffer.len();
                    self.input.consume(len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &'static [u8]) -> Vec<Option<Vec<u8>>> {
        let mut reader = Lines::new(Box::new(input));
        let mut out = Vec::new();
        while let Ok(Some(line)) = reader.next_line() {
            out.push(match line {
                Line::Complete(line) => Some(line),
                Line::TooLong => None,
            });
        }
        out
    }

    #[test]
    fn each_line_is_one_record_without_its_line_break() {
        assert_eq!(
            lines(b"a\r\n\nb\xff\nlast"),
            vec![
                Some(b"a".to_vec()),
                Some(Vec::new()),
                Some(b"b\xff".to_vec()),
                Some(b"last".to_vec())
            ]
        );
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(
            split_once(b"k::v::w", b"::"),
            Some((&b"k"[..], &b"v::w"[..]))
        );
        assert_eq!(split_once(b"novalue", b":"), None);
    }

    #[test]
    fn delays_sum_numbers_with_units_in_milliseconds() {
        for (arg, ms) in [
            ("0s", 0),
            ("30s", 30_000),
            ("1500ms", 1_500),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("40d", 3_456_000_000),
            ("1h30m", 5_400_000),
            ("1d2h3m4s5ms", 93_784_005),
        ] {
            assert_eq!(parse_delay_ms(arg), Ok(ms), "{arg}");
        }
    }

    #[test]
    fn delays_without_a_unit_or_out_of_range_are_refused() {
        for (arg, why) in [
            ("30", "no unit after 30"),
            ("1h30", "no unit after 30"),
            ("", "empty"),
            ("-5s", "negative"),
            ("30x", "unknown unit \"x\""),
            ("1h 30m", "unknown unit \"h \""),
            ("1.5s", "unknown unit \".\""),
            ("soon", "\"soon\" where a number belongs"),
            ("s", "where a number belongs"),
            ("99999999999999999999ms", "too long"),
            ("106751991168d", "too long"),
            ("106751991167d106751991167d", "too long"),
        ] {
            let err = parse_delay_ms(arg).expect_err(arg);
            assert!(err.contains(why), "{arg}: {err}");
            assert!(err.contains("such as 30s"), "{arg}: {err}");
        }
    }

    #[test]
    fn delivery_times_are_rfc_3339_or_epoch_milliseconds() {
        const CHRISTMAS_EVE_MS: i64 = 1_798_135_200_000;
        for (arg, ms) in [
            ("2026-12-24T18:00:00Z", CHRISTMAS_EVE_MS),
            ("2026-12-24T18:00:00.250Z", CHRISTMAS_EVE_MS + 250),
            ("2026-12-24T18:00:00.123456789Z", CHRISTMAS_EVE_MS + 123),
            ("2026-12-24T19:00:00+01:00", CHRISTMAS_EVE_MS),
            ("2026-12-24T12:30:00-05:30", CHRISTMAS_EVE_MS),
            ("2026-12-24 18:00:00Z", CHRISTMAS_EVE_MS),
            ("2026-12-24T18:00:00", CHRISTMAS_EVE_MS),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("1970-01-01T00:00:00Z", 0),
            ("1798135200000", CHRISTMAS_EVE_MS),
            ("0", 0),
        ] {
            assert_eq!(parse_deliver_at_ms(arg), Ok(ms), "{arg}");
        }
    }

    #[test]
    fn impossible_delivery_times_are_refused() {
        for arg in [
            "2023-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-24T25:00:00Z",
            "2026-12-24T18:60:00Z",
            "2026-12-24T18:00:00+2:00",
            "2026-12-24",
            "2026-12-24X18:00:00Z",
            "1969-12-31T23:59:59Z",
            "",
            "tomorrow",
            "-1",
            "99999999999999999999",
        ] {
            let err = parse_deliver_at_ms(arg).expect_err(arg);
            assert!(!err.is_empty(), "{arg}");
        }
        let err = parse_deliver_at_ms("tomorrow").expect_err("tomorrow");
        assert!(err.contains("2026-11-24T08:00:00Z"), "{err}");
        assert!(err.contains("1798135200000"), "{err}");
    }
}
