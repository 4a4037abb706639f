//! SASL on a listener whose security protocol is `SASL_PLAINTEXT` or
//! `SASL_SSL`: each connection's authentication state, fed the requests the
//! reader decodes, as Kafka's SaslServerAuthenticator is.
//!
//! Before a connection has authenticated, only ApiVersions, SaslHandshake
//! (v1; v0 is advertised, as Kafka does, but refused) and SaslAuthenticate
//! are served; any other request closes it,
//! unanswered, and never reaches a handler. A failed authentication is
//! answered with SASL_AUTHENTICATION_FAILED after
//! [`FAILED_AUTHENTICATION_DELAY`] (Kafka's
//! `connection.failed.authentication.delay.ms`), then the connection is
//! closed; an address that fails more than
//! [`FAILED_AUTHENTICATIONS_PER_MINUTE_MAX`] times in a minute is refused
//! without its password being checked until the minute is over, so a
//! password guesser pays for its guesses and cannot make the broker spend
//! PBKDF2 rounds for it. With `connections.max.reauth.ms` (KIP-368), a
//! session lasts that long: the client is told in SaslAuthenticate's
//! `session_lifetime_ms`, re-authenticates on the same connection (as the
//! same principal), and a connection that sends anything else after its
//! session ended is closed.
//!
//! `OAUTHBEARER` checks the client's JWT against the listener's JWKS
//! (`jwks.rs`, with `weir_auth::oauth`'s rules). A refused token is
//! answered, as Kafka does (RFC 7628 section 3.2.2), with the error
//! challenge `{"status":"invalid_token"}`; the client answers `%x01` and
//! is then refused as with any other mechanism, after the same delay, the
//! failure counted toward the same limit when the token was refused. Its
//! session lasts the token's remaining lifetime, capped by
//! `connections.max.reauth.ms` when that is set (KIP-368, as Kafka).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use weir_auth::oauth::requested_key_id;
use weir_auth::{
    CredentialLookup, KafkaPrincipal, Mechanism, OAuthBearerServer, OAuthError, OAuthStep,
    SaslError, SaslServer, ScramCredential, ScramMechanism, Step,
};
use weir_metadata::MetadataStore;

use crate::jwks::OAuthBearer;

/// How long a failed authentication waits before it is answered (Kafka's
/// `connection.failed.authentication.delay.ms` default is 100).
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);
/// Failed authentications one client address may have in a minute; past
/// it, its attempts are refused unchecked until the minute is over.
pub const FAILED_AUTHENTICATIONS_PER_MINUTE_MAX: u32 = 10;
/// Addresses whose failures are counted at once; the oldest window is
/// dropped to make room, so a flood of addresses cannot grow the table.
const FAILING_ADDRESSES_MAX: usize = 10_000;
const MINUTE: Duration = Duration::from_secs(60);

/// A SASL listener's settings.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// `sasl.enabled.mechanisms`.
    pub mechanisms: Vec<Mechanism>,
    /// `connections.max.reauth.ms`; 0 means a session never ends (an
    /// OAUTHBEARER session still ends with its token).
    pub reauth_ms: u64,
    /// The keys and rules of `OAUTHBEARER`, loaded; set when it is enabled.
    pub oauthbearer: Option<Arc<OAuthBearer>>,
}

