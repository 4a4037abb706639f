//! SASL/OAUTHBEARER (RFC 7628, Kafka's KIP-255) with the broker-side token
//! validation of KIP-768: the client's initial response parsed, its JWT
//! checked against a JWKS, and the exchange as a state machine.
//!
//! This module owns what a token must be to be accepted. It does no I/O and
//! reads no clock: the signing keys ([`Jwks`], parsed here from the JSON
//! the server loads from a file or a URL) and the current time come from
//! the caller, which is how the server reloads keys without this module
//! knowing, and how the tests move time.
//!
//! # What a token must be
//!
//! - A JWS in compact form, signed with an asymmetric algorithm the key it
//!   names allows: RS256/384/512 and PS256/384/512 with an RSA key, ES256
//!   with a P-256 key, ES384 with a P-384 key, EdDSA with an Ed25519 key
//!   (as the key's own `alg`, when it has one, narrows further). `alg:
//!   none`, HMAC algorithms, and an algorithm the key does not allow are
//!   refused. The token names its key with `kid`; a token without one is
//!   checked against the one key of the set that fits its algorithm, and
//!   refused if there are several.
//! - `exp` is required; `exp`, `nbf` and `iat` are checked with the clock
//!   skew allowed (`sasl.oauthbearer.clock.skew.seconds`).
//! - `iss` equals `sasl.oauthbearer.expected.issuer` when that is set, and
//!   `aud` (a string or a list) holds one of
//!   `sasl.oauthbearer.expected.audience` when that is set.
//! - The claim named by `sasl.oauthbearer.sub.claim.name` (`sub`) is a
//!   non-empty string of at most [`SASL_USER_NAME_BYTES_MAX`] bytes: the
//!   principal is `User:<it>`. The scope claim
//!   (`sasl.oauthbearer.scope.claim.name`), a space-separated string or a
//!   list, is read when present.
//!
//! Signatures and the JWK formats are the `jsonwebtoken` crate's; the
//! claims are checked here against the time given, not the crate's clock.
//!
//! # The exchange
//!
//! As Kafka's `OAuthBearerSaslServer` (RFC 7628 section 3.2.2): a valid
//! token ends the exchange with an empty server message; a refused one is
//! answered with the error challenge [`ERROR_CHALLENGE`], the client
//! answers with `%x01`, and the exchange then fails. A client message that
//! does not parse fails at once, with no challenge.
//!
//! No error here holds a token: the reasons name claims and keys only, so
//! they can be logged.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::principal::KafkaPrincipal;
use crate::sasl::{SASL_MESSAGE_BYTES_MAX, SASL_USER_NAME_BYTES_MAX, decode_sasl_name};

/// What the server answers a refused token with (RFC 7628 section 3.2.2),
/// as Kafka does. The reason is logged, not sent.
pub const ERROR_CHALLENGE: &[u8] = br#"{"status":"invalid_token"}"#;

/// The largest JWKS document read, from a file or a URL.
pub const JWKS_BYTES_MAX: usize = 1024 * 1024;

/// The most keys a JWKS may hold. Identity providers publish a handful.
pub const JWKS_KEYS_MAX: usize = 1000;

/// The most key-value pairs (the `auth` pair and SASL extensions) a client
/// initial response may carry.
pub const OAUTH_PAIRS_MAX: usize = 64;

/// The longest claim value or key id quoted in an error (and so in the log).
const QUOTED_BYTES_MAX: usize = 128;

/// KIP-768's settings for checking tokens, by their Kafka names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// `sasl.oauthbearer.expected.audience`: when not empty, `aud` must
    /// hold one of these.
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.expected.issuer`: when set, `iss` must equal it.
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim that names the
    /// principal (`sub`).
    pub sub_claim_name: String,
    /// `sasl.oauthbearer.scope.claim.name` (`scope`).
    pub scope_claim_name: String,
    /// `sasl.oauthbearer.clock.skew.seconds` (30): how far the broker's
    /// clock and the issuer's may disagree.
    pub clock_skew_seconds: u64,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            expected_audience: Vec::new(),
            expected_issuer: None,
            sub_claim_name: "sub".to_owned(),
            scope_claim_name: "scope".to_owned(),
            clock_skew_seconds: 30,
        }
    }
}

/// A token that passed: who it names and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    /// `User:<the sub claim>`.
    pub principal: KafkaPrincipal,
    /// `exp`, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// The scope claim's values, if it has one.
    pub scope: Vec<String>,
    /// The key that signed it.
    pub key_id: Option<String>,
}

/// The signing keys tokens are checked against: the keys of a JWKS that
/// can verify a signature. Keys of other kinds (encryption keys, HMAC
/// secrets, curves not served) are left out and counted.
#[derive(Debug, Clone)]
pub struct Jwks {
    set: JwkSet,
    skipped: usize,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`, RFC 7517). A key that
    /// cannot verify signatures here is skipped, not an error, as identity
    /// providers publish encryption keys beside signing keys; a set with no
    /// signing key at all is an error.
    pub fn parse(json: &[u8]) -> Result<Self, JwksError> {
        if json.len() > JWKS_BYTES_MAX {
            return Err(JwksError::TooLarge {
                size_bytes: json.len(),
            });
        }
        let document: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let Some(Value::Array(entries)) = document.get("keys") else {
            return Err(JwksError::NoKeysArray);
        };
        if entries.len() > JWKS_KEYS_MAX {
            return Err(JwksError::TooManyKeys {
                keys: entries.len(),
            });
        }
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = 0;
        for entry in entries {
            match serde_json::from_value::<Jwk>(entry.clone()) {
                Ok(jwk) if !algorithms_of(&jwk).is_empty() => keys.push(jwk),
                _ => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoSigningKey { skipped });
        }
        Ok(Jwks {
            set: JwkSet { keys },
            skipped,
        })
    }

    /// The signing keys kept.
    pub fn keys(&self) -> &[Jwk] {
        &self.set.keys
    }

    /// How many keys of the document were left out.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether a key has this `kid`.
    pub fn contains_key_id(&self, kid: &str) -> bool {
        self.set.find(kid).is_some()
    }
}

