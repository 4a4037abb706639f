//! The signing keys of a SASL listener's `OAUTHBEARER`: the JWKS that
//! `sasl.oauthbearer.jwks.endpoint.url` names, loaded at start and kept
//! current while the listener serves.
//!
//! A JWKS in a file (a path, or a `file:` URL) is checked every
//! [`RELOAD_CHECK_INTERVAL`] and read again when it changes, as certificate
//! files are (`tls.rs`). A JWKS at an `http://` or `https://` URL is fetched
//! at start, again every `sasl.oauthbearer.jwks.endpoint.refresh.ms`, and
//! again when a token names a `kid` the keys do not have (at most once per
//! [`UNKNOWN_KID_REFRESH_INTERVAL`], so tokens with made-up key ids cannot
//! make the broker hammer the identity provider). Each fetch is bounded:
//! [`JWKS_FETCH_TIMEOUT`] in all, [`JWKS_BYTES_MAX`] of body. A load that
//! fails after start keeps the keys in use and is logged; one that fails at
//! start stops the start.
//!
//! The token checks themselves are `weir_auth::oauth`'s: this module hands
//! them the current keys.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use weir_auth::oauth::JWKS_BYTES_MAX;
use weir_auth::{Jwks, TokenRules};

use crate::tls::{RELOAD_CHECK_INTERVAL, Stamp, file_stamp};

/// The longest a JWKS fetch may take, connection included.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a JWKS fetch may take to connect.
const JWKS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often at most a token with an unknown `kid` makes the JWKS be
/// fetched again.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How soon a failed periodic fetch is tried again (or the refresh
/// interval, when shorter).
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(30);
/// Redirects a JWKS fetch follows.
const REDIRECTS_MAX: usize = 3;
/// Kafka's default `sasl.oauthbearer.jwks.endpoint.refresh.ms`: an hour.
pub const JWKS_REFRESH_MS_DEFAULT: u64 = 3_600_000;

/// Where the JWKS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, re-read when it changes.
    File(PathBuf),
    /// An `http://` or `https://` URL, fetched again periodically.
    Url(String),
}

impl JwksSource {
    /// `sasl.oauthbearer.jwks.endpoint.url`: a `file:` URL, an `http://`
    /// or `https://` URL, or a path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("file:") {
            // file:///etc/jwks.json, file:/etc/jwks.json and file:jwks.json.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("the file: URL names no file".into());
            }
            return Ok(JwksSource::File(PathBuf::from(path)));
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return reqwest::Url::parse(text)
                .map(|_| JwksSource::Url(text.to_owned()))
                .map_err(|e| format!("not a URL: {e}"));
        }
        if text.contains("://") {
            return Err("takes a file: URL, an http:// or https:// URL, or a path".into());
        }
        if text.is_empty() {
            return Err("is empty".into());
        }
        Ok(JwksSource::File(PathBuf::from(text)))
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => f.write_str(url),
        }
    }
}