/// The failed authentications of each client address in its current minute,
/// shared by every connection of every SASL listener.
#[derive(Debug, Default)]
pub(crate) struct FailedAuthentications {
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuthentications {
    /// Whether `address` is over its failures for this minute.
    fn refused(&self, address: IpAddr, now: Instant) -> bool {
        let Ok(by_address) = self.by_address.lock() else {
            return true;
        };
        by_address.get(&address).is_some_and(|(since, failures)| {
            now < *since + MINUTE && *failures >= FAILED_AUTHENTICATIONS_PER_MINUTE_MAX
        })
    }

    fn failed(&self, address: IpAddr, now: Instant) {
        let Ok(mut by_address) = self.by_address.lock() else {
            return;
        };
        if by_address.len() >= FAILING_ADDRESSES_MAX && !by_address.contains_key(&address) {
            by_address.retain(|_, (since, _)| now < *since + MINUTE);
            if by_address.len() >= FAILING_ADDRESSES_MAX
                && let Some(oldest) = by_address
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(a, _)| *a)
            {
                by_address.remove(&oldest);
            }
        }
        let entry = by_address.entry(address).or_insert((now, 0));
        if now >= entry.0 + MINUTE {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// What the reader does with a request on a SASL connection.
pub(crate) enum Verdict {
    /// Hand it to the broker.
    Serve,
    /// Answer it here with this response; then close the connection if `close`.
    Answer {
        response: Box<ResponseKind>,
        close: bool,
        delay: Option<Duration>,
    },
    /// Close the connection without an answer, for this reason.
    Close(String),
}

/// Where an exchange stands.
enum Exchange {
    /// No handshake since the last authentication (or ever).
    Idle,
    /// SaslHandshake chose this mechanism; SaslAuthenticate comes next.
    Chosen(Mechanism),
    /// SaslAuthenticate is under way.
    Running(Box<SaslServer>),
    /// OAUTHBEARER's error challenge is sent; the client's `%x01` is next.
    OAuthChallenged(OAuthBearerServer),
}

/// One connection's SASL state.
pub(crate) struct Authenticator {
    settings: Arc<SaslSettings>,
    failures: Arc<FailedAuthentications>,
    metadata: Arc<dyn MetadataStore>,
    address: IpAddr,
    exchange: Exchange,
    /// Who the connection authenticated as, and when its session ends.
    session: Option<(KafkaPrincipal, Option<Instant>)>,
}

impl Authenticator {
    pub(crate) fn new(
        settings: Arc<SaslSettings>,
        failures: Arc<FailedAuthentications>,
        metadata: Arc<dyn MetadataStore>,
        address: IpAddr,
    ) -> Self {
        Self {
            settings,
            failures,
            metadata,
            address,
            exchange: Exchange::Idle,
            session: None,
        }
    }

    /// The principal the connection authenticated as, if it has.
    pub(crate) fn principal(&self) -> Option<&KafkaPrincipal> {
        self.session.as_ref().map(|(principal, _)| principal)
    }

    /// Decide what to do with a request. SaslAuthenticate's work (a
    /// credential look-up, PBKDF2 for PLAIN) runs on the blocking pool.
    pub(crate) async fn on_request(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &mut RequestKind,
    ) -> Verdict {
        let now = Instant::now();
        match body {
            RequestKind::ApiVersions(_) => Verdict::Serve,
            // v0 is followed by unframed SASL tokens, which only clients
            // older than SaslAuthenticate (Kafka 1.0) send. It is advertised
            // all the same, as Kafka does: librdkafka looks for v0 before it
            // sends its v1 handshake.
            RequestKind::SaslHandshake(_) if version < 1 => {
                tracing::warn!(address = %self.address,
                    "closing connection: SaslHandshake v0 (unframed SASL tokens) is not served; \
                     the client must use v1 and SaslAuthenticate");
                Verdict::Answer {
                    response: Box::new(ResponseKind::SaslHandshake(
                        SaslHandshakeResponse::default()
                            .with_error_code(ResponseError::IllegalSaslState.code()),
                    )),
                    close: true,
                    delay: None,
                }
            }
            RequestKind::SaslHandshake(req) => self.handshake(req),
            RequestKind::SaslAuthenticate(req) => {
                let req = std::mem::take(req);
                self.authenticate(req, version, now).await
            }
            _ => match &self.session {
                None => Verdict::Close(format!(
                    "{api:?} before SASL authentication; only ApiVersions, SaslHandshake and \
                     SaslAuthenticate are served until then"
                )),
                Some(_) if !matches!(self.exchange, Exchange::Idle) => {
                    Verdict::Close(format!("{api:?} during SASL re-authentication"))
                }
                Some((_, Some(ends))) if now >= *ends => Verdict::Close(
                    "the SASL session ended (connections.max.reauth.ms) and the client did not \
                     re-authenticate"
                        .to_owned(),
                ),
                Some(_) => Verdict::Serve,
            },
        }
    }

    fn handshake(&mut self, req: &SaslHandshakeRequest) -> Verdict {
        let enabled: Vec<StrBytes> = self
            .settings
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let answer = |code: Option<ResponseError>, close: bool| Verdict::Answer {
            response: Box::new(ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default()
                    .with_error_code(code.map_or(0, |c| c.code()))
                    .with_mechanisms(enabled.clone()),
            )),
            close,
            delay: None,
        };
        if matches!(
            self.exchange,
            Exchange::Running(_) | Exchange::OAuthChallenged(_)
        ) {
            return answer(Some(ResponseError::IllegalSaslState), true);
        }
        match Mechanism::parse(req.mechanism.as_str()) {
            Some(mechanism) if self.settings.mechanisms.contains(&mechanism) => {
                self.exchange = Exchange::Chosen(mechanism);
                answer(None, false)
            }
            _ => {
                tracing::warn!(address = %self.address, mechanism = %req.mechanism.as_str(),
                    "closing connection: SASL mechanism not enabled (sasl.enabled.mechanisms)");
                answer(Some(ResponseError::UnsupportedSaslMechanism), true)
            }
        }
    }

    async fn authenticate(
        &mut self,
        req: SaslAuthenticateRequest,
        version: i16,
        now: Instant,
    ) -> Verdict {
        let server = match std::mem::replace(&mut self.exchange, Exchange::Idle) {
            Exchange::Idle => {
                return refused(
                    ResponseError::IllegalSaslState,
                    "SaslAuthenticate before SaslHandshake".to_owned(),
                    None,
                );
            }
            Exchange::Chosen(Mechanism::OAuthBearer) => {
                return self
                    .oauthbearer(OAuthBearerServer::new(), false, req, version, now)
                    .await;
            }
            Exchange::OAuthChallenged(server) => {
                return self.oauthbearer(server, true, req, version, now).await;
            }
            Exchange::Chosen(mechanism) => Box::new(SaslServer::new(mechanism)),
            Exchange::Running(server) => server,
        };
        let mechanism = server.mechanism();
        if self.failures.refused(self.address, now) {
            tracing::warn!(address = %self.address, %mechanism,
                limit = FAILED_AUTHENTICATIONS_PER_MINUTE_MAX,
                "SASL authentication refused unchecked: too many failed attempts from this \
                 address in the last minute");
            return refused(
                ResponseError::SaslAuthenticationFailed,
                "Authentication failed: too many failed attempts from this address; try again \
                 in a minute"
                    .to_owned(),
                Some(FAILED_AUTHENTICATION_DELAY),
            );
        }
        let lookup = MetadataCredentials(self.metadata.clone());
        let stepped = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let step = server.step(&req.auth_bytes, &lookup);
            (server, step)
        })
        .await;
        let (server, step) = match stepped {
            Ok(stepped) => stepped,
            Err(err) => {
                tracing::error!(error = %err, "SASL step failed");
                return Verdict::Close("the SASL step failed".to_owned());
            }
        };
        match step {
            Ok(Step::Challenge(bytes)) => {
                self.exchange = Exchange::Running(server);
                Verdict::Answer {
                    response: Box::new(ResponseKind::SaslAuthenticate(
                        SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                    )),
                    close: false,
                    delay: None,
                }
            }
            Ok(Step::Done {
                principal,
                final_message,
            }) => {
                let lifetime_ms = self.settings.reauth_ms;
                self.authenticated(
                    principal,
                    mechanism,
                    lifetime_ms,
                    final_message,
                    version,
                    now,
                )
            }
            Err(err) => {
                self.failures.failed(self.address, now);
                // The operator sees why; the client sees Kafka's message.
                tracing::warn!(address = %self.address, %mechanism, reason = %err,
                    "closing connection: SASL authentication failed");
                let message = match err {
                    SaslError::AuthenticationFailed { .. } | SaslError::AuthorizationIdMismatch => {
                        err.to_string()
                    }
                    _ => format!(
                        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                    ),
                };
                refused(
                    ResponseError::SaslAuthenticationFailed,
                    message,
                    Some(FAILED_AUTHENTICATION_DELAY),
                )
            }
        }
    }
}

