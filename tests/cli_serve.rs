//! `weir serve` as a new user starts it: one broker per data folder (a
//! second one on the same folder is refused, naming the holder's PID, and
//! never touches the data), a start on a busy port fails before the data
//! folder is opened, settings that cannot be used are usage errors (exit 2)
//! found before anything is bound or opened, the TOML file takes Kafka's
//! dotted names in both spellings, the shipped example included, and
//! `--log-format json` writes every log line as a JSON object.

mod common;

use std::path::Path;

use anyhow::Context as _;
use common::Broker;
use common::cli::{serve_expecting_exit, weir_ok};
use serde_json::Value;

/// The line the broker logs once it has opened (and recovered) a commit log.
const OPENED_LOG: &str = "opened commit log";

/// `weir consume T --from-beginning` on `broker`, one value a line.
fn all_values(broker: &Broker, topic: &str) -> anyhow::Result<Vec<String>> {
    Ok(
        weir_ok(broker, &["consume", topic, "--from-beginning"], b"")?
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

fn lines(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("r{i}\n")).collect()
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused_and_names_the_holder() -> anyhow::Result<()> {
    let mut first = Broker::start(&[])?;
    weir_ok(&first, &["topic", "create", "t", "--partitions", "1"], b"")?;
    weir_ok(&first, &["produce", "t"], lines(0..50).as_bytes())?;
    let holder = first.pid().context("the first broker is not running")?;

    let data_dir = first.data_dir();
    let second = serve_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            path_str(&data_dir)?,
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid {holder}")), "{stderr}");
    assert!(stderr.contains("in use by another broker"), "{stderr}");
    assert!(
        !stderr.contains(OPENED_LOG),
        "the refused broker opened the log:\n{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("listening on"),
        "the refused broker served"
    );

    // The first broker keeps every record it acknowledged, before and after
    // the refused start, across a crash and restart.
    weir_ok(&first, &["produce", "t"], lines(50..100).as_bytes())?;
    first.restart()?;
    let expected: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_eq!(all_values(&first, "t")?, expected);
    Ok(())
}

#[test]
fn a_start_on_a_busy_port_fails_with_the_bind_error_before_touching_data() -> anyhow::Result<()> {
    let first = Broker::start(&[])?;
    weir_ok(&first, &["produce", "t"], lines(0..10).as_bytes())?;

    // On the live broker's own folder: the bind error, not the lock's, and
    // nothing opened.
    let data_dir = first.data_dir();
    let busy = serve_expecting_exit(
        &[
            "--listen",
            &first.bootstrap(),
            "--data-dir",
            path_str(&data_dir)?,
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains("another broker"), "{stderr}");
    assert!(
        !stderr.contains(OPENED_LOG),
        "the failed start opened the log:\n{stderr}"
    );

    // On a new folder: the folder is not even created.
    let scratch = tempfile::tempdir()?;
    let fresh = scratch.path().join("fresh");
    let busy = serve_expecting_exit(
        &[
            "--listen",
            &first.bootstrap(),
            "--data-dir",
            path_str(&fresh)?,
        ],
        &[],
    )?;
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        !fresh.exists(),
        "a failed start created {}",
        fresh.display()
    );

    let mut values = all_values(&first, "t")?;
    values.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
    Ok(())
}

/// Flags, environment, and what stderr must say.
type UsageCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn settings_that_cannot_be_used_are_usage_errors_before_anything_opens() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let data_dir = scratch.path().join("data");
    let data = path_str(&data_dir)?;
    let listen = ["--listen", "127.0.0.1:0", "--data-dir", data];
    let cases: &[UsageCase] = &[
        (&["--log-level", "verbose"], &[], "not a log level"),
        (
            &["--log-level", "info,weir_server=loud"],
            &[],
            "not a log level",
        ),
        (&[], &[("WEIR_LOG_LEVEL", "verbose")], "not a log level"),
        (&["--default-partitions", "0"], &[], "default-partitions"),
        (&["--set", "num.partitions"], &[], "KEY=VALUE"),
        (&["--set", "num.partitions=0"], &[], "num.partitions"),
        (
            &["--set", "log.retention.ms=forever"],
            &[],
            "log.retention.ms",
        ),
        (&["--admin-listen", "nowhere"], &[], "HOST:PORT"),
        (&["--log-format", "xml"], &[], "possible values: text, json"),
        (
            &[],
            &[("WEIR_LOG_FORMAT", "xml")],
            "possible values: text, json",
        ),
    ];
    for (args, envs, says) in cases {
        let mut argv = listen.to_vec();
        argv.extend_from_slice(args);
        let output = serve_expecting_exit(&argv, envs)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {envs:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} {envs:?}: {stderr}");
        assert!(!data_dir.exists(), "{args:?} created the data folder");
    }
    // The level message says what is valid.
    let output = serve_expecting_exit(&[&listen[..], &["--log-level", "verbose"]].concat(), &[])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for level in ["error", "warn", "info", "debug", "trace"] {
        assert!(stderr.contains(level), "{stderr}");
    }
    // The file's log_format gets the flag's check.
    let config = scratch.path().join("weir.toml");
    std::fs::write(&config, "log_format = \"xml\"\n")?;
    let output = serve_expecting_exit(
        &[&listen[..], &["--config", path_str(&config)?]].concat(),
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("log_format"), "{stderr}");
    assert!(
        !data_dir.exists(),
        "log_format = \"xml\" created the data folder"
    );
    let output = serve_expecting_exit(&["--listen", "notanaddr", "--data-dir", data], &[])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
    assert!(
        !data_dir.exists(),
        "--listen notanaddr created the data folder"
    );
    Ok(())
}

#[test]
fn log_format_json_writes_every_line_as_a_json_object_with_its_fields() -> anyhow::Result<()> {
    let mut broker = Broker::start(&["--log-format", "json"])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    weir_ok(&broker, &["produce", "t"], b"x\n")?;
    let status = broker.stop()?;
    assert!(status.success(), "{status}\n{}", broker.stderr_tail());

    let stderr = broker.stderr()?;
    let mut messages = Vec::new();
    let mut opened = None;
    for line in stderr.lines() {
        let event: Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON object: {line}"))?;
        assert!(event["timestamp"].is_string(), "no timestamp: {line}");
        assert!(event["level"].is_string(), "no level: {line}");
        assert!(event["target"].is_string(), "no target: {line}");
        let message = event["fields"]["message"]
            .as_str()
            .with_context(|| format!("no fields.message: {line}"))?;
        messages.push(message.to_owned());
        if message == OPENED_LOG {
            opened = Some(event);
        }
    }
    let opened = opened.with_context(|| format!("no {OPENED_LOG:?} line in:\n{stderr}"))?;
    assert_eq!(opened["level"], "INFO", "{opened}");
    assert_eq!(opened["target"], "weir_serve", "{opened}");
    // The event's fields, typed as logged.
    for field in [
        "partitions",
        "scanned_bytes",
        "truncated_bytes",
        "elapsed_ms",
    ] {
        assert!(opened["fields"][field].is_u64(), "{field}: {opened}");
    }
    assert!(
        messages.iter().any(|m| m == "shut down cleanly"),
        "{messages:?}"
    );
    Ok(())
}

/// `weir topic describe T --json`'s configs as name -> value.
fn topic_configs(broker: &Broker, topic: &str) -> anyhow::Result<Vec<(String, String)>> {
    let described: Value = serde_json::from_str(&weir_ok(
        broker,
        &["topic", "describe", topic, "--json"],
        b"",
    )?)?;
    Ok(described["configs"]
        .as_array()
        .context("no configs array")?
        .iter()
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_owned(),
                c["value"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

#[test]
fn the_config_file_takes_dotted_kafka_names_bare_or_quoted() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let path = scratch.path().join("weir.toml");
    std::fs::write(
        &path,
        "[broker]\nlog.retention.ms = 5000\n\"log.retention.bytes\" = 123456\n",
    )?;
    let broker = Broker::start(&["--config", path_str(&path)?])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    let configs = topic_configs(&broker, "t")?;
    assert!(
        configs.contains(&("retention.ms".to_owned(), "5000".to_owned())),
        "{configs:?}"
    );
    assert!(
        configs.contains(&("retention.bytes".to_owned(), "123456".to_owned())),
        "{configs:?}"
    );
    Ok(())
}

#[test]
fn the_shipped_example_config_starts_a_broker_as_it_is() -> anyhow::Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("weir.example.toml");
    // --listen and --data-dir (given by the helper) win over the file's.
    let broker = Broker::start(&["--config", path_str(&example)?])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "1"], b"")?;
    weir_ok(&broker, &["produce", "t"], b"x\n")?;
    assert_eq!(all_values(&broker, "t")?, ["x"]);
    Ok(())
}