/// A listener's OAUTHBEARER settings (KIP-768's names).
#[derive(Debug, Clone)]
pub struct OAuthBearerSettings {
    /// `sasl.oauthbearer.jwks.endpoint.url`.
    pub jwks: JwksSource,
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`, for a URL.
    pub refresh_ms: u64,
    /// The expected audience and issuer, the claim names, the clock skew.
    pub rules: TokenRules,
}

/// Why the JWKS cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("cannot read the JWKS file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or the response is over [`JWKS_BYTES_MAX`].
    #[error("the JWKS at {from} is over {JWKS_BYTES_MAX} bytes")]
    TooLarge {
        /// The file or URL.
        from: String,
    },
    /// The URL cannot be fetched.
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why (connection, TLS, timeout).
        reason: String,
    },
    /// The URL answered with an error status.
    #[error("the JWKS URL {url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The document is not a JWKS with a signing key.
    #[error("the JWKS at {from} cannot be used: {source}")]
    Parse {
        /// The file or URL.
        from: String,
        /// What is wrong with it.
        source: weir_auth::JwksError,
    },
}

/// The keys and rules an OAUTHBEARER listener checks tokens with.
pub struct OAuthBearer {
    settings: OAuthBearerSettings,
    keys: RwLock<Arc<Jwks>>,
    /// For a file: its stamp when last read, and when a read last failed
    /// (so a broken file is reported once).
    file: Mutex<(Stamp, Option<Stamp>)>,
    /// For a URL: its client, and when a fetch was last started (held
    /// across a fetch, so concurrent refreshes wait for the one running).
    http: Option<reqwest::Client>,
    fetched: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for OAuthBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthBearer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OAuthBearer {
    /// Load the JWKS: read the file or fetch the URL. An error says what
    /// to fix; the broker does not start without its keys.
    pub async fn load(settings: OAuthBearerSettings) -> Result<Self, JwksError> {
        let (http, keys, stamp) = match &settings.jwks {
            JwksSource::File(path) => {
                let stamp = vec![file_stamp(path)];
                let path = path.clone();
                let keys = tokio::task::spawn_blocking(move || read_file(&path))
                    .await
                    .map_err(|e| JwksError::Read {
                        path: PathBuf::new(),
                        source: std::io::Error::other(e),
                    })??;
                (None, keys, stamp)
            }
            JwksSource::Url(url) => {
                let client = reqwest::Client::builder()
                    .use_rustls_tls()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .connect_timeout(JWKS_CONNECT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::limited(REDIRECTS_MAX))
                    .build()
                    .map_err(|e| JwksError::Fetch {
                        url: url.clone(),
                        reason: error_chain(&e),
                    })?;
                let keys = fetch(&client, url).await?;
                (Some(client), keys, Vec::new())
            }
        };
        log_loaded(&settings.jwks, &keys, "loaded");
        Ok(Self {
            settings,
            keys: RwLock::new(Arc::new(keys)),
            file: Mutex::new((stamp, None)),
            http,
            // The first unknown kid may fetch at once: a key rotated just
            // before the start is as likely as any.
            fetched: tokio::sync::Mutex::new(
                Instant::now()
                    .checked_sub(UNKNOWN_KID_REFRESH_INTERVAL)
                    .unwrap_or_else(Instant::now),
            ),
        })
    }

    /// The keys tokens are checked with now.
    pub(crate) fn keys(&self) -> Option<Arc<Jwks>> {
        self.keys.read().ok().map(|keys| keys.clone())
    }

    /// The claims' rules.
    pub(crate) fn rules(&self) -> &TokenRules {
        &self.settings.rules
    }

    fn replace(&self, keys: Jwks) {
        if let Ok(mut current) = self.keys.write() {
            *current = Arc::new(keys);
        }
    }

    /// A token names `kid`, which the keys lack: read the file again if it
    /// changed, or fetch the URL again if the last fetch is
    /// [`UNKNOWN_KID_REFRESH_INTERVAL`] old. Returns once the keys are as
    /// current as they may be made.
    pub(crate) async fn refresh_for_unknown_kid(self: &Arc<Self>, kid: &str) {
        match &self.settings.jwks {
            JwksSource::File(_) => {
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.reload_file_if_changed()).await;
            }
            JwksSource::Url(url) => {
                let Some(client) = &self.http else { return };
                let mut fetched = self.fetched.lock().await;
                // Another connection may have fetched it meanwhile.
                if self.keys().is_some_and(|keys| keys.contains_key_id(kid))
                    || fetched.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL
                {
                    return;
                }
                *fetched = Instant::now();
                match fetch(client, url).await {
                    Ok(keys) => {
                        log_loaded(&self.settings.jwks, &keys, "fetched for an unknown kid");
                        self.replace(keys);
                    }
                    Err(err) => tracing::warn!(error = %err,
                        "cannot fetch the JWKS for a token's unknown kid; the keys in use are kept"),
                }
            }
        }
    }

    /// Read the file again if its stamp changed since it was read (and
    /// since a read last failed). Blocks on file I/O.
    fn reload_file_if_changed(&self) {
        let JwksSource::File(path) = &self.settings.jwks else {
            return;
        };
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        let now = vec![file_stamp(path)];
        if file.0 == now || file.1.as_ref() == Some(&now) {
            return;
        }
        match read_file(path) {
            Ok(keys) => {
                log_loaded(&self.settings.jwks, &keys, "reloaded");
                self.replace(keys);
                *file = (now, None);
            }
            Err(err) => {
                tracing::warn!(error = %err,
                    "cannot reload the OAUTHBEARER JWKS; the keys in use are kept (tried again \
                     when the file changes)");
                file.1 = Some(now);
            }
        }
    }

    /// Keep the keys current while the listener serves: check the file
    /// every [`RELOAD_CHECK_INTERVAL`], or fetch the URL every
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`.
    pub(crate) async fn keep_current(self: Arc<Self>) {
        match &self.settings.jwks {
            JwksSource::File(_) => {
                let mut ticks = tokio::time::interval(RELOAD_CHECK_INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let this = self.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || this.reload_file_if_changed()).await;
                }
            }
            JwksSource::Url(url) => {
                let Some(client) = &self.http else { return };
                let refresh = Duration::from_millis(self.settings.refresh_ms.max(1));
                let mut wait = refresh;
                loop {
                    tokio::time::sleep(wait).await;
                    let mut fetched = self.fetched.lock().await;
                    *fetched = Instant::now();
                    wait = match fetch(client, url).await {
                        Ok(keys) => {
                            log_loaded(&self.settings.jwks, &keys, "refreshed");
                            self.replace(keys);
                            refresh
                        }
                        Err(err) => {
                            tracing::warn!(error = %err,
                                "cannot refresh the OAUTHBEARER JWKS; the keys in use are kept");
                            refresh.min(FAILED_FETCH_RETRY)
                        }
                    };
                    drop(fetched);
                }
            }
        }
    }
}

