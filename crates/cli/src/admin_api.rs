//! The broker's HTTP admin API (`weir serve --admin-listen`), for what the
//! Kafka protocol has no request for: the delayed records a broker holds
//! back (`weir delayed`, `weir topic describe`). Answers are JSON; an
//! error answer's `error` field is the broker's reason.
//!
//! A secured admin API (`admin.auth.token.file`, `admin.ssl.*` on the
//! broker) is asked with a bearer token (`--admin-token`) and, over https,
//! trusting a CA of its own (`--admin-ca`) and presenting a client
//! certificate (`--admin-cert`, `--admin-key`): [`AdminTarget`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{CliError, Result};

/// The admin API's port when neither `--admin-url` nor `WEIR_ADMIN_URL`
/// names one: `weir serve --admin-listen`'s default.
pub const ADMIN_PORT_DEFAULT: u16 = 9644;

/// The admin API to ask: `given` (`--admin-url` or `WEIR_ADMIN_URL`), else
/// port [`ADMIN_PORT_DEFAULT`] on the host of the first of `brokers`, so
/// that a command never asks another broker than the one named.
pub fn admin_url(brokers: &str, given: Option<&str>) -> String {
    if let Some(given) = given {
        return given.to_owned();
    }
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let host = match first.rsplit_once(':') {
        Some((host, _)) => host,
        None => first,
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    format!("http://{host}:{ADMIN_PORT_DEFAULT}")
}
/// Where the admin API is and how to authenticate to it: `--admin-url`,
/// `--admin-token`, `--admin-ca`, `--admin-cert` and `--admin-key` (or
/// their `WEIR_ADMIN_*` variables).
#[derive(Debug, Clone, Default)]
pub struct AdminTarget {
    /// The API's base URL (see [`admin_url`]).
    pub url: String,
    /// A token of the broker's `admin.auth.token.file`, sent as
    /// `Authorization: Bearer`.
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's, for an
    /// https URL.
    pub ca: Option<PathBuf>,
    /// A PEM file with the client certificate (chain) to present, for an
    /// https URL whose broker asks for one; it may hold the key too.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`, when `cert` does not hold it.
    pub key: Option<PathBuf>,
}

impl AdminTarget {
    /// The API at `url`, asked without a token or TLS settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// Largest PEM file read for `--admin-ca`, `--admin-cert` or `--admin-key`.
const PEM_BYTES_MAX: u64 = 1024 * 1024;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// How long connecting may take before the API counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one broker's admin API.
pub struct AdminApi {
    base: reqwest::Url,
    http: reqwest::blocking::Client,
    /// Whether a token is sent (for the message of a refusal).
    token: bool,
}

impl AdminApi {
    /// A client of the API `target` names (`http://HOST:PORT` or
    /// `https://HOST:PORT`; a bare `HOST:PORT` is taken as http).
    pub fn new(target: &AdminTarget) -> Result<Self> {
        let url = target.url.trim().trim_end_matches('/');
        if url.is_empty() {
            return Err(crate::usage("--admin-url is empty"));
        }
        let base = match url.contains("://") {
            true => url.to_owned(),
            false => format!("http://{url}"),
        };
        let base = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| crate::usage(format!("--admin-url {url:?} is not an http URL")))?;
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(token) = &target.token {
            let token = token.trim();
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .ok()
                .filter(|_| !token.is_empty())
                .ok_or_else(|| {
                    crate::usage("--admin-token is empty or holds characters a header cannot")
                })?;
            value.set_sensitive(true);
            let headers =
                reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
            builder = builder.default_headers(headers);
        }
        builder = with_tls(builder, target, base.scheme() == "https")?;
        let http = builder.build().map_err(|source| CliError::Admin {
            what: "cannot set up an HTTP client".into(),
            source,
        })?;
        Ok(Self {
            base,
            http,
            token: target.token.is_some(),
        })
    }

    /// GET the path of `segments` with `query`: the JSON answer.
    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<serde_json::Value> {
        let url = self.url(segments);
        let request = self.http.get(url.clone()).query(query);
        self.send(request, url.path())
    }

    /// DELETE the path of `segments`: the JSON answer.
    pub fn delete(&self, segments: &[&str]) -> Result<serde_json::Value> {
        let url = self.url(segments);
        let request = self.http.delete(url.clone());
        self.send(request, url.path())
    }

    /// The base URL with `segments` appended, each percent-encoded as one
    /// path segment (a topic name cannot break the path).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        // `new` refused a base that cannot take a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
        path: &str,
    ) -> Result<serde_json::Value> {
        let response = request.send().map_err(|source| {
            let what = format!("no admin API answered at {}", self.base).into();
            match source.is_connect() || source.is_timeout() {
                true => CliError::AdminUnreachable { what, source },
                false => CliError::Admin { what, source },
            }
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let reason = response
                .json::<serde_json::Value>()
                .ok()
                .and_then(|body| body.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| status.to_string());
            let hint = if self.token {
                "check the token against the broker's admin.auth.token.file"
            } else {
                "give a token of the broker's admin.auth.token.file with --admin-token (or \
                 WEIR_ADMIN_TOKEN), or a client certificate with --admin-cert and --admin-key"
            };
            return Err(CliError::AdminUnauthorized {
                what: format!(
                    "the admin API at {} refused {path}: {reason}; {hint}",
                    self.base
                ),
            });
        }
        let body: serde_json::Value = response.json().map_err(|source| CliError::Admin {
            what: format!(
                "the admin API at {} answered {path} with {status} and no JSON",
                self.base
            )
            .into(),
            source,
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let reason = body
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| body.to_string(), str::to_owned);
        Err(CliError::Failed(reason))
    }
}

/// `builder` trusting `--admin-ca` and presenting `--admin-cert` /
/// `--admin-key`, which only an https URL takes.
fn with_tls(
    mut builder: reqwest::blocking::ClientBuilder,
    target: &AdminTarget,
    https: bool,
) -> Result<reqwest::blocking::ClientBuilder> {
    let given = [
        ("--admin-ca", &target.ca),
        ("--admin-cert", &target.cert),
        ("--admin-key", &target.key),
    ];
    if !https {
        if let Some((flag, _)) = given.iter().find(|(_, path)| path.is_some()) {
            return Err(crate::usage(format!(
                "{flag} is for an https admin API; --admin-url {} is http",
                target.url
            )));
        }
        return Ok(builder);
    }
    if let Some(ca) = &target.ca {
        let pem = read_pem(ca, "--admin-ca")?;
        let cas =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| CliError::Admin {
                what: format!("--admin-ca {}: not PEM CA certificates", ca.display()).into(),
                source,
            })?;
        if cas.is_empty() {
            return Err(crate::usage(format!(
                "--admin-ca {} holds no certificate",
                ca.display()
            )));
        }
        for ca in cas {
            builder = builder.add_root_certificate(ca);
        }
    }
    match (&target.cert, &target.key) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(crate::usage(
                "--admin-key needs --admin-cert, the certificate it is the key of",
            ));
        }
        (Some(cert), key) => {
            let mut pem = read_pem(cert, "--admin-cert")?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read_pem(key, "--admin-key")?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|source| CliError::Admin {
                what: format!(
                    "--admin-cert {}: not a PEM certificate with its private key (give the \
                         key with --admin-key)",
                    cert.display()
                )
                .into(),
                source,
            })?;
            builder = builder.identity(identity);
        }
    }
    Ok(builder)
}

