//! The SASL mechanisms a broker serves, as state machines fed the client's
//! bytes.
//!
//! A [`SaslServer`] is one authentication attempt on one connection. The
//! network edge reads each `SaslAuthenticate` request's bytes, hands them
//! to [`SaslServer::step`], and sends back what it returns: a challenge to
//! answer, or the end of the exchange with the client's [`KafkaPrincipal`]
//! and a last message for the client. Nothing here does I/O, reads a clock
//! or knows where users are kept: credentials come through
//! [`CredentialLookup`], which the broker implements over its metadata.
//!
//! # Mechanisms
//!
//! - `PLAIN` (RFC 4616): `[authzid] NUL authcid NUL passwd`. The password
//!   is checked against the user's SCRAM credential, as Redpanda does, so
//!   one user store serves both mechanisms and no password is kept.
//! - `SCRAM-SHA-256` and `SCRAM-SHA-512` (RFC 5802, RFC 7677), as Kafka's
//!   `ScramSaslServer` serves them: no channel binding, Kafka's `tokenauth`
//!   extension refused (delegation tokens are not served), other
//!   extensions ignored.
//!
//! # What a client cannot learn
//!
//! An unknown user and a wrong password give the same
//! [`SaslError::AuthenticationFailed`] after comparable work: PLAIN derives
//! a salted password for an unknown user too, from a dummy credential, and
//! SCRAM serves an unknown user a dummy salt (the same one each time for
//! the same name, so repeated probes cannot tell it from a real one) and
//! fails only at the client's proof. Keys and proofs are compared in
//! constant time, and no error or `Debug` output holds a password, proof
//! or key.
//!
//! Two limits remain. The dummies are keyed per process, so an unknown
//! user's salt changes when a broker restarts, and differs between
//! brokers, where a real user's does not. And PLAIN's dummy work is
//! SCRAM-SHA-512 at [`SCRAM_ITERATIONS_MIN`] iterations (Kafka's default),
//! so a user whose credential has many more iterations takes measurably
//! longer than an unknown one.
//!
//! # Differences from Kafka
//!
//! - Kafka fails an unknown SCRAM user at the client's first message;
//!   here it fails at the last (see above). The client sees the same code.
//! - Kafka's SCRAM accepts only the gs2 flag `n`; `y` (RFC 5802: the client
//!   could bind the channel but thinks this server cannot, which is so) is
//!   accepted too.
//! - Kafka's SCRAM refuses user names that are not ASCII; here a name is
//!   any UTF-8 without NUL, as RFC 5802 has it (PLAIN takes any UTF-8 in
//!   Kafka as here).
//! - Kafka checks neither the channel-binding echo nor `m=` (RFC 5802's
//!   mandatory extension); here a wrong echo is refused, and so is `m=`.
//! - Kafka rebuilds the messages it signs from their parsed fields; here
//!   the bytes the client sent are signed, as RFC 5802 says, so a client
//!   that sends extensions in its final message is not refused.

use std::fmt;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq as _};

use crate::principal::KafkaPrincipal;

/// The longest client message any mechanism takes. A SCRAM message is a
/// few hundred bytes and a PLAIN one is three short strings, so this only
/// stops a client from making the server decode and hash megabytes.
pub const SASL_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// The longest user name (after SCRAM's `=2C`/`=3D` decoding), and the
/// longest authorization id.
pub const SASL_USER_NAME_BYTES_MAX: usize = 256;

/// The longest client nonce SCRAM takes. It is echoed in the server's
/// first message and signed twice, so it is bounded on its own.
pub const SCRAM_NONCE_BYTES_MAX: usize = 1024;

/// The fewest PBKDF2 iterations of a SCRAM credential: Kafka refuses fewer
/// for both SCRAM mechanisms.
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;

/// The most PBKDF2 iterations of a SCRAM credential, as Kafka's
/// AlterUserScramCredentials allows. A bound also because PLAIN runs them
/// on every attempt.
pub const SCRAM_ITERATIONS_MAX: u32 = 16384;

/// The longest salt of a SCRAM credential. Kafka's tools make salts of at
/// most 26 bytes; the salt is sent in every server-first message.
pub const SCRAM_SALT_BYTES_MAX: usize = 1024;

/// Random bytes in the server's SCRAM nonce (RFC 5802 asks for a nonce no
/// client can predict; 24 bytes are 192 bits, 32 base64 characters).
const SERVER_NONCE_BYTES: usize = 24;

/// The bits of the number whose base-36 digits are a salt made by Kafka's
/// AdminClient (and so by `kafka-configs.sh`).
const KAFKA_SALT_BITS: u32 = 130;

