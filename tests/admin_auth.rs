//! The admin listener's security, over real processes: `weir serve` with
//! `admin.auth.token.file` and `admin.ssl.*`, asked over HTTP and HTTPS as
//! an operator's script, a browser and `weir delayed` would.
//!
//! What users rely on: without a token every route but `/health` and
//! `/ready` answers 401, with one it answers; a changed token file is used
//! without a restart; a browser logs in for a cookie; another site's page
//! cannot write (403) and every write is logged with who made it; with
//! client certificates required, a client without one is refused and one
//! with one is served; `weir delayed` takes `--admin-token` (and
//! `--admin-ca`, `--admin-cert` for https) and says what is missing
//! without; an unusable token file stops the start; an admin API open to
//! the network without authentication is warned about.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::Broker;
use common::cli::serve_expecting_exit;
use common::security::{dev_certificates, wait_for_log};
use reqwest::blocking::Client;
use reqwest::header;

/// Longest an admin request may take here (the broker answers in
/// milliseconds).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a changed token file may take to be used (the broker checks it
/// each second).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

const FIRST: &str = "a3f1c9e07b5d42e8a3f1c9e07b5d42e8";
const SECOND: &str = "5d42e8a3f1c9e07b5d42e8a3f1c9e07b";
/// A token of neither file.
const UNKNOWN: &str = "00000000000000000000000000000000";

/// Writes `tokens` (with a comment) to `dir/tokens`, readable by its owner
/// only, as an atomic replace; its path.
fn token_file(dir: &Path, tokens: &[&str]) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("tokens");
    let next = dir.join("tokens.next");
    std::fs::write(&next, format!("# admin tokens\n{}\n", tokens.join("\n")))?;
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&next, &path)?;
    Ok(path)
}

/// A broker whose admin API takes the tokens of `file`.
fn broker_with_tokens(file: &Path) -> anyhow::Result<Broker> {
    let setting = format!("admin.auth.token.file={}", file.display());
    Broker::start(&["--set", &setting])
}

/// An HTTP client with a bounded wait that shows redirects instead of
/// following them.
fn http() -> anyhow::Result<Client> {
    Ok(Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// `GET http://ADDR/PATH` with `token` as a bearer token when given: the
/// status and the body.
fn get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut request = http()?.get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .with_context(|| format!("cannot ask {addr}{path}"))?;
    Ok((response.status().as_u16(), response.text()?))
}

fn admin_addr(broker: &Broker) -> anyhow::Result<String> {
    Ok(broker
        .admin_addr()
        .context("no `admin listening on` line")?
        .to_owned())
}

#[test]
fn with_a_token_file_only_the_probes_answer_without_a_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = broker_with_tokens(&token_file(dir.path(), &[FIRST, SECOND])?)?;
    let addr = admin_addr(&broker)?;

    let response = http()?.get(format!("http://{addr}/metrics")).send()?;
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"weir-admin\"")
    );
    let body: serde_json::Value = response.json()?;
    ensure!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer")),
        "{body}"
    );
    assert_eq!(get(&addr, "/metrics", Some(UNKNOWN))?.0, 401);
    let (status, metrics) = get(&addr, "/metrics", Some(FIRST))?;
    assert_eq!(status, 200, "{metrics}");
    ensure!(
        metrics.contains("# TYPE"),
        "not Prometheus' format: {metrics}"
    );
    assert_eq!(get(&addr, "/metrics", Some(SECOND))?.0, 200);
    assert_eq!(get(&addr, "/v1/share-groups/g", None)?.0, 401);
    // Orchestrators' probes carry no token.
    assert_eq!(get(&addr, "/health", None)?.0, 200);
    assert_eq!(get(&addr, "/ready", None)?.0, 200);
    Ok(())
}

