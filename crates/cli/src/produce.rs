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
/// Why `--delay` is refused: a flag the broker would ignore must not look
/// as if it worked.
const NOT_SERVED_YET: &str = "which the broker does not serve yet; the flag is refused rather \
than ignored, so that no record is sent believing it is delayed";
/// The record header that tags a record (RocketMQ's tag), which views filter on.
const TAG_HEADER: &str = "weir.tag";

const PRODUCE_EXAMPLES: &str = "\
Examples:
  echo hello | weir produce orders
  printf 'k1:v1\\nk2:v2\\n' | weir produce orders --key-separator :
  weir produce orders --file records.txt --header source=import --acks 1 --compression zstd
  weir produce orders --idempotent --partition 0 < records.txt
  weir produce orders --tag VIP < vip-orders.txt

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
    /// Refused: delays come with the broker's delayed messages.
    #[arg(long, hide = true, value_name = "DURATION")]
    delay: Option<String>,
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
    if args.delay.is_some() {
        return Err(super::usage(format!(
            "--delay needs delayed messages, {NOT_SERVED_YET}"
        )));
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
    let mut headers = OwnedHeaders::new_with_capacity(args.header.len() + 1);
    if let Some(tag) = &args.tag {
        headers = headers.insert(Header {
            key: TAG_HEADER,
            value: Some(tag.as_bytes()),
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
}
