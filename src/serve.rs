//! `weir serve`: resolves the broker's settings (flags, then `WEIR_*`
//! environment variables, then an optional TOML file, then defaults), binds
//! the listener, locks and opens the data folder, and runs the Kafka
//! listener until SIGINT or SIGTERM. A setting that cannot be used is a
//! usage error (exit code 2), found before anything is bound or opened.

mod data_dir_lock;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracing_subscriber::EnvFilter;
use weir_broker::{Broker, BrokerConfig, GroupConfig};
use weir_metadata::LocalMetadataStore;
use weir_server::ServerLimits;
use weir_storage::{CommitLog, LogConfig, SystemClock};

/// Kafka's default for how often retention is applied (`log.retention.check.interval.ms`).
const RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 300_000;

/// Run a broker. With no flags it listens on 127.0.0.1:9092 and keeps its
/// data in ./weir-data.
///
/// Every setting can come from a flag, from the environment variable named
/// beside it, or from the TOML file given with --config, in that order of
/// precedence. Broker configs with Kafka's names (log.retention.ms,
/// log.flush.interval.messages, ...) go in the file's [broker] table or in
/// --set.
#[derive(Debug, Default, clap::Args)]
#[command(after_help = "Examples:
  weir serve
  weir serve --listen 127.0.0.1:0 --data-dir /tmp/weir
  weir serve --set log.retention.ms=3600000 --set num.partitions=8
  WEIR_DATA_DIR=/var/lib/weir weir serve --config weir.example.toml
  weir serve --log-level info,weir_server=debug

The TOML file takes the same names as the flags, with underscores
(listen, advertised, data_dir, default_partitions, auto_create_topics,
max_request_bytes, flush_messages, flush_ms, segment_bytes, log_level),
plus a [broker] table of Kafka broker configs, written either way:
  [broker]
  log.retention.ms = 3600000
  \"num.partitions\" = 8
weir.example.toml in the repository shows every setting.

One broker per data folder: the broker locks <data-dir>/.lock (holding its
PID) before reading anything, and a second one on the same folder exits
with code 1, naming the holder's PID.")]
pub struct ServeArgs {
    /// Address the Kafka listener binds. Port 0 picks a free port; the bound
    /// address is printed on stdout as `listening on HOST:PORT`. [default: 127.0.0.1:9092]
    #[arg(long, env = "WEIR_LISTEN", value_name = "HOST:PORT", value_parser = parse_host_port)]
    listen: Option<String>,

    /// Address clients are told to connect to (Kafka's advertised.listeners).
    /// [default: the bound address]
    #[arg(long, env = "WEIR_ADVERTISED", value_name = "HOST:PORT", value_parser = parse_host_port)]
    advertised: Option<String>,

    /// Folder holding the commit log, indexes and metadata. Created if missing.
    /// [default: ./weir-data]
    #[arg(long, env = "WEIR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// TOML file with settings; flags and environment variables win over it.
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Partitions of a topic created without a count, or auto-created
    /// (Kafka's num.partitions). [default: 4]
    #[arg(long, env = "WEIR_DEFAULT_PARTITIONS", value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..))]
    default_partitions: Option<i32>,

    /// Create a topic when a client produces to it or asks for its metadata
    /// (Kafka's auto.create.topics.enable). [default: true]
    #[arg(long, env = "WEIR_AUTO_CREATE_TOPICS", value_name = "BOOL")]
    auto_create_topics: Option<bool>,

    /// Largest request accepted, in bytes; a larger frame closes the connection
    /// (Kafka's socket.request.max.bytes). [default: 104857600]
    #[arg(long, env = "WEIR_MAX_REQUEST_BYTES", value_name = "BYTES")]
    max_request_bytes: Option<usize>,

    /// Default flush policy (Kafka's log.flush.interval.messages): 1 answers
    /// acks=1 and acks=all only once the batch is fdatasync'd; N syncs in the
    /// background every N batches. Topics override it with flush.messages. [default: 1]
    #[arg(long, env = "WEIR_FLUSH_MESSAGES", value_name = "N")]
    flush_messages: Option<u64>,

