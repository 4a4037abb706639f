//! `weir acl add|list|remove` against a real `weir serve`: bindings added
//! with kafka-acls.sh's flags (literal, prefixed, the producer and consumer
//! roles) are listed as kafka-acls.sh lists them and as JSON, filtered by
//! resource, principal and pattern type, and removed; a broker without an
//! authorizer answers SECURITY_DISABLED with a hint, one that does not
//! trust the client answers CLUSTER_AUTHORIZATION_FAILED, and flags that do
//! not go together exit 2 before any broker is asked.

mod common;

use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, ensure};
use common::Broker;
use serde_json::Value;

const STANDARD_AUTHORIZER: &str =
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// A PLAINTEXT client is User:ANONYMOUS: as a super user it may change ACLs.
fn broker_with_authorizer() -> anyhow::Result<Broker> {
    Broker::start(&[
        "--set",
        STANDARD_AUTHORIZER,
        "--set",
        "super.users=User:ANONYMOUS",
    ])
}

/// Runs `weir acl ARGS` against `broker`, stdin not a terminal.
fn acl(broker: &Broker, args: &[&str]) -> anyhow::Result<Output> {
    let argv: Vec<&str> = std::iter::once("acl").chain(args.iter().copied()).collect();
    common::cli::weir(broker, &argv, b"")
}

/// Runs `weir acl ARGS`, fails unless it exits 0, and returns its stdout.
fn acl_ok(broker: &Broker, args: &[&str]) -> anyhow::Result<String> {
    let output = acl(broker, args)?;
    ensure!(
        output.status.success(),
        "weir acl {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// `weir acl ARGS --json`, parsed.
fn acl_json(broker: &Broker, args: &[&str]) -> anyhow::Result<Value> {
    let argv: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let stdout = acl_ok(broker, &argv)?;
    serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))
}

