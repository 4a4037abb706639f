//! The broker's HTTP admin API (`--admin-listen`), asked over HTTP as an
//! operator's script would: `GET /health` and `GET /ready` on the address
//! `weir serve` prints, on a one-node broker and on a cluster node, across a
//! restart, and `/ready` answering 503 while a cluster node has lost its
//! quorum and 200 again once it is back;
//! JSON errors for what it does not serve; `--admin-listen none` turns it
//! off and leaves Kafka clients served; a taken admin port fails the start
//! before the data folder is touched; an open admin connection does not
//! hold up the broker's stop; and with every admin connection taken a new
//! one waits for a free one while Kafka clients are served.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use common::cli::serve_expecting_exit;
use common::{BROKER_START_TIMEOUT, BROKER_STOP_TIMEOUT, Broker};
use serde_json::{Value, json};

/// Longest an admin request may take here (the broker answers in
/// milliseconds).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `weir_admin::CONNECTIONS_MAX`, mirrored: the root package does not
/// depend on weir-admin.
const ADMIN_CONNECTIONS_MAX: usize = 64;

/// An HTTP client with a bounded wait.
fn http() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()?)
}

/// `METHOD http://ADDR/PATH`: the status and the body, which must be JSON.
fn ask(method: reqwest::Method, addr: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let response = http()?
        .request(method, format!("http://{addr}{path}"))
        .send()
        .with_context(|| format!("cannot ask {addr}{path}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(
        content_type == "application/json",
        "{path}: content type {content_type:?}"
    );
    let body = response.text()?;
    let json = serde_json::from_str(&body).with_context(|| format!("{path}: {body:?}"))?;
    Ok((status, json))
}

fn get(addr: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    ask(reqwest::Method::GET, addr, path)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

#[test]
fn health_answers_ok_on_the_printed_admin_address_across_a_restart() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let addr = broker
        .admin_addr()
        .context("no `admin listening on` line")?
        .to_owned();
    ensure!(!addr.ends_with(":0"), "the printed address is {addr}");
    assert_eq!(get(&addr, "/health")?, (200, json!({"status": "ok"})));
    assert_eq!(get(&addr, "/ready")?.0, 200);

    // The harness restarts it on the same admin port, as on the same Kafka port.
    broker.restart()?;
    assert_eq!(broker.admin_addr(), Some(addr.as_str()));
    assert_eq!(get(&addr, "/health")?, (200, json!({"status": "ok"})));
    Ok(())
}

#[test]
fn a_cluster_node_serves_health_once_it_serves_kafka_clients() -> anyhow::Result<()> {
    let voters = format!("1@127.0.0.1:{}", common::reserve_port()?);
    let node = Broker::start(&["--node-id", "1", "--voters", &voters])?;
    let addr = node.admin_addr().context("no `admin listening on` line")?;
    assert_eq!(get(addr, "/health")?, (200, json!({"status": "ok"})));
    Ok(())
}

#[test]
fn ready_answers_503_while_a_cluster_node_has_lost_its_quorum() -> anyhow::Result<()> {
    let mut nodes =
        common::security::start_cluster(3, "", &["--set", "broker.session.timeout.ms=2000"])?;
    // The quorum's leader is the harder case: it answers its own broker's
    // heartbeats, and must stop once no majority follows it.
    let leader = nodes
        .iter()
        .position(|n| {
            n.stderr_tail()
                .contains("this node now leads the metadata quorum")
        })
        .context("no node says it leads the quorum")?;
    let others: Vec<usize> = (0..nodes.len()).filter(|&i| i != leader).collect();
    let addr = nodes[leader]
        .admin_addr()
        .context("no `admin listening on` line")?
        .to_owned();
    let ready = json!({"status": "ready", "checks": {
        "metadata_loaded": true, "log_recovered": true, "caught_up": true}});
    assert_eq!(get(&addr, "/ready")?, (200, ready.clone()));
    // Without a majority no heartbeat is answered: after a session timeout
    // the node counts itself fenced.
    for &i in &others {
        nodes[i].sigkill()?;
    }
    common::wait_until(Duration::from_secs(30), "/ready to answer 503", || {
        let (status, body) = get(&addr, "/ready")?;
        Ok(status == 503 && body["checks"]["caught_up"] == json!(false))
    })?;
    assert_eq!(get(&addr, "/health")?, (200, json!({"status": "ok"})));
    for &i in &others {
        nodes[i].restart()?;
    }
    common::wait_until(Duration::from_secs(30), "/ready to answer 200", || {
        Ok(get(&addr, "/ready")? == (200, ready.clone()))
    })?;
    Ok(())
}

#[test]
fn what_the_admin_api_does_not_serve_answers_a_json_error() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let addr = broker
        .admin_addr()
        .context("no `admin listening on` line")?;
    assert_eq!(
        get(addr, "/no/such/route")?,
        (404, json!({"error": "no route for GET /no/such/route"}))
    );
    assert_eq!(
        ask(reqwest::Method::DELETE, addr, "/health")?,
        (405, json!({"error": "/health does not take DELETE"}))
    );
    // A query or path that does not parse, or a bound passed, is a JSON 400.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/topics/t/delayed?limit=many"),
        (reqwest::Method::GET, "/v1/topics/t/delayed?limit=1001"),
        (reqwest::Method::GET, "/v1/topics/t/delayed?bytes=65537"),
        (
            reqwest::Method::DELETE,
            "/v1/topics/t/partitions/x/delayed/1",
        ),
    ] {
        let (status, body) = ask(method, addr, path)?;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
    assert_eq!(
        get(addr, "/v1/topics/t/delayed")?,
        (404, json!({"error": "no topic named t"}))
    );
    Ok(())
}

