//! Transaction check-back, from the application's side: a service that tells
//! the broker whether a transaction's local work committed, and the
//! application that produces the transactions. It is a reference for
//! application developers, and the integration tests run it as real
//! processes; it is not a production service.
//!
//! # The problem
//!
//! An application that places an order sends a record to Kafka and records
//! the order in its own database. Both must happen, or neither. It sends the
//! record inside a Kafka transaction, does its local work, and then commits
//! the transaction. If the application dies after its local work but before
//! the commit, the transaction stays open: read_committed consumers never see
//! the record, although the order exists. Kafka alone would abort the
//! transaction at its timeout and lose the record.
//!
//! # What the broker asks
//!
//! A Weir broker with `weir.txn.checkback.url` set asks the application
//! instead, as RocketMQ does. When a transaction times out (its producer went
//! quiet for `transaction.timeout.ms`), or the coordinator finds a transaction
//! open after a restart, the broker POSTs it as JSON to that URL:
//!
//! ```text
//! POST /check HTTP/1.1
//! Content-Type: application/json
//!
//! {"transactional_id": "orders-app-1", "producer_id": 4000, "producer_epoch": 0,
//!  "partitions": [{"topic": "orders", "partition": 0}],
//!  "keys": ["order-42"], "check": 1, "reason": "timeout"}
//! ```
//!
//! - `keys`: the distinct values of the `weir.txn-key` header on the
//!   transaction's records (possibly none). The application puts on each
//!   record the id of the local work it belongs to, so that the service can
//!   look that work up.
//! - `check`: how many times this transaction has been asked about, from 1.
//! - `reason`: `timeout` or `recovered` (found open after a restart).
//!
//! A service must ignore fields it does not know: more may be added.
//!
//! # What to answer
//!
//! HTTP 200 with a JSON body:
//!
//! - `{"action": "commit"}`: the local work committed. The broker commits
//!   the transaction, and its records become visible.
//! - `{"action": "abort"}`: the local work failed, or never will happen. The
//!   broker aborts the transaction.
//! - `{"action": "unknown"}`: not decided yet (the work may still be running).
//!   The broker asks again later, with backoff, up to
//!   `weir.txn.checkback.max.checks` checks (default 15). After the last one,
//!   `weir.txn.checkback.default.action` (default `abort`) decides.
//!
//! The broker counts any other answer (another status, a body it cannot read,
//! no answer in time) as a failed check, and retries it. Answer only from
//! durable state, and never change an answer once it has been given: the same
//! transaction may be asked about again after a broker restart.
//!
//! # Why the local work comes after the last send
//!
//! The application waits until every record of the transaction is
//! acknowledged, then does its local work in one local transaction, then
//! commits the Kafka transaction straight away. So "the local work committed"
//! implies "every record is in the log", and a service that answers `commit`
//! from the local work never commits a transaction with records missing. A
//! producer that dies mid-send leaves no local work, so the service answers
//! `unknown` and the transaction is aborted in the end. Committing straight
//! after the local work keeps short the window in which the two disagree, and
//! check-back closes that window when the application dies inside it.
//!
//! # This example
//!
//! - `serve`: the check-back service, over a SQLite table
//!   `orders(order_id, status)`. Every key `completed` answers `commit`; any
//!   key `failed` answers `abort`; otherwise (no keys, or an order not recorded
//!   yet) `unknown`.
//! - `order`: the application. It sends one record for an order, with the
//!   order's id as its `weir.txn-key`, records the order, and commits (or
//!   aborts when the order failed). `--crash` makes it die at either step, as
//!   a real application might.
//! - `record`: records an order's status by hand, as an operator (or a test)
//!   finishing the local work later would, turning `unknown` into `commit`.
//!
//! # Running it
//!
//! ```sh
//! cargo run --example checkback_orders -- serve --db /tmp/orders.db --listen 127.0.0.1:8088
//! cargo run --release -- serve --set weir.txn.checkback.url=http://127.0.0.1:8088/check
//! cargo run --example checkback_orders -- order --bootstrap-server 127.0.0.1:9092 \
//!     --topic orders --transactional-id orders-app-1 --order order-42 \
//!     --db /tmp/orders.db --crash after-local-work
//! ```
//!
//! About ten seconds later (the transaction timeout) the service prints
//! `check orders-app-1 #1 reason=timeout keys=order-42 -> commit`, and the
//! record becomes visible to read_committed consumers.
//!
//! A production service would add what this one leaves out: authentication
//! and TLS, a connection pool, a limit on the keys it looks up, and enough
//! availability that the broker does not fall back to its default action
//! while the service is down.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::{Parser, Subcommand, ValueEnum};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rusqlite::{Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};