/// A PEM file of at most [`PEM_BYTES_MAX`] bytes.
fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(CliError::io(format!(
        "{flag}: cannot read {}",
        path.display()
    )))?;
    let mut pem = Vec::new();
    file.take(PEM_BYTES_MAX + 1)
        .read_to_end(&mut pem)
        .map_err(CliError::io(format!(
            "{flag}: cannot read {}",
            path.display()
        )))?;
    if u64::try_from(pem.len()).unwrap_or(u64::MAX) > PEM_BYTES_MAX {
        return Err(crate::usage(format!(
            "{flag}: {} is larger than {PEM_BYTES_MAX} bytes",
            path.display()
        )));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        let api = AdminApi::new(&AdminTarget::new("http://127.0.0.1:9644")).expect("valid");
        assert_eq!(
            api.url(&["v1", "topics", "a/b c", "delayed"]).as_str(),
            "http://127.0.0.1:9644/v1/topics/a%2Fb%20c/delayed"
        );
        assert!(AdminApi::new(&AdminTarget::new("mailto:x")).is_err());
    }

    #[test]
    fn the_default_admin_url_is_on_the_first_brokers_host() {
        assert_eq!(
            admin_url("10.0.0.7:9092,10.0.0.8:9092", None),
            "http://10.0.0.7:9644"
        );
        assert_eq!(admin_url("[::1]:9092", None), "http://[::1]:9644");
        assert_eq!(admin_url("kafka-1", None), "http://kafka-1:9644");
        assert_eq!(admin_url("10.0.0.7:9092", Some("http://a:1")), "http://a:1");
    }

    #[test]
    fn tls_files_are_refused_for_an_http_url_and_a_key_needs_its_certificate() {
        let target = AdminTarget {
            ca: Some("ca.crt".into()),
            ..AdminTarget::new("http://127.0.0.1:9644")
        };
        let err = AdminApi::new(&target).err().expect("refused");
        assert!(matches!(err, CliError::Usage(_)), "{err}");
        assert!(
            err.to_string().contains("--admin-ca is for an https"),
            "{err}"
        );
        let target = AdminTarget {
            key: Some("client.key".into()),
            ..AdminTarget::new("https://127.0.0.1:9644")
        };
        let err = AdminApi::new(&target).err().expect("refused");
        assert!(
            err.to_string().contains("--admin-key needs --admin-cert"),
            "{err}"
        );
        let target = AdminTarget {
            token: Some("with\nnewline".into()),
            ..AdminTarget::new("http://127.0.0.1:9644")
        };
        assert!(matches!(AdminApi::new(&target), Err(CliError::Usage(_))));
    }

    #[test]
    fn a_bare_address_is_taken_as_http() {
        let api = AdminApi::new(&AdminTarget::new("127.0.0.1:9644/")).expect("valid");
        assert_eq!(
            api.url(&["health"]).as_str(),
            "http://127.0.0.1:9644/health"
        );
    }
}