/// A `weir serve` started by the test itself, killed on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn admin_listen_none_prints_no_admin_line_and_kafka_clients_are_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "none"])
        .args(["--data-dir", path_str(&data)?])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start weir serve")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut served = Served(child);
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(BROKER_START_TIMEOUT)
        .context("weir serve printed nothing")?;
    let bootstrap = first
        .strip_prefix("listening on ")
        .with_context(|| format!("first line {first:?}"))?
        .to_owned();

    let weir = |args: &[&str], input: &[u8]| -> anyhow::Result<String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .env("WEIR_BROKERS", &bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("no stdin")?.write_all(input)?;
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "weir {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    };
    weir(&["topic", "create", "t", "--partitions", "1"], b"")?;
    weir(&["produce", "t"], b"a\nb\n")?;
    assert_eq!(weir(&["consume", "t", "--from-beginning"], b"")?, "a\nb\n");

    // Everything it printed, once it has stopped.
    let sent = Command::new("kill")
        .args(["-TERM", &served.0.id().to_string()])
        .status()?;
    ensure!(sent.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + BROKER_STOP_TIMEOUT;
    while served.0.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            bail!("weir serve did not stop within {BROKER_STOP_TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))?;
    let rest: Vec<String> = rx.try_iter().collect();
    ensure!(
        !rest.iter().any(|l| l.starts_with("admin listening on")),
        "printed {rest:?}"
    );
    Ok(())
}

#[test]
fn a_taken_admin_port_fails_the_start_naming_the_flag() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = taken.local_addr()?.to_string();
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    let refused = serve_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            &taken,
            "--data-dir",
            path_str(&data)?,
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {taken} (--admin-listen)")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(stderr.contains("--admin-listen none"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("listening on"),
        "the refused broker served"
    );
    // Bound before the data folder is made: nothing was touched.
    assert!(!data.exists(), "a failed start created {}", data.display());
    Ok(())
}

#[test]
fn an_open_admin_connection_does_not_hold_up_the_stop() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let addr = broker
        .admin_addr()
        .context("no `admin listening on` line")?
        .to_owned();
    // One connection idle after an answer, one in the middle of a request.
    let client = http()?;
    let answered = client.get(format!("http://{addr}/health")).send()?;
    ensure!(answered.status() == 200);
    let mut halfway = std::net::TcpStream::connect(&addr)?;
    halfway.write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\n")?;

    // `stop` fails unless the broker exits within BROKER_STOP_TIMEOUT; the
    // unfinished request holds it for the admin API's drain bound (5 s).
    let status = broker.stop()?;
    ensure!(status.success(), "weir serve exited {status}");
    drop(halfway);
    Ok(())
}

