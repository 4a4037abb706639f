//! Linux network namespaces for the fault tests (run as root): a [`Net`] owns
//! a bridge in the root namespace and, per node, a namespace joined to the
//! bridge by a veth pair, so a test can cut one node's link (a network
//! partition: packets are dropped, connections stall, nothing is refused)
//! while the test process and its Kafka clients reach every node through
//! the bridge.
//!
//! Each `Net` claims a /24 of `10.128.0.0/11` by creating a claim file with
//! the claiming process's id under [`CLAIMS_DIR`] (O_EXCL, so two test
//! binaries never share a subnet); the first index tried is derived from the
//! process id and a per-process counter. Interface and namespace names are
//! derived from the claimed index. A claim whose process is gone is a
//! leftover of a crashed run: its names are removed before they are reused,
//! and every `Net` sweeps such leftovers when it is created. Everything a
//! `Net` made is removed on drop, which also runs while a panic unwinds.
//! Claims and sweeps take a lock file, so one process's sweep never removes
//! what another process has just claimed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// Where subnet claims live (one file per claimed /24, holding the owner's pid).
pub const CLAIMS_DIR: &str = "/run/weir-test-nets";
/// The lock file under [`CLAIMS_DIR`] that serializes claims and sweeps.
const LOCK_FILE: &str = ".lock";
/// Number of /24 subnets the tests may claim (`10.128.0.0/11`).
pub const SUBNETS_MAX: u32 = 8192;
/// Nodes one `Net` may hold (keeps every interface name within 15 bytes).
pub const NODES_MAX: usize = 16;
/// Linux's limit on an interface name, in bytes (IFNAMSIZ - 1).
const IFNAME_BYTES_MAX: usize = 15;
/// The interface name of a node's end of its veth pair, inside its namespace.
const NODE_IFNAME: &str = "eth0";

/// Nets made by this process so far: with the process id, where the search
/// for a free subnet starts.
static NETS_MADE: AtomicU32 = AtomicU32::new(0);

/// A bridge in the root namespace (address `.1` of the claimed /24) and the
/// nodes' namespaces attached to it. Removed on drop.
pub struct Net {
    index: u32,
    bridge: String,
    claim: PathBuf,
    nodes: Vec<NodeNet>,
}

/// One node's network namespace and address.
#[derive(Debug, Clone)]
pub struct NodeNet {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// The node's address on the bridge's /24.
    pub ip: Ipv4Addr,
    /// The node's position in its `Net` (0-based).
    pub index: usize,
    /// The root-namespace end of the veth pair, enslaved to the bridge.
    host_ifname: String,
}

impl NodeNet {
    /// A command that runs `program` inside this node's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }
}