impl Authenticator {
    /// The session starts (or, on re-authentication, goes on) as
    /// `principal` for `lifetime_ms` (0: for ever); the client is told the
    /// lifetime in SaslAuthenticate v1 and later.
    fn authenticated(
        &mut self,
        principal: KafkaPrincipal,
        mechanism: Mechanism,
        lifetime_ms: u64,
        final_message: Vec<u8>,
        version: i16,
        now: Instant,
    ) -> Verdict {
        if let Some((before, _)) = &self.session
            && *before != principal
        {
            tracing::warn!(address = %self.address, before = %before, after = %principal,
                "closing connection: re-authentication as another principal");
            return refused(
                ResponseError::SaslAuthenticationFailed,
                "Cannot change principals during re-authentication".to_owned(),
                None,
            );
        }
        let ends = (lifetime_ms > 0).then(|| now + Duration::from_millis(lifetime_ms));
        tracing::debug!(address = %self.address, %principal, %mechanism,
            session_lifetime_ms = lifetime_ms,
            reauthentication = self.session.is_some(), "SASL authenticated");
        self.session = Some((principal, ends));
        let mut response =
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(final_message));
        if version >= 1 {
            response.session_lifetime_ms = i64::try_from(lifetime_ms).unwrap_or(i64::MAX);
        }
        Verdict::Answer {
            response: Box::new(ResponseKind::SaslAuthenticate(response)),
            close: false,
            delay: None,
        }
    }

    /// An OAUTHBEARER message: the client's first (its token), or its
    /// `%x01` after the error challenge (`challenged`).
    async fn oauthbearer(
        &mut self,
        server: OAuthBearerServer,
        challenged: bool,
        req: SaslAuthenticateRequest,
        version: i16,
        now: Instant,
    ) -> Verdict {
        let mechanism = Mechanism::OAuthBearer;
        if !challenged && self.failures.refused(self.address, now) {
            tracing::warn!(address = %self.address, %mechanism,
                limit = FAILED_AUTHENTICATIONS_PER_MINUTE_MAX,
                "SASL authentication refused unchecked: too many failed attempts from this \
                 address in the last minute");
            return refused(
                ResponseError::SaslAuthenticationFailed,
                "Authentication failed: too many failed attempts from this address; try again \
                 in a minute"
                    .to_owned(),
                Some(FAILED_AUTHENTICATION_DELAY),
            );
        }
        let Some(bearer) = self.settings.oauthbearer.clone() else {
            tracing::error!(address = %self.address,
                "closing connection: OAUTHBEARER is enabled without its JWKS");
            return Verdict::Close("OAUTHBEARER has no JWKS".to_owned());
        };
        // A key the set lacks may be new at the identity provider.
        if !challenged
            && let Some(kid) = requested_key_id(&req.auth_bytes)
            && !bearer.keys().is_some_and(|keys| keys.contains_key_id(&kid))
        {
            bearer.refresh_for_unknown_kid(&kid).await;
        }
        let Some(keys) = bearer.keys() else {
            return Verdict::Close("the OAUTHBEARER keys are unavailable".to_owned());
        };
        let rules = bearer.rules().clone();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        // A signature check: public-key work, on the blocking pool as the
        // other mechanisms' steps are.
        let stepped = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let step = server.step(&req.auth_bytes, &keys, &rules, now_ms);
            (server, step)
        })
        .await;
        let (server, step) = match stepped {
            Ok(stepped) => stepped,
            Err(err) => {
                tracing::error!(error = %err, "SASL step failed");
                return Verdict::Close("the SASL step failed".to_owned());
            }
        };
        match step {
            Ok(OAuthStep::Done(token)) => {
                // KIP-368 as Kafka: the token's remaining lifetime, capped
                // by connections.max.reauth.ms. A token accepted within the
                // clock skew after its exp still gets a session, of 1 ms.
                let remaining_ms = token.expires_at_ms.saturating_sub(now_ms).max(1);
                let lifetime_ms = match self.settings.reauth_ms {
                    0 => remaining_ms,
                    reauth_ms => remaining_ms.min(reauth_ms),
                };
                tracing::debug!(address = %self.address, scope = ?token.scope,
                    kid = ?token.key_id, "OAUTHBEARER token accepted");
                self.authenticated(
                    token.principal,
                    mechanism,
                    lifetime_ms,
                    Vec::new(),
                    version,
                    now,
                )
            }
            Ok(OAuthStep::Challenge { challenge, error }) => {
                self.failures.failed(self.address, now);
                // The reason names claims and keys, never the token.
                tracing::warn!(address = %self.address, %mechanism, reason = %error,
                    "SASL authentication failed: OAUTHBEARER token refused");
                self.exchange = Exchange::OAuthChallenged(server);
                Verdict::Answer {
                    response: Box::new(ResponseKind::SaslAuthenticate(
                        SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge)),
                    )),
                    close: false,
                    delay: None,
                }
            }
            Err(err) => {
                if challenged {
                    // Logged with its reason when the challenge was sent.
                    tracing::debug!(address = %self.address, %mechanism, reason = %err,
                        "closing connection after the OAUTHBEARER error challenge");
                } else {
                    self.failures.failed(self.address, now);
                    tracing::warn!(address = %self.address, %mechanism, reason = %err,
                        "closing connection: SASL authentication failed");
                }
                let message = match err {
                    OAuthError::AuthorizationIdMismatch => err.to_string(),
                    _ => format!(
                        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                    ),
                };
                refused(
                    ResponseError::SaslAuthenticationFailed,
                    message,
                    Some(FAILED_AUTHENTICATION_DELAY),
                )
            }
        }
    }
}

