//! `weir produce` and `weir consume` as scripts use them, against a real
//! `weir serve`: lines in, JSON lines out (keys, headers, bytes that are
//! not UTF-8), where consuming starts and stops (times with and without a
//! zone), the exit code when a record fails, tagged records read through a
//! view, and delayed records (`--delay`, `--deliver-at`) seen only when due.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use common::Broker;
use serde_json::{Value, json};

use common::cli::{weir, weir_ok};

/// `weir consume ARGS --format json`, parsed line by line.
fn consume_json(broker: &Broker, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut argv = vec!["consume"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--format", "json"]);
    weir_ok(broker, &argv, b"")?
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect()
}

fn values(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .filter_map(|record| record["value"].as_str())
        .collect()
}

#[test]
fn produced_lines_come_back_as_json_with_key_and_headers() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    let produced = weir(
        &broker,
        &[
            "produce",
            "t",
            "--key-separator",
            "::",
            "--header",
            "source=test",
            "--header",
            "source=again",
            "--acks",
            "all",
            "--compression",
            "zstd",
            "--idempotent",
        ],
        b"k1::v1\nk2::v::2\n",
    )?;
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(produced.status.success(), "{stderr}");
    assert!(stderr.contains("sent 2 records, 0 failed"), "{stderr}");

    let records = consume_json(&broker, &["t", "--from-beginning", "-n", "2"])?;
    let headers = json!([
        {"key": "source", "value": "test"},
        {"key": "source", "value": "again"},
    ]);
    assert_eq!(records.len(), 2, "{records:?}");
    for (offset, (key, value)) in [("k1", "v1"), ("k2", "v::2")].into_iter().enumerate() {
        let record = &records[offset];
        assert_eq!(record["key"], json!(key));
        assert_eq!(record["value"], json!(value));
        assert_eq!(record["headers"], headers);
        assert_eq!(record["partition"], json!(0));
        assert_eq!(record["offset"], json!(offset));
        assert!(
            record["timestamp"].as_i64().is_some_and(|ts| ts > 0),
            "{record}"
        );
    }
    Ok(())
}

#[test]
fn bytes_that_are_not_utf8_print_as_base64() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(
        &broker,
        &["topic", "create", "bin", "--partitions", "1"],
        b"",
    )?;
    weir_ok(
        &broker,
        &["produce", "bin", "--key-separator", "\t"],
        b"\xff\xfe\tplain\nplain\t\x00\x80\n",
    )?;
    let records = consume_json(&broker, &["bin", "--from-beginning"])?;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["key"], json!({"base64": "//4="}));
    assert_eq!(records[0]["value"], json!("plain"));
    assert_eq!(records[1]["key"], json!("plain"));
    assert_eq!(records[1]["value"], json!({"base64": "AIA="}));
    Ok(())
}

#[test]
fn consume_starts_where_asked_and_exits_at_the_end() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "2"], b"")?;
    weir_ok(&broker, &["produce", "t", "--partition", "0"], b"a\nb\nc\n")?;
    let first_batch = consume_json(&broker, &["t", "--from-beginning"])?;
    let last_ms = first_batch
        .iter()
        .filter_map(|record| record["timestamp"].as_i64())
        .max()
        .context("no timestamps")?;
    // Records of the second batch must be stamped after the first: wait for
    // the clock to pass it rather than for a fixed time.
    common::wait_until(Duration::from_secs(5), "the clock to tick", || {
        Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() > last_ms as u128)
    })?;
    weir_ok(&broker, &["produce", "t", "--partition", "1"], b"d\ne\n")?;

    // Without --follow the command ends at the end of both partitions.
    let all = consume_json(&broker, &["t", "--from-beginning"])?;
    let mut all_values = values(&all);
    all_values.sort_unstable();
    assert_eq!(all_values, ["a", "b", "c", "d", "e"]);

    let counted = weir_ok(
        &broker,
        &[
            "consume",
            "t",
            "--partition",
            "0",
            "--from-beginning",
            "-n",
            "2",
        ],
        b"",
    )?;
    assert_eq!(counted, "a\nb\n");

    let from_offset = consume_json(&broker, &["t", "--partition", "0", "--offset", "1"])?;
    assert_eq!(values(&from_offset), ["b", "c"]);

    let second_batch = consume_json(&broker, &["t", "--partition", "1", "--from-beginning"])?;
    let second_ms = second_batch
        .iter()
        .filter_map(|record| record["timestamp"].as_u64())
        .min()
        .context("no timestamps")?;
    let second_time =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(second_ms)).to_string();
    let by_time = consume_json(&broker, &["t", "--from-datetime", &second_time])?;
    assert_eq!(values(&by_time), ["d", "e"], "from {second_time}");
    // The same instant written with a +02:00 offset, and without a zone (UTC).
    let plus_two_hours = humantime::format_rfc3339_millis(
        UNIX_EPOCH + Duration::from_millis(second_ms + 2 * 3_600_000),
    )
    .to_string();
    let with_offset = format!("{}+02:00", plus_two_hours.trim_end_matches('Z'));
    let by_offset_time = consume_json(&broker, &["t", "--from-datetime", &with_offset])?;
    assert_eq!(values(&by_offset_time), ["d", "e"], "from {with_offset}");
    let zoneless = second_time.trim_end_matches('Z');
    let by_zoneless_time = consume_json(&broker, &["t", "--from-datetime", zoneless])?;
    assert_eq!(values(&by_zoneless_time), ["d", "e"], "from {zoneless}");
    let by_old_time = consume_json(&broker, &["t", "--from-datetime", "2020-01-01T00:00:00Z"])?;
    assert_eq!(by_old_time.len(), 5);

    // The default start is the end: nothing new, so nothing printed.
    let latest = weir_ok(&broker, &["consume", "t"], b"")?;
    assert_eq!(latest, "");
    Ok(())
}

