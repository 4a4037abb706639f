//! weir-bench: `weir bench`, load generators that measure any
//! Kafka-compatible broker through librdkafka.
//!
//! This crate owns the command line of the modes (`produce`, `consume`,
//! `e2e`, `group-join`, `commit`, `txn`, `delay`, `view`, the scale modes `partitions`, `batches` and
//! `lookup`, and `limits`, which measures the machine rather than a broker);
//! the client set-up, the workers and the report live in the submodules. The figures in docs/benchmarks.md come from here, so the
//! workers lean on librdkafka's own batching and delivery callbacks rather
//! than awaiting each record: the client shares the machine's cores with the
//! broker it measures.

mod batches;
mod client;
mod commit;
mod connect;
mod consume;
mod delay;
mod e2e;
mod group;
mod limits;
mod partitions;
mod produce;
mod report;
mod scale;
mod send;
mod share;
mod txn;
mod view;

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

/// The largest record value a producer builds (`--size`); the value buffer is
/// allocated once at this size at most.
const RECORD_SIZE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The most partitions `--partitions` asks the broker to create.
const PARTITIONS_MAX: i64 = 100_000;
/// The most producer or consumer threads a run starts.
const WORKERS_MAX: i64 = 64;
/// The most records one producer may have sent without a delivery report.
const IN_FLIGHT_MESSAGES_MAX: i64 = 1_000_000;

const PRODUCE_EXAMPLES: &str = "\
Examples:
  weir bench produce --topic T --size 100 --count 1000000
  weir bench produce --size 1024 --duration 30s --partitions 8 --producers 2 --json
  weir bench produce --acks 1 --compression lz4 --rate 50000 -X enable.idempotence=true

Records have no key and are spread round-robin over all the topic's
partitions by the bench itself, one record at a time. Latency is measured from
send to delivery report. At an unlimited rate each producer keeps up to
--max-in-flight records queued, so latency then includes that queueing; give a
--rate below the broker's capacity to see service latency.

MB is 10^6 bytes; bytes count record values only.
Exit status: 0 on success; 1 if any record failed; 3 if no broker answered
within 10 s.";

const CONSUME_EXAMPLES: &str = "\
Examples:
  weir bench consume --topic T --count 1000000
  weir bench consume --duration 30s --consumers 2 --json

The topic must exist (run `weir bench produce` first). Partitions are assigned
directly, without a consumer group, and read from the beginning; nothing is
committed. The run ends at --count records, after --duration, or when no record
has arrived for --idle-timeout.

MB is 10^6 bytes; bytes count record keys and values.
Exit status: 0 on success; 1 if a fetch failed; 3 if no broker answered
within 10 s.";

const E2E_EXAMPLES: &str = "\
Examples:
  weir bench e2e --rate 10000 --count 300000
  weir bench e2e --rate 1000 --duration 60s --size 1024 --json

One producer sends at --rate while one consumer reads the new records. Each
value starts with a run id and the send time in microseconds, so --size must be
at least 16, and records from other runs are ignored. A record acknowledged but
not received within --idle-timeout of the last send counts as an error.

MB is 10^6 bytes; bytes count record values only.
Exit status: 0 on success; 1 if any record failed or went missing; 3 if no
broker answered within 10 s.";

