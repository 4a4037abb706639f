//! The scale modes of `weir bench` (issue 8) against a real `weir serve`
//! child process, with tiny numbers: `partitions` (and its `--wait` after a
//! restart), `batches` and `lookup`. They check that the commands work and
//! report what they did, not how fast: benchmarks are not tests.

mod common;

use std::process::Command;

use anyhow::{Context as _, ensure};
use common::Broker;
use serde_json::Value;

fn bench_json(args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("WEIR_BROKERS")
        .output()
        .context("cannot run weir bench")?;
    ensure!(
        output.status.success(),
        "weir bench {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "stdout is not one JSON object: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn partitions_creates_steps_until_the_total_and_waits_for_them_after_a_restart()
-> anyhow::Result<()> {
    let mut broker = Broker::start_at(&format!("127.0.0.1:{}", common::reserve_port()?), &[])?;
    let brokers = broker.bootstrap();
    let report = bench_json(&[
        "partitions",
        "--brokers",
        &brokers,
        "--topic-prefix",
        "p",
        "--step",
        "4",
        "--total",
        "10",
    ])?;
    let steps = report["steps"].as_array().context("steps")?;
    let sizes: Vec<_> = steps.iter().map(|s| s["partitions"].clone()).collect();
    assert_eq!(sizes, [4, 4, 2], "{report}");
    let topics: Vec<_> = steps.iter().map(|s| s["topic"].clone()).collect();
    assert_eq!(topics, ["p-000", "p-001", "p-002"], "{report}");
    assert_eq!(report["partitions_after"], 10, "{report}");
    assert!(
        steps.iter().all(|s| s["ready_ms"].as_f64() > Some(0.0)),
        "{report}"
    );

    // The topics are really there, with a leader each.
    let metadata = bench_json(&[
        "partitions",
        "--brokers",
        &brokers,
        "--topic-prefix",
        "p",
        "--total",
        "10",
        "--wait",
    ])?;
    assert_eq!(metadata["partitions_after"], 10, "{metadata}");

    // A second run continues from what exists.
    let more = bench_json(&[
        "partitions",
        "--brokers",
        &brokers,
        "--topic-prefix",
        "p",
        "--step",
        "4",
        "--total",
        "12",
    ])?;
    assert_eq!(more["partitions_before"], 10, "{more}");
    assert_eq!(more["steps"][0]["topic"], "p-003", "{more}");

    broker.stop()?;
    broker.restart()?;
    let waited = bench_json(&[
        "partitions",
        "--brokers",
        &brokers,
        "--topic-prefix",
        "p",
        "--total",
        "12",
        "--wait",
        "--timeout",
        "60s",
    ])?;
    assert_eq!(waited["partitions_after"], 12, "{waited}");
    assert!(waited["wait_ms"].as_f64() > Some(0.0), "{waited}");
    Ok(())
}

#[test]
fn partitions_wait_fails_when_the_partitions_never_appear() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "bench",
            "partitions",
            "--wait",
            "--total",
            "5",
            "--timeout",
            "1s",
        ])
        .args(["--brokers", &broker.bootstrap(), "--topic-prefix", "absent"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("0 of 5 partitions"), "{stderr}");
    Ok(())
}

#[test]
fn batches_writes_single_record_batches_that_lookup_finds_by_offset_and_time() -> anyhow::Result<()>
{
    let broker = Broker::start(&[])?;
    let brokers = broker.bootstrap();
    let written = bench_json(&[
        "batches",
        "--brokers",
        &brokers,
        "--topic",
        "b",
        "--count",
        "1000",
        "--partitions",
        "3",
        "--per-request",
        "7",
        "--writers",
        "2",
    ])?;
    assert_eq!(written["batches"], 1000, "{written}");
    assert_eq!(written["partitions"], 3, "{written}");

    let found = bench_json(&[
        "lookup",
        "--brokers",
        &brokers,
        "--topic",
        "b",
        "--lookups",
        "50",
    ])?;
    // One record per batch: the offsets retained are the batches written.
    assert_eq!(found["retained"], 1000, "{found}");
    assert_eq!(found["lookups"], 50, "{found}");
    for field in ["fetch_ms_p50", "fetch_ms_p99", "time_ms_p50", "time_ms_p99"] {
        assert!(found[field].as_f64() > Some(0.0), "{field} in {found}");
    }
    Ok(())
}