/// A SASL mechanism, by the name a client asks for in `SaslHandshake`.
///
/// `OAUTHBEARER` is served by a state machine of its own
/// ([`OAuthBearerServer`](crate::oauth::OAuthBearerServer)), which checks
/// tokens against signing keys instead of looking up credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616): user name and password in the clear.
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (RFC 7628, KIP-255): a JWT checked against a JWKS.
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism this crate serves.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
        Mechanism::OAuthBearer,
    ];

    /// The mechanism Kafka calls `name`. Case matters, as it does to
    /// Kafka's `SaslHandshake`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
    }

    /// Kafka's name: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or
    /// `OAUTHBEARER`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::ScramSha256 => ScramMechanism::Sha256.name(),
            Mechanism::ScramSha512 => ScramMechanism::Sha512.name(),
        }
    }

    /// The SCRAM mechanism this is, if it is one.
    pub fn scram(self) -> Option<ScramMechanism> {
        match self {
            Mechanism::Plain | Mechanism::OAuthBearer => None,
            Mechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            Mechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SCRAM mechanism: the hash a credential is made with. Kafka keeps one
/// credential per user and SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// The mechanism of a type id in Describe/AlterUserScramCredentials
    /// (Kafka's `ScramMechanism`: 1 and 2; 0 is its `UNKNOWN`).
    pub fn from_type_id(type_id: i8) -> Option<Self> {
        match type_id {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The type id Describe/AlterUserScramCredentials carry.
    pub fn type_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// Kafka's name: `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The SASL mechanism that authenticates with this credential.
    pub fn mechanism(self) -> Mechanism {
        match self {
            ScramMechanism::Sha256 => Mechanism::ScramSha256,
            ScramMechanism::Sha512 => Mechanism::ScramSha512,
        }
    }

    /// The hash's output: the length of a salted password, a key, a proof
    /// and a signature.
    pub fn output_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    /// `H(data)`.
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, parts joined)`.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => hmac_of::<Hmac<Sha256>>(key, parts),
            ScramMechanism::Sha512 => hmac_of::<Hmac<Sha512>>(key, parts),
        }
    }

    /// RFC 5802's `Hi(password, salt, iterations)`: PBKDF2 with this HMAC
    /// and one block of output. What a client sends in
    /// AlterUserScramCredentials (`weir user create` computes it).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_bytes()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }

    /// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`.
    fn stored_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hash(&self.hmac(salted_password, &[b"Client Key"]))
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// HMAC of the concatenated parts with a key of any length.
// HMAC takes a key of any length (RFC 2104 hashes a longer one first), so
// `new_from_slice` cannot fail; the `expect` states that, and no input
// reaches it.
#[allow(clippy::expect_used)]
fn hmac_of<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Where the mechanisms find users' credentials. The broker implements it
/// over its metadata; tests over a map.
pub trait CredentialLookup {
    /// The credential `user` has for `mechanism`, if any.
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// A user's SCRAM credential (RFC 5802): what the server keeps instead of
/// the password. Knowing it does not let one authenticate as the user.
///
/// `Debug` prints only the iterations and the salt's length.
#[derive(Clone)]
pub struct ScramCredential {
    /// The salt the password was salted with.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations, within [`SCRAM_ITERATIONS_MIN`] and
    /// [`SCRAM_ITERATIONS_MAX`].
    pub iterations: u32,
    /// `H(ClientKey)`, where `ClientKey = HMAC(SaltedPassword, "Client Key")`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// The credential of `password` (its bytes as given: Kafka applies no
    /// SASLprep to passwords, it takes their UTF-8), salted with `salt`
    /// over `iterations`.
    pub fn new(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        check_salt_and_iterations(&salt, iterations)?;
        let salted_password = mechanism.salted_password(password, &salt, iterations);
        Self::from_salted_password(mechanism, &salted_password, salt, iterations)
    }

    /// The credential of a password already salted (`Hi(password, salt,
    /// iterations)`), as Kafka's AlterUserScramCredentials carries it.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        check_salt_and_iterations(&salt, iterations)?;
        // Hi() gives exactly one hash output; any other length was not made
        // with this mechanism.
        if salted_password.len() != mechanism.output_bytes() {
            return Err(CredentialError::SaltedPasswordLength {
                mechanism,
                size_bytes: salted_password.len(),
                expected_bytes: mechanism.output_bytes(),
            });
        }
        Ok(ScramCredential {
            stored_key: mechanism.stored_key(salted_password),
            server_key: mechanism.hmac(salted_password, &[b"Server Key"]),
            salt,
            iterations,
        })
    }

    /// Whether this credential can serve `mechanism`. Storage may hold one
    /// that is not (the fields are public); it is then treated as no
    /// credential, so a bad record neither panics nor runs unbounded work.
    fn serves(&self, mechanism: ScramMechanism) -> bool {
        check_salt_and_iterations(&self.salt, self.iterations).is_ok()
            && self.stored_key.len() == mechanism.output_bytes()
            && self.server_key.len() == mechanism.output_bytes()
    }

    /// The credential served for a user who has none: deterministic per
    /// name and mechanism, so a client probing a name twice sees the same
    /// salt, as it would for a real user, and secret, so it cannot tell.
    /// The salt has the shape of one Kafka's AdminClient makes, which is
    /// what most users' salts are, and the iterations are
    /// `kafka-configs.sh`'s default.
    fn dummy(mechanism: ScramMechanism, user: &str) -> Self {
        let key = DUMMY_KEY.as_slice();
        // NUL cannot be in a user name (PLAIN splits on it, SCRAM refuses
        // it), so the labelled inputs cannot run into each other.
        let derive = |hash: ScramMechanism, what: &[u8]| {
            hash.hmac(
                key,
                &[
                    what,
                    b"\0",
                    mechanism.name().as_bytes(),
                    b"\0",
                    user.as_bytes(),
                ],
            )
        };
        let salt = kafka_shaped_salt(&derive(ScramMechanism::Sha256, b"salt"));
        ScramCredential {
            salt,
            iterations: SCRAM_ITERATIONS_MIN,
            stored_key: derive(mechanism, b"stored key"),
            server_key: derive(mechanism, b"server key"),
        }
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .field("salt_bytes", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// The key of the dummy credentials, new each time the process starts.
static DUMMY_KEY: LazyLock<[u8; 32]> = LazyLock::new(|| {
    let mut key = [0; 32];
    rand::rng().fill_bytes(&mut key);
    key
});

/// A salt as Kafka's AdminClient makes one, from 17 or more random bytes:
/// a 130-bit number in base 36 (Java's `BigInteger.toString(36)`, without
/// leading zeros), as ASCII.
fn kafka_shaped_salt(random: &[u8]) -> Vec<u8> {
    // 136 bits, the top 6 cleared: 130.
    let mut number: Vec<u8> = random.iter().take(17).copied().collect();
    if let Some(top) = number.first_mut() {
        *top &= 0xff >> (136 - KAFKA_SALT_BITS);
    }
    let mut digits = Vec::new();
    while number.iter().any(|&byte| byte != 0) {
        // Long division by 36, base 256, most significant byte first.
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            // remainder < 36, so value < 36 * 256 and value / 36 < 256.
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.extend(char::from_digit(remainder, 36).map(|digit| digit as u8));
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    digits
}

fn check_salt_and_iterations(salt: &[u8], iterations: u32) -> Result<(), CredentialError> {
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
        return Err(CredentialError::Iterations { iterations });
    }
    if salt.is_empty() || salt.len() > SCRAM_SALT_BYTES_MAX {
        return Err(CredentialError::SaltLength {
            size_bytes: salt.len(),
        });
    }
    Ok(())
}

/// Why a SCRAM credential was not made. Kafka answers these with
/// `UNACCEPTABLE_CREDENTIAL` in AlterUserScramCredentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// Fewer iterations than Kafka allows, or more.
    #[error(
        "{iterations} iterations; a SCRAM credential has {SCRAM_ITERATIONS_MIN} to {SCRAM_ITERATIONS_MAX}"
    )]
    Iterations {
        /// The iterations asked for.
        iterations: u32,
    },
    /// An empty salt, or one longer than [`SCRAM_SALT_BYTES_MAX`].
    #[error("a salt of {size_bytes} bytes; a SCRAM salt has 1 to {SCRAM_SALT_BYTES_MAX}")]
    SaltLength {
        /// The salt's length.
        size_bytes: usize,
    },
    /// A salted password that is not one output of the mechanism's hash.
    #[error("a salted password of {size_bytes} bytes; {mechanism}'s has {expected_bytes}")]
    SaltedPasswordLength {
        /// The credential's mechanism.
        mechanism: ScramMechanism,
        /// The salted password's length.
        size_bytes: usize,
        /// The mechanism's hash output.
        expected_bytes: usize,
    },
}

/// Why an authentication attempt failed. Kafka answers each with
/// `SASL_AUTHENTICATION_FAILED`; the variants say what to log and which
/// message the client may see.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// A wrong password or an unknown user: one error for both, so that a
    /// client cannot learn which users exist. The message is Kafka's.
    #[error(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )]
    AuthenticationFailed {
        /// The mechanism the client used.
        mechanism: Mechanism,
    },
    /// The client asked to act as someone other than the user it
    /// authenticates as. The message is Kafka's, which it sends the client.
    #[error(
        "Authentication failed: Client requested an authorization id that is different from username"
    )]
    AuthorizationIdMismatch,
    /// A message that does not parse or does not follow the exchange (a
    /// wrong nonce or channel-binding echo). It says what is wrong, never
    /// the client's bytes.
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    /// A message, user name or nonce over its limit.
    #[error("SASL {field} of {size_bytes} bytes is over the limit of {max_bytes}")]
    TooLong {
        /// What was too long.
        field: &'static str,
        /// Its length.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A SCRAM extension that must be understood and is not served:
    /// `tokenauth=true` (delegation tokens) or `m` (RFC 5802's mandatory
    /// extension).
    #[error("the SCRAM extension `{0}` is not supported")]
    UnsupportedExtension(&'static str),
    /// A message after the exchange ended, in success or failure.
    #[error("the SASL exchange has ended; no further message is expected")]
    Finished,
}

/// What the server answers a client message with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes; the client answers with another message.
    Challenge(Vec<u8>),
    /// The client is authenticated.
    Done {
        /// `User:<authorization id or user name>`.
        principal: KafkaPrincipal,
        /// Send these bytes as the last response; empty for PLAIN.
        final_message: Vec<u8>,
    },
}

/// One authentication attempt: fed each client message in turn until it
/// returns [`Step::Done`] or an error. After either, every further message
/// is [`SaslError::Finished`]: Kafka closes a connection whose
/// authentication failed, and a client never authenticates twice on one
/// attempt.
#[derive(Debug)]
pub struct SaslServer {
    mechanism: Mechanism,
    state: State,
    /// A server nonce fixed in advance, for tests that replay RFC vectors.
    fixed_server_nonce: Option<String>,
}

#[derive(Debug)]
enum State {
    /// No message yet.
    Start,
    /// SCRAM's server-first is sent; the client's final message is next.
    ScramFinal(Box<ScramExchange>),
    /// Authenticated.
    Done,
    /// Refused.
    Failed,
}

/// What SCRAM's first round settled, for checking the client's proof.
#[derive(Debug)]
struct ScramExchange {
    mechanism: ScramMechanism,
    user: String,
    /// The gs2 header as sent (`n,,`), which `c=` must echo.
    gs2_header: String,
    /// client-first-message-bare, as sent: part of the signed AuthMessage.
    client_first_bare: String,
    /// server-first-message, as sent.
    server_first: String,
    /// The whole nonce, the client's and the server's.
    nonce: String,
    /// How much of `nonce` is the client's.
    client_nonce_bytes: usize,
    /// The user's credential, or a dummy one for an unknown user.
    credential: ScramCredential,
    /// Whether `credential` is the user's; a proof against a dummy never
    /// succeeds.
    user_known: bool,
}

impl SaslServer {
    /// A new attempt with `mechanism`.
    pub fn new(mechanism: Mechanism) -> Self {
        SaslServer {
            mechanism,
            state: State::Start,
            fixed_server_nonce: None,
        }
    }

    /// A new attempt whose SCRAM server nonce is `server_nonce`, not
    /// random: for replaying published test vectors only.
    #[cfg(test)]
    fn with_server_nonce(mechanism: Mechanism, server_nonce: &str) -> Self {
        SaslServer {
            fixed_server_nonce: Some(server_nonce.to_owned()),
            ..Self::new(mechanism)
        }
    }

    /// The mechanism of this attempt.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the client is authenticated.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes the client's next message and says what to answer.
    pub fn step(
        &mut self,
        client_message: &[u8],
        credentials: &dyn CredentialLookup,
    ) -> Result<Step, SaslError> {
        // An attempt that ended stays as it ended.
        if matches!(self.state, State::Done | State::Failed) {
            return Err(SaslError::Finished);
        }
        // Failed until shown otherwise: an error anywhere below ends the
        // attempt.
        let exchange = match std::mem::replace(&mut self.state, State::Failed) {
            State::ScramFinal(exchange) => Some(exchange),
            State::Start | State::Done | State::Failed => None,
        };
        check_length("message", client_message.len(), SASL_MESSAGE_BYTES_MAX)?;
        if self.mechanism == Mechanism::OAuthBearer {
            // Tokens are checked by `oauth::OAuthBearerServer`, never as a
            // password.
            return Err(malformed(
                "OAUTHBEARER is served by OAuthBearerServer, not SaslServer",
            ));
        }
        let text = std::str::from_utf8(client_message)
            .map_err(|_| malformed("the message is not UTF-8"))?;
        match (exchange, self.mechanism.scram()) {
            (None, None) => {
                let principal = plain(text, credentials)?;
                self.state = State::Done;
                Ok(Step::Done {
                    principal,
                    final_message: Vec::new(),
                })
            }
            (None, Some(mechanism)) => {
                let server_nonce = self
                    .fixed_server_nonce
                    .take()
                    .unwrap_or_else(random_server_nonce);
                let exchange = scram_first(mechanism, text, credentials, &server_nonce)?;
                let challenge = exchange.server_first.clone().into_bytes();
                self.state = State::ScramFinal(Box::new(exchange));
                Ok(Step::Challenge(challenge))
            }
            (Some(exchange), _) => {
                let step = scram_final(&exchange, text)?;
                self.state = State::Done;
                Ok(step)
            }
        }
    }
}

fn malformed(reason: &str) -> SaslError {
    SaslError::Malformed(reason.to_owned())
}

fn check_length(field: &'static str, size_bytes: usize, max_bytes: usize) -> Result<(), SaslError> {
    if size_bytes > max_bytes {
        return Err(SaslError::TooLong {
            field,
            size_bytes,
            max_bytes,
        });
    }
    Ok(())
}

/// A user name or authorization id: not empty, within its limit.
pub(crate) fn check_user_name(field: &'static str, name: &str) -> Result<(), SaslError> {
    if name.is_empty() {
        return Err(SaslError::Malformed(format!("the {field} is empty")));
    }
    check_length(field, name.len(), SASL_USER_NAME_BYTES_MAX)
}

/// PLAIN: the whole exchange is the client's one message.
fn plain(text: &str, credentials: &dyn CredentialLookup) -> Result<KafkaPrincipal, SaslError> {
    // At most 4 pieces: enough to see a fourth token, without collecting
    // the thousands a client could send.
    let mut tokens = text.splitn(4, '\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(malformed("a PLAIN message is not 3 NUL-separated tokens"));
    };
    check_user_name("user name", user)?;
    if password.is_empty() {
        return Err(malformed("the password is empty"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::AuthorizationIdMismatch);
    }
    if !plain_password_matches(user, password.as_bytes(), credentials) {
        return Err(SaslError::AuthenticationFailed {
            mechanism: Mechanism::Plain,
        });
    }
    Ok(KafkaPrincipal::user(user))
}

/// Whether `password` is `user`'s, by their SCRAM-SHA-512 credential or
/// else their SCRAM-SHA-256 one. An unknown user costs a comparable
/// salting, against a dummy credential, so the time taken does not tell.
fn plain_password_matches(user: &str, password: &[u8], credentials: &dyn CredentialLookup) -> bool {
    let found = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|mechanism| {
            credentials
                .scram_credential(user, mechanism)
                .filter(|credential| credential.serves(mechanism))
                .map(|credential| (mechanism, credential))
        });
    let (mechanism, credential, user_known) = match found {
        Some((mechanism, credential)) => (mechanism, credential, true),
        None => {
            let mechanism = ScramMechanism::Sha512;
            (mechanism, ScramCredential::dummy(mechanism, user), false)
        }
    };
    let salted_password =
        mechanism.salted_password(password, &credential.salt, credential.iterations);
    let stored_key = mechanism.stored_key(&salted_password);
    let matches = stored_key.ct_eq(&credential.stored_key) & Choice::from(u8::from(user_known));
    bool::from(matches)
}

fn random_server_nonce() -> String {
    let mut bytes = [0; SERVER_NONCE_BYTES];
    // rand's thread-local generator is a CSPRNG (ChaCha12, seeded and
    // reseeded from the operating system).
    rand::rng().fill_bytes(&mut bytes);
    // Base64 is printable and has no comma, as a SCRAM nonce must be.
    BASE64.encode(bytes)
}

/// SCRAM's first round: reads client-first-message, answers
/// server-first-message.
fn scram_first(
    mechanism: ScramMechanism,
    text: &str,
    credentials: &dyn CredentialLookup,
    server_nonce: &str,
) -> Result<ScramExchange, SaslError> {
    let (gs2_header, authzid, bare) = split_gs2_header(text)?;
    let first = parse_client_first_bare(bare)?;
    if authzid
        .as_ref()
        .is_some_and(|authzid| *authzid != first.user)
    {
        return Err(SaslError::AuthorizationIdMismatch);
    }
    let (credential, user_known) = match credentials
        .scram_credential(&first.user, mechanism)
        .filter(|credential| credential.serves(mechanism))
    {
        Some(credential) => (credential, true),
        None => (ScramCredential::dummy(mechanism, &first.user), false),
    };
    let client_nonce_bytes = first.nonce.len();
    let nonce = format!("{}{server_nonce}", first.nonce);
    let server_first = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(&credential.salt),
        credential.iterations
    );
    Ok(ScramExchange {
        mechanism,
        user: first.user,
        gs2_header: gs2_header.to_owned(),
        client_first_bare: bare.to_owned(),
        server_first,
        nonce,
        client_nonce_bytes,
        credential,
        user_known,
    })
}

