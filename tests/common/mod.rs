//! Shared helpers of the end-to-end tests: a `weir serve` child process on a
//! free port in its own temporary data folder, and librdkafka client configs
//! that need nothing Weir-specific.
//!
//! The consumers built here `assign` partitions at explicit offsets and never
//! commit; the group id is set only because librdkafka refuses to build a
//! consumer without one. Group tests (tests/groups.rs) build their own.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

pub mod cli;
pub mod faults;
pub mod history;
pub mod netns;
pub mod raw;
pub mod security;
pub mod share;
pub mod workload;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tempfile::TempDir;

/// How long a broker may take to print its listening line.
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restart keeps retrying a port that is still held by the previous life.
pub const BROKER_REBIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of any single client operation (metadata, admin, a flush).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the broker's stderr is shown when a test fails.
const STDERR_TAIL_BYTES_MAX: u64 = 64 * 1024;

/// A `weir serve` child process. Killed on drop; its stderr is shown when the
/// test fails.
pub struct Broker {
    child: Option<Child>,
    dir: TempDir,
    extra_args: Vec<String>,
    /// Environment variables set for every life (FAILPOINTS, ...).
    envs: Vec<(String, String)>,
    addr: String,
    /// The admin listener's address: `--admin-listen` as the harness gives
    /// it (127.0.0.1:0, then the port the first life bound, so it survives
    /// restarts as `addr` does), or as `extra_args` give it; `None` when
    /// they give `none`.
    admin_addr: Option<String>,
    /// Whether `extra_args` give `--admin-listen` (the harness then adds none).
    admin_in_extra_args: bool,
    /// Whether the broker is given `--listen` (not when `extra_args` name
    /// Kafka's `listeners`).
    listen_flag: bool,
    /// Each listener's bound address, by name, from the last life.
    listeners: Vec<(String, String)>,
    /// How many listeners the broker is given: their lines are awaited.
    listeners_given: usize,
    stderr_path: PathBuf,
    lives: u32,
}

/// How many Kafka listeners a broker started with `args` has: those of
/// `--set listeners=...`, else the one of `--listen`.
fn given_listeners(args: &[&str]) -> usize {
    args.iter()
        .find_map(|arg| arg.strip_prefix("listeners="))
        .map_or(1, |list| {
            list.split(',').filter(|l| !l.trim().is_empty()).count()
        })
}

/// The `--admin-listen` that `args` give, if they give one.
pub fn admin_listen_in(args: &[String]) -> Option<&str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == "--admin-listen" {
            args.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix("--admin-listen=")
        }
    })
}

