//! What every `weir` client command shares, as a script relies on it: the
//! exit codes (3 when no broker answers, within a bounded time; 2 on a usage
//! error), `--brokers` in each place it may be written and `WEIR_BROKERS`,
//! `--help` with examples everywhere, and `weir cluster status`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::Broker;

/// A client command must give up on an unreachable broker within about
/// 10 s; this allows for a slow CI machine.
const UNREACHABLE_EXIT_S_MAX: u64 = 15;

/// Every client subcommand, with the arguments it needs to parse.
const COMMANDS: &[&[&str]] = &[
    &["topic", "create", "t"],
    &["topic", "list"],
    &["topic", "describe", "t"],
    &["topic", "delete", "t"],
    &["topic", "alter-config", "t", "--config", "retention.ms=1"],
    &["topic", "add-partitions", "t", "--total", "2"],
    &["produce", "t"],
    &["consume", "t"],
    &["cluster", "status"],
    &["cluster", "elect-leaders"],
    &["cluster", "unregister", "--id", "4"],
    &["cluster", "add-controller", "--controller-id", "4"],
    &["cluster", "remove-controller", "--controller-id", "4"],
    &["group", "list"],
    &["group", "describe", "g"],
    &[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "t",
        "--to-earliest",
    ],
    &["group", "delete", "g"],
    &["txn", "list"],
    &["txn", "describe", "tx"],
    &[
        "txn",
        "abort",
        "--topic",
        "t",
        "--partition",
        "0",
        "--start-offset",
        "5",
    ],
];

fn weir(args: &[&str], brokers_env: Option<&str>) -> anyhow::Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.args(args).stdin(Stdio::null());
    match brokers_env {
        Some(brokers) => command.env("WEIR_BROKERS", brokers),
        None => command.env_remove("WEIR_BROKERS"),
    };
    command.output().context("cannot run weir")
}

