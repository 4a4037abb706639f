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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use weir_auth::{
    CredentialLookup, KafkaPrincipal, Mechanism, SaslError, SaslServer, ScramCredential,
    ScramMechanism, Step,
};
use weir_metadata::MetadataStore;

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
    /// `connections.max.reauth.ms`; 0 means a session never ends.
    pub reauth_ms: u64,
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
        if matches!(self.exchange, Exchange::Running(_)) {
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
                let reauth_ms = self.settings.reauth_ms;
                let ends = (reauth_ms > 0).then(|| now + Duration::from_millis(reauth_ms));
                tracing::debug!(address = %self.address, %principal, %mechanism,
                    reauthentication = self.session.is_some(), "SASL authenticated");
                self.session = Some((principal, ends));
                let mut response =
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(final_message));
                if version >= 1 {
                    response.session_lifetime_ms = i64::try_from(reauth_ms).unwrap_or(i64::MAX);
                }
                Verdict::Answer {
                    response: Box::new(ResponseKind::SaslAuthenticate(response)),
                    close: false,
                    delay: None,
                }
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