#[test]
fn with_every_admin_connection_taken_a_new_one_waits_and_kafka_clients_are_served()
-> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let addr = broker
        .admin_addr()
        .context("no `admin listening on` line")?
        .to_owned();
    // Connected and silent, they take every admin connection until the idle
    // timeout (30 s) closes them; the test is done well before.
    let mut idle = (0..ADMIN_CONNECTIONS_MAX)
        .map(|_| std::net::TcpStream::connect(&addr))
        .collect::<Result<Vec<_>, _>>()?;

    // Connected after them, it waits in the listen backlog, unanswered.
    let (answered_tx, answered) = mpsc::channel();
    let health = addr.clone();
    let asker = std::thread::spawn(move || {
        // Bounded, and long enough to outlast the waits below.
        let answer = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .and_then(|client| client.get(format!("http://{health}/health")).send())
            .map(|response| response.status().as_u16());
        let _ = answered_tx.send(answer);
    });
    match answered.recv_timeout(Duration::from_millis(500)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => {
            bail!("GET /health with {ADMIN_CONNECTIONS_MAX} admin connections open: {other:?}")
        }
    }

    // The Kafka listener is not the admin one: produce and consume.
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "weir-e2e-health", 1, &[])?;
    common::assert_serves_clients(&bootstrap)?;

    // One idle connection closed, the waiting one is accepted and answered.
    drop(idle.pop());
    let status = answered
        .recv_timeout(HTTP_TIMEOUT)
        .context("GET /health was not answered once an admin connection closed")??;
    ensure!(status == 200, "GET /health answered {status}");
    asker
        .join()
        .map_err(|_| anyhow::anyhow!("the health asker panicked"))?;

    // A full admin listener does not hold up the stop past its drain bound.
    let status = broker.stop()?;
    ensure!(status.success(), "weir serve exited {status}");
    drop(idle);
    Ok(())
}

/// A record to produce: partition, key, value, timestamp and headers.
type ToProduce = (i32, String, String, i64, Vec<(String, String)>);

/// Produce `records` to `topic` and wait until every one is acknowledged
/// (acks=all).
fn produce(bootstrap: &str, topic: &str, records: &[ToProduce]) -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let producer: BaseProducer = common::producer_config(bootstrap).create()?;
    for (partition, key, value, timestamp, headers) in records {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v),
            })
        });
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(*partition)
                    .key(key)
                    .payload(value)
                    .timestamp(*timestamp)
                    .headers(headers),
            )
            .map_err(|(e, _)| anyhow::anyhow!("cannot queue a record: {e}"))?;
    }
    producer.flush(common::CLIENT_TIMEOUT)?;
    ensure!(producer.in_flight_count() == 0, "records left undelivered");
    Ok(())
}

/// The admin address of `broker`.
fn admin_of(broker: &Broker) -> anyhow::Result<String> {
    Ok(broker
        .admin_addr()
        .context("no `admin listening on` line")?
        .to_owned())
}

#[test]
fn topics_are_listed_and_described_with_their_offsets_and_configs() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let addr = admin_of(&broker)?;
    common::create_topic_blocking(
        &broker.bootstrap(),
        "orders",
        2,
        &[("retention.ms", "3600000")],
    )?;
    let record = |p: i32, i: i64| (p, format!("k{i}"), format!("v{i}"), 1_000 + i, Vec::new());
    let mut records: Vec<_> = (0..10).map(|i| record(0, i)).collect();
    records.extend((0..5).map(|i| record(1, i)));
    produce(&broker.bootstrap(), "orders", &records)?;

    let (status, body) = get(&addr, "/v1/topics")?;
    assert_eq!(status, 200, "{body}");
    let topics = body["topics"].as_array().context("no topics")?;
    let orders = topics
        .iter()
        .find(|t| t["name"] == "orders")
        .context("orders is not listed")?;
    assert_eq!(orders["partitions"], 2);
    assert_eq!(orders["replication_factor"], 1);
    assert_eq!(orders["internal"], false);
    assert_eq!(orders["records"], 15, "{orders}");
    assert!(
        orders["size_bytes"].as_u64().is_some_and(|b| b > 0),
        "{orders}"
    );
    assert_eq!(orders["view_of"], Value::Null);
    assert!(orders["topic_id"].as_str().is_some_and(|id| id.len() == 22));

    let (status, body) = get(&addr, "/v1/topics/orders")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "orders");
    let partitions = body["partition_details"].as_array().context("partitions")?;
    assert_eq!(partitions.len(), 2);
    for (p, end) in [(0, 10), (1, 5)] {
        let detail = &partitions[p];
        assert_eq!(detail["partition"], p);
        assert_eq!(detail["log_start_offset"], 0, "{detail}");
        assert_eq!(detail["high_watermark"], end, "{detail}");
        assert_eq!(detail["last_stable_offset"], end, "{detail}");
        assert_eq!(detail["led_here"], true);
        assert_eq!(detail["replicas"], json!([detail["leader"]]));
        assert_eq!(detail["isr"], detail["replicas"]);
    }
    let configs = body["configs"].as_array().context("configs")?;
    let retention = configs
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .context("no retention.ms")?;
    assert_eq!(retention["value"], "3600000");
    assert_eq!(retention["source"], "DYNAMIC_TOPIC_CONFIG");

    assert_eq!(
        get(&addr, "/v1/topics/nope")?,
        (404, json!({"error": "no topic named nope"}))
    );
    // The node lists itself, and no quorum.
    let (status, body) = get(&addr, "/v1/brokers")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cluster"], false);
    assert_eq!(body["brokers"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["brokers"][0]["this_node"], true);
    assert_eq!(body["quorum"], Value::Null);
    let (status, body) = get(&addr, "/v1/transactions")?;
    assert_eq!((status, &body["transactions"]), (200, &json!([])), "{body}");
    Ok(())
}

