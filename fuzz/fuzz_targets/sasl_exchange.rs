//! SASL exchanges with arbitrary client messages: weir-auth's server state
//! machine (`SaslServer::step`) is fed each message a client sends, as the
//! broker feeds it `SaslAuthenticate` bytes, for PLAIN, SCRAM-SHA-256 and
//! SCRAM-SHA-512, against a credential lookup that knows one user.
//!
//! The input is a byte choosing the mechanism (`% 3`: PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512; OAUTHBEARER has a server of its own, `OAuthBearerServer`,
//! not fuzzed here), then up to four client messages separated by 0xFF (a
//! byte no UTF-8 text holds). A SCRAM server nonce is random, so the
//! harness plays the honest client's part in the final message: there, `%r`
//! becomes the nonce of the server's challenge, and a message ending in
//! `,p=%p` gets the proof the user's password gives for it. Everything else
//! is the fuzzer's.
//!
//! What must hold, besides no panic: an exchange ends (`Done` or an error)
//! once, and every later message is `SaslError::Finished`; `Done` names the
//! known user only; PLAIN is `Done` exactly for the user's name and password;
//! SCRAM challenges in its first round and ends in its second, is `Done`
//! only with a proof made from the password, then signs what the client
//! signed, and accepts the plain valid exchange.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Sha256, Sha512};
use weir_auth::{
    CredentialLookup, KafkaPrincipal, Mechanism, SCRAM_ITERATIONS_MIN, SaslError, SaslServer,
    ScramCredential, ScramMechanism, Step,
};
use weir_fuzz::replace_all;

/// The one user the lookup knows (the messages below spell the name and
/// password out).
const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";
/// The mechanisms `SaslServer` serves, in the order the first byte picks.
const MECHANISMS: [Mechanism; 3] = [
    Mechanism::Plain,
    Mechanism::ScramSha256,
    Mechanism::ScramSha512,
];
/// The most client messages one input sends.
const MESSAGES_MAX: usize = 4;
/// What separates the client messages of an input.
const SEPARATOR: u8 = 0xff;
/// In a SCRAM final message, replaced by the nonce of the challenge.
const NONCE_PLACEHOLDER: &[u8] = b"%r";
/// At the end of a SCRAM final message, replaced by the client's proof.
const PROOF_PLACEHOLDER: &[u8] = b",p=%p";
/// The PLAIN messages of the known user: without and with an
/// authorization id (which must then be the user).
const PLAIN_VALID: [&[u8]; 2] = [b"\0alice\0alice-secret", b"alice\0alice\0alice-secret"];
/// The SCRAM final message of a client with nothing to add.
const SCRAM_FINAL_PLAIN: &[u8] = b"c=biws,r=%r,p=%p";

/// A credential of the known user, and what the password gives the client.
struct Keys {
    credential: ScramCredential,
    /// `HMAC(SaltedPassword, "Client Key")`, which only the password gives.
    client_key: Vec<u8>,
}

/// The credential lookup: one user, with a credential per SCRAM mechanism
/// at the fewest iterations allowed, so that each input runs fast.
struct KnownUser {
    sha256: Keys,
    sha512: Keys,
}

impl KnownUser {
    fn keys(&self, mechanism: ScramMechanism) -> &Keys {
        match mechanism {
            ScramMechanism::Sha256 => &self.sha256,
            ScramMechanism::Sha512 => &self.sha512,
        }
    }
}

impl CredentialLookup for KnownUser {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (user == USER).then(|| self.keys(mechanism).credential.clone())
    }
}

/// The known user, made once: PBKDF2 is the slow part of an exchange.
fn known_user() -> &'static KnownUser {
    static USERS: OnceLock<KnownUser> = OnceLock::new();
    USERS.get_or_init(|| {
        let keys = |mechanism: ScramMechanism| {
            let salt = b"salt of alice".to_vec();
            let salted =
                mechanism.salted_password(PASSWORD.as_bytes(), &salt, SCRAM_ITERATIONS_MIN);
            Keys {
                credential: ScramCredential::from_salted_password(
                    mechanism,
                    &salted,
                    salt,
                    SCRAM_ITERATIONS_MIN,
                )
                .expect("a valid credential"),
                client_key: hmac(mechanism, &salted, &[b"Client Key"]),
            }
        };
        KnownUser {
            sha256: keys(ScramMechanism::Sha256),
            sha512: keys(ScramMechanism::Sha512),
        }
    })
}

