//! `weir cert dev` as a user runs it: the files it writes are a CA and a
//! broker and a client certificate that a TLS peer accepts (checked with
//! rustls-webpki, the verifier rustls uses: chain, key usage, validity and
//! names), private keys are readable by their owner alone, a second run
//! leaves everything as it was unless `--force`, and `--json` names the
//! files.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context as _, ensure};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

/// The files `weir cert dev` writes.
const FILES: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "broker.crt",
    "broker.key",
    "broker.pem",
    "client.crt",
    "client.key",
    "client.pem",
];
/// The files holding a private key.
const SECRET_FILES: [&str; 5] = [
    "ca.key",
    "broker.key",
    "broker.pem",
    "client.key",
    "client.pem",
];

/// Runs `weir cert dev ARGS`.
fn cert_dev(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["cert", "dev"])
        .args(args)
        .output()
        .context("cannot run weir cert dev")
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

fn certificate(dir: &Path, name: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::from_pem_file(dir.join(name)).with_context(|| format!("cannot read {name}"))
}

/// Whether `cert` chains to `ca` for `usage`, now.
fn verify(
    ca: &CertificateDer<'_>,
    cert: &CertificateDer<'_>,
    usage: KeyUsage,
) -> anyhow::Result<()> {
    let anchor = anchor_from_trusted_cert(ca).context("ca.crt is no trust anchor")?;
    let end_entity = EndEntityCert::try_from(cert).context("not an end-entity certificate")?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .context("the certificate does not verify against ca.crt")?;
    Ok(())
}

fn valid_for(cert: &CertificateDer<'_>, name: &str) -> anyhow::Result<bool> {
    let end_entity = EndEntityCert::try_from(cert).context("not an end-entity certificate")?;
    let name = ServerName::try_from(name.to_owned()).context("not a server name")?;
    Ok(end_entity.verify_is_valid_for_subject_name(&name).is_ok())
}

#[test]
fn the_certificates_verify_as_a_tls_peer_checks_them() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("certs");
    let output = cert_dev(&["--dir", path_str(&dir)?])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in FILES {
        ensure!(dir.join(name).is_file(), "{name} missing");
    }
    #[cfg(unix)]
    for name in SECRET_FILES {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(name))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
    }

    let ca = certificate(&dir, "ca.crt")?;
    let broker = certificate(&dir, "broker.crt")?;
    let client = certificate(&dir, "client.crt")?;
    verify(&ca, &broker, KeyUsage::server_auth())?;
    verify(&ca, &client, KeyUsage::client_auth())?;
    // A broker connects to other brokers with its certificate too; a
    // client's certificate is for clients only.
    verify(&ca, &broker, KeyUsage::client_auth())?;
    assert!(verify(&ca, &client, KeyUsage::server_auth()).is_err());
    // Neither verifies against another run's CA.
    let other = temp.path().join("other");
    ensure!(cert_dev(&["--dir", path_str(&other)?])?.status.success());
    assert!(
        verify(
            &certificate(&other, "ca.crt")?,
            &broker,
            KeyUsage::server_auth()
        )
        .is_err()
    );

    for name in ["localhost", "127.0.0.1", "::1"] {
        assert!(
            valid_for(&broker, name)?,
            "the broker certificate does not name {name}"
        );
    }
    assert!(!valid_for(&broker, "example.com")?);

    // The keystores hold a key and the chain that verifies.
    let keystore = std::fs::read_to_string(dir.join("broker.pem"))?;
    assert!(
        keystore.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{keystore}"
    );
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("broker.pem"))?.collect::<Result<_, _>>()?;
    assert_eq!(chain, vec![broker.clone(), ca.clone()]);

    // The output names the files and the broker settings.
    let dir = std::fs::canonicalize(&dir)?;
    let keystore_setting = format!(
        "--set ssl.keystore.location={}",
        dir.join("broker.pem").display()
    );
    assert!(stdout.contains(&keystore_setting), "{stdout}");
    assert!(
        stdout.contains("--set listeners=SSL://127.0.0.1:9093"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--set ssl.client.auth=required"),
        "{stdout}"
    );
    assert!(stdout.contains("User:CN=client"), "{stdout}");
    Ok(())
}

#[test]
fn hosts_name_dns_names_and_ip_addresses() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let output = cert_dev(&[
        "--dir",
        path_str(dir)?,
        "--host",
        "kafka.test",
        "--host",
        "10.9.8.7",
        "--client",
        "alice",
        "--days",
        "2",
    ])?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let broker = certificate(dir, "broker.crt")?;
    assert!(valid_for(&broker, "kafka.test")?);
    assert!(valid_for(&broker, "10.9.8.7")?);
    assert!(!valid_for(&broker, "localhost")?);
    assert!(!valid_for(&broker, "127.0.0.1")?);
    assert!(String::from_utf8_lossy(&output.stdout).contains("User:CN=alice"));

    for bad in [
        &["--host", "not a name"][..],
        &["--days", "0"],
        &["--client", ""],
    ] {
        let mut args = vec!["--dir", path_str(dir)?, "--force"];
        args.extend_from_slice(bad);
        let output = cert_dev(&args)?;
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
    }
    Ok(())
}

#[test]
fn a_second_run_changes_nothing_unless_forced() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    ensure!(cert_dev(&["--dir", path_str(dir)?])?.status.success());
    let read_all = || -> anyhow::Result<Vec<Vec<u8>>> {
        FILES
            .iter()
            .map(|name| Ok(std::fs::read(dir.join(name))?))
            .collect()
    };
    let first = read_all()?;

    let again = cert_dev(&["--dir", path_str(dir)?])?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains("ca.key"), "{stderr}");
    assert_eq!(read_all()?, first, "a refused run changed files");

    let forced = cert_dev(&["--dir", path_str(dir)?, "--force"])?;
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let second = read_all()?;
    for ((name, before), after) in FILES.iter().zip(&first).zip(&second) {
        assert_ne!(before, after, "{name} was not rewritten");
    }
    Ok(())
}

#[test]
fn json_output_names_every_file() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("nested").join("certs");
    let output = cert_dev(&["--dir", path_str(&dir)?, "--json"])?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: Value = serde_json::from_slice(&output.stdout).context("not JSON")?;
    let dir = std::fs::canonicalize(&dir)?;
    assert_eq!(document["dir"], dir.display().to_string());
    for (key, name) in [
        ("ca_cert", "ca.crt"),
        ("ca_key", "ca.key"),
        ("broker_cert", "broker.crt"),
        ("broker_key", "broker.key"),
        ("broker_pem", "broker.pem"),
        ("client_cert", "client.crt"),
        ("client_key", "client.key"),
        ("client_pem", "client.pem"),
    ] {
        assert_eq!(document[key], dir.join(name).display().to_string(), "{key}");
    }
    assert_eq!(
        document["hosts"],
        serde_json::json!(["localhost", "127.0.0.1", "::1"])
    );
    assert_eq!(document["client_principal"], "User:CN=client");
    assert_eq!(document["days"], 365);
    assert!(document["broker_settings"].is_array());
    assert!(document["client_settings"].is_array());
    Ok(())
}