#[test]
fn messages_are_read_by_offset_timestamp_and_key_in_each_format() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let addr = admin_of(&broker)?;
    common::create_topic_blocking(&broker.bootstrap(), "events", 1, &[])?;
    let base = 1_700_000_000_000_i64;
    let records: Vec<_> = (0..10)
        .map(|i| {
            (
                0,
                format!("k{i}"),
                format!("{{\"n\":{i}}}"),
                base + i * 1_000,
                vec![
                    ("trace".to_owned(), format!("t{i}")),
                    ("trace".to_owned(), "again".to_owned()),
                ],
            )
        })
        .collect();
    produce(&broker.bootstrap(), "events", &records)?;
    let path = |query: &str| format!("/v1/topics/events/messages?{query}");

    // By offset, as text (the default).
    let (status, body) = get(&addr, &path("partition=0&offset=3&limit=2"))?;
    assert_eq!(status, 200, "{body}");
    let shown = body["records"].as_array().context("records")?;
    assert_eq!(shown.len(), 2, "{body}");
    assert_eq!(shown[0]["offset"], 3);
    assert_eq!(shown[0]["timestamp_ms"], base + 3_000);
    assert_eq!(shown[0]["timestamp_type"], "create_time");
    assert_eq!(
        shown[0]["key"],
        json!({"data": "k3", "size": 2, "cut": false})
    );
    assert_eq!(shown[0]["value"]["data"], "{\"n\":3}");
    assert_eq!(
        shown[0]["headers"],
        json!([
            {"key": {"data": "trace", "size": 5, "cut": false},
             "value": {"data": "t3", "size": 2, "cut": false}},
            {"key": {"data": "trace", "size": 5, "cut": false},
             "value": {"data": "again", "size": 5, "cut": false}},
        ])
    );
    assert_eq!(shown[1]["offset"], 4);
    assert_eq!(body["partitions"][0]["next_offset"], 5);
    assert_eq!(body["partitions"][0]["end_offset"], 10);
    assert_eq!(body["cut"], false);

    // JSON and hex.
    let (_, body) = get(&addr, &path("partition=0&offset=3&limit=1&format=json"))?;
    assert_eq!(body["records"][0]["value"]["data"], json!({"n": 3}));
    let (_, body) = get(&addr, &path("partition=0&offset=3&limit=1&format=hex"))?;
    assert_eq!(body["records"][0]["key"]["data"], "6b33");
    assert_eq!(body["records"][0]["headers"][0]["value"]["data"], "7433");

    // The byte cap, with the whole size and the flag.
    let (_, body) = get(&addr, &path("partition=0&offset=3&limit=1&bytes=2"))?;
    assert_eq!(
        body["records"][0]["value"],
        json!({"data": "{\"", "size": 7, "cut": true})
    );

    // By timestamp: the first record at or after it.
    let (_, body) = get(
        &addr,
        &path(&format!("partition=0&timestamp={}&limit=1", base + 5_500)),
    )?;
    assert_eq!(body["records"][0]["offset"], 6, "{body}");
    let (_, body) = get(
        &addr,
        &path(&format!("partition=0&timestamp={}", base + 60_000)),
    )?;
    assert_eq!(body["records"], json!([]), "{body}");

    // By key, in every partition (none given), scanning from the log start.
    let (_, body) = get(&addr, &path("key=k7"))?;
    let found = body["records"].as_array().context("records")?;
    assert_eq!(found.len(), 1, "{body}");
    assert_eq!(found[0]["offset"], 7);
    assert_eq!(body["scanned_records"], 10);
    assert_eq!(body["cut"], false);

    // Bad query values, an unknown topic or partition.
    for bad in [
        "limit=1001",
        "bytes=65537",
        "format=xml",
        "offset=-1",
        "offset=1&timestamp=2",
        "partition=x",
        "isolation=dirty",
    ] {
        let (status, body) = get(&addr, &path(bad))?;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(get(&addr, &path("partition=5"))?.0, 404);
    assert_eq!(
        get(&addr, "/v1/topics/nope/messages")?,
        (404, json!({"error": "no topic named nope"}))
    );
    Ok(())
}