/// Each binding of a JSON listing as `(resource_type, resource_name,
/// pattern_type, principal, host, operation, permission_type)`, sorted.
fn rows(listing: &Value) -> anyhow::Result<Vec<[String; 7]>> {
    let bindings = listing.as_array().context("the listing is no array")?;
    let mut rows = bindings
        .iter()
        .map(|binding| {
            let field = |key: &str| -> anyhow::Result<String> {
                binding
                    .get(key)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .with_context(|| format!("no {key} in {binding}"))
            };
            Ok([
                field("resource_type")?,
                field("resource_name")?,
                field("pattern_type")?,
                field("principal")?,
                field("host")?,
                field("operation")?,
                field("permission_type")?,
            ])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    rows.sort();
    Ok(rows)
}

/// A row of [`rows`] for an ALLOW from `*`.
fn allowed(resource: (&str, &str, &str), principal: &str, operation: &str) -> [String; 7] {
    let (resource_type, name, pattern_type) = resource;
    [
        resource_type,
        name,
        pattern_type,
        principal,
        "*",
        operation,
        "ALLOW",
    ]
    .map(str::to_owned)
}

fn exit_code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn acls_are_added_listed_filtered_and_removed() -> anyhow::Result<()> {
    let broker = broker_with_authorizer()?;
    let orders = ("TOPIC", "orders", "LITERAL");
    let ord = ("TOPIC", "ord", "PREFIXED");
    let refunds = ("TOPIC", "refunds", "LITERAL");
    let billing = ("GROUP", "billing", "LITERAL");

    let added = acl_ok(
        &broker,
        &[
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--operation",
            "describe",
            "--topic",
            "orders",
        ],
    )?;
    ensure!(
        added.contains(
            "Created ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)`:"
        ) && added
            .contains("\t(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)")
            && added.contains(
                "\t(principal=User:alice, host=*, operation=DESCRIBE, permissionType=ALLOW)"
            ),
        "add printed {added}"
    );
    let producer = acl_json(
        &broker,
        &[
            "add",
            "--allow-principal",
            "User:bob",
            "--producer",
            "--topic",
            "ord",
            "--resource-pattern-type",
            "prefixed",
        ],
    )?;
    let created = producer.get("created").context("no created")?;
    ensure!(
        rows(created)?
            == vec![
                allowed(ord, "User:bob", "CREATE"),
                allowed(ord, "User:bob", "DESCRIBE"),
                allowed(ord, "User:bob", "WRITE"),
            ],
        "--producer created {created}"
    );
    acl_ok(
        &broker,
        &[
            "add",
            "--allow-principal",
            "User:bob",
            "--consumer",
            "--topic",
            "refunds",
            "--group",
            "billing",
        ],
    )?;

    // Every binding, as kafka-acls.sh prints them and as JSON.
    let listed = acl_ok(&broker, &["list"])?;
    for resource in [
        "`ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)`",
        "`ResourcePattern(resourceType=TOPIC, name=ord, patternType=PREFIXED)`",
        "`ResourcePattern(resourceType=TOPIC, name=refunds, patternType=LITERAL)`",
        "`ResourcePattern(resourceType=GROUP, name=billing, patternType=LITERAL)`",
    ] {
        ensure!(
            listed.contains(&format!("Current ACLs for resource {resource}:")),
            "list lacks {resource}:\n{listed}"
        );
    }
    let mut everything = vec![
        allowed(orders, "User:alice", "READ"),
        allowed(orders, "User:alice", "DESCRIBE"),
        allowed(ord, "User:bob", "WRITE"),
        allowed(ord, "User:bob", "DESCRIBE"),
        allowed(ord, "User:bob", "CREATE"),
        allowed(refunds, "User:bob", "READ"),
        allowed(refunds, "User:bob", "DESCRIBE"),
        allowed(billing, "User:bob", "READ"),
    ];
    everything.sort();
    ensure!(rows(&acl_json(&broker, &["list"])?)? == everything);

    // By topic: the name exactly (ANY); with MATCH, the prefix that covers it too.
    let by_topic = rows(&acl_json(&broker, &["list", "--topic", "orders"])?)?;
    ensure!(
        by_topic
            == vec![
                allowed(orders, "User:alice", "DESCRIBE"),
                allowed(orders, "User:alice", "READ"),
            ],
        "--topic orders listed {by_topic:?}"
    );
    let matching = rows(&acl_json(
        &broker,
        &[
            "list",
            "--topic",
            "orders",
            "--resource-pattern-type",
            "MATCH",
        ],
    )?)?;
    ensure!(
        matching
            == vec![
                allowed(ord, "User:bob", "CREATE"),
                allowed(ord, "User:bob", "DESCRIBE"),
                allowed(ord, "User:bob", "WRITE"),
                allowed(orders, "User:alice", "DESCRIBE"),
                allowed(orders, "User:alice", "READ"),
            ],
        "--resource-pattern-type MATCH listed {matching:?}"
    );

    // By principal.
    let bobs = rows(&acl_json(&broker, &["list", "--principal", "User:bob"])?)?;
    ensure!(
        bobs.len() == 6 && bobs.iter().all(|row| row[3] == "User:bob"),
        "--principal User:bob listed {bobs:?}"
    );
    let alices = acl_ok(&broker, &["list", "--principal", "User:alice"])?;
    ensure!(
        alices.starts_with("ACLs for principal `User:alice`\n") && !alices.contains("User:bob"),
        "--principal User:alice printed {alices}"
    );

    // The broker decides: it refuses a host that is no address.
    let bad_host = acl(
        &broker,
        &[
            "add",
            "--allow-principal",
            "User:carol",
            "--allow-host",
            "host1",
            "--topic",
            "orders",
        ],
    )?;
    ensure!(
        exit_code(&bad_host) == Some(1) && stderr(&bad_host).contains("INVALID_REQUEST"),
        "a host name gave {}: {}",
        bad_host.status,
        stderr(&bad_host)
    );

    // Removing without a terminal needs --force.
    let unforced = acl(
        &broker,
        &[
            "remove",
            "--allow-principal",
            "User:alice",
            "--topic",
            "orders",
        ],
    )?;
    ensure!(
        exit_code(&unforced) == Some(2) && stderr(&unforced).contains("--force"),
        "remove without --force gave {}: {}",
        unforced.status,
        stderr(&unforced)
    );
    ensure!(rows(&acl_json(&broker, &["list"])?)? == everything);

    let removed = acl_ok(
        &broker,
        &[
            "remove",
            "--allow-principal",
            "User:alice",
            "--topic",
            "orders",
            "--force",
        ],
    )?;
    ensure!(
        removed.contains(
            "Removed ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)`:"
        ) && removed.matches("principal=User:alice").count() == 2,
        "remove printed {removed}"
    );
    ensure!(rows(&acl_json(&broker, &["list", "--topic", "orders"])?)?.is_empty());
    let prefixed = acl_json(
        &broker,
        &[
            "remove",
            "--topic",
            "ord",
            "--resource-pattern-type",
            "prefixed",
            "--force",
        ],
    )?;
    let removed = prefixed.get("removed").context("no removed")?;
    ensure!(rows(removed)?.len() == 3, "removed {removed}");
    let left = rows(&acl_json(&broker, &["list"])?)?;
    ensure!(
        left == vec![
            allowed(billing, "User:bob", "READ"),
            allowed(refunds, "User:bob", "DESCRIBE"),
            allowed(refunds, "User:bob", "READ"),
        ],
        "left {left:?}"
    );
    let nothing = acl_ok(&broker, &["remove", "--topic", "orders", "--force"])?;
    ensure!(nothing.contains("nothing was removed"), "printed {nothing}");
    Ok(())
}

#[test]
fn a_broker_without_an_authorizer_answers_security_disabled_with_a_hint() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let hint = "the broker does not enforce ACLs: set \
                authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";
    for args in [
        &[
            "add",
            "--allow-principal",
            "User:alice",
            "--topic",
            "orders",
        ][..],
        &["list"][..],
        &["remove", "--topic", "orders", "--force"][..],
    ] {
        let output = acl(&broker, args)?;
        let stderr = stderr(&output);
        ensure!(
            exit_code(&output) == Some(1)
                && stderr.contains("SECURITY_DISABLED")
                && stderr.contains(hint),
            "weir acl {args:?} gave {}: {stderr}",
            output.status
        );
    }
    Ok(())
}

#[test]
fn a_client_that_is_no_super_user_gets_cluster_authorization_failed() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", STANDARD_AUTHORIZER])?;
    let output = acl(
        &broker,
        &[
            "add",
            "--allow-principal",
            "User:alice",
            "--topic",
            "orders",
        ],
    )?;
    ensure!(
        exit_code(&output) == Some(1) && stderr(&output).contains("CLUSTER_AUTHORIZATION_FAILED"),
        "gave {}: {}",
        output.status,
        stderr(&output)
    );
    Ok(())
}