    /// Longest a batch stays unsynced when the flush policy is relaxed
    /// (Kafka's log.flush.interval.ms). Topics override it with flush.ms.
    #[arg(long, env = "WEIR_FLUSH_MS", value_name = "MS")]
    flush_ms: Option<u64>,

    /// Size at which the commit log rolls to a new segment file
    /// (Kafka's log.segment.bytes). [default: 1073741824]
    #[arg(long, env = "WEIR_SEGMENT_BYTES", value_name = "BYTES")]
    segment_bytes: Option<u64>,

    /// Log filter for stderr: off, error, warn, info, debug or trace, or
    /// comma-separated directives such as `info,weir_server=debug`
    /// (TARGET=LEVEL). Anything else is refused. [default: info]
    #[arg(long, env = "WEIR_LOG_LEVEL", value_name = "LEVEL", value_parser = parse_log_filter)]
    log_level: Option<String>,

    /// A broker config by its Kafka name, e.g. log.retention.ms=3600000.
    /// Repeatable; wins over the config file's [broker] table.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = weir_cli::parse_key_value)]
    set: Vec<(String, String)>,
}

/// The optional TOML file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised: Option<String>,
    data_dir: Option<PathBuf>,
    default_partitions: Option<i32>,
    auto_create_topics: Option<bool>,
    max_request_bytes: Option<usize>,
    flush_messages: Option<u64>,
    flush_ms: Option<u64>,
    segment_bytes: Option<u64>,
    log_level: Option<String>,
    #[serde(default)]
    broker: BTreeMap<String, toml::Value>,
}

/// Every setting, resolved.
#[derive(Debug)]
struct Settings {
    listen: String,
    advertised: Option<String>,
    data_dir: PathBuf,
    log_level: String,
    node_id: i32,
    default_partitions: i32,
    auto_create_topics: bool,
    /// `max.partitions`: most partitions the broker holds.
    max_partitions: i64,
    max_request_bytes: usize,
    segment_bytes: u64,
    segment_ms: u64,
    /// `log.index.memory.bytes`: memory all queue indexes may hold.
    index_memory_bytes: u64,
    retention_check_interval_ms: u64,
    /// Broker-level topic defaults by Kafka name (log.retention.ms, ...).
    log_defaults: BTreeMap<String, String>,
    /// Group coordinator settings (group.*, offsets.*).
    group: GroupConfig,
    /// The network edge's limits (max.connections, connections.max.idle.ms,
    /// queued.max.response.bytes).
    server: ServerLimits,
}

