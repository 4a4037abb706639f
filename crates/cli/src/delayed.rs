//! `weir delayed`: the delayed records a broker holds back (produced with
//! `weir.delay-ms` or `weir.deliver-at-ms`, see `weir produce --delay`):
//! `list` shows the earliest pending ones without delivering them, and
//! `cancel` stops one from ever being delivered. Both ask the broker's
//! admin API (`--admin-url`); the Kafka protocol has no request for them.
//! With `--json` each prints the API's JSON document (docs/cli.md).

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::admin_api::AdminApi;
use crate::{Result, print_json};

/// The most records `list --limit` may ask for (the broker's own bound).
const LIST_MAX: usize = 1_000;
/// Bytes of each key, value and header value the broker sends for `list`.
const SHOWN_BYTES: usize = 1_024;
/// Characters of a key or value one table cell shows.
const CELL_CHARS_MAX: usize = 40;

const DELAYED_EXAMPLES: &str = "\
Examples:
  weir produce orders --delay 30m < orders.txt
  weir delayed list orders
  weir delayed list orders --partition 2 --limit 100 --json
  weir delayed cancel orders --partition 2 --offset 1234

A pending record is named by its partition and offset (the offset Produce
acknowledged it at); consumers get a copy of it at a later offset once it
is due, with the header weir.delayed-from-offset giving that offset.

These commands ask the broker's HTTP admin API (`weir serve --admin-listen`):
--admin-url (or WEIR_ADMIN_URL), by default port 9644 on the host of the
first of --brokers. A cancel must go to the admin API of the partition's
leader. A secured admin API takes --admin-token (or WEIR_ADMIN_TOKEN), and
over https --admin-ca, --admin-cert and --admin-key.";

/// `weir delayed`.
#[derive(Debug, Args)]
#[command(after_help = DELAYED_EXAMPLES)]
pub struct DelayedArgs {
    #[command(subcommand)]
    command: DelayedCommand,
    /// Print the result as one JSON document (schema in docs/cli.md).
    #[arg(long, global = true)]
    json: bool,
}

/// `weir delayed` subcommands.
#[derive(Debug, Subcommand)]
pub enum DelayedCommand {
    /// Show a topic's pending delayed records, earliest due first, without
    /// delivering them.
    #[command(after_help = "\
Examples:
  weir delayed list orders
  weir delayed list orders --partition 0 --limit 5
  weir delayed list orders --json | jq '.records[].offset'

Prints the topic's pending count and next due time, then the earliest
pending records: partition, offset, due time, key and value (cut to 40
characters; --json gives up to 1 KiB of each).")]
    List(ListArgs),
    /// Cancel one pending delayed record: it is never delivered.
    #[command(after_help = "\
Examples:
  weir delayed cancel orders --partition 0 --offset 1234

Fails (exit code 1) when the record is no longer pending: already
delivered, being delivered, or cancelled before. Succeeds once the cancel is
committed; it survives restarts and, in a cluster, failovers.")]
    Cancel(CancelArgs),
}

/// `weir delayed list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The topic.
    topic: String,
    /// Only this partition's records.
    #[arg(long)]
    partition: Option<i32>,
    /// How many records to show, 0 for the counts alone.
    #[arg(long, default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=LIST_MAX as u64))]
    limit: u64,
}

/// `weir delayed cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The topic.
    topic: String,
    /// The record's partition.
    #[arg(long)]
    partition: i32,
    /// The record's offset (where Produce put it).
    #[arg(long)]
    offset: i64,
}

/// Runs a `weir delayed` command against the admin API `admin` names.
pub fn run(admin: &crate::admin_api::AdminTarget, args: DelayedArgs) -> Result<()> {
    let api = AdminApi::new(admin)?;
    match args.command {
        DelayedCommand::List(list_args) => list(&api, &list_args, args.json),
        DelayedCommand::Cancel(cancel_args) => cancel(&api, &cancel_args, args.json),
    }
}

