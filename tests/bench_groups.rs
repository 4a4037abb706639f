//! `weir bench group-join` and `weir bench commit` against a real `weir
//! serve` child process, with both group protocols: the run completes and
//! its `--json` report has the fields scripts and docs/benchmarks.md read.

mod common;

use std::process::Command;

use anyhow::{Context as _, ensure};
use common::Broker;
use serde_json::Value;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
/// Members learn of a rebalance by heartbeat; short intervals keep the test
/// quick without changing what it checks.
const HEARTBEAT_INTERVAL_MS: u32 = 200;

/// A broker with no initial rebalance delay and short KIP-848 heartbeats.
fn start() -> anyhow::Result<Broker> {
    let heartbeat = format!("group.consumer.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}");
    Broker::start(&[
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        &heartbeat,
    ])
}

/// Runs a bench mode with `--json` and returns its report, failing unless it
/// exited 0.
fn bench_json(args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(WEIR)
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("WEIR_BROKERS")
        .output()
        .context("cannot run weir bench")?;
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

fn positive(report: &Value, pointer: &str) -> f64 {
    let value = report.pointer(pointer).and_then(Value::as_f64);
    assert!(
        value.is_some_and(|value| value > 0.0),
        "{pointer} = {value:?} in {report}"
    );
    value.unwrap_or_default()
}

#[test]
fn group_join_reports_settle_times_for_both_protocols() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    let heartbeat = format!("heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}");
    for protocol in ["classic", "consumer"] {
        let mut args = vec![
            "group-join",
            "--brokers",
            &bootstrap,
            "--topic",
            "join",
            "--members",
            "3",
            "--partitions",
            "6",
            "--runs",
            "1",
            "--protocol",
            protocol,
        ];
        if protocol == "classic" {
            args.extend(["-X", &heartbeat]);
        }
        let report = bench_json(&args)?;
        assert_eq!(report["mode"], "group-join", "{report}");
        assert_eq!(report["protocol"], protocol, "{report}");
        assert_eq!(report["members"], 3, "{report}");
        assert_eq!(report["partitions"], 6, "{report}");
        assert_eq!(report["runs"], 1, "{report}");
        let min = positive(&report, "/join_ms/min");
        let median = positive(&report, "/join_ms/median");
        let max = positive(&report, "/join_ms/max");
        assert!(min <= median && median <= max, "{report}");
        // Bounded by the bench's own 60 s deadline; far less in practice.
        assert!(max < 60_000.0, "{report}");
        assert_eq!(
            report["runs_ms"].as_array().map(Vec::len),
            Some(1),
            "{report}"
        );
    }
    Ok(())
}

#[test]
fn commit_reports_throughput_and_latency_for_both_protocols() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    for protocol in ["classic", "consumer"] {
        let topic = format!("commit-{protocol}");
        let report = bench_json(&[
            "commit",
            "--brokers",
            &bootstrap,
            "--topic",
            &topic,
            "--partitions",
            "6",
            "--count",
            "200",
            "--protocol",
            protocol,
        ])?;
        assert_eq!(report["mode"], "commit", "{report}");
        assert_eq!(report["protocol"], protocol, "{report}");
        assert_eq!(report["commits"], 200, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["partitions"], 6, "{report}");
        let elapsed_s = positive(&report, "/elapsed_s");
        let per_sec = positive(&report, "/commits_per_sec");
        assert!((per_sec * elapsed_s - 200.0).abs() < 1.0, "{report}");
        let offsets_per_sec = positive(&report, "/offsets_per_sec");
        assert!((offsets_per_sec - 6.0 * per_sec).abs() < 1e-6 * offsets_per_sec);
        let p50 = positive(&report, "/latency_ms/p50");
        let p99 = positive(&report, "/latency_ms/p99");
        assert!(p50 <= p99, "{report}");
    }
    Ok(())
}
