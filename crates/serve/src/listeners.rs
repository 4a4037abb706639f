//! The Kafka listeners, configured with Kafka's names: `listeners`,
//! `advertised.listeners`, `listener.security.protocol.map`,
//! `inter.broker.listener.name`, and each `SSL` listener's TLS settings
//! (`ssl.keystore.location`, `ssl.truststore.location`, `ssl.client.auth`,
//! `ssl.principal.mapping.rules`, each also as
//! `listener.name.NAME.ssl.*` for one listener), and each SASL listener's
//! (`sasl.enabled.mechanisms`, `connections.max.reauth.ms`, and for
//! `OAUTHBEARER` KIP-768's `sasl.oauthbearer.*`, each also as
//! `listener.name.NAME.oauthbearer.sasl.oauthbearer.*` or
//! `listener.name.NAME.sasl.oauthbearer.*`). This module parses them,
//! checks that they fit together, binds the sockets, builds the TLS
//! configurations and loads the OAUTHBEARER signing keys.
//!
//! The admin listener's TLS (`admin.ssl.*`, the same names with the
//! prefix `admin.`) is parsed here too, by the same code.
//!
//! `--listen HOST:PORT` is shorthand for `listeners=PLAINTEXT://HOST:PORT`
//! and `--advertised` for that listener's advertised address; given
//! `listeners`, the broker binds exactly the listeners named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use weir_auth::Mechanism;
use weir_auth::SslPrincipalMapper;
use weir_auth::TokenRules;
use weir_broker::DEFAULT_LISTENER;
use weir_server::jwks::JWKS_REFRESH_MS_DEFAULT;
use weir_server::{
    ClientAuth, JwksSource, OAuthBearer, OAuthBearerSettings, SaslSettings, TlsAcceptor,
    TlsSettings,
};

use crate::{ServeError, SettingsError};

/// Where the broker listens given neither `--listen` nor `listeners`.
pub(crate) const LISTEN_DEFAULT: &str = "127.0.0.1:9092";

/// Kafka's default `listener.security.protocol.map`: each protocol's own
/// name maps to it.
const PROTOCOLS: [Protocol; 4] = [
    Protocol::Plaintext,
    Protocol::Ssl,
    Protocol::SaslPlaintext,
    Protocol::SaslSsl,
];

/// A listener's security protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        PROTOCOLS.into_iter().find(|p| p.name() == text.trim())
    }
}

/// One listener, resolved.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSpec {
    /// Its name, upper case as Kafka keeps it.
    pub name: String,
    /// Where it binds, `HOST:PORT`.
    pub bind: String,
    pub protocol: Protocol,
    /// `advertised.listeners`' entry for it, `(host, port)`; the bound
    /// address when absent.
    pub advertised: Option<(String, u16)>,
    /// For an `SSL` or `SASL_SSL` listener.
    pub tls: Option<TlsSettings>,
    /// For a `SASL_PLAINTEXT` or `SASL_SSL` listener.
    pub sasl: Option<SaslSettings>,
    /// For a SASL listener with `OAUTHBEARER` enabled: where its keys are
    /// and what tokens must be (loaded into `sasl` when bound).
    pub oauthbearer: Option<OAuthBearerSettings>,
}

/// Every listener, and which one other brokers use.
#[derive(Debug, Clone)]
pub(crate) struct Listeners {
    pub specs: Vec<ListenerSpec>,
    /// `inter.broker.listener.name`.
    pub inter_broker: String,
}

/// The listener settings as given, by Kafka name, gathered while the
/// broker configs are applied and resolved once all are in.
#[derive(Debug, Default)]
pub(crate) struct ListenerConfigs {
    given: BTreeMap<String, String>,
}

/// The TLS settings a listener reads, without the `listener.name.NAME.`
/// prefix that sets one for a single listener.
const SSL_KEYS: [&str; 9] = [
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.client.auth",
    "ssl.principal.mapping.rules",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.truststore.password",
];

/// The SASL settings a listener reads, also with the
/// `listener.name.NAME.` prefix.
const SASL_KEYS: [&str; 2] = ["sasl.enabled.mechanisms", "connections.max.reauth.ms"];

/// KIP-768's OAUTHBEARER settings, also with the `listener.name.NAME.`
/// prefix, and with `listener.name.NAME.oauthbearer.` (Kafka's per-listener,
/// per-mechanism form).
const OAUTHBEARER_KEYS: [&str; 7] = [
    "sasl.oauthbearer.jwks.endpoint.url",
    "sasl.oauthbearer.jwks.endpoint.refresh.ms",
    "sasl.oauthbearer.expected.audience",
    "sasl.oauthbearer.expected.issuer",
    "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.scope.claim.name",
    "sasl.oauthbearer.clock.skew.seconds",
];

