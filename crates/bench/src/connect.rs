//! `weir bench connect`: how long a new client takes to get its first
//! answer, connection set-up included: TCP, then a TLS handshake and a SASL
//! exchange when `-X` asks for them, then ApiVersions and Metadata. Run
//! against a PLAINTEXT, an SSL and a SASL listener of one broker, the
//! differences are the set-up each security layer adds.
//!
//! Each attempt makes a new librdkafka client and drops it after its
//! answer, so every attempt opens its own connection; the client's own
//! start (its threads) is in every figure alike.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde::Serialize;

use super::report::{LatencyMs, latency_histogram};

pub(super) const CONNECT_EXAMPLES: &str = "\
Examples:
  weir bench connect --brokers 127.0.0.1:9092 --count 200
  weir bench connect --brokers 127.0.0.1:9093 -X security.protocol=ssl \\
      -X ssl.ca.location=weir-certs/ca.crt --json
  weir bench connect --brokers 127.0.0.1:9094 -X security.protocol=sasl_plaintext \\
      -X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=alice -X sasl.password=secret

Each of --count attempts creates a client, times its first Metadata answer
(TCP connect, TLS and SASL when -X asks for them, ApiVersions, Metadata),
and drops it. TLS and SASL need a `weir` built with `--features ssl`.

Exit status: 0 on success; 1 if an attempt failed; 3 if the first attempt
got no answer.";

/// The longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most attempts one run makes.
const ATTEMPTS_MAX: u64 = 100_000;

/// `weir bench connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Attempts, each with a new client and connection.
    #[arg(long, default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=ATTEMPTS_MAX))]
    count: u64,
    /// Raw librdkafka property, applied last (repeatable), e.g. -X security.protocol=ssl.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = super::parse_property)]
    property: Vec<(String, String)>,
    /// Print one JSON object on stdout instead of the text summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ConnectReport {
    brokers: String,
    /// The `-X` properties, passwords left out.
    properties: Vec<(String, String)>,
    attempts: u64,
    /// Time to the first Metadata answer, per new client.
    first_answer_ms: LatencyMs,
    connections_per_s: f64,
}

pub(super) fn run(args: &ConnectArgs) -> anyhow::Result<()> {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("client.id", "weir-bench-connect");
    for (key, value) in &args.property {
        config.set(key, value);
    }
    let mut histogram = latency_histogram()?;
    let started = Instant::now();
    for attempt in 0..args.count {
        let begun = Instant::now();
        let consumer: BaseConsumer = config.create().context("cannot create a client")?;
        match consumer.fetch_metadata(None, ATTEMPT_TIMEOUT) {
            Ok(_) => {}
            Err(err) if attempt == 0 => {
                return Err(weir_client::Error::Unreachable {
                    brokers: args.brokers.clone(),
                    cause: err.to_string(),
                }
                .into());
            }
            Err(err) => bail!("attempt {attempt} got no answer: {err}"),
        }
        let us = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram
            .record(us.max(1))
            .context("latency out of range")?;
        drop(consumer);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = ConnectReport {
        brokers: args.brokers.clone(),
        properties: args
            .property
            .iter()
            .map(|(key, value)| {
                let shown = if key.contains("password") {
                    "(hidden)"
                } else {
                    value
                };
                (key.clone(), shown.to_owned())
            })
            .collect(),
        attempts: args.count,
        first_answer_ms: LatencyMs::from_histogram(&histogram)
            .context("no attempt was recorded")?,
        connections_per_s: args.count as f64 / elapsed.max(f64::EPSILON),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let l = report.first_answer_ms;
        println!(
            "{} new clients to {}: first answer p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.1} connections/s",
            report.attempts, report.brokers, l.p50, l.p99, l.max, report.connections_per_s
        );
    }
    Ok(())
}
