//! What the TLS, SASL and ACL tests share: certificates from `weir cert
//! dev`, users from `weir user create`, a cluster whose nodes have several
//! listeners, a partition's values read back through a client
//! configuration (TLS or SASL settings included), and waiting for the
//! broker to log a refusal.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{Broker, CLIENT_TIMEOUT, read_until};

/// `weir cert dev --dir DIR`: a CA, and a broker and a client certificate.
pub fn dev_certificates(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["cert", "dev", "--dir"])
        .arg(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "weir cert dev failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `weir user create NAME --password-stdin --mechanism MECHANISM` through
/// `bootstrap`.
pub fn create_user(
    bootstrap: &str,
    (name, password): (&str, &str),
    mechanism: &str,
) -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--brokers", bootstrap, "user", "create", name])
        .args(["--password-stdin", "--mechanism", mechanism])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "weir user create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A cluster of `nodes` nodes, each a voter reached by the others on a
/// PLAINTEXT listener (`inter.broker.listener.name`) at a port reserved
/// here, with `more_listeners` (`SSL://127.0.0.1:0,...`) beside it and
/// `args`. The nodes print their addresses once the quorum has formed, so
/// they are started together.
pub fn start_cluster(
    nodes: u16,
    more_listeners: &str,
    args: &[&str],
) -> anyhow::Result<Vec<Broker>> {
    let mut plaintext = Vec::new();
    let mut voters = Vec::new();
    for id in 1..=nodes {
        plaintext.push(super::reserve_port()?);
        voters.push(format!("{id}@127.0.0.1:{}", super::reserve_port()?));
    }
    let voters = voters.join(",");
    let starts: Vec<_> = (1..=nodes)
        .zip(plaintext)
        .map(|(id, port)| {
            let listeners = if more_listeners.is_empty() {
                format!("PLAINTEXT://127.0.0.1:{port}")
            } else {
                format!("PLAINTEXT://127.0.0.1:{port},{more_listeners}")
            };
            let mut node_args: Vec<String> = [
                "--node-id",
                &id.to_string(),
                "--voters",
                &voters,
                "--set",
                "inter.broker.listener.name=PLAINTEXT",
            ]
            .map(str::to_owned)
            .into();
            node_args.extend(args.iter().map(|arg| (*arg).to_owned()));
            std::thread::spawn(move || {
                let args: Vec<&str> = node_args.iter().map(String::as_str).collect();
                Broker::start_with_listeners(&listeners, &args)
            })
        })
        .collect();
    let mut started = Vec::new();
    for start in starts {
        started.push(
            start
                .join()
                .map_err(|_| anyhow::anyhow!("a node's start thread panicked"))??,
        );
    }
    Ok(started)
}

/// Send `count` records `TAG-0`, `TAG-1`, ... to `topic`, each acknowledged
/// before the next is sent.
pub async fn send_numbered(
    producer: &FutureProducer,
    topic: &str,
    tag: &str,
    count: usize,
) -> anyhow::Result<()> {
    for i in 0..count {
        let value = format!("{tag}-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&value),
                CLIENT_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("record {value} not delivered"))?;
    }
    Ok(())
}

/// Partition 0 of `topic`, from its start to its high watermark, as text,
/// read by a consumer made from `config`.
pub fn values(config: &ClientConfig, topic: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = config.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, CLIENT_TIMEOUT)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(low))?;
    let mut read = read_until(
        &consumer,
        &assignment,
        &HashMap::from([(0, high)]),
        CLIENT_TIMEOUT,
    )?;
    Ok(read
        .remove(&0)
        .unwrap_or_default()
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect())
}

/// Wait until the broker's stderr holds `needle`.
pub fn wait_for_log(broker: &Broker, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while Instant::now() < deadline {
        if broker.stderr_tail().contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the broker never logged {needle:?}")
}