#[test]
fn a_changed_token_file_is_used_without_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = token_file(dir.path(), &[FIRST])?;
    let broker = broker_with_tokens(&file)?;
    let addr = admin_addr(&broker)?;
    assert_eq!(get(&addr, "/metrics", Some(FIRST))?.0, 200);
    assert_eq!(get(&addr, "/metrics", Some(SECOND))?.0, 401);

    // FIRST revoked, SECOND added.
    token_file(dir.path(), &[SECOND])?;
    common::wait_until(RELOAD_TIMEOUT, "the changed token file to be used", || {
        Ok(get(&addr, "/metrics", Some(SECOND))?.0 == 200)
    })?;
    assert_eq!(get(&addr, "/metrics", Some(FIRST))?.0, 401);
    wait_for_log(&broker, "admin tokens reloaded")?;

    // A file emptied by mistake keeps the tokens in use.
    std::fs::write(&file, "# nothing yet\n")?;
    wait_for_log(&broker, "cannot reload the admin tokens")?;
    assert_eq!(get(&addr, "/metrics", Some(SECOND))?.0, 200);
    Ok(())
}

#[test]
fn a_browser_logs_in_for_a_cookie_and_other_sites_cannot_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = broker_with_tokens(&token_file(dir.path(), &[FIRST, SECOND])?)?;
    let addr = admin_addr(&broker)?;
    let base = format!("http://{addr}");
    let client = http()?;

    // A page load without the cookie is sent to the login form.
    let page = client
        .get(format!("{base}/metrics"))
        .header(header::ACCEPT, "text/html,*/*;q=0.8")
        .send()?;
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(
        page.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/login")
    );
    let form = client.get(format!("{base}/login")).send()?;
    assert_eq!(form.status().as_u16(), 200);
    ensure!(form.text()?.contains("name=\"token\""), "no token field");

    let login = |token: &str| {
        client
            .post(format!("{base}/login"))
            .header(header::ORIGIN, &base)
            .form(&[("token", token)])
            .send()
    };
    let refused = login(UNKNOWN)?;
    assert_eq!(refused.status().as_u16(), 401);
    ensure!(refused.headers().get(header::SET_COOKIE).is_none());
    let accepted = login(SECOND)?;
    assert_eq!(accepted.status().as_u16(), 303);
    let cookie = accepted
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .context("no cookie set")?
        .to_owned();
    ensure!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().context("an empty cookie")?;
    let with_cookie = client
        .get(format!("{base}/metrics"))
        .header(header::COOKIE, pair)
        .send()?;
    assert_eq!(with_cookie.status().as_u16(), 200);

    // A write from another site's page, token or not, is refused.
    let cancel = format!("{base}/v1/topics/orders/partitions/0/delayed/0");
    let forged = client
        .delete(&cancel)
        .header(header::COOKIE, pair)
        .header(header::ORIGIN, "http://evil.example")
        .send()?;
    assert_eq!(forged.status().as_u16(), 403);
    let body: serde_json::Value = forged.json()?;
    ensure!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cross-origin")),
        "{body}"
    );
    // From its own page it reaches the route (no such topic here).
    let own = client
        .delete(&cancel)
        .header(header::COOKIE, pair)
        .header(header::ORIGIN, &base)
        .send()?;
    assert_eq!(own.status().as_u16(), 404, "{}", own.text()?);
    // Every write is logged with who made it.
    wait_for_log(&broker, "principal=token#2 status=404")?;
    wait_for_log(&broker, "principal=token#2 status=403")?;

    let logout = client
        .post(format!("{base}/logout"))
        .header(header::COOKIE, pair)
        .send()?;
    assert_eq!(logout.status().as_u16(), 303);
    ensure!(
        logout
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("Max-Age=0")),
        "the cookie is not cleared"
    );
    Ok(())
}

#[test]
fn weir_delayed_sends_the_admin_token_and_says_what_is_missing_without_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = broker_with_tokens(&token_file(dir.path(), &[FIRST])?)?;
    common::cli::weir_ok(
        &broker,
        &["topic", "create", "orders", "--partitions", "1"],
        b"",
    )?;

    let refused = common::cli::weir(&broker, &["delayed", "list", "orders"], b"")?;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        stderr.contains("refused") && stderr.contains("--admin-token"),
        "{stderr}"
    );

    let listed = common::cli::weir_ok(
        &broker,
        &[
            "delayed",
            "list",
            "orders",
            "--json",
            "--admin-token",
            FIRST,
        ],
        b"",
    )?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    assert_eq!(listed["pending"], 0, "{listed}");
    // The environment variable does as the flag does; a wrong token is named.
    let output = common::cli::command(&broker, &["delayed", "list", "orders"])
        .env("WEIR_ADMIN_TOKEN", FIRST)
        .output()?;
    ensure!(output.status.success(), "{output:?}");
    let wrong = common::cli::command(&broker, &["delayed", "list", "orders"])
        .env("WEIR_ADMIN_TOKEN", UNKNOWN)
        .output()?;
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    ensure!(stderr.contains("check the token"), "{stderr}");
    Ok(())
}

