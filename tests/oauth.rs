//! SASL/OAUTHBEARER end to end: a broker checking JWTs against a JWKS made
//! in the test (an EC P-256 key from rcgen), and librdkafka (the `rdkafka`
//! crate) handing it tokens signed with `jsonwebtoken` from its
//! `generate_oauth_token` callback.
//!
//! What users rely on: a valid token produces and consumes, and its
//! session is re-authenticated on the connection (KIP-368); an expired
//! token, a token for another audience, and tokens not signed by a key of
//! the JWKS are refused, the client told (an authentication error, not a
//! hang) and the broker logging why; a JWKS served over http is fetched,
//! and fetched again when a token names a key it has not seen; a broker
//! whose JWKS cannot be loaded does not start.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use common::security::wait_for_log;
use common::{Broker, CLIENT_TIMEOUT, consumer_config, producer_config};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.weir.test";
const AUDIENCE: &str = "weir";
const RECORDS: usize = 10;
/// How long a refused client is given to report its authentication error.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A signing key and its JWK.
struct SigningKey {
    key: EncodingKey,
    kid: String,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> anyhow::Result<Self> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let point = pair.public_key_raw();
        let (x, y) = (
            point.get(1..33).context("short point")?,
            point.get(33..65).context("short point")?,
        );
        Ok(SigningKey {
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            kid: kid.to_owned(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": BASE64URL.encode(x), "y": BASE64URL.encode(y),
            }),
        })
    }

    /// This key's signature over `claims`, naming `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    let keys: Vec<&Value> = keys.iter().map(|key| &key.jwk).collect();
    json!({ "keys": keys }).to_string()
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A token's claims: `alice`, for this broker, valid for an hour.
fn claims() -> Value {
    let now = now_seconds();
    json!({ "sub": "alice", "iss": ISSUER, "aud": [AUDIENCE], "iat": now, "exp": now + 3600 })
}

type Signer = Box<dyn Fn() -> anyhow::Result<String> + Send + Sync>;

/// A client context whose tokens `sign` makes, and that keeps the errors
/// librdkafka reports.
struct Bearer {
    sign: Signer,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Bearer {
    fn new(sign: impl Fn() -> anyhow::Result<String> + Send + Sync + 'static) -> Self {
        Bearer {
            sign: Box::new(sign),
            errors: Arc::default(),
        }
    }
}

impl ClientContext for Bearer {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let token = (self.sign)().map_err(|e| e.to_string())?;
        // librdkafka refreshes at 80% of this; the token's own exp is what
        // the broker checks (an expired token still gets a future one here,
        // as librdkafka refuses to send a token it thinks expired).
        let lifetime_ms = i64::try_from((now_seconds() + 3600) * 1000)?;
        Ok(OAuthToken {
            token,
            principal_name: "alice".into(),
            lifetime_ms,
        })
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for Bearer {}

fn oauth(mut config: ClientConfig) -> ClientConfig {
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "OAUTHBEARER");
    config
}

/// A broker whose SASL_PLAINTEXT listener serves OAUTHBEARER with the JWKS
/// at `url`.
fn oauth_broker(url: &str, extra: &[&str]) -> anyhow::Result<Broker> {
    let jwks = format!("sasl.oauthbearer.jwks.endpoint.url={url}");
    let mut args = vec![
        "--default-partitions",
        "1",
        "--set",
        "sasl.enabled.mechanisms=OAUTHBEARER",
        "--set",
        &jwks,
        "--set",
        "sasl.oauthbearer.expected.audience=kafka,weir",
        "--set",
        "sasl.oauthbearer.expected.issuer=https://issuer.weir.test",
        "--log-level",
        "info,weir_server=debug",
    ];
    args.extend_from_slice(extra);
    Broker::start_with_listeners("SASL_PLAINTEXT://127.0.0.1:0", &args)
}

fn write_jwks(dir: &Path, keys: &[&SigningKey]) -> anyhow::Result<PathBuf> {
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(keys))?;
    Ok(path)
}