/// The bench modes.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records and measure throughput and send-to-acknowledgement latency.
    #[command(after_help = PRODUCE_EXAMPLES)]
    Produce(ProduceArgs),
    /// Read a topic from the beginning and measure throughput.
    #[command(after_help = CONSUME_EXAMPLES)]
    Consume(ConsumeArgs),
    /// Produce at a steady rate and measure latency from send to receipt by a consumer.
    #[command(after_help = E2E_EXAMPLES)]
    E2e(E2eArgs),
    /// Time a consumer group takes to assign every partition once its members subscribed.
    #[command(after_help = group::GROUP_JOIN_EXAMPLES)]
    GroupJoin(group::GroupJoinArgs),
    /// Commit offsets as fast as one group member can; commits/s and commit latency.
    #[command(after_help = commit::COMMIT_EXAMPLES)]
    Commit(commit::CommitArgs),
    /// Transactional produce against plain produce, commit latency, and
    /// read_committed against read_uncommitted consume.
    #[command(after_help = txn::TXN_EXAMPLES)]
    Txn(txn::TxnArgs),
    /// Share group consume throughput against partitioned consumers, and reject-to-dead-letter latency.
    #[command(after_help = share::SHARE_EXAMPLES)]
    Share(share::ShareArgs),
    /// Produce delayed records and measure how late their copies arrive, and the broker's RSS.
    #[command(after_help = delay::DELAY_EXAMPLES)]
    Delay(delay::DelayArgs),
    /// Read tag-filtered views against their source: time, disk reads and broker CPU.
    #[command(after_help = view::VIEW_EXAMPLES)]
    View(view::ViewArgs),
    /// Create topics of many partitions step by step and time each step until Metadata shows it.
    #[command(after_help = partitions::PARTITIONS_EXAMPLES)]
    Partitions(partitions::PartitionsArgs),
    /// Write many single-record batches over a few partitions (the index memory demo).
    #[command(after_help = batches::BATCHES_EXAMPLES)]
    Batches(batches::BatchesArgs),
    /// Look records up by offset and by time in the middle of a topic written by `batches`.
    #[command(after_help = batches::LOOKUP_EXAMPLES)]
    Lookup(batches::LookupArgs),
    /// Measure this machine's disk (write, fdatasync) and loopback TCP limits; no broker needed.
    #[command(after_help = limits::LIMITS_EXAMPLES)]
    Limits(limits::LimitsArgs),
    /// Time new clients' first answer: connection set-up with TLS or SASL as -X asks.
    #[command(after_help = connect::CONNECT_EXAMPLES)]
    Connect(connect::ConnectArgs),
}

/// Options every mode takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to use.
    #[arg(long, default_value = "weir-bench")]
    pub topic: String,
    /// Stop after this many records.
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Stop after this long (e.g. 30s, 5m), if --count is not reached first.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Partitions to create the topic with when it does not exist (Admin API).
    /// An existing topic keeps its partitions, and all of them are used.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=PARTITIONS_MAX))]
    pub partitions: i32,
    /// Replication factor for a topic this run creates; -1 leaves it to the broker.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-1..=i64::from(i16::MAX)))]
    pub replication_factor: i32,
    /// Raw librdkafka property, applied last (repeatable), e.g. -X enable.idempotence=true.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub property: Vec<(String, String)>,
    /// Print one JSON object on stdout instead of the text summary, and no progress bar.
    #[arg(long)]
    pub json: bool,
}

/// Options of the modes that produce.
#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// Size of each record value in bytes (no key).
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = parse_record_size)]
    pub size: usize,
    /// Acknowledgements the producer asks for.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Compression codec of record batches.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Time librdkafka waits to fill a batch (linger.ms).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// Largest batch librdkafka builds, in bytes (batch.size).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(i32::MAX)))]
    pub batch_size: u32,
    /// Target rate over all producers in records per second; 0 means unlimited.
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0)]
    pub rate: u64,
    /// Records each producer may have sent and not yet had acknowledged.
    #[arg(long, default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..=IN_FLIGHT_MESSAGES_MAX))]
    pub max_in_flight: u32,
}

/// `weir bench produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    /// Producer threads, each with its own librdkafka client; --count and
    /// --rate are split between them.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=WORKERS_MAX))]
    producers: u32,
    /// Append a line per acknowledged record to FILE, as it is acknowledged:
    /// the Unix time in milliseconds it was sent and acknowledged, space
    /// apart. Shows when producing stopped and resumed around a fault
    /// (scripts/bench-cluster.sh times failovers with it).
    #[arg(long, value_name = "FILE")]
    deliveries: Option<std::path::PathBuf>,
}

