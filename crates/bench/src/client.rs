//! librdkafka clients for the bench: their configuration, how their logs
//! reach the user, and the start of every run, which checks that the broker
//! answers and that the topic exists (creating it through the Admin API).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use super::CommonArgs;

/// How long a run waits for the first answer from the brokers.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long one metadata request may take while connecting; several fit in
/// the connect timeout so that a refused connection is noticed early.
const METADATA_ATTEMPT_MS: u64 = 500;
/// How long a newly created topic may take to have a leader everywhere.
const TOPIC_READY_TIMEOUT_MS: u64 = 10_000;
/// librdkafka log lines shown per client; a broken broker would otherwise
/// flood the terminal with reconnect messages.
const LOG_LINES_MAX: u32 = 20;

/// The librdkafka configuration shared by every client of a run: the
/// brokers, then `mode`'s own properties, then the user's `-X` ones, which
/// win.
pub(super) fn config(common: &CommonArgs, mode: &[(&str, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &common.brokers);
    config.set("client.id", "weir-bench");
    for (key, value) in mode {
        config.set(*key, value);
    }
    for (key, value) in &common.property {
        config.set(key, value);
    }
    // The rdkafka crate derives the level from the `log` crate, which the
    // binary does not set up; `Diagnostics` does the filtering instead.
    config.set_log_level(RDKafkaLogLevel::Debug);
    config
}

/// Shows a client's librdkafka warnings and errors on stderr, a bounded
/// number of them, and keeps the latest error for the final report. With
/// `-X debug=...` every line is shown: the user asked for them.
#[derive(Debug, Default)]
pub(super) struct Diagnostics {
    verbose: bool,
    log_lines: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Diagnostics {
    pub(super) fn new(common: &CommonArgs) -> Diagnostics {
        Diagnostics {
            verbose: common.property.iter().any(|(key, _)| key == "debug"),
            ..Diagnostics::default()
        }
    }

    pub(super) fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if self.verbose {
            eprintln!("librdkafka {facility}: {message}");
            return;
        }
        // Lower levels are librdkafka's running commentary, not problems.
        if (level as i32) > (RDKafkaLogLevel::Warning as i32) {
            return;
        }
        let shown = self.log_lines.fetch_add(1, Ordering::Relaxed);
        if shown < LOG_LINES_MAX {
            eprintln!("librdkafka {facility}: {message}");
        } else if shown == LOG_LINES_MAX {
            eprintln!("librdkafka: further messages suppressed");
        }
    }

    pub(super) fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }
}

/// The context of the client that checks the brokers before a run. It stays
/// silent and remembers why connecting failed, for the error message.
#[derive(Debug, Default)]
struct ProbeContext {
    /// The first transport error, which names the address and the cause.
    cause: Mutex<Option<String>>,
    all_brokers_down: AtomicBool,
}

