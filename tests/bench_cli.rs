//! `weir bench` as a script uses it: runs against a real `weir serve` child
//! process, its `--json` report, and its exit code when the broker is
//! unreachable.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use common::Broker;
use rdkafka::message::{Headers as _, Message as _};
use serde_json::Value;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
/// The bench promises a clear failure within about 10 s; allow for a slow CI.
const UNREACHABLE_EXIT_S_MAX: u64 = 15;

fn bench(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(WEIR)
        .arg("bench")
        .args(args)
        .env_remove("WEIR_BROKERS")
        .output()
        .context("cannot run weir bench")
}

/// Runs a bench mode with `--json` and returns its report, failing unless it
/// exited 0.
fn bench_json(args: &[&str]) -> anyhow::Result<Value> {
    let output = bench(args)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "weir bench {args:?} failed ({}): {stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "stdout is not one JSON object: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn check_report(report: &Value, mode: &str, records: u64, size: u64) {
    assert_eq!(report["mode"], mode, "{report}");
    assert_eq!(report["records"], records, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["bytes"], records * size, "{report}");
    for field in ["elapsed_s", "msgs_per_sec", "mb_per_sec"] {
        let value = report[field].as_f64().unwrap_or(-1.0);
        assert!(value > 0.0, "{field} = {value} in {report}");
    }
    assert!(report["config"].is_object(), "{report}");
}

#[test]
fn produce_then_consume_reports_every_record_as_json() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let brokers = bootstrap.as_str();
    let report = bench_json(&[
        "produce",
        "--brokers",
        brokers,
        "--topic",
        "bench-cli",
        "--json",
        "--count",
        "20000",
        "--size",
        "100",
        "--partitions",
        "2",
    ])?;
    check_report(&report, "produce", 20_000, 100);
    let latency = &report["latency_ms"];
    for field in ["p50", "p99", "p999", "max"] {
        assert!(
            latency[field].as_f64().is_some(),
            "latency_ms.{field} in {report}"
        );
    }
    assert!(
        latency["p50"].as_f64() <= latency["max"].as_f64(),
        "{report}"
    );
    assert_eq!(report["config"]["partitions"], 2, "{report}");

    let report = bench_json(&[
        "consume",
        "--brokers",
        brokers,
        "--topic",
        "bench-cli",
        "--json",
        "--count",
        "20000",
    ])?;
    check_report(&report, "consume", 20_000, 100);
    Ok(())
}

#[test]
fn unreachable_broker_exits_3_with_a_clear_message() -> anyhow::Result<()> {
    // A port that was just free and is no longer listened on.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let brokers = format!("127.0.0.1:{port}");
    for mode in ["produce", "consume", "e2e"] {
        let started = Instant::now();
        let output = bench(&[mode, "--brokers", &brokers, "--count", "10", "--json"])?;
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{mode}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach any broker at {brokers}: ")),
            "{mode}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{mode} printed a report");
        assert!(
            elapsed < Duration::from_secs(UNREACHABLE_EXIT_S_MAX),
            "{mode} took {elapsed:?}"
        );
    }
    Ok(())
}

