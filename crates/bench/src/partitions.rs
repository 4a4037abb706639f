//! `weir bench partitions`: how long a broker takes to create many
//! partitions, and (with `--wait`) how long a restarted broker takes to serve
//! them all again.
//!
//! It speaks the Admin and Metadata APIs through weir-client rather than
//! librdkafka: a creation of 10,000 partitions may take longer than any
//! librdkafka admin timeout, and the figure wanted is the broker's time, so
//! the request's `timeout_ms` and the socket timeout are both `--timeout`. A
//! step counts as done when Metadata shows every partition of its topic with
//! a leader, not when CreateTopics answers.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kafka_protocol::messages::{
    CreateTopicsRequest, MetadataResponse, create_topics_request::CreatableTopic,
};
use serde::Serialize;
use weir_client::{Client, str_bytes};

use crate::scale::{self, ScaleError};

/// The most partitions one step may create (the broker's per-topic limit).
const STEP_PARTITIONS_MAX: i64 = 100_000;
/// The most partitions a run may bring the broker to.
const TOTAL_PARTITIONS_MAX: i64 = 10_000_000;
/// The pause between two Metadata polls while partitions become ready; the
/// protocol has no "tell me when ready".
const READY_POLL: Duration = Duration::from_millis(10);
/// The longest `--timeout`.
const TIMEOUT_MAX: Duration = Duration::from_secs(3600);

pub const PARTITIONS_EXAMPLES: &str = "\
Examples:
  weir bench partitions                                  # 10 topics of 10,000 partitions
  weir bench partitions --step 1000 --total 5000 --json
  weir bench partitions --wait --total 100000 --timeout 2m  # after a restart

Each step creates one topic, PREFIX-NNN, of --step partitions (the last step
fewer, to end at --total) and is timed from sending CreateTopics until Metadata
shows every partition of the topic with a leader. Topics PREFIX-* that already
exist count towards --total, so a second run continues where one stopped.

--wait creates nothing: it connects (retrying while the broker starts) and
times until Metadata shows at least --total partitions of PREFIX-* topics, all
with a leader. scripts/bench-scale.sh starts it beside a restarting broker.

Exit status: 0 on success; 1 if a creation failed or timed out; 3 if no broker
answered within --timeout (--wait) or 10 s.";

/// `weir bench partitions`.
#[derive(Debug, Clone, Args)]
pub struct PartitionsArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Name prefix of the topics created (PREFIX-000, PREFIX-001, ...).
    #[arg(long, default_value = "weir-scale")]
    topic_prefix: String,
    /// Partitions per topic, that is per CreateTopics request.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..=STEP_PARTITIONS_MAX))]
    step: i64,
    /// Stop once PREFIX-* topics hold this many partitions.
    #[arg(long, default_value_t = 100_000,
          value_parser = clap::value_parser!(i64).range(1..=TOTAL_PARTITIONS_MAX))]
    total: i64,
    /// Longest a step (or --wait) may take; also the CreateTopics timeout_ms
    /// and the socket timeout, so a slow broker is measured, not cut off.
    #[arg(long, default_value = "10m", value_parser = parse_timeout)]
    timeout: Duration,
    /// Create nothing; time until --total partitions are served (after a restart).
    #[arg(long)]
    wait: bool,
    /// Print one JSON object on stdout instead of text, and no progress bar.
    #[arg(long)]
    json: bool,
}

/// One CreateTopics step.
#[derive(Debug, Serialize)]
struct Step {
    topic: String,
    partitions: i64,
    /// PREFIX-* partitions once this step was ready.
    total_after: i64,
    /// From sending CreateTopics to its response.
    create_ms: f64,
    /// From sending CreateTopics until Metadata showed every partition led.
    ready_ms: f64,
}

/// What the run prints.
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    brokers: String,
    topic_prefix: String,
    /// PREFIX-* partitions found before the first step.
    partitions_before: i64,
    /// PREFIX-* partitions at the end.
    partitions_after: i64,
    steps: Vec<Step>,
    /// Median of the steps' `ready_ms`; null without steps.
    ready_ms_median: Option<f64>,
    /// With --wait: from the start of the run until every partition was served.
    wait_ms: Option<f64>,
}

