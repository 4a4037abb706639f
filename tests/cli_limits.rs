//! `weir bench limits`, the project's own measurement of the machine's disk
//! and loopback limits (docs/benchmarks.md): it runs with nothing installed,
//! prints every figure, and leaves no test file behind.

use std::process::Command;

use anyhow::{Context as _, ensure};

#[test]
fn limits_measures_disk_and_loopback_and_cleans_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_str().context("temporary path is not UTF-8")?;
    // Small sizes: the test checks the tool, not the machine.
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "bench",
            "limits",
            "--dir",
            path,
            "--size-mb",
            "4",
            "--syncs",
            "20",
        ])
        .args(["--seconds", "1", "--json"])
        .output()
        .context("cannot run weir bench limits")?;
    ensure!(
        output.status.success(),
        "weir bench limits failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let limits: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    for field in [
        "sequential_write_mb_s",
        "sync_4k_p50_ms",
        "sync_4k_p99_ms",
        "group_commit_mb_s",
        "loopback_tcp_mb_s",
    ] {
        let value = limits[field]
            .as_f64()
            .with_context(|| format!("no {field} in {limits}"))?;
        assert!(value > 0.0, "{field} = {value} in {limits}");
    }
    assert!(limits["sync_4k_p99_ms"].as_f64() >= limits["sync_4k_p50_ms"].as_f64());
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "the test file was left behind"
    );

    let text = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "bench",
            "limits",
            "--dir",
            path,
            "--size-mb",
            "1",
            "--syncs",
            "5",
        ])
        .args(["--seconds", "1"])
        .output()?;
    let text = String::from_utf8(text.stdout)?;
    for line in [
        "disk sequential write",
        "fdatasync latency: p50",
        "group-commit ceiling",
        "loopback TCP, one stream",
    ] {
        assert!(text.contains(line), "{text}");
    }

    let missing = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "limits", "--dir", "/no/such/folder"])
        .output()?;
    assert_eq!(missing.status.code(), Some(1));
    Ok(())
}