impl Settings {
    fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        // Kafka-named broker configs: the file's [broker] table, then --set, then the
        // dedicated flags (which are the most specific).
        let mut kafka: BTreeMap<String, String> = BTreeMap::new();
        flatten_broker_table("", file.broker, &mut kafka)?;
        for (key, value) in &args.set {
            kafka.insert(key.trim().to_string(), value.trim().to_string());
        }
        // The file's values get the checks clap gives the flags.
        let checked = |name: &str,
                       value: Option<String>,
                       parse: fn(&str) -> Result<String, String>| {
            value
                .map(|v| parse(&v).map_err(|e| anyhow::anyhow!("config file {name} = {v:?}: {e}")))
                .transpose()
        };
        let file_listen = checked("listen", file.listen, parse_host_port)?;
        let file_advertised = checked("advertised", file.advertised, parse_host_port)?;
        let file_log_level = checked("log_level", file.log_level, parse_log_filter)?;
        let mut named = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                kafka.insert(key.to_string(), value);
            }
        };
        named(
            "num.partitions",
            pick(args.default_partitions, file.default_partitions),
        );
        named(
            "auto.create.topics.enable",
            pick(args.auto_create_topics, file.auto_create_topics),
        );
        named(
            "socket.request.max.bytes",
            pick(args.max_request_bytes, file.max_request_bytes),
        );
        named(
            "log.flush.interval.messages",
            pick(args.flush_messages, file.flush_messages),
        );
        named("log.flush.interval.ms", pick(args.flush_ms, file.flush_ms));
        named(
            "log.segment.bytes",
            pick(args.segment_bytes, file.segment_bytes),
        );

        let mut settings = Settings {
            listen: args
                .listen
                .or(file_listen)
                .unwrap_or_else(|| "127.0.0.1:9092".into()),
            advertised: args.advertised.or(file_advertised),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("weir-data")),
            log_level: args
                .log_level
                .or(file_log_level)
                .unwrap_or_else(|| "info".into()),
            node_id: 0,
            default_partitions: 4,
            auto_create_topics: true,
            max_partitions: weir_broker::DEFAULT_MAX_PARTITIONS,
            max_request_bytes: 100 * 1024 * 1024,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_memory_bytes: LogConfig::default().index_memory_bytes,
            retention_check_interval_ms: RETENTION_CHECK_INTERVAL_MS_DEFAULT,
            log_defaults: BTreeMap::new(),
            group: GroupConfig::default(),
            server: ServerLimits::default(),
        };
        for (key, value) in kafka {
            settings.apply(&key, &value)?;
        }
        Ok(settings)
    }

    /// Apply one Kafka-named broker config.
    fn apply(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let bad = || format!("broker config {key}={value}");
        match key {
            "node.id" | "broker.id" => self.node_id = value.parse().with_context(bad)?,
            "num.partitions" => {
                self.default_partitions = value.parse().with_context(bad)?;
                if self.default_partitions < 1 {
                    bail!("{}: must be at least 1", bad());
                }
            }
            "auto.create.topics.enable" => {
                self.auto_create_topics = value.parse().with_context(bad)?
            }
            "socket.request.max.bytes" => {
                self.max_request_bytes = value.parse().with_context(bad)?;
                if self.max_request_bytes < 1024 {
                    bail!("{}: must be at least 1024", bad());
                }
            }
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = value.parse().with_context(bad)?;
                if self.retention_check_interval_ms == 0 {
                    bail!("{}: must be positive", bad());
                }
            }
            "max.partitions" => {
                self.max_partitions = at_least(value, 1, bad)?;
            }
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = at_least(value, 0, bad)?;
            }
            "group.min.session.timeout.ms" => {
                self.group.min_session_timeout_ms = at_least(value, 1, bad)?;
            }
            "group.max.session.timeout.ms" => {
                self.group.max_session_timeout_ms = at_least(value, 1, bad)?;
            }
            "group.max.size" => self.group.max_size = at_least(value, 1, bad)?,
            "group.consumer.migration.policy" => {
                self.group.consumer_migration_policy =
                    weir_broker::MigrationPolicy::parse(value).with_context(bad)?;
            }
            "group.consumer.heartbeat.interval.ms" => {
                self.group.consumer_heartbeat_interval_ms = at_least(value, 1, bad)?;
            }
            "group.consumer.session.timeout.ms" => {
                self.group.consumer_session_timeout_ms = at_least(value, 1, bad)?;
            }
            "offsets.topic.num.partitions" => {
                self.group.offsets_topic_num_partitions = at_least(value, 1, bad)?;
            }
            "offsets.retention.minutes" => {
                self.group.offsets_retention_minutes = at_least(value, 1, bad)?;
            }
            "offset.metadata.max.bytes" => {
                self.group.offset_metadata_max_bytes = at_least(value, 0, bad)?;
            }
            "log.index.memory.bytes" => self.index_memory_bytes = at_least(value, 0, bad)?,
            "max.connections" => self.server.max_connections = at_least(value, 1, bad)?,
            "connections.max.idle.ms" => {
                self.server.connections_max_idle_ms = at_least(value, 1, bad)?;
            }
            "queued.max.response.bytes" => {
                self.server.queued_max_response_bytes = at_least(value, 1024, bad)?;
            }
            "log.segment.bytes" | "log.roll.ms" => {
                let parsed: u64 = value.parse().with_context(bad)?;
                if key == "log.segment.bytes" {
                    if parsed < 1024 {
                        bail!("{}: must be at least 1024", bad());
                    }
                    self.segment_bytes = parsed;
                } else {
                    self.segment_ms = parsed.max(1);
                }
                self.log_defaults.insert(key.to_string(), value.to_string());
            }
            _ => {
                weir_broker::validate_log_default(key, value)
                    .map_err(|e| anyhow::anyhow!("{}: {}", bad(), e.message))?;
                self.log_defaults.insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }
}

