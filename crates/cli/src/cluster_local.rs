//! `weir cluster local`: a cluster of `weir serve` processes on this
//! machine, for trying a cluster out. Node `i` (from 1) listens for Kafka
//! clients on `--port + 100·(i−1)`, for its quorum peers on the port after
//! it and for the admin API on the port after that, keeps its data in
//! `<data dir>/node-i`, and runs both roles.
//! Each node's log is shown with its name in front; Ctrl-C (or SIGTERM)
//! stops every node the way `weir serve` stops (controlled shutdown, log
//! flushed) and waits for them. A node that exits on its own stops the
//! others and fails the command. With `--json`, stdout carries one JSON
//! line when every node is ready and one when every node has stopped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{CliError, Result};

/// Most nodes `weir cluster local` starts.
const NODES_MAX: u16 = 9;
/// How long a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `weir cluster local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// How many nodes (each a broker and a controller).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=i64::from(NODES_MAX)))]
    nodes: u16,
    /// Folder for the nodes' data folders (node-1, node-2, ...); kept after
    /// the cluster stops, so the next start finds its topics again.
    #[arg(long, value_name = "DIR", default_value = "weir-cluster")]
    data_dir: PathBuf,
    /// Node 1's Kafka port; node i's is this + 100·(i−1), its controller
    /// port the one after its Kafka port, and its admin port the one after
    /// that.
    #[arg(long, default_value_t = 9092, value_parser = clap::value_parser!(u16).range(1..=64_000))]
    port: u16,
    /// Extra `weir serve` arguments for every node, e.g. --serve-arg=--set
    /// --serve-arg=min.insync.replicas=2 (repeatable).
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

/// One running node.
struct Node {
    id: u16,
    child: Child,
}

/// Runs `weir cluster local`; `json` for JSON lines on stdout.
pub fn run(args: LocalArgs, json: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    runtime.block_on(local(args, json))
}