/// A SaslAuthenticate answer that refuses, after which the connection closes.
fn refused(code: ResponseError, message: String, delay: Option<Duration>) -> Verdict {
    Verdict::Answer {
        response: Box::new(ResponseKind::SaslAuthenticate(
            SaslAuthenticateResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        )),
        close: true,
        delay,
    }
}

/// SCRAM credentials from the metadata store.
struct MetadataCredentials(Arc<dyn MetadataStore>);

impl CredentialLookup for MetadataCredentials {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let stored = self
            .0
            .scram_credentials()
            .into_iter()
            .find(|c| c.user == user && c.mechanism == mechanism.type_id())?;
        Some(ScramCredential {
            salt: stored.salt,
            iterations: u32::try_from(stored.iterations).ok()?,
            stored_key: stored.stored_key,
            server_key: stored.server_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_failures_is_refused_for_the_rest_of_the_minute() {
        let failures = FailedAuthentications::default();
        let (one, two): (IpAddr, IpAddr) =
            (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        for _ in 0..FAILED_AUTHENTICATIONS_PER_MINUTE_MAX {
            assert!(!failures.refused(one, start));
            failures.failed(one, start);
        }
        assert!(failures.refused(one, start));
        assert!(!failures.refused(two, start), "other addresses are not");
        let later = start + MINUTE;
        assert!(
            !failures.refused(one, later),
            "a minute later it may try again"
        );
        failures.failed(one, later);
        assert!(!failures.refused(one, later), "counted afresh");
    }

    #[test]
    fn the_table_of_failing_addresses_is_bounded() {
        let failures = FailedAuthentications::default();
        let now = Instant::now();
        for i in 0..(FAILING_ADDRESSES_MAX + 10) {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            failures.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        let held = failures.by_address.lock().map(|m| m.len()).unwrap_or(0);
        assert!(held <= FAILING_ADDRESSES_MAX, "{held}");
    }
}