#[test]
fn failed_records_are_counted_and_exit_1() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;

    let missing_separator = weir(
        &broker,
        &["produce", "t", "--key-separator", ":"],
        b"k:v\nnokey\n",
    )?;
    let stderr = String::from_utf8_lossy(&missing_separator.stderr);
    assert_eq!(missing_separator.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sent 1 records, 1 failed"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");

    let no_such_partition = weir(&broker, &["produce", "t", "--partition", "7"], b"x\n")?;
    let stderr = String::from_utf8_lossy(&no_such_partition.stderr);
    assert_eq!(no_such_partition.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sent 0 records, 1 failed"), "{stderr}");

    let missing_topic = weir(&broker, &["consume", "absent"], b"")?;
    assert_eq!(missing_topic.status.code(), Some(1));
    Ok(())
}

#[test]
fn tagged_records_are_served_by_a_view_and_delayed_ones_when_due() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    for (tag, lines) in [
        (Some("VIP"), &b"a\nb\n"[..]),
        (Some("IRON"), b"c\n"),
        (None, b"d\n"),
        (Some("GOLD"), b"e\n"),
    ] {
        let mut args = vec!["produce", "t", "--partition", "0"];
        if let Some(tag) = tag {
            args.extend(["--tag", tag]);
        }
        weir_ok(&broker, &args, lines)?;
    }
    let created = weir_ok(
        &broker,
        &[
            "topic",
            "create-view",
            "vip",
            "--source",
            "t",
            "--tags",
            "VIP || GOLD",
        ],
        b"",
    )?;
    assert!(created.contains("created view vip"), "{created}");
    let described = weir_ok(&broker, &["topic", "describe", "vip"], b"")?;
    assert!(
        described.contains("view of: t\ntags: VIP || GOLD\n"),
        "{described}"
    );
    let served = consume_json(&broker, &["vip", "--from-beginning"])?;
    assert_eq!(values(&served), ["a", "b", "e"]);
    let offsets: Vec<i64> = served.iter().filter_map(|r| r["offset"].as_i64()).collect();
    assert_eq!(offsets, [0, 1, 4], "the source's offsets");
    assert_eq!(
        served[2]["headers"],
        serde_json::json!([{"key": "weir.tag", "value": "GOLD"}])
    );
    assert_eq!(
        values(&consume_json(&broker, &["t", "--from-beginning"])?).len(),
        5
    );

    // Delayed: acknowledged now, hidden until due, then delivered as a copy.
    weir_ok(
        &broker,
        &["produce", "t", "--delay", "3s", "--tag", "VIP"],
        b"x\n",
    )?;
    let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 1_000;
    weir_ok(
        &broker,
        &["produce", "t", "--deliver-at", &at.to_string()],
        b"y\n",
    )?;
    // The pending records themselves (offsets 5 and 6) are never seen;
    // their copies come after them, when due.
    let now: Vec<(i64, String)> = consume_json(&broker, &["t", "--from-beginning"])?
        .iter()
        .filter_map(|r| Some((r["offset"].as_i64()?, r["value"].as_str()?.to_owned())))
        .filter(|(offset, _)| *offset < 7)
        .collect();
    let plain: Vec<(i64, String)> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    assert_eq!(now, plain, "nothing delayed is seen in place");
    let mut delivered = Vec::new();
    common::wait_until(Duration::from_secs(30), "the delayed records", || {
        delivered = consume_json(&broker, &["t", "--offset", "7"])?;
        Ok(delivered.len() == 2)
    })?;
    assert_eq!(values(&delivered), ["y", "x"], "in due order");
    let from: Vec<Option<&str>> = delivered
        .iter()
        .map(|r| {
            r["headers"]
                .as_array()?
                .iter()
                .find(|h| h["key"] == "weir.delayed-from-offset")?["value"]
                .as_str()
        })
        .collect();
    assert_eq!(from, [Some("6"), Some("5")]);
    assert_eq!(
        delivered[1]["headers"][0],
        json!({"key": "weir.tag", "value": "VIP"})
    );
    let help = weir_ok(&broker, &["produce", "--help"], b"")?;
    for promise in ["--delay", "--deliver-at", "weir.delay-ms", "--tag"] {
        assert!(help.contains(promise), "help lacks {promise}:\n{help}");
    }
    Ok(())
}