/// `weir bench consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Consumer threads; the partitions are dealt out between them.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=WORKERS_MAX))]
    consumers: u32,
    /// Stop when no record has arrived for this long (the topic ran dry).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
}

/// `weir bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    /// After the last send, how long to wait for records still on their way.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
}

/// Producer acknowledgements (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// No acknowledgement: a record counts as delivered once sent.
    #[value(name = "0")]
    None,
    /// The leader has appended the record.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica has it.
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    fn as_config(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// Batch compression codecs (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn as_config(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn parse_property(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

fn parse_record_size(arg: &str) -> Result<usize, String> {
    let size: usize = arg.parse().map_err(|err| format!("{err}"))?;
    if size > RECORD_SIZE_BYTES_MAX {
        return Err(format!("at most {RECORD_SIZE_BYTES_MAX} bytes"));
    }
    Ok(size)
}

/// Run a benchmark. Fails when the broker cannot be reached (exit code 3) or
/// any record failed (1); the summary is printed first in the latter case.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    // The group modes time a group, not records, and print their own report.
    match &cmd {
        BenchCommand::GroupJoin(args) => return group::run(args),
        BenchCommand::Commit(args) => return commit::run(args),
        BenchCommand::Txn(args) => return txn::run(args),
        BenchCommand::Share(args) => return share::run(args),
        BenchCommand::Delay(args) => return delay::run(args),
        BenchCommand::View(args) => return view::run(args),
        BenchCommand::Limits(args) => return limits::run(args),
        BenchCommand::Connect(args) => return connect::run(args),
        BenchCommand::Partitions(args) => return partitions::run(args),
        BenchCommand::Batches(args) => return batches::run_batches(args),
        BenchCommand::Lookup(args) => return batches::run_lookup(args),
        BenchCommand::Produce(_) | BenchCommand::Consume(_) | BenchCommand::E2e(_) => {}
    }
    let report = measure(&cmd)?;
    report.print()?;
    if report.errors > 0 {
        let detail = report.last_error.as_deref().unwrap_or("no detail");
        anyhow::bail!("{} records failed (last error: {detail})", report.errors);
    }
    Ok(())
}

