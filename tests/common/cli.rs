//! Running the `weir` client commands against a test broker.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, ensure};

use super::Broker;

/// `weir ARGS` with WEIR_BROKERS pointing at `broker`, and WEIR_ADMIN_URL
/// at its admin API when it has one, not yet started.
pub fn command(broker: &Broker, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.args(args).env("WEIR_BROKERS", broker.bootstrap());
    if let Some(admin) = broker.admin_addr() {
        command.env("WEIR_ADMIN_URL", admin);
    }
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

/// How long a `weir serve` that must refuse to start may run before the
/// test counts it as started (a refusal takes milliseconds).
pub const REFUSED_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `weir serve ARGS` with the extra environment `envs`, expecting it to
/// exit by itself (a refused start). Fails, after killing it, when it is
/// still running after [`REFUSED_START_TIMEOUT`]. Unless `args` give
/// `--admin-listen`, the admin listener takes a free port (127.0.0.1:0),
/// never the default one, which parallel tests would share.
pub fn serve_expecting_exit(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Output> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.arg("serve").args(args);
    if super::admin_listen_in(&owned).is_none() {
        command.args(["--admin-listen", "127.0.0.1:0"]);
    }
    let mut child = command
        .envs(envs.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run weir serve")?;
    let deadline = std::time::Instant::now() + REFUSED_START_TIMEOUT;
    while child
        .try_wait()
        .context("cannot wait for weir serve")?
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().context("cannot reap weir serve")?;
            anyhow::bail!(
                "weir serve {args:?} was still running after {REFUSED_START_TIMEOUT:?}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .context("cannot read weir serve's output")
}