/// Parse a numeric broker config that must be at least `min`.
fn at_least<T>(value: &str, min: T, bad: impl Fn() -> String) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let parsed: T = value.parse().with_context(&bad)?;
    if parsed < min {
        bail!("{}: must be at least {min}", bad());
    }
    Ok(parsed)
}

/// Kafka config names from the file's `[broker]` table. TOML reads a bare
/// dotted key (`log.retention.ms = 5`) as nested tables and a quoted one
/// (`"log.retention.ms" = 5`) as one key; both give the name
/// `log.retention.ms`. A name given both ways is refused.
fn flatten_broker_table(
    prefix: &str,
    table: BTreeMap<String, toml::Value>,
    out: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        let value = match value {
            toml::Value::Table(inner) => {
                flatten_broker_table(&name, inner.into_iter().collect(), out)?;
                continue;
            }
            toml::Value::String(text) => text,
            toml::Value::Array(_) => {
                bail!("[broker] {name}: a list is not a config value; write \"a,b\" as Kafka does")
            }
            other => other.to_string(),
        };
        if out.insert(name.clone(), value).is_some() {
            bail!("[broker] {name} is given twice (once quoted, once dotted?)");
        }
    }
    Ok(())
}

/// Parses `HOST:PORT` (an IPv6 host in brackets), as `--listen` and
/// `--advertised` take it. The host is resolved only when bound.
fn parse_host_port(arg: &str) -> Result<String, String> {
    let expected =
        || format!("{arg:?} is not HOST:PORT (e.g. 127.0.0.1:9092, [::1]:9092, localhost:0)");
    let (host, port) = arg.rsplit_once(':').ok_or_else(expected)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(expected());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(expected());
    }
    Ok(arg.to_owned())
}

/// The levels a log filter names.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `--log-level` filter: a level, or comma-separated directives
/// whose every level is one of [`LOG_LEVELS`]. tracing's own parser takes a
/// bare word such as `verbose` as a target name, which would switch every
/// log off without a word; a bare word must therefore be a level.
fn parse_log_filter(arg: &str) -> Result<String, String> {
    let valid = || {
        format!(
            "give a level ({}) or directives such as info,weir_server=debug",
            LOG_LEVELS.join(", ")
        )
    };
    if arg.trim().is_empty() {
        return Err(format!("the log filter is empty; {}", valid()));
    }
    for directive in arg.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((target, _)) if target.trim().is_empty() => {
                return Err(format!("{directive:?} names no target; {}", valid()));
            }
            Some((_, level)) => level,
            None => directive,
        };
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{level:?} is not a log level; {}", valid()));
        }
    }
    EnvFilter::try_new(arg).map_err(|err| format!("{err}; {}", valid()))?;
    Ok(arg.to_owned())
}

