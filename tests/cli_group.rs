//! `weir consume --group` and `weir group` against a real `weir serve`: a
//! group's committed offsets and lag, resetting them (each target, the
//! dry run, the refusal while members are active), and deleting the group.
//! Group states are awaited by polling `weir group describe` against a
//! deadline.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use common::Broker;

/// How long a consumer may take to join its group and get partitions.
const GROUP_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker starts a group's first rebalance at once, as tests want.
const BROKER_ARGS: &[&str] = &["--set", "group.initial.rebalance.delay.ms=0"];

use common::cli::{command, weir, weir_ok};

/// The cells of the offsets table line for `topic`/`partition`.
fn offsets_row(describe: &str, topic: &str, partition: i32) -> Option<Vec<String>> {
    describe.lines().find_map(|line| {
        let cells: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        (cells.first().map(String::as_str) == Some(topic)
            && cells.get(1) == Some(&partition.to_string()))
        .then_some(cells)
    })
}

/// COMMITTED, LOG-END and LAG of a partition, as printed.
fn committed_end_lag(describe: &str, topic: &str, partition: i32) -> Vec<String> {
    offsets_row(describe, topic, partition)
        .and_then(|row| row.get(2..5).map(<[String]>::to_vec))
        .unwrap_or_default()
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|cell| (*cell).to_owned()).collect()
}

/// A `weir consume --group --follow` child, stopped with SIGTERM as Ctrl-C
/// would, and killed if the test ends first.
struct Follower(Child);

impl Follower {
    fn stop(mut self) -> anyhow::Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .context("cannot run kill(1)")?;
        ensure!(sent.success(), "kill -TERM failed");
        let status = self.0.wait().context("cannot wait for the consumer")?;
        ensure!(status.success(), "the consumer exited with {status}");
        Ok(())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_group_commits_what_it_printed_and_reset_offsets_rewinds_it() -> anyhow::Result<()> {
    let broker = Broker::start(BROKER_ARGS)?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "2"], b"")?;
    weir_ok(
        &broker,
        &["produce", "t", "--partition", "0"],
        b"a\nb\nc\nd\n",
    )?;
    weir_ok(&broker, &["produce", "t", "--partition", "1"], b"e\n")?;
    let first_ms = now_ms()?;
    // The next records must be stamped after `first_ms`.
    common::wait_until(Duration::from_secs(5), "the clock to tick", || {
        Ok(now_ms()? > first_ms)
    })?;
    weir_ok(&broker, &["produce", "t", "--partition", "1"], b"f\n")?;

    let mut consumed: Vec<String> = weir_ok(
        &broker,
        &["consume", "t", "--group", "g", "--from-beginning"],
        b"",
    )?
    .lines()
    .map(str::to_owned)
    .collect();
    consumed.sort();
    assert_eq!(consumed, ["a", "b", "c", "d", "e", "f"]);

    let listed = weir_ok(&broker, &["group", "list"], b"")?;
    assert!(
        listed
            .lines()
            .any(|line| line.split_whitespace().next() == Some("g")),
        "{listed}"
    );
    let described = weir_ok(&broker, &["group", "describe", "g"], b"")?;
    assert!(described.contains("members: 0"), "{described}");
    assert_eq!(
        committed_end_lag(&described, "t", 0),
        strings(&["4", "4", "0"]),
        "{described}"
    );
    assert_eq!(
        committed_end_lag(&described, "t", 1),
        strings(&["2", "2", "0"]),
        "{described}"
    );

    // A dry run shows the plan and changes nothing.
    let plan = weir_ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--dry-run",
        ],
        b"",
    )?;
    assert_eq!(
        offsets_row(&plan, "t", 0).and_then(|r| r.get(2..).map(<[String]>::to_vec)),
        Some(strings(&["4", "0"])),
        "{plan}"
    );
    assert!(plan.contains("dry run"), "{plan}");
    let described = weir_ok(&broker, &["group", "describe", "g"], b"")?;
    assert_eq!(
        committed_end_lag(&described, "t", 0),
        strings(&["4", "4", "0"])
    );

    weir_ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--shift-by",
            "-1",
        ],
        b"",
    )?;
    let described = weir_ok(&broker, &["group", "describe", "g"], b"")?;
    assert_eq!(
        committed_end_lag(&described, "t", 0),
        strings(&["3", "4", "1"]),
        "{described}"
    );
    assert_eq!(
        committed_end_lag(&described, "t", 1),
        strings(&["1", "2", "1"]),
        "{described}"
    );
    let mut resumed: Vec<String> = weir_ok(&broker, &["consume", "t", "--group", "g"], b"")?
        .lines()
        .map(str::to_owned)
        .collect();
    resumed.sort();
    assert_eq!(resumed, ["d", "f"]);

    for (target, expected) in [
        (&["--to-offset", "2"][..], ["2", "2"]),
        (&["--to-latest"], ["4", "2"]),
        (&["--to-earliest"], ["0", "0"]),
    ] {
        let mut args = vec!["group", "reset-offsets", "g", "--topic", "t"];
        args.extend_from_slice(target);
        weir_ok(&broker, &args, b"")?;
        let described = weir_ok(&broker, &["group", "describe", "g"], b"")?;
        for (partition, committed) in expected.into_iter().enumerate() {
            let row = committed_end_lag(&described, "t", partition as i32);
            assert_eq!(
                row.first().map(String::as_str),
                Some(committed),
                "{target:?}: {described}"
            );
        }
    }

    // Records stamped at or after the time: none in partition 0 (its end),
    // the second record of partition 1.
    let after = humantime::format_rfc3339_millis(
        UNIX_EPOCH + Duration::from_millis(u64::try_from(first_ms)? + 1),
    )
    .to_string();
    weir_ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-datetime",
            &after,
        ],
        b"",
    )?;
    let again = weir_ok(&broker, &["consume", "t", "--group", "g"], b"")?;
    assert_eq!(again, "f\n");

    let deleted = weir_ok(&broker, &["group", "delete", "g"], b"")?;
    assert_eq!(deleted.trim(), "deleted group g");
    let missing = weir(&broker, &["group", "describe", "g"], b"")?;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("group g does not exist"));
    Ok(())
}