impl Broker {
    /// Start a broker on a free port with `extra_args` after the defaults.
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1:0", extra_args)
    }

    /// Start a broker listening on `listen` (for tests that must know the
    /// port in advance, such as restarts on a reserved port).
    pub fn start_at(listen: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(listen, extra_args, &[])
    }

    /// Start a broker listening on `listen` with `envs` in its environment
    /// (for example `FAILPOINTS` for a broker built with `--features failpoints`).
    pub fn start_with_env(
        listen: &str,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(Some(listen), extra_args, envs)
    }

    /// Start a broker with Kafka's `listeners` (`NAME://HOST:PORT,...`)
    /// instead of `--listen`; [`Broker::listener`] gives each one's address
    /// and [`Broker::bootstrap`] the first's.
    pub fn start_with_listeners(listeners: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        let set = format!("listeners={listeners}");
        let args: Vec<&str> = ["--set", set.as_str()]
            .into_iter()
            .chain(extra_args.iter().copied())
            .collect();
        Self::launch(None, &args, &[])
    }

    /// The bound address of the listener named `name` (upper case, as the
    /// broker prints it).
    pub fn listener(&self, name: &str) -> Option<&str> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| addr.as_str())
    }

    fn launch(
        listen: Option<&str>,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("weir-e2e-")
            .tempdir()
            .context("cannot create the broker's temporary folder")?;
        let stderr_path = dir.path().join("broker.stderr");
        let listeners_given = given_listeners(extra_args);
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let admin_given = admin_listen_in(&extra_args).map(str::to_owned);
        let mut broker = Self {
            child: None,
            dir,
            admin_in_extra_args: admin_given.is_some(),
            admin_addr: match admin_given.as_deref() {
                Some("none") => None,
                Some(given) => Some(given.to_owned()),
                None => Some("127.0.0.1:0".to_owned()),
            },
            extra_args,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            addr: listen.unwrap_or_default().to_string(),
            listen_flag: listen.is_some(),
            listeners: Vec::new(),
            listeners_given,
            stderr_path,
            lives: 0,
        };
        broker.spawn(listen.unwrap_or_default())?;
        Ok(broker)
    }

    /// Set the environment of the lives to come (after a `restart`).
    pub fn set_envs(&mut self, envs: &[(&str, &str)]) {
        self.envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.clone()
    }

    /// The admin listener's `host:port` as the broker printed it
    /// (`admin listening on`); `None` with `--admin-listen none`.
    pub fn admin_addr(&self) -> Option<&str> {
        self.admin_addr.as_deref()
    }

    /// The broker's data folder, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kill the broker with SIGKILL, as a crash would, and reap it.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("cannot SIGKILL the broker")?;
            child.wait().context("cannot reap the broker")?;
        }
        Ok(())
    }

    /// Stop the broker with SIGTERM and wait for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the broker is not running");
        };
        // The workspace forbids unsafe code, so the signal goes through kill(1).
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("cannot run kill(1)")?;
        if !sent.success() {
            bail!("kill -TERM {} failed: {sent}", child.id());
        }
        let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("cannot wait for the broker")? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the broker did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the broker again on the same data folder and the same address.
    /// Retries briefly while the previous life's port is not yet free.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.sigkill()?;
        }
        let listen = self.addr.clone();
        let deadline = Instant::now() + BROKER_REBIND_TIMEOUT;
        loop {
            match self.spawn(&listen) {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline && self.stderr_says_address_in_use() => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The broker process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last part of the broker's stderr (all lives).
    pub fn stderr_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.stderr_path) else {
            return "(no broker stderr)".into();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(STDERR_TAIL_BYTES_MAX);
        let _ = file.seek(SeekFrom::Start(start));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        format!(
            "----- broker stderr ({} bytes from {start}) -----\n{text}",
            len - start
        )
    }

    /// Everything the broker wrote on stderr, all lives.
    pub fn stderr(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.stderr_path).context("cannot read the broker's stderr")
    }

    fn stderr_says_address_in_use(&self) -> bool {
        std::fs::read_to_string(&self.stderr_path)
            .map(|s| s.lines().last().is_some_and(|l| l.contains("in use")))
            .unwrap_or(false)
    }

    fn spawn(&mut self, listen: &str) -> anyhow::Result<()> {
        self.lives += 1;
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .context("cannot open the broker's stderr file")?;
        let data_dir = self.data_dir();
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command.arg("serve");
        if self.listen_flag {
            command.arg("--listen").arg(listen);
        }
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.extra_args);
        if !self.admin_in_extra_args {
            // Never the default port: tests start many brokers at once.
            let admin = self.admin_addr.as_deref().unwrap_or("127.0.0.1:0");
            command.args(["--admin-listen", admin]);
        }
        let mut child = command
            .env("NO_COLOR", "1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot start weir serve")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::sync_channel::<Listening>(2);
        // The reader keeps draining stdout after the listening lines so the
        // broker never blocks on a full pipe.
        std::thread::spawn(move || {
            let (mut kafka_sent, mut admin_sent) = (false, false);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(named) = line.strip_prefix("listener ")
                    && let Some((name, addr)) = named.split_once(" listening on ")
                {
                    let _ = tx.send(Listening::Named(name.to_owned(), addr.trim().to_owned()));
                } else if !kafka_sent && let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(Listening::Kafka(addr.trim().to_string()));
                    kafka_sent = true;
                } else if !admin_sent && let Some(addr) = line.strip_prefix("admin listening on ") {
                    let _ = tx.send(Listening::Admin(addr.trim().to_string()));
                    admin_sent = true;
                }
            }
        });
        // The admin line follows the Kafka one; it is awaited only when the
        // admin listener is on.
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        let (mut kafka, mut admin) = (None, None);
        self.listeners.clear();
        while kafka.is_none()
            || self.listeners.len() < self.listeners_given
            || (self.admin_addr.is_some() && admin.is_none())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Listening::Named(name, addr)) => self.listeners.push((name, addr)),
                Ok(Listening::Kafka(addr)) => kafka = Some(addr),
                Ok(Listening::Admin(addr)) => admin = Some(addr),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let missing = if kafka.is_none() {
                        "`listening on`"
                    } else {
                        "`admin listening on`"
                    };
                    bail!(
                        "weir serve (life {}) printed no {missing} line within {BROKER_START_TIMEOUT:?}\n{}",
                        self.lives,
                        self.stderr_tail()
                    )
                }
            }
        }
        self.addr = kafka.context("no Kafka address")?;
        if self.admin_addr.is_some() {
            self.admin_addr = admin;
        }
        self.child = Some(child);
        Ok(())
    }
}