fn pick<T: ToString>(flag: Option<T>, file: Option<T>) -> Option<String> {
    flag.or(file).map(|v| v.to_string())
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid --log-level '{filter}'"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// Raise the soft limit on open files to the hard limit: the broker holds
/// a descriptor per connection, per commit-log segment and per open index
/// file, and a soft limit of 1024 is the default on many systems. A failure
/// only costs headroom, so it is logged, not fatal.
fn raise_open_files_limit() {
    let raised = rlimit::Resource::NOFILE.get().and_then(|(soft, hard)| {
        if soft < hard {
            rlimit::Resource::NOFILE.set(hard, hard)?;
        }
        Ok((soft, hard))
    });
    match raised {
        Ok((was, hard)) => tracing::info!(
            soft_was = was,
            limit = hard,
            "open files limit (RLIMIT_NOFILE) set to the hard limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit (RLIMIT_NOFILE)"),
    }
}

/// Run the broker until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args).map_err(|err| weir_cli::usage(format!("{err:#}")))?;
    init_logging(&settings.log_level)?;
    // Test builds only: the storage failpoints named in FAILPOINTS
    // (docs/testing.md), kept until the broker exits.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    // Bind first, lock the data folder next: a start that cannot serve (the
    // port is taken, another broker holds the folder) fails before anything
    // in the folder is read, recovered or written.
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data folder {}", settings.data_dir.display()))?;
    let lock = data_dir_lock::DataDirLock::acquire(&settings.data_dir)?;
    tracing::debug!(lock = %lock.path().display(), "locked the data folder");
    let clock = Arc::new(SystemClock);
    let log_config = LogConfig {
        segment_bytes: settings.segment_bytes,
        segment_ms: settings.segment_ms,
        index_memory_bytes: settings.index_memory_bytes,
        ..LogConfig::default()
    };
    let metadata_existed = LocalMetadataStore::exists(&settings.data_dir);
    let (log, recovery) = CommitLog::open(&settings.data_dir, log_config, clock.clone())
        .with_context(|| {
            format!(
                "cannot open the commit log in {}",
                settings.data_dir.display()
            )
        })?;
    tracing::info!(
        partitions = recovery.partitions,
        scanned_bytes = recovery.bytes_scanned,
        truncated_bytes = recovery.bytes_truncated,
        rebuilt_index_entries = recovery.index_entries_rebuilt,
        elapsed_ms = recovery.elapsed_ms,
        "opened commit log"
    );
    let partitions = log.partitions().len();
    if partitions > 0 && !metadata_existed {
        anyhow::bail!(
            "the commit log in {} holds {partitions} partitions but the topic metadata \
             ({}/meta) is missing; refusing to start, because a fresh metadata store would \
             remove those partitions as unreferenced. Restore the meta folder from a backup, \
             or move the data folder aside to start empty",
            settings.data_dir.display(),
            settings.data_dir.display()
        );
    }
    let metadata = Arc::new(
        LocalMetadataStore::open(&settings.data_dir)
            .with_context(|| format!("cannot open metadata in {}", settings.data_dir.display()))?,
    );

    let (advertised_host, advertised_port) = advertised(&settings, bound)?;

    let config = BrokerConfig {
        node_id: settings.node_id,
        advertised_host,
        advertised_port,
        default_partitions: settings.default_partitions,
        auto_create_topics: settings.auto_create_topics,
        max_partitions: settings.max_partitions,
        max_request_bytes: settings.max_request_bytes,
        log_defaults: settings.log_defaults.clone(),
        group: settings.group.clone(),
        ..BrokerConfig::default()
    };
    // Loading replays `__consumer_offsets` from disk: off the workers.
    let loading = log.clone();
    let broker = Arc::new(
        tokio::task::spawn_blocking(move || Broker::new(config, loading, metadata, clock))
            .await
            .context("loading topics and groups failed")?
            .map_err(|e| anyhow::anyhow!("cannot load topics: {e}"))?,
    );
    let limits = ServerLimits {
        max_request_bytes: settings.max_request_bytes,
        ..settings.server.clone()
    };

    // Scripts and tests read this line to learn the port.
    println!("listening on {bound}");
    tracing::info!(
        listen = %bound,
        data_dir = %settings.data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "broker ready"
    );

    let maintenance = tokio::spawn(maintenance_loop(
        log.clone(),
        Duration::from_millis(settings.retention_check_interval_ms),
    ));
    let served = weir_server::serve(listener, broker, limits, shutdown_signal()).await;
    maintenance.abort();
    tracing::info!("listener closed; flushing the commit log");
    let closed = log.shutdown();
    served.context("listener failed")?;
    closed.context("could not flush the commit log on shutdown")?;
    // Released only once the log is closed: no other broker may open it earlier.
    drop(lock);
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The host and port clients are told to use.
fn advertised(settings: &Settings, bound: SocketAddr) -> anyhow::Result<(String, i32)> {
    if let Some(adv) = &settings.advertised {
        let (host, port) = adv
            .rsplit_once(':')
            .with_context(|| format!("--advertised {adv}: expected HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("--advertised {adv}: bad port"))?;
        return Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)));
    }
    let host = if bound.ip().is_unspecified() {
        tracing::warn!(
            "listening on {bound} without --advertised; telling clients to use 127.0.0.1. \
             Set --advertised to an address clients can reach."
        );
        "127.0.0.1".to_string()
    } else {
        bound.ip().to_string()
    };
    Ok((host, i32::from(bound.port())))
}