/// The prefix of the admin listener's TLS settings (`admin.ssl.*`).
const ADMIN_PREFIX: &str = "admin.";

/// The listener settings besides the TLS and SASL ones.
const LISTENER_KEYS: [&str; 5] = [
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "security.inter.broker.protocol",
];

impl ListenerConfigs {
    /// Keep `key` if it is a listener or TLS setting; false when it is not one.
    pub(crate) fn take(&mut self, key: &str, value: &str) -> bool {
        let ssl_key = key
            .strip_prefix("listener.name.")
            .and_then(|rest| rest.split_once('.'))
            .map_or(key, |(_, key)| key);
        let oauth_key = ssl_key.strip_prefix("oauthbearer.").unwrap_or(ssl_key);
        let admin_key = key.strip_prefix(ADMIN_PREFIX).unwrap_or_default();
        if LISTENER_KEYS.contains(&key)
            || SSL_KEYS.contains(&ssl_key)
            || SSL_KEYS.contains(&admin_key)
            || SASL_KEYS.contains(&ssl_key)
            || OAUTHBEARER_KEYS.contains(&oauth_key)
        {
            self.given.insert(key.to_owned(), value.trim().to_owned());
            return true;
        }
        false
    }

    /// Resolve the listeners. `listen` and `advertised` are `--listen` and
    /// `--advertised` (flag or file), which `listeners` replaces.
    pub(crate) fn resolve(
        &self,
        listen: Option<String>,
        advertised: Option<String>,
    ) -> Result<Listeners, SettingsError> {
        let given = |key: &str| self.given.get(key).map(String::as_str);
        let refused = |key: &str, reason: String| SettingsError::BrokerConfigRefused {
            key: key.to_owned(),
            value: given(key).unwrap_or_default().to_owned(),
            reason,
        };
        let protocols = self.protocol_map()?;
        let mut specs: Vec<(Endpoint, Option<(String, u16)>)> = match given("listeners") {
            Some(listeners) => {
                if let Some(listen) = listen {
                    return Err(refused(
                        "listeners",
                        format!(
                            "--listen {listen} is given too; listeners replaces it: name \
                             every listener in listeners, or give only --listen"
                        ),
                    ));
                }
                if let Some(advertised) = advertised {
                    return Err(refused(
                        "listeners",
                        format!(
                            "--advertised {advertised} is given too; with listeners, give \
                             advertised.listeners (NAME://HOST:PORT,...)"
                        ),
                    ));
                }
                parse_endpoints("listeners", listeners, true)?
                    .into_iter()
                    .map(|endpoint| (endpoint, None))
                    .collect()
            }
            None => {
                let bind = listen.unwrap_or_else(|| LISTEN_DEFAULT.into());
                let advertised = match advertised {
                    Some(text) => Some(split_host_port(&text).map_err(|reason| {
                        SettingsError::ConfigFileValue {
                            name: "advertised".into(),
                            value: text.clone(),
                            reason,
                        }
                    })?),
                    None => None,
                };
                let spec = Endpoint {
                    name: DEFAULT_LISTENER.into(),
                    host: String::new(),
                    port: 0,
                    bind,
                };
                vec![(spec, advertised)]
            }
        };
        if let Some(advertised) = given("advertised.listeners") {
            for endpoint in parse_endpoints("advertised.listeners", advertised, false)? {
                let Some((_, slot)) = specs.iter_mut().find(|(s, _)| s.name == endpoint.name)
                else {
                    return Err(refused(
                        "advertised.listeners",
                        format!("{} is not one of the listeners", endpoint.name),
                    ));
                };
                if endpoint.host.is_empty() || is_wildcard(&endpoint.host) {
                    return Err(refused(
                        "advertised.listeners",
                        format!(
                            "{}: advertise a host clients can reach, not a wildcard",
                            endpoint.name
                        ),
                    ));
                }
                *slot = Some((endpoint.host, endpoint.port));
            }
        }
        let mut resolved = Vec::with_capacity(specs.len());
        for (endpoint, advertised) in specs.drain(..) {
            let protocol = *protocols.get(&endpoint.name).ok_or_else(|| {
                refused(
                    "listener.security.protocol.map",
                    format!(
                        "names no protocol for listener {}: add {}:PLAINTEXT (or SSL, ...)",
                        endpoint.name, endpoint.name
                    ),
                )
            })?;
            let tls = match protocol {
                Protocol::Ssl | Protocol::SaslSsl => Some(self.tls_settings(&endpoint.name)?),
                _ => None,
            };
            let sasl = match protocol {
                Protocol::SaslPlaintext | Protocol::SaslSsl => {
                    Some(self.sasl_settings(&endpoint.name)?)
                }
                _ => None,
            };
            let oauthbearer = match &sasl {
                Some(sasl) if sasl.mechanisms.contains(&Mechanism::OAuthBearer) => {
                    Some(self.oauthbearer_settings(&endpoint.name)?)
                }
                _ => None,
            };
            resolved.push(ListenerSpec {
                name: endpoint.name,
                bind: endpoint.bind,
                protocol,
                advertised,
                tls,
                sasl,
                oauthbearer,
            });
        }
        let inter_broker = self.inter_broker(&resolved)?;
        Ok(Listeners {
            specs: resolved,
            inter_broker,
        })
    }

