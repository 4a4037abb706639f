//! What the TLS and SASL tests share: certificates from `weir cert dev`,
//! a partition's values read back through a client configuration (TLS or
//! SASL settings included), and waiting for the broker to log a refusal.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
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