fn listener(broker: &Broker) -> anyhow::Result<String> {
    Ok(broker
        .listener("SASL_PLAINTEXT")
        .context("no SASL_PLAINTEXT listener")?
        .to_owned())
}

/// Produce `TAG-0`... to `topic` with tokens from `sign`, one record
/// every `every`.
async fn produce(
    bootstrap: &str,
    topic: &str,
    tag: &str,
    every: Duration,
    sign: impl Fn() -> anyhow::Result<String> + Send + Sync + 'static,
) -> anyhow::Result<usize> {
    let producer: FutureProducer<Bearer> =
        oauth(producer_config(bootstrap)).create_with_context(Bearer::new(sign))?;
    for i in 0..RECORDS {
        let value = format!("{tag}-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&value),
                CLIENT_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("record {value} not delivered"))?;
        tokio::time::sleep(every).await;
    }
    producer.flush(CLIENT_TIMEOUT)?;
    Ok(RECORDS)
}

/// The first `count` values of partition 0 of `topic`, read with tokens
/// from `sign`.
fn consume(
    bootstrap: &str,
    topic: &str,
    count: usize,
    sign: impl Fn() -> anyhow::Result<String> + Send + Sync + 'static,
) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer<Bearer> =
        oauth(consumer_config(bootstrap)).create_with_context(Bearer::new(sign))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut values = Vec::new();
    while values.len() < count {
        ensure!(
            Instant::now() < deadline,
            "read {} of {count} records",
            values.len()
        );
        // Polling also serves librdkafka's token refresh.
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(err)) => bail!("consumer error: {err}"),
            Some(Ok(message)) => values
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()),
        }
    }
    Ok(values)
}

/// A client with tokens from `sign` is refused: it reports an
/// authentication error within [`REFUSAL_TIMEOUT`], and the broker logs
/// `reason`.
fn assert_refused(
    broker: &Broker,
    sign: impl Fn() -> anyhow::Result<String> + Send + Sync + 'static,
    reason: &str,
) -> anyhow::Result<()> {
    let bootstrap = listener(broker)?;
    let mut config = oauth(consumer_config(&bootstrap));
    // One attempt per case: each refusal counts toward the address's
    // failures per minute.
    config
        .set("reconnect.backoff.ms", "10000")
        .set("reconnect.backoff.max.ms", "10000");
    let consumer: BaseConsumer<Bearer> = config.create_with_context(Bearer::new(sign))?;
    let errors = consumer.context().errors.clone();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("refused", 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    loop {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            bail!("a client whose token should be refused ({reason}) read a record");
        }
        let seen = errors
            .lock()
            .map(|errors| {
                errors
                    .iter()
                    .any(|e| e.to_lowercase().contains("authentication"))
            })
            .unwrap_or(false);
        if seen {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no authentication error within {REFUSAL_TIMEOUT:?} ({reason}); errors: {:?}",
            errors.lock().map(|e| e.clone()).unwrap_or_default()
        );
    }
    wait_for_log(broker, reason)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_produces_consumes_and_re_authenticates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = Arc::new(SigningKey::new("test-key")?);
    let path = write_jwks(dir.path(), &[&key])?;
    // Sessions of 1.5 s: librdkafka re-authenticates with a fresh token.
    let broker = oauth_broker(
        &format!("file:{}", path.display()),
        &["--set", "connections.max.reauth.ms=1500"],
    )?;
    let bootstrap = listener(&broker)?;
    let signer = key.clone();
    let sent = produce(
        &bootstrap,
        "orders",
        "o",
        Duration::from_millis(400),
        move || signer.sign_as(&signer.kid, &claims()),
    )
    .await?;
    let signer = key.clone();
    let read = consume(&bootstrap, "orders", sent, move || {
        signer.sign_as(&signer.kid, &claims())
    })?;
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("o-{i}")).collect();
    assert_eq!(read, expected);
    wait_for_log(&broker, "mechanism=OAUTHBEARER")?;
    wait_for_log(&broker, "principal=User:alice")?;
    wait_for_log(&broker, "reauthentication=true")?;
    Ok(())
}

