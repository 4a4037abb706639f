//! `weir bench group-join`: how long a consumer group takes to settle, and
//! the group membership settings that `weir bench commit` shares.
//!
//! A run starts `--members` librdkafka consumers in a fresh group, subscribes
//! them one after the other, and measures from the last subscribe until the
//! members' own assignments cover every partition exactly once and evenly.
//! "Evenly" matters: the first member to join owns every partition on its
//! own for a while, which is a complete but not a settled assignment.
//! The settle time is taken from the rebalance callbacks themselves, so how
//! quickly this thread notices does not count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use serde::Serialize;

use super::client::{self, Diagnostics, Missing};
use super::{CommonArgs, PARTITIONS_MAX, WORKERS_MAX, parse_property};

/// The most runs `--runs` asks for; each one forms a fresh group.
const RUNS_MAX: i64 = 1000;
/// The longest one member's poll blocks, which bounds how late it notices
/// that the run is over. Rebalance events wake a poll at once.
const POLL_MS: u64 = 100;

pub(super) const GROUP_JOIN_EXAMPLES: &str = "\
Examples:
  weir bench group-join --members 10 --partitions 100 --protocol classic
  weir bench group-join --protocol classic --assignor range --runs 5 --json
  weir bench group-join --protocol consumer --members 10 --runs 5

Each run starts --members consumers in a new group on the topic (created with
--partitions if missing), subscribes them one after the other, and times from
the last subscribe until every partition is assigned to exactly one member and
every member owns its even share (partitions/members, rounded down or up), as
the members themselves see it. Runs are reported as min/median/max in ms.

The broker's group.initial.rebalance.delay.ms (3 s by default in Kafka) and the
heartbeat intervals (classic: -X heartbeat.interval.ms, 3 s by default;
KIP-848: the broker's group.consumer.heartbeat.interval.ms, 5 s by default)
bound what this can measure: a member learns of a rebalance by its heartbeat.

Exit status: 0 on success; 1 if a run did not settle within --timeout; 3 if
no broker answered within 10 s.";

/// The group protocol the members speak (`group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Protocol {
    /// JoinGroup/SyncGroup with client-side assignment.
    Classic,
    /// KIP-848: ConsumerGroupHeartbeat with server-side assignment.
    Consumer,
}

/// The partition assignor: client-side for the classic protocol
/// (`partition.assignment.strategy`), server-side for KIP-848
/// (`group.remote.assignor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Assignor {
    /// Contiguous ranges of partitions (classic or KIP-848).
    Range,
    /// Round-robin (classic only).
    Roundrobin,
    /// Incremental, sticky rebalancing (classic only).
    CooperativeSticky,
    /// Even, sticky spread decided by the broker (KIP-848 only).
    Uniform,
}

impl Assignor {
    fn as_config(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::Roundrobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
            Assignor::Uniform => "uniform",
        }
    }
}

/// The group settings `group-join` and `commit` share.
#[derive(Debug, Clone, Args)]
pub(super) struct MembershipArgs {
    /// Group protocol of the members: classic or consumer (KIP-848).
    #[arg(long, value_enum, default_value_t = Protocol::Classic)]
    pub(super) protocol: Protocol,
    /// Partition assignor. Classic: range, roundrobin or cooperative-sticky
    /// (the default). Consumer: range or uniform (default: the broker's).
    #[arg(long, value_enum)]
    pub(super) assignor: Option<Assignor>,
    /// How long the group may take to assign the partitions before the run
    /// fails.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(super) timeout: Duration,
}

impl MembershipArgs {
    /// The assignor in effect, `None` when the broker picks it.
    pub(super) fn assignor(&self) -> Option<Assignor> {
        match self.protocol {
            Protocol::Classic => Some(self.assignor.unwrap_or(Assignor::CooperativeSticky)),
            Protocol::Consumer => self.assignor,
        }
    }

