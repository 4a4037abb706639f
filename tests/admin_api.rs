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