#[test]
fn over_https_a_client_certificate_is_required_when_asked_for() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    dev_certificates(&certs)?;
    let keystore = format!(
        "admin.ssl.keystore.location={}",
        certs.join("broker.pem").display()
    );
    let truststore = format!(
        "admin.ssl.truststore.location={}",
        certs.join("ca.crt").display()
    );
    let broker = Broker::start(&[
        "--set",
        &keystore,
        "--set",
        &truststore,
        "--set",
        "admin.ssl.client.auth=required",
    ])?;
    let addr = admin_addr(&broker)?;
    let url = format!("https://{addr}/metrics");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.crt"))?)?;

    let anonymous = Client::builder()
        .timeout(HTTP_TIMEOUT)
        .add_root_certificate(ca.clone())
        .build()?;
    let refused = anonymous.get(&url).send();
    ensure!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    wait_for_log(&broker, "closing an admin connection: TLS handshake failed")?;
    ensure!(
        http()?.get(format!("http://{addr}/health")).send().is_err(),
        "plain HTTP served on the HTTPS listener"
    );

    let identity = reqwest::Identity::from_pem(&std::fs::read(certs.join("client.pem"))?)?;
    let certified = Client::builder()
        .timeout(HTTP_TIMEOUT)
        .add_root_certificate(ca)
        .identity(identity)
        .build()?;
    let response = certified.get(&url).send()?;
    assert_eq!(response.status().as_u16(), 200);
    let write = certified
        .delete(format!(
            "https://{addr}/v1/topics/orders/partitions/0/delayed/0"
        ))
        .send()?;
    assert_eq!(write.status().as_u16(), 404);
    wait_for_log(&broker, "principal=User:CN=client status=404")?;

    // The CLI over https: the CA and the client certificate from flags.
    let https = format!("https://{addr}");
    let ca_file = certs.join("ca.crt");
    let client_pem = certs.join("client.pem");
    let args = |with_cert: bool| {
        let mut args = vec![
            "--admin-url",
            https.as_str(),
            "--admin-ca",
            ca_file.to_str().unwrap_or_default(),
        ];
        if with_cert {
            args.extend(["--admin-cert", client_pem.to_str().unwrap_or_default()]);
        }
        args.extend(["delayed", "list", "orders"]);
        args
    };
    let served = common::cli::weir(&broker, &args(true), b"")?;
    let stderr = String::from_utf8_lossy(&served.stderr);
    // Served: the broker's own answer about the topic comes back.
    ensure!(stderr.contains("orders"), "{stderr}");
    ensure!(!stderr.contains("admin API answered"), "{stderr}");
    let refused = common::cli::weir(&broker, &args(false), b"")?;
    ensure!(!refused.status.success(), "served without a certificate");
    Ok(())
}

#[test]
fn an_empty_token_file_stops_the_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# no token yet\n\n")?;
    let setting = format!("admin.auth.token.file={}", file.display());
    let data = dir.path().join("data");
    let output = serve_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().context("path")?,
            "--set",
            &setting,
        ],
        &[],
    )?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains("admin.auth.token.file") && stderr.contains("holds no token"),
        "{stderr}"
    );
    ensure!(
        !data.exists(),
        "the data folder was made before the refusal"
    );
    Ok(())
}

#[test]
fn an_admin_api_open_to_the_network_without_authentication_is_warned_about() -> anyhow::Result<()> {
    let broker = Broker::start(&["--admin-listen", "0.0.0.0:0"])?;
    wait_for_log(
        &broker,
        "the admin API listens on a non-loopback address without authentication",
    )?;
    let dir = tempfile::tempdir()?;
    let setting = format!(
        "admin.auth.token.file={}",
        token_file(dir.path(), &[FIRST])?.display()
    );
    let guarded = Broker::start(&["--admin-listen", "0.0.0.0:0", "--set", &setting])?;
    ensure!(
        !guarded.stderr_tail().contains("without authentication"),
        "warned with a token file"
    );
    Ok(())
}