/// Splits `gs2-header client-first-message-bare`, returning the header as
/// sent, its authorization id if any, and the bare message.
fn split_gs2_header(text: &str) -> Result<(&str, Option<String>, &str), SaslError> {
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("the SCRAM client-first message has no gs2 header"))?;
    match flag {
        // `y`: the client could bind the channel but believes this server
        // cannot, which is so (RFC 5802 section 6).
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err(malformed("SCRAM channel binding (p=) is not served"));
        }
        _ => return Err(malformed("the gs2 channel-binding flag is not n, y or p=")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("the gs2 header does not end with a comma"))?;
    let authzid = match authzid {
        "" => None,
        _ => {
            let name = authzid
                .strip_prefix("a=")
                .ok_or_else(|| malformed("the gs2 authorization id does not start with a="))?;
            let name = decode_sasl_name(name)?;
            check_user_name("authorization id", &name)?;
            Some(name)
        }
    };
    let header_bytes = text.len() - bare.len();
    let header = text.get(..header_bytes).unwrap_or_default();
    Ok((header, authzid, bare))
}

/// client-first-message-bare, read.
struct ClientFirst {
    user: String,
    nonce: String,
}

/// Reads `n=user,r=nonce[,extensions]`.
fn parse_client_first_bare(bare: &str) -> Result<ClientFirst, SaslError> {
    let mut attributes = bare.split(',');
    let user = attributes.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(SaslError::UnsupportedExtension("m"));
    }
    let user = user
        .strip_prefix("n=")
        .ok_or_else(|| malformed("the SCRAM client-first message does not start with n="))?;
    let user = decode_sasl_name(user)?;
    check_user_name("user name", &user)?;
    let nonce = attributes
        .next()
        .and_then(|nonce| nonce.strip_prefix("r="))
        .ok_or_else(|| malformed("the SCRAM client-first message has no r= after n="))?;
    check_nonce(nonce)?;
    for extension in attributes {
        let (name, value) = parse_extension(extension)?;
        // Kafka's one SCRAM extension: the user name is a delegation
        // token's id. Ignoring it would check a token's HMAC as a password.
        if name == "tokenauth" && value.eq_ignore_ascii_case("true") {
            return Err(SaslError::UnsupportedExtension("tokenauth"));
        }
        // Any other extension is ignored, as Kafka ignores it.
    }
    Ok(ClientFirst {
        user,
        nonce: nonce.to_owned(),
    })
}

