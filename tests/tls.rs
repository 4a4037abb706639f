//! TLS listeners end to end: a broker started with Kafka's `listeners`,
//! `ssl.*` settings and certificates from `weir cert dev`, and librdkafka
//! (the `rdkafka` crate, linking OpenSSL) as the client over SSL and mTLS.
//!
//! What users rely on: a client with a trusted certificate produces and
//! consumes over SSL; each listener's clients are told that listener's
//! endpoints; a client whose certificate the broker does not trust, or that
//! presents none where one is required, is refused and the refusal is
//! logged; a changed certificate file is served to new connections without
//! dropping the ones open.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::security::{dev_certificates, send_numbered, values, wait_for_log};
use common::{Broker, CLIENT_TIMEOUT, consumer_config, producer_config};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Records each test produces.
const RECORDS: usize = 20;
/// How long a changed certificate may take to be served (the broker checks
/// its files each second).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// A client's TLS settings: trusting `ca`, presenting the client
/// certificate of `client` when given.
fn over_ssl(mut config: ClientConfig, ca: &Path, client: Option<&Path>) -> ClientConfig {
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.join("ca.crt").to_string_lossy())
        // A failed handshake is reported at once, not retried for minutes.
        .set("reconnect.backoff.max.ms", "1000");
    if let Some(client) = client {
        config
            .set(
                "ssl.certificate.location",
                client.join("client.crt").to_string_lossy(),
            )
            .set(
                "ssl.key.location",
                client.join("client.key").to_string_lossy(),
            );
    }
    config
}

/// A broker with a PLAINTEXT and an SSL listener, requiring client
/// certificates signed by `certs`' CA.
fn tls_broker(certs: &Path, extra_args: &[&str]) -> anyhow::Result<Broker> {
    let keystore = format!(
        "ssl.keystore.location={}",
        certs.join("broker.pem").display()
    );
    let truststore = format!("ssl.truststore.location={}", certs.join("ca.crt").display());
    let mut args = vec![
        "--default-partitions",
        "1",
        "--set",
        keystore.as_str(),
        "--set",
        truststore.as_str(),
        "--set",
        "ssl.client.auth=required",
    ];
    args.extend_from_slice(extra_args);
    Broker::start_with_listeners("PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", &args)
}

fn ssl_address(broker: &Broker) -> anyhow::Result<String> {
    Ok(broker
        .listener("SSL")
        .context("the broker printed no SSL listener")?
        .to_owned())
}

/// The port of every broker a client of `config` is told of.
fn advertised_ports(config: &ClientConfig) -> anyhow::Result<Vec<i32>> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(None, CLIENT_TIMEOUT)?;
    Ok(metadata.brokers().iter().map(|b| b.port()).collect())
}