/// The topic's pending delayed records as the admin API gives them:
/// counts, next due time, and the earliest `limit` records.
pub(crate) fn pending(
    api: &AdminApi,
    topic: &str,
    partition: Option<i32>,
    limit: u64,
) -> Result<Value> {
    let mut query = vec![
        ("limit", limit.to_string()),
        ("bytes", SHOWN_BYTES.to_string()),
    ];
    if let Some(p) = partition {
        query.push(("partition", p.to_string()));
    }
    api.get(&["v1", "topics", topic, "delayed"], &query)
}

fn list(api: &AdminApi, args: &ListArgs, json: bool) -> Result<()> {
    let answer = pending(api, &args.topic, args.partition, args.limit)?;
    if json {
        return print_json(&answer);
    }
    let mut out = format!("topic: {}\n{}\n", args.topic, summary_line(&answer));
    let records = answer["records"].as_array().map_or(&[][..], Vec::as_slice);
    if !records.is_empty() {
        let mut rows = vec![
            ["PARTITION", "OFFSET", "DUE", "KEY", "VALUE"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for record in records {
            let (key, value) = match record["error"].as_str() {
                Some(error) => ("-".to_owned(), format!("(unreadable: {error})")),
                None => (cell(&record["key"]), cell(&record["value"])),
            };
            rows.push(vec![
                record["partition"].to_string(),
                record["offset"].to_string(),
                record["due_ms"]
                    .as_i64()
                    .map_or_else(|| "-".into(), instant),
                key,
                value,
            ]);
        }
        out.push('\n');
        out.push_str(&super::table(&rows));
        if answer["records_cut"] == true {
            out.push_str("(fewer records than asked: those shown hold the 4 MiB one answer may)\n");
        }
        if answer["records_exact"] == false {
            out.push_str(
                "(the schedule is too large to read in one answer: these records are pending, \
                 but there may be earlier ones)\n",
            );
        }
    }
    super::print_out(&out)?;
    Ok(())
}

fn cancel(api: &AdminApi, args: &CancelArgs, json: bool) -> Result<()> {
    let (partition, offset) = (args.partition.to_string(), args.offset.to_string());
    let answer = api.delete(&[
        "v1",
        "topics",
        &args.topic,
        "partitions",
        &partition,
        "delayed",
        &offset,
    ])?;
    if json {
        return print_json(&answer);
    }
    super::print_out(&format!(
        "cancelled the delayed record at offset {} of {}-{} (cancel marker at offset {})\n",
        args.offset, args.topic, args.partition, answer["marker_offset"]
    ))?;
    Ok(())
}

/// `pending: N, next due AT` from the admin API's answer.
pub(crate) fn summary_line(answer: &Value) -> String {
    let pending = answer["pending"].as_u64().unwrap_or(0);
    let next = match answer["next_due_ms"].as_i64() {
        Some(ms) => format!(", next due {}", instant(ms)),
        None if pending > 0 => ", next due beyond what was read".to_owned(),
        None => String::new(),
    };
    let unheld = answer["partitions"]
        .as_array()
        .map_or(0, |ps| ps.iter().filter(|p| p["pending"].is_null()).count());
    let note = match unheld {
        0 => String::new(),
        n => format!(" ({n} partitions are not on this broker and not counted)"),
    };
    format!("delayed records pending: {pending}{next}{note}")
}

/// Milliseconds since the epoch as RFC 3339 UTC.
fn instant(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

/// A key or value as the admin API spells bytes (a string, `null`, or
/// `{"base64": ...}`), cut for a table cell.
fn cell(bytes: &Value) -> String {
    let text = match bytes {
        Value::Null => return "(null)".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut shown: String = text
        .chars()
        .take(CELL_CHARS_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > CELL_CHARS_MAX {
        shown.push_str("...");
    }
    shown
}
