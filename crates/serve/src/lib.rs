//! weir-serve: `weir serve`. It owns the broker's settings (flags, then
//! `WEIR_*` environment variables, then an optional TOML file, then
//! defaults, plus Kafka-named broker configs from `--set` and the file's
//! `[broker]` table), the data folder's lock, and the start-up order: bind
//! the listeners (Kafka, controller, admin), lock and open the data folder,
//! then run the Kafka listener and the admin API until SIGINT or SIGTERM. A
//! setting that cannot be used is a usage error ([`ServeError::Usage`], exit
//! code 2), found before anything is bound or opened.

mod admin;
mod cluster;
mod data_dir_lock;
mod listeners;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use weir_broker::{ApiError, Broker, BrokerConfig, CheckbackConfig, GroupConfig, TxnConfig};
use weir_cluster::{Controller, ControllerConfig, RaftMetadataStore};
use weir_metadata::{LocalMetadataStore, MetadataError, MetadataStore};
use weir_server::ServerLimits;
use weir_storage::{CommitLog, LogConfig, StorageError, SystemClock};

pub use data_dir_lock::{DataDirLock, LOCK_FILE_NAME, LockError};

/// Why `weir serve` could not start or stopped with an error. Each
/// message names what failed; the cause, when there is one, is its
/// [`source`](std::error::Error::source), printed after it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting cannot be used (exit code 2); nothing was bound or opened.
    #[error(transparent)]
    Usage(#[from] SettingsError),
    /// The log filter was refused by tracing.
    #[error("invalid --log-level '{filter}'")]
    LogLevel {
        /// The filter, as given.
        filter: String,
        /// tracing's reason.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The listener could not bind.
    #[error("cannot listen on {listen}")]
    Listen {
        /// `--listen`, as given.
        listen: String,
        /// The bind error.
        source: std::io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the bound address")]
    BoundAddress(#[source] std::io::Error),
    /// An `SSL` listener's certificates or keys cannot be used.
    #[error("listener {listener}: cannot set up TLS")]
    Tls {
        /// The listener's name.
        listener: String,
        /// Why.
        source: weir_server::TlsError,
    },
    /// A SASL listener's OAUTHBEARER keys cannot be loaded.
    #[error(
        "listener {listener}: cannot load the OAUTHBEARER JWKS; fix \
         sasl.oauthbearer.jwks.endpoint.url (a JWKS file, or a URL the broker can reach)"
    )]
    Jwks {
        /// The listener's name.
        listener: String,
        /// Why.
        source: weir_server::JwksError,
    },
    /// The data folder could not be created.
    #[error("cannot create data folder {}", path.display())]
    CreateDataDir {
        /// `--data-dir`.
        path: PathBuf,
        /// The file system's error.
        source: std::io::Error,
    },
    /// The data folder could not be locked (another broker holds it).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The commit log could not be opened or recovered.
    #[error("cannot open the commit log in {}", path.display())]
    OpenLog {
        /// `--data-dir`.
        path: PathBuf,
        /// The storage engine's error.
        source: StorageError,
    },
    /// The commit log holds partitions but the topic metadata is gone.
    #[error(
        "the commit log in {} holds {partitions} partitions but the topic metadata \
         ({}/{folder}) is missing; refusing to start, because a fresh metadata store would \
         remove those partitions as unreferenced. Restore the {folder} folder from a backup, \
         or move the data folder aside to start empty",
        path.display(),
        path.display()
    )]
    MetadataMissing {
        /// `--data-dir`.
        path: PathBuf,
        /// Partitions found in the commit log.
        partitions: usize,
        /// The metadata's folder in it: `meta` on a single node, `raft`
        /// on a cluster node.
        folder: &'static str,
    },
    /// The metadata store could not be opened.
    #[error("cannot open metadata in {}", path.display())]
    OpenMetadata {
        /// `--data-dir`.
        path: PathBuf,
        /// The metadata store's error.
        source: MetadataError,
    },
    /// The task loading topics and groups panicked or was cancelled.
    #[error("loading topics and groups failed")]
    LoadTask(#[source] tokio::task::JoinError),
    /// The broker refused the stored topics or groups.
    #[error("cannot load topics")]
    LoadTopics(#[source] ApiError),
    /// The delayed-delivery schedule (`<data>/timer`) cannot be opened.
    #[error("cannot open the delayed-delivery schedule")]
    Delays(#[source] weir_storage::TimerError),
    /// The listener stopped with an error.
    #[error("listener failed")]
    Listener(#[source] std::io::Error),
    /// The commit log could not be flushed on shutdown.
    #[error("could not flush the commit log on shutdown")]
    Shutdown(#[source] StorageError),
    /// The controller listener could not bind.
    #[error("cannot listen on {listen} (--controller-listen)")]
    ControllerListen {
        /// The address.
        listen: String,
        /// The bind error.
        source: std::io::Error,
    },
    /// The admin listener's TLS certificates or keys cannot be used.
    #[error("the admin listener (admin.ssl.*): cannot set up TLS")]
    AdminTls(#[source] weir_server::TlsError),
    /// The admin listener's token file cannot be used.
    #[error("the admin listener: cannot use admin.auth.token.file")]
    AdminTokens(#[source] weir_admin::TokenFileError),
    /// The admin listener could not bind. The bind error is in the message,
    /// before the way out, rather than a source printed after it.
    #[error(
        "cannot listen on {listen} (--admin-listen): {error}; set --admin-listen HOST:PORT, \
         or --admin-listen none to run without the admin API"
    )]
    AdminListen {
        /// The address.
        listen: String,
        /// The bind error.
        error: std::io::Error,
    },
    /// The node's part of the metadata quorum could not start.
    #[error("cannot start the metadata quorum node in {}/raft", path.display())]
    Quorum {
        /// `--data-dir`.
        path: PathBuf,
        /// Why.
        source: weir_cluster::ClusterError,
    },
    /// The data folder belongs to the other kind of node.
    #[error(
        "{} holds the metadata of {held}, but this node was started as {wanted}; \
         start it as it was, or use another --data-dir",
        path.display()
    )]
    WrongKindOfNode {
        /// `--data-dir`.
        path: PathBuf,
        /// What the folder holds.
        held: &'static str,
        /// What the flags ask for.
        wanted: &'static str,
    },
}

impl ServeError {
    /// Whether the command line or the config file is at fault (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, ServeError::Usage(_))
    }
}

/// A setting that cannot be used: found while resolving the settings,
/// before anything is bound or opened.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file cannot be read.
    #[error("cannot read config file {}", path.display())]
    ReadConfigFile {
        /// `--config`.
        path: PathBuf,
        /// The file system's error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or names an unknown setting.
    #[error("invalid config file {}", path.display())]
    InvalidConfigFile {
        /// `--config`.
        path: PathBuf,
        /// The TOML error.
        source: Box<toml::de::Error>,
    },
    /// A value in the config file fails the check its flag has.
    #[error("config file {name} = {value:?}: {reason}")]
    ConfigFileValue {
        /// The setting's name in the file.
        name: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The `[broker]` table gives a list as a value.
    #[error("[broker] {name}: a list is not a config value; write \"a,b\" as Kafka does")]
    BrokerTableList {
        /// The config's name.
        name: String,
    },
    /// The `[broker]` table names a config twice.
    #[error("[broker] {name} is given twice (once quoted, once dotted?)")]
    BrokerTableTwice {
        /// The config's name.
        name: String,
    },
    /// A broker config's value does not parse as its type.
    #[error("broker config {key}={value}")]
    BrokerConfigParse {
        /// The Kafka name.
        key: String,
        /// The value, as given.
        value: String,
        /// The parser's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A broker config's value is not one of the ones it takes.
    #[error("broker config {key}={value}")]
    BrokerConfigUnknownValue {
        /// The Kafka name.
        key: String,
        /// The value, as given.
        value: String,
    },
    /// A broker config's value is out of range, or the name is unknown.
    #[error("broker config {key}={value}: {reason}")]
    BrokerConfigRefused {
        /// The Kafka name.
        key: String,
        /// The value, as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// `replica.selector.class` values: Kafka's two selectors.
const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";
const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";

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
  weir serve --log-format json
  weir serve --admin-listen none
  weir serve --listen 127.0.0.1:9192 --admin-listen 127.0.0.1:9194 --data-dir /tmp/weir2
  weir cert dev && weir serve --set listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093 \
    --set ssl.keystore.location=weir-certs/broker.pem \
    --set ssl.truststore.location=weir-certs/ca.crt --set ssl.client.auth=required

Listeners take Kafka's configs: listeners (NAME://HOST:PORT,...), which
replaces --listen and binds exactly the listeners it names;
advertised.listeners; listener.security.protocol.map (NAME:PROTOCOL,...;
PLAINTEXT and SSL are served); inter.broker.listener.name. An SSL listener
reads ssl.keystore.location (PEM: private key and certificate chain),
ssl.truststore.location (PEM CAs), ssl.client.auth (required, requested or
none) and ssl.principal.mapping.rules, each also as
listener.name.NAME.ssl.* for one listener; changed certificate files are
reloaded within a second, without dropping connections.

The admin API (--admin-listen) is plain HTTP open to all unless configured
(docs/security.md, \"The admin API\"): admin.auth.token.file names a file of
bearer tokens, one per line (# comments), reread when it changes; every
route but GET /health and GET /ready then needs Authorization: Bearer TOKEN
(a browser logs in at /login for a cookie). admin.ssl.keystore.location,
admin.ssl.truststore.location, admin.ssl.client.auth and
admin.ssl.principal.mapping.rules serve it over HTTPS as the ssl.* do a
Kafka listener; a client certificate then authenticates too. Writes from
another site's page (Origin unlike Host) answer 403; every write is logged.
Bound to a non-loopback address without either, the broker warns at start:
  weir serve --admin-listen 0.0.0.0:9644 --set admin.auth.token.file=/etc/weir/admin-tokens \
    --set admin.ssl.keystore.location=weir-certs/broker.pem

The TOML file takes the same names as the flags, with underscores
(listen, advertised, data_dir, default_partitions, auto_create_topics,
max_request_bytes, flush_messages, flush_ms, segment_bytes, log_level,
log_format, admin_listen, node_id, voters, controller_listen, process_roles, rack),
plus a [broker] table of Kafka broker configs, written either way:
  [broker]
  log.retention.ms = 3600000
  \"num.partitions\" = 8
weir.example.toml in the repository shows every setting.

One broker per data folder: the broker locks <data-dir>/.lock (holding its
PID) before reading anything, and a second one on the same folder exits
with code 1, naming the holder's PID.")]
pub struct ServeArgs {
    /// Address the Kafka listener binds: shorthand for
    /// `--set listeners=PLAINTEXT://HOST:PORT`. Port 0 picks a free port; the
    /// bound address is printed on stdout as `listening on HOST:PORT`, and each
    /// listener's as `listener NAME listening on HOST:PORT`. [default: 127.0.0.1:9092]
    #[arg(long, env = "WEIR_LISTEN", value_name = "HOST:PORT", value_parser = parse_host_port)]
    listen: Option<String>,

    /// Address clients are told to connect to: the --listen listener's
    /// entry of Kafka's advertised.listeners. [default: the bound address]
    #[arg(long, env = "WEIR_ADVERTISED", value_name = "HOST:PORT", value_parser = parse_host_port)]
    advertised: Option<String>,

    /// Address the HTTP admin API binds (GET /health), or `none` to run
    /// without it. Port 0 picks a free port; the bound address is printed on
    /// stdout as `admin listening on HOST:PORT`. A controller-only node has
    /// no admin API and ignores it. [default: 127.0.0.1:9644]
    #[arg(long, env = "WEIR_ADMIN_LISTEN", value_name = "HOST:PORT|none",
          value_parser = parse_admin_listen)]
    admin_listen: Option<String>,

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

    /// How log lines are written on stderr: text, one line per event for a
    /// person or journald; or json, one JSON object per line with
    /// timestamp, level, target, fields (the message among them) and the
    /// spans, for a log collector. A usage error, which is found before
    /// logging starts, and the closing `error:` line of a failed run stay
    /// plain text. [default: text]
    #[arg(long, env = "WEIR_LOG_FORMAT", value_name = "FORMAT", value_enum)]
    log_format: Option<LogFormat>,

    /// A broker config by its Kafka name, e.g. log.retention.ms=3600000.
    /// Repeatable; wins over the config file's [broker] table.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,

    /// This node's id in a cluster (Kafka's node.id). A node whose id is not
    /// in --voters is an observer of the metadata quorum: a broker-only
    /// node, or a controller that `weir cluster add-controller` makes a
    /// voter. [default: 0]
    #[arg(
        long,
        env = "WEIR_NODE_ID",
        value_name = "ID",
        help_heading = "Cluster"
    )]
    node_id: Option<u32>,

    /// Every controller of the cluster's metadata quorum, as ID@HOST:PORT,...
    /// (Kafka's controller.quorum.voters), the same on every node. Without
    /// it the node is a one-node cluster of its own.
    #[arg(
        long,
        env = "WEIR_VOTERS",
        value_name = "ID@HOST:PORT,...",
        help_heading = "Cluster"
    )]
    voters: Option<String>,

    /// Address the controller listener binds (Raft and the controller's
    /// requests between nodes). [default: this node's address in --voters;
    /// required on a node whose id is not in --voters, whose address the
    /// voters use]
    #[arg(long, env = "WEIR_CONTROLLER_LISTEN", value_name = "HOST:PORT",
          value_parser = parse_host_port, help_heading = "Cluster")]
    controller_listen: Option<String>,

    /// What this node runs (Kafka's process.roles): broker, controller, or
    /// both as broker,controller. A broker-only node's --node-id is not in
    /// --voters: it copies the metadata as a learner of the quorum, never
    /// votes, and needs --controller-listen. [default: broker,controller]
    #[arg(
        long,
        env = "WEIR_PROCESS_ROLES",
        value_name = "ROLES",
        help_heading = "Cluster"
    )]
    process_roles: Option<String>,

    /// This broker's rack (Kafka's broker.rack): replicas of a partition go
    /// to different racks when they can.
    #[arg(long, env = "WEIR_RACK", value_name = "RACK", help_heading = "Cluster")]
    rack: Option<String>,
}