#[test]
fn the_debian_package_config_starts_a_broker_as_it_is() -> anyhow::Result<()> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/debian/weir.toml");
    // --listen, --admin-listen and --data-dir (given by the helper) win over
    // the file's defaults and /var/lib/weir; scripts/test-package.sh runs it
    // installed.
    let broker = Broker::start(&["--config", path_str(&shipped)?])?;
    weir_ok(&broker, &["produce", "t"], b"x\n")?;
    assert_eq!(all_values(&broker, "t")?, ["x"]);
    Ok(())
}

#[test]
fn the_kubernetes_statefulset_uses_only_flags_and_configs_weir_serve_takes() -> anyhow::Result<()> {
    // deploy/k8s/weir.yaml cannot run here; it is kept in step with the
    // flags: each one its command line gives is one `weir serve` takes, and
    // a broker starts with its configs and log format.
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/weir.yaml"),
    )?;
    let command: Vec<&str> = manifest
        .lines()
        .skip_while(|line| !line.contains("exec weir serve"))
        .take_while(|line| line.trim_end().ends_with('\\') || line.contains("--"))
        .flat_map(str::split_whitespace)
        .collect();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--help"])
        .output()?;
    let help = String::from_utf8(help.stdout)?;
    let flags: Vec<&str> = command
        .iter()
        .copied()
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.len() >= 8, "the manifest's command line: {command:?}");
    for flag in &flags {
        assert!(
            help.contains(&format!("{flag} ")),
            "weir serve takes no {flag} (deploy/k8s/weir.yaml)"
        );
    }
    let mut args = vec!["--log-format", "json"];
    for pair in command.windows(2).filter(|w| w[0] == "--set") {
        args.extend(["--set", pair[1]]);
    }
    assert!(args.len() >= 6, "the manifest sets no config: {command:?}");
    // One node here: its replication factor of 3 fits only a cluster, so
    // the broker is only asked what it holds.
    let broker = Broker::start(&args)?;
    weir_ok(&broker, &["topic", "list"], b"")?;
    Ok(())
}

#[test]
fn a_data_dir_whose_metadata_is_gone_is_refused_and_its_partitions_kept() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    weir_ok(&broker, &["topic", "create", "t", "--partitions", "2"], b"")?;
    weir_ok(&broker, &["produce", "t"], lines(0..20).as_bytes())?;
    broker.stop()?;
    let data_dir = broker.data_dir();
    let index_files = |dir: &Path| -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(dir.join("index"))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
            .count())
    };
    let before = index_files(&data_dir)?;
    assert!(
        before >= 2,
        "expected the topic's index files, found {before}"
    );
    std::fs::rename(data_dir.join("meta"), data_dir.join("meta.aside"))?;

    let refused = serve_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            path_str(&data_dir)?,
        ],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("topic metadata"), "{stderr}");
    assert_eq!(index_files(&data_dir)?, before, "partitions were removed");

    // With the metadata back, every record is there.
    std::fs::rename(data_dir.join("meta.aside"), data_dir.join("meta"))?;
    broker.restart()?;
    let mut values = all_values(&broker, "t")?;
    values.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
    Ok(())
}