    /// The librdkafka properties of a member of `group_id`.
    pub(super) fn config(&self, group_id: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut mode = vec![
            ("group.id", group_id.to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("auto.offset.reset", "latest".to_owned()),
        ];
        match (self.protocol, self.assignor()) {
            (Protocol::Classic, Some(Assignor::Uniform)) => {
                bail!("--assignor uniform needs --protocol consumer")
            }
            (Protocol::Consumer, Some(Assignor::Roundrobin | Assignor::CooperativeSticky)) => {
                bail!("--protocol consumer takes --assignor range or uniform")
            }
            (Protocol::Classic, assignor) => {
                mode.push(("group.protocol", "classic".to_owned()));
                if let Some(assignor) = assignor {
                    mode.push((
                        "partition.assignment.strategy",
                        assignor.as_config().to_owned(),
                    ));
                }
            }
            (Protocol::Consumer, assignor) => {
                mode.push(("group.protocol", "consumer".to_owned()));
                if let Some(assignor) = assignor {
                    mode.push(("group.remote.assignor", assignor.as_config().to_owned()));
                }
            }
        }
        Ok(mode)
    }
}

/// `weir bench group-join`.
#[derive(Debug, Clone, Args)]
pub struct GroupJoinArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic the members subscribe to.
    #[arg(long, default_value = "weir-bench-group")]
    topic: String,
    /// Partitions to create the topic with when it does not exist. An
    /// existing topic keeps its partitions, and all of them are assigned.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(i32).range(1..=PARTITIONS_MAX))]
    partitions: i32,
    /// Replication factor for a topic this run creates; -1 leaves it to the broker.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-1..=i64::from(i16::MAX)))]
    replication_factor: i32,
    /// Consumers in the group, each its own librdkafka client.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=WORKERS_MAX))]
    members: u32,
    #[command(flatten)]
    membership: MembershipArgs,
    /// Runs, each with a fresh group id.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=RUNS_MAX))]
    runs: u32,
    /// Raw librdkafka property, applied last (repeatable), e.g. -X heartbeat.interval.ms=500.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
    /// Print one JSON object on stdout instead of the text summary, and no progress.
    #[arg(long)]
    json: bool,
}

impl GroupJoinArgs {
    /// The options in the form the client set-up takes; this mode sends no
    /// records, so the record count and duration are unused.
    fn common(&self) -> CommonArgs {
        CommonArgs {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            count: 1,
            duration: None,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            property: self.property.clone(),
            json: self.json,
        }
    }
}

/// A member's callbacks: librdkafka's warnings go to stderr, and every
/// change of its assignment is timed and wakes whoever waits for the group.
#[derive(Debug)]
pub(super) struct MemberContext {
    diagnostics: Diagnostics,
    last_change: Mutex<Option<Instant>>,
    /// Capacity one: a wake-up already queued covers later changes too, so a
    /// full channel is not an error and the callback never blocks.
    changed: SyncSender<()>,
}

impl MemberContext {
    pub(super) fn new(common: &CommonArgs, changed: SyncSender<()>) -> MemberContext {
        MemberContext {
            diagnostics: Diagnostics::new(common),
            last_change: Mutex::new(None),
            changed,
        }
    }

    pub(super) fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    fn last_change(&self) -> Option<Instant> {
        *self
            .last_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.diagnostics.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.diagnostics
            .set_last_error(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(err) = rebalance {
            self.diagnostics.set_last_error(err.to_string());
        }
        *self
            .last_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let _ = self.changed.try_send(());
    }
}

/// A group member of the bench.
pub(super) type Member = BaseConsumer<MemberContext>;

/// A channel that member contexts use to say their assignment changed.
pub(super) fn change_channel() -> (SyncSender<()>, Receiver<()>) {
    mpsc::sync_channel(1)
}

/// Creates a member of `group_id`; it joins once it subscribes.
pub(super) fn create_member(
    common: &CommonArgs,
    membership: &MembershipArgs,
    group_id: &str,
    changed: SyncSender<()>,
) -> anyhow::Result<Member> {
    let mode = membership.config(group_id)?;
    client::config(common, &mode)
        .create_with_context(MemberContext::new(common, changed))
        .context("cannot create a group member (check the -X properties)")
}

/// A group id no earlier run used, so that every run forms a new group.
pub(super) fn fresh_group_id(mode: &str, run: u32) -> String {
    let since_epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "weir-bench-{mode}-{}-{since_epoch_ms}-{run}",
        std::process::id()
    )
}