fn measure(cmd: &BenchCommand) -> anyhow::Result<report::Report> {
    match cmd {
        BenchCommand::Produce(args) => produce::run(args),
        BenchCommand::Consume(args) => consume::run(args),
        BenchCommand::E2e(args) => e2e::run(args),
        BenchCommand::GroupJoin(_)
        | BenchCommand::Commit(_)
        | BenchCommand::Txn(_)
        | BenchCommand::Share(_)
        | BenchCommand::Delay(_)
        | BenchCommand::View(_)
        | BenchCommand::Limits(_)
        | BenchCommand::Connect(_)
        | BenchCommand::Partitions(_)
        | BenchCommand::Batches(_)
        | BenchCommand::Lookup(_) => {
            anyhow::bail!("the group, scale and limits modes print their own report; see run")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        bench: BenchCommand,
    }

    #[test]
    fn produce_spelling_from_issue_4_parses() {
        let cli = Cli::try_parse_from([
            "bench", "produce", "--topic", "T", "--size", "1024", "--count", "5", "--json",
        ]);
        let Ok(Cli {
            bench: BenchCommand::Produce(args),
        }) = cli
        else {
            panic!("did not parse: {cli:?}");
        };
        assert_eq!(args.common.topic, "T");
        assert_eq!(args.producer.size, 1024);
        assert_eq!(args.common.count, 5);
        assert!(args.common.json);
        assert_eq!(args.producer.acks, Acks::All);
    }

    #[test]
    fn raw_properties_and_durations_parse() {
        let cli = Cli::try_parse_from([
            "bench",
            "consume",
            "-X",
            "fetch.wait.max.ms=10",
            "-X",
            "client.rack=a=b",
            "--duration",
            "1m30s",
        ]);
        let Ok(Cli {
            bench: BenchCommand::Consume(args),
        }) = cli
        else {
            panic!("did not parse: {cli:?}");
        };
        assert_eq!(
            args.common.property,
            vec![
                ("fetch.wait.max.ms".to_owned(), "10".to_owned()),
                ("client.rack".to_owned(), "a=b".to_owned()),
            ]
        );
        assert_eq!(args.common.duration, Some(Duration::from_secs(90)));
    }

    fn measure_against(brokers: &str, argv_tail: &[&str]) -> report::Report {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(argv_tail);
        argv.extend_from_slice(&["--brokers", brokers, "--json"]);
        let cli = Cli::try_parse_from(&argv);
        let Ok(Cli { bench }) = cli else {
            panic!("did not parse: {cli:?}");
        };
        match measure(&bench) {
            Ok(report) => report,
            Err(err) => panic!("{argv:?}: {err:#}"),
        }
    }

    /// librdkafka's in-process mock cluster stands in for a broker, so these
    /// tests check the bench itself, whatever state Weir's broker is in.
    #[test]
    fn every_mode_counts_every_record_of_a_mock_cluster() -> anyhow::Result<()> {
        let cluster = rdkafka::mocking::MockCluster::new(1)?;
        cluster.create_topic("t", 3, 1)?;
        let brokers = cluster.bootstrap_servers();

        let produced = measure_against(
            &brokers,
            &[
                "produce",
                "--topic",
                "t",
                "--count",
                "5000",
                "--size",
                "10",
                "--producers",
                "2",
            ],
        );
        assert_eq!((produced.records, produced.errors), (5000, 0));
        assert_eq!(produced.bytes, 50_000);
        assert!(produced.latency_ms.is_some());
        assert!(produced.elapsed_s > 0.0 && produced.msgs_per_sec > 0.0);

        let consumed = measure_against(
            &brokers,
            &[
                "consume",
                "--topic",
                "t",
                "--count",
                "5000",
                "--consumers",
                "2",
            ],
        );
        assert_eq!((consumed.records, consumed.errors), (5000, 0));
        assert_eq!(consumed.bytes, 50_000);

        // Records from the runs above are older and must not count.
        let e2e = measure_against(
            &brokers,
            &[
                "e2e", "--topic", "t", "--count", "300", "--size", "32", "--rate", "1000",
            ],
        );
        assert_eq!((e2e.records, e2e.errors), (300, 0));
        assert!(e2e.latency_ms.is_some());
        // 300 records at 1000/s take at least 0.3 s: the rate is honoured.
        assert!(e2e.elapsed_s >= 0.29, "{}", e2e.elapsed_s);
        Ok(())
    }

    #[test]
    fn duration_stops_a_run_before_its_count() -> anyhow::Result<()> {
        let cluster = rdkafka::mocking::MockCluster::new(1)?;
        cluster.create_topic("t", 1, 1)?;
        let brokers = cluster.bootstrap_servers();
        let started = std::time::Instant::now();
        let produced = measure_against(
            &brokers,
            &[
                "produce",
                "--topic",
                "t",
                "--rate",
                "100",
                "--duration",
                "500ms",
            ],
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!((1..=60).contains(&produced.records), "{}", produced.records);
        assert_eq!(produced.errors, 0);
        Ok(())
    }

    #[test]
    fn consume_of_a_missing_topic_fails_clearly() -> anyhow::Result<()> {
        let cluster = rdkafka::mocking::MockCluster::new(1)?;
        let cli = Cli::try_parse_from([
            "bench",
            "consume",
            "--topic",
            "absent",
            "--brokers",
            &cluster.bootstrap_servers(),
        ])?;
        let err = measure(&cli.bench).err().map(|err| err.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|err| err.contains("topic absent does not exist")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn bad_values_are_rejected() {
        for argv in [
            &["bench", "produce", "-X", "novalue"][..],
            &["bench", "produce", "--acks", "2"],
            &["bench", "produce", "--size", "999999999999"],
            &["bench", "produce", "--count", "0"],
            &["bench", "produce", "--compression", "brotli"],
            &["bench", "produce", "--duration", "30"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} parsed");
        }
    }
}
