//! Fault injection for the end-to-end fault tests: a [`Node`] is one
//! `weir serve` process, in a network namespace of a [`Net`] (or in the root
//! namespace), that can be killed, stopped, continued and restarted on the
//! same address and data folder; a [`Schedule`] is a list of faults
//! generated from a seed, applied at time offsets, that remembers what it
//! actually did so a failure can say how to replay it.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use super::netns::{Net, NodeNet};
use super::{BROKER_REBIND_TIMEOUT, BROKER_START_TIMEOUT};

/// The port a node in its own namespace listens on (its address is its own).
pub const NODE_PORT: u16 = 9092;
/// The environment variable that replays a fault schedule.
pub const SEED_ENV: &str = "WEIR_FAULT_SEED";
/// How much of a node's stderr is shown when a test fails.
const STDERR_TAIL_BYTES_MAX: u64 = 64 * 1024;

/// One `weir serve` process and everything needed to start it again: its
/// namespace (if any), address, data folder and extra arguments. Killed on drop.
pub struct Node {
    name: String,
    net: Option<NodeNet>,
    listen: String,
    extra_args: Vec<String>,
    dir: TempDir,
    stderr_path: PathBuf,
    child: Option<Child>,
    lives: u32,
}

impl Node {
    /// Start `weir serve` inside `net`'s namespace, listening on
    /// `<ip>:9092`, with `extra_args` after the defaults (later: `--node-id`,
    /// `--controller-listen`, `--voters`).
    pub fn start_in(net: &NodeNet, extra_args: &[&str]) -> anyhow::Result<Self> {
        let listen = format!("{}:{NODE_PORT}", net.ip);
        Self::start(
            format!("node {} ({})", net.index, net.ns),
            Some(net.clone()),
            listen,
            extra_args,
        )
    }

    /// Start `weir serve` in the root namespace, listening on `listen`.
    pub fn start_local(listen: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start(format!("node {listen}"), None, listen.into(), extra_args)
    }

    fn start(
        name: String,
        net: Option<NodeNet>,
        listen: String,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("weir-fault-")
            .tempdir()
            .context("cannot create the node's temporary folder")?;
        let stderr_path = dir.path().join("broker.stderr");
        let mut node = Self {
            name,
            net,
            listen,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            dir,
            stderr_path,
            child: None,
            lives: 0,
        };
        node.spawn()?;
        Ok(node)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.listen.clone()
    }

    /// The node's namespace, when it runs in one.
    pub fn net(&self) -> Option<&NodeNet> {
        self.net.as_ref()
    }

    /// The node's data folder, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id of the running life.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the node with SIGKILL, as a crash would, and reap it.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .with_context(|| format!("cannot SIGKILL {}", self.name))?;
            child
                .wait()
                .with_context(|| format!("cannot reap {}", self.name))?;
        }
        Ok(())
    }

    /// Freeze the node with SIGSTOP: its sockets stay open, nothing answers.
    pub fn sigstop(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Thaw a node frozen by [`Node::sigstop`].
    pub fn sigcont(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// Start the node again (killing the running life first, if any) on the
    /// same address and data folder. Retries briefly while the previous
    /// life's port is not yet free.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.sigkill()?;
        let deadline = Instant::now() + BROKER_REBIND_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline && self.stderr_says_address_in_use() => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The last part of the node's stderr (all lives).
    pub fn stderr_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.stderr_path) else {
            return format!("(no stderr of {})", self.name);
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(STDERR_TAIL_BYTES_MAX);
        let _ = file.seek(SeekFrom::Start(start));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        format!(
            "----- {} stderr ({} bytes from {start}, {} lives) -----\n{text}",
            self.name,
            len - start,
            self.lives
        )
    }

    fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        // The workspace forbids unsafe code, so the signal goes through kill(1).
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .context("cannot run kill(1)")?;
        if !sent.success() {
            bail!("kill -{signal} {pid} ({}) failed: {sent}", self.name);
        }
        Ok(())
    }

    fn stderr_says_address_in_use(&self) -> bool {
        std::fs::read_to_string(&self.stderr_path)
            .map(|s| s.lines().last().is_some_and(|l| l.contains("in use")))
            .unwrap_or(false)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.lives += 1;
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .context("cannot open the node's stderr file")?;
        let program = env!("CARGO_BIN_EXE_weir");
        // `ip netns exec` execs the program, so the child's pid is the broker's.
        let mut command = match &self.net {
            Some(net) => net.command(program),
            None => Command::new(program),
        };
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start weir serve for {}", self.name))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::sync_channel::<String>(1);
        // The reader keeps draining stdout after the listening line so the
        // broker never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(BROKER_START_TIMEOUT) {
            Ok(addr) => {
                self.listen = addr;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} (life {}) printed no `listening on` line within {BROKER_START_TIMEOUT:?}\n{}",
                    self.name,
                    self.lives,
                    self.stderr_tail()
                )
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
        // libtest shows this only for a failing test.
        eprintln!("{}", self.stderr_tail());
    }
}

/// The seed of this run: `WEIR_FAULT_SEED` if set, else a random one. Printed
/// either way, so any run can be replayed.
pub fn fault_seed() -> anyhow::Result<u64> {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{SEED_ENV}={text:?} is not a u64"))?,
        Err(_) => rand::random(),
    };
    eprintln!("fault schedule seed: {SEED_ENV}={seed}");
    Ok(seed)
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the node, then restart it on the same address and data.
    KillRestart,
    /// SIGSTOP the node, SIGCONT it after this long.
    Stop(Duration),
    /// Take the node's link down, bring it up after this long.
    LinkDown(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillRestart => write!(f, "SIGKILL + restart"),
            Self::Stop(d) => write!(f, "SIGSTOP for {} ms, SIGCONT", d.as_millis()),
            Self::LinkDown(d) => write!(f, "link down for {} ms, up", d.as_millis()),
        }
    }
}