/// Whether the members' assignments cover each of the topic's `partitions`
/// exactly once, with every member owning its even share.
pub(super) fn settled(members: &[Member], topic: &str, partitions: i32) -> anyhow::Result<bool> {
    let mut owners = vec![0_u32; usize::try_from(partitions).unwrap_or(0)];
    let member_count = i32::try_from(members.len()).unwrap_or(i32::MAX).max(1);
    let share_min = partitions / member_count;
    let share_max = share_min + i32::from(partitions % member_count != 0);
    for member in members {
        let assignment = member
            .assignment()
            .context("cannot read a member's assignment")?;
        let owned = assignment.elements_for_topic(topic);
        let owned_count = i32::try_from(owned.len()).unwrap_or(i32::MAX);
        if owned_count < share_min || owned_count > share_max {
            return Ok(false);
        }
        for element in owned {
            let slot = usize::try_from(element.partition())
                .ok()
                .and_then(|partition| owners.get_mut(partition));
            match slot {
                Some(slot) => *slot += 1,
                None => bail!(
                    "a member was assigned partition {} of {topic}, which has {partitions}",
                    element.partition()
                ),
            }
        }
    }
    Ok(owners.iter().all(|&owners| owners == 1))
}

/// Waits until [`settled`] holds or `deadline` passes, waking on every
/// assignment change, and returns when the last member's assignment changed.
pub(super) fn wait_settled(
    members: &[Member],
    topic: &str,
    partitions: i32,
    changed: &Receiver<()>,
    deadline: Instant,
) -> anyhow::Result<Option<Instant>> {
    loop {
        if settled(members, topic, partitions)? {
            let last = members
                .iter()
                .filter_map(|member| member.context().last_change())
                .max();
            return Ok(Some(last.unwrap_or_else(Instant::now)));
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        // A timeout only means nothing changed; the deadline check above
        // decides when to stop. A disconnect cannot happen while `members`
        // hold the senders.
        let _ = changed.recv_timeout(left);
    }
}

/// Keeps a member's librdkafka queue served (rebalance callbacks run inside
/// poll) until `stop`.
pub(super) fn serve(member: &Member, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(Err(err)) = member.poll(Duration::from_millis(POLL_MS)) {
            member.context().diagnostics.set_last_error(err.to_string());
        }
    }
}

/// Closes the members in parallel: each leaves the group, and the others'
/// rebalances would make closing one after the other slow.
fn close_all(members: Vec<Member>) {
    std::thread::scope(|scope| {
        for member in members {
            scope.spawn(move || drop(member));
        }
    });
}

/// One run: the time from the last subscribe until the group settled.
fn run_once(
    args: &GroupJoinArgs,
    common: &CommonArgs,
    run: u32,
    partitions: i32,
) -> anyhow::Result<Duration> {
    let group_id = fresh_group_id("join", run);
    let (changed, wake) = change_channel();
    let members = (0..args.members)
        .map(|_| create_member(common, &args.membership, &group_id, changed.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(changed);
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        for member in &members {
            let stop = &stop;
            scope.spawn(move || serve(member, stop));
        }
        let result = subscribe_and_wait(args, &members, partitions, &wake);
        stop.store(true, Ordering::Relaxed);
        result
    });
    let last_error = members
        .iter()
        .rev()
        .find_map(|member| member.context().diagnostics.last_error());
    close_all(members);
    match result {
        Ok(Some(took)) => Ok(took),
        Ok(None) => bail!(
            "group {group_id} did not assign all {partitions} partitions evenly over {} members within {} (last client error: {})",
            args.members,
            humantime::format_duration(args.membership.timeout),
            last_error.as_deref().unwrap_or("none")
        ),
        Err(err) => Err(err),
    }
}

fn subscribe_and_wait(
    args: &GroupJoinArgs,
    members: &[Member],
    partitions: i32,
    wake: &Receiver<()>,
) -> anyhow::Result<Option<Duration>> {
    for member in members {
        member
            .subscribe(&[&args.topic])
            .with_context(|| format!("cannot subscribe to {}", args.topic))?;
    }
    let subscribed = Instant::now();
    let deadline = subscribed + args.membership.timeout;
    let settled_at = wait_settled(members, &args.topic, partitions, wake, deadline)?;
    Ok(settled_at.map(|at| at.saturating_duration_since(subscribed)))
}

/// Min, median and max of the runs, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct SpreadMs {
    min: f64,
    median: f64,
    max: f64,
}

impl SpreadMs {
    fn of(runs_ms: &[f64]) -> SpreadMs {
        let mut sorted = runs_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            at(middle)
        } else {
            (at(middle.saturating_sub(1)) + at(middle)) / 2.0
        };
        SpreadMs {
            min: at(0),
            median,
            max: at(sorted.len().saturating_sub(1)),
        }
    }
}