/// A client nonce: printable ASCII without a comma, within its limit.
fn check_nonce(nonce: &str) -> Result<(), SaslError> {
    if nonce.is_empty() {
        return Err(malformed("the SCRAM client nonce is empty"));
    }
    check_length("nonce", nonce.len(), SCRAM_NONCE_BYTES_MAX)?;
    if !nonce
        .bytes()
        .all(|byte| (0x21..=0x7e).contains(&byte) && byte != b',')
    {
        return Err(malformed("the SCRAM client nonce is not printable ASCII"));
    }
    Ok(())
}

/// An extension `name=value`: a name of ASCII letters, a value not empty.
fn parse_extension(extension: &str) -> Result<(&str, &str), SaslError> {
    let (name, value) = extension
        .split_once('=')
        .ok_or_else(|| malformed("a SCRAM extension is not name=value"))?;
    if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return Err(malformed("a SCRAM extension's name is not ASCII letters"));
    }
    if value.is_empty() {
        return Err(malformed("a SCRAM extension's value is empty"));
    }
    Ok((name, value))
}

/// RFC 5802's saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is
/// refused, and so is NUL, as Kafka's grammar refuses them.
pub(crate) fn decode_sasl_name(encoded: &str) -> Result<String, SaslError> {
    let mut name = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find(['=', '\0']) {
        name.push_str(rest.get(..at).unwrap_or_default());
        let escape = rest.get(at..at + 3);
        rest = rest.get(at + 3..).unwrap_or_default();
        match escape {
            Some("=2C") => name.push(','),
            Some("=3D") => name.push('='),
            _ => return Err(malformed("a SCRAM user name has a bad = escape or a NUL")),
        }
    }
    name.push_str(rest);
    Ok(name)
}

/// Whether the client-final `nonce` echoes the server-first one. librdkafka
/// before 2.6.1 (Debian's kcat among its users) sends its own nonce twice,
/// once before the whole one; Kafka accepts that since 3.8.1, and so is it
/// here, only in exactly that form. Compared in constant time.
fn echoes_nonce(exchange: &ScramExchange, nonce: &str) -> bool {
    let whole = exchange.nonce.as_bytes();
    let sent = nonce.as_bytes();
    if sent.len() == whole.len() {
        return bool::from(sent.ct_eq(whole));
    }
    let client = whole.get(..exchange.client_nonce_bytes).unwrap_or_default();
    match sent.split_at_checked(client.len()) {
        Some((again, rest)) if rest.len() == whole.len() => {
            bool::from(again.ct_eq(client) & rest.ct_eq(whole))
        }
        _ => false,
    }
}

