//! SASL listeners end to end: users made with `weir user create`, and
//! librdkafka (the `rdkafka` crate) authenticating with SCRAM-SHA-512,
//! SCRAM-SHA-256 and PLAIN over SASL_PLAINTEXT and SASL_SSL.
//!
//! What users rely on: the right password gets a session that produces and
//! consumes; a wrong one is refused with SASL_AUTHENTICATION_FAILED, the
//! refusal logged; nothing but ApiVersions and the SASL requests is served
//! before authentication; with `connections.max.reauth.ms` a client
//! re-authenticates on its connection and keeps working, and a connection
//! that does not is closed once its session ends.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::raw::RawClient;
use common::security::{dev_certificates, send_numbered, values, wait_for_log};
use common::{Broker, CLIENT_TIMEOUT, consumer_config, producer_config};
use kafka_protocol::messages::{MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const RECORDS: usize = 10;
const PASSWORD: &str = "alice-secret";

/// A broker with a PLAINTEXT listener (for `weir user`) and a
/// SASL_PLAINTEXT one serving every mechanism.
fn sasl_broker(extra: &[&str]) -> anyhow::Result<Broker> {
    let mut args = vec![
        "--default-partitions",
        "1",
        "--set",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "--log-level",
        "info,weir_server=debug",
    ];
    args.extend_from_slice(extra);
    Broker::start_with_listeners(
        "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        &args,
    )
}

/// `weir user create` with the tests' password.
fn create_user(bootstrap: &str, name: &str, mechanism: &str) -> anyhow::Result<()> {
    common::security::create_user(bootstrap, (name, PASSWORD), mechanism)
}

fn sasl(mut config: ClientConfig, mechanism: &str, password: &str) -> ClientConfig {
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", "alice")
        .set("sasl.password", password)
        .set("reconnect.backoff.max.ms", "1000");
    config
}

async fn produce(config: &ClientConfig, topic: &str, tag: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = config.create()?;
    send_numbered(&producer, topic, tag, RECORDS).await?;
    producer.flush(CLIENT_TIMEOUT)?;
    Ok(())
}

fn listener(broker: &Broker, name: &str) -> anyhow::Result<String> {
    Ok(broker
        .listener(name)
        .with_context(|| format!("no {name} listener"))?
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_authenticates_with_each_mechanism_and_produces_and_consumes() -> anyhow::Result<()>
{
    let broker = sasl_broker(&[])?;
    let plain = listener(&broker, "PLAINTEXT")?;
    let secured = listener(&broker, "SASL_PLAINTEXT")?;
    create_user(&plain, "alice", "SCRAM-SHA-512")?;
    create_user(&plain, "alice", "SCRAM-SHA-256")?;
    for (mechanism, topic) in [
        ("SCRAM-SHA-512", "scram-512"),
        ("SCRAM-SHA-256", "scram-256"),
        ("PLAIN", "plain"),
    ] {
        produce(
            &sasl(producer_config(&secured), mechanism, PASSWORD),
            topic,
            mechanism,
        )
        .await?;
        let read = values(&sasl(consumer_config(&secured), mechanism, PASSWORD), topic)?;
        let expected: Vec<String> = (0..RECORDS).map(|i| format!("{mechanism}-{i}")).collect();
        assert_eq!(read, expected, "over {mechanism}");
    }
    wait_for_log(&broker, "SASL authenticated")?;
    wait_for_log(&broker, "principal=User:alice")?;
    Ok(())
}

#[test]
fn a_wrong_password_is_refused_and_logged_and_nothing_is_served_before_authentication()
-> anyhow::Result<()> {
    let broker = sasl_broker(&[])?;
    let plain = listener(&broker, "PLAINTEXT")?;
    let secured = listener(&broker, "SASL_PLAINTEXT")?;
    create_user(&plain, "alice", "SCRAM-SHA-512")?;

    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let consumer: BaseConsumer =
            sasl(consumer_config(&secured), mechanism, "wrong").create()?;
        let refused = consumer.fetch_metadata(None, Duration::from_secs(5));
        ensure!(
            refused.is_err(),
            "a wrong password was served over {mechanism}"
        );
    }
    wait_for_log(&broker, "SASL authentication failed")?;

    // A request before authentication is not answered: the connection closes.
    let mut raw = RawClient::connect(&secured)?;
    let unanswered = raw.call(&MetadataRequest::default().with_topics(None), 12);
    ensure!(
        unanswered.is_err(),
        "Metadata was answered before authentication"
    );

    // The wrong password, sent by hand, gets Kafka's error code.
    let mut raw = RawClient::connect(&secured)?;
    let handshake = raw.call(
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        1,
    )?;
    assert_eq!(handshake.error_code, 0);
    let answer = raw.call(
        &SaslAuthenticateRequest::default().with_auth_bytes(b"\0alice\0wrong".to_vec().into()),
        2,
    )?;
    assert_eq!(answer.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    // A mechanism that is not enabled.
    let mut raw = RawClient::connect(&secured)?;
    let handshake = raw.call(
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
        1,
    )?;
    assert_eq!(handshake.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_connections_max_reauth_ms_re_authenticates_or_is_closed()
-> anyhow::Result<()> {
    const LIFETIME_MS: u64 = 1_500;
    let lifetime = format!("connections.max.reauth.ms={LIFETIME_MS}");
    let broker = sasl_broker(&["--set", &lifetime])?;
    let plain = listener(&broker, "PLAINTEXT")?;
    let secured = listener(&broker, "SASL_PLAINTEXT")?;
    create_user(&plain, "alice", "SCRAM-SHA-512")?;

    // librdkafka re-authenticates (KIP-368) before each session ends, on the
    // same connection: a producer working across several lifetimes loses
    // nothing.
    let config = sasl(producer_config(&secured), "SCRAM-SHA-512", PASSWORD);
    let producer: FutureProducer = config.create()?;
    let until = Instant::now() + Duration::from_millis(4 * LIFETIME_MS);
    let mut sent = 0;
    while Instant::now() < until {
        let value = format!("r-{sent}");
        producer
            .send(
                FutureRecord::<(), _>::to("reauth").payload(&value),
                CLIENT_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("record {value} not delivered"))?;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = values(
        &sasl(consumer_config(&secured), "SCRAM-SHA-512", PASSWORD),
        "reauth",
    )?;
    assert_eq!(read.len(), sent);
    wait_for_log(&broker, "reauthentication=true")?;

    // A client that authenticates once and lets its session run out is
    // closed at its next request.
    let mut raw = RawClient::connect(&secured)?;
    raw.call(
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        1,
    )?;
    let answer = raw.call(
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(format!("\0alice\0{PASSWORD}").into_bytes().into()),
        2,
    )?;
    assert_eq!(answer.error_code, 0);
    assert_eq!(answer.session_lifetime_ms, i64::try_from(LIFETIME_MS)?);
    raw.call(&MetadataRequest::default().with_topics(None), 12)?;
    // The session's end is what this waits for.
    std::thread::sleep(Duration::from_millis(LIFETIME_MS + 500));
    let after = raw.call(&MetadataRequest::default().with_topics(None), 12);
    ensure!(
        after.is_err(),
        "a request after the session ended was answered"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_sasl_ssl_serves_a_client_that_trusts_the_broker() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    dev_certificates(certs.path())?;
    let keystore = format!(
        "ssl.keystore.location={}",
        certs.path().join("broker.pem").display()
    );
    let broker = Broker::start_with_listeners(
        "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        &[
            "--default-partitions",
            "1",
            "--set",
            &keystore,
            "--set",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
        ],
    )?;
    let plain = listener(&broker, "PLAINTEXT")?;
    let secured = listener(&broker, "SASL_SSL")?;
    create_user(&plain, "alice", "SCRAM-SHA-512")?;
    let over_ssl = |config: ClientConfig| {
        let mut config = sasl(config, "SCRAM-SHA-512", PASSWORD);
        config.set("security.protocol", "sasl_ssl").set(
            "ssl.ca.location",
            certs.path().join("ca.crt").to_string_lossy(),
        );
        config
    };
    produce(&over_ssl(producer_config(&secured)), "secured", "s").await?;
    let read = values(&over_ssl(consumer_config(&secured)), "secured")?;
    assert_eq!(read.len(), RECORDS);
    Ok(())
}
