//! ACLs end to end: a broker with `authorizer.class.name` set to Kafka's
//! StandardAuthorizer, SCRAM users on a SASL listener, and librdkafka (the
//! `rdkafka` crate) as the client being allowed and denied.
//!
//! What users rely on: a client with no ACL is refused each kind of
//! request with Kafka's error code (produce and fetch TOPIC_AUTHORIZATION_
//! FAILED, a group join GROUP_AUTHORIZATION_FAILED, topic creation
//! TOPIC_AUTHORIZATION_FAILED, a transactional producer TRANSACTIONAL_ID_
//! AUTHORIZATION_FAILED), each denial in the audit log; a prefixed ACL
//! grants a family of topics and a DENY wins over it; Metadata shows only
//! the topics a client may describe; the ACLs survive a restart; and on a
//! cluster an ACL made through one broker is enforced by every broker.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::raw::RawClient;
use common::security::{send_numbered, values, wait_for_log};
use common::{Broker, CLIENT_TIMEOUT, consumer_config, producer_config};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const PASSWORD: &str = "alice-secret";
const AUTHORIZER: &str =
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";

// Kafka's ACL codes.
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const READ: i8 = 3;
const WRITE: i8 = 4;
const DESCRIBE: i8 = 8;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

/// A broker enforcing ACLs, with a PLAINTEXT listener whose anonymous
/// clients are the operator (`super.users`) and a SASL_PLAINTEXT one for
/// the users.
fn acl_broker() -> anyhow::Result<Broker> {
    Broker::start_with_listeners(
        "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        &[
            "--default-partitions",
            "1",
            "--set",
            AUTHORIZER,
            "--set",
            "super.users=User:ANONYMOUS",
            "--set",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
        ],
    )
}

fn listener(broker: &Broker, name: &str) -> anyhow::Result<String> {
    Ok(broker
        .listener(name)
        .with_context(|| format!("no {name} listener"))?
        .to_owned())
}

/// `weir user create NAME` with SCRAM-SHA-512 and the tests' password.
fn create_user(bootstrap: &str, name: &str) -> anyhow::Result<()> {
    common::security::create_user(bootstrap, (name, PASSWORD), "SCRAM-SHA-512")
}

/// `config` as user `name` over SASL_PLAINTEXT with SCRAM-SHA-512.
fn as_user(mut config: ClientConfig, name: &str) -> ClientConfig {
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", name)
        .set("sasl.password", PASSWORD);
    config
}

/// One binding: (resource type, name, pattern type, operation, permission)
/// for `User:alice` from any host.
type Acl = (i8, &'static str, i8, i8, i8);

fn creation((resource_type, name, pattern, operation, permission): Acl) -> AclCreation {
    AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_static_str(name))
        .with_resource_pattern_type(pattern)
        .with_principal(StrBytes::from_static_str("User:alice"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(operation)
        .with_permission_type(permission)
}

/// CreateAcls through `bootstrap` (the operator's listener); every
/// creation must succeed.
fn create_acls(bootstrap: &str, acls: &[Acl]) -> anyhow::Result<()> {
    let mut raw = RawClient::connect(bootstrap)?;
    let request =
        CreateAclsRequest::default().with_creations(acls.iter().copied().map(creation).collect());
    let response = raw.send(&request, 3)?;
    for (acl, result) in acls.iter().zip(&response.results) {
        ensure!(
            result.error_code == 0,
            "creating {acl:?}: error {} {:?}",
            result.error_code,
            result.error_message
        );
    }
    Ok(())
}

/// Every binding the broker keeps, as DescribeAcls answers a filter
/// matching all of them.
fn describe_acls(bootstrap: &str) -> anyhow::Result<DescribeAclsResponse> {
    let mut raw = RawClient::connect(bootstrap)?;
    let request = DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    Ok(raw.send(&request, 3)?)
}

/// The error code a produce of one record to `topic` as alice ends with.
async fn produce_error(config: &ClientConfig, topic: &str) -> anyhow::Result<Option<KafkaError>> {
    let producer: FutureProducer = config.create()?;
    let sent = producer
        .send(
            FutureRecord::<(), _>::to(topic).payload("denied?"),
            CLIENT_TIMEOUT,
        )
        .await;
    Ok(sent.err().map(|(e, _)| e))
}

/// The first error `consumer` reports within the client timeout.
fn first_consumer_error(consumer: &BaseConsumer) -> anyhow::Result<KafkaError> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(e)) => return Ok(e),
            Some(Ok(m)) => bail!("a denied consumer read a record at offset {}", m.offset()),
            None => {}
        }
    }
    bail!("the consumer reported no error")
}

