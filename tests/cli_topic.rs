//! `weir topic` as people and scripts use it, against a real `weir serve`:
//! the spellings issue 4 fixes, what `describe` shows, and the exit code of
//! each failure.

mod common;

use anyhow::Context as _;
use common::Broker;
use common::cli::weir;

/// Runs `weir ARGS` with no input, fails unless it exits 0, and returns its stdout.
fn weir_ok(broker: &Broker, args: &[&str]) -> anyhow::Result<String> {
    common::cli::weir_ok(broker, args, b"")
}

/// The cells of `describe`'s line for partition `partition`.
fn partition_row(describe: &str, partition: i32) -> Option<Vec<String>> {
    let mut in_partitions = false;
    for line in describe.lines() {
        if line.starts_with("PARTITION") {
            in_partitions = true;
            continue;
        }
        if in_partitions && line.trim().is_empty() {
            return None;
        }
        let cells: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if in_partitions && cells.first() == Some(&partition.to_string()) {
            return Some(cells);
        }
    }
    None
}

/// The value and source of config `name` in `describe`'s output.
fn config(describe: &str, name: &str) -> Option<(String, String)> {
    describe.lines().find_map(|line| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        match cells.as_slice() {
            [key, value, source] if *key == name => {
                Some(((*value).to_owned(), (*source).to_owned()))
            }
            _ => None,
        }
    })
}

#[test]
fn topic_lifecycle_with_the_fixed_spellings() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let created = weir_ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=86400000",
            "--config",
            "max.message.bytes=2000000",
        ],
    )?;
    assert_eq!(created.trim(), "created topic orders");
    let listed = weir_ok(&broker, &["topic", "list"])?;
    assert!(listed.lines().any(|line| line == "orders"), "{listed}");

    let described = weir_ok(&broker, &["topic", "describe", "orders"])?;
    for partition in 0..3 {
        let row = partition_row(&described, partition)
            .with_context(|| format!("no partition {partition} in\n{described}"))?;
        // PARTITION LEADER REPLICAS ISR LOG-START LOG-END of an empty topic
        // on a single broker.
        assert_eq!(
            row.get(1..),
            Some(&["0", "0", "0", "0", "0"].map(String::from)[..])
        );
    }
    assert!(partition_row(&described, 3).is_none(), "{described}");
    assert_eq!(
        config(&described, "retention.ms"),
        Some(("86400000".into(), "topic".into()))
    );
    assert_eq!(
        config(&described, "max.message.bytes"),
        Some(("2000000".into(), "topic".into()))
    );

    weir_ok(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--config",
            "retention.ms=3600000",
            "--delete-config",
            "max.message.bytes",
        ],
    )?;
    let described = weir_ok(&broker, &["topic", "describe", "orders"])?;
    assert_eq!(
        config(&described, "retention.ms"),
        Some(("3600000".into(), "topic".into()))
    );
    let (_, source) = config(&described, "max.message.bytes").context("max.message.bytes")?;
    assert_eq!(source, "default", "{described}");

    weir_ok(
        &broker,
        &["topic", "add-partitions", "orders", "--total", "5"],
    )?;
    let described = weir_ok(&broker, &["topic", "describe", "orders"])?;
    assert!(partition_row(&described, 4).is_some(), "{described}");
    assert!(partition_row(&described, 5).is_none(), "{described}");

    let deleted = weir_ok(&broker, &["topic", "delete", "orders"])?;
    assert_eq!(deleted.trim(), "deleted topic orders");
    let listed = weir_ok(&broker, &["topic", "list"])?;
    assert!(!listed.lines().any(|line| line == "orders"), "{listed}");
    Ok(())
}

#[test]
fn describe_shows_log_start_and_log_end_offsets() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "2"])?;
    let produced = weir(&broker, &["produce", "t", "--partition", "1"], b"a\nb\nc\n")?;
    assert!(produced.status.success(), "{produced:?}");
    let described = weir_ok(&broker, &["topic", "describe", "t"])?;
    let row = partition_row(&described, 1).context("partition 1")?;
    assert_eq!(
        row.get(4..),
        Some(&["0", "3"].map(String::from)[..]),
        "{described}"
    );
    let row = partition_row(&described, 0).context("partition 0")?;
    assert_eq!(
        row.get(4..),
        Some(&["0", "0"].map(String::from)[..]),
        "{described}"
    );
    Ok(())
}

#[test]
fn failed_topic_operations_exit_1_with_the_reason() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "2"])?;
    for (args, reason) in [
        (
            &["topic", "describe", "absent"][..],
            "UnknownTopicOrPartition",
        ),
        (&["topic", "create", "t"], "exists"),
        (
            &["topic", "add-partitions", "t", "--total", "1"],
            "partitions",
        ),
        (
            &["topic", "alter-config", "t", "--config", "no.such.config=1"],
            "no.such.config",
        ),
        (&["topic", "delete", "absent"], "absent"),
    ] {
        let output = weir(&broker, args, b"")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn refusals_show_the_brokers_error_message() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let refused = weir(
        &broker,
        &["topic", "create", "t", "--config", "retention.ms=abc"],
        b"",
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    // The error name, and the broker's message naming the value and the config.
    assert!(stderr.contains("InvalidConfig"), "{stderr}");
    assert!(stderr.contains("'abc'"), "{stderr}");
    assert!(stderr.contains("retention.ms"), "{stderr}");
    Ok(())
}

fn json(broker: &Broker, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut argv = args.to_vec();
    argv.push("--json");
    let out = weir_ok(broker, &argv)?;
    serde_json::from_str(&out).with_context(|| format!("{argv:?} printed no JSON document: {out}"))
}

#[test]
fn every_topic_subcommand_prints_json_with_the_documented_fields() -> anyhow::Result<()> {
    use serde_json::json;
    let broker = Broker::start(&[])?;
    assert_eq!(
        json(&broker, &["topic", "create", "orders", "--partitions", "2"])?,
        json!({"topic": "orders", "created": true})
    );
    let listed = json(&broker, &["topic", "list"])?;
    assert!(
        listed["topics"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("orders"))),
        "{listed}"
    );
    common::cli::weir_ok(
        &broker,
        &["produce", "orders", "--partition", "1"],
        b"a\nb\n",
    )?;
    let described = json(&broker, &["topic", "describe", "orders"])?;
    assert_eq!(described["topic"], "orders");
    assert_eq!(
        described["partitions"],
        json!([
            {"partition": 0, "leader": 0, "replicas": [0], "isr": [0],
             "log_start_offset": 0, "log_end_offset": 0},
            {"partition": 1, "leader": 0, "replicas": [0], "isr": [0],
             "log_start_offset": 0, "log_end_offset": 2},
        ])
    );
    assert!(
        described["configs"]
            .as_array()
            .is_some_and(|configs| configs
                .iter()
                .any(|c| c
                    == &json!({"name": "cleanup.policy", "value": "delete", "source": "default"}))),
        "{described}"
    );
    assert_eq!(
        json(
            &broker,
            &[
                "topic",
                "alter-config",
                "orders",
                "--config",
                "retention.ms=1000",
                "--delete-config",
                "retention.bytes"
            ]
        )?,
        json!({"topic": "orders", "set": ["retention.ms"], "deleted": ["retention.bytes"]})
    );
    assert_eq!(
        json(
            &broker,
            &["topic", "add-partitions", "orders", "--total", "3"]
        )?,
        json!({"topic": "orders", "partitions": 3})
    );
    assert_eq!(
        json(&broker, &["topic", "delete", "orders"])?,
        json!({"topic": "orders", "deleted": true})
    );
    Ok(())
}
