//! Check-back (RocketMQ's transaction check over Kafka transactions) with
//! real processes: a `weir serve`, the reference application of
//! `examples/checkback_orders.rs` as the check-back service over SQLite and
//! as a transactional producer (librdkafka) that is killed mid-transaction,
//! and read_committed consumers (librdkafka).
//!
//! A producer killed after its local work committed gets its transaction
//! committed; one whose local work failed gets it aborted; an `unknown`
//! answer is asked again, and after `weir.txn.checkback.max.checks` the
//! default action (abort) decides; a broker restarted with a transaction
//! open asks at once; and a service that hangs delays only the
//! transactions it is asked about.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::Broker;
use common::cli::weir_ok;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
/// The topic the application's orders go to.
const TOPIC: &str = "orders";

/// The reference application (`examples/checkback_orders.rs`).
fn app() -> anyhow::Result<PathBuf> {
    common::example("checkback_orders")
}

/// The check-back service (`checkback_orders serve`): its URL, and every
/// line it printed about the checks it answered.
struct Service {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
    db: PathBuf,
}

impl Service {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let db = dir.join("orders.db");
        let mut child = Command::new(app()?)
            .args(["serve", "--db"])
            .arg(&db)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start checkback_orders serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {first:?}"))?
            .to_string();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Ok(Self {
            child,
            url,
            lines,
            db,
        })
    }

    /// The checks answered for `transactional_id`, as
    /// `(check number, reason, answer)`.
    fn checks_of(&self, transactional_id: &str) -> Vec<(u32, String, String)> {
        let prefix = format!("check {transactional_id} #");
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|line| {
                let rest = line.strip_prefix(&prefix)?;
                let (number, rest) = rest.split_once(' ')?;
                let reason = rest.split_whitespace().next()?.strip_prefix("reason=")?;
                let answer = rest.rsplit_once("-> ")?.1;
                Some((number.parse().ok()?, reason.to_string(), answer.to_string()))
            })
            .collect()
    }

    /// Complete (or fail) an order's local work now.
    fn record(&self, order: &str, status: &str) -> anyhow::Result<()> {
        let output = Command::new(app()?)
            .args(["record", "--db"])
            .arg(&self.db)
            .args(["--order", order, "--status", status])
            .output()?;
        ensure!(
            output.status.success(),
            "record failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the application's `order` command for one order, crashing at
/// `crash` (`after-send` or `after-local-work`); it must die by abort.
fn order_crashing(
    bootstrap: &str,
    db: &Path,
    transactional_id: &str,
    order: &str,
    local_work: &str,
    crash: &str,
    timeout_ms: u32,
) -> anyhow::Result<()> {
    let output = Command::new(app()?)
        .args([
            "order",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            TOPIC,
            "--transactional-id",
            transactional_id,
            "--order",
            order,
            "--local-work",
            local_work,
            "--crash",
            crash,
            "--transaction-timeout-ms",
            &timeout_ms.to_string(),
            "--db",
        ])
        .arg(db)
        .output()
        .context("cannot run checkback_orders order")?;
    ensure!(
        !output.status.success(),
        "the producer was to crash at {crash} but exited {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn start_broker(settings: &[(&str, &str)]) -> anyhow::Result<Broker> {
    let mut args = vec![
        "--set".to_string(),
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200".to_string(),
        "--set".to_string(),
        "transaction.state.log.num.partitions=4".to_string(),
    ];
    for (key, value) in settings {
        args.push("--set".into());
        args.push(format!("{key}={value}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = Broker::start(&args)?;
    common::create_topic_blocking(&broker.bootstrap(), TOPIC, 1, &[])?;
    Ok(broker)
}

/// The keys a consumer with `isolation` reads from `topic`, up to the end
/// that isolation allows (the last stable offset for read_committed).
fn keys_read(bootstrap: &str, topic: &str, isolation: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("isolation.level", isolation)
        .create()?;
    let (low, end) = consumer.fetch_watermarks(topic, 0, TIMEOUT)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&assignment)?;
    let mut keys = Vec::new();
    common::wait_until(TIMEOUT, "reading to the end", || {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            if let Some(key) = message.key() {
                keys.push(String::from_utf8_lossy(key).into_owned());
            }
        }
        Ok(
            match consumer.position()?.elements().first().map(|e| e.offset()) {
                Some(Offset::Offset(at)) => at >= end,
                _ => end == low,
            },
        )
    })?;
    Ok(keys)
}

/// Wait until no transaction holds `topic` back (its last stable offset is
/// its high watermark), then answer what read_committed reads.
fn committed_once_settled(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    common::wait_until(TIMEOUT, "the last stable offset to reach the end", || {
        let committed: BaseConsumer = common::consumer_config(bootstrap)
            .set("isolation.level", "read_committed")
            .create()?;
        // librdkafka's default isolation is read_committed.
        let uncommitted: BaseConsumer = common::consumer_config(bootstrap)
            .set("isolation.level", "read_uncommitted")
            .create()?;
        Ok(committed.fetch_watermarks(topic, 0, TIMEOUT)?.1
            == uncommitted.fetch_watermarks(topic, 0, TIMEOUT)?.1)
    })?;
    keys_read(bootstrap, topic, "read_committed")
}

/// The state `weir txn describe` shows for `transactional_id`.
fn txn_state(broker: &Broker, transactional_id: &str) -> anyhow::Result<String> {
    let text = weir_ok(
        broker,
        &["txn", "describe", transactional_id, "--json"],
        b"",
    )?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json["state"]
        .as_str()
        .map(str::to_owned)
        .context("no state in weir txn describe --json")
}

#[test]
fn a_killed_producer_whose_local_work_committed_is_committed_and_one_whose_work_failed_is_aborted()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let service = Service::start(dir.path())?;
    let broker = start_broker(&[("weir.txn.checkback.url", &service.url)])?;
    let bootstrap = broker.bootstrap();

    order_crashing(
        &bootstrap,
        &service.db,
        "shop-1",
        "order-1",
        "ok",
        "after-local-work",
        2_000,
    )?;
    order_crashing(
        &bootstrap,
        &service.db,
        "shop-2",
        "order-2",
        "fail",
        "after-local-work",
        2_000,
    )?;

    let committed = committed_once_settled(&bootstrap, TOPIC)?;
    assert_eq!(
        committed,
        vec!["order-1".to_string()],
        "exactly the order whose work committed"
    );
    let mut all = keys_read(&bootstrap, TOPIC, "read_uncommitted")?;
    all.sort();
    assert_eq!(all, ["order-1", "order-2"], "both were written");
    assert_eq!(
        service.checks_of("shop-1"),
        [(1, "timeout".to_string(), "commit".to_string())]
    );
    assert_eq!(
        service.checks_of("shop-2"),
        [(1, "timeout".to_string(), "abort".to_string())]
    );
    assert_eq!(txn_state(&broker, "shop-1")?, "CompleteCommit");
    assert_eq!(txn_state(&broker, "shop-2")?, "CompleteAbort");
    Ok(())
}

#[test]
fn an_unknown_answer_is_asked_again_and_after_the_last_check_the_default_aborts()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let service = Service::start(dir.path())?;
    let broker = start_broker(&[
        ("weir.txn.checkback.url", &service.url),
        ("weir.txn.checkback.max.checks", "3"),
        ("weir.txn.checkback.backoff.ms", "1000"),
    ])?;
    let bootstrap = broker.bootstrap();

    // Both die before their local work: the service knows neither order.
    order_crashing(
        &bootstrap,
        &service.db,
        "shop-3",
        "order-3",
        "ok",
        "after-send",
        2_000,
    )?;
    order_crashing(
        &bootstrap,
        &service.db,
        "shop-4",
        "order-4",
        "ok",
        "after-send",
        2_000,
    )?;
    common::wait_until(TIMEOUT, "a first check of shop-3", || {
        Ok(!service.checks_of("shop-3").is_empty())
    })?;
    // The work of order-3 completes late (a slow database, say): a later
    // check finds it.
    service.record("order-3", "completed")?;

    let committed = committed_once_settled(&bootstrap, TOPIC)?;
    assert_eq!(committed, vec!["order-3".to_string()]);
    let shop3 = service.checks_of("shop-3");
    assert_eq!(shop3.first().map(|c| c.2.as_str()), Some("unknown"));
    assert_eq!(shop3.last().map(|c| c.2.as_str()), Some("commit"));
    assert!(shop3.len() >= 2, "asked again: {shop3:?}");
    // order-4 was never done: three unknowns, then the default (abort).
    let shop4 = service.checks_of("shop-4");
    assert_eq!(
        shop4
            .iter()
            .map(|c| (c.0, c.2.as_str()))
            .collect::<Vec<_>>(),
        [(1, "unknown"), (2, "unknown"), (3, "unknown")]
    );
    assert_eq!(txn_state(&broker, "shop-4")?, "CompleteAbort");
    Ok(())
}

#[test]
fn a_transaction_open_at_a_restart_is_checked_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let service = Service::start(dir.path())?;
    let mut broker = start_broker(&[("weir.txn.checkback.url", &service.url)])?;
    let bootstrap = broker.bootstrap();

    // A timeout far beyond the test: only the check at the restart can end it.
    order_crashing(
        &bootstrap,
        &service.db,
        "shop-5",
        "order-5",
        "ok",
        "after-local-work",
        600_000,
    )?;
    assert_eq!(txn_state(&broker, "shop-5")?, "Ongoing");
    broker.sigkill()?;
    broker.restart()?;

    let committed = committed_once_settled(&broker.bootstrap(), TOPIC)?;
    assert_eq!(committed, vec!["order-5".to_string()]);
    assert_eq!(
        service.checks_of("shop-5"),
        [(1, "recovered".to_string(), "commit".to_string())]
    );
    Ok(())
}

#[test]
fn a_hanging_check_back_service_delays_only_the_transactions_it_is_asked_about()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let service = Service::start(dir.path())?;
    // A service that accepts connections and never answers.
    let hanging = TcpListener::bind("127.0.0.1:0")?;
    let hanging_url = format!("http://{}/check", hanging.local_addr()?);
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    std::thread::spawn(move || {
        for stream in hanging.incoming().map_while(Result::ok) {
            holder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(stream);
        }
    });
    let prefixes = format!("shop-={}", service.url);
    let broker = start_broker(&[
        ("weir.txn.checkback.url", &hanging_url),
        ("weir.txn.checkback.prefixes", &prefixes),
        ("weir.txn.checkback.timeout.ms", "2000"),
    ])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "other", 1, &[])?;

    order_crashing(
        &bootstrap,
        &service.db,
        "legacy-1",
        "order-6",
        "ok",
        "after-send",
        1_000,
    )?;
    common::wait_until(TIMEOUT, "a failed check of legacy-1", || {
        let log = broker.stderr_tail();
        Ok(log.contains("check-back failed") && log.contains("legacy-1"))
    })?;

    // While legacy-1's checks hang: another id's check is answered, and a
    // producer that commits on its own is not held up.
    order_crashing(
        &bootstrap,
        &service.db,
        "shop-7",
        "order-7",
        "ok",
        "after-local-work",
        1_000,
    )?;
    let producer: ThreadedProducer<DefaultProducerContext> = common::producer_config(&bootstrap)
        .set("transactional.id", "plain-1")
        .create()?;
    producer.init_transactions(TIMEOUT)?;
    for i in 0..5 {
        producer.begin_transaction()?;
        let key = format!("plain-{i}");
        producer
            .send(BaseRecord::to("other").partition(0).key(&key).payload(&key))
            .map_err(|(e, _)| e)?;
        producer.commit_transaction(TIMEOUT)?;
    }
    assert_eq!(
        keys_read(&bootstrap, "other", "read_committed")?,
        (0..5).map(|i| format!("plain-{i}")).collect::<Vec<_>>()
    );
    common::wait_until(TIMEOUT, "shop-7 to be committed", || {
        Ok(txn_state(&broker, "shop-7")? == "CompleteCommit")
    })?;
    // 15 checks of 2 s each are far from done: legacy-1 is still open.
    let state = txn_state(&broker, "legacy-1")?;
    if state != "Ongoing" {
        bail!("legacy-1 was decided ({state}) though its service never answered");
    }
    assert_eq!(
        service.checks_of("shop-7"),
        [(1, "timeout".to_string(), "commit".to_string())]
    );
    assert!(
        service.checks_of("legacy-1").is_empty(),
        "legacy-1 is asked elsewhere"
    );
    Ok(())
}