/// `HMAC(key, parts joined)` with the mechanism's hash.
fn hmac(mechanism: ScramMechanism, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match mechanism {
        ScramMechanism::Sha256 => mac::<Hmac<Sha256>>(key, parts),
        ScramMechanism::Sha512 => mac::<Hmac<Sha512>>(key, parts),
    }
}

/// Where the exchange is, as the client sees it.
enum Exchange {
    /// Nothing sent yet.
    Start,
    /// The server answered `client_first` with the challenge `server_first`.
    ScramFinal {
        client_first: Vec<u8>,
        server_first: String,
    },
    /// The server ended the exchange, authenticated or not.
    Ended { authenticated: bool },
}

/// A SCRAM final message as the client sends it, with the placeholders
/// filled in, and the server-final message the client then expects (when
/// it signed).
struct ClientFinal {
    message: Vec<u8>,
    expected_server_final: Option<Vec<u8>>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let mechanism = MECHANISMS[usize::from(choice) % MECHANISMS.len()];
    let users = known_user();
    let mut server = SaslServer::new(mechanism);
    let mut exchange = Exchange::Start;
    let mut first_message: &[u8] = &[];
    for message in rest.splitn(MESSAGES_MAX, |&byte| byte == SEPARATOR) {
        exchange = match exchange {
            Exchange::Start => {
                first_message = message;
                match mechanism.scram() {
                    None => plain_round(&mut server, users, message),
                    Some(scram) => scram_first_round(&mut server, users, scram, message),
                }
            }
            Exchange::ScramFinal {
                client_first,
                server_first,
            } => {
                let scram = mechanism.scram().expect("only SCRAM challenges");
                let client_final =
                    client_final(users, scram, &client_first, &server_first, message);
                let plain_valid =
                    is_plain_scram_first(&client_first) && message == SCRAM_FINAL_PLAIN;
                scram_final_round(&mut server, users, client_final, plain_valid)
            }
            Exchange::Ended { authenticated } => {
                after_end(&mut server, users, authenticated, message)
            }
        };
    }
    // Sent once more after the end, the first message (the user's password,
    // for PLAIN's valid inputs) is refused too.
    if let Exchange::Ended { authenticated } = exchange {
        after_end(&mut server, users, authenticated, first_message);
    }
});

/// PLAIN's one round: `Done` exactly for the user's name and password.
fn plain_round(server: &mut SaslServer, users: &KnownUser, message: &[u8]) -> Exchange {
    let valid = PLAIN_VALID.contains(&message);
    match server.step(message, users) {
        Ok(Step::Done {
            principal,
            final_message,
        }) => {
            assert!(
                valid,
                "PLAIN authenticated a message that is not the user's"
            );
            assert_eq!(principal, KafkaPrincipal::user(USER));
            assert!(final_message.is_empty(), "PLAIN's last message is empty");
            assert!(server.is_done());
            Exchange::Ended {
                authenticated: true,
            }
        }
        Ok(Step::Challenge(_)) => panic!("PLAIN challenged"),
        Err(error) => {
            assert!(!valid, "PLAIN refused the user's password: {error}");
            assert_ne!(
                error,
                SaslError::Finished,
                "a first message was refused as late"
            );
            Exchange::Ended {
                authenticated: false,
            }
        }
    }
}

/// SCRAM's first round: a challenge that carries the client's nonce and the
/// server's, or an error; never the end.
fn scram_first_round(
    server: &mut SaslServer,
    users: &KnownUser,
    scram: ScramMechanism,
    message: &[u8],
) -> Exchange {
    match server.step(message, users) {
        Ok(Step::Challenge(challenge)) => {
            let server_first = String::from_utf8(challenge).expect("a challenge is UTF-8");
            let nonce = challenge_nonce(&server_first).expect("a challenge starts with r=");
            let bare = client_first_bare(message).expect("a challenged message has a gs2 header");
            let client_nonce = bare
                .split(|&byte| byte == b',')
                .find_map(|attribute| attribute.strip_prefix(b"r="))
                .expect("a challenged message has r=");
            assert!(
                nonce.as_bytes().starts_with(client_nonce) && nonce.len() > client_nonce.len(),
                "the server's nonce does not extend the client's"
            );
            if bare.starts_with(b"n=alice,") {
                let salt = BASE64.encode(&users.keys(scram).credential.salt);
                let expected_tail = format!(",s={salt},i={SCRAM_ITERATIONS_MIN}");
                assert!(
                    server_first.ends_with(&expected_tail),
                    "the known user's challenge does not carry their salt and iterations"
                );
            }
            assert!(!server.is_done());
            Exchange::ScramFinal {
                client_first: message.to_vec(),
                server_first,
            }
        }
        Ok(Step::Done { .. }) => panic!("SCRAM ended in its first round"),
        Err(error) => {
            assert_ne!(
                error,
                SaslError::Finished,
                "a first message was refused as late"
            );
            Exchange::Ended {
                authenticated: false,
            }
        }
    }
}