/// SCRAM's second round: checks client-final-message, and answers
/// server-final-message.
fn scram_final(exchange: &ScramExchange, text: &str) -> Result<Step, SaslError> {
    let mechanism = exchange.mechanism;
    // The proof is last (RFC 5802: client-final-message-without-proof ","
    // proof), and base64 has no comma, so the last ",p=" starts it.
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or_else(|| malformed("the SCRAM client-final message has no p="))?;
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|binding| binding.strip_prefix("c="))
        .ok_or_else(|| malformed("the SCRAM client-final message does not start with c="))?;
    let nonce = attributes
        .next()
        .and_then(|nonce| nonce.strip_prefix("r="))
        .ok_or_else(|| malformed("the SCRAM client-final message has no r= after c="))?;
    for extension in attributes {
        // Signed as sent, otherwise ignored.
        parse_extension(extension)?;
    }
    let channel_binding = BASE64
        .decode(channel_binding)
        .map_err(|_| malformed("the SCRAM channel binding is not base64"))?;
    if !bool::from(channel_binding.ct_eq(exchange.gs2_header.as_bytes())) {
        return Err(malformed(
            "the SCRAM channel binding does not echo the gs2 header",
        ));
    }
    if !echoes_nonce(exchange, nonce) {
        return Err(malformed(
            "the SCRAM client-final nonce is not the server-first one",
        ));
    }
    let proof = BASE64
        .decode(proof)
        .map_err(|_| malformed("the SCRAM proof is not base64"))?;
    if proof.len() != mechanism.output_bytes() {
        return Err(SaslError::Malformed(format!(
            "the proof is {} bytes; a {mechanism} proof is {}",
            proof.len(),
            mechanism.output_bytes()
        )));
    }
    let auth_message = [
        exchange.client_first_bare.as_bytes(),
        b",",
        exchange.server_first.as_bytes(),
        b",",
        without_proof.as_bytes(),
    ];
    let credential = &exchange.credential;
    // ClientKey = ClientProof XOR ClientSignature; the client knows the
    // password if H(ClientKey) is the StoredKey.
    let client_signature = mechanism.hmac(&credential.stored_key, &auth_message);
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(proof, signature)| proof ^ signature)
        .collect();
    let matches = mechanism.hash(&client_key).ct_eq(&credential.stored_key)
        & Choice::from(u8::from(exchange.user_known));
    if !bool::from(matches) {
        return Err(SaslError::AuthenticationFailed {
            mechanism: mechanism.mechanism(),
        });
    }
    let server_signature = mechanism.hmac(&credential.server_key, &auth_message);
    Ok(Step::Done {
        principal: KafkaPrincipal::user(exchange.user.clone()),
        final_message: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Users kept in a map, as the broker keeps them in its metadata.
    #[derive(Default)]
    struct Users(HashMap<(String, ScramMechanism), ScramCredential>);

    impl Users {
        fn with(mut self, user: &str, mechanism: ScramMechanism, password: &str) -> Self {
            let salt = format!("salt of {user}").into_bytes();
            let credential =
                ScramCredential::new(mechanism, password.as_bytes(), salt, SCRAM_ITERATIONS_MIN)
                    .expect("a valid credential");
            self.0.insert((user.to_owned(), mechanism), credential);
            self
        }
    }

    impl CredentialLookup for Users {
        fn scram_credential(
            &self,
            user: &str,
            mechanism: ScramMechanism,
        ) -> Option<ScramCredential> {
            self.0.get(&(user.to_owned(), mechanism)).cloned()
        }
    }

    fn done(step: Result<Step, SaslError>) -> (KafkaPrincipal, Vec<u8>) {
        match step {
            Ok(Step::Done {
                principal,
                final_message,
            }) => (principal, final_message),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn challenge(step: Result<Step, SaslError>) -> String {
        match step {
            Ok(Step::Challenge(bytes)) => String::from_utf8(bytes).expect("UTF-8"),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    // -- names and ids --

    #[test]
    fn mechanisms_have_kafkas_names() {
        for mechanism in Mechanism::ALL {
            assert_eq!(Mechanism::parse(mechanism.name()), Some(mechanism));
        }
        assert_eq!(
            Mechanism::parse("SCRAM-SHA-256"),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(Mechanism::parse("plain"), None);
        assert_eq!(
            Mechanism::parse("OAUTHBEARER"),
            Some(Mechanism::OAuthBearer)
        );
        assert_eq!(Mechanism::parse("GSSAPI"), None);
        assert_eq!(Mechanism::ScramSha512.to_string(), "SCRAM-SHA-512");
    }

    #[test]
    fn scram_mechanisms_have_kafkas_type_ids() {
        assert_eq!(
            ScramMechanism::from_type_id(1),
            Some(ScramMechanism::Sha256)
        );
        assert_eq!(
            ScramMechanism::from_type_id(2),
            Some(ScramMechanism::Sha512)
        );
        assert_eq!(ScramMechanism::from_type_id(0), None);
        assert_eq!(ScramMechanism::from_type_id(3), None);
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            assert_eq!(
                ScramMechanism::from_type_id(mechanism.type_id()),
                Some(mechanism)
            );
            assert_eq!(mechanism.mechanism().scram(), Some(mechanism));
            assert_eq!(mechanism.mechanism().name(), mechanism.name());
        }
    }

    // -- credentials --

    #[test]
    fn credential_from_password_equals_credential_from_salted_password() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let salt = b"NaCl".to_vec();
            let from_password =
                ScramCredential::new(mechanism, b"pencil", salt.clone(), 8192).expect("valid");
            let salted = mechanism.salted_password(b"pencil", &salt, 8192);
            let from_salted = ScramCredential::from_salted_password(mechanism, &salted, salt, 8192)
                .expect("valid");
            assert_eq!(from_password.salt, from_salted.salt);
            assert_eq!(from_password.iterations, from_salted.iterations);
            assert_eq!(from_password.stored_key, from_salted.stored_key);
            assert_eq!(from_password.server_key, from_salted.server_key);
            assert_eq!(from_password.stored_key.len(), mechanism.output_bytes());
        }
    }

    #[test]
    fn credential_iterations_are_bounded_as_kafka_bounds_them() {
        let make = |iterations| {
            ScramCredential::new(ScramMechanism::Sha256, b"p", b"s".to_vec(), iterations)
        };
        assert!(make(SCRAM_ITERATIONS_MIN).is_ok());
        assert!(make(SCRAM_ITERATIONS_MAX).is_ok());
        assert_eq!(
            make(SCRAM_ITERATIONS_MIN - 1).err(),
            Some(CredentialError::Iterations { iterations: 4095 })
        );
        assert_eq!(
            make(SCRAM_ITERATIONS_MAX + 1).err(),
            Some(CredentialError::Iterations { iterations: 16385 })
        );
        let salted = [0; 32];
        assert!(
            ScramCredential::from_salted_password(
                ScramMechanism::Sha256,
                &salted,
                b"s".to_vec(),
                1
            )
            .is_err()
        );
    }

    #[test]
    fn credential_salt_and_salted_password_lengths_are_checked() {
        let empty_salt = ScramCredential::new(ScramMechanism::Sha256, b"p", Vec::new(), 4096);
        assert_eq!(
            empty_salt.err(),
            Some(CredentialError::SaltLength { size_bytes: 0 })
        );
        let long_salt = vec![1; SCRAM_SALT_BYTES_MAX + 1];
        assert!(ScramCredential::new(ScramMechanism::Sha256, b"p", long_salt, 4096).is_err());
        let short = ScramCredential::from_salted_password(
            ScramMechanism::Sha512,
            &[0; 32],
            b"s".to_vec(),
            4096,
        );
        assert_eq!(
            short.err(),
            Some(CredentialError::SaltedPasswordLength {
                mechanism: ScramMechanism::Sha512,
                size_bytes: 32,
                expected_bytes: 64,
            })
        );
    }

    #[test]
    fn credential_debug_hides_keys() {
        let credential = ScramCredential::new(
            ScramMechanism::Sha256,
            b"pencil",
            b"0123456789".to_vec(),
            4096,
        )
        .expect("valid");
        let debug = format!("{credential:?}");
        assert_eq!(
            debug,
            "ScramCredential { iterations: 4096, salt_bytes: 10, .. }"
        );
        let server = {
            let mut server = SaslServer::new(Mechanism::ScramSha256);
            let users = Users(HashMap::from([(
                ("user".to_owned(), ScramMechanism::Sha256),
                credential,
            )]));
            challenge(server.step(b"n,,n=user,r=abc", &users));
            format!("{server:?}")
        };
        assert!(server.contains("salt_bytes: 10"), "{server}");
        assert!(!server.contains("stored_key"), "{server}");
        assert!(!server.contains("server_key"), "{server}");
    }

    // -- SCRAM: RFC 7677's test vector --

    #[test]
    fn scram_sha256_follows_rfc_7677_byte_for_byte() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let credential =
            ScramCredential::new(ScramMechanism::Sha256, b"pencil", salt, 4096).expect("valid");
        let users = Users(HashMap::from([(
            ("user".to_owned(), ScramMechanism::Sha256),
            credential,
        )]));
        let mut server =
            SaslServer::with_server_nonce(Mechanism::ScramSha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");

        let server_first = challenge(server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &users));
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (principal, server_final) = done(server.step(client_final.as_bytes(), &users));
        assert_eq!(principal, KafkaPrincipal::user("user"));
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(server.is_done());
        // A message past the end is refused, and the client stays
        // authenticated.
        assert_eq!(
            server.step(client_final.as_bytes(), &users),
            Err(SaslError::Finished)
        );
        assert!(server.is_done());
    }

    // -- SCRAM: a full client --

    /// The client side of SCRAM, written from RFC 5802 apart from the
    /// server's message handling; it shares only the hash primitives, which
    /// RFC 7677's vector checks.
    struct ScramClient {
        mechanism: ScramMechanism,
        gs2_header: String,
        bare: String,
        password: Vec<u8>,
        /// Sent before the nonce in client-final, as librdkafka before
        /// 2.6.1 sends its own nonce again.
        nonce_prefix: String,
    }

    impl ScramClient {
        fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
            ScramClient {
                mechanism,
                gs2_header: "n,,".to_owned(),
                bare: format!("n={user},r={CLIENT_NONCE}"),
                password: password.as_bytes().to_vec(),
                nonce_prefix: String::new(),
            }
        }

        fn first(&self) -> String {
            format!("{}{}", self.gs2_header, self.bare)
        }

        /// The client-final message for `server_first`, and the
        /// server-final message the client expects.
        fn last(&self, server_first: &str) -> (String, String) {
            let attribute = |name: &str| {
                server_first
                    .split(',')
                    .find_map(|attribute| attribute.strip_prefix(name))
                    .expect("the attribute")
                    .to_owned()
            };
            let nonce = format!("{}{}", self.nonce_prefix, attribute("r="));
            let salt = BASE64.decode(attribute("s=")).expect("base64 salt");
            let iterations: u32 = attribute("i=").parse().expect("iterations");
            let hmac = |key: &[u8], data: &[u8]| self.mechanism.hmac(key, &[data]);

            let salted = self
                .mechanism
                .salted_password(&self.password, &salt, iterations);
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = self.mechanism.hash(&client_key);
            let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
            let auth_message = format!("{},{server_first},{without_proof}", self.bare);
            let client_signature = hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&client_signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
            (
                format!("{without_proof},p={}", BASE64.encode(proof)),
                format!("v={}", BASE64.encode(server_signature)),
            )
        }
    }

    fn alice() -> Users {
        Users::default().with("alice", ScramMechanism::Sha512, "alice-secret")
    }

    fn scram_exchange(
        client: &ScramClient,
        users: &Users,
    ) -> (SaslServer, Result<Step, SaslError>, String) {
        let mechanism = client.mechanism.mechanism();
        let mut server = SaslServer::new(mechanism);
        let server_first = challenge(server.step(client.first().as_bytes(), users));
        let (last, expected_final) = client.last(&server_first);
        let result = server.step(last.as_bytes(), users);
        (server, result, expected_final)
    }

    #[test]
    fn scram_sha512_authenticates_a_client_with_the_right_password() {
        let client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        let (_, result, expected_final) = scram_exchange(&client, &alice());
        let (principal, server_final) = done(result);
        assert_eq!(principal.to_string(), "User:alice");
        assert_eq!(
            String::from_utf8(server_final).expect("UTF-8"),
            expected_final
        );
    }

    #[test]
    fn scram_sha512_refuses_a_wrong_password() {
        let client = ScramClient::new(ScramMechanism::Sha512, "alice", "guess");
        let (_, result, _) = scram_exchange(&client, &alice());
        assert_eq!(
            result,
            Err(SaslError::AuthenticationFailed {
                mechanism: Mechanism::ScramSha512
            })
        );
    }

    #[test]
    fn scram_unknown_user_gets_the_wrong_password_error_at_the_same_step() {
        let client = ScramClient::new(ScramMechanism::Sha512, "mallory", "alice-secret");
        let (_, unknown, _) = scram_exchange(&client, &alice());
        let client = ScramClient::new(ScramMechanism::Sha512, "alice", "guess");
        let (_, wrong, _) = scram_exchange(&client, &alice());
        assert_eq!(unknown, wrong);
        assert_eq!(unknown.map_err(|err| err.to_string()), Err(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512".to_owned()
        ));
    }

    #[test]
    fn scram_unknown_user_sees_the_same_salt_each_time() {
        let first = |user: &str| {
            let mut server = SaslServer::new(Mechanism::ScramSha512);
            let message = format!("n,,n={user},r=abc");
            let server_first = challenge(server.step(message.as_bytes(), &alice()));
            server_first.split_once(",s=").expect("a salt").1.to_owned()
        };
        assert_eq!(first("mallory"), first("mallory"));
        assert_ne!(first("mallory"), first("trudy"));
        assert!(first("mallory").ends_with(&format!(",i={SCRAM_ITERATIONS_MIN}")));
    }

    #[test]
    fn dummy_salts_look_like_kafkas() {
        for user in ["mallory", "trudy", "eve", ""] {
            let salt = ScramCredential::dummy(ScramMechanism::Sha256, user).salt;
            // Kafka's: base 36 of a 130-bit number, so at most 26 digits.
            assert!((1..=26).contains(&salt.len()), "{salt:?}");
            assert!(
                salt.iter()
                    .all(|byte| byte.is_ascii_digit() || byte.is_ascii_lowercase())
            );
        }
        assert_eq!(kafka_shaped_salt(&[0; 17]), b"0");
        assert_eq!(
            kafka_shaped_salt(&[[0; 16].as_slice(), &[35]].concat()),
            b"z"
        );
        assert_eq!(
            kafka_shaped_salt(&[[0; 16].as_slice(), &[36]].concat()),
            b"10"
        );
        // 2^130 - 1 in base 36, as Java's BigInteger prints it.
        assert_eq!(
            kafka_shaped_salt(&[0xff; 32]),
            b"1omfro7zwmumr3umxudzyj6scf"
        );
    }

    #[test]
    fn scram_user_without_a_credential_for_the_mechanism_is_refused() {
        // alice has only a SCRAM-SHA-512 credential.
        let client = ScramClient::new(ScramMechanism::Sha256, "alice", "alice-secret");
        let (_, result, _) = scram_exchange(&client, &alice());
        assert!(
            matches!(result, Err(SaslError::AuthenticationFailed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn scram_refuses_a_tampered_nonce() {
        let client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        let users = alice();
        let mut server = SaslServer::new(Mechanism::ScramSha512);
        let server_first = challenge(server.step(client.first().as_bytes(), &users));
        // The client signs the nonce it claims, so only the nonce check
        // catches this.
        let tampered = server_first.replacen("r=fyko", "r=gyko", 1);
        let (last, _) = client.last(&tampered);
        let result = server.step(last.as_bytes(), &users);
        assert!(matches!(result, Err(SaslError::Malformed(_))), "{result:?}");
    }

    /// The client nonce of the test client (RFC 7677's).
    const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

    #[test]
    fn scram_accepts_old_librdkafkas_doubled_client_nonce_and_nothing_else() {
        let users = alice();
        let mut client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        client.nonce_prefix = CLIENT_NONCE.to_owned();
        let (_, result, _) = scram_exchange(&client, &users);
        assert_eq!(done(result).0.to_string(), "User:alice");
        for prefix in ["gyko+d2lbbFgONRv9qkxdawL", "x", "fyko+d2lbbFgONRv9qkxdaw"] {
            client.nonce_prefix = prefix.to_owned();
            let (_, result, _) = scram_exchange(&client, &users);
            assert!(
                matches!(result, Err(SaslError::Malformed(_))),
                "{prefix}: {result:?}"
            );
        }
    }

    #[test]
    fn scram_refuses_a_tampered_channel_binding() {
        let mut client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        let users = alice();
        let mut server = SaslServer::new(Mechanism::ScramSha512);
        let server_first = challenge(server.step(client.first().as_bytes(), &users));
        // Signed by the client, but not what it sent first.
        client.gs2_header = "y,,".to_owned();
        let (last, _) = client.last(&server_first);
        let result = server.step(last.as_bytes(), &users);
        assert!(matches!(result, Err(SaslError::Malformed(_))), "{result:?}");
    }

    #[test]
    fn scram_refuses_a_tampered_proof() {
        let client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        let users = alice();
        let mut server = SaslServer::new(Mechanism::ScramSha512);
        let server_first = challenge(server.step(client.first().as_bytes(), &users));
        let (last, _) = client.last(&server_first);
        let (without_proof, proof) = last.rsplit_once(",p=").expect("a proof");
        let mut proof = BASE64.decode(proof).expect("base64");
        proof[0] ^= 1;
        let tampered = format!("{without_proof},p={}", BASE64.encode(proof));
        let result = server.step(tampered.as_bytes(), &users);
        assert!(
            matches!(result, Err(SaslError::AuthenticationFailed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn scram_step_after_done_or_failure_is_finished() {
        let client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        let users = alice();
        let (mut server, result, _) = scram_exchange(&client, &users);
        done(result);
        assert_eq!(
            server.step(b"c=biws,r=x,p=", &users),
            Err(SaslError::Finished)
        );
        assert_eq!(
            server.step(client.first().as_bytes(), &users),
            Err(SaslError::Finished)
        );

        let mut failed = SaslServer::new(Mechanism::ScramSha512);
        assert!(failed.step(b"nonsense", &users).is_err());
        assert_eq!(
            failed.step(client.first().as_bytes(), &users),
            Err(SaslError::Finished)
        );
    }

    #[test]
    fn scram_accepts_y_flag_and_matching_authzid() {
        let users = alice();
        let mut client = ScramClient::new(ScramMechanism::Sha512, "alice", "alice-secret");
        client.gs2_header = "y,a=alice,".to_owned();
        let (_, result, expected) = scram_exchange(&client, &users);
        assert_eq!(done(result).1, expected.into_bytes());
    }

    #[test]
    fn scram_decodes_escaped_user_names() {
        let users = Users::default().with("a,b=c", ScramMechanism::Sha256, "pw");
        let client = ScramClient::new(ScramMechanism::Sha256, "a=2Cb=3Dc", "pw");
        let (_, result, _) = scram_exchange(&client, &users);
        assert_eq!(done(result).0, KafkaPrincipal::user("a,b=c"));
    }

    #[test]
    fn scram_refuses_bad_client_first_messages() {
        let users = alice();
        let first = |message: &str| {
            SaslServer::new(Mechanism::ScramSha256).step(message.as_bytes(), &users)
        };
        let malformed = |message: &str| {
            let result = first(message);
            assert!(
                matches!(result, Err(SaslError::Malformed(_))),
                "{message:?}: {result:?}"
            );
        };
        malformed("");
        malformed("p=tls-unique,,n=alice,r=abc");
        malformed("x,,n=alice,r=abc");
        malformed("n,n=alice,r=abc");
        malformed("n,b=alice,n=alice,r=abc");
        malformed("n,,n=,r=abc");
        malformed("n,,n=alice");
        malformed("n,,r=abc,n=alice");
        malformed("n,,n=al=ice,r=abc");
        malformed("n,,n=al=2,r=abc");
        malformed("n,,n=al\0ice,r=abc");
        malformed("n,,n=alice,r=");
        malformed("n,,n=alice,r=a b");
        malformed("n,,n=alice,r=abc,=x");
        malformed("n,,n=alice,r=abc,ext");
        assert_eq!(
            first("n,a=bob,n=alice,r=abc"),
            Err(SaslError::AuthorizationIdMismatch)
        );
        assert_eq!(
            first("n,,n=alice,r=abc,tokenauth=true"),
            Err(SaslError::UnsupportedExtension("tokenauth"))
        );
        assert_eq!(
            first("n,,m=x,n=alice,r=abc"),
            Err(SaslError::UnsupportedExtension("m"))
        );
        assert!(matches!(
            first("n,,n=alice,r=abc,tokenauth=false,other=1"),
            Ok(Step::Challenge(_))
        ));
    }

    #[test]
    fn scram_bounds_user_names_and_nonces() {
        let users = alice();
        let first = |message: String| {
            SaslServer::new(Mechanism::ScramSha256).step(message.as_bytes(), &users)
        };
        let long_user = "u".repeat(SASL_USER_NAME_BYTES_MAX + 1);
        assert!(matches!(
            first(format!("n,,n={long_user},r=abc")),
            Err(SaslError::TooLong {
                field: "user name",
                ..
            })
        ));
        let long_nonce = "r".repeat(SCRAM_NONCE_BYTES_MAX + 1);
        assert!(matches!(
            first(format!("n,,n=alice,r={long_nonce}")),
            Err(SaslError::TooLong { field: "nonce", .. })
        ));
        let long_message = format!("n,,n=alice,r=abc,x={}", "v".repeat(SASL_MESSAGE_BYTES_MAX));
        assert!(matches!(
            first(long_message),
            Err(SaslError::TooLong {
                field: "message",
                ..
            })
        ));
        assert!(matches!(
            SaslServer::new(Mechanism::ScramSha256).step(b"n,,n=alice,r=\xff", &users),
            Err(SaslError::Malformed(_))
        ));
    }

    #[test]
    fn scram_refuses_a_proof_of_the_wrong_length() {
        let users = alice();
        let mut server = SaslServer::with_server_nonce(Mechanism::ScramSha512, "S");
        challenge(server.step(b"n,,n=alice,r=C", &users));
        let result = server.step(b"c=biws,r=CS,p=AAAA", &users);
        assert!(matches!(result, Err(SaslError::Malformed(_))), "{result:?}");
    }

    // -- PLAIN --

    /// Made once: each credential costs a PBKDF2, and the property tests
    /// drive thousands of attempts.
    static PLAIN_USERS: LazyLock<Users> = LazyLock::new(|| {
        Users::default()
            .with("alice", ScramMechanism::Sha512, "alice-secret")
            .with("bob", ScramMechanism::Sha256, "bob-secret")
    });

    fn plain_users() -> &'static Users {
        &PLAIN_USERS
    }

    fn plain(message: &[u8]) -> Result<Step, SaslError> {
        SaslServer::new(Mechanism::Plain).step(message, plain_users())
    }

    #[test]
    fn plain_authenticates_by_either_scram_credential() {
        let (principal, final_message) = done(plain(b"\0alice\0alice-secret"));
        assert_eq!(principal, KafkaPrincipal::user("alice"));
        assert!(final_message.is_empty());
        assert_eq!(
            done(plain(b"bob\0bob\0bob-secret")).0,
            KafkaPrincipal::user("bob")
        );
    }

    #[test]
    fn plain_unknown_user_and_wrong_password_give_the_same_error() {
        let wrong = plain(b"\0alice\0guess");
        let unknown = plain(b"\0mallory\0alice-secret");
        let expected = Err(SaslError::AuthenticationFailed {
            mechanism: Mechanism::Plain,
        });
        assert_eq!(wrong, expected);
        assert_eq!(unknown, expected);
        assert_eq!(
            unknown.map_err(|err| err.to_string()),
            Err("Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN".to_owned())
        );
    }

    #[test]
    fn plain_refuses_an_authorization_id_other_than_the_user() {
        assert_eq!(
            plain(b"bob\0alice\0alice-secret"),
            Err(SaslError::AuthorizationIdMismatch)
        );
    }

    #[test]
    fn plain_refuses_messages_without_three_tokens() {
        for message in [
            &b""[..],
            b"alice",
            b"alice\0alice-secret",
            b"\0alice\0pw\0extra",
        ] {
            let result = plain(message);
            assert!(
                matches!(result, Err(SaslError::Malformed(_))),
                "{message:?}: {result:?}"
            );
        }
        assert!(matches!(plain(b"\0\0pw"), Err(SaslError::Malformed(_))));
        assert!(matches!(plain(b"\0alice\0"), Err(SaslError::Malformed(_))));
        assert!(matches!(
            plain(b"\0al\xffice\0pw"),
            Err(SaslError::Malformed(_))
        ));
    }

    #[test]
    fn plain_refuses_over_long_input() {
        let long_user = format!("\0{}\0pw", "u".repeat(SASL_USER_NAME_BYTES_MAX + 1));
        assert!(matches!(
            plain(long_user.as_bytes()),
            Err(SaslError::TooLong {
                field: "user name",
                ..
            })
        ));
        let long_password = format!("\0alice\0{}", "p".repeat(SASL_MESSAGE_BYTES_MAX));
        assert!(matches!(
            plain(long_password.as_bytes()),
            Err(SaslError::TooLong {
                field: "message",
                ..
            })
        ));
    }

    #[test]
    fn plain_step_after_done_is_finished() {
        let users = plain_users();
        let mut server = SaslServer::new(Mechanism::Plain);
        done(server.step(b"\0alice\0alice-secret", users));
        assert_eq!(
            server.step(b"\0alice\0alice-secret", users),
            Err(SaslError::Finished)
        );
    }

    #[test]
    fn errors_never_hold_the_password() {
        let results = [
            plain(b"\0alice\0hunter2-secret"),
            plain(b"bob\0alice\0hunter2-secret"),
            plain(b"\0alice\0hunter2-secret\0"),
        ];
        for result in results {
            let err = result.expect_err("refused");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    // -- no input panics --

    /// Drives a server of each mechanism with `messages`; an SCRAM exchange
    /// may first be put past its first round with a valid message.
    fn drive(mechanism: Mechanism, valid_first: bool, messages: &[Vec<u8>]) {
        let users = plain_users();
        let mut server = SaslServer::new(mechanism);
        if valid_first && mechanism.scram().is_some() {
            challenge(server.step(b"n,,n=alice,r=abc", users));
        }
        for message in messages {
            let _ = server.step(message, users);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..4),
            valid_first in any::<bool>(),
        ) {
            for mechanism in Mechanism::ALL {
                drive(mechanism, valid_first, &messages);
            }
        }

        #[test]
        fn scram_shaped_text_never_panics(
            first in "[nyp]?,?(a=[a-z=23CD]{0,6})?,?(m=x,)?n=[a-z=23CD,]{0,8},r=[!-~]{0,8}(,[a-z]{1,4}=[a-z]{0,3}){0,2}",
            last in "c=[A-Za-z0-9+/=]{0,8},r=[!-~]{0,12}(,x=y)?,p=[A-Za-z0-9+/=]{0,90}",
        ) {
            let users = plain_users();
            for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
                let mut server = SaslServer::new(mechanism);
                let _ = server.step(first.as_bytes(), users);
                let _ = server.step(last.as_bytes(), users);
            }
        }
    }
}