fn port_of(address: &str) -> anyhow::Result<i32> {
    Ok(address.rsplit_once(':').context("no port")?.1.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_trusted_certificate_produces_and_consumes_over_ssl() -> anyhow::Result<()>
{
    let certs = tempfile::tempdir()?;
    dev_certificates(certs.path())?;
    let broker = tls_broker(
        certs.path(),
        &[
            "--set",
            "ssl.principal.mapping.rules=RULE:^CN=([^,]*).*$/$1/L",
            "--log-level",
            "info,weir_server=debug",
        ],
    )?;
    let ssl = ssl_address(&broker)?;
    let plain = broker
        .listener("PLAINTEXT")
        .context("no PLAINTEXT")?
        .to_owned();
    let secure = |config| over_ssl(config, certs.path(), Some(certs.path()));

    // Each listener's clients are told that listener's endpoint.
    assert_eq!(
        advertised_ports(&secure(consumer_config(&ssl)))?,
        vec![port_of(&ssl)?]
    );
    assert_eq!(
        advertised_ports(&consumer_config(&plain))?,
        vec![port_of(&plain)?]
    );

    let producer: FutureProducer = secure(producer_config(&ssl)).create()?;
    send_numbered(&producer, "over-ssl", "tls", RECORDS).await?;
    producer.flush(CLIENT_TIMEOUT)?;
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("tls-{i}")).collect();
    assert_eq!(
        values(&secure(consumer_config(&ssl)), "over-ssl")?,
        expected
    );
    // The same records, read in plaintext: one log behind both listeners.
    assert_eq!(values(&consumer_config(&plain), "over-ssl")?, expected);
    // The client certificate's name, mapped by the rules, is the principal.
    wait_for_log(&broker, "principal=User:client")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_missing_client_certificate_is_refused_and_logged() -> anyhow::Result<()> {
    let (certs, stranger) = (tempfile::tempdir()?, tempfile::tempdir()?);
    dev_certificates(certs.path())?;
    dev_certificates(stranger.path())?;
    let broker = tls_broker(certs.path(), &[])?;
    let ssl = ssl_address(&broker)?;

    // Trusting the broker, but presenting a certificate another CA signed.
    let untrusted = over_ssl(consumer_config(&ssl), certs.path(), Some(stranger.path()));
    let consumer: BaseConsumer = untrusted.create()?;
    let refused = consumer.fetch_metadata(None, Duration::from_secs(5));
    ensure!(
        refused.is_err(),
        "a client with an untrusted certificate was served"
    );
    wait_for_log(&broker, "TLS handshake failed")?;

    // No certificate at all, where one is required.
    let anonymous = over_ssl(consumer_config(&ssl), certs.path(), None);
    let consumer: BaseConsumer = anonymous.create()?;
    ensure!(
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_err(),
        "a client without a certificate was served where one is required"
    );

    // The broker still serves a trusted client.
    let trusted = over_ssl(consumer_config(&ssl), certs.path(), Some(certs.path()));
    advertised_ports(&trusted)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_served_without_dropping_open_connections() -> anyhow::Result<()> {
    let (certs, renewed) = (tempfile::tempdir()?, tempfile::tempdir()?);
    dev_certificates(certs.path())?;
    dev_certificates(renewed.path())?;
    // The broker reads its keystore from a file of its own, replaced below.
    let keystore_dir = tempfile::tempdir()?;
    let keystore: PathBuf = keystore_dir.path().join("broker.pem");
    std::fs::copy(certs.path().join("broker.pem"), &keystore)?;
    let keystore_setting = format!("ssl.keystore.location={}", keystore.display());
    let truststore = format!(
        "ssl.truststore.location={}",
        certs.path().join("ca.crt").display()
    );
    let broker = Broker::start_with_listeners(
        "SSL://127.0.0.1:0",
        &[
            "--default-partitions",
            "1",
            "--set",
            &keystore_setting,
            "--set",
            &truststore,
            "--set",
            "ssl.client.auth=required",
        ],
    )?;
    let ssl = ssl_address(&broker)?;
    let old_client = producer_config(&ssl);
    let old_client = over_ssl(old_client, certs.path(), Some(certs.path()));
    let producer: FutureProducer = old_client.create()?;
    send_numbered(&producer, "renewed", "before", RECORDS).await?;

    // Renew: a certificate from another CA, written beside and moved in
    // place as a renewal tool does.
    let staged = keystore_dir.path().join("broker.pem.new");
    std::fs::copy(renewed.path().join("broker.pem"), &staged)?;
    std::fs::rename(&staged, &keystore)?;

    // New connections get the new certificate: a client trusting only the
    // new CA (and presenting the old client certificate, which the
    // unchanged truststore still trusts) is served once it is reloaded.
    let new_client = over_ssl(consumer_config(&ssl), renewed.path(), Some(certs.path()));
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let consumer: BaseConsumer = new_client.clone().create()?;
        if consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok()
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the renewed certificate was not served within {RELOAD_TIMEOUT:?}\n{}",
            broker.stderr_tail()
        );
    }
    wait_for_log(&broker, "TLS certificates reloaded")?;

    // The connection opened before the renewal is still served.
    send_numbered(&producer, "renewed", "after", RECORDS).await?;
    let all = values(&new_client, "renewed")?;
    assert_eq!(all.len(), 2 * RECORDS, "{all:?}");
    assert_eq!(all.last().map(String::as_str), Some("after-19"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_ssl_clients_are_sent_to_every_brokers_ssl_listener() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    dev_certificates(certs.path())?;
    // Brokers reach each other on PLAINTEXT; clients come in on SSL.
    let keystore = format!(
        "ssl.keystore.location={}",
        certs.path().join("broker.pem").display()
    );
    let nodes = common::security::start_cluster(3, "SSL://127.0.0.1:0", &["--set", &keystore])?;
    let ssl: Vec<String> = nodes.iter().map(ssl_address).collect::<Result<_, _>>()?;
    let secure = |config| over_ssl(config, certs.path(), None);
    let bootstrap = ssl.join(",");
    let mut expected: Vec<i32> = ssl.iter().map(|a| port_of(a)).collect::<Result<_, _>>()?;
    expected.sort_unstable();
    common::wait_until(CLIENT_TIMEOUT, "every broker at its SSL listener", || {
        let mut ports = advertised_ports(&secure(consumer_config(&bootstrap)))?;
        ports.sort_unstable();
        Ok(ports == expected)
    })?;

    // Leaders spread over the brokers: every produce goes to a leader's SSL
    // listener, and the group's coordinator is found at its SSL listener.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        secure(consumer_config(&bootstrap)).create()?;
    let topic =
        rdkafka::admin::NewTopic::new("spread", 3, rdkafka::admin::TopicReplication::Fixed(3));
    for created in admin
        .create_topics(&[topic], &common::admin_options())
        .await?
    {
        created.map_err(|(name, e)| anyhow::anyhow!("cannot create {name}: {e}"))?;
    }
    let producer: FutureProducer = secure(producer_config(&bootstrap)).create()?;
    for i in 0..RECORDS {
        let value = format!("spread-{i}");
        let key = i.to_string();
        producer
            .send(
                FutureRecord::to("spread").key(&key).payload(&value),
                CLIENT_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("record {value} not delivered"))?;
    }
    let mut group = secure(consumer_config(&bootstrap));
    group
        .set("group.id", "over-ssl")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = group.create()?;
    consumer.subscribe(&["spread"])?;
    let mut seen = 0;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while seen < RECORDS && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            message?;
            seen += 1;
        }
    }
    assert_eq!(seen, RECORDS, "a group member over SSL read every record");
    // The commit goes to the coordinator found at its SSL listener.
    consumer.commit(&consumer.position()?, rdkafka::consumer::CommitMode::Sync)?;
    Ok(())
}
