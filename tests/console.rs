//! The web console (docs/console.md) in a real browser: Debian's headless
//! Chromium, driven through chromedriver (WebDriver) with fantoccini,
//! against a real broker process whose admin listener serves the console.
//! Records are produced and consumed with librdkafka; share-group members
//! (for dead letters) speak the protocol through `common::share`.
//!
//! Each test starts its own chromedriver on a free port and its own
//! browser profile, waits for what it expects by polling the page with a
//! deadline, and saves a screenshot to `docs/console/NAME.png`, which
//! docs/console.md shows. `scripts/test.sh` installs `chromium` and
//! `chromium-driver`.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::Broker;
use common::share::{Member, REJECT};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tempfile::TempDir;

/// The longest a test waits for the page to show something.
const WAIT: Duration = Duration::from_secs(60);
/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(100);
/// The longest chromedriver may take to answer once started.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Debian's packages' binaries (`chromium`, `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session on the console of one broker. The driver
/// (and with it the browser) runs in its own process group, killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    base: String,
    _profile: TempDir,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless Chromium that
    /// can work as root in CI with no network, on `broker`'s console.
    async fn open(broker: &Broker) -> anyhow::Result<Self> {
        let admin = broker
            .admin_addr()
            .context("the broker has no admin listener")?;
        let port = common::reserve_port()?;
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: the browser it starts goes with it on drop.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().with_context(|| {
            format!("cannot start {CHROMEDRIVER} (apt-get install chromium-driver)")
        })?;
        let mut guard = DriverGuard(Some(driver));
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {DRIVER_START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("weir-console-chromium-")
            .tempdir()?;
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--metrics-recording-only".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("cannot open a Chromium session through chromedriver")?;
        let driver = guard.0.take().context("the driver is gone")?;
        Ok(Self {
            client,
            driver,
            base: format!("http://{admin}"),
            _profile: profile,
        })
    }

    /// Load `path` of the console.
    async fn goto(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("cannot load {path}"))
    }

    /// The element `css` names, once it is on the page.
    async fn element(&self, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(found) = self.client.find(Locator::Css(css)).await {
                return Ok(found);
            }
            if Instant::now() > deadline {
                bail!(
                    "no {css} on {} within {WAIT:?}",
                    self.client.current_url().await?
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of `css`'s element once `ok` holds for it.
    async fn wait_text(
        &self,
        css: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Ok(found) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = found.text().await
            {
                if ok(&text) {
                    return Ok(text);
                }
                last = Some(text);
            }
            if Instant::now() > deadline {
                bail!("{css} never showed {what} within {WAIT:?}; last it said {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The texts of every element `css` names, once there are `n`.
    async fn wait_texts(&self, css: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.client.find_all(Locator::Css(css)).await?;
            if found.len() == n {
                let mut texts = Vec::new();
                for e in found {
                    texts.push(e.text().await?);
                }
                return Ok(texts);
            }
            if Instant::now() > deadline {
                bail!("{} of {css} instead of {n} within {WAIT:?}", found.len());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The texts of the cells of the row `css` names.
    async fn cells(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let row = self.element(css).await?;
        let mut texts = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await? {
            texts.push(cell.text().await?);
        }
        Ok(texts)
    }

    /// The attribute `name` of `css`'s element once `ok` holds for it.
    async fn wait_attr(
        &self,
        css: &str,
        name: &str,
        ok: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Ok(found) = self.client.find(Locator::Css(css)).await
                && let Ok(Some(value)) = found.attr(name).await
            {
                if ok(&value) {
                    return Ok(value);
                }
                last = Some(value);
            }
            if Instant::now() > deadline {
                bail!("{css}'s {name} never held within {WAIT:?}; last {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Type `text` into the field `css` names, replacing what it held.
    async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.element(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.element(css).await?.click().await?;
        Ok(())
    }

    /// Save the page as `docs/console/NAME.png`.
    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }

    /// End the session (the browser quits), then the driver.
    async fn close(mut self) -> anyhow::Result<()> {
        let closed = self.client.clone().close().await;
        kill_group(&mut self.driver);
        closed.context("cannot end the WebDriver session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills a driver that was started but not yet handed to a [`Browser`].
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill_group(child);
        }
    }
}

/// SIGKILL the process group `child` leads (the driver and its browser),
/// and reap the driver. The workspace forbids unsafe code: kill(1) sends it.
fn kill_group(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A record to produce: key, value and headers.
type Record = (String, String, Vec<(&'static str, &'static str)>);

/// Produce `records` (key, value, headers) to partition `partition` of
/// `topic` and wait until each is acknowledged.
fn produce(bootstrap: &str, topic: &str, partition: i32, records: &[Record]) -> anyhow::Result<()> {
    let producer: BaseProducer = common::producer_config(bootstrap).create()?;
    for (key, value, headers) in records {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(key.as_str())
                    .payload(value.as_str())
                    .headers(owned),
            )
            .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
    }
    producer
        .flush(common::CLIENT_TIMEOUT)
        .context("the records were not acknowledged")?;
    Ok(())
}

/// `n` records `key-i` / `value-i`, no headers.
fn numbered(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| (format!("key-{i}"), format!("value-{i}"), Vec::new()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_in_the_console_is_listed_and_linked_from_the_home_page()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let browser = Browser::open(&broker).await?;
    browser.goto("/console/topics").await?;
    browser
        .fill("#create-topic input[name=name]", "orders")
        .await?;
    browser
        .fill("#create-topic input[name=partitions]", "3")
        .await?;
    browser.click("#create-topic button[type=submit]").await?;
    browser
        .wait_text("#create-topic .form-answer", "the topic created", |t| {
            t.contains("Created topic orders")
        })
        .await?;
    // The list below the form is reloaded after the write.
    browser.element("#topics tr[data-topic=orders]").await?;
    browser.screenshot("create-topic").await?;
    // The broker made it with the partitions the form asked for.
    let consumer: BaseConsumer = common::consumer_config(&broker.bootstrap()).create()?;
    let metadata = tokio::task::block_in_place(|| {
        consumer.fetch_metadata(Some("orders"), common::CLIENT_TIMEOUT)
    })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == "orders")
        .map(|t| t.partitions().len());
    assert_eq!(partitions, Some(3));

    // A second create of the same name is refused, and the form says why.
    browser
        .fill("#create-topic input[name=name]", "orders")
        .await?;
    browser.click("#create-topic button[type=submit]").await?;
    browser
        .wait_text("#create-topic .form-answer.bad", "the refusal", |t| {
            t.contains("orders")
        })
        .await?;

    // The home page lists it, linking to its page.
    browser.goto("/").await?;
    browser
        .click("#topics a[href='/console/topics/orders']")
        .await?;
    browser
        .wait_text("h1", "the topic's page", |t| t == "Topic orders")
        .await?;
    let rows = browser.wait_texts("#partitions tbody tr", 3).await?;
    assert!(rows[0].starts_with('0'), "{rows:?}");
    browser.screenshot("topic").await?;
    browser.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_browser_shows_key_value_and_headers_by_offset_and_by_key_and_delayed_ones_wait()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "payments", 1, &[]).await?;
    let records: Vec<_> = (0..3)
        .map(|i| {
            (
                format!("customer-{i}"),
                format!("{{\"amount\": {}}}", 10 * (i + 1)),
                vec![("trace-id", ["t-0", "t-1", "t-2"][i])],
            )
        })
        .collect();
    tokio::task::block_in_place(|| produce(&bootstrap, "payments", 0, &records))?;
    let browser = Browser::open(&broker).await?;
    browser.goto("/console/topics/payments").await?;
    browser.click("#browse-messages").await?;
    browser.element("form#browse").await?;

    // From offset 1 of partition 0: records 1 and 2.
    browser.fill("#browse input[name=partition]", "0").await?;
    browser.fill("#browse input[name=offset]", "1").await?;
    browser.click("#browse button[type=submit]").await?;
    let rows = browser.wait_texts("#messages tbody tr", 2).await?;
    let first = browser
        .element("#messages tbody tr[data-offset='1']")
        .await?;
    let cell = |css: &'static str| {
        let row = first.clone();
        async move { row.find(Locator::Css(css)).await?.text().await }
    };
    assert_eq!(cell("td.key").await?, "customer-1", "{rows:?}");
    assert_eq!(cell("td.value").await?, "{\"amount\": 20}");
    assert_eq!(cell("td.headers").await?, "trace-id = t-1");
    browser.screenshot("messages").await?;

    // Only the records with a key, searched from the log start.
    browser.fill("#browse input[name=offset]", "").await?;
    browser
        .fill("#browse input[name=key]", "customer-2")
        .await?;
    browser.click("#browse button[type=submit]").await?;
    browser
        .wait_text("#browse-summary", "one record found", |t| {
            t.starts_with("1 records shown")
        })
        .await?;
    let row = browser.element("#messages tbody tr").await?;
    assert_eq!(row.attr("data-offset").await?.as_deref(), Some("2"));
    let text = row.text().await?;
    assert!(
        text.contains("customer-2") && text.contains("{\"amount\": 30}") && text.contains("t-2"),
        "{text}"
    );

    // The overview's chart shows the throughput as records are produced.
    browser.goto("/").await?;
    browser
        .wait_attr("[data-throughput]", "data-points", |p| {
            p.parse::<u32>().is_ok_and(|n| n >= 1)
        })
        .await?;
    tokio::task::block_in_place(|| produce(&bootstrap, "payments", 0, &numbered(500)))?;
    browser
        .wait_attr("[data-throughput]", "data-bytes-in", |b| {
            b.parse::<f64>().is_ok_and(|rate| rate > 0.0)
        })
        .await?;
    browser.element("[data-throughput] .uplot canvas").await?;
    browser.screenshot("overview").await?;

    // A record held back an hour is listed as pending, not browsed.
    let later = [(
        "reminder".to_owned(),
        "pay later".to_owned(),
        vec![("weir.delay-ms", "3600000")],
    )];
    tokio::task::block_in_place(|| produce(&bootstrap, "payments", 0, &later))?;
    browser.goto("/console/delayed").await?;
    browser
        .click("#delayed-topics a[href='/console/topics/payments/delayed']")
        .await?;
    let rows = browser.wait_texts("#delayed-records tbody tr", 1).await?;
    assert!(
        rows[0].contains("reminder") && rows[0].contains("pay later"),
        "{rows:?}"
    );
    browser.screenshot("delayed").await?;
    browser.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_groups_lag_falls_on_its_page_as_it_catches_up_and_commits() -> anyhow::Result<()>
{
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "events", 1, &[]).await?;
    tokio::task::block_in_place(|| produce(&bootstrap, "events", 0, &numbered(100)))?;
    let mut config = common::consumer_config(&bootstrap);
    config.set("group.id", "billing");
    let consumer: BaseConsumer = config.create()?;
    let commit = |offset: i64| -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("events", 0, Offset::Offset(offset))?;
        tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync))?;
        Ok(())
    };
    // The group starts with everything ahead of it.
    commit(0)?;
    let browser = Browser::open(&broker).await?;
    browser.goto("/console/groups").await?;
    browser
        .click("#groups a[href='/console/groups/billing']")
        .await?;
    browser
        .wait_text("#group-lag-total", "all 100 records behind", |t| t == "100")
        .await?;

    // The consumer reads and commits in two steps; the page follows.
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("events", 0, Offset::Offset(0))?;
    consumer.assign(&assignment)?;
    let mut next = 0;
    for (step, lag) in [(60, "40"), (100, "0")] {
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            let deadline = Instant::now() + WAIT;
            while next < step {
                ensure!(Instant::now() < deadline, "read only to {next}");
                if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                    next = message?.offset() + 1;
                }
            }
            Ok(())
        })?;
        commit(next)?;
        browser
            .wait_text("#group-lag-total", &format!("lag {lag}"), |t| t == lag)
            .await?;
    }
    // Each poll of the page sampled the lag: the chart has a line.
    browser
        .wait_attr("[data-lag-chart]", "data-points", |p| {
            p.parse::<u32>().is_ok_and(|n| n >= 2)
        })
        .await?;
    browser.element("[data-lag-chart] .uplot canvas").await?;
    let row = browser.cells("#group-partitions tbody tr").await?;
    assert_eq!(
        row.get(..5),
        Some(&["events", "0", "100", "100", "0"].map(String::from)[..])
    );
    browser.screenshot("group-lag").await?;
    browser.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_redriven_from_the_browser_into_its_target_topic() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "group.share.enable=true"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "orders", 1, &[]).await?;
    common::create_topic(&bootstrap, "orders-retry", 1, &[]).await?;
    // A share-group member rejects the one record: it is dead-lettered to
    // the group's default topic, dlq.orders-workers.
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let mut member = Member::join(&bootstrap, "orders-workers", "orders")?;
        produce(
            &bootstrap,
            "orders",
            0,
            &[("order-7".into(), "pay 7".into(), vec![("source", "web")])],
        )?;
        ensure!(member.fetch_until(1)?.len() == 1);
        ensure!(member.acknowledge(&[(0, 0, REJECT)])? == (0, 0));
        Ok(())
    })?;
    let browser = Browser::open(&broker).await?;
    // Dead letters are written in the background: look until it is there.
    let deadline = Instant::now() + WAIT;
    loop {
        browser.goto("/console/dead-letters").await?;
        let found = browser
            .client
            .find(Locator::Css(
                "#dead-letter-topics tr[data-topic='dlq.orders-workers'] td:nth-child(2)",
            ))
            .await;
        if let Ok(count) = found
            && count.text().await? == "1"
        {
            break;
        }
        ensure!(Instant::now() < deadline, "no dead letter within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
    browser
        .click("#dead-letter-topics a[href='/console/dead-letters/dlq.orders-workers']")
        .await?;
    let rows = browser.wait_texts("#dead-letters tbody tr", 1).await?;
    assert!(
        rows[0].contains("orders/0/0") && rows[0].contains("Offset rejected by client."),
        "{rows:?}"
    );
    // Re-driven elsewhere than where it came from.
    browser
        .fill("#redrive input[name=to]", "orders-retry")
        .await?;
    browser.click("#redrive button[type=submit]").await?;
    browser
        .wait_text("#redrive .form-answer", "the re-drive done", |t| {
            t.starts_with("Re-drove 1 dead letter to orders-retry")
        })
        .await?;
    browser.screenshot("dead-letters").await?;
    // It arrived, with its key, value and headers, and where it came from.
    let read = tokio::task::block_in_place(|| {
        common::read_to_high_watermark(&bootstrap, "orders-retry", &[0], WAIT)
    })?;
    let got = read.get(&0).context("partition 0 read")?;
    ensure!(got.len() == 1, "{} records in orders-retry", got.len());
    assert_eq!(got[0].key(), Some(&b"order-7"[..]));
    assert_eq!(got[0].payload(), Some(&b"pay 7"[..]));
    // And the console's message browser shows it there.
    browser
        .goto("/console/topics/orders-retry/messages?partition=0&offset=0")
        .await?;
    let row = browser.wait_texts("#messages tbody tr", 1).await?;
    assert!(
        row[0].contains("order-7") && row[0].contains("weir.redriven-from = "),
        "{row:?}"
    );
    browser.close().await
}