impl ClientContext for ProbeContext {
    fn log(&self, _level: RDKafkaLogLevel, _facility: &str, _message: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_brokers_down.store(true, Ordering::SeqCst);
        } else if let Ok(mut cause) = self.cause.lock() {
            cause.get_or_insert_with(|| format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _result: &DeliveryResult<'_>, _opaque: ()) {}
}

/// What a run needs to know about its topic.
#[derive(Debug, Clone, Copy)]
pub(super) struct TopicInfo {
    pub(super) partitions: i32,
}

/// Whether a missing topic is created or is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    Create,
    Fail,
}

/// Connects to the brokers within [`CONNECT_TIMEOUT_MS`] and makes sure the
/// topic exists with a leader for every partition.
pub(super) fn prepare_topic(common: &CommonArgs, missing: Missing) -> anyhow::Result<TopicInfo> {
    let probe = connect(common)?;
    if let Some(info) = topic_info(&probe, &common.topic)? {
        if missing == Missing::Create && info.partitions != common.partitions && !common.json {
            eprintln!(
                "note: topic {} exists with {} partitions; using all of them",
                common.topic, info.partitions
            );
        }
        return Ok(info);
    }
    if missing == Missing::Fail {
        bail!(
            "topic {} does not exist at {} (run `weir bench produce` first)",
            common.topic,
            common.brokers
        );
    }
    create_topic(common, &common.topic, common.partitions, &[])?;
    wait_for_leaders(&probe, &common.topic)
}

/// Creates topic `name` with `partitions` and `configs` (a view, say) unless
/// it exists, and waits until every partition has a leader.
pub(super) fn prepare_topic_with(
    common: &CommonArgs,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<TopicInfo> {
    let probe = connect(common)?;
    create_topic(common, name, partitions, configs)?;
    wait_for_leaders(&probe, name)
}

fn wait_for_leaders(probe: &BaseProducer<ProbeContext>, topic: &str) -> anyhow::Result<TopicInfo> {
    let deadline = Instant::now() + Duration::from_millis(TOPIC_READY_TIMEOUT_MS);
    loop {
        if let Some(info) = topic_info(probe, topic)? {
            return Ok(info);
        }
        if Instant::now() >= deadline {
            bail!(
                "topic {topic} was created but has no leader for every partition after \
                 {TOPIC_READY_TIMEOUT_MS} ms"
            );
        }
        // librdkafka's metadata call has no "wait for change"; this pause
        // paces the retries while the broker elects leaders.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(common: &CommonArgs) -> anyhow::Result<BaseProducer<ProbeContext>> {
    let cannot_reach = || format!("cannot reach broker at {}", common.brokers);
    let probe: BaseProducer<ProbeContext> = config(common, &[])
        .create_with_context(ProbeContext::default())
        .with_context(cannot_reach)?;
    let deadline = Instant::now() + Duration::from_millis(CONNECT_TIMEOUT_MS);
    loop {
        match probe
            .client()
            .fetch_metadata(None, Duration::from_millis(METADATA_ATTEMPT_MS))
        {
            Ok(_) => return Ok(probe),
            Err(err) => {
                // Error events wait on the main queue until someone polls it;
                // a poll with a timeout serves all of them, not just one.
                probe.poll(Duration::from_millis(10));
                let context = probe.context();
                if context.all_brokers_down.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    let cause = context
                        .cause
                        .lock()
                        .ok()
                        .and_then(|cause| cause.clone())
                        .unwrap_or_else(|| err.to_string());
                    return Err(weir_client::Error::Unreachable {
                        brokers: common.brokers.clone(),
                        cause,
                    }
                    .into());
                }
            }
        }
    }
}

/// The topic's partition count, or `None` when it does not exist yet or some
/// partition has no leader.
fn topic_info(
    probe: &BaseProducer<ProbeContext>,
    topic: &str,
) -> anyhow::Result<Option<TopicInfo>> {
    let metadata = probe
        .client()
        .fetch_metadata(None, Duration::from_millis(CONNECT_TIMEOUT_MS))
        .context("metadata request failed")?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = found.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition
            || code == RDKafkaErrorCode::LeaderNotAvailable
        {
            return Ok(None);
        }
        bail!("metadata for topic {topic}: {code}");
    }
    let partitions = found.partitions();
    if partitions.is_empty() || partitions.iter().any(|p| p.leader() < 0) {
        return Ok(None);
    }
    let partitions = i32::try_from(partitions.len()).context("partition count")?;
    Ok(Some(TopicInfo { partitions }))
}

fn create_topic(
    common: &CommonArgs,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(common, &[])
        .create()
        .context("cannot create the admin client")?;
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(common.replication_factor),
    );
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options =
        AdminOptions::new().operation_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    let results = runtime
        .block_on(admin.create_topics([&topic], &options))
        .with_context(|| format!("cannot create topic {name}"))?;
    for result in results {
        match result {
            Ok(_) => {}
            // Another run may have created it in the meantime.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}