/// Runs `weir bench partitions`.
pub fn run(args: &PartitionsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = scale::client_config(args.timeout);
    let connect_within = if args.wait {
        args.timeout
    } else {
        scale::CONNECT_TIMEOUT
    };
    let mut client = scale::connect_retrying(&args.brokers, &config, connect_within)?;
    let report = if args.wait {
        wait_ready(args, &mut client, started)?
    } else {
        create_steps(args, &mut client)?
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &report).context("cannot write the JSON report")?;
        writeln!(out)?;
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn create_steps(args: &PartitionsArgs, client: &mut Client) -> anyhow::Result<Report> {
    let found = prefix_topics(&client.metadata(None)?, &args.topic_prefix);
    let before = found.partitions;
    let bar = progress(args, before);
    let mut steps = Vec::new();
    let mut total = before;
    let mut index = found.next_index;
    while total < args.total {
        let partitions = args.step.min(args.total - total);
        let topic = format!("{}-{index:03}", args.topic_prefix);
        let step = create_one(args, client, &topic, partitions, total)?;
        total = step.total_after;
        bar.set_position(u64::try_from(total).unwrap_or(0));
        bar.set_message(format!("{topic}: {:.0} ms", step.ready_ms));
        bar.println(format!(
            "{topic}: {partitions} partitions ready in {:.0} ms (CreateTopics answered in {:.0} ms)",
            step.ready_ms, step.create_ms
        ));
        steps.push(step);
        index += 1;
    }
    bar.finish_and_clear();
    let ready_ms_median = scale::median(steps.iter().map(|s| s.ready_ms).collect());
    Ok(Report {
        mode: "partitions",
        brokers: args.brokers.clone(),
        topic_prefix: args.topic_prefix.clone(),
        partitions_before: before,
        partitions_after: total,
        steps,
        ready_ms_median,
        wait_ms: None,
    })
}

/// Creates `topic` with `partitions` partitions and waits until Metadata
/// shows each of them with a leader.
fn create_one(
    args: &PartitionsArgs,
    client: &mut Client,
    topic: &str,
    partitions: i64,
    total_before: i64,
) -> anyhow::Result<Step> {
    let count = i32::try_from(partitions).context("partition count")?;
    let timeout_ms = i32::try_from(args.timeout.as_millis()).unwrap_or(i32::MAX);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(kafka_protocol::messages::TopicName(str_bytes(topic)))
                .with_num_partitions(count)
                .with_replication_factor(-1),
        ]);
    let sent = Instant::now();
    // v5 is the newest whose request fields are all set here.
    let response = client
        .send_to_controller(&request, 5)
        .with_context(|| format!("CreateTopics of {topic} ({partitions} partitions)"))?;
    let create_ms = scale::ms(sent.elapsed());
    for created in &response.topics {
        weir_client::check_message(created.error_code, created.error_message.as_ref(), || {
            format!("cannot create topic {topic} with {partitions} partitions")
        })?;
    }
    let deadline = sent + args.timeout;
    loop {
        let metadata = client.metadata(Some(&[topic.to_owned()]))?;
        let led = prefix_topics(&metadata, topic).partitions;
        if led >= partitions {
            return Ok(Step {
                topic: topic.to_owned(),
                partitions,
                total_after: total_before + partitions,
                create_ms,
                ready_ms: scale::ms(sent.elapsed()),
            });
        }
        if Instant::now() >= deadline {
            return Err(ScaleError::NotReady {
                what: format!("topic {topic}"),
                ready: led,
                wanted: partitions,
                timeout: args.timeout,
            }
            .into());
        }
        std::thread::sleep(READY_POLL);
    }
}