    /// `listener.security.protocol.map`, or Kafka's default.
    fn protocol_map(&self) -> Result<BTreeMap<String, Protocol>, SettingsError> {
        let key = "listener.security.protocol.map";
        let Some(map) = self.given.get(key) else {
            return Ok(PROTOCOLS
                .into_iter()
                .map(|p| (p.name().to_owned(), p))
                .collect());
        };
        let refused = |reason: String| SettingsError::BrokerConfigRefused {
            key: key.to_owned(),
            value: map.clone(),
            reason,
        };
        let mut out = BTreeMap::new();
        for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, protocol) = entry
                .split_once(':')
                .ok_or_else(|| refused(format!("{entry:?} is not NAME:PROTOCOL")))?;
            let name = listener_name(name).map_err(&refused)?;
            let protocol = Protocol::parse(protocol).ok_or_else(|| {
                refused(format!(
                    "{protocol:?} is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, \
                     SASL_SSL)"
                ))
            })?;
            if out.insert(name.clone(), protocol).is_some() {
                return Err(refused(format!("{name} is mapped twice")));
            }
        }
        Ok(out)
    }

    /// `inter.broker.listener.name`, else the listener of
    /// `security.inter.broker.protocol` (Kafka's default: PLAINTEXT), else
    /// the first listener.
    fn inter_broker(&self, specs: &[ListenerSpec]) -> Result<String, SettingsError> {
        if let Some(name) = self.given.get("inter.broker.listener.name") {
            let name = name.to_ascii_uppercase();
            if !specs.iter().any(|s| s.name == name) {
                return Err(SettingsError::BrokerConfigRefused {
                    key: "inter.broker.listener.name".into(),
                    value: name,
                    reason: "is not one of the listeners".into(),
                });
            }
            return Ok(name);
        }
        let wanted = match self.given.get("security.inter.broker.protocol") {
            Some(text) => Some(Protocol::parse(text).ok_or_else(|| {
                SettingsError::BrokerConfigRefused {
                    key: "security.inter.broker.protocol".into(),
                    value: text.clone(),
                    reason: "is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
                        .into(),
                }
            })?),
            None => None,
        };
        let by_protocol = specs
            .iter()
            .find(|s| s.protocol == wanted.unwrap_or(Protocol::Plaintext));
        match (by_protocol, wanted) {
            (Some(spec), _) => Ok(spec.name.clone()),
            (None, Some(protocol)) => Err(SettingsError::BrokerConfigRefused {
                key: "security.inter.broker.protocol".into(),
                value: protocol.name().into(),
                reason: "no listener has this protocol".into(),
            }),
            (None, None) => Ok(specs.first().map(|s| s.name.clone()).unwrap_or_default()),
        }
    }

    /// A TLS setting of listener `name`: its `listener.name.NAME.` form
    /// first (Kafka writes the name in lower case there), then the broker-wide one.
    fn ssl(&self, name: &str, key: &str) -> Option<(String, &str)> {
        let prefixed = format!("listener.name.{}.{key}", name.to_ascii_lowercase());
        if let Some(value) = self.given.get(&prefixed) {
            return Some((prefixed, value));
        }
        self.given
            .get(key)
            .map(|value| (key.to_owned(), value.as_str()))
    }

    /// `sasl.enabled.mechanisms` (default: the SCRAM mechanisms; PLAIN
    /// sends the password itself, so it is served only when named) and
    /// `connections.max.reauth.ms` (default 0: sessions do not end).
    fn sasl_settings(&self, name: &str) -> Result<SaslSettings, SettingsError> {
        let refused =
            |(key, value): (String, &str), reason: String| SettingsError::BrokerConfigRefused {
                key,
                value: value.to_owned(),
                reason,
            };
        let mechanisms = match self.ssl(name, "sasl.enabled.mechanisms") {
            None => vec![Mechanism::ScramSha256, Mechanism::ScramSha512],
            Some(given) => {
                let mut mechanisms = Vec::new();
                for text in given.1.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                    let mechanism = Mechanism::parse(text).ok_or_else(|| {
                        refused(
                            given.clone(),
                            format!(
                                "{text} is not served: Weir serves PLAIN, SCRAM-SHA-256, \
                                 SCRAM-SHA-512 and OAUTHBEARER (GSSAPI, Kerberos, is not \
                                 served; names are upper case)"
                            ),
                        )
                    })?;
                    if !mechanisms.contains(&mechanism) {
                        mechanisms.push(mechanism);
                    }
                }
                if mechanisms.is_empty() {
                    return Err(refused(given, "names no mechanism".into()));
                }
                mechanisms
            }
        };
        let reauth_ms = match self.ssl(name, "connections.max.reauth.ms") {
            None => 0,
            Some(given) => given
                .1
                .parse::<u64>()
                .map_err(|e| refused(given.clone(), e.to_string()))?,
        };
        Ok(SaslSettings {
            mechanisms,
            reauth_ms,
            oauthbearer: None,
        })
    }

    /// An OAUTHBEARER setting of listener `name`: Kafka's
    /// `listener.name.NAME.oauthbearer.KEY` first, then
    /// `listener.name.NAME.KEY`, then the broker-wide one.
    fn oauth(&self, name: &str, key: &str) -> Option<(String, &str)> {
        let prefixed = format!(
            "listener.name.{}.oauthbearer.{key}",
            name.to_ascii_lowercase()
        );
        if let Some(value) = self.given.get(&prefixed) {
            return Some((prefixed, value));
        }
        self.ssl(name, key)
    }

    /// KIP-768's settings for a listener that serves OAUTHBEARER: the JWKS
    /// (required) and what a token must be.
    fn oauthbearer_settings(&self, name: &str) -> Result<OAuthBearerSettings, SettingsError> {
        let refused =
            |(key, value): (String, &str), reason: String| SettingsError::BrokerConfigRefused {
                key,
                value: value.to_owned(),
                reason,
            };
        let url_key = "sasl.oauthbearer.jwks.endpoint.url";
        let jwks = match self.oauth(name, url_key) {
            Some(given) => {
                JwksSource::parse(given.1).map_err(|reason| refused(given.clone(), reason))?
            }
            None => {
                return Err(SettingsError::BrokerConfigRefused {
                    key: "sasl.enabled.mechanisms".into(),
                    value: "OAUTHBEARER".into(),
                    reason: format!(
                        "listener {name} serves OAUTHBEARER and needs {url_key}: the identity \
                         provider's JWKS, as a file (file:/path/jwks.json) or an http(s) URL"
                    ),
                });
            }
        };
        let number = |key: &str, default: u64| -> Result<u64, SettingsError> {
            match self.oauth(name, key) {
                None => Ok(default),
                Some(given) => given
                    .1
                    .parse::<u64>()
                    .map_err(|e| refused(given.clone(), e.to_string())),
            }
        };
        let refresh_ms = number(
            "sasl.oauthbearer.jwks.endpoint.refresh.ms",
            JWKS_REFRESH_MS_DEFAULT,
        )?;
        if refresh_ms == 0 {
            return Err(refused(
                self.oauth(name, "sasl.oauthbearer.jwks.endpoint.refresh.ms")
                    .unwrap_or_default(),
                "must be at least 1".into(),
            ));
        }
        let defaults = TokenRules::default();
        let text = |key: &str| {
            self.oauth(name, key)
                .map(|(_, value)| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let rules = TokenRules {
            expected_audience: text("sasl.oauthbearer.expected.audience")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|aud| !aud.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            expected_issuer: text("sasl.oauthbearer.expected.issuer"),
            sub_claim_name: text("sasl.oauthbearer.sub.claim.name")
                .unwrap_or(defaults.sub_claim_name),
            scope_claim_name: text("sasl.oauthbearer.scope.claim.name")
                .unwrap_or(defaults.scope_claim_name),
            clock_skew_seconds: number(
                "sasl.oauthbearer.clock.skew.seconds",
                defaults.clock_skew_seconds,
            )?,
        };
        Ok(OAuthBearerSettings {
            jwks,
            refresh_ms,
            rules,
        })
    }

    fn tls_settings(&self, name: &str) -> Result<TlsSettings, SettingsError> {
        let keystore_missing = || SettingsError::BrokerConfigRefused {
            key: "listeners".into(),
            value: name.to_owned(),
            reason: format!(
                "listener {name} is SSL and needs ssl.keystore.location: a PEM file with \
                 the private key and the certificate chain"
            ),
        };
        tls_settings_from(|key| self.ssl(name, key), keystore_missing)
    }

    /// The admin listener's TLS settings (`admin.ssl.*`, the Kafka
    /// listeners' names with the prefix `admin.`; the broker-wide `ssl.*`
    /// are not read): `None` when none is given, the listener then plain
    /// HTTP.
    pub(crate) fn admin_tls(&self) -> Result<Option<TlsSettings>, SettingsError> {
        let admin = |key: &str| {
            let key = format!("{ADMIN_PREFIX}{key}");
            self.given.get(&key).map(|value| (key, value.as_str()))
        };
        let Some((first, value)) = SSL_KEYS.iter().find_map(|key| admin(key)) else {
            return Ok(None);
        };
        let keystore_missing = || SettingsError::BrokerConfigRefused {
            key: first.clone(),
            value: value.to_owned(),
            reason: "the admin listener's TLS needs admin.ssl.keystore.location: a PEM file \
                     with the private key and the certificate chain"
                .into(),
        };
        tls_settings_from(admin, keystore_missing).map(Some)
    }
}

/// A listener's TLS settings, read with `ssl`, which gives a setting's
/// value by its Kafka name (`ssl.keystore.location`, ...) and the name it
/// was given under.
fn tls_settings_from<'a>(
    ssl: impl Fn(&str) -> Option<(String, &'a str)>,
    keystore_missing: impl FnOnce() -> SettingsError,
) -> Result<TlsSettings, SettingsError> {
    let refused =
        |(key, value): (String, &str), reason: String| SettingsError::BrokerConfigRefused {
            key,
            value: value.to_owned(),
            reason,
        };
    for password in [
        "ssl.keystore.password",
        "ssl.key.password",
        "ssl.truststore.password",
    ] {
        if let Some(given) = ssl(password) {
            return Err(refused(
                (given.0, "(hidden)"),
                "Weir reads PEM files with unencrypted keys only; drop the password \
                     (decrypt a key with `openssl pkcs8 -in KEY -out KEY.pem -nocrypt`)"
                    .into(),
            ));
        }
    }
    for kind in ["ssl.keystore.type", "ssl.truststore.type"] {
        if let Some(given) = ssl(kind)
            && !given.1.eq_ignore_ascii_case("PEM")
        {
            return Err(refused(
                given,
                "Weir reads PEM files only; convert a JKS or PKCS12 store to PEM \
                     (`weir cert dev` makes PEM files for trying TLS)"
                    .into(),
            ));
        }
    }
    let keystore = ssl("ssl.keystore.location")
        .map(|(_, path)| PathBuf::from(path))
        .ok_or_else(keystore_missing)?;
    let truststore = ssl("ssl.truststore.location").map(|(_, path)| PathBuf::from(path));
    let client_auth = match ssl("ssl.client.auth") {
        None => ClientAuth::None,
        Some(given) => ClientAuth::parse(given.1)
            .ok_or_else(|| refused(given, "must be required, requested or none".into()))?,
    };
    let principal_mapping = match ssl("ssl.principal.mapping.rules") {
        None => SslPrincipalMapper::default(),
        Some(given) => {
            SslPrincipalMapper::parse(given.1).map_err(|e| refused(given, e.to_string()))?
        }
    };
    Ok(TlsSettings {
        keystore,
        truststore,
        client_auth,
        principal_mapping,
    })
}

/// One `NAME://HOST:PORT` entry.
struct Endpoint {
    name: String,
    /// The host as written: empty means every interface.
    host: String,
    port: u16,
    /// What to bind: `HOST:PORT`, the empty host as `0.0.0.0`.
    bind: String,
}

/// Parses `NAME://HOST:PORT,...`; each name once, and for `listeners`
/// each port once.
fn parse_endpoints(
    key: &str,
    text: &str,
    distinct_ports: bool,
) -> Result<Vec<Endpoint>, SettingsError> {
    let refused = |reason: String| SettingsError::BrokerConfigRefused {
        key: key.to_owned(),
        value: text.to_owned(),
        reason,
    };
    let mut out: Vec<Endpoint> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry.split_once("://").ok_or_else(|| {
            refused(format!(
                "{entry:?} is not NAME://HOST:PORT (e.g. PLAINTEXT://127.0.0.1:9092)"
            ))
        })?;
        let name = listener_name(name).map_err(&refused)?;
        let (host, port) = split_host_port(address).map_err(&refused)?;
        if out.iter().any(|e| e.name == name) {
            return Err(refused(format!("listener {name} is named twice")));
        }
        if distinct_ports && port != 0 && out.iter().any(|e| e.port == port) {
            return Err(refused(format!("port {port} is given to two listeners")));
        }
        let bind = if host.is_empty() {
            format!("0.0.0.0:{port}")
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        out.push(Endpoint {
            name,
            host,
            port,
            bind,
        });
    }
    if out.is_empty() {
        return Err(refused("names no listener".into()));
    }
    Ok(out)
}

/// A listener name: letters, digits and underscores, upper-cased as Kafka
/// treats it.
fn listener_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{name:?} is not a listener name (letters, digits and underscores)"
        ));
    }
    Ok(name.to_ascii_uppercase())
}