#[test]
fn a_group_shows_its_lag_once_a_consumer_commits() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    let broker = Broker::start(&[])?;
    let addr = admin_of(&broker)?;
    common::create_topic_blocking(&broker.bootstrap(), "work", 1, &[])?;
    let records: Vec<_> = (0..10)
        .map(|i| (0, format!("k{i}"), format!("v{i}"), 1_000 + i, Vec::new()))
        .collect();
    produce(&broker.bootstrap(), "work", &records)?;
    let consumer: BaseConsumer = common::consumer_config(&broker.bootstrap())
        .set("group.id", "billing")
        .create()?;
    let mut at = rdkafka::TopicPartitionList::new();
    at.add_partition_offset("work", 0, rdkafka::Offset::Offset(4))?;
    consumer.commit(&at, CommitMode::Sync)?;

    let (status, body) = get(&addr, "/v1/groups")?;
    assert_eq!(status, 200, "{body}");
    let billing = body["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group_id"] == "billing"))
        .context("billing is not listed")?;
    assert_eq!(billing["group_type"], "classic", "{billing}");
    assert_eq!(billing["lag"], 6, "{billing}");

    let (status, body) = get(&addr, "/v1/groups/billing")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["partitions"],
        json!([{"topic": "work", "partition": 0, "committed_offset": 4,
                "log_end_offset": 10, "lag": 6, "member_ids": []}])
    );
    assert_eq!(body["lag"], 6);
    let (status, body) = get(&addr, "/v1/groups/nope")?;
    assert_eq!(status, 404, "{body}");
    Ok(())
}

#[test]
fn aborted_records_are_shown_only_when_asked_and_the_transaction_is_listed() -> anyhow::Result<()> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
    let broker = Broker::start(&[])?;
    let addr = admin_of(&broker)?;
    common::create_topic_blocking(&broker.bootstrap(), "ledger", 1, &[])?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        common::producer_config(&broker.bootstrap())
            .set("transactional.id", "ledger-writer")
            .create()?;
    producer.init_transactions(common::CLIENT_TIMEOUT)?;
    for (value, commit) in [("dropped", false), ("kept", true)] {
        producer.begin_transaction()?;
        producer
            .send(
                BaseRecord::to("ledger")
                    .partition(0)
                    .key(value)
                    .payload(value),
            )
            .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
        // Delivered first: an abort purges what is still queued.
        producer.flush(common::CLIENT_TIMEOUT)?;
        if commit {
            producer.commit_transaction(common::CLIENT_TIMEOUT)?;
        } else {
            producer.abort_transaction(common::CLIENT_TIMEOUT)?;
        }
    }
    let values = |body: &Value| -> Vec<Value> {
        body["records"]
            .as_array()
            .map(|r| r.iter().map(|r| r["value"]["data"].clone()).collect())
            .unwrap_or_default()
    };
    // read_committed by default: the aborted record and the markers are
    // left out.
    let (status, body) = get(&addr, "/v1/topics/ledger/messages?partition=0")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(values(&body), [json!("kept")], "{body}");
    assert_eq!(body["isolation"], "read_committed");
    let (_, body) = get(
        &addr,
        "/v1/topics/ledger/messages?partition=0&isolation=read_uncommitted",
    )?;
    assert_eq!(values(&body), [json!("dropped"), json!("kept")], "{body}");

    let (status, body) = get(&addr, "/v1/transactions")?;
    assert_eq!(status, 200, "{body}");
    let txns = body["transactions"].as_array().context("transactions")?;
    assert_eq!(txns.len(), 1, "{body}");
    assert_eq!(txns[0]["transactional_id"], "ledger-writer");
    assert_eq!(txns[0]["state"], "CompleteCommit");
    assert!(txns[0]["producer_id"].as_i64().is_some_and(|id| id >= 0));
    assert_eq!(txns[0]["timeout_ms"], 60_000);
    Ok(())
}

