//! Running the `weir` client commands against a test broker.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, ensure};

use super::Broker;

/// `weir ARGS` with WEIR_BROKERS pointing at `broker`, not yet started.
pub fn command(broker: &Broker, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.args(args).env("WEIR_BROKERS", broker.bootstrap());
    command
}

/// Runs `weir ARGS` against `broker` with `stdin` as input.
pub fn weir(broker: &Broker, args: &[&str], stdin: &[u8]) -> anyhow::Result<Output> {
    let mut child = command(broker, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run weir")?;
    let written = child.stdin.take().context("no stdin")?.write_all(stdin);
    // A command that fails before reading its input closes the pipe early.
    if let Err(err) = written
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(err).context("cannot write weir's stdin");
    }
    child.wait_with_output().context("weir did not finish")
}

/// Runs `weir ARGS`, fails unless it exits 0, and returns its stdout.
pub fn weir_ok(broker: &Broker, args: &[&str], stdin: &[u8]) -> anyhow::Result<String> {
    let output = weir(broker, args, stdin)?;
    ensure!(
        output.status.success(),
        "weir {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