/// The outcome of `group-join`. Its JSON field names are a stable
/// interface, like those of the other modes.
#[derive(Debug, Clone, Serialize)]
struct JoinReport {
    mode: &'static str,
    protocol: Protocol,
    /// `null` when the broker picks it (KIP-848 without --assignor).
    assignor: Option<Assignor>,
    members: u32,
    /// Partitions the topic has.
    partitions: i32,
    runs: u32,
    /// From the last member's subscribe until the group settled.
    join_ms: SpreadMs,
    /// Each run's time, in run order.
    runs_ms: Vec<f64>,
    brokers: String,
    topic: String,
    /// The `-X` librdkafka properties.
    properties: std::collections::BTreeMap<String, String>,
}

impl JoinReport {
    fn text(&self) -> String {
        let assignor = self
            .assignor
            .map_or("broker's default assignor", Assignor::as_config);
        let protocol = match self.protocol {
            Protocol::Classic => "classic",
            Protocol::Consumer => "consumer (KIP-848)",
        };
        let j = self.join_ms;
        format!(
            "weir bench group-join: {} members, topic {} ({} partitions) at {}\n  \
             protocol    {protocol}, {assignor}\n  \
             runs        {}\n  \
             join        min {:.1} ms, median {:.1} ms, max {:.1} ms \
             (last subscribe to every partition assigned once, evenly)\n",
            self.members,
            self.topic,
            self.partitions,
            self.brokers,
            self.runs,
            j.min,
            j.median,
            j.max
        )
    }
}

/// Runs `weir bench group-join` and prints its report.
pub(super) fn run(args: &GroupJoinArgs) -> anyhow::Result<()> {
    let common = args.common();
    // Fails before connecting on an assignor the protocol does not take.
    args.membership.config("check")?;
    let topic = client::prepare_topic(&common, Missing::Create)?;
    let mut runs_ms = Vec::new();
    for run in 1..=args.runs {
        let took = run_once(args, &common, run, topic.partitions)?;
        let took_ms = took.as_secs_f64() * 1000.0;
        if !args.json {
            eprintln!("run {run}/{}: {took_ms:.1} ms", args.runs);
        }
        runs_ms.push(took_ms);
    }
    let report = JoinReport {
        mode: "group-join",
        protocol: args.membership.protocol,
        assignor: args.membership.assignor(),
        members: args.members,
        partitions: topic.partitions,
        runs: args.runs,
        join_ms: SpreadMs::of(&runs_ms),
        runs_ms,
        brokers: args.brokers.clone(),
        topic: args.topic.clone(),
        properties: args.property.iter().cloned().collect(),
    };
    print_report(args.json, &report, &report.text())
}

/// Prints a report on stdout: one JSON line with `--json`, else `text`.
pub(super) fn print_report(json: bool, report: &impl Serialize, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report).context("cannot write the JSON report")?;
        writeln!(out)?;
    } else {
        write!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_reports_the_middle_run_as_median() {
        let spread = SpreadMs::of(&[30.0, 10.0, 20.0]);
        assert_eq!((spread.min, spread.median, spread.max), (10.0, 20.0, 30.0));
        let spread = SpreadMs::of(&[40.0, 10.0, 20.0, 30.0]);
        assert_eq!((spread.min, spread.median, spread.max), (10.0, 25.0, 40.0));
    }

    #[test]
    fn assignors_must_suit_the_protocol() {
        let membership = |protocol, assignor| MembershipArgs {
            protocol,
            assignor,
            timeout: Duration::from_secs(1),
        };
        assert!(
            membership(Protocol::Classic, Some(Assignor::Uniform))
                .config("g")
                .is_err()
        );
        assert!(
            membership(Protocol::Consumer, Some(Assignor::CooperativeSticky))
                .config("g")
                .is_err()
        );
        let classic = membership(Protocol::Classic, None).config("g");
        assert!(classic.is_ok_and(|mode| mode.contains(&(
            "partition.assignment.strategy",
            "cooperative-sticky".to_owned()
        ))));
        let consumer = membership(Protocol::Consumer, None).config("g");
        assert!(consumer.is_ok_and(|mode| {
            mode.contains(&("group.protocol", "consumer".to_owned()))
                && !mode.iter().any(|(key, _)| key.starts_with("partition."))
        }));
    }
}