fn code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    error.rdkafka_error_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_acls_is_denied_each_kind_of_request_with_kafkas_codes()
-> anyhow::Result<()> {
    let broker = acl_broker()?;
    let plain = listener(&broker, "PLAINTEXT")?;
    let secured = listener(&broker, "SASL_PLAINTEXT")?;
    create_user(&plain, "alice")?;
    common::create_topic(&plain, "orders", 1, &[]).await?;
    send_numbered(
        &producer_config(&plain).create::<FutureProducer>()?,
        "orders",
        "by-operator",
        3,
    )
    .await?;

    // Produce with no ACL at all: the topic's metadata is refused
    // (librdkafka asks for it first), and the record fails.
    let denied = produce_error(&as_user(producer_config(&secured), "alice"), "orders").await?;
    assert_eq!(
        denied.as_ref().and_then(code),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "produce: {denied:?}"
    );
    wait_for_log(
        &broker,
        "principal=User:alice operation=DESCRIBE resource=TOPIC:orders",
    )?;
    // With DESCRIBE but no WRITE, the produce itself is refused. The
    // assign-only consumers below use the group `weir-e2e-unused` to find
    // their coordinator: alice may read it.
    create_acls(
        &plain,
        &[
            (TOPIC, "orders", LITERAL, DESCRIBE, ALLOW),
            (GROUP, "weir-e2e-unused", LITERAL, READ, ALLOW),
        ],
    )?;
    let denied = produce_error(&as_user(producer_config(&secured), "alice"), "orders").await?;
    assert_eq!(
        denied.as_ref().and_then(code),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "produce: {denied:?}"
    );
    wait_for_log(
        &broker,
        "principal=User:alice operation=WRITE resource=TOPIC:orders",
    )?;

    // Fetch: no READ on the topic.
    let consumer: BaseConsumer = as_user(consumer_config(&secured), "alice").create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("orders", 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let denied = first_consumer_error(&consumer)?;
    assert_eq!(
        code(&denied),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "fetch: {denied}"
    );
    drop(consumer);

    // Group join: READ on the topic and DESCRIBE on the group (so the
    // coordinator is found), but no READ on the group.
    create_acls(
        &plain,
        &[
            (TOPIC, "orders", LITERAL, READ, ALLOW),
            (GROUP, "readers", LITERAL, DESCRIBE, ALLOW),
        ],
    )?;
    let mut config = as_user(consumer_config(&secured), "alice");
    config.set("group.id", "readers");
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&["orders"])?;
    let denied = first_consumer_error(&consumer)?;
    assert_eq!(
        code(&denied),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "join: {denied}"
    );
    wait_for_log(&broker, "operation=READ resource=GROUP:readers")?;
    drop(consumer);
    // With READ on the topic, an assigned consumer now reads it.
    let read = values(&as_user(consumer_config(&secured), "alice"), "orders")?;
    assert_eq!(read, ["by-operator-0", "by-operator-1", "by-operator-2"]);

    // Topic creation: no CREATE on the cluster or the topic.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        as_user(consumer_config(&secured), "alice").create()?;
    let created = admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                "alices-own",
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &common::admin_options(),
        )
        .await?;
    assert_eq!(
        created
            .first()
            .and_then(|r| r.as_ref().err())
            .map(|(_, c)| *c),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "create: {created:?}"
    );

    // A transactional producer: no WRITE (nor DESCRIBE) on its id.
    let mut config = as_user(producer_config(&secured), "alice");
    config.set("transactional.id", "alices-txn");
    let producer: FutureProducer = config.create()?;
    let denied = producer
        .init_transactions(CLIENT_TIMEOUT)
        .err()
        .context("init_transactions succeeded without an ACL")?;
    assert_eq!(
        code(&denied),
        Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
        "init: {denied}"
    );
    wait_for_log(&broker, "resource=TRANSACTIONAL_ID:alices-txn")?;

    // Metadata for all topics shows alice only the topic she may read
    // (READ implies DESCRIBE), not the internal offsets topic.
    let listed = admin
        .inner()
        .fetch_metadata(None, CLIENT_TIMEOUT)?
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(listed, ["orders"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefixed_acl_grants_a_family_of_topics_a_deny_wins_and_acls_survive_a_restart()
-> anyhow::Result<()> {
    let mut broker = acl_broker()?;
    let plain = listener(&broker, "PLAINTEXT")?;
    create_user(&plain, "alice")?;
    for topic in ["orders-eu", "orders-us", "payments"] {
        common::create_topic(&plain, topic, 1, &[]).await?;
    }
    create_acls(
        &plain,
        &[
            (TOPIC, "orders-", PREFIXED, WRITE, ALLOW),
            (TOPIC, "orders-", PREFIXED, READ, ALLOW),
            (GROUP, "weir-e2e-unused", LITERAL, READ, ALLOW),
        ],
    )?;
    let secured = listener(&broker, "SASL_PLAINTEXT")?;
    // Idempotent: its producer id needs WRITE on some topic, which the
    // prefix gives.
    let mut config = as_user(producer_config(&secured), "alice");
    config.set("enable.idempotence", "true");
    let producer: FutureProducer = config.create()?;
    send_numbered(&producer, "orders-eu", "eu", 3).await?;
    send_numbered(&producer, "orders-us", "us", 3).await?;
    producer.flush(CLIENT_TIMEOUT)?;
    drop(producer);
    let denied = produce_error(&as_user(producer_config(&secured), "alice"), "payments").await?;
    assert_eq!(
        denied.as_ref().and_then(code),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "payments: {denied:?}"
    );
    let reader = as_user(consumer_config(&secured), "alice");
    assert_eq!(values(&reader, "orders-eu")?, ["eu-0", "eu-1", "eu-2"]);

    // A DENY of one member of the family wins over the prefix.
    create_acls(&plain, &[(TOPIC, "orders-us", LITERAL, WRITE, DENY)])?;
    let denied = produce_error(&as_user(producer_config(&secured), "alice"), "orders-us").await?;
    assert_eq!(
        denied.as_ref().and_then(code),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "orders-us after the DENY: {denied:?}"
    );

    // The ACLs are in the metadata: after a restart they are described
    // and enforced the same.
    let before = describe_acls(&plain)?;
    assert_eq!(before.error_code, 0);
    let count = |r: &DescribeAclsResponse| r.resources.iter().map(|r| r.acls.len()).sum::<usize>();
    assert_eq!(count(&before), 4);
    broker.restart()?;
    let plain = listener(&broker, "PLAINTEXT")?;
    let secured = listener(&broker, "SASL_PLAINTEXT")?;
    assert_eq!(describe_acls(&plain)?, before);
    let denied = produce_error(&as_user(producer_config(&secured), "alice"), "orders-us").await?;
    assert_eq!(
        denied.as_ref().and_then(code),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        produce_error(&as_user(producer_config(&secured), "alice"), "orders-eu").await?,
        None
    );

    // DeleteAcls removes what its filter matches, and says what it removed.
    let mut raw = RawClient::connect(&plain)?;
    let deleted = raw.send(
        &DeleteAclsRequest::default().with_filters(vec![
            DeleteAclsFilter::default()
                .with_resource_type_filter(TOPIC)
                .with_resource_name_filter(Some(StrBytes::from_static_str("orders-us")))
                .with_pattern_type_filter(LITERAL)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ]),
        3,
    )?;
    let removed: Vec<(i8, i8)> = deleted
        .filter_results
        .iter()
        .flat_map(|r| &r.matching_acls)
        .map(|m| (m.operation, m.permission_type))
        .collect();
    assert_eq!(removed, [(WRITE, DENY)]);
    assert_eq!(
        produce_error(&as_user(producer_config(&secured), "alice"), "orders-us").await?,
        None
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_requests_need_an_authorizer_and_alter_on_the_cluster() -> anyhow::Result<()> {
    // Without an authorizer Kafka answers SECURITY_DISABLED (54).
    let open = Broker::start(&[])?;
    let mut raw = RawClient::connect(&open.bootstrap())?;
    let response = raw.send(
        &CreateAclsRequest::default()
            .with_creations(vec![creation((TOPIC, "t", LITERAL, READ, ALLOW))]),
        3,
    )?;
    assert_eq!(response.results[0].error_code, 54);
    assert_eq!(describe_acls(&open.bootstrap())?.error_code, 54);

    // With one and no super user, the anonymous client may not change
    // ACLs (CLUSTER_AUTHORIZATION_FAILED, 31) nor describe them; a binding
    // that is not concrete is INVALID_REQUEST (42).
    let closed = Broker::start(&["--set", AUTHORIZER])?;
    let mut raw = RawClient::connect(&closed.bootstrap())?;
    let response = raw.send(
        &CreateAclsRequest::default()
            .with_creations(vec![creation((TOPIC, "t", LITERAL, READ, ALLOW))]),
        3,
    )?;
    assert_eq!(response.results[0].error_code, 31);
    assert_eq!(describe_acls(&closed.bootstrap())?.error_code, 31);
    wait_for_log(
        &closed,
        "principal=User:ANONYMOUS operation=ALTER resource=CLUSTER:kafka-cluster",
    )?;

    let admin = Broker::start(&["--set", AUTHORIZER, "--set", "super.users=User:ANONYMOUS"])?;
    let mut raw = RawClient::connect(&admin.bootstrap())?;
    let response = raw.send(
        &CreateAclsRequest::default().with_creations(vec![
            creation((TOPIC, "t", 2, READ, ALLOW)),
            creation((TOPIC, "", LITERAL, READ, ALLOW)),
            creation((4, "other-cluster", LITERAL, READ, ALLOW)),
            creation((TOPIC, "t", LITERAL, READ, ALLOW)),
        ]),
        3,
    )?;
    let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [42, 42, 42, 0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_made_through_one_broker_is_enforced_by_every_broker_of_a_cluster()
-> anyhow::Result<()> {
    // Brokers reach each other on PLAINTEXT as User:ANONYMOUS, the super
    // user; alice comes in on SASL.
    let nodes = common::security::start_cluster(
        3,
        "SASL_PLAINTEXT://127.0.0.1:0",
        &[
            "--set",
            AUTHORIZER,
            "--set",
            "super.users=User:ANONYMOUS",
            "--set",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
        ],
    )?;
    let plain: Vec<String> = nodes
        .iter()
        .map(|n| listener(n, "PLAINTEXT"))
        .collect::<Result<_, _>>()?;
    let secured: Vec<String> = nodes
        .iter()
        .map(|n| listener(n, "SASL_PLAINTEXT"))
        .collect::<Result<_, _>>()?;
    let secured = secured.join(",");
    create_user(&plain[0], "alice")?;
    let admin = common::admin(&plain.join(","))?;
    let topic =
        rdkafka::admin::NewTopic::new("audit", 3, rdkafka::admin::TopicReplication::Fixed(3));
    for created in admin
        .create_topics(&[topic], &common::admin_options())
        .await?
    {
        created.map_err(|(name, e)| anyhow::anyhow!("cannot create {name}: {e}"))?;
    }

    // A record to each partition (the leaders are spread over the
    // brokers): the outcome of each, as alice.
    let produce_each = || async {
        let producer: FutureProducer = as_user(producer_config(&secured), "alice").create()?;
        let mut codes = Vec::new();
        for partition in 0..3 {
            let sent = producer
                .send(
                    FutureRecord::<(), _>::to("audit")
                        .partition(partition)
                        .payload("entry"),
                    CLIENT_TIMEOUT,
                )
                .await;
            codes.push(sent.err().and_then(|(e, _)| code(&e)));
        }
        anyhow::Ok(codes)
    };
    let denied = Some(RDKafkaErrorCode::TopicAuthorizationFailed);
    assert_eq!(produce_each().await?, [denied; 3]);

    // Made through broker 1, the ACL reaches every broker through the
    // quorum; each applies it once it has the change.
    create_acls(&plain[0], &[(TOPIC, "audit", LITERAL, WRITE, ALLOW)])?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        let codes = produce_each().await?;
        if codes == [None; 3] {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "some broker still refuses alice: {codes:?}"
        );
    }
    // Described through broker 3, deleted through broker 2.
    let described = describe_acls(&plain[2])?;
    assert_eq!(described.resources.len(), 1);
    let mut raw = RawClient::connect(&plain[1])?;
    raw.send(
        &DeleteAclsRequest::default().with_filters(vec![
            DeleteAclsFilter::default()
                .with_resource_type_filter(TOPIC)
                .with_resource_name_filter(Some(StrBytes::from_static_str("audit")))
                .with_pattern_type_filter(1)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
        ]),
        3,
    )?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        let codes = produce_each().await?;
        if codes == [denied; 3] {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "some broker still lets alice write: {codes:?}"
        );
    }
    Ok(())
}