/// SCRAM's second round: the end, `Done` only for a proof the password
/// made, with the server's signature of what the client signed; `Done`
/// for certain when the exchange is `plain_valid`.
fn scram_final_round(
    server: &mut SaslServer,
    users: &KnownUser,
    client_final: ClientFinal,
    plain_valid: bool,
) -> Exchange {
    match server.step(&client_final.message, users) {
        Ok(Step::Done {
            principal,
            final_message,
        }) => {
            let expected = client_final
                .expected_server_final
                .expect("SCRAM authenticated a proof not made from the password");
            assert_eq!(principal, KafkaPrincipal::user(USER));
            assert_eq!(final_message, expected, "the server signed something else");
            assert!(server.is_done());
            Exchange::Ended {
                authenticated: true,
            }
        }
        Ok(Step::Challenge(_)) => panic!("SCRAM challenged twice"),
        Err(error) => {
            assert!(
                !plain_valid,
                "SCRAM refused the plain valid exchange: {error}"
            );
            assert_ne!(
                error,
                SaslError::Finished,
                "a final message was refused as late"
            );
            assert!(!server.is_done());
            Exchange::Ended {
                authenticated: false,
            }
        }
    }
}

/// A message after the end: refused as late, and the exchange stays as it
/// ended, authenticated or refused.
fn after_end(
    server: &mut SaslServer,
    users: &KnownUser,
    authenticated: bool,
    message: &[u8],
) -> Exchange {
    assert_eq!(server.step(message, users), Err(SaslError::Finished));
    assert_eq!(
        server.is_done(),
        authenticated,
        "a late message changed how the exchange ended"
    );
    Exchange::Ended { authenticated }
}

/// The client's final message from the fuzzer's `template`: `%r` is the
/// challenge's nonce, and a closing `,p=%p` is the password's proof over
/// the exchange (RFC 5802: `ClientKey XOR HMAC(StoredKey, AuthMessage)`).
fn client_final(
    users: &KnownUser,
    scram: ScramMechanism,
    client_first: &[u8],
    server_first: &str,
    template: &[u8],
) -> ClientFinal {
    let nonce = challenge_nonce(server_first).expect("a challenge starts with r=");
    let message = replace_all(template, NONCE_PLACEHOLDER, nonce.as_bytes());
    let Some(without_proof) = message.strip_suffix(PROOF_PLACEHOLDER) else {
        return ClientFinal {
            message,
            expected_server_final: None,
        };
    };
    let bare = client_first_bare(client_first).expect("a challenged message has a gs2 header");
    let auth_message: [&[u8]; 5] = [bare, b",", server_first.as_bytes(), b",", without_proof];
    let keys = users.keys(scram);
    let client_signature = hmac(scram, &keys.credential.stored_key, &auth_message);
    let proof: Vec<u8> = keys
        .client_key
        .iter()
        .zip(&client_signature)
        .map(|(key, signature)| key ^ signature)
        .collect();
    let server_signature = hmac(scram, &keys.credential.server_key, &auth_message);
    ClientFinal {
        message: [without_proof, b",p=", BASE64.encode(proof).as_bytes()].concat(),
        expected_server_final: Some(format!("v={}", BASE64.encode(server_signature)).into_bytes()),
    }
}

/// The nonce of a server-first message, `r=nonce,s=salt,i=iterations`.
fn challenge_nonce(server_first: &str) -> Option<&str> {
    server_first.strip_prefix("r=")?.split(',').next()
}

/// client-first-message-bare: what follows the gs2 header (`flag,authzid,`).
fn client_first_bare(client_first: &[u8]) -> Option<&[u8]> {
    client_first.splitn(3, |&byte| byte == b',').nth(2)
}

/// Whether `client_first` is `n,,n=alice,r=NONCE` with a short nonce of
/// letters and digits: a message every SCRAM server accepts.
fn is_plain_scram_first(client_first: &[u8]) -> bool {
    client_first
        .strip_prefix(b"n,,n=alice,r=")
        .is_some_and(|nonce| {
            (1..=64).contains(&nonce.len()) && nonce.iter().all(u8::is_ascii_alphanumeric)
        })
}
