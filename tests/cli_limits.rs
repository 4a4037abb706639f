//! `weir bench limits`, the project's own measurement of the machine's disk
//! and loopback limits (docs/benchmarks.md): it runs with nothing installed,
//! prints every figure, and leaves no test file behind. Also what a new
//! user reads first: the README says how to get the binary and what the
//! test command needs, and docs/benchmarks.md refers only to files inside
//! the repository.

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

fn repo_file(path: &str) -> anyhow::Result<String> {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).with_context(|| format!("cannot read {}", full.display()))
}

#[test]
fn the_docs_say_how_to_get_weir_and_name_only_files_in_the_repository() -> anyhow::Result<()> {
    let readme = repo_file("README.md")?;
    let tools = readme
        .split("## Tools")
        .nth(1)
        .context("README.md has no Tools section")?;
    for needed in [
        "cargo install --path .",
        "cargo build --release",
        "target/release/weir",
    ] {
        assert!(
            tools.contains(needed),
            "the Tools section does not say {needed:?}"
        );
    }
    for need in ["Node.js and npm", "root or `sudo`", "registries"] {
        assert!(readme.contains(need), "README.md does not list {need:?}");
    }
    // How long a first run takes, so nobody thinks a half-hour build hung;
    // the figure itself follows the suite, so only its form is checked.
    let duration = readme
        .split("A first run takes about ")
        .nth(1)
        .context("README.md does not say how long a first run takes")?;
    let figure = duration.split(" minutes").next().unwrap_or_default();
    assert!(
        !figure.is_empty() && figure.chars().all(|c| c.is_ascii_digit() || c == '–'),
        "README.md gives the first run's duration as {figure:?} minutes"
    );
    let benchmarks = repo_file("docs/benchmarks.md")?;
    for outside in ["../shared", "PEERS.md"] {
        assert!(
            !benchmarks.contains(outside),
            "docs/benchmarks.md refers to {outside}"
        );
    }
    for inside in ["scripts/machine-limits.sh", "weir bench limits", "## Peers"] {
        assert!(
            benchmarks.contains(inside),
            "docs/benchmarks.md lacks {inside:?}"
        );
    }
    repo_file("scripts/machine-limits.sh")?;
    Ok(())
}