#[test]
fn every_command_exits_3_quickly_when_no_broker_answers() -> anyhow::Result<()> {
    // A port that was free a moment ago: connections to it are refused.
    let port = common::reserve_port()?;
    let brokers = format!("127.0.0.1:{port}");
    for args in COMMANDS {
        let started = Instant::now();
        let output = weir(args, Some(&brokers))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach any broker at {brokers}")),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(UNREACHABLE_EXIT_S_MAX),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

#[test]
fn every_command_has_help_with_examples_and_the_top_level_lists_exit_codes() -> anyhow::Result<()> {
    for args in COMMANDS {
        let name: Vec<&str> = args
            .iter()
            .take_while(|a| !a.starts_with('-'))
            .copied()
            .collect();
        // The subcommand's own words, without its positional arguments.
        let words = if matches!(name.first(), Some(&"produce" | &"consume")) {
            &name[..1]
        } else {
            &name[..2]
        };
        let mut argv = words.to_vec();
        argv.push("--help");
        let output = weir(&argv, None)?;
        let help = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{argv:?}");
        assert!(help.contains("Examples:"), "{argv:?}:\n{help}");
        assert!(help.contains("--brokers"), "{argv:?}:\n{help}");
    }
    let output = weir(&["--help"], None)?;
    let help = String::from_utf8_lossy(&output.stdout);
    for line in [
        "0  success",
        "1  an operation failed",
        "2  usage error",
        "3  broker unreachable",
    ] {
        assert!(help.contains(line), "{help}");
    }
    Ok(())
}

#[test]
fn usage_errors_exit_2() -> anyhow::Result<()> {
    for args in [
        &["topic", "create"][..],
        &["topic", "create", "t", "--partitions", "0"],
        &["topic", "create", "t", "--config", "novalue"],
        &["topic", "add-partitions", "t"],
        &["produce", "t", "--delay", "30x"],
        &["produce", "t", "--acks", "2"],
        &["produce", "t", "--compression", "brotli"],
        &["consume", "t", "--format", "xml"],
        &["consume", "t", "--from-datetime", "yesterday"],
        &["consume", "t", "--from-beginning", "--offset", "3"],
        &["consume", "t", "--group", "g", "--offset", "3"],
        &["consume", "t", "--isolation", "committed"],
        &["txn", "describe"],
        &["txn", "abort", "--topic", "t", "--partition", "0"],
        &[
            "txn",
            "abort",
            "--topic",
            "t",
            "--partition",
            "0",
            "--producer-id",
            "4",
        ],
        &[
            "txn",
            "abort",
            "--topic",
            "t",
            "--partition",
            "0",
            "--start-offset",
            "1",
            "--producer-epoch",
            "1",
        ],
        &["group", "reset-offsets", "g", "--topic", "t"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
        ],
        &["cluster", "status", "--bogus"],
        &["cluster", "add-controller"],
        &[
            "cluster",
            "remove-controller",
            "--controller-id",
            "3",
            "--controller-directory-id",
            "not-a-directory-id",
        ],
        // Found after parsing, by the command itself: still usage errors.
        &["produce", "t", "--acks", "0", "--idempotent"],
        &["produce", "t", "--acks", "1", "--idempotent"],
        &["produce", "t", "--key-separator", ""],
        &[
            "consume",
            "t",
            "--from-datetime",
            "2026-11-24T08:00:00+2:00",
        ],
    ] {
        let output = weir(args, Some("127.0.0.1:1"))?;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[test]
fn cluster_status_names_brokers_controller_and_partition_states() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let created = weir(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--brokers",
            &bootstrap,
        ],
        None,
    )?;
    assert!(created.status.success(), "{created:?}");

    // --brokers before the subcommand, after it, and from the environment.
    let placements = [
        (
            vec!["--brokers", bootstrap.as_str(), "cluster", "status"],
            None,
        ),
        (
            vec!["cluster", "--brokers", bootstrap.as_str(), "status"],
            None,
        ),
        (vec!["cluster", "status"], Some(bootstrap.as_str())),
    ];
    for (args, env) in placements {
        let output = weir(&args, env)?;
        let status = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(status.contains("controller: 0"), "{status}");
        assert!(status.contains("brokers: 1"), "{status}");
        assert!(
            status.lines().any(|line| line.split_whitespace().eq([
                "0",
                bootstrap.as_str(),
                "-",
                "active"
            ])),
            "{status}"
        );
        // Internal topics (the group coordinator's offsets topic) count too,
        // so the total is at least the 3 partitions created here.
        let total: usize = status
            .lines()
            .find_map(|line| line.strip_prefix("partitions: "))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no partition count in\n{status}"))?;
        assert!(total >= 3, "{status}");
        let total = total.to_string();
        for (state, count) in [
            ("online", total.as_str()),
            ("under-replicated", "0"),
            ("offline", "0"),
        ] {
            assert!(
                status
                    .lines()
                    .any(|line| line.split_whitespace().eq([state, count])),
                "{state}: {status}"
            );
        }
    }
    Ok(())
}

#[test]
fn cluster_status_json_has_the_documented_fields() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let created = weir(
        &["topic", "create", "t", "--partitions", "3"],
        Some(&bootstrap),
    )?;
    assert!(created.status.success(), "{created:?}");
    let output = weir(&["cluster", "status", "--json"], Some(&bootstrap))?;
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&output.stdout)))?;
    assert!(status["cluster_id"].is_string(), "{status}");
    assert_eq!(status["controller"], 0, "{status}");
    assert_eq!(
        status["brokers"],
        serde_json::json!([{"id": 0, "address": bootstrap, "rack": null, "state": "active"}])
    );
    let topics = status["topics"].as_u64().context("topics")?;
    assert!(topics >= 1, "{status}");
    let online = status["partitions"]["online"].as_u64().context("online")?;
    assert!(online >= 3, "{status}");
    assert_eq!(status["partitions"]["under_replicated"], 0);
    assert_eq!(status["partitions"]["offline"], 0);
    Ok(())
}