/// A listening line of `weir serve`'s stdout.
enum Listening {
    /// `listener NAME listening on HOST:PORT`: one Kafka listener, printed
    /// after the `listening on` line.
    Named(String, String),
    /// `listening on HOST:PORT`: the first Kafka listener.
    Kafka(String),
    /// `admin listening on HOST:PORT`: the admin API.
    Admin(String),
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // libtest captures this and shows it only for a failing test, whether
        // it panicked or returned an error.
        eprintln!("{}", self.stderr_tail());
    }
}

/// Reserve a free local port for a broker started later: one that binds
/// now, below the kernel's ephemeral range, and not handed out before in
/// this test process. A port from port 0 would be in the ephemeral range,
/// where any client connection opened meanwhile (the tests open many) may
/// take it as its local port before the broker binds it.
pub fn reserve_port() -> anyhow::Result<u16> {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut rng = rand::rng();
    for _ in 0..10_000 {
        let port = rng.random_range(low..high);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port below {high}")
}

/// A producer config with acks=all and short timeouts suited to a local broker.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    config
}

/// A consumer config for `assign`-only use: no commits, no subscription.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-e2e-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    config
}

/// An admin client.
pub fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("cannot create an admin client")
}

/// Admin options with a bounded wait.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(CLIENT_TIMEOUT))
        .operation_timeout(Some(CLIENT_TIMEOUT))
}

/// Create `topic` with `partitions` partitions and `configs`, failing on any error.
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin = admin(bootstrap)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results = admin.create_topics([&new_topic], &admin_options()).await?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("cannot create topic {name}: {code:?}");
        }
    }
    Ok(())
}

/// Create a topic from synchronous code (a throwaway runtime drives the admin future).
pub fn create_topic_blocking(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build a runtime")?;
    runtime.block_on(create_topic(bootstrap, topic, partitions, configs))
}

/// One delivery report: the record's id (the opaque passed at send time)
/// and where it landed, or why it failed.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The id the test gave the record.
    pub id: u64,
    /// Partition and offset on success, the error text on failure.
    pub result: Result<(i32, i64), String>,
}

/// A producer context that records every delivery report.
#[derive(Default)]
pub struct Tracker {
    deliveries: std::sync::Mutex<Vec<Delivery>>,
}

impl Tracker {
    /// Take the reports received so far.
    pub fn drain(&self) -> Vec<Delivery> {
        match self.deliveries.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl ClientContext for Tracker {}

impl ProducerContext for Tracker {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        let result = match result {
            Ok(msg) => Ok((msg.partition(), msg.offset())),
            Err((err, _)) => Err(err.to_string()),
        };
        let delivery = Delivery { id: *id, result };
        match self.deliveries.lock() {
            Ok(mut d) => d.push(delivery),
            Err(poisoned) => poisoned.into_inner().push(delivery),
        }
    }
}

/// A producer whose delivery reports are collected by a [`Tracker`].
pub type TrackedProducer = BaseProducer<Tracker>;

/// Build a [`TrackedProducer`].
pub fn tracked_producer(config: &ClientConfig) -> anyhow::Result<TrackedProducer> {
    config
        .create_with_context(Tracker::default())
        .context("cannot create a producer")
}

/// Send one record, polling while librdkafka's queue is full. Bounded by `CLIENT_TIMEOUT`.
pub fn send_tracked(
    producer: &TrackedProducer,
    mut record: BaseRecord<'_, [u8], [u8], Box<u64>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                if Instant::now() > deadline {
                    bail!("the producer queue stayed full for {CLIENT_TIMEOUT:?}");
                }
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((err, _)) => return Err(err.into()),
        }
    }
}

/// Flush `producer` and fail unless every sent record was delivered. Returns the reports.
pub fn flush_all_delivered(
    producer: &TrackedProducer,
    expected: usize,
) -> anyhow::Result<Vec<Delivery>> {
    producer
        .flush(Duration::from_secs(120))
        .context("flush did not complete")?;
    let deliveries = producer.context().drain();
    if let Some(failed) = deliveries.iter().find(|d| d.result.is_err()) {
        bail!(
            "record {} was not delivered: {:?} ({} of {} failed)",
            failed.id,
            failed.result,
            deliveries.iter().filter(|d| d.result.is_err()).count(),
            deliveries.len()
        );
    }
    if deliveries.len() != expected {
        bail!(
            "{} delivery reports for {expected} records",
            deliveries.len()
        );
    }
    Ok(deliveries)
}