/// `HOST:PORT`, `[V6]:PORT` or `:PORT`; the host without brackets.
fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let expected = || format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:9092, [::1]:9092)");
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(expected)?,
        None if host.contains(':') => return Err(expected()),
        None => host,
    };
    Ok((host.to_owned(), port))
}

fn is_wildcard(host: &str) -> bool {
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// A listener bound, with its TLS configuration built.
pub(crate) struct Bound {
    pub spec: ListenerSpec,
    pub socket: tokio::net::TcpListener,
    pub tls: Option<Arc<TlsAcceptor>>,
}

impl From<Bound> for weir_server::Listener {
    fn from(bound: Bound) -> Self {
        weir_server::Listener {
            name: Arc::from(bound.spec.name.as_str()),
            sasl: bound.spec.sasl.map(Arc::new),
            socket: bound.socket,
            tls: bound.tls,
        }
    }
}

impl Bound {
    /// The bound address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.socket.local_addr().map_err(ServeError::BoundAddress)
    }

    /// Where clients of this listener are told to connect: its
    /// `advertised.listeners` entry, else the bound address (a wildcard
    /// as 127.0.0.1, with a warning).
    pub(crate) fn advertised(&self) -> Result<(String, i32), ServeError> {
        if let Some((host, port)) = &self.spec.advertised {
            return Ok((host.clone(), i32::from(*port)));
        }
        let bound = self.local_addr()?;
        let host = if bound.ip().is_unspecified() {
            tracing::warn!(
                listener = %self.spec.name,
                "listening on {bound} with no advertised address; telling clients to use \
                 127.0.0.1. Set --advertised (or advertised.listeners) to an address \
                 clients can reach."
            );
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        Ok((host, i32::from(bound.port())))
    }

    /// The endpoint registered for this listener.
    pub(crate) fn endpoint(&self) -> Result<weir_metadata::Endpoint, ServeError> {
        let (host, port) = self.advertised()?;
        Ok(weir_metadata::Endpoint {
            listener: self.spec.name.clone(),
            host,
            port,
            security_protocol: self.spec.protocol.name().to_owned(),
        })
    }
}

/// Bind every listener and build the TLS configuration of each `SSL` one.
pub(crate) async fn bind(listeners: &Listeners) -> Result<Vec<Bound>, ServeError> {
    let mut bound = Vec::with_capacity(listeners.specs.len());
    for spec in &listeners.specs {
        let socket = tokio::net::TcpListener::bind(&spec.bind)
            .await
            .map_err(|source| ServeError::Listen {
                listen: format!("{} ({})", spec.bind, spec.name),
                source,
            })?;
        let tls = match &spec.tls {
            Some(settings) => Some(Arc::new(TlsAcceptor::load(settings.clone()).map_err(
                |source| ServeError::Tls {
                    listener: spec.name.clone(),
                    source,
                },
            )?)),
            None => None,
        };
        let mut spec = spec.clone();
        // The keys are loaded before the broker says it listens: a JWKS
        // that cannot be read or fetched stops the start, as a bad
        // certificate does.
        if let (Some(settings), Some(sasl)) = (&spec.oauthbearer, spec.sasl.as_mut()) {
            let bearer = OAuthBearer::load(settings.clone())
                .await
                .map_err(|source| ServeError::Jwks {
                    listener: spec.name.clone(),
                    source,
                })?;
            sasl.oauthbearer = Some(Arc::new(bearer));
        }
        bound.push(Bound { spec, socket, tls });
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> ListenerConfigs {
        let mut configs = ListenerConfigs::default();
        for (key, value) in pairs {
            assert!(configs.take(key, value), "{key} is a listener setting");
        }
        configs
    }

    #[test]
    fn listen_is_one_plaintext_listener() {
        let resolved = ListenerConfigs::default()
            .resolve(
                Some("127.0.0.1:0".into()),
                Some("kafka.example:9092".into()),
            )
            .unwrap();
        assert_eq!(resolved.specs.len(), 1);
        let spec = &resolved.specs[0];
        assert_eq!(
            (spec.name.as_str(), spec.bind.as_str(), spec.protocol),
            ("PLAINTEXT", "127.0.0.1:0", Protocol::Plaintext)
        );
        assert_eq!(spec.advertised, Some(("kafka.example".into(), 9092)));
        assert_eq!(resolved.inter_broker, "PLAINTEXT");
    }

    #[test]
    fn listeners_are_named_mapped_and_advertised_as_in_kafka() {
        let resolved = configs(&[
            ("listeners", "INTERNAL://:9092, CLIENT://[::1]:9093"),
            ("advertised.listeners", "CLIENT://kafka.example:19093"),
            (
                "listener.security.protocol.map",
                "INTERNAL:PLAINTEXT,CLIENT:SSL",
            ),
            (
                "listener.name.client.ssl.keystore.location",
                "/etc/broker.pem",
            ),
            ("ssl.keystore.location", "/etc/other.pem"),
            ("ssl.truststore.location", "/etc/ca.crt"),
            ("ssl.client.auth", "required"),
            ("inter.broker.listener.name", "internal"),
        ])
        .resolve(None, None)
        .unwrap();
        let [internal, client] = &resolved.specs[..] else {
            panic!("two listeners: {resolved:?}");
        };
        assert_eq!(internal.bind, "0.0.0.0:9092");
        assert_eq!(internal.advertised, None);
        assert!(internal.tls.is_none());
        assert_eq!(client.bind, "[::1]:9093");
        assert_eq!(client.advertised, Some(("kafka.example".into(), 19093)));
        let tls = client.tls.as_ref().unwrap();
        assert_eq!(tls.keystore, PathBuf::from("/etc/broker.pem"));
        assert_eq!(tls.truststore, Some(PathBuf::from("/etc/ca.crt")));
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(resolved.inter_broker, "INTERNAL");
    }

    #[test]
    fn a_sasl_listener_takes_its_mechanisms_and_session_lifetime() {
        let resolved = configs(&[
            ("listeners", "SASL_PLAINTEXT://:9094,SASL_SSL://:9095"),
            (
                "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
                "PLAIN, SCRAM-SHA-512",
            ),
            ("connections.max.reauth.ms", "60000"),
            ("ssl.keystore.location", "/etc/broker.pem"),
        ])
        .resolve(None, None)
        .unwrap();
        let [plain, secure] = &resolved.specs[..] else {
            panic!("two listeners: {resolved:?}");
        };
        let sasl = plain.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanisms, [Mechanism::Plain, Mechanism::ScramSha512]);
        assert_eq!(sasl.reauth_ms, 60_000);
        assert!(plain.tls.is_none());
        let sasl = secure.sasl.as_ref().unwrap();
        assert_eq!(
            sasl.mechanisms,
            [Mechanism::ScramSha256, Mechanism::ScramSha512],
            "SCRAM unless named"
        );
        assert!(secure.tls.is_some());
    }

    #[test]
    fn an_oauthbearer_listener_takes_kip_768_settings_in_kafkas_forms() {
        let resolved = configs(&[
            ("listeners", "SASL_PLAINTEXT://:9094,OTHER://:9095"),
            (
                "listener.security.protocol.map",
                "SASL_PLAINTEXT:SASL_PLAINTEXT,OTHER:SASL_PLAINTEXT",
            ),
            ("sasl.enabled.mechanisms", "OAUTHBEARER,SCRAM-SHA-512"),
            (
                "sasl.oauthbearer.jwks.endpoint.url",
                "file:///etc/weir/jwks.json",
            ),
            (
                "listener.name.other.oauthbearer.sasl.oauthbearer.jwks.endpoint.url",
                "https://idp.example/jwks",
            ),
            (
                "listener.name.other.sasl.oauthbearer.expected.issuer",
                "https://idp.example",
            ),
            ("sasl.oauthbearer.expected.audience", "kafka, weir"),
            ("sasl.oauthbearer.sub.claim.name", "client_id"),
            ("sasl.oauthbearer.clock.skew.seconds", "5"),
        ])
        .resolve(None, None)
        .unwrap();
        let [first, other] = &resolved.specs[..] else {
            panic!("two listeners: {resolved:?}");
        };
        let sasl = first.sasl.as_ref().unwrap();
        assert_eq!(
            sasl.mechanisms,
            [Mechanism::OAuthBearer, Mechanism::ScramSha512]
        );
        let oauth = first.oauthbearer.as_ref().unwrap();
        assert_eq!(
            oauth.jwks,
            JwksSource::File(PathBuf::from("/etc/weir/jwks.json"))
        );
        assert_eq!(oauth.refresh_ms, JWKS_REFRESH_MS_DEFAULT);
        assert_eq!(oauth.rules.expected_audience, ["kafka", "weir"]);
        assert_eq!(oauth.rules.expected_issuer, None);
        assert_eq!(oauth.rules.sub_claim_name, "client_id");
        assert_eq!(oauth.rules.scope_claim_name, "scope");
        assert_eq!(oauth.rules.clock_skew_seconds, 5);
        let oauth = other.oauthbearer.as_ref().unwrap();
        assert_eq!(
            oauth.jwks,
            JwksSource::Url("https://idp.example/jwks".into())
        );
        assert_eq!(
            oauth.rules.expected_issuer.as_deref(),
            Some("https://idp.example")
        );
        let without_jwks = configs(&[
            ("listeners", "SASL_PLAINTEXT://:9094"),
            ("sasl.enabled.mechanisms", "OAUTHBEARER"),
        ])
        .resolve(None, None)
        .expect_err("refused")
        .to_string();
        assert!(
            without_jwks.contains("sasl.oauthbearer.jwks.endpoint.url"),
            "{without_jwks}"
        );
    }

    #[test]
    fn listener_settings_that_cannot_work_are_refused() {
        let refused = |pairs: &[(&str, &str)], listen: Option<&str>| {
            configs(pairs)
                .resolve(listen.map(str::to_owned), None)
                .expect_err("refused")
                .to_string()
        };
        let both = refused(
            &[("listeners", "PLAINTEXT://:9092")],
            Some("127.0.0.1:9092"),
        );
        assert!(both.contains("replaces it"), "{both}");
        let unmapped = refused(&[("listeners", "CLIENT://:9092")], None);
        assert!(unmapped.contains("CLIENT:PLAINTEXT"), "{unmapped}");
        let keyless = refused(&[("listeners", "SSL://:9093")], None);
        assert!(keyless.contains("ssl.keystore.location"), "{keyless}");
        let gssapi = refused(
            &[
                ("listeners", "SASL_PLAINTEXT://:9094"),
                ("sasl.enabled.mechanisms", "GSSAPI"),
            ],
            None,
        );
        assert!(
            gssapi.contains("GSSAPI") && gssapi.contains("not served"),
            "{gssapi}"
        );
        let twice = refused(&[("listeners", "PLAINTEXT://:9092,SSL://:9092")], None);
        assert!(twice.contains("two listeners"), "{twice}");
        let stranger = refused(
            &[
                ("listeners", "PLAINTEXT://:9092"),
                ("advertised.listeners", "SSL://kafka.example:9093"),
            ],
            None,
        );
        assert!(stranger.contains("not one of the listeners"), "{stranger}");
        let jks = refused(
            &[
                ("listeners", "SSL://:9093"),
                ("ssl.keystore.location", "/etc/broker.jks"),
                ("ssl.keystore.type", "JKS"),
            ],
            None,
        );
        assert!(jks.contains("PEM"), "{jks}");
        let auth = refused(
            &[
                ("listeners", "SSL://:9093"),
                ("ssl.keystore.location", "/etc/broker.pem"),
                ("ssl.client.auth", "sometimes"),
            ],
            None,
        );
        assert!(auth.contains("required, requested or none"), "{auth}");
        let password = refused(
            &[
                ("listeners", "SSL://:9093"),
                ("ssl.keystore.location", "/etc/broker.pem"),
                ("ssl.key.password", "secret"),
            ],
            None,
        );
        assert!(!password.contains("secret"), "a password is never echoed");
    }

    #[test]
    fn settings_of_other_kinds_are_not_taken() {
        let mut configs = ListenerConfigs::default();
        assert!(!configs.take("log.retention.ms", "1"));
        assert!(!configs.take("listener.name.client.log.retention.ms", "1"));
        assert!(configs.take("listener.name.client.ssl.client.auth", "required"));
        assert!(configs.take("admin.ssl.client.auth", "required"));
        assert!(!configs.take("admin.log.retention.ms", "1"));
    }

    #[test]
    fn the_admin_listeners_tls_is_read_from_admin_ssl_alone() {
        let none = configs(&[("ssl.keystore.location", "/etc/broker.pem")]);
        assert!(
            none.admin_tls().expect("resolves").is_none(),
            "ssl.* are the Kafka listeners'"
        );
        let admin = configs(&[
            ("admin.ssl.keystore.location", "/etc/admin.pem"),
            ("admin.ssl.truststore.location", "/etc/ca.crt"),
            ("admin.ssl.client.auth", "requested"),
            ("ssl.client.auth", "required"),
        ])
        .admin_tls()
        .expect("resolves")
        .expect("TLS");
        assert_eq!(admin.keystore, PathBuf::from("/etc/admin.pem"));
        assert_eq!(admin.truststore, Some(PathBuf::from("/etc/ca.crt")));
        assert_eq!(admin.client_auth, ClientAuth::Requested);
        let keyless = configs(&[("admin.ssl.client.auth", "required")])
            .admin_tls()
            .expect_err("refused")
            .to_string();
        assert!(keyless.contains("admin.ssl.keystore.location"), "{keyless}");
        let typo = configs(&[
            ("admin.ssl.keystore.location", "/etc/admin.pem"),
            ("admin.ssl.client.auth", "sometimes"),
        ])
        .admin_tls()
        .expect_err("refused")
        .to_string();
        assert!(typo.contains("admin.ssl.client.auth"), "{typo}");
    }
}