impl From<JwkSet> for Jwks {
    /// The signing keys of `set`.
    fn from(set: JwkSet) -> Self {
        let total = set.keys.len();
        let keys: Vec<Jwk> = set
            .keys
            .into_iter()
            .filter(|jwk| !algorithms_of(jwk).is_empty())
            .collect();
        Jwks {
            skipped: total - keys.len(),
            set: JwkSet { keys },
        }
    }
}

/// Why a JWKS document cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// Over [`JWKS_BYTES_MAX`].
    #[error("the JWKS is {size_bytes} bytes, over the limit of {JWKS_BYTES_MAX}")]
    TooLarge {
        /// Its size.
        size_bytes: usize,
    },
    /// Not JSON.
    #[error("the JWKS is not JSON: {0}")]
    Json(String),
    /// JSON without a `keys` array.
    #[error("the JWKS has no \"keys\" array (RFC 7517: {{\"keys\": [...]}})")]
    NoKeysArray,
    /// Over [`JWKS_KEYS_MAX`].
    #[error("the JWKS holds {keys} keys, over the limit of {JWKS_KEYS_MAX}")]
    TooManyKeys {
        /// How many.
        keys: usize,
    },
    /// No key that can verify a token's signature.
    #[error(
        "the JWKS holds no signing key Weir can use ({skipped} other keys): it takes RSA, \
         EC P-256 or P-384, and Ed25519 public keys"
    )]
    NoSigningKey {
        /// The keys left out.
        skipped: usize,
    },
}

/// The client's first message (RFC 7628 section 3.1), read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialResponse<'a> {
    /// The gs2 authorization id (`a=`), decoded, if the client sent one.
    pub authorization_id: Option<String>,
    /// The bearer token.
    pub token: &'a str,
    /// The SASL extensions (every pair but `auth`), as sent. Kafka ignores
    /// extensions its callback does not check, and so does Weir.
    pub extensions: Vec<(&'a str, &'a str)>,
}

/// Reads `gs2-header %x01 *(key=value %x01) %x01`, whose `auth` pair is
/// `Bearer <token>`.
pub fn parse_initial_response(message: &[u8]) -> Result<InitialResponse<'_>, OAuthError> {
    if message.len() > SASL_MESSAGE_BYTES_MAX {
        return Err(OAuthError::TooLong {
            size_bytes: message.len(),
            max_bytes: SASL_MESSAGE_BYTES_MAX,
        });
    }
    let text = std::str::from_utf8(message).map_err(|_| malformed("the message is not UTF-8"))?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("no gs2 header (n,,)"))?;
    if flag != "n" && flag != "y" {
        return Err(malformed(
            "the gs2 channel-binding flag is not n or y (channel binding is not served)",
        ));
    }
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or_else(|| malformed("the gs2 header does not end with a comma"))?;
    let authorization_id = match authzid {
        "" => None,
        _ => {
            let name = authzid
                .strip_prefix("a=")
                .ok_or_else(|| malformed("the gs2 authorization id does not start with a="))?;
            let name = decode_sasl_name(name).map_err(|e| OAuthError::Malformed(e.to_string()))?;
            crate::sasl::check_user_name("authorization id", &name)
                .map_err(|e| OAuthError::Malformed(e.to_string()))?;
            Some(name)
        }
    };
    // %x01 after the header, %x01 after each pair, and a last %x01.
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|pairs| pairs.strip_suffix('\x01'))
        .ok_or_else(|| malformed("the key-value pairs are not framed by %x01"))?;
    let mut token = None;
    let mut extensions = Vec::new();
    if !pairs.is_empty() {
        let pairs = pairs
            .strip_suffix('\x01')
            .ok_or_else(|| malformed("a key-value pair does not end with %x01"))?;
        for (index, pair) in pairs.split('\x01').enumerate() {
            if index >= OAUTH_PAIRS_MAX {
                return Err(malformed("too many key-value pairs"));
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| malformed("a key-value pair has no ="))?;
            // RFC 7628: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(malformed("a key is not letters only"));
            }
            if !value
                .bytes()
                .all(|b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Err(malformed(
                    "a value holds characters RFC 7628 does not allow",
                ));
            }
            if key == "auth" {
                if token.is_some() {
                    return Err(malformed("auth is given twice"));
                }
                token = Some(bearer_token(value)?);
            } else {
                extensions.push((key, value));
            }
        }
    }
    let token = token.ok_or(OAuthError::MissingAuth)?;
    Ok(InitialResponse {
        authorization_id,
        token,
        extensions,
    })
}