/// Apply retention and reclaim space every `interval`, off the async workers.
async fn maintenance_loop(log: CommitLog, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.run_maintenance()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "log maintenance failed; retention is not applied until it succeeds")
            }
            Err(err) => tracing::error!(error = %err, "log maintenance task failed"),
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: ServeArgs) -> Settings {
        Settings::resolve(args).expect("settings resolve")
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = resolve(ServeArgs::default());
        assert_eq!(s.listen, "127.0.0.1:9092");
        assert_eq!(s.data_dir, PathBuf::from("weir-data"));
        assert_eq!(s.default_partitions, 4);
        assert!(s.auto_create_topics);
        assert!(s.log_defaults.is_empty());
    }

    #[test]
    fn flags_win_over_set_which_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:19092\"\ndefault_partitions = 2\n[broker]\n\"log.retention.ms\" = 1000\n\"num.partitions\" = 3\n",
        )
        .expect("write config");
        let s = resolve(ServeArgs {
            config: Some(path.clone()),
            set: vec![("log.retention.ms".into(), "2000".into())],
            ..ServeArgs::default()
        });
        assert_eq!(s.listen, "127.0.0.1:19092");
        assert_eq!(
            s.default_partitions, 2,
            "the dedicated key beats [broker] num.partitions"
        );
        assert_eq!(
            s.log_defaults.get("log.retention.ms").map(String::as_str),
            Some("2000")
        );
        let s = resolve(ServeArgs {
            config: Some(path),
            default_partitions: Some(7),
            ..ServeArgs::default()
        });
        assert_eq!(s.default_partitions, 7);
    }

    #[test]
    fn network_limits_take_kafka_names() {
        let s = resolve(ServeArgs {
            set: vec![
                ("max.connections".into(), "7".into()),
                ("connections.max.idle.ms".into(), "1500".into()),
                ("queued.max.response.bytes".into(), "33554432".into()),
            ],
            ..ServeArgs::default()
        });
        assert_eq!(s.server.max_connections, 7);
        assert_eq!(s.server.connections_max_idle_ms, 1500);
        assert_eq!(s.server.queued_max_response_bytes, 32 << 20);
        let d = resolve(ServeArgs::default());
        assert_eq!(d.server.connections_max_idle_ms, 600_000);
        assert_eq!(d.server.max_connections, 10_000);
    }

    #[test]
    fn unknown_or_invalid_configs_are_refused() {
        for (key, value) in [
            ("no.such.config", "1"),
            ("log.retention.ms", "forever"),
            ("num.partitions", "0"),
            ("max.connections", "0"),
            ("connections.max.idle.ms", "0"),
        ] {
            let err = Settings::resolve(ServeArgs {
                set: vec![(key.into(), value.into())],
                ..ServeArgs::default()
            });
            assert!(err.is_err(), "{key}={value} should be refused");
        }
    }

    fn resolve_file(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, text)?;
        Settings::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
    }

    #[test]
    fn broker_configs_take_dotted_names_bare_or_quoted() {
        let s = resolve_file(
            "[broker]\nlog.retention.ms = 5\n\"log.retention.bytes\" = 1000\n\
             group.initial.rebalance.delay.ms = 0\n",
        )
        .expect("dotted names resolve");
        assert_eq!(
            s.log_defaults.get("log.retention.ms").map(String::as_str),
            Some("5")
        );
        assert_eq!(
            s.log_defaults
                .get("log.retention.bytes")
                .map(String::as_str),
            Some("1000")
        );
        assert_eq!(s.group.initial_rebalance_delay_ms, 0);
        let twice = resolve_file("[broker]\nlog.retention.ms = 5\n\"log.retention.ms\" = 6\n");
        assert!(twice.is_err(), "a name given twice must be refused");
    }

    #[test]
    fn the_shipped_example_file_resolves_as_it_is() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("weir.example.toml");
        Settings::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .expect("weir.example.toml resolves");
    }

    #[test]
    fn log_filters_must_name_known_levels() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "info,weir_server=debug",
            "weir_storage=trace",
        ] {
            assert!(parse_log_filter(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "verbose",
            "",
            "info,weir_server=loud",
            "=debug",
            "weir_server",
        ] {
            assert!(parse_log_filter(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_addresses_must_be_host_and_port() {
        for good in ["127.0.0.1:9092", "[::1]:0", "localhost:9092", "0.0.0.0:0"] {
            assert!(parse_host_port(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "notanaddr",
            ":9092",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "::1:9092",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