#[test]
fn expired_wrong_audience_and_foreign_tokens_are_refused_and_logged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = Arc::new(SigningKey::new("test-key")?);
    let path = write_jwks(dir.path(), &[&key])?;
    let broker = oauth_broker(&format!("file:{}", path.display()), &[])?;

    let signer = key.clone();
    assert_refused(
        &broker,
        move || {
            let hour_ago = now_seconds() - 3600;
            let expired = json!({
                "sub": "alice", "iss": ISSUER, "aud": AUDIENCE,
                "iat": hour_ago - 60, "exp": hour_ago,
            });
            signer.sign_as(&signer.kid, &expired)
        },
        "token refused: expired",
    )?;
    let signer = key.clone();
    assert_refused(
        &broker,
        move || {
            let mut claims = claims();
            claims["aud"] = json!(["some-other-service"]);
            signer.sign_as(&signer.kid, &claims)
        },
        "wrong audience",
    )?;
    let stranger = Arc::new(SigningKey::new("stranger")?);
    let signer = stranger.clone();
    assert_refused(
        &broker,
        move || signer.sign_as(&signer.kid, &claims()),
        "unknown kid",
    )?;
    // The stranger's signature under the broker's key id.
    let signer = stranger.clone();
    assert_refused(
        &broker,
        move || signer.sign_as("test-key", &claims()),
        "bad signature",
    )?;
    ensure!(
        !broker
            .stderr_tail()
            .contains(&key.sign_as("test-key", &claims())?[..40]),
        "a token reached the log"
    );
    Ok(())
}

/// Serves `body` at `/jwks` over http on 127.0.0.1 until the test ends.
async fn serve_jwks(body: Arc<Mutex<String>>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body = body.lock().map(|b| b.clone()).unwrap_or_default();
            async move { body }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{address}/jwks"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_and_fetched_again_for_a_new_key() -> anyhow::Result<()> {
    let first = Arc::new(SigningKey::new("first")?);
    let rotated = Arc::new(SigningKey::new("rotated")?);
    let body = Arc::new(Mutex::new(jwks(&[&first])));
    let url = serve_jwks(body.clone()).await?;
    let broker = oauth_broker(&url, &[])?;
    let bootstrap = listener(&broker)?;
    wait_for_log(&broker, "OAUTHBEARER JWKS loaded")?;

    let signer = first.clone();
    produce(&bootstrap, "keys", "first", Duration::ZERO, move || {
        signer.sign_as(&signer.kid, &claims())
    })
    .await?;
    // The identity provider rotates its key: a token signed with the new
    // one makes the broker fetch the JWKS again.
    if let Ok(mut served) = body.lock() {
        *served = jwks(&[&first, &rotated]);
    }
    let signer = rotated.clone();
    produce(&bootstrap, "keys", "rotated", Duration::ZERO, move || {
        signer.sign_as(&signer.kid, &claims())
    })
    .await?;
    wait_for_log(&broker, "OAUTHBEARER JWKS fetched for an unknown kid")?;
    let signer = rotated.clone();
    let read = consume(&bootstrap, "keys", 2 * RECORDS, move || {
        signer.sign_as(&signer.kid, &claims())
    })?;
    assert_eq!(read.len(), 2 * RECORDS);
    Ok(())
}

#[test]
fn a_broker_whose_jwks_cannot_be_loaded_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.json");
    let Err(refused) = oauth_broker(&format!("file:{}", missing.display()), &[]) else {
        bail!("the broker started without its JWKS");
    };
    let text = format!("{refused:#}");
    ensure!(
        text.contains("sasl.oauthbearer.jwks.endpoint.url") && text.contains("missing.json"),
        "the refusal does not say what to fix: {text}"
    );
    Ok(())
}