#[test]
fn a_share_group_and_its_dead_letter_topic_are_shown() -> anyhow::Result<()> {
    use common::share::{ACCEPT, Member, REJECT};
    let broker = Broker::start(&["--set", "group.share.enable=true"])?;
    let addr = admin_of(&broker)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "orders", 1, &[])?;
    let mut member = Member::join(&bootstrap, "orders-workers", "orders")?;
    let records: Vec<_> = (0..3)
        .map(|i| (0, format!("k{i}"), format!("v{i}"), 1_000 + i, Vec::new()))
        .collect();
    produce(&bootstrap, "orders", &records)?;
    assert_eq!(member.fetch_until(3)?.len(), 3);
    member.acknowledge(&[(0, 0, REJECT), (1, 2, ACCEPT)])?;

    // The rejected record's dead letter lands in dlq.<group>.
    common::wait_until(Duration::from_secs(30), "a dead letter", || {
        let (_, body) = get(&addr, "/v1/dead-letter-topics")?;
        Ok(body["topics"][0]["records"] == json!(1))
    })?;
    let (_, body) = get(&addr, "/v1/dead-letter-topics")?;
    assert_eq!(
        body["topics"][0],
        json!({"topic": "dlq.orders-workers", "exists": true, "accepts_dead_letters": true,
               "partitions": body["topics"][0]["partitions"],
               "records": 1, "size_bytes": body["topics"][0]["size_bytes"],
               "groups": ["orders-workers"]})
    );
    let (_, body) = get(&addr, "/v1/topics")?;
    let dlq = body["topics"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "dlq.orders-workers"))
        .context("the dead-letter topic is not listed")?;
    assert_eq!(dlq["dead_letter"], true);

    let (_, body) = get(&addr, "/v1/groups")?;
    let group = body["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group_id"] == "orders-workers"))
        .context("the share group is not listed")?;
    assert_eq!(
        (&group["group_type"], &group["members"]),
        (&json!("share"), &json!(1))
    );
    // The start offset passes the dead-lettered record once its dead
    // letter is confirmed.
    common::wait_until(
        Duration::from_secs(30),
        "the start offset to pass 2",
        || {
            let (_, body) = get(&addr, "/v1/groups/orders-workers")?;
            Ok(body["partitions"][0]["committed_offset"] == json!(3))
        },
    )?;
    let (status, body) = get(&addr, "/v1/groups/orders-workers")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dead_letter_topic"], "dlq.orders-workers");
    assert_eq!(body["members"][0]["member_id"], member.id.as_str());
    assert_eq!(
        body["members"][0]["assignment"],
        json!([{"topic": "orders", "partition": 0}])
    );
    assert_eq!(body["partitions"][0]["committed_offset"], 3, "{body}");
    assert_eq!(body["partitions"][0]["lag"], 0, "{body}");
    Ok(())
}