/// The token of `Bearer <b64token>` (RFC 6750 section 2.1; the scheme's
/// case does not matter, as in HTTP).
fn bearer_token(value: &str) -> Result<&str, OAuthError> {
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| OAuthError::WrongScheme(quoted(value.split(' ').next().unwrap_or(""))))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(OAuthError::WrongScheme(quoted(scheme)));
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
    {
        return Err(malformed("the bearer token is not a b64token (RFC 6750)"));
    }
    Ok(token)
}

/// The `kid` a client's first message names, if it parses: what the
/// server looks for in its keys before checking the token, to fetch them
/// again when the key is new.
pub fn requested_key_id(message: &[u8]) -> Option<String> {
    let response = parse_initial_response(message).ok()?;
    jsonwebtoken::decode_header(response.token).ok()?.kid
}

/// Checks a client's first message: its token against `keys` and `rules`
/// at `now_ms` (milliseconds since the Unix epoch), and its authorization
/// id, when it sent one, against the token's principal.
pub fn authenticate(
    message: &[u8],
    keys: &Jwks,
    rules: &TokenRules,
    now_ms: u64,
) -> Result<ValidatedToken, OAuthError> {
    let response = parse_initial_response(message)?;
    let token = validate_token(response.token, keys, rules, now_ms)?;
    if response
        .authorization_id
        .is_some_and(|authzid| authzid != token.principal.name)
    {
        return Err(OAuthError::AuthorizationIdMismatch);
    }
    Ok(token)
}

/// Checks a JWT: its signature with the key of `keys` it names, then its
/// claims against `rules` at `now_ms` (milliseconds since the Unix epoch).
pub fn validate_token(
    token: &str,
    keys: &Jwks,
    rules: &TokenRules,
    now_ms: u64,
) -> Result<ValidatedToken, TokenError> {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(header) => header,
        Err(err) => {
            return Err(match raw_algorithm(token) {
                Some(alg) if alg.eq_ignore_ascii_case("none") => TokenError::AlgorithmNone,
                Some(alg) if matches!(err.kind(), ErrorKind::Json(_)) => {
                    TokenError::UnsupportedAlgorithm(quoted(&alg))
                }
                _ => TokenError::Malformed(describe(&err)),
            });
        }
    };
    let algorithm = header.alg;
    if matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(TokenError::UnsupportedAlgorithm(format!("{algorithm:?}")));
    }
    let jwk = match &header.kid {
        Some(kid) => keys
            .set
            .find(kid)
            .ok_or_else(|| TokenError::UnknownKeyId { kid: quoted(kid) })?,
        None => {
            let mut fitting = keys
                .keys()
                .iter()
                .filter(|jwk| algorithms_of(jwk).contains(&algorithm));
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => only,
                (None, _) => {
                    return Err(TokenError::NoKeyForAlgorithm(format!("{algorithm:?}")));
                }
                (Some(_), Some(_)) => return Err(TokenError::NoKeyId),
            }
        }
    };
    let key_id = jwk.common.key_id.clone();
    let allowed = algorithms_of(jwk);
    if !allowed.contains(&algorithm) {
        return Err(TokenError::AlgorithmMismatch {
            algorithm: format!("{algorithm:?}"),
            kid: key_id.as_deref().map(quoted),
            allowed: allowed.iter().map(|a| format!("{a:?}")).collect(),
        });
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::BadKey {
        kid: key_id.as_deref().map(quoted),
        reason: describe(&e),
    })?;
    // The crate checks the signature and the algorithm; the claims are
    // checked below against the time given.
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => TokenError::BadSignature {
                kid: key_id.as_deref().map(quoted),
            },
            ErrorKind::InvalidAlgorithm => TokenError::AlgorithmMismatch {
                algorithm: format!("{algorithm:?}"),
                kid: key_id.as_deref().map(quoted),
                allowed: allowed.iter().map(|a| format!("{a:?}")).collect(),
            },
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => TokenError::BadKey {
                kid: key_id.as_deref().map(quoted),
                reason: describe(&err),
            },
            _ => TokenError::Malformed(describe(&err)),
        })?
        .claims;
    check_claims(&claims, rules, now_ms, key_id)
}