/// The optional TOML file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<PathBuf>,
    default_partitions: Option<i32>,
    auto_create_topics: Option<bool>,
    max_request_bytes: Option<usize>,
    flush_messages: Option<u64>,
    flush_ms: Option<u64>,
    segment_bytes: Option<u64>,
    log_level: Option<String>,
    log_format: Option<String>,
    node_id: Option<u32>,
    voters: Option<String>,
    controller_listen: Option<String>,
    process_roles: Option<String>,
    rack: Option<String>,
    #[serde(default)]
    broker: BTreeMap<String, toml::Value>,
}

/// Every setting, resolved.
#[derive(Debug)]
struct Settings {
    /// The Kafka listeners (`--listen`, or `listeners` and its kin).
    listeners: listeners::Listeners,
    /// `--admin-listen`; `None` when it is `none`, and on a controller-only
    /// node, which has no broker to serve views of.
    admin_listen: Option<String>,
    /// `admin.ssl.*`: the admin listener's TLS, when set.
    admin_tls: Option<weir_server::TlsSettings>,
    /// `admin.auth.token.file`: the admin API's bearer tokens, when set.
    admin_token_file: Option<PathBuf>,
    data_dir: PathBuf,
    log_level: String,
    log_format: LogFormat,
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
    txn: TxnConfig,
    /// The network edge's limits (max.connections, connections.max.idle.ms,
    /// queued.max.response.bytes).
    server: ServerLimits,
    /// `default.replication.factor`: replicas of a topic created without a
    /// factor, or auto-created.
    default_replication_factor: i16,
    /// `replica.lag.time.max.ms`.
    replica_lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`.
    replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    replica_fetch_response_max_bytes: i32,
    /// `controller.quorum.voters`, parsed; empty on a one-node cluster.
    voters: BTreeMap<u64, String>,
    /// `--controller-listen`.
    controller_listen: Option<String>,
    /// `process.roles`.
    roles: Roles,
    /// `broker.rack`.
    rack: Option<String>,
    /// `replica.selector.class` is the rack-aware selector.
    rack_aware_replica_selector: bool,
    /// `broker.session.timeout.ms`.
    broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    broker_heartbeat_interval_ms: u64,
    /// `auto.leader.rebalance.enable`, `leader.imbalance.check.interval.seconds`
    /// and `leader.imbalance.per.broker.percentage`.
    leader_rebalance: weir_cluster::LeaderRebalance,
    /// `authorizer.class.name` names the StandardAuthorizer: ACLs are enforced.
    authorizer_enabled: bool,
    /// `super.users` and `allow.everyone.if.no.acl.found`.
    authorizer: weir_auth::AuthorizerConfig,
    /// `quota.window.num` and `quota.window.size.seconds`.
    quota_windows: weir_broker::QuotaWindows,
    /// `controller.quota.window.num` and `controller.quota.window.size.seconds`.
    controller_quota_windows: weir_broker::QuotaWindows,
    /// `metrics.enabled`: whether metrics are recorded and `GET /metrics`
    /// answers.
    metrics_enabled: bool,
}

/// What a node runs (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Roles {
    broker: bool,
    controller: bool,
}

impl Roles {
    fn parse(text: &str) -> Result<Self, String> {
        let mut roles = Roles {
            broker: false,
            controller: false,
        };
        for role in text.split(',').map(str::trim) {
            match role {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => {
                    return Err(format!(
                        "unknown role '{other}': expected broker, controller or broker,controller"
                    ));
                }
            }
        }
        Ok(roles)
    }
}

impl Settings {
    fn resolve(args: ServeArgs) -> Result<Self, SettingsError> {
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
        let checked =
            |name: &str, value: Option<String>, parse: fn(&str) -> Result<String, String>| {
                value
                    .map(|v| {
                        parse(&v).map_err(|reason| SettingsError::ConfigFileValue {
                            name: name.to_owned(),
                            value: v.clone(),
                            reason,
                        })
                    })
                    .transpose()
            };
        let file_listen = checked("listen", file.listen, parse_host_port)?;
        let file_advertised = checked("advertised", file.advertised, parse_host_port)?;
        let file_admin_listen = checked("admin_listen", file.admin_listen, parse_admin_listen)?;
        let file_log_level = checked("log_level", file.log_level, parse_log_filter)?;
        let file_log_format = file
            .log_format
            .map(|value| {
                <LogFormat as clap::ValueEnum>::from_str(&value, false).map_err(|reason| {
                    SettingsError::ConfigFileValue {
                        name: "log_format".to_owned(),
                        value,
                        reason,
                    }
                })
            })
            .transpose()?;
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
        named("node.id", pick(args.node_id, file.node_id));
        named(
            "controller.quorum.voters",
            args.voters.clone().or(file.voters.clone()),
        );
        named(
            "process.roles",
            args.process_roles.clone().or(file.process_roles.clone()),
        );
        named("broker.rack", args.rack.clone().or(file.rack.clone()));
        let file_controller_listen =
            checked("controller_listen", file.controller_listen, parse_host_port)?;

        let mut settings = Settings {
            // Resolved once every broker config is in, below.
            listeners: listeners::Listeners {
                specs: Vec::new(),
                inter_broker: String::new(),
            },
            // Resolved once the roles are known, below.
            admin_listen: None,
            admin_tls: None,
            admin_token_file: None,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("weir-data")),
            log_level: args
                .log_level
                .or(file_log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: args.log_format.or(file_log_format).unwrap_or_default(),
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
            txn: TxnConfig::default(),
            server: ServerLimits::default(),
            default_replication_factor: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            voters: BTreeMap::new(),
            controller_listen: args.controller_listen.or(file_controller_listen),
            roles: Roles {
                broker: true,
                controller: true,
            },
            rack: None,
            rack_aware_replica_selector: false,
            // Shorter than Kafka's 9 s and 2 s, so a dead leader's
            // partitions move soon after (docs/benchmarks.md).
            broker_session_timeout_ms: 1_500,
            broker_heartbeat_interval_ms: 250,
            leader_rebalance: weir_cluster::LeaderRebalance {
                enabled: true,
                interval: Duration::from_secs(300),
                per_broker_percentage: 10,
            },
            authorizer_enabled: false,
            authorizer: weir_auth::AuthorizerConfig::default(),
            quota_windows: weir_broker::QuotaWindows::default(),
            controller_quota_windows: weir_broker::QuotaWindows::default(),
            metrics_enabled: true,
        };
        let mut listener_configs = listeners::ListenerConfigs::default();
        for (key, value) in kafka {
            if !listener_configs.take(&key, &value) {
                settings.apply(&key, &value)?;
            }
        }
        settings.listeners = listener_configs.resolve(
            args.listen.or(file_listen),
            args.advertised.or(file_advertised),
        )?;
        settings.admin_tls = listener_configs.admin_tls()?;
        settings.check_cluster()?;
        settings.resolve_admin_listen(args.admin_listen.or(file_admin_listen));
        Ok(settings)
    }

    /// `--admin-listen` as given (an address or `none`), or the default. A
    /// controller-only node has no broker to serve views of, and no admin
    /// API: it ignores the setting, so one config file or one set of
    /// `weir cluster local --serve-arg`s serves every kind of node.
    fn resolve_admin_listen(&mut self, given: Option<String>) {
        self.admin_listen = match given {
            _ if !self.roles.broker => None,
            Some(none) if none == ADMIN_LISTEN_NONE => None,
            Some(listen) => Some(listen),
            None => Some(ADMIN_LISTEN_DEFAULT.to_owned()),
        };
    }

    /// Apply one Kafka-named broker config.
    fn apply(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        let refused = |reason: String| SettingsError::BrokerConfigRefused {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let config = ConfigParser { key, value };
        match key {
            "node.id" | "broker.id" => self.node_id = config.at_least(0)?,
            "controller.quorum.voters" => {
                self.voters =
                    weir_cluster::parse_voters(value).map_err(|e| refused(e.to_string()))?;
            }
            "process.roles" => self.roles = Roles::parse(value).map_err(refused)?,
            "broker.rack" => {
                let rack = value.trim();
                self.rack = (!rack.is_empty()).then(|| rack.to_owned());
            }
            "replica.selector.class" => {
                self.rack_aware_replica_selector = match value.trim() {
                    RACK_AWARE_SELECTOR => true,
                    "" | LEADER_SELECTOR => false,
                    _ => {
                        return Err(refused(format!(
                            "Weir has two selectors: {RACK_AWARE_SELECTOR} (fetch from the \
                             closest in-sync replica, KIP-392) and {LEADER_SELECTOR} (the leader)"
                        )));
                    }
                };
            }
            "authorizer.class.name" => {
                self.authorizer_enabled = match value.trim() {
                    "" => false,
                    weir_broker::STANDARD_AUTHORIZER => true,
                    _ => {
                        return Err(refused(format!(
                            "Weir's ACLs are Kafka's StandardAuthorizer: set it to {}, or leave \
                             it empty to allow every client everything",
                            weir_broker::STANDARD_AUTHORIZER
                        )));
                    }
                };
            }
            "super.users" => {
                let users = weir_auth::AuthorizerConfig::parse_super_users(value);
                for user in &users {
                    weir_auth::parse_principal(user).map_err(|e| refused(e.to_string()))?;
                }
                self.authorizer.super_users = users;
            }
            "metrics.enabled" => self.metrics_enabled = config.parse()?,
            "admin.auth.token.file" => {
                let path = value.trim();
                if path.is_empty() {
                    return Err(refused(
                        "names no file: give a file of tokens, one per line".to_owned(),
                    ));
                }
                self.admin_token_file = Some(PathBuf::from(path));
            }
            "allow.everyone.if.no.acl.found" => {
                self.authorizer.allow_everyone_if_no_acl_found = config.parse()?;
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = config.at_least(1)?,
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = config.at_least(1)?;
            }
            "default.replication.factor" => self.default_replication_factor = config.at_least(1)?,
            "auto.leader.rebalance.enable" => self.leader_rebalance.enabled = config.parse()?,
            "leader.imbalance.check.interval.seconds" => {
                self.leader_rebalance.interval = Duration::from_secs(config.at_least(1)?);
            }
            "leader.imbalance.per.broker.percentage" => {
                self.leader_rebalance.per_broker_percentage = config.at_least(0)?;
            }
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = config.at_least(1)?,
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes = config.at_least(1)?,
            "replica.fetch.response.max.bytes" => {
                self.replica_fetch_response_max_bytes = config.at_least(1)?;
            }
            "num.partitions" => {
                self.default_partitions = config.parse()?;
                if self.default_partitions < 1 {
                    return Err(refused("must be at least 1".to_owned()));
                }
            }
            "auto.create.topics.enable" => self.auto_create_topics = config.parse()?,
            "socket.request.max.bytes" => {
                self.max_request_bytes = config.parse()?;
                if self.max_request_bytes < 1024 {
                    return Err(refused("must be at least 1024".to_owned()));
                }
            }
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = config.parse()?;
                if self.retention_check_interval_ms == 0 {
                    return Err(refused("must be positive".to_owned()));
                }
            }
            "max.partitions" => {
                self.max_partitions = config.at_least(1)?;
            }
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = config.at_least(0)?;
            }
            "group.min.session.timeout.ms" => {
                self.group.min_session_timeout_ms = config.at_least(1)?;
            }
            "group.max.session.timeout.ms" => {
                self.group.max_session_timeout_ms = config.at_least(1)?;
            }
            "group.max.size" => self.group.max_size = config.at_least(1)?,
            "group.consumer.migration.policy" => {
                self.group.consumer_migration_policy = weir_broker::MigrationPolicy::parse(value)
                    .ok_or_else(|| {
                    SettingsError::BrokerConfigUnknownValue {
                        key: key.to_owned(),
                        value: value.to_owned(),
                    }
                })?;
            }
            "group.share.enable" => self.group.share_enable = config.parse()?,
            "group.share.heartbeat.interval.ms" => {
                self.group.share_heartbeat_interval_ms = config.at_least(1)?;
            }
            "group.share.session.timeout.ms" => {
                self.group.share_session_timeout_ms = config.at_least(1)?;
            }
            "group.share.max.size" => self.group.share_max_size = config.at_least(1)?,
            "group.share.record.lock.duration.ms" => {
                self.group.share_record_lock_duration_ms = config.at_least(1)?;
            }
            "group.share.delivery.count.limit" => {
                self.group.share_delivery_count_limit = config.at_least(1)?;
            }
            "group.share.partition.max.record.locks" => {
                self.group.share_partition_max_record_locks = config.at_least(1)?;
            }
            "share.coordinator.state.topic.num.partitions" => {
                self.group.share_state_topic_num_partitions = config.at_least(1)?;
            }
            "share.coordinator.state.topic.replication.factor" => {
                self.group.share_state_topic_replication_factor = config.at_least(1)?;
            }
            "group.share.max.share.sessions" => {
                self.group.share_max_sessions = config.at_least(1)?;
            }
            "errors.deadletterqueue.topic.name.prefix" => {
                let prefix = value.trim();
                weir_broker::validate_dlq_topic_prefix(prefix).map_err(refused)?;
                self.group.dlq_topic_prefix = prefix.to_owned();
            }
            "errors.deadletterqueue.auto.create.topics.enable" => {
                self.group.dlq_auto_create = config.parse()?;
            }
            "group.consumer.heartbeat.interval.ms" => {
                self.group.consumer_heartbeat_interval_ms = config.at_least(1)?;
            }
            "group.consumer.session.timeout.ms" => {
                self.group.consumer_session_timeout_ms = config.at_least(1)?;
            }
            "offsets.topic.num.partitions" => {
                self.group.offsets_topic_num_partitions = config.at_least(1)?;
            }
            "offsets.topic.replication.factor" => {
                self.group.offsets_topic_replication_factor = config.at_least(1)?;
            }
            "offsets.retention.minutes" => {
                self.group.offsets_retention_minutes = config.at_least(1)?;
            }
            "offset.metadata.max.bytes" => {
                self.group.offset_metadata_max_bytes = config.at_least(0)?;
            }
            "transaction.max.timeout.ms" => {
                self.txn.transaction_max_timeout_ms = config.at_least(1)?;
            }
            "transactional.id.expiration.ms" => {
                self.txn.transactional_id_expiration_ms = config.at_least(1)?;
            }
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.txn.abort_timed_out_interval_ms = config.at_least(1)?;
            }
            "transaction.state.log.num.partitions" => {
                self.txn.state_log_num_partitions = config.at_least(1)?;
            }
            "transaction.state.log.replication.factor" => {
                self.txn.state_log_replication_factor = config.at_least(1)?;
            }
            "weir.txn.checkback.url" => {
                self.txn.checkback.url = CheckbackConfig::parse_url(value).map_err(refused)?;
            }
            "weir.txn.checkback.prefixes" => {
                self.txn.checkback.prefixes =
                    CheckbackConfig::parse_prefixes(value).map_err(refused)?;
            }
            "weir.txn.checkback.max.checks" => {
                self.txn.checkback.max_checks = config.at_least(1)?;
            }
            "weir.txn.checkback.default.action" => {
                self.txn.checkback.default_commit = match value.trim() {
                    "abort" => false,
                    "commit" => true,
                    _ => return Err(refused("must be abort or commit".to_owned())),
                };
            }
            "weir.txn.checkback.backoff.ms" => {
                self.txn.checkback.backoff_ms = config.at_least(1)?;
            }
            "weir.txn.checkback.backoff.max.ms" => {
                self.txn.checkback.backoff_max_ms = config.at_least(1)?;
            }
            "weir.txn.checkback.timeout.ms" => {
                self.txn.checkback.timeout_ms = config.at_least(1)?;
            }
            "log.index.memory.bytes" => self.index_memory_bytes = config.at_least(0)?,
            "max.connections" => self.server.max_connections = config.at_least(1)?,
            "max.connections.per.ip" => {
                self.server.max_connections_per_ip = config.at_least(0)?;
            }
            "max.connections.per.ip.overrides" => {
                self.server.max_connections_per_ip_overrides =
                    parse_connection_overrides(value).map_err(refused)?;
            }
            "max.connection.creation.rate" => {
                let rate: u64 = config.at_least(1)?;
                // Kafka's default, Int.MaxValue, means no limit.
                self.server.max_connection_creation_rate =
                    (rate < i32::MAX as u64).then_some(rate as f64);
            }
            "quota.window.num" => self.quota_windows.samples = config.at_least(1)?,
            "quota.window.size.seconds" => {
                let seconds: u64 = config.at_least(1)?;
                self.quota_windows.size = Duration::from_secs(seconds);
            }
            "controller.quota.window.num" => {
                self.controller_quota_windows.samples = config.at_least(1)?;
            }
            "controller.quota.window.size.seconds" => {
                let seconds: u64 = config.at_least(1)?;
                self.controller_quota_windows.size = Duration::from_secs(seconds);
            }
            "connections.max.idle.ms" => {
                self.server.connections_max_idle_ms = config.at_least(1)?;
            }
            "queued.max.response.bytes" => {
                self.server.queued_max_response_bytes = config.at_least(1024)?;
            }
            "log.segment.bytes" | "log.roll.ms" => {
                let parsed: u64 = config.parse()?;
                if key == "log.segment.bytes" {
                    if parsed < 1024 {
                        return Err(refused("must be at least 1024".to_owned()));
                    }
                    self.segment_bytes = parsed;
                } else {
                    self.segment_ms = parsed.max(1);
                }
                self.log_defaults.insert(key.to_string(), value.to_string());
            }
            _ => {
                weir_broker::validate_log_default(key, value).map_err(|e| refused(e.message))?;
                self.log_defaults.insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }
}

impl Settings {
    /// The cluster settings fit together: a controller is one of the
    /// voters, and cluster-only settings need --voters.
    fn check_cluster(&self) -> Result<(), SettingsError> {
        let usage = |name: &str, value: String, reason: &str| SettingsError::BrokerConfigRefused {
            key: name.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        let roles = match (self.roles.broker, self.roles.controller) {
            (true, true) => "broker,controller",
            (true, false) => "broker",
            _ => "controller",
        };
        if self.voters.is_empty() {
            if roles != "broker,controller" {
                return Err(usage(
                    "process.roles",
                    roles.to_owned(),
                    "a node without --voters is a one-node cluster of its own and runs both roles",
                ));
            }
            if let Some(listen) = &self.controller_listen {
                return Err(usage(
                    "controller_listen",
                    listen.clone(),
                    "needs --voters (a one-node cluster has no controller listener)",
                ));
            }
            return Ok(());
        }
        // Brokers reach each other in plaintext today (replication, forwarded
        // requests): a TLS inter-broker listener would leave them unable to.
        if let Some(inter) = self
            .listeners
            .specs
            .iter()
            .find(|l| l.name == self.listeners.inter_broker)
            && (inter.tls.is_some() || inter.sasl.is_some())
        {
            return Err(usage(
                "inter.broker.listener.name",
                inter.name.clone(),
                "brokers of a cluster reach each other over a PLAINTEXT listener (Weir's \
                 brokers do not yet speak TLS or SASL to each other): name one, and serve \
                 clients on SSL or SASL listeners beside it",
            ));
        }
        let id = u64::try_from(self.node_id).unwrap_or(u64::MAX);
        if !self.voters.contains_key(&id) {
            self.check_observer()?;
        } else if !self.roles.controller {
            return Err(usage(
                "node.id",
                self.node_id.to_string(),
                "a broker-only node (--process-roles broker) needs an id that is not in --voters",
            ));
        }
        // The quorum elects leaders by its replicated state, the same on
        // every node; one node's static default cannot take part.
        if let Some(value) = self.log_defaults.get(UNCLEAN_LEADER_ELECTION_ENABLE) {
            return Err(usage(
                UNCLEAN_LEADER_ELECTION_ENABLE,
                value.clone(),
                "a cluster takes it as a dynamic config: for the whole cluster with \
                 IncrementalAlterConfigs on the default broker resource (kafka-configs \
                 --entity-type brokers --entity-default), or per topic",
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// A node whose id is not in --voters is an observer of the quorum (a
    /// Raft learner): a broker-only node, or a controller that
    /// `weir cluster add-controller` can make a voter. The voters reach it
    /// at its --controller-listen, which must be given and be an address
    /// they can reach.
    fn check_observer(&self) -> Result<(), SettingsError> {
        let usage = |name: &str, value: String, reason: &str| SettingsError::BrokerConfigRefused {
            key: name.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        let Some(listen) = &self.controller_listen else {
            return Err(usage(
                "node.id",
                self.node_id.to_string(),
                "is not in --voters, so this node is an observer of the metadata quorum (a \
                 broker-only node, or a controller to add with `weir cluster add-controller`): \
                 it needs --controller-listen, where the voters send it the metadata log",
            ));
        };
        let host = listen.rsplit_once(':').map_or("", |(host, _)| host);
        if host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(usage(
                "controller_listen",
                listen.clone(),
                "an observer tells the voters this address: give one they can reach, not a \
                 wildcard",
            ));
        }
        Ok(())
    }
}

/// `max.connections.per.ip.overrides`: `address:count` pairs, comma
/// separated. Kafka also takes host names; Weir takes addresses only, so
/// that what is limited does not depend on DNS at start-up.
fn parse_connection_overrides(value: &str) -> Result<HashMap<std::net::IpAddr, usize>, String> {
    let mut overrides = HashMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (host, count) = pair
            .rsplit_once(':')
            .ok_or_else(|| format!("'{pair}' is not address:count"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host
            .parse()
            .map_err(|_| format!("'{host}' is not an IP address (host names are not taken)"))?;
        let count = count
            .parse()
            .map_err(|_| format!("'{count}' in '{pair}' is not a count"))?;
        overrides.insert(ip, count);
    }
    Ok(overrides)
}

/// Kafka's name for allowing an out-of-sync replica to lead.
const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Parses one broker config's value, naming the config when it cannot.
struct ConfigParser<'a> {
    key: &'a str,
    value: &'a str,
}

impl ConfigParser<'_> {
    /// The value as a `T`.
    fn parse<T>(&self) -> Result<T, SettingsError>
    where
        T: std::str::FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.value
            .parse()
            .map_err(|err: T::Err| SettingsError::BrokerConfigParse {
                key: self.key.to_owned(),
                value: self.value.to_owned(),
                source: Box::new(err),
            })
    }

    /// The value as a number that must be at least `min`.
    fn at_least<T>(&self, min: T) -> Result<T, SettingsError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let parsed: T = self.parse()?;
        if parsed < min {
            return Err(SettingsError::BrokerConfigRefused {
                key: self.key.to_owned(),
                value: self.value.to_owned(),
                reason: format!("must be at least {min}"),
            });
        }
        Ok(parsed)
    }
}

/// Kafka config names from the file's `[broker]` table. TOML reads a bare
/// dotted key (`log.retention.ms = 5`) as nested tables and a quoted one
/// (`"log.retention.ms" = 5`) as one key; both give the name
/// `log.retention.ms`. A name given both ways is refused.
fn flatten_broker_table(
    prefix: &str,
    table: BTreeMap<String, toml::Value>,
    out: &mut BTreeMap<String, String>,
) -> Result<(), SettingsError> {
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
                return Err(SettingsError::BrokerTableList { name });
            }
            other => other.to_string(),
        };
        if out.insert(name.clone(), value).is_some() {
            return Err(SettingsError::BrokerTableTwice { name });
        }
    }
    Ok(())
}

/// Where the admin listener binds unless told otherwise (Redpanda's admin port).
const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9644";
/// The `--admin-listen` value that turns the admin API off.
const ADMIN_LISTEN_NONE: &str = "none";

/// Parses `--admin-listen`: `HOST:PORT`, or `none`.
fn parse_admin_listen(arg: &str) -> Result<String, String> {
    if arg == ADMIN_LISTEN_NONE {
        return Ok(arg.to_owned());
    }
    parse_host_port(arg).map_err(|reason| format!("{reason}, or {ADMIN_LISTEN_NONE}"))
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

/// Parses `KEY=VALUE` (`--set`); the value may itself hold `=`.
fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfigFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| SettingsError::InvalidConfigFile {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// How `weir serve` writes its log lines (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter).
    Json,
}

fn init_logging(filter: &str, format: LogFormat) -> Result<(), ServeError> {
    // openraft narrates every vote and append, and logs each failed RPC to
    // a stopped peer as an error twice a second; weir-cluster logs what an
    // operator needs (leader changes, fencing, storage errors). A filter
    // that names openraft gets it back.
    let filter = if filter.contains("openraft") {
        filter.to_owned()
    } else {
        format!("{filter},openraft=off")
    };
    let filter = EnvFilter::try_new(&filter).map_err(|source| ServeError::LogLevel {
        filter: filter.to_owned(),
        source,
    })?;
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logger
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The target stays in: a collector filters by it. No colour codes
        // inside JSON strings, whatever stderr is.
        LogFormat::Json => logger.json().with_ansi(false).init(),
    }
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
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let settings = Settings::resolve(args)?;
    init_logging(&settings.log_level, settings.log_format)?;
    // Test builds only: the storage failpoints named in FAILPOINTS
    // (docs/testing.md), kept until the broker exits.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-worker")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> Result<(), ServeError> {
    let started = Instant::now();
    let clustered = !settings.voters.is_empty();
    // Bind first, lock the data folder next: a start that cannot serve (the
    // port is taken, another broker holds the folder) fails before anything
    // in the folder is read, recovered or written.
    // The TLS configurations are built here too: a certificate that
    // cannot be used stops the start as a taken port does.
    let listeners = if settings.roles.broker {
        Some(listeners::bind(&settings.listeners).await?)
    } else {
        None
    };
    let controller_listener = if clustered {
        let listen = settings.controller_address();
        Some(
            tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|source| ServeError::ControllerListen { listen, source })?,
        )
    } else {
        None
    };
    // None on a controller-only node (see `Settings::resolve_admin_listen`).
    let admin_listener = match &settings.admin_listen {
        Some(listen) => Some(
            admin::Bound::bind(
                listen,
                settings.admin_tls.as_ref(),
                settings.admin_token_file.as_deref(),
            )
            .await?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| ServeError::CreateDataDir {
        path: settings.data_dir.clone(),
        source,
    })?;
    let lock = DataDirLock::acquire(&settings.data_dir)?;
    weir_metrics::set_enabled(settings.metrics_enabled);
    tracing::debug!(lock = %lock.path().display(), "locked the data folder");
    settings.check_kind_of_node()?;

    let controller = match controller_listener {
        Some(controller_listener) => Some(start_controller(&settings, controller_listener).await?),
        None => None,
    };
    let Some(listeners) = listeners else {
        // A controller-only node: no broker, no commit log.
        let controller = controller.ok_or(ServeError::Listener(std::io::Error::other(
            "a node without the broker role runs a controller",
        )))?;
        println!("controller listening on {}", controller.local_addr());
        let entered = tokio::select! {
            entered = cluster::enter(&controller) => entered.map(|()| true),
            () = shutdown_signal() => Ok(false),
        };
        match entered {
            Ok(true) => shutdown_signal().await,
            Ok(false) => {}
            Err(source) => {
                controller.shutdown().await;
                return Err(ServeError::Quorum {
                    path: settings.data_dir.clone(),
                    source,
                });
            }
        }
        controller.shutdown().await;
        drop(lock);
        tracing::info!("shut down cleanly");
        return Ok(());
    };

    let clock = Arc::new(SystemClock);
    let log_config = LogConfig {
        segment_bytes: settings.segment_bytes,
        segment_ms: settings.segment_ms,
        index_memory_bytes: settings.index_memory_bytes,
        ..LogConfig::default()
    };
    let metadata_existed = match &controller {
        Some(_) => settings.data_dir.join(RAFT_DIR).exists(),
        None => LocalMetadataStore::exists(&settings.data_dir),
    };
    let (log, recovery) =
        CommitLog::open(&settings.data_dir, log_config, clock.clone()).map_err(|source| {
            ServeError::OpenLog {
                path: settings.data_dir.clone(),
                source,
            }
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
        return Err(ServeError::MetadataMissing {
            path: settings.data_dir.clone(),
            partitions,
            folder: if controller.is_some() {
                RAFT_DIR
            } else {
                "meta"
            },
        });
    }

    let endpoints = listeners
        .iter()
        .map(listeners::Bound::endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    // Other brokers reach this one at its inter-broker listener.
    let (advertised_host, advertised_port) = endpoints
        .iter()
        .find(|e| e.listener == settings.listeners.inter_broker)
        .or(endpoints.first())
        .map(|e| (e.host.clone(), e.port))
        .ok_or(ServeError::Listener(std::io::Error::other(
            "a broker has at least one listener",
        )))?;
    let registration = cluster::Registration {
        id: settings.node_id,
        host: advertised_host.clone(),
        port: advertised_port,
        rack: settings.rack.clone(),
        endpoints: endpoints.clone(),
    };
    // A cluster node follows the quorum's metadata: once it has applied all
    // of it (a restarted node's copy may trail), registered, and taken the
    // change feed from that point on.
    let (metadata, epoch, changes): (Arc<dyn MetadataStore>, _, _) = match &controller {
        Some(controller) => {
            tokio::select! {
                joined = cluster::join_and_catch_up(controller) => {
                    joined.map_err(|source| ServeError::Quorum {
                        path: settings.data_dir.clone(),
                        source,
                    })?;
                }
                () = shutdown_signal() => {
                    controller.shutdown().await;
                    log.shutdown().map_err(ServeError::Shutdown)?;
                    return Ok(());
                }
            }
            let epoch = cluster::register(controller, &registration).await;
            let changes = controller.changes();
            let store =
                RaftMetadataStore::new(controller.clone(), tokio::runtime::Handle::current());
            (
                Arc::new(store),
                Arc::new(std::sync::atomic::AtomicI64::new(epoch)),
                Some(changes),
            )
        }
        None => (
            Arc::new(
                LocalMetadataStore::open(&settings.data_dir).map_err(|source| {
                    ServeError::OpenMetadata {
                        path: settings.data_dir.clone(),
                        source,
                    }
                })?,
            ),
            Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            None,
        ),
    };

    let config = BrokerConfig {
        node_id: settings.node_id,
        advertised_host,
        advertised_port,
        listeners: endpoints,
        inter_broker_listener: settings.listeners.inter_broker.clone(),
        default_partitions: settings.default_partitions,
        default_replication_factor: settings.default_replication_factor,
        auto_create_topics: settings.auto_create_topics,
        max_partitions: settings.max_partitions,
        max_request_bytes: settings.max_request_bytes,
        log_defaults: settings.log_defaults.clone(),
        group: settings.group.clone(),
        txn: settings.txn.clone(),
        rack: settings.rack.clone(),
        rack_aware_replica_selector: settings.rack_aware_replica_selector,
        replica_lag_time_max_ms: settings.replica_lag_time_max_ms,
        replica_fetch_max_bytes: settings.replica_fetch_max_bytes,
        replica_fetch_response_max_bytes: settings.replica_fetch_response_max_bytes,
        authorizer: settings
            .authorizer_enabled
            .then(|| settings.authorizer.clone()),
        quota_windows: settings.quota_windows,
        controller_quota_windows: settings.controller_quota_windows,
        ..BrokerConfig::default()
    };
    // Loading replays `__consumer_offsets` from disk: off the workers.
    let loading = log.clone();
    let broker = Arc::new(
        tokio::task::spawn_blocking(move || Broker::new(config, loading, metadata, clock))
            .await
            .map_err(ServeError::LoadTask)?
            .map_err(ServeError::LoadTopics)?,
    );
    broker.start_background();
    // Stopped (with a last checkpoint) before the log closes, below.
    let delays = weir_broker::delay::DelayMover::start(broker.clone(), &settings.data_dir)
        .map_err(ServeError::Delays)?;
    let mut cluster_tasks = Vec::new();
    // A cluster node's standing with the quorum, for `/ready`.
    let mut unfenced = None;
    if let (Some(controller), Some(changes)) = (&controller, changes) {
        cluster_tasks.push(cluster::spawn_follower(changes, broker.clone()));
        let (active_tx, mut active) = tokio::sync::watch::channel(false);
        unfenced = Some(active.clone());
        cluster_tasks.push(cluster::spawn_heartbeats(
            controller.clone(),
            broker.clone(),
            registration.clone(),
            epoch.clone(),
            (
                Duration::from_millis(settings.broker_heartbeat_interval_ms),
                Duration::from_millis(settings.broker_session_timeout_ms),
            ),
            active_tx,
        ));
        // As a KRaft broker does, serve clients only once unfenced: until
        // then Metadata would name no broker here, and a client that came
        // at once (as scripts do on the `listening on` line) would be
        // told of no controller.
        tokio::select! {
            _ = active.wait_for(|active| *active) => {}
            () = shutdown_signal() => {
                for task in cluster_tasks {
                    task.abort();
                }
                controller.shutdown().await;
                delays.stop();
                log.shutdown().map_err(ServeError::Shutdown)?;
                return Ok(());
            }
        }
    }
    let limits = ServerLimits {
        max_request_bytes: settings.max_request_bytes,
        ..settings.server.clone()
    };

    // Served from here on, as the Kafka listener is.
    let admin = admin_listener.map(|listener| {
        let addr = listener.addr();
        (addr, listener.serve(broker.clone(), unfenced))
    });

    // Scripts and tests read these lines to learn the ports: the first
    // listener's as `listening on`, the first line as it always was, then
    // every listener's by name.
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        bound.push((listener.spec.name.clone(), listener.local_addr()?));
    }
    if let Some((_, first)) = bound.first() {
        println!("listening on {first}");
    }
    for (name, addr) in &bound {
        println!("listener {name} listening on {addr}");
    }
    if let Some((addr, _)) = &admin {
        println!("admin listening on {addr}");
    }
    if let Some(controller) = &controller {
        println!("controller listening on {}", controller.local_addr());
    }
    tracing::info!(
        listeners = %bound
            .iter()
            .map(|(name, addr)| format!("{name}://{addr}"))
            .collect::<Vec<_>>()
            .join(","),
        admin_listen = ?admin.as_ref().map(|(addr, _)| *addr),
        data_dir = %settings.data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "broker ready"
    );

    let maintenance = tokio::spawn(maintenance_loop(
        log.clone(),
        Duration::from_millis(settings.retention_check_interval_ms),
    ));
    // A cluster's broker hands its leaderships over before it stops serving.
    let stopping = {
        let controller = controller.clone();
        let epoch = epoch.clone();
        let id = settings.node_id;
        async move {
            shutdown_signal().await;
            if let Some(controller) = controller {
                let epoch = epoch.load(std::sync::atomic::Ordering::SeqCst);
                cluster::controlled_shutdown(&controller, id, epoch).await;
            }
        }
    };
    let listeners = listeners
        .into_iter()
        .map(weir_server::Listener::from)
        .collect();
    let served = weir_server::serve(listeners, broker, limits, stopping).await;
    if let Some((_, admin)) = admin {
        admin.stop().await;
    }
    maintenance.abort();
    for task in cluster_tasks {
        task.abort();
    }
    tracing::info!("listener closed; flushing the commit log");
    delays.stop();
    let closed = log.shutdown();
    if let Some(controller) = &controller {
        controller.shutdown().await;
    }
    served.map_err(ServeError::Listener)?;
    closed.map_err(ServeError::Shutdown)?;
    // Released only once the log is closed: no other broker may open it earlier.
    drop(lock);
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The folder under the data folder holding a cluster node's Raft log,
/// vote and snapshot.
const RAFT_DIR: &str = "raft";

/// Start this node's part of the metadata quorum on `listener`.
async fn start_controller(
    settings: &Settings,
    listener: tokio::net::TcpListener,
) -> Result<Arc<Controller>, ServeError> {
    let id = u64::try_from(settings.node_id).unwrap_or(u64::MAX);
    let mut config = ControllerConfig::new(
        id,
        settings.voters.clone(),
        settings.data_dir.join(RAFT_DIR),
    );
    config.broker_session_timeout = Duration::from_millis(settings.broker_session_timeout_ms);
    config.broker_heartbeat_interval = Duration::from_millis(settings.broker_heartbeat_interval_ms);
    config.leader_rebalance = settings.leader_rebalance;
    config.controller_role = settings.roles.controller;
    if !settings.voters.contains_key(&id) {
        // The address the voters send the log to: the one given, with the
        // port bound when it asked for any (0).
        let given = settings.controller_address();
        let bound = listener
            .local_addr()
            .map_err(|e| ServeError::Quorum {
                path: settings.data_dir.clone(),
                source: weir_cluster::ClusterError::Listener(e),
            })?
            .port();
        config.learner = Some(match given.rsplit_once(':') {
            Some((host, "0")) => format!("{host}:{bound}"),
            _ => given,
        });
    }
    Controller::start(config, listener)
        .await
        .map_err(|source| ServeError::Quorum {
            path: settings.data_dir.clone(),
            source,
        })
}

impl Settings {
    /// Where the controller listener binds: `--controller-listen`, else this
    /// node's address in `--voters`.
    fn controller_address(&self) -> String {
        self.controller_listen.clone().unwrap_or_else(|| {
            u64::try_from(self.node_id)
                .ok()
                .and_then(|id| self.voters.get(&id).cloned())
                .unwrap_or_else(|| "127.0.0.1:9093".to_owned())
        })
    }

    /// A data folder keeps the kind of node it was made by: a one-node
    /// cluster's metadata (`meta/`) or a cluster node's (`raft/`). Taking
    /// one for the other would start with no topics and remove the
    /// partitions' storage as unreferenced.
    fn check_kind_of_node(&self) -> Result<(), ServeError> {
        let clustered = !self.voters.is_empty();
        let local = LocalMetadataStore::exists(&self.data_dir);
        let raft = self.data_dir.join(RAFT_DIR).exists();
        let wrong = |held, wanted| ServeError::WrongKindOfNode {
            path: self.data_dir.clone(),
            held,
            wanted,
        };
        match (clustered, local, raft) {
            (true, true, _) => Err(wrong(
                "a one-node cluster (meta/)",
                "a node of a cluster (--voters)",
            )),
            (false, _, true) => Err(wrong(
                "a node of a cluster (raft/)",
                "a one-node cluster (no --voters)",
            )),
            _ => Ok(()),
        }
    }
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
        assert_eq!(s.listeners.specs.len(), 1);
        assert_eq!(s.listeners.specs[0].bind, "127.0.0.1:9092");
        assert_eq!(s.listeners.specs[0].name, "PLAINTEXT");
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
        assert_eq!(s.listeners.specs[0].bind, "127.0.0.1:19092");
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
    fn the_admin_listener_is_on_by_default_and_none_turns_it_off() {
        assert_eq!(
            resolve(ServeArgs::default()).admin_listen.as_deref(),
            Some("127.0.0.1:9644")
        );
        let off = resolve(ServeArgs {
            admin_listen: Some("none".into()),
            ..ServeArgs::default()
        });
        assert_eq!(off.admin_listen, None);
        // The flag wins over the file, which wins over the default.
        let file = resolve_file("admin_listen = \"127.0.0.1:19644\"\n").expect("resolves");
        assert_eq!(file.admin_listen.as_deref(), Some("127.0.0.1:19644"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "admin_listen = \"none\"\n").expect("write config");
        let flag = resolve(ServeArgs {
            config: Some(path),
            admin_listen: Some("127.0.0.1:0".into()),
            ..ServeArgs::default()
        });
        assert_eq!(flag.admin_listen.as_deref(), Some("127.0.0.1:0"));
        // The file's value gets the flag's check.
        let err = resolve_file("admin_listen = \"nowhere\"\n").expect_err("refused");
        assert!(chain(&err).contains("HOST:PORT"), "{}", chain(&err));
        for bad in ["nowhere", "None", "127.0.0.1:99999"] {
            assert!(parse_admin_listen(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_controller_only_node_has_no_admin_listener() {
        let s = resolve(ServeArgs {
            node_id: Some(1),
            voters: Some("1@127.0.0.1:9093".into()),
            process_roles: Some("controller".into()),
            admin_listen: Some("127.0.0.1:9644".into()),
            ..ServeArgs::default()
        });
        assert_eq!(s.admin_listen, None);
    }

    #[test]
    fn network_limits_take_kafka_names() {
        let s = resolve(ServeArgs {
            set: vec![
                ("max.connections".into(), "7".into()),
                ("connections.max.idle.ms".into(), "1500".into()),
                ("queued.max.response.bytes".into(), "33554432".into()),
                ("max.connections.per.ip".into(), "3".into()),
                (
                    "max.connections.per.ip.overrides".into(),
                    "127.0.0.1:10, [::1]:0".into(),
                ),
                ("max.connection.creation.rate".into(), "50".into()),
                ("quota.window.num".into(), "3".into()),
                ("quota.window.size.seconds".into(), "2".into()),
                ("controller.quota.window.num".into(), "4".into()),
                ("controller.quota.window.size.seconds".into(), "5".into()),
                ("metrics.enabled".into(), "false".into()),
            ],
            ..ServeArgs::default()
        });
        assert_eq!(s.server.max_connections, 7);
        assert_eq!(s.server.max_connections_per_ip, 3);
        let localhost = |ip: &str| ip.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            s.server.max_connections_per_ip_overrides,
            HashMap::from([(localhost("127.0.0.1"), 10), (localhost("::1"), 0)])
        );
        assert_eq!(s.server.max_connection_creation_rate, Some(50.0));
        assert_eq!(
            s.quota_windows,
            weir_broker::QuotaWindows {
                samples: 3,
                size: Duration::from_secs(2)
            }
        );
        assert_eq!(
            s.controller_quota_windows,
            weir_broker::QuotaWindows {
                samples: 4,
                size: Duration::from_secs(5)
            }
        );
        assert!(!s.metrics_enabled);
        assert_eq!(s.server.connections_max_idle_ms, 1500);
        assert_eq!(s.server.queued_max_response_bytes, 32 << 20);
        let d = resolve(ServeArgs::default());
        assert_eq!(d.server.connections_max_idle_ms, 600_000);
        assert_eq!(d.server.max_connections, 10_000);
        assert_eq!(d.server.max_connections_per_ip, usize::MAX);
        assert_eq!(d.server.max_connection_creation_rate, None);
        assert!(d.metrics_enabled);
        assert_eq!(d.quota_windows, weir_broker::QuotaWindows::default());
        assert_eq!(
            d.controller_quota_windows,
            weir_broker::QuotaWindows::default()
        );
    }

    #[test]
    fn unknown_or_invalid_configs_are_refused() {
        for (key, value) in [
            ("no.such.config", "1"),
            ("log.retention.ms", "forever"),
            ("num.partitions", "0"),
            ("max.connections", "0"),
            ("connections.max.idle.ms", "0"),
            ("max.connections.per.ip.overrides", "broker-1.example:5"),
            ("max.connections.per.ip.overrides", "127.0.0.1"),
            ("max.connection.creation.rate", "0"),
            ("quota.window.num", "0"),
            ("controller.quota.window.size.seconds", "0"),
            ("metrics.enabled", "sometimes"),
        ] {
            let err = Settings::resolve(ServeArgs {
                set: vec![(key.into(), value.into())],
                ..ServeArgs::default()
            });
            assert!(err.is_err(), "{key}={value} should be refused");
        }
    }

    #[test]
    fn a_cluster_node_refuses_a_static_unclean_election_default_and_says_where_it_goes() {
        let cluster = |set: Vec<(String, String)>| {
            Settings::resolve(ServeArgs {
                set: [
                    ("node.id".to_string(), "1".to_string()),
                    (
                        "controller.quorum.voters".to_string(),
                        "1@127.0.0.1:9093".to_string(),
                    ),
                ]
                .into_iter()
                .chain(set)
                .collect(),
                ..ServeArgs::default()
            })
        };
        assert!(cluster(Vec::new()).is_ok());
        let err = cluster(vec![(
            "unclean.leader.election.enable".into(),
            "true".into(),
        )])
        .unwrap_err();
        assert!(chain(&err).contains("--entity-default"), "{}", chain(&err));
        // A one-node cluster has no elections; the default stays a topic default.
        assert!(
            Settings::resolve(ServeArgs {
                set: vec![("unclean.leader.election.enable".into(), "true".into())],
                ..ServeArgs::default()
            })
            .is_ok()
        );
    }

    /// The whole message, causes included, as the binary prints it.
    fn chain(err: &(dyn std::error::Error + 'static)) -> String {
        std::iter::successors(Some(err), |cause| cause.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")
    }

    #[test]
    fn refused_settings_are_usage_errors_with_their_reason() {
        for (key, value, message) in [
            (
                "num.partitions",
                "0",
                "broker config num.partitions=0: must be at least 1",
            ),
            (
                "node.id",
                "x",
                "broker config node.id=x: invalid digit found in string",
            ),
            (
                "group.consumer.migration.policy",
                "sideways",
                "broker config group.consumer.migration.policy=sideways",
            ),
        ] {
            let err = Settings::resolve(ServeArgs {
                set: vec![(key.into(), value.into())],
                ..ServeArgs::default()
            })
            .expect_err("refused");
            let err = ServeError::from(err);
            assert!(err.is_usage(), "{key}={value}");
            assert_eq!(chain(&err), message);
        }
        let busy = ServeError::Lock(LockError::InUse {
            data_dir: PathBuf::from("d"),
            holder: "pid 1".to_owned(),
            path: PathBuf::from("d/.lock"),
        });
        assert!(!busy.is_usage(), "a held lock is exit code 1, not 2");
    }

    fn resolve_file(text: &str) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, text).expect("write config");
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
        // The file sits at the repository's root, two levels above this crate.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weir.example.toml");
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