#[test]
fn a_cluster_node_answers_what_it_knows_and_says_who_leads() -> anyhow::Result<()> {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let nodes = common::security::start_cluster(3, "", &[])?;
    let bootstrap = nodes[0].bootstrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let created = runtime.block_on(async {
        common::admin(&bootstrap)?
            .create_topics(
                [&NewTopic::new("replicated", 1, TopicReplication::Fixed(3))],
                &common::admin_options(),
            )
            .await
            .map_err(anyhow::Error::from)
    })?;
    for result in created {
        result.map_err(|(name, code)| anyhow::anyhow!("cannot create {name}: {code:?}"))?;
    }
    produce(
        &bootstrap,
        "replicated",
        &[(0, "k".to_owned(), "v".to_owned(), 1_000, Vec::new())],
    )?;
    let addrs: Vec<String> = nodes.iter().map(admin_of).collect::<anyhow::Result<_>>()?;

    // Every node knows the three brokers, all active.
    for addr in &addrs {
        common::wait_until(Duration::from_secs(30), "three active brokers", || {
            let (_, body) = get(addr, "/v1/brokers")?;
            Ok(body["cluster"] == json!(true)
                && body["brokers"]
                    .as_array()
                    .is_some_and(|b| b.len() == 3 && b.iter().all(|b| b["state"] == "active")))
        })?;
    }
    let quorum_known = addrs.iter().any(|addr| {
        get(addr, "/v1/brokers").is_ok_and(|(_, body)| {
            body["quorum"]["leader_id"]
                .as_i64()
                .is_some_and(|id| id >= 1)
                && body["quorum"]["voters"].as_array().map(Vec::len) == Some(3)
        })
    });
    ensure!(
        quorum_known,
        "no node reports the quorum's leader and voters"
    );

    // A follower reads its own copy, and says who leads.
    let (_, body) = get(&addrs[0], "/v1/topics/replicated")?;
    let leader = body["partition_details"][0]["leader"]
        .as_i64()
        .context("no leader")?;
    let follower = addrs
        .iter()
        .enumerate()
        .find(|(i, _)| i64::try_from(*i + 1).ok() != Some(leader))
        .map(|(_, addr)| addr.clone())
        .context("no follower")?;
    common::wait_until(Duration::from_secs(30), "the follower's copy", || {
        let (_, body) = get(&follower, "/v1/topics/replicated")?;
        Ok(body["partition_details"][0]["high_watermark"] == json!(1))
    })?;
    let (_, body) = get(&follower, "/v1/topics/replicated")?;
    let detail = &body["partition_details"][0];
    assert_eq!(detail["led_here"], false, "{detail}");
    assert_eq!(detail["held_here"], true, "{detail}");
    assert!(
        detail["note"]
            .as_str()
            .is_some_and(|n| n.contains(&format!("led by broker {leader}"))),
        "{detail}"
    );
    let (status, body) = get(&follower, "/v1/topics/replicated/messages?partition=0")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["value"]["data"], "v", "{body}");
    assert_eq!(body["partitions"][0]["led_here"], false);
    assert_eq!(body["partitions"][0]["leader"], leader);
    Ok(())
}

#[test]
fn a_kip_848_groups_members_show_their_assignment_and_lag() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    let broker = Broker::start(&[
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        "group.consumer.heartbeat.interval.ms=200",
    ])?;
    let addr = admin_of(&broker)?;
    common::create_topic_blocking(&broker.bootstrap(), "t", 2, &[])?;
    let records: Vec<_> = (0..4)
        .map(|i| (0, format!("k{i}"), format!("v{i}"), 1_000 + i, Vec::new()))
        .collect();
    produce(&broker.bootstrap(), "t", &records)?;
    let consumer: BaseConsumer = common::consumer_config(&broker.bootstrap())
        .set("group.id", "g848")
        .set("group.protocol", "consumer")
        .set("client.id", "member-one")
        .create()?;
    consumer.subscribe(&["t"])?;
    let mut body = Value::Null;
    common::wait_until(
        Duration::from_secs(30),
        "the member to own both partitions",
        || {
            // Polling serves the consumer's rebalance.
            let _ = consumer.poll(Duration::from_millis(100));
            let (status, answer) = get(&addr, "/v1/groups/g848")?;
            body = answer;
            Ok(status == 200
                && body["members"][0]["assignment"].as_array().map(Vec::len) == Some(2))
        },
    )?;
    assert_eq!(body["group_type"], "consumer", "{body}");
    let member = &body["members"][0];
    assert_eq!(member["client_id"], "member-one", "{body}");
    assert!(
        member["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{body}"
    );
    assert_eq!(
        member["assignment"],
        json!([{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}])
    );

    let mut at = rdkafka::TopicPartitionList::new();
    at.add_partition_offset("t", 0, rdkafka::Offset::Offset(1))?;
    consumer.commit(&at, CommitMode::Sync)?;
    let (_, body) = get(&addr, "/v1/groups/g848")?;
    let p0 = &body["partitions"][0];
    assert_eq!(
        (&p0["committed_offset"], &p0["log_end_offset"], &p0["lag"]),
        (&json!(1), &json!(4), &json!(3)),
        "{body}"
    );
    assert_eq!(p0["member_ids"], json!([member["member_id"]]), "{body}");
    let (_, body) = get(&addr, "/v1/groups")?;
    let listed = body["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group_id"] == "g848"))
        .context("g848 is not listed")?;
    assert_eq!(
        (&listed["members"], &listed["lag"]),
        (&json!(1), &json!(3)),
        "{listed}"
    );
    Ok(())
}