/// The time and identity claims of a token whose signature is good.
fn check_claims(
    claims: &Map<String, Value>,
    rules: &TokenRules,
    now_ms: u64,
    key_id: Option<String>,
) -> Result<ValidatedToken, TokenError> {
    let skew_ms = rules.clock_skew_seconds.saturating_mul(1000);
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp".to_owned()))?;
    let expires_at_ms = exp.saturating_mul(1000);
    if now_ms >= expires_at_ms.saturating_add(skew_ms) {
        return Err(TokenError::Expired {
            exp,
            now: now_ms / 1000,
            skew_seconds: rules.clock_skew_seconds,
        });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf.saturating_mul(1000) > now_ms.saturating_add(skew_ms)
    {
        return Err(TokenError::NotYetValid {
            nbf,
            now: now_ms / 1000,
            skew_seconds: rules.clock_skew_seconds,
        });
    }
    if let Some(iat) = numeric_date(claims, "iat")?
        && iat.saturating_mul(1000) > now_ms.saturating_add(skew_ms)
    {
        return Err(TokenError::IssuedInFuture {
            iat,
            now: now_ms / 1000,
            skew_seconds: rules.clock_skew_seconds,
        });
    }
    if let Some(expected) = &rules.expected_issuer {
        let found = match claims.get("iss") {
            None => return Err(TokenError::MissingClaim("iss".to_owned())),
            Some(Value::String(iss)) => iss,
            Some(_) => return Err(bad_claim("iss", "a string")),
        };
        if found != expected {
            return Err(TokenError::WrongIssuer {
                found: quoted(found),
                expected: expected.clone(),
            });
        }
    }
    if !rules.expected_audience.is_empty() {
        let found =
            strings(claims, "aud", false)?.ok_or(TokenError::MissingClaim("aud".to_owned()))?;
        if !found
            .iter()
            .any(|aud| rules.expected_audience.contains(aud))
        {
            return Err(TokenError::WrongAudience {
                found: found.iter().take(8).map(|aud| quoted(aud)).collect(),
                expected: rules.expected_audience.clone(),
            });
        }
    }
    let name = match claims.get(&rules.sub_claim_name) {
        None => return Err(TokenError::MissingClaim(quoted(&rules.sub_claim_name))),
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        Some(_) => return Err(bad_claim(&rules.sub_claim_name, "a non-empty string")),
    };
    if name.len() > SASL_USER_NAME_BYTES_MAX {
        return Err(bad_claim(
            &rules.sub_claim_name,
            "at most 256 bytes (a principal name)",
        ));
    }
    let scope = strings(claims, &rules.scope_claim_name, true)?.unwrap_or_default();
    Ok(ValidatedToken {
        principal: KafkaPrincipal::user(name.as_str()),
        expires_at_ms,
        scope,
        key_id,
    })
}

/// A NumericDate claim (RFC 7519: seconds, possibly with a fraction), in
/// whole seconds; `None` when absent.
fn numeric_date(claims: &Map<String, Value>, claim: &str) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    if let Some(seconds) = value.as_u64() {
        return Ok(Some(seconds));
    }
    match value.as_f64() {
        // Truncation is meant: a date has whole seconds here. A float past
        // u64::MAX saturates.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some(seconds as u64)),
        _ => Err(bad_claim(
            claim,
            "a date (seconds since 1970, not negative)",
        )),
    }
}

