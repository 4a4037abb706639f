//! SASL/OAUTHBEARER exchanges with arbitrary client messages: weir-auth's
//! `OAuthBearerServer::step` is fed each message a client sends, as the
//! broker feeds it `SaslAuthenticate` bytes, against a JWKS of one P-256
//! key and KIP-768 rules that expect an issuer and an audience.
//!
//! The input is the claims of a token, then up to three client messages,
//! all separated by 0xFF (a byte no UTF-8 text holds). The fuzzer cannot
//! sign, so the harness does: in the first message, `%t` becomes a JWT
//! whose payload is the input's claims bytes as they are (valid JSON or
//! not), signed by the set's key. Everything else, the token's other parts
//! included wherever the fuzzer writes a token of its own, is the fuzzer's.
//!
//! What must hold, besides no panic: `Done` only for a token the key
//! signed, whose claims name the principal in `sub`, carry the expected
//! issuer and audience and an `exp` not yet past, and whose authorization
//! id, if the message has one, is that principal; the plain valid message
//! with valid claims is `Done`; a refused token is answered with the error
//! challenge, after which `%x01` fails with the token's error and anything
//! else as unexpected; once the exchange has ended, every message is
//! `Finished`.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weir_auth::oauth::{
    ERROR_CHALLENGE, Jwks, OAuthBearerServer, OAuthError, OAuthStep, TokenRules,
    parse_initial_response,
};
use weir_fuzz::replace_all;

/// A P-256 key made for this target only, and its public half as a JWK.
const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJqIS/b9HxxyASmGf
kohOU+7ENOyc3VSvvgXp4EwHbcyhRANCAATOZZ1OznA1FSzEIXkN1ZzZR0kZiGoL
GXSLL6vPLCpMGsMkYAvpT2s0vb96lGQZQ6I/htdMOcbgLQGBbuuEpi2c
-----END PRIVATE KEY-----
";
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"fuzz",
"x":"zmWdTs5wNRUsxCF5DdWc2UdJGYhqCxl0iy-rzywqTBo","y":"wyRgC-lPazS9v3qUZBlDoj-G10w5xuAtAYFu64SmLZw"}]}"#;
/// The header of every token the harness signs.
const HEADER: &str = r#"{"alg":"ES256","kid":"fuzz","typ":"JWT"}"#;
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "weir";
/// The broker's clock, in milliseconds since the Unix epoch.
const NOW_MS: u64 = 1_700_000_000_000;
/// The most client messages one input sends.
const MESSAGES_MAX: usize = 3;
/// What separates the parts of an input.
const SEPARATOR: u8 = 0xff;
/// In the first message, replaced by the signed token.
const TOKEN_PLACEHOLDER: &[u8] = b"%t";
/// The first message of a client with nothing to add.
const PLAIN_MESSAGE: &[u8] = b"n,,\x01auth=Bearer %t\x01\x01";
/// Claims every rule accepts.
const VALID_CLAIMS: &[u8] =
    br#"{"sub":"alice","iss":"https://issuer.example","aud":"weir","exp":1700000600}"#;

struct Fixture {
    key: EncodingKey,
    jwks: Jwks,
    rules: TokenRules,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        key: EncodingKey::from_ec_pem(PRIVATE_KEY.as_bytes()).expect("the target's key"),
        jwks: Jwks::parse(JWKS.as_bytes()).expect("the target's JWKS"),
        rules: TokenRules {
            expected_audience: vec![AUDIENCE.to_owned()],
            expected_issuer: Some(ISSUER.to_owned()),
            ..TokenRules::default()
        },
    })
}

/// A compact JWS of `claims`, as they are, signed by the set's key.
fn sign(claims: &[u8]) -> Vec<u8> {
    let signing_input = format!("{}.{}", BASE64URL.encode(HEADER), BASE64URL.encode(claims));
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &fixture().key, Algorithm::ES256)
            .expect("ES256 signs any input");
    format!("{signing_input}.{signature}").into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(MESSAGES_MAX + 1, |&byte| byte == SEPARATOR);
    let claims = parts.next().unwrap_or_default();
    let Some(template) = parts.next() else {
        return;
    };
    let fixture = fixture();
    let signed = contains(template, TOKEN_PLACEHOLDER);
    let first = if signed {
        replace_all(template, TOKEN_PLACEHOLDER, &sign(claims))
    } else {
        template.to_vec()
    };
    let mut server = OAuthBearerServer::new();
    let step = server.step(&first, &fixture.jwks, &fixture.rules, NOW_MS);
    let (done, mut challenged) = match step {
        Ok(OAuthStep::Done(token)) => {
            assert!(signed, "a token the key did not sign was accepted");
            let claims: Value = serde_json::from_slice(claims).expect("accepted claims are JSON");
            assert_eq!(
                claims["sub"].as_str(),
                Some(token.principal.name.as_str()),
                "the principal is not the sub claim"
            );
            assert_eq!(claims["iss"].as_str(), Some(ISSUER));
            let audience = match &claims["aud"] {
                Value::String(one) => one == AUDIENCE,
                Value::Array(many) => many.iter().any(|a| a.as_str() == Some(AUDIENCE)),
                _ => false,
            };
            assert!(audience, "a token without the audience was accepted");
            let skew_ms = fixture.rules.clock_skew_seconds as f64 * 1000.0;
            let exp = claims["exp"].as_f64().expect("an accepted token has exp");
            assert!(
                exp * 1000.0 + skew_ms > NOW_MS as f64,
                "an expired token was accepted"
            );
            let read = parse_initial_response(&first).expect("an accepted message parses");
            if let Some(authzid) = read.authorization_id {
                assert_eq!(authzid, token.principal.name, "another authorization id");
            }
            (true, None)
        }
        Ok(OAuthStep::Challenge { challenge, error }) => {
            assert_eq!(challenge, ERROR_CHALLENGE);
            assert!(matches!(error, OAuthError::Token(_)), "{error:?}");
            (false, Some(error))
        }
        Err(error) => {
            assert!(
                !matches!(error, OAuthError::Token(_)),
                "a token error was not challenged"
            );
            assert_ne!(
                error,
                OAuthError::Finished,
                "a first message was refused as late"
            );
            (false, None)
        }
    };
    if template == PLAIN_MESSAGE && claims == VALID_CLAIMS {
        assert!(done, "the valid exchange was refused");
    }
    for message in parts {
        let step = server.step(message, &fixture.jwks, &fixture.rules, NOW_MS);
        match challenged.take() {
            Some(error) if message == b"\x01" => assert_eq!(step, Err(error)),
            Some(_) => assert_eq!(step, Err(OAuthError::UnexpectedAfterChallenge)),
            None => assert_eq!(step, Err(OAuthError::Finished)),
        }
    }
    // Sent again after the end, the first message is refused as late.
    if challenged.is_none() {
        let step = server.step(&first, &fixture.jwks, &fixture.rules, NOW_MS);
        assert_eq!(step, Err(OAuthError::Finished));
    }
});

fn contains(text: &[u8], part: &[u8]) -> bool {
    text.windows(part.len()).any(|window| window == part)
}
