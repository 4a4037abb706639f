//! The broker's HTTP admin API (`weir serve --admin-listen`), for what the
//! Kafka protocol has no request for: the delayed records a broker holds
//! back (`weir delayed`, `weir topic describe`). Answers are JSON; an
//! error answer's `error` field is the broker's reason.

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
/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// How long connecting may take before the API counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one broker's admin API.
pub struct AdminApi {
    base: reqwest::Url,
    http: reqwest::blocking::Client,
}

impl AdminApi {
    /// A client of the API at `url` (`http://HOST:PORT`; a bare
    /// `HOST:PORT` is taken as http).
    pub fn new(url: &str) -> Result<Self> {
        let url = url.trim().trim_end_matches('/');
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
            .ok_or_else(|| crate::usage(format!("--admin-url {url:?} is not an http URL")))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|source| CliError::Admin {
                what: "cannot set up an HTTP client".into(),
                source,
            })?;
        Ok(Self { base, http })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        let api = AdminApi::new("http://127.0.0.1:9644").expect("valid");
        assert_eq!(
            api.url(&["v1", "topics", "a/b c", "delayed"]).as_str(),
            "http://127.0.0.1:9644/v1/topics/a%2Fb%20c/delayed"
        );
        assert!(AdminApi::new("mailto:x").is_err());
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
    fn a_bare_address_is_taken_as_http() {
        let api = AdminApi::new("127.0.0.1:9644/").expect("valid");
        assert_eq!(
            api.url(&["health"]).as_str(),
            "http://127.0.0.1:9644/health"
        );
    }
}