#[test]
fn usage_errors_exit_2_before_any_broker_is_asked() -> anyhow::Result<()> {
    // No broker listens on port 1: a usage error must come first (not 3).
    for (args, needle) in [
        (
            &["add", "--allow-principal", "User:a"][..],
            "at least one resource",
        ),
        (
            &[
                "add",
                "--consumer",
                "--topic",
                "t",
                "--allow-principal",
                "User:a",
            ][..],
            "--group",
        ),
        (
            &[
                "add",
                "--operation",
                "Frobnicate",
                "--topic",
                "t",
                "--allow-principal",
                "User:a",
            ][..],
            "unknown operation",
        ),
        (
            &[
                "add",
                "--cluster",
                "--resource-pattern-type",
                "prefixed",
                "--allow-principal",
                "User:a",
            ][..],
            "PREFIXED",
        ),
        (
            &["add", "--topic", "t", "--allow-principal", "alice"][..],
            "Type:name",
        ),
        (&["remove", "--topic", "t"][..], "--force"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["--brokers", "127.0.0.1:1", "acl"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run weir")?;
        let stderr = stderr(&output);
        ensure!(
            exit_code(&output) == Some(2) && stderr.contains(needle),
            "weir acl {args:?} gave {} (want 2 and {needle:?}): {stderr}",
            output.status
        );
    }
    Ok(())
}
