//! `weir bench commit`: offset commit throughput and latency of one group
//! member that owns every partition of the topic.
//!
//! Each commit is one OffsetCommit request carrying a new offset for every
//! assigned partition, so the coordinator appends every commit to
//! `__consumer_offsets`. Commits are synchronous and timed around the call.
//! There is no asynchronous mode: rdkafka 0.39 never runs the commit
//! callback of a manual async commit (fede1024/rust-rdkafka#856), so such
//! commits could be neither counted nor timed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::CommonArgs;
use super::client::{self, Missing};
use super::group::{self, Assignor, Member, MembershipArgs, Protocol};
use super::report::{LatencyMs, latency_histogram};

pub(super) const COMMIT_EXAMPLES: &str = "\
Examples:
  weir bench commit --count 100000 --partitions 10
  weir bench commit --duration 30s --partitions 1 --json
  weir bench commit --count 10000 --protocol consumer

One consumer joins a new group, subscribes to the topic (created with
--partitions if missing), waits until it owns every partition, then commits as
fast as it can: each commit is one synchronous OffsetCommit request with a
new offset for every partition, timed around the call. The run ends at --count
commits or after --duration.

Exit status: 0 on success; 1 if a commit failed or the group did not form
within --timeout; 3 if no broker answered within 10 s.";

/// `weir bench commit`.
#[derive(Debug, Clone, Args)]
pub struct CommitArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    membership: MembershipArgs,
}

/// Commits with a new offset for every partition each time, and keeps the
/// tally.
struct Committer<'a> {
    member: &'a Member,
    offsets: TopicPartitionList,
    histogram: Histogram<u64>,
    /// Commits answered, successfully or not.
    completed: u64,
    errors: u64,
    last_error: Option<String>,
    last_completed: Option<Instant>,
}

impl Committer<'_> {
    /// Commit number `n`: every partition at offset `n`, so each commit
    /// changes what is stored.
    fn commit(&mut self, n: u64) -> anyhow::Result<()> {
        let offset = i64::try_from(n).context("commit number")?;
        self.offsets
            .set_all_offsets(Offset::Offset(offset))
            .context("cannot set the offsets to commit")?;
        let sent = Instant::now();
        let result = self.member.commit(&self.offsets, CommitMode::Sync);
        let done = Instant::now();
        self.completed += 1;
        self.last_completed = Some(done);
        match result {
            Ok(()) => {
                let latency_us = u64::try_from(done.saturating_duration_since(sent).as_micros())
                    .unwrap_or(u64::MAX);
                // The histogram counts values past its top at its top.
                self.histogram.saturating_record(latency_us.max(1));
            }
            Err(err) => {
                self.errors += 1;
                self.last_error = Some(err.to_string());
            }
        }
        // A member that is never polled is expelled after
        // max.poll.interval.ms, and its queued events would pile up.
        if let Some(Err(err)) = self.member.poll(Duration::ZERO) {
            self.member
                .context()
                .diagnostics()
                .set_last_error(err.to_string());
        }
        Ok(())
    }
}

/// The outcome of `commit`. Its JSON field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
struct CommitReport {
    mode: &'static str,
    /// Commits answered (each one request covering every partition).
    commits: u64,
    /// Partitions in each commit.
    partitions: i32,
    elapsed_s: f64,
    commits_per_sec: f64,
    /// Partition offsets committed per second (commits × partitions).
    offsets_per_sec: f64,
    latency_ms: Option<LatencyMs>,
    /// The same percentiles for the text summary.
    #[serde(skip)]
    latency_text: Option<String>,
    errors: u64,
    protocol: Protocol,
    assignor: Option<Assignor>,
    brokers: String,
    topic: String,
    /// The `-X` librdkafka properties.
    properties: BTreeMap<String, String>,
}