/// The record header whose values the broker sends as `keys`.
const TXN_KEY_HEADER: &str = "weir.txn-key";
/// How long a SQLite statement waits for another process's lock (`serve`
/// reads while `order` and `record` write the same file). Well under the
/// broker's timeout for one check, so a database held too long answers 500
/// rather than an answer that comes too late.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 2_000;
/// How long `init_transactions`, `commit_transaction` and
/// `abort_transaction` may take.
const TXN_CALL_TIMEOUT_MS: u64 = 30_000;

const EXAMPLES: &str = "\
Examples (from the source tree, `cargo run --example checkback_orders -- ARGS`):
  # The service, and a broker that asks it:
  checkback_orders serve --db /tmp/orders.db --listen 127.0.0.1:8088
  weir serve --set weir.txn.checkback.url=http://127.0.0.1:8088/check

  # An order that commits; one that fails and aborts:
  checkback_orders order --bootstrap-server 127.0.0.1:9092 --topic orders \\
      --transactional-id orders-app-1 --order order-42 --db /tmp/orders.db
  checkback_orders order --bootstrap-server 127.0.0.1:9092 --topic orders \\
      --transactional-id orders-app-1 --order order-43 --db /tmp/orders.db --local-work fail

  # The application dies after its local work: at the transaction's timeout
  # the broker asks the service, which answers commit.
  checkback_orders order --bootstrap-server 127.0.0.1:9092 --topic orders \\
      --transactional-id orders-app-1 --order order-44 --db /tmp/orders.db \\
      --crash after-local-work

  # It dies before: the service answers unknown until the order is recorded.
  checkback_orders record --db /tmp/orders.db --order order-45 --status completed";

/// Transaction check-back for Weir: the service that answers the broker, and
/// the application it answers for.
///
/// When a transactional producer vanishes mid-transaction, or the coordinator
/// finds a transaction open after a restart, a broker with
/// `weir.txn.checkback.url` set POSTs the transaction (its `weir.txn-key`
/// header values as `keys`) to that URL and asks whether the application's
/// local work committed. The service answers `commit`, `abort` or `unknown`;
/// `unknown` is asked again with backoff, up to `weir.txn.checkback.max.checks`
/// (default 15), after which `weir.txn.checkback.default.action` (default
/// abort) decides.
///
/// The application sends its records, waits until they are acknowledged, does
/// its local work, and then commits: a service that finds the local work done
/// knows every record was sent. This is a reference, not a production service.
#[derive(Debug, Parser)]
#[command(name = "checkback_orders", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer the broker's check-back requests from the orders table.
    ///
    /// POST /check: every key's order `completed` answers commit; any key's
    /// order `failed` answers abort; no keys, or an order not recorded yet,
    /// answers unknown. A body that is not a check request gets 400.
    ///
    /// Prints `listening on http://ADDR/check` once bound, then one line per
    /// answer: `check ID #N reason=R keys=K1,K2 -> ACTION`.
    Serve(ServeArgs),
    /// Place an order as the application does: send, do local work, commit.
    ///
    /// In one Kafka transaction it sends one record (key and `weir.txn-key`
    /// header: the order's id) and waits for its acknowledgement. Then it
    /// records the order in SQLite (`completed`, or `failed` with
    /// `--local-work fail`), and commits the transaction, or aborts it when the
    /// order failed. `--crash` aborts the process after the send or after the
    /// local work, leaving the transaction open for the broker to check back.
    Order(OrderArgs),
    /// Record an order's status, as finishing the local work later would.
    ///
    /// Inserts or replaces the row, so that the next check of a transaction
    /// with this key answers from it (for example turning unknown into
    /// commit). Changing a status the service has already answered from
    /// breaks the promise that an answer never changes.
    Record(RecordArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The SQLite file of orders (created if missing).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(Debug, clap::Args)]