/// A claim that is a string or a list of strings; a string is split on
/// spaces when `split` (as a scope is). `None` when absent.
fn strings(
    claims: &Map<String, Value>,
    claim: &str,
    split: bool,
) -> Result<Option<Vec<String>>, TokenError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::String(text)) if split => Ok(Some(
            text.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        Some(Value::String(text)) => Ok(Some(vec![text.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                _ => Err(bad_claim(claim, "a string or a list of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_claim(claim, "a string or a list of strings")),
    }
}

fn bad_claim(claim: &str, expected: &'static str) -> TokenError {
    TokenError::BadClaim {
        claim: quoted(claim),
        expected,
    }
}

/// The algorithms a key can verify, narrowed by its own `alg`; none for an
/// encryption key, an HMAC secret or a curve not served.
fn algorithms_of(jwk: &Jwk) -> &'static [Algorithm] {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return &[];
    }
    let by_type: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => &[],
        },
        AlgorithmParameters::OctetKey(_) => &[],
    };
    let Some(named) = jwk.common.key_algorithm else {
        return by_type;
    };
    let Some(named) = signature_algorithm(named) else {
        return &[];
    };
    let at = by_type.iter().position(|a| *a == named);
    match at {
        Some(at) => by_type.get(at..=at).unwrap_or(&[]),
        None => &[],
    }
}

/// The signature algorithm a JWK's `alg` names, if it names one.
fn signature_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The `alg` of a token's header as written, when the header is base64url
/// JSON: to tell `none` and unknown algorithms from a broken token.
fn raw_algorithm(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let json = BASE64URL.decode(header.trim_end_matches('=')).ok()?;
    let header: Value = serde_json::from_slice(&json).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// `jsonwebtoken`'s error as text. Its messages describe the failure, never
/// the token.
fn describe(err: &jsonwebtoken::errors::Error) -> String {
    err.to_string()
}

/// A client-given string, cut to [`QUOTED_BYTES_MAX`] for an error.
fn quoted(text: &str) -> String {
    if text.len() <= QUOTED_BYTES_MAX {
        return text.to_owned();
    }
    let mut end = QUOTED_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", text.get(..end).unwrap_or_default())
}

/// A key's id as an error names it.
fn key_name(kid: &Option<String>) -> String {
    match kid {
        Some(kid) => format!("{kid:?}"),
        None => "(no kid)".to_owned(),
    }
}

fn malformed(reason: &str) -> OAuthError {
    OAuthError::Malformed(reason.to_owned())
}

/// Why a token was refused. Each says what to fix, naming claims and keys,
/// never the token.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWS in compact form.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned token (alg none)")]
    AlgorithmNone,
    /// An HMAC algorithm, or one the crate does not know.
    #[error("algorithm {0} is not accepted (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)")]
    UnsupportedAlgorithm(String),
    /// The token's `kid` is in no key of the JWKS.
    #[error("unknown kid {kid:?}: no key in the JWKS has it")]
    UnknownKeyId {
        /// The key id the token names.
        kid: String,
    },
    /// No `kid`, and several keys fit the algorithm.
    #[error("the token names no kid, and several keys of the JWKS fit its algorithm")]
    NoKeyId,
    /// No `kid`, and no key fits the algorithm.
    #[error("the token names no kid, and no key of the JWKS fits its algorithm {0}")]
    NoKeyForAlgorithm(String),
    /// The key does not allow the token's algorithm.
    #[error(
        "algorithm {algorithm} does not match key {}, which allows {allowed:?}",
        key_name(kid)
    )]
    AlgorithmMismatch {
        /// The token's `alg`.
        algorithm: String,
        /// The key's id.
        kid: Option<String>,
        /// What the key allows.
        allowed: Vec<String>,
    },
    /// The JWKS key cannot be used.
    #[error("key {} of the JWKS cannot be used: {reason}", key_name(kid))]
    BadKey {
        /// The key's id.
        kid: Option<String>,
        /// Why.
        reason: String,
    },
    /// The signature does not verify.
    #[error("bad signature (not made by key {})", key_name(kid))]
    BadSignature {
        /// The key's id.
        kid: Option<String>,
    },
    /// `exp` is past, beyond the skew allowed.
    #[error("expired: exp {exp} is past (now {now}, clock skew {skew_seconds} s)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The broker's time, seconds since the epoch.
        now: u64,
        /// The skew allowed.
        skew_seconds: u64,
    },
    /// `nbf` is ahead, beyond the skew allowed.
    #[error("not yet valid: nbf {nbf} is ahead (now {now}, clock skew {skew_seconds} s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The broker's time.
        now: u64,
        /// The skew allowed.
        skew_seconds: u64,
    },
    /// `iat` is ahead, beyond the skew allowed.
    #[error("issued in the future: iat {iat} is ahead (now {now}, clock skew {skew_seconds} s)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The broker's time.
        now: u64,
        /// The skew allowed.
        skew_seconds: u64,
    },
    /// A claim required is absent.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// A claim is of the wrong type.
    #[error("claim {claim} is not {expected}")]
    BadClaim {
        /// The claim.
        claim: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `iss` is not the expected issuer.
    #[error("wrong issuer {found:?} (sasl.oauthbearer.expected.issuer is {expected:?})")]
    WrongIssuer {
        /// The token's `iss`.
        found: String,
        /// The issuer expected.
        expected: String,
    },
    /// `aud` holds none of the expected audience.
    #[error("wrong audience {found:?} (sasl.oauthbearer.expected.audience is {expected:?})")]
    WrongAudience {
        /// The token's `aud` (at most 8).
        found: Vec<String>,
        /// The audience expected.
        expected: Vec<String>,
    },
}

/// Why an OAUTHBEARER exchange failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OAuthError {
    /// The client's message does not parse. It says what is wrong, never
    /// the client's bytes.
    #[error("malformed OAUTHBEARER message: {0}")]
    Malformed(String),
    /// Over its limit.
    #[error("OAUTHBEARER message of {size_bytes} bytes is over the limit of {max_bytes}")]
    TooLong {
        /// Its length.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// No `auth` pair.
    #[error("the OAUTHBEARER message has no auth=Bearer <token> pair")]
    MissingAuth,
    /// `auth` is not `Bearer <token>`.
    #[error("the OAUTHBEARER auth scheme is {0:?}, not Bearer")]
    WrongScheme(String),
    /// The token was refused.
    #[error("token refused: {0}")]
    Token(#[from] TokenError),
    /// The authorization id is not the token's principal. The message is
    /// Kafka's.
    #[error(
        "Authentication failed: Client requested an authorization id that is different from username"
    )]
    AuthorizationIdMismatch,
    /// After the error challenge, the client sent something else than `%x01`.
    #[error("the client answered the error challenge with something other than %x01")]
    UnexpectedAfterChallenge,
    /// A message after the exchange ended.
    #[error("the SASL exchange has ended; no further message is expected")]
    Finished,
}

/// What the server answers a client message with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthStep {
    /// The client is authenticated; the server's last message is empty.
    Done(ValidatedToken),
    /// The token was refused for `error`: send `challenge`
    /// ([`ERROR_CHALLENGE`]); the exchange fails at the client's answer.
    Challenge {
        /// What to send.
        challenge: Vec<u8>,
        /// Why, for the log.
        error: OAuthError,
    },
}

/// One OAUTHBEARER attempt on one connection, fed each client message.
/// After it ends, in success or failure, every further message is
/// [`OAuthError::Finished`].
#[derive(Debug, Default)]
pub struct OAuthBearerServer {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Start,
    /// The error challenge is sent; the client's `%x01` is next.
    ChallengeSent(OAuthError),
    Ended,
}