fn wait_ready(
    args: &PartitionsArgs,
    client: &mut Client,
    started: Instant,
) -> anyhow::Result<Report> {
    let deadline = started + args.timeout;
    loop {
        // A broker still loading may answer with fewer topics; poll again.
        let found = prefix_topics(&client.metadata(None)?, &args.topic_prefix);
        if found.partitions >= args.total {
            return Ok(Report {
                mode: "partitions-wait",
                brokers: args.brokers.clone(),
                topic_prefix: args.topic_prefix.clone(),
                partitions_before: found.partitions,
                partitions_after: found.partitions,
                steps: Vec::new(),
                ready_ms_median: None,
                wait_ms: Some(scale::ms(started.elapsed())),
            });
        }
        if Instant::now() >= deadline {
            return Err(ScaleError::NotReady {
                what: format!("{}-* topics", args.topic_prefix),
                ready: found.partitions,
                wanted: args.total,
                timeout: args.timeout,
            }
            .into());
        }
        std::thread::sleep(READY_POLL);
    }
}

/// The led partitions of the topics named `prefix` or `prefix-*`, and the
/// index after the highest `prefix-NNN`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    partitions: i64,
    next_index: u64,
}

fn prefix_topics(metadata: &MetadataResponse, prefix: &str) -> Found {
    let mut found = Found::default();
    let dashed = format!("{prefix}-");
    for topic in &metadata.topics {
        let Some(name) = topic.name.as_ref().map(|n| n.0.as_str()) else {
            continue;
        };
        let suffix = name.strip_prefix(&dashed);
        if name != prefix && suffix.is_none() {
            continue;
        }
        if let Some(index) = suffix.and_then(|s| s.parse::<u64>().ok()) {
            found.next_index = found.next_index.max(index + 1);
        }
        if topic.error_code != 0 {
            continue;
        }
        let led = topic
            .partitions
            .iter()
            .filter(|p| p.error_code == 0 && p.leader_id.0 >= 0)
            .count();
        found.partitions += i64::try_from(led).unwrap_or(i64::MAX);
    }
    found
}

fn progress(args: &PartitionsArgs, done: i64) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total = u64::try_from(args.total).unwrap_or(0);
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "creating {bar:40} {human_pos}/{human_len} partitions, last {msg}, {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(u64::try_from(done).unwrap_or(0));
    bar
}

impl Report {
    fn text(&self) -> String {
        let mut text = format!(
            "weir bench {}: {}-* topics at {}\n",
            self.mode, self.topic_prefix, self.brokers
        );
        for step in &self.steps {
            text.push_str(&format!(
                "  {:<24} {:>7} partitions  ready {:>9.1} ms  (CreateTopics {:>9.1} ms)  total {}\n",
                step.topic, step.partitions, step.ready_ms, step.create_ms, step.total_after
            ));
        }
        if let Some(median) = self.ready_ms_median {
            text.push_str(&format!("  median step {median:.1} ms\n"));
        }
        if let Some(wait) = self.wait_ms {
            text.push_str(&format!(
                "  {} partitions served after {wait:.1} ms\n",
                self.partitions_after
            ));
        }
        text.push_str(&format!(
            "  partitions  {} before, {} after\n",
            self.partitions_before, self.partitions_after
        ));
        text
    }
}

fn parse_timeout(arg: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(arg).map_err(|err| err.to_string())?;
    if timeout.is_zero() || timeout > TIMEOUT_MAX {
        return Err(format!(
            "must be more than 0 and at most {}",
            humantime::format_duration(TIMEOUT_MAX)
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};

    use super::*;

    fn topic(name: &str, leaders: &[i32]) -> MetadataResponseTopic {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(name))))
            .with_partitions(
                leaders
                    .iter()
                    .map(|&leader| {
                        MetadataResponsePartition::default().with_leader_id(BrokerId(leader))
                    })
                    .collect(),
            )
    }

    #[test]
    fn only_led_partitions_of_prefixed_topics_count() {
        let metadata = MetadataResponse::default().with_topics(vec![
            topic("s-000", &[1, 1, 1]),
            topic("s-004", &[1, -1]),
            topic("s-x", &[1]),
            topic("sx-000", &[1, 1]),
            topic("other", &[1]),
        ]);
        let found = prefix_topics(&metadata, "s");
        assert_eq!(
            found,
            Found {
                partitions: 5,
                next_index: 5
            }
        );
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("2h").is_err());
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
    }
}