/// A record as a user sees it, comparable byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Option<Vec<u8>>,
    /// Every header in order, duplicates kept.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Plain {
    /// The headers to produce this record with, in order, duplicates kept.
    pub fn owned_headers(&self) -> rdkafka::message::OwnedHeaders {
        self.headers
            .iter()
            .fold(rdkafka::message::OwnedHeaders::new(), |h, (key, value)| {
                h.insert(rdkafka::message::Header {
                    key,
                    value: value.as_ref(),
                })
            })
    }

    /// Copy a consumed message.
    pub fn of(message: &OwnedMessage) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Read every record of `partitions` from their low watermark up to the high
/// watermark measured at the start. Returns the messages of each partition in offset order.
pub fn read_to_high_watermark(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, Vec<OwnedMessage>>> {
    let consumer: BaseConsumer = consumer_config(bootstrap).create()?;
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, CLIENT_TIMEOUT)
            .with_context(|| format!("cannot list offsets of {topic}/{p}"))?;
        ends.insert(p, high);
        assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
    }
    read_until(&consumer, &assignment, &ends, timeout)
}

/// Assign `assignment` on `consumer` and read until each partition's next
/// offset reaches `ends[partition]`.
pub fn read_until(
    consumer: &BaseConsumer,
    assignment: &TopicPartitionList,
    ends: &HashMap<i32, i64>,
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, Vec<OwnedMessage>>> {
    consumer.assign(assignment)?;
    let mut out: HashMap<i32, Vec<OwnedMessage>> = ends.keys().map(|&p| (p, Vec::new())).collect();
    let mut next: HashMap<i32, i64> = HashMap::new();
    for element in assignment.elements() {
        if let Offset::Offset(o) = element.offset() {
            next.insert(element.partition(), o);
        }
    }
    let done = |next: &HashMap<i32, i64>| {
        ends.iter()
            .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
    };
    let deadline = Instant::now() + timeout;
    while !done(&next) {
        if Instant::now() > deadline {
            bail!("reading timed out: next offsets {next:?}, wanted {ends:?}");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(err)) => bail!("consumer error: {err}"),
            Some(Ok(message)) => {
                let p = message.partition();
                let offset = message.offset();
                let expected = next.get(&p).copied().unwrap_or(0);
                if offset < expected {
                    bail!("partition {p}: offset {offset} delivered again (expected {expected})");
                }
                next.insert(p, offset + 1);
                out.entry(p).or_default().push(message.detach());
            }
        }
    }
    Ok(out)
}

/// Prove the broker still serves normal clients: produce one record and read it back.
pub fn assert_serves_clients(bootstrap: &str) -> anyhow::Result<()> {
    let topic = "weir-e2e-health";
    let marker = format!(
        "alive-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let producer = tracked_producer(&producer_config(bootstrap))?;
    send_tracked(
        &producer,
        BaseRecord::with_opaque_to(topic, Box::new(0))
            .partition(0)
            .payload(marker.as_bytes()),
    )?;
    let deliveries = flush_all_delivered(&producer, 1)?;
    let Some(Ok((partition, offset))) = deliveries.first().map(|d| d.result.clone()) else {
        bail!("no delivery report");
    };
    let consumer: BaseConsumer = consumer_config(bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    let ends = HashMap::from([(partition, offset + 1)]);
    let got = read_until(&consumer, &assignment, &ends, CLIENT_TIMEOUT)?;
    let value = got
        .get(&partition)
        .and_then(|m| m.first())
        .and_then(|m| m.payload().map(<[u8]>::to_vec));
    if value.as_deref() != Some(marker.as_bytes()) {
        bail!("read back {value:?} instead of {marker}");
    }
    Ok(())
}

/// Run `check` until it returns true or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The binary of `examples/<name>.rs` (a reference application the test
/// runs as real processes), built once per test binary with the profile,
/// packages and features `scripts/test.sh` builds with, so there it finds
/// the example built and compiles nothing; a run of one test file alone
/// builds a current one.
pub fn example(name: &'static str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.contains(&name) {
        let mut build = Command::new(env!("CARGO"));
        build.args([
            "build",
            "--quiet",
            "--workspace",
            "--profile",
            "test",
            "--example",
            name,
        ]);
        if cfg!(feature = "failpoints") {
            build.args(["--features", "weir/failpoints"]);
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("cannot run cargo")?;
        anyhow::ensure!(status.success(), "cargo build --example {name}: {status}");
        built.push(name);
    }
    let weir = PathBuf::from(env!("CARGO_BIN_EXE_weir"));
    Ok(weir
        .parent()
        .context("the weir binary has no folder")?
        .join("examples")
        .join(name))
}