impl Net {
    /// Claim a subnet and create the bridge. Fails (never skips) when not
    /// run as root, since the fault tests need namespaces.
    pub fn new() -> anyhow::Result<Self> {
        require_root()?;
        std::fs::create_dir_all(CLAIMS_DIR)
            .with_context(|| format!("cannot create {CLAIMS_DIR}"))?;
        // Sweeping and claiming happen under one lock shared by every test
        // process, so a sweep never removes what another process just claimed.
        let lock_path = Path::new(CLAIMS_DIR).join(LOCK_FILE);
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        sweep_leftovers()?;
        let made = NETS_MADE.fetch_add(1, Ordering::SeqCst);
        let start = std::process::id().wrapping_mul(97).wrapping_add(made) % SUBNETS_MAX;
        let index = claim_subnet(start)?;
        let net = Self {
            index,
            bridge: bridge_name(index),
            claim: claim_path(index),
            nodes: Vec::new(),
        };
        // A leftover with the same names (a crashed run whose claim file was
        // lost) must not break this one.
        remove_names(index);
        drop(lock);
        let gateway = format!("{}/24", net.gateway());
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gateway, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// The bridge's own address (`.1`), the nodes' default route.
    pub fn gateway(&self) -> Ipv4Addr {
        subnet_address(self.index, 1)
    }

    /// Add a node: a namespace with `lo` up, a veth pair to the bridge, the
    /// next address of the subnet and a default route through the bridge.
    pub fn add_node(&mut self) -> anyhow::Result<NodeNet> {
        let index = self.nodes.len();
        if index >= NODES_MAX {
            bail!("a Net holds at most {NODES_MAX} nodes");
        }
        let node = NodeNet {
            ns: ns_name(self.index, index),
            ip: subnet_address(self.index, u8::try_from(index + 2)?),
            index,
            host_ifname: host_ifname(self.index, index),
        };
        // Pushed first, so drop removes whatever part of it was made.
        self.nodes.push(node.clone());
        let ns = node.ns.as_str();
        let address = format!("{}/24", node.ip);
        let gateway = self.gateway().to_string();
        ip(&["netns", "add", ns])?;
        ip(&[
            "link",
            "add",
            &node.host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            NODE_IFNAME,
            "netns",
            ns,
        ])?;
        ip(&["link", "set", &node.host_ifname, "master", &self.bridge])?;
        ip(&["link", "set", &node.host_ifname, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", &address, "dev", NODE_IFNAME])?;
        ip(&["-n", ns, "link", "set", NODE_IFNAME, "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
        Ok(node)
    }

    /// Take the node's link down at the bridge: its packets (both ways) are
    /// dropped, as with a pulled cable, so connections stall.
    pub fn link_down(&self, node: &NodeNet) -> anyhow::Result<()> {
        ip(&["link", "set", &self.own(node)?.host_ifname, "down"])
    }

    /// Bring the node's link back up.
    pub fn link_up(&self, node: &NodeNet) -> anyhow::Result<()> {
        ip(&["link", "set", &self.own(node)?.host_ifname, "up"])
    }

    /// A command that runs `program` inside `node`'s namespace.
    pub fn command(&self, node: &NodeNet, program: impl AsRef<std::ffi::OsStr>) -> Command {
        node.command(program)
    }

    /// The bridge's name (for checks that it is gone after drop).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    fn own<'a>(&'a self, node: &NodeNet) -> anyhow::Result<&'a NodeNet> {
        self.nodes
            .get(node.index)
            .filter(|own| own.ns == node.ns)
            .with_context(|| format!("node {} does not belong to this Net", node.ns))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in &self.nodes {
            // Deleting one end of a veth pair deletes both.
            let _ = ip(&["link", "del", &node.host_ifname]);
            let _ = ip(&["netns", "del", &node.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// Whether an interface named `name` exists in the root namespace.
pub fn link_exists(name: &str) -> bool {
    quiet_ip(&["link", "show", "dev", name])
}

/// Whether the network namespace `name` exists.
pub fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn require_root() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the effective user; libc's geteuid would need unsafe.
    let uid = std::fs::metadata("/proc/self")
        .context("cannot read /proc/self")?
        .uid();
    if uid != 0 {
        bail!(
            "the fault tests need root (network namespaces, veth pairs, a bridge); \
             this process runs as uid {uid}. CI runs them as root: run `sudo -E cargo test --test faults`"
        );
    }
    Ok(())
}

fn subnet_address(index: u32, host: u8) -> Ipv4Addr {
    debug_assert!(index < SUBNETS_MAX);
    // index 0..8192 spreads over 10.128.0.0 .. 10.159.255.0.
    let second = 128 + (index >> 8) as u8;
    let third = (index & 0xff) as u8;
    Ipv4Addr::new(10, second, third, host)
}

pub fn bridge_name(index: u32) -> String {
    checked_ifname(format!("wbr{index:04x}"))
}

fn host_ifname(index: u32, node: usize) -> String {
    checked_ifname(format!("wv{index:04x}n{node:x}"))
}

pub fn ns_name(index: u32, node: usize) -> String {
    format!("weir-{index:04x}-n{node:x}")
}

fn checked_ifname(name: String) -> String {
    assert!(
        name.len() <= IFNAME_BYTES_MAX,
        "interface name {name} is longer than {IFNAME_BYTES_MAX} bytes"
    );
    name
}

pub fn claim_path(index: u32) -> PathBuf {
    Path::new(CLAIMS_DIR).join(format!("{index:04x}"))
}

/// Claim the first free subnet from `start` on: create its claim file with
/// O_EXCL. A claim whose process is gone is cleaned and taken over.
fn claim_subnet(start: u32) -> anyhow::Result<u32> {
    let used = addresses_in_use()?;
    for step in 0..SUBNETS_MAX {
        let index = (start + step) % SUBNETS_MAX;
        let prefix = {
            let a = subnet_address(index, 0).octets();
            format!("{}.{}.{}.", a[0], a[1], a[2])
        };
        if used.iter().any(|address| address.starts_with(&prefix)) {
            continue;
        }
        let path = claim_path(index);
        match std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                use std::io::Write as _;
                write!(file, "{}", std::process::id())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(index);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if claim_owner_alive(&path) {
                    continue;
                }
                // A crashed run's claim: clean its names, then retry this index.
                remove_names(index);
                let _ = std::fs::remove_file(&path);
                if let Ok(mut file) = std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    use std::io::Write as _;
                    write!(file, "{}", std::process::id())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(index);
                }
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    bail!("no free test subnet in 10.128.0.0/11 ({SUBNETS_MAX} claimed under {CLAIMS_DIR})")
}

/// Whether the process named in a claim file still runs. A claim being
/// written right now (empty) counts as alive.
fn claim_owner_alive(path: &Path) -> bool {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => true,
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        },
        Err(_) => true,
    }
}

/// Remove the claims (and their bridges and namespaces) of processes that are gone.
fn sweep_leftovers() -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(CLAIMS_DIR).with_context(|| format!("cannot list {CLAIMS_DIR}"))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(index) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| u32::from_str_radix(n, 16).ok())
            .filter(|&i| i < SUBNETS_MAX)
        else {
            continue;
        };
        if !claim_owner_alive(&path) {
            remove_names(index);
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// Remove every interface and namespace a `Net` at `index` could have made
/// (errors ignored: most do not exist).
fn remove_names(index: u32) {
    for node in 0..NODES_MAX {
        let host = host_ifname(index, node);
        if link_exists(&host) {
            let _ = quiet_ip(&["link", "del", &host]);
        }
        let ns = ns_name(index, node);
        if ns_exists(&ns) {
            kill_processes_in(&ns);
            let _ = quiet_ip(&["netns", "del", &ns]);
        }
    }
    let bridge = bridge_name(index);
    if link_exists(&bridge) {
        let _ = quiet_ip(&["link", "del", &bridge]);
    }
}

/// SIGKILL the processes still running in a leftover namespace (brokers of
/// a test process that was itself killed, so its drops never ran).
fn kill_processes_in(ns: &str) {
    let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Every IPv4 address configured in the root namespace (`a.b.c.d`).
fn addresses_in_use() -> anyhow::Result<Vec<String>> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("cannot run `ip` (iproute2)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words
                .next()
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
        })
        .collect())
}

/// Run `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !output.status.success() {
        let mut message = format!("`ip {}` failed ({})", args.join(" "), output.status);
        let _ = write!(
            message,
            ": {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        bail!(message);
    }
    Ok(())
}

/// Run `ip ARGS` with no output; whether it succeeded.
fn quiet_ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