fn log_loaded(source: &JwksSource, keys: &Jwks, what: &str) {
    let kids: Vec<&str> = keys
        .keys()
        .iter()
        .filter_map(|key| key.common.key_id.as_deref())
        .take(16)
        .collect();
    tracing::info!(jwks = %source, keys = keys.keys().len(), skipped = keys.skipped(),
        ?kids, "OAUTHBEARER JWKS {what}");
}

/// Read and parse a JWKS file, within [`JWKS_BYTES_MAX`].
fn read_file(path: &Path) -> Result<Jwks, JwksError> {
    let read_error = |source| JwksError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut json = Vec::new();
    file.take(JWKS_BYTES_MAX as u64 + 1)
        .read_to_end(&mut json)
        .map_err(read_error)?;
    let from = path.display().to_string();
    if json.len() > JWKS_BYTES_MAX {
        return Err(JwksError::TooLarge { from });
    }
    Jwks::parse(&json).map_err(|source| JwksError::Parse { from, source })
}

/// Fetch and parse a JWKS, reading at most [`JWKS_BYTES_MAX`] of body.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Jwks, JwksError> {
    let failed = |e: reqwest::Error| JwksError::Fetch {
        url: url.to_owned(),
        reason: error_chain(&e),
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(failed)?;
    if !response.status().is_success() {
        return Err(JwksError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || JwksError::TooLarge {
        from: url.to_owned(),
    };
    if response
        .content_length()
        .is_some_and(|length| length > JWKS_BYTES_MAX as u64)
    {
        return Err(too_large());
    }
    let mut json = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if json.len() + chunk.len() > JWKS_BYTES_MAX {
            return Err(too_large());
        }
        json.extend_from_slice(&chunk);
    }
    Jwks::parse(&json).map_err(|source| JwksError::Parse {
        from: url.to_owned(),
        source,
    })
}

/// An error with its sources, which reqwest keeps the useful part in.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_source_is_a_file_or_a_web_url() {
        let file = |p: &str| Ok(JwksSource::File(PathBuf::from(p)));
        assert_eq!(
            JwksSource::parse("file:///etc/jwks.json"),
            file("/etc/jwks.json")
        );
        assert_eq!(
            JwksSource::parse("file:/etc/jwks.json"),
            file("/etc/jwks.json")
        );
        assert_eq!(JwksSource::parse("/etc/jwks.json"), file("/etc/jwks.json"));
        assert_eq!(
            JwksSource::parse("https://idp.example/jwks"),
            Ok(JwksSource::Url("https://idp.example/jwks".into()))
        );
        assert!(JwksSource::parse("ftp://idp.example/jwks").is_err());
        assert!(JwksSource::parse("file:").is_err());
        assert!(JwksSource::parse("").is_err());
    }

    #[tokio::test]
    async fn a_missing_or_broken_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let settings = |path: &Path| OAuthBearerSettings {
            jwks: JwksSource::File(path.to_owned()),
            refresh_ms: JWKS_REFRESH_MS_DEFAULT,
            rules: TokenRules::default(),
        };
        let missing = OAuthBearer::load(settings(&path)).await.unwrap_err();
        assert!(missing.to_string().contains("jwks.json"), "{missing}");
        std::fs::write(&path, br#"{"keys": []}"#).unwrap();
        let empty = OAuthBearer::load(settings(&path)).await.unwrap_err();
        assert!(empty.to_string().contains("no signing key"), "{empty}");
        std::fs::write(&path, vec![b' '; JWKS_BYTES_MAX + 2]).unwrap();
        let big = OAuthBearer::load(settings(&path)).await.unwrap_err();
        assert!(matches!(big, JwksError::TooLarge { .. }), "{big}");
    }
}