struct OrderArgs {
    /// The broker to bootstrap from.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// The topic the order's record goes to.
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// The producer's transactional id.
    #[arg(long, value_name = "ID")]
    transactional_id: String,
    /// The order's id: the record's key, its `weir.txn-key`, and the row's key.
    #[arg(long, value_name = "ORDER_ID")]
    order: String,
    /// The SQLite file of orders (created if missing).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Whether the local work succeeds (`completed`, then commit) or the
    /// order fails, say its payment is declined (`failed`, then abort).
    #[arg(long, value_enum, default_value_t = LocalWork::Ok)]
    local_work: LocalWork,
    /// Abort the process at this point, leaving the transaction open.
    #[arg(long, value_enum)]
    crash: Option<Crash>,
    /// The producer's `transaction.timeout.ms`: how long the broker waits for
    /// a silent producer before it checks back.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1_000..=i64::from(i32::MAX)))]
    transaction_timeout_ms: u32,
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    /// The SQLite file of orders (created if missing).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// The order's id.
    #[arg(long, value_name = "ORDER_ID")]
    order: String,
    /// The order's status.
    #[arg(long, value_enum)]
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LocalWork {
    /// The order completes.
    Ok,
    /// The order fails, and the application records that it failed.
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Crash {
    /// After the record is acknowledged, before any local work.
    AfterSend,
    /// After the local work committed, before the Kafka transaction ends.
    AfterLocalWork,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Status {
    Completed,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Order(args) => order(&args),
        Command::Record(args) => record(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Open the orders database, creating its table if missing.
///
/// WAL lets `serve` read while another process writes; `synchronous=FULL`
/// makes the local work durable before the Kafka commit, since the service
/// answers from it after a crash.
fn open_db(path: &Path) -> anyhow::Result<Connection> {
    let db = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    db.busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))?;
    let mode: String = db.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{} cannot use WAL (journal_mode is {mode})", path.display());
    }
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (
             order_id TEXT PRIMARY KEY,
             status TEXT NOT NULL CHECK (status IN ('completed', 'failed'))
         )",
    )
    .context("cannot create the orders table")?;
    Ok(db)
}

/// Print one line on stdout and flush it: tests read these lines as they come.
fn say(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

// ---- serve: the check-back service ----

/// The broker's check-back request. Fields not named here are ignored.
///
/// The fields this service does not use are named all the same: they
/// document the contract, and a request without them is refused as malformed.
#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "fields named for the contract; not all are read")]
struct CheckRequest {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TopicPartition>,
    keys: Vec<String>,
    check: u32,
    /// `timeout` or `recovered`; a string, so a reason added later still
    /// parses.
    reason: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "fields named for the contract; not read")]
struct TopicPartition {
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Commit,
    Abort,
    Unknown,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Commit => "commit",
            Action::Abort => "abort",
            Action::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Serialize)]
struct CheckAnswer {
    action: Action,
}

type Db = Arc<Mutex<Connection>>;

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let db: Db = Arc::new(Mutex::new(open_db(&args.db)?));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        say(format_args!("listening on http://{addr}/check"))?;
        let app = Router::new().route("/check", post(check)).with_state(db);
        axum::serve(listener, app)
            .await
            .context("the HTTP server failed")
    })
}

/// `POST /check`. A database error answers 500, never a guess: the broker
/// counts it as a failed check and asks again.
async fn check(
    State(db): State<Db>,
    body: Result<Json<CheckRequest>, JsonRejection>,
) -> Result<Json<CheckAnswer>, (StatusCode, String)> {
    let Json(request) = body.map_err(|rejection| {
        // axum answers well-formed JSON of the wrong shape with 422; to the
        // contract it is as malformed as bad JSON.
        let status = match rejection {
            JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
            _ => rejection.status(),
        };
        (status, rejection.body_text())
    })?;
    let keys = request.keys.clone();
    // SQLite blocks: off the async workers.
    let action = tokio::task::spawn_blocking(move || decide(&db, &keys))
        .await
        .map_err(internal_error)?
        .map_err(internal_error)?;
    say(format_args!(
        "check {} #{} reason={} keys={} -> {}",
        request.transactional_id,
        request.check,
        request.reason,
        request.keys.join(","),
        action.as_str()
    ))
    .map_err(internal_error)?;
    Ok(Json(CheckAnswer { action }))
}