#[test]
fn txn_reports_transactional_produce_commit_latency_and_read_committed_as_json()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let report = bench_json(&[
        "txn",
        "--brokers",
        &bootstrap,
        "--count",
        "2000",
        "--records-per-txn",
        "10,100",
        "--abort-percent",
        "10",
        "--partitions",
        "2",
        "--json",
    ])?;
    assert_eq!(report["mode"], "txn", "{report}");
    let produce = report["produce"].as_array().context("produce runs")?;
    assert_eq!(
        produce.len(),
        3,
        "the baseline and one run per size: {report}"
    );
    assert!(produce[0]["records_per_txn"].is_null());
    for (run, size) in produce[1..].iter().zip([10, 100]) {
        assert_eq!(run["records_per_txn"], size, "{report}");
        assert!(
            run["records_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
        assert!(
            run["commit_latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
    }
    let consume = report["consume"].as_array().context("consume runs")?;
    assert_eq!(consume[0]["isolation"], "read_uncommitted");
    assert_eq!(consume[0]["records"], 2000, "every record: {report}");
    assert_eq!(consume[1]["isolation"], "read_committed");
    // 2 of the 20 transactions of 100 aborted.
    assert_eq!(consume[1]["records"], 1800, "the committed ones: {report}");
    Ok(())
}

#[test]
fn view_reads_each_view_to_its_end_with_exactly_its_tags_and_the_brokers_counters()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let pid = broker.pid().context("the broker's pid")?.to_string();
    let count = 20_000u64;
    let report = bench_json(&[
        "view",
        "--brokers",
        &bootstrap,
        "--topic",
        "src",
        "--count",
        &count.to_string(),
        "--partitions",
        "2",
        "--run-length",
        "100",
        "--rounds",
        "2",
        "--broker-pid",
        &pid,
        "--json",
    ])?;
    assert_eq!(report["mode"], "view", "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["produced"], count, "{report}");
    let targets = report["targets"].as_array().context("targets")?;
    let names: Vec<_> = targets.iter().map(|t| t["topic"].clone()).collect();
    assert_eq!(names, ["src", "src-1pct", "src-50pct"], "{report}");

    // What each view must give, counted from the source itself.
    let source =
        common::read_to_high_watermark(&bootstrap, "src", &[0, 1], Duration::from_secs(60))?;
    let tag_below = |limit: u32| {
        source
            .values()
            .flatten()
            .filter(|m| {
                let tags: Vec<_> = m
                    .headers()
                    .into_iter()
                    .flat_map(|h| h.iter())
                    .filter(|h| h.key == "weir.tag")
                    .filter_map(|h| h.value)
                    .collect();
                assert_eq!(tags.len(), 1, "one tag per record");
                let tag = std::str::from_utf8(tags[0]).unwrap_or_default();
                tag.strip_prefix('t')
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n < limit)
            })
            .count() as u64
    };
    let expected = [count, tag_below(1), tag_below(50)];
    assert!(expected[1] > 0 && expected[1] < expected[2] && expected[2] < count);
    for (target, expected) in targets.iter().zip(expected) {
        assert_eq!(target["expected_records"], expected, "{target}");
        let reads = target["reads"].as_array().context("reads")?;
        assert_eq!(reads.len(), 2, "one read per round: {target}");
        for read in reads {
            assert_eq!(read["records"], expected, "{read}");
            assert_eq!(read["wrong"], 0, "{read}");
            assert_eq!(read["errors"], 0, "{read}");
            assert!(read["disk_read_bytes"].is_u64(), "{read}");
            assert!(
                read["broker_cpu_s"].as_f64().is_some_and(|s| s >= 0.0),
                "{read}"
            );
        }
    }
    Ok(())
}

#[test]
fn share_reports_each_member_count_against_partitioned_consumers_and_dead_letter_latency()
-> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "group.share.enable=true"])?;
    let bootstrap = broker.bootstrap();
    let report = bench_json(&[
        "share",
        "--brokers",
        &bootstrap,
        "--count",
        "2000",
        "--members",
        "1,2",
        "--dead-letters",
        "300",
        "--json",
    ])?;
    assert_eq!(report["mode"], "share", "{report}");
    let runs = report["runs"].as_array().context("runs")?;
    assert_eq!(runs.len(), 2, "{report}");
    for (run, members) in runs.iter().zip([1, 2]) {
        assert_eq!(run["members"], members, "{report}");
        for rate in ["share_records_per_sec", "classic_records_per_sec"] {
            assert!(run[rate].as_f64().unwrap_or(0.0) > 0.0, "{rate}: {report}");
        }
        // Together the members took every record.
        let spread = run["share_member_records"].as_array().context("spread")?;
        assert!(spread[1].as_u64().unwrap_or(0) > 0, "{report}");
    }
    let dead = &report["dead_letters"];
    assert_eq!(dead["records"], 300, "{report}");
    assert!(
        dead["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    Ok(())
}