#[test]
fn reset_offsets_refuses_while_the_group_has_members() -> anyhow::Result<()> {
    let broker = Broker::start(BROKER_ARGS)?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    let follower = Follower(
        command(&broker, &["consume", "t", "--group", "busy", "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the consumer")?,
    );
    common::wait_until(GROUP_JOIN_TIMEOUT, "the consumer to join", || {
        let described = weir(&broker, &["group", "describe", "busy"], b"")?;
        let text = String::from_utf8_lossy(&described.stdout);
        Ok(text.contains("state: Stable") && text.contains("members: 1"))
    })?;

    let refused = weir(
        &broker,
        &[
            "group",
            "reset-offsets",
            "busy",
            "--topic",
            "t",
            "--to-earliest",
        ],
        b"",
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("group busy has 1 active members"),
        "{stderr}"
    );
    let refused = weir(&broker, &["group", "delete", "busy"], b"")?;
    assert_eq!(refused.status.code(), Some(1));

    // Ctrl-C (SIGTERM here) makes the consumer leave at once, not after its
    // session timeout, so the reset works right after.
    follower.stop()?;
    weir_ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "busy",
            "--topic",
            "t",
            "--to-earliest",
        ],
        b"",
    )?;
    Ok(())
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

/// `weir group ARGS --json`, parsed.
fn group_json(broker: &Broker, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut argv = vec!["group"];
    argv.extend_from_slice(args);
    argv.push("--json");
    let out = weir_ok(broker, &argv, b"")?;
    serde_json::from_str(&out).with_context(|| format!("{argv:?} printed no JSON document: {out}"))
}