impl OAuthBearerServer {
    /// A new attempt.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the client's next message and says what to answer: the first
    /// is checked with [`authenticate`] against `keys` and `rules` at
    /// `now_ms`.
    pub fn step(
        &mut self,
        message: &[u8],
        keys: &Jwks,
        rules: &TokenRules,
        now_ms: u64,
    ) -> Result<OAuthStep, OAuthError> {
        match std::mem::replace(&mut self.state, State::Ended) {
            State::Ended => Err(OAuthError::Finished),
            State::ChallengeSent(error) if message == b"\x01" => Err(error),
            State::ChallengeSent(_) => Err(OAuthError::UnexpectedAfterChallenge),
            State::Start => match authenticate(message, keys, rules, now_ms) {
                Ok(token) => Ok(OAuthStep::Done(token)),
                Err(error @ OAuthError::Token(_)) => {
                    self.state = State::ChallengeSent(error.clone());
                    Ok(OAuthStep::Challenge {
                        challenge: ERROR_CHALLENGE.to_vec(),
                        error,
                    })
                }
                Err(error) => Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use proptest::prelude::*;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
    use serde_json::json;

    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW: u64 = NOW_MS / 1000;

    /// An EC P-256 key pair and its JWK, named `kid`.
    struct Signer {
        key: EncodingKey,
        jwk: Value,
        kid: String,
    }

    impl Signer {
        fn new(kid: &str) -> Self {
            let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let point = pair.public_key_raw();
            assert_eq!(point.len(), 65, "an uncompressed P-256 point");
            let jwk = json!({
                "kty": "EC",
                "crv": "P-256",
                "use": "sig",
                "alg": "ES256",
                "kid": kid,
                "x": BASE64URL.encode(&point[1..33]),
                "y": BASE64URL.encode(&point[33..65]),
            });
            Signer {
                key: EncodingKey::from_ec_der(&pair.serialize_der()),
                jwk,
                kid: kid.to_owned(),
            }
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&header, claims, &self.key).unwrap()
        }
    }

    fn jwks(signers: &[&Signer]) -> Jwks {
        let keys: Vec<Value> = signers.iter().map(|s| s.jwk.clone()).collect();
        Jwks::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn rules() -> TokenRules {
        TokenRules {
            expected_audience: vec!["weir".into(), "kafka".into()],
            expected_issuer: Some("https://issuer.example".into()),
            ..TokenRules::default()
        }
    }

    fn claims() -> Value {
        json!({
            "sub": "alice",
            "iss": "https://issuer.example",
            "aud": ["other", "weir"],
            "iat": NOW - 10,
            "exp": NOW + 600,
            "scope": "read write",
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn message(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    fn check(signer: &Signer, claims: &Value) -> Result<ValidatedToken, TokenError> {
        validate_token(&signer.sign(claims), &jwks(&[signer]), &rules(), NOW_MS)
    }

    #[test]
    fn a_client_initial_response_is_read() {
        let read = parse_initial_response(
            b"n,a=alice,\x01host=broker\x01auth=Bearer abc.def-_.ghi\x01\x01",
        )
        .unwrap();
        assert_eq!(read.authorization_id.as_deref(), Some("alice"));
        assert_eq!(read.token, "abc.def-_.ghi");
        assert_eq!(read.extensions, [("host", "broker")]);
        let plain = parse_initial_response(b"n,,\x01auth=bearer  tok\x01\x01").unwrap();
        assert_eq!((plain.authorization_id, plain.token), (None, "tok"));
    }

    #[test]
    fn a_client_initial_response_without_a_bearer_token_is_refused() {
        assert_eq!(
            parse_initial_response(b"n,,\x01host=broker\x01\x01"),
            Err(OAuthError::MissingAuth)
        );
        assert_eq!(
            parse_initial_response(b"n,,\x01\x01"),
            Err(OAuthError::MissingAuth)
        );
        assert_eq!(
            parse_initial_response(b"n,,\x01auth=Basic YWxpY2U=\x01\x01"),
            Err(OAuthError::WrongScheme("Basic".into()))
        );
        assert_eq!(
            parse_initial_response(b"n,,\x01auth=Bearer\x01\x01"),
            Err(OAuthError::WrongScheme("Bearer".into()))
        );
        for broken in [
            &b"n,,auth=Bearer tok\x01\x01"[..],
            b"n,,\x01auth=Bearer tok\x01",
            b"p=tls-unique,,\x01auth=Bearer tok\x01\x01",
            b"n,,\x01auth=Bearer to k!\x01\x01",
            b"n,,\x01auth=Bearer tok\x01auth=Bearer tok\x01\x01",
            b"n,,\x01ho-st=x\x01auth=Bearer tok\x01\x01",
            b"\xff",
        ] {
            assert!(
                matches!(
                    parse_initial_response(broken),
                    Err(OAuthError::Malformed(_))
                ),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn an_oversized_client_initial_response_is_refused_before_it_is_read() {
        let token = "a".repeat(SASL_MESSAGE_BYTES_MAX);
        assert!(matches!(
            parse_initial_response(&message(&token)),
            Err(OAuthError::TooLong { .. })
        ));
        let pairs = "k=v\x01".repeat(OAUTH_PAIRS_MAX + 1);
        let many = format!("n,,\x01{pairs}auth=Bearer tok\x01\x01");
        assert!(matches!(
            parse_initial_response(many.as_bytes()),
            Err(OAuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_valid_token_names_its_principal_and_expiry() {
        let signer = Signer::new("k1");
        let token = check(&signer, &claims()).unwrap();
        assert_eq!(token.principal, KafkaPrincipal::user("alice"));
        assert_eq!(token.expires_at_ms, (NOW + 600) * 1000);
        assert_eq!(token.scope, ["read", "write"]);
        assert_eq!(token.key_id.as_deref(), Some("k1"));
        let single_audience = with(claims(), "aud", json!("kafka"));
        assert!(check(&signer, &single_audience).is_ok());
        let other_claim = TokenRules {
            sub_claim_name: "client_id".into(),
            ..rules()
        };
        let named = with(claims(), "client_id", json!("svc-orders"));
        let token = validate_token(
            &signer.sign(&named),
            &jwks(&[&signer]),
            &other_claim,
            NOW_MS,
        );
        assert_eq!(token.unwrap().principal, KafkaPrincipal::user("svc-orders"));
    }

    #[test]
    fn expiry_is_checked_with_the_clock_skew() {
        let signer = Signer::new("k1");
        let within = with(claims(), "exp", json!(NOW - 20));
        assert!(check(&signer, &within).is_ok(), "20 s past, 30 s skew");
        let outside = with(claims(), "exp", json!(NOW - 31));
        assert!(matches!(
            check(&signer, &outside),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(
            check(&signer, &without(claims(), "exp")),
            Err(TokenError::MissingClaim("exp".into()))
        );
        let fraction = with(claims(), "exp", json!((NOW + 60) as f64 + 0.5));
        assert!(check(&signer, &fraction).is_ok());
        let text = with(claims(), "exp", json!("soon"));
        assert!(matches!(
            check(&signer, &text),
            Err(TokenError::BadClaim { .. })
        ));
    }

    #[test]
    fn a_token_not_yet_valid_or_issued_in_the_future_is_refused() {
        let signer = Signer::new("k1");
        let nbf = with(claims(), "nbf", json!(NOW + 120));
        assert!(matches!(
            check(&signer, &nbf),
            Err(TokenError::NotYetValid { .. })
        ));
        assert!(check(&signer, &with(claims(), "nbf", json!(NOW + 20))).is_ok());
        let iat = with(claims(), "iat", json!(NOW + 120));
        assert!(matches!(
            check(&signer, &iat),
            Err(TokenError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn a_token_for_another_issuer_or_audience_is_refused() {
        let signer = Signer::new("k1");
        let issuer = with(claims(), "iss", json!("https://evil.example"));
        assert!(matches!(
            check(&signer, &issuer),
            Err(TokenError::WrongIssuer { .. })
        ));
        assert_eq!(
            check(&signer, &without(claims(), "iss")),
            Err(TokenError::MissingClaim("iss".into()))
        );
        let audience = with(claims(), "aud", json!(["other"]));
        let refused = check(&signer, &audience).unwrap_err();
        assert!(matches!(refused, TokenError::WrongAudience { .. }));
        assert!(refused.to_string().contains("wrong audience"), "{refused}");
        assert_eq!(
            check(&signer, &without(claims(), "aud")),
            Err(TokenError::MissingClaim("aud".into()))
        );
        let unchecked = TokenRules::default();
        let token = signer.sign(&without(without(claims(), "aud"), "iss"));
        assert!(validate_token(&token, &jwks(&[&signer]), &unchecked, NOW_MS).is_ok());
    }

    #[test]
    fn a_token_without_its_principal_claim_is_refused() {
        let signer = Signer::new("k1");
        assert_eq!(
            check(&signer, &without(claims(), "sub")),
            Err(TokenError::MissingClaim("sub".into()))
        );
        assert!(matches!(
            check(&signer, &with(claims(), "sub", json!(""))),
            Err(TokenError::BadClaim { .. })
        ));
        assert!(matches!(
            check(&signer, &with(claims(), "sub", json!("a".repeat(300)))),
            Err(TokenError::BadClaim { .. })
        ));
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let header = BASE64URL.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = BASE64URL.encode(claims().to_string());
        let token = format!("{header}.{payload}.");
        let signer = Signer::new("k1");
        assert_eq!(
            validate_token(&token, &jwks(&[&signer]), &rules(), NOW_MS),
            Err(TokenError::AlgorithmNone)
        );
        let header = BASE64URL.encode(br#"{"alg":"ES512","kid":"k1"}"#);
        assert!(matches!(
            validate_token(
                &format!("{header}.{payload}.c2ln"),
                &jwks(&[&signer]),
                &rules(),
                NOW_MS
            ),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn a_token_whose_algorithm_the_key_does_not_allow_is_refused() {
        let signer = Signer::new("k1");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let secret = EncodingKey::from_secret(b"the JWK's x, as an HMAC key");
        let token = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
        assert!(matches!(
            validate_token(&token, &jwks(&[&signer]), &rules(), NOW_MS),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
        // An RS256 header over the EC key's kid.
        let header = BASE64URL.encode(br#"{"alg":"RS256","kid":"k1"}"#);
        let payload = BASE64URL.encode(claims().to_string());
        assert!(matches!(
            validate_token(
                &format!("{header}.{payload}.c2ln"),
                &jwks(&[&signer]),
                &rules(),
                NOW_MS
            ),
            Err(TokenError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn a_token_signed_by_an_unknown_key_is_refused() {
        let known = Signer::new("k1");
        let stranger = Signer::new("k2");
        let token = stranger.sign(&claims());
        let refused = validate_token(&token, &jwks(&[&known]), &rules(), NOW_MS).unwrap_err();
        assert_eq!(refused, TokenError::UnknownKeyId { kid: "k2".into() });
        assert!(refused.to_string().contains("unknown kid"));
        // The stranger's signature under the known key's kid.
        let impostor = Signer {
            kid: "k1".into(),
            ..Signer::new("k2")
        };
        assert_eq!(
            validate_token(
                &impostor.sign(&claims()),
                &jwks(&[&known]),
                &rules(),
                NOW_MS
            ),
            Err(TokenError::BadSignature {
                kid: Some("k1".into())
            })
        );
        assert_eq!(
            requested_key_id(&message(&token)).as_deref(),
            Some("k2"),
            "the server can see which key to fetch"
        );
    }

    #[test]
    fn a_token_without_a_kid_is_checked_against_the_one_key_that_fits() {
        let signer = Signer::new("k1");
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &signer.key).unwrap();
        assert!(validate_token(&token, &jwks(&[&signer]), &rules(), NOW_MS).is_ok());
        let other = Signer::new("k2");
        assert_eq!(
            validate_token(&token, &jwks(&[&signer, &other]), &rules(), NOW_MS),
            Err(TokenError::NoKeyId)
        );
    }

    #[test]
    fn a_jwks_keeps_its_signing_keys_only() {
        let signer = Signer::new("k1");
        let document = json!({ "keys": [
            signer.jwk,
            { "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "e", "n": "AQAB", "e": "AQAB" },
            { "kty": "oct", "kid": "s", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "secp256k1", "kid": "c", "x": "AA", "y": "AA" },
        ]});
        let keys = Jwks::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!((keys.keys().len(), keys.skipped()), (1, 3));
        assert!(keys.contains_key_id("k1") && !keys.contains_key_id("e"));
        assert_eq!(
            Jwks::parse(br#"{"keys": []}"#).unwrap_err(),
            JwksError::NoSigningKey { skipped: 0 }
        );
        assert_eq!(
            Jwks::parse(br#"{"key": []}"#).unwrap_err(),
            JwksError::NoKeysArray
        );
        assert!(matches!(Jwks::parse(b"not json"), Err(JwksError::Json(_))));
        let big = vec![b' '; JWKS_BYTES_MAX + 1];
        assert!(matches!(Jwks::parse(&big), Err(JwksError::TooLarge { .. })));
    }

    #[test]
    fn the_exchange_ends_empty_or_fails_after_the_error_challenge() {
        let signer = Signer::new("k1");
        let keys = jwks(&[&signer]);
        let mut server = OAuthBearerServer::new();
        let step = server.step(&message(&signer.sign(&claims())), &keys, &rules(), NOW_MS);
        assert!(matches!(step, Ok(OAuthStep::Done(_))));
        assert_eq!(
            server.step(b"\x01", &keys, &rules(), NOW_MS),
            Err(OAuthError::Finished)
        );

        let expired = signer.sign(&with(claims(), "exp", json!(NOW - 3600)));
        let mut server = OAuthBearerServer::new();
        let Ok(OAuthStep::Challenge { challenge, error }) =
            server.step(&message(&expired), &keys, &rules(), NOW_MS)
        else {
            panic!("an error challenge");
        };
        assert_eq!(challenge, ERROR_CHALLENGE);
        assert!(error.to_string().contains("expired"), "{error}");
        assert_eq!(server.step(b"\x01", &keys, &rules(), NOW_MS), Err(error));

        // The authorization id must be the token's principal.
        let mut server = OAuthBearerServer::new();
        let as_bob = format!("n,a=bob,\x01auth=Bearer {}\x01\x01", signer.sign(&claims()));
        assert_eq!(
            server.step(as_bob.as_bytes(), &keys, &rules(), NOW_MS),
            Err(OAuthError::AuthorizationIdMismatch)
        );
        // A message that does not parse fails at once.
        let mut server = OAuthBearerServer::new();
        assert_eq!(
            server.step(b"n,,\x01\x01", &keys, &rules(), NOW_MS),
            Err(OAuthError::MissingAuth)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_messages_never_panic(
            first in prop::collection::vec(any::<u8>(), 0..300),
            token in "[A-Za-z0-9_.=-]{0,200}",
            second in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let signer = Signer::new("k1");
            let keys = jwks(&[&signer]);
            for message in [first, message(&token)] {
                let mut server = OAuthBearerServer::new();
                let _ = server.step(&message, &keys, &rules(), NOW_MS);
                let _ = server.step(&second, &keys, &rules(), NOW_MS);
            }
        }
    }
}