fn internal_error(err: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

/// The answer for a transaction whose records carry `keys`: abort if any
/// order failed, commit if every order completed, otherwise unknown.
///
/// The keys are read in one read transaction, so the answer comes from one
/// snapshot even while `order` writes. Their number is bounded by axum's
/// request body limit (2 MB).
fn decide(db: &Mutex<Connection>, keys: &[String]) -> anyhow::Result<Action> {
    if keys.is_empty() {
        // Nothing to look up: the transaction cannot be tied to local work.
        return Ok(Action::Unknown);
    }
    let mut db = db
        .lock()
        .map_err(|_| anyhow!("a check panicked holding the database"))?;
    let snapshot = db.transaction()?;
    let mut every_completed = true;
    {
        let mut status_of = snapshot.prepare("SELECT status FROM orders WHERE order_id = ?1")?;
        for key in keys {
            let status: Option<String> = status_of.query_row([key], |row| row.get(0)).optional()?;
            match status.as_deref() {
                Some("failed") => return Ok(Action::Abort),
                Some("completed") => {}
                None => every_completed = false,
                Some(other) => bail!("order {key} has status {other:?}"),
            }
        }
    }
    snapshot.finish()?;
    Ok(if every_completed {
        Action::Commit
    } else {
        Action::Unknown
    })
}

// ---- order: the application ----

/// Place one order: the pattern an application follows.
///
/// 1. Begin a Kafka transaction and send the order's record, its id in the
///    `weir.txn-key` header, and wait until it is acknowledged.
/// 2. Do the local work in one SQLite transaction: record the order as
///    `completed`, or as `failed` when the order fails (say its payment is
///    declined). A failure is recorded too, so that a check-back after a
///    crash answers abort rather than unknown.
/// 3. Commit the Kafka transaction, or abort it when the order failed.
///
/// The local work comes after the last send and just before the commit. So
/// when the service finds the local work committed, every record of the
/// transaction was already sent and acknowledged, and answering commit
/// publishes all of them. Had the local work come first, a crash mid-send
/// would leave a committed order whose transaction misses records, and the
/// service would commit it. And the shorter the time between the local
/// commit and the Kafka commit, the fewer transactions a crash leaves for
/// check-back to decide.
fn order(args: &OrderArgs) -> anyhow::Result<()> {
    let mut db = open_db(&args.db)?;
    let call_timeout = Duration::from_millis(TXN_CALL_TIMEOUT_MS);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_server)
        .set("transactional.id", &args.transactional_id)
        .set(
            "transaction.timeout.ms",
            args.transaction_timeout_ms.to_string(),
        )
        .create()
        .context("cannot create the transactional producer")?;
    producer
        .init_transactions(call_timeout)
        .context("init_transactions")?;
    producer.begin_transaction().context("begin_transaction")?;
    let sent = send_order(&producer, args)?;
    if args.crash == Some(Crash::AfterSend) {
        crash(&args.order, &sent, "after-send");
    }
    let status = match args.local_work {
        LocalWork::Ok => Status::Completed,
        LocalWork::Fail => Status::Failed,
    };
    if let Err(err) = insert_order(&mut db, &args.order, status) {
        // No local work: nothing of the transaction may become visible.
        let aborted = producer.abort_transaction(call_timeout);
        return Err(match aborted {
            Ok(()) => err.context(format!(
                "cannot record order {}; transaction aborted",
                args.order
            )),
            Err(abort) => err.context(format!(
                "cannot record order {}, and abort_transaction failed ({abort})",
                args.order
            )),
        });
    }
    if args.crash == Some(Crash::AfterLocalWork) {
        crash(&args.order, &sent, "after-local-work");
    }
    let outcome = match status {
        Status::Completed => {
            producer
                .commit_transaction(call_timeout)
                .context("commit_transaction")?;
            "committed"
        }
        Status::Failed => {
            producer
                .abort_transaction(call_timeout)
                .context("abort_transaction")?;
            "aborted"
        }
    };
    say(format_args!(
        "order {}: sent {sent}; recorded {}; transaction {outcome}",
        args.order,
        status.as_str()
    ))?;
    Ok(())
}

/// Send the order's record and wait until it is acknowledged. Returns where
/// it went, as `TOPIC/PARTITION@OFFSET`.
fn send_order(producer: &FutureProducer, args: &OrderArgs) -> anyhow::Result<String> {
    let value = serde_json::json!({"order_id": args.order, "status": "placed"}).to_string();
    let headers = OwnedHeaders::new().insert(Header {
        key: TXN_KEY_HEADER,
        value: Some(args.order.as_str()),
    });
    let record = FutureRecord::to(&args.topic)
        .key(&args.order)
        .payload(&value)
        .headers(headers);
    // The delivery future needs no more than a current-thread runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let delivery = runtime
        .block_on(producer.send(record, Duration::ZERO))
        .map_err(|(err, _record)| err)
        .with_context(|| format!("cannot send order {} to {}", args.order, args.topic))?;
    Ok(format!(
        "{}/{}@{}",
        args.topic, delivery.partition, delivery.offset
    ))
}

/// Record the order in one local transaction.
fn insert_order(db: &mut Connection, order_id: &str, status: Status) -> anyhow::Result<()> {
    let local = db.transaction()?;
    local.execute(
        "INSERT INTO orders (order_id, status) VALUES (?1, ?2)",
        [order_id, status.as_str()],
    )?;
    local.commit()?;
    Ok(())
}

/// Die as a crashed application would: no EndTxn, no cleanup. The line says
/// how far it got.
fn crash(order_id: &str, sent: &str, at: &str) -> ! {
    // Dying either way: a stdout that cannot be written changes nothing.
    let _ = say(format_args!("order {order_id}: sent {sent}; crashing {at}"));
    std::process::abort()
}

// ---- record: finishing the local work by hand ----

fn record(args: &RecordArgs) -> anyhow::Result<()> {
    let db = open_db(&args.db)?;
    db.execute(
        "INSERT INTO orders (order_id, status) VALUES (?1, ?2)
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status",
        [args.order.as_str(), args.status.as_str()],
    )
    .with_context(|| format!("cannot record order {}", args.order))?;
    say(format_args!(
        "order {}: recorded {}",
        args.order,
        args.status.as_str()
    ))?;
    Ok(())
}