async fn local(args: LocalArgs, json: bool) -> Result<()> {
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        what: "cannot find the weir executable".into(),
        source,
    })?;
    let kafka_port = |id: u16| args.port + 100 * (id - 1);
    // Each node's ports are its Kafka port and the two after it, 100 apart
    // from the next node's (NODES_MAX nodes and a --port of at most 64000
    // stay below 65536).
    let controller_port = |id: u16| kafka_port(id) + 1;
    let admin_port = |id: u16| kafka_port(id) + 2;
    // Unless the --serve-args choose it themselves.
    let admin_given = args
        .serve_args
        .iter()
        .any(|arg| arg == "--admin-listen" || arg.starts_with("--admin-listen="));
    let voters = (1..=args.nodes)
        .map(|id| format!("{id}@127.0.0.1:{}", controller_port(id)))
        .collect::<Vec<_>>()
        .join(",");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let dir = args.data_dir.join(format!("node-{id}"));
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", kafka_port(id))])
            .args(["--voters", &voters])
            .arg("--data-dir")
            .arg(&dir);
        if !admin_given {
            command.args(["--admin-listen", &format!("127.0.0.1:{}", admin_port(id))]);
        }
        command
            .args(&args.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| CliError::Io {
            what: format!("cannot start node {id}").into(),
            source,
        })?;
        forward(id, child.stdout.take(), lines_tx.clone());
        forward(id, child.stderr.take(), lines_tx.clone());
        nodes.push(Node { id, child });
    }
    drop(lines_tx);

    let bootstrap = (1..=args.nodes)
        .map(|id| format!("127.0.0.1:{}", kafka_port(id)))
        .collect::<Vec<_>>()
        .join(",");
    // The nodes' admin APIs, in node order; unknown here when --serve-args
    // chose them.
    let admin = (!admin_given).then(|| {
        (1..=args.nodes)
            .map(|id| format!("127.0.0.1:{}", admin_port(id)))
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut ready = 0u16;
    let started = tokio::time::Instant::now();
    let mut stopping = std::pin::pin!(stop_signal());
    let failed: Option<String> = loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else {
                    break Some("every node's output closed".into());
                };
                // The Kafka listener's line, not `admin listening on` or
                // `controller listening on`.
                let said = line.split_once("] ").map_or("", |(_, said)| said);
                if said.starts_with("listening on ") {
                    ready += 1;
                    if ready == args.nodes {
                        // Listening is not serving yet: each broker is
                        // fenced until its first heartbeat. Ready is when
                        // Metadata names them all.
                        let first = format!("127.0.0.1:{}", kafka_port(1));
                        let nodes_wanted = usize::from(args.nodes);
                        let registered = tokio::task::spawn_blocking(move || {
                            all_registered(&first, nodes_wanted, START_TIMEOUT)
                        });
                        if !registered.await.unwrap_or(false) {
                            break Some(format!(
                                "the brokers did not all register within {START_TIMEOUT:?}"
                            ));
                        }
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({
                                    "event": "ready",
                                    "nodes": args.nodes,
                                    "data_dir": args.data_dir.display().to_string(),
                                    "bootstrap": bootstrap,
                                    "admin": admin,
                                })
                            );
                        } else {
                            let admin = admin
                                .as_deref()
                                .map(|admin| format!("admin: {admin}\n"))
                                .unwrap_or_default();
                            println!(
                                "cluster of {} nodes ready; data in {}\nbootstrap: {bootstrap}\n\
                                 {admin}Ctrl-C stops every node.",
                                args.nodes,
                                args.data_dir.display()
                            );
                        }
                    }
                }
                eprintln!("{line}");
            }
            () = &mut stopping => break None,
            exited = first_exit(&mut nodes) => break Some(exited),
            () = tokio::time::sleep_until(started + START_TIMEOUT), if ready < args.nodes => {
                break Some(format!("the nodes did not all start within {START_TIMEOUT:?}"));
            }
        }
    };
    stop_all(&mut nodes, &mut lines).await;
    match failed {
        None => {
            if json {
                println!("{}", serde_json::json!({ "event": "stopped" }));
            } else {
                println!("every node stopped");
            }
            Ok(())
        }
        Some(why) => Err(CliError::Failed(format!(
            "the local cluster stopped: {why}"
        ))),
    }
}

/// Whether Metadata from `address` names `nodes` brokers (the unfenced
/// ones) before `limit` passes.
fn all_registered(address: &str, nodes: usize, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let listed = weir_client::Client::connect(address, &weir_client::Config::default())
            .and_then(|mut client| client.metadata(Some(&[])))
            .map(|m| m.brokers.len());
        if listed.is_ok_and(|n| n >= nodes) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Send each line of `stream` to `lines`, with the node's name in front.
fn forward(
    id: u16,
    stream: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send(format!("[node {id}] {line}")).is_err() {
                return;
            }
        }
    });
}

/// Completes on the first SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Completes when the first node exits, naming it and its exit status.
async fn first_exit(nodes: &mut [Node]) -> String {
    loop {
        for node in nodes.iter_mut() {
            if let Ok(Some(status)) = node.child.try_wait() {
                return format!("node {} exited ({status})", node.id);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM every node still running, then wait for each (killing one that
/// does not stop in time), showing their last log lines meanwhile.
async fn stop_all(nodes: &mut [Node], lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    for node in nodes.iter() {
        let pid = node
            .child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // Already gone is fine: the wait below collects it.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for node in nodes.iter_mut() {
        let waited = tokio::time::timeout(STOP_TIMEOUT, async {
            loop {
                tokio::select! {
                    status = node.child.wait() => return status,
                    Some(line) = lines.recv() => eprintln!("{line}"),
                }
            }
        })
        .await;
        if waited.is_err() {
            eprintln!(
                "node {} did not stop within {STOP_TIMEOUT:?}; killing it",
                node.id
            );
            let _ = node.child.kill().await;
        }
    }
    while let Ok(line) = lines.try_recv() {
        eprintln!("{line}");
    }
}