/// A kind of fault a [`Plan`] draws from (hold times are drawn separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`Fault::KillRestart`].
    KillRestart,
    /// [`Fault::Stop`].
    Stop,
    /// [`Fault::LinkDown`].
    LinkDown,
}

/// A fault planned at an offset from the start of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// When, from the start of [`Schedule::run`].
    pub at: Duration,
    /// What.
    pub fault: Fault,
    /// On which node (an index into the nodes given to `run`).
    pub node: usize,
}

/// What a fault generator may choose from, and how densely.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Faults to inject.
    pub count: usize,
    /// Nodes to pick from (`0..nodes`).
    pub nodes: usize,
    /// Offset of the first fault, at least.
    pub first_at: Duration,
    /// Gap between the end of one fault and the start of the next: at least, at most.
    pub gap_min: Duration,
    /// See `gap_min`.
    pub gap_max: Duration,
    /// The kinds of faults to draw from; how long a stop or a cut link
    /// holds is drawn from `hold_min..=hold_max`.
    pub kinds: Vec<FaultKind>,
    /// Shortest hold of a stop or a cut link.
    pub hold_min: Duration,
    /// Longest hold of a stop or a cut link.
    pub hold_max: Duration,
}

/// Faults generated from a seed, and the record of what was applied when.
#[derive(Debug, Clone)]
pub struct Schedule {
    seed: u64,
    planned: Vec<Planned>,
    applied: Vec<(Duration, String)>,
}

impl Schedule {
    /// Draw `plan.count` faults from `seed`: the same seed gives the same schedule.
    pub fn generate(seed: u64, plan: &Plan) -> Self {
        assert!(plan.nodes > 0 && !plan.kinds.is_empty(), "an empty plan");
        assert!(plan.gap_min <= plan.gap_max && plan.hold_min <= plan.hold_max);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut at = plan.first_at;
        let mut planned = Vec::with_capacity(plan.count);
        for _ in 0..plan.count {
            let kind = plan.kinds[rng.random_range(0..plan.kinds.len())];
            let hold = Duration::from_millis(
                rng.random_range(millis(plan.hold_min)..=millis(plan.hold_max)),
            );
            let fault = match kind {
                FaultKind::KillRestart => Fault::KillRestart,
                FaultKind::Stop => Fault::Stop(hold),
                FaultKind::LinkDown => Fault::LinkDown(hold),
            };
            let node = rng.random_range(0..plan.nodes);
            planned.push(Planned { at, fault, node });
            let gap = rng.random_range(millis(plan.gap_min)..=millis(plan.gap_max));
            let held = match fault {
                Fault::KillRestart => Duration::ZERO,
                Fault::Stop(d) | Fault::LinkDown(d) => d,
            };
            at += held + Duration::from_millis(gap);
        }
        Self {
            seed,
            planned,
            applied: Vec::new(),
        }
    }

    /// The seed it was drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The faults, in order.
    pub fn planned(&self) -> &[Planned] {
        &self.planned
    }

    /// Apply every fault at its offset from now, to `nodes[planned.node]`
    /// (`net` cuts links). `between` runs after each fault with its index
    /// (to check progress or record state); an error from it or from a
    /// fault stops the schedule.
    pub fn run(
        &mut self,
        nodes: &mut [Node],
        net: Option<&Net>,
        mut between: impl FnMut(usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        for (index, planned) in self.planned.clone().into_iter().enumerate() {
            // Sleeping here schedules the fault; it waits for no condition.
            if let Some(wait) = planned.at.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let node = nodes.get_mut(planned.node).with_context(|| {
                format!(
                    "the schedule names node {}, which is not given",
                    planned.node
                )
            })?;
            let began = start.elapsed();
            self.applied
                .push((began, format!("{} on node {}", planned.fault, planned.node)));
            match planned.fault {
                Fault::KillRestart => {
                    node.sigkill()?;
                    node.restart()?;
                }
                Fault::Stop(hold) => {
                    node.sigstop()?;
                    std::thread::sleep(hold);
                    node.sigcont()?;
                }
                Fault::LinkDown(hold) => {
                    let net = net.context("a link fault needs the Net")?;
                    let node_net = node
                        .net()
                        .with_context(|| format!("node {} has no namespace", planned.node))?
                        .clone();
                    net.link_down(&node_net)?;
                    std::thread::sleep(hold);
                    net.link_up(&node_net)?;
                }
            }
            if let Some((_, what)) = self.applied.last_mut() {
                what.push_str(&format!(" (done at {:.3}s)", start.elapsed().as_secs_f64()));
            }
            between(index)?;
        }
        Ok(())
    }

    /// How to replay this run, and the faults actually applied so far.
    pub fn report(&self) -> String {
        let mut text = format!("replay with {SEED_ENV}={}\nfaults applied:\n", self.seed);
        if self.applied.is_empty() {
            text.push_str("  (none)\n");
        }
        for (at, what) in &self.applied {
            text.push_str(&format!("  +{:.3}s {what}\n", at.as_secs_f64()));
        }
        text
    }

    /// `result`, with the replay report attached to an error.
    pub fn explain<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        result.map_err(|err| err.context(self.report()))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