#[test]
fn a_kip_848_groups_members_show_their_assignment_and_host() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use serde_json::json;

    let broker = Broker::start(&[
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        "group.consumer.heartbeat.interval.ms=200",
    ])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "2"], b"")?;
    let mut config = common::consumer_config(&broker.bootstrap());
    config
        .set("group.id", "g848")
        .set("group.protocol", "consumer")
        .set("client.id", "member-one");
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&["t"])?;

    let mut described = json!(null);
    common::wait_until(
        GROUP_JOIN_TIMEOUT,
        "the member to own both partitions",
        || {
            // Polling serves the consumer's rebalance; heartbeats run in the background.
            let _ = consumer.poll(Duration::from_millis(100));
            // The group does not exist until the member's first heartbeat.
            let output = weir(&broker, &["group", "describe", "g848", "--json"], b"")?;
            if !output.status.success() {
                return Ok(false);
            }
            described = serde_json::from_slice(&output.stdout)?;
            Ok(described["members"][0]["assignment"]
                .as_array()
                .map(Vec::len)
                == Some(2))
        },
    )?;
    assert_eq!(described["group"], "g848");
    assert_eq!(described["group_protocol"], "consumer", "{described}");
    assert_eq!(described["state"], "Stable", "{described}");
    let member = &described["members"][0];
    assert_eq!(member["client_id"], "member-one", "{described}");
    assert!(member["host"].is_string(), "{described}");
    assert_eq!(
        member["assignment"],
        json!([{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}])
    );
    let member_id = member["member_id"]
        .as_str()
        .context("member_id")?
        .to_owned();
    assert_eq!(
        described["partitions"][1]["member_id"], member_id,
        "{described}"
    );

    // The text table: HOST column, and the assignment instead of `-`.
    let text = weir_ok(&broker, &["group", "describe", "g848"], b"")?;
    assert!(text.contains("group protocol: consumer"), "{text}");
    let header = text
        .lines()
        .find(|line| line.starts_with("MEMBER"))
        .with_context(|| format!("no member table in\n{text}"))?;
    assert!(
        header
            .split_whitespace()
            .eq(["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"]),
        "{text}"
    );
    let row = text
        .lines()
        .find(|line| line.starts_with(&member_id))
        .with_context(|| format!("no row for {member_id} in\n{text}"))?;
    assert_eq!(row.split_whitespace().last(), Some("t/0,t/1"), "{text}");
    Ok(())
}

#[test]
fn group_subcommands_print_json_with_the_documented_fields() -> anyhow::Result<()> {
    use serde_json::json;

    let broker = Broker::start(BROKER_ARGS)?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    weir_ok(&broker, &["produce", "t"], b"a\nb\nc\n")?;
    weir_ok(
        &broker,
        &["consume", "t", "--group", "g", "--from-beginning"],
        b"",
    )?;

    let listed = group_json(&broker, &["list"])?;
    let listed_g = listed["groups"]
        .as_array()
        .and_then(|groups| groups.iter().find(|g| g["group"] == "g"))
        .with_context(|| format!("no group g in {listed}"))?;
    assert_eq!(listed_g["state"], "Empty", "{listed}");
    assert!(listed_g.get("protocol_type").is_some(), "{listed}");
    let described = group_json(&broker, &["describe", "g"])?;
    assert_eq!(described["group"], "g");
    assert_eq!(described["state"], "Empty");
    assert_eq!(described["group_protocol"], "classic");
    assert_eq!(described["members"], json!([]));
    assert_eq!(
        described["partitions"],
        json!([{"topic": "t", "partition": 0, "committed_offset": 3, "log_end_offset": 3,
                "lag": 0, "member_id": null}])
    );

    let plan = group_json(
        &broker,
        &[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-offset",
            "1",
            "--dry-run",
        ],
    )?;
    assert_eq!(
        plan,
        json!({"group": "g", "dry_run": true, "committed": false,
               "plan": [{"topic": "t", "partition": 0, "current_offset": 3, "new_offset": 1}]})
    );

    // A classic member with an assignment, while it runs.
    let follower = Follower(
        command(&broker, &["consume", "t", "--group", "g", "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the consumer")?,
    );
    let mut described = json!(null);
    common::wait_until(
        GROUP_JOIN_TIMEOUT,
        "the classic member's assignment",
        || {
            described = group_json(&broker, &["describe", "g"])?;
            Ok(described["state"] == "Stable"
                && described["members"][0]["assignment"] == json!([{"topic": "t", "partition": 0}]))
        },
    )?;
    assert_eq!(described["protocol_type"], "consumer", "{described}");
    assert!(described["members"][0]["host"].is_string(), "{described}");
    follower.stop()?;

    assert_eq!(
        group_json(&broker, &["delete", "g"])?,
        json!({"group": "g", "deleted": true})
    );
    Ok(())
}