impl CommitReport {
    fn text(&self) -> String {
        let mut text = format!(
            "weir bench commit: topic {} ({} partitions per commit) at {}\n",
            self.topic, self.partitions, self.brokers
        );
        text.push_str(&format!("  commits     {}\n", self.commits));
        text.push_str(&format!("  elapsed     {:.3} s\n", self.elapsed_s));
        text.push_str(&format!(
            "  throughput  {:.0} commits/s, {:.0} offsets/s\n",
            self.commits_per_sec, self.offsets_per_sec
        ));
        if let Some(latency) = &self.latency_text {
            text.push_str(&format!(
                "  latency     {latency} (sync commit, around the call)\n"
            ));
        }
        text.push_str(&format!("  errors      {}\n", self.errors));
        text
    }
}

/// p50, p99, p99.9 and max in milliseconds, `None` when nothing was recorded.
fn latency_text(histogram: &Histogram<u64>) -> Option<String> {
    if histogram.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(format!(
        "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max())
    ))
}

/// Waits until `member` owns every partition of the topic.
fn join(
    args: &CommitArgs,
    member: &Member,
    partitions: i32,
    wake: &Receiver<()>,
) -> anyhow::Result<()> {
    member
        .subscribe(&[&args.common.topic])
        .with_context(|| format!("cannot subscribe to {}", args.common.topic))?;
    let deadline = Instant::now() + args.membership.timeout;
    let members = std::slice::from_ref(member);
    let stop = AtomicBool::new(false);
    let settled = std::thread::scope(|scope| {
        scope.spawn(|| group::serve(member, &stop));
        let settled = group::wait_settled(members, &args.common.topic, partitions, wake, deadline);
        stop.store(true, Ordering::Relaxed);
        settled
    })?;
    if settled.is_none() {
        let detail = member.context().diagnostics().last_error();
        bail!(
            "the group did not assign all {partitions} partitions within {} (last client error: {})",
            humantime::format_duration(args.membership.timeout),
            detail.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// Runs `weir bench commit` and prints its report. Fails after printing
/// when any commit failed.
pub(super) fn run(args: &CommitArgs) -> anyhow::Result<()> {
    let common = &args.common;
    args.membership.config("check")?;
    let topic = client::prepare_topic(common, Missing::Create)?;
    let group_id = group::fresh_group_id("commit", 1);
    let (changed, wake) = group::change_channel();
    let member = group::create_member(common, &args.membership, &group_id, changed)?;
    join(args, &member, topic.partitions, &wake)?;
    let offsets = member.assignment().context("cannot read the assignment")?;
    let mut committer = Committer {
        member: &member,
        offsets,
        histogram: latency_histogram()?,
        completed: 0,
        errors: 0,
        last_error: None,
        last_completed: None,
    };
    if !common.json {
        eprintln!(
            "group {group_id} owns {} partitions; committing",
            topic.partitions
        );
    }
    let deadline = common.duration.map(|d| Instant::now() + d);
    let begin = Instant::now();
    for n in 1..=common.count {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        committer.commit(n)?;
    }
    let elapsed_s = committer.last_completed.map_or(0.0, |last| {
        last.saturating_duration_since(begin).as_secs_f64()
    });
    let commits = committer.completed.saturating_sub(committer.errors);
    let partitions = committer.offsets.count();
    let per_sec = |n: f64| if elapsed_s > 0.0 { n / elapsed_s } else { 0.0 };
    let errors = committer.errors;
    let report = CommitReport {
        mode: "commit",
        commits,
        partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
        elapsed_s,
        commits_per_sec: per_sec(commits as f64),
        offsets_per_sec: per_sec(commits as f64 * partitions as f64),
        latency_ms: LatencyMs::from_histogram(&committer.histogram),
        latency_text: latency_text(&committer.histogram),
        errors,
        protocol: args.membership.protocol,
        assignor: args.membership.assignor(),
        brokers: common.brokers.clone(),
        topic: common.topic.clone(),
        properties: common.property.iter().cloned().collect(),
    };
    group::print_report(common.json, &report, &report.text())?;
    if errors > 0 {
        bail!(
            "{errors} commits failed (last error: {})",
            committer.last_error.as_deref().unwrap_or("no detail")
        );
    }
    Ok(())
}
