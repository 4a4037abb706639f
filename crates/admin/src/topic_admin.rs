//! Creating, altering, growing and deleting topics (what `weir topic
//! create`, `alter-config`, `add-partitions` and `delete` do), each sent to
//! the broker in-process as the Kafka request the CLI sends (CreateTopics,
//! IncrementalAlterConfigs, CreatePartitions, DeleteTopics), so validation,
//! forwarding to the controller and the broker's own logs are the same as
//! for any Kafka client:
//!
//! | route | body | answer |
//! |-------|------|--------|
//! | `POST /v1/topics` | `{"name", "partitions"?, "replication_factor"?, "configs"?: {key: value}, "validate_only"?}` | 201 `{"topic", "created", "validate_only", "topic_id", "partitions", "replication_factor"}` (200 and `created: false` for `validate_only`) |
//! | `PATCH /v1/topics/{topic}/configs` | `{"set"?: {key: value}, "delete"?: [key]}` | `{"topic", "set": [key], "deleted": [key]}` |
//! | `POST /v1/topics/{topic}/partitions` | `{"count": N}`, the partition count after the change | `{"topic", "partitions": N}` |
//! | `DELETE /v1/topics/{topic}` | none | `{"topic", "deleted": true}` |
//!
//! Without `partitions` or `replication_factor` the broker's defaults apply
//! (`num.partitions`, `default.replication.factor`); a config value may be
//! a JSON string, number or boolean. Bounds: `partitions` and `count` 1 to
//! [`PARTITIONS_MAX`], `replication_factor` 1 to 32,767, at most
//! [`CONFIGS_MAX`] configs set and deleted in one request, and the broker
//! is given [`ADMIN_TIMEOUT_MS`] to finish (within the API's 10 s).
//!
//! A Kafka error the broker answers with is an HTTP status ([`refused`]),
//! with the broker's message and Kafka's name of the error in
//! `kafka_error`: `TOPIC_ALREADY_EXISTS` 409, `UNKNOWN_TOPIC_OR_PARTITION`
//! 404, `INVALID_*` and `POLICY_VIOLATION` 400, `NOT_CONTROLLER` and
//! timeouts 503. Every write is logged at info: operation, target, outcome.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, patch, post};
use axum::{Json, Router};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};

use crate::kafka::{ask, expect_response};
use crate::{AdminError, AdminState};

/// The most partitions a topic may be created with or grown to (as `weir
/// topic`).
pub(crate) const PARTITIONS_MAX: i32 = 100_000;
/// The most configs one request sets and deletes (as `weir topic`).
pub(crate) const CONFIGS_MAX: usize = 1_000;
/// How long the broker may take to create or delete topics or partitions
/// before it answers (the requests' `timeout_ms`): inside the API's
/// [`crate::REQUEST_TIMEOUT`].
pub(crate) const ADMIN_TIMEOUT_MS: i32 = 8_000;
/// ConfigResource type of a topic in the config APIs.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// The versions sent: the newest each, as `weir topic` sends them.
const CREATE_TOPICS_VERSION: i16 = 7;
const INCREMENTAL_ALTER_CONFIGS_VERSION: i16 = 1;
const CREATE_PARTITIONS_VERSION: i16 = 3;
const DELETE_TOPICS_VERSION: i16 = 5;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/topics", post(create_route))
        .route("/v1/topics/{topic}", delete(delete_route))
        .route("/v1/topics/{topic}/configs", patch(alter_route))
        .route("/v1/topics/{topic}/partitions", post(add_partitions_route))
}

/// A config value as JSON may give it: text, a number or a boolean.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ConfigValue {
    /// `"86400000"`.
    Text(String),
    /// `86400000`.
    Number(serde_json::Number),
    /// `true`.
    Bool(bool),
}

impl ConfigValue {
    /// The value as Kafka's configs spell it.
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Number(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

/// `POST /v1/topics`' body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTopic {
    /// The topic's name.
    pub name: String,
    /// Its partition count; the broker's `num.partitions` when absent.
    pub partitions: Option<i32>,
    /// Copies of each partition; the broker's `default.replication.factor`
    /// when absent.
    pub replication_factor: Option<i32>,
    /// Topic configs.
    #[serde(default)]
    pub configs: BTreeMap<String, ConfigValue>,
    /// Only check that the topic could be created.
    #[serde(default)]
    pub validate_only: bool,
}

/// What `POST /v1/topics` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicCreated {
    /// The topic.
    pub topic: String,
    /// It was created (false for `validate_only`).
    pub created: bool,
    /// Only checked.
    pub validate_only: bool,
    /// Its topic id, in Kafka's base64 text; `None` for `validate_only`.
    pub topic_id: Option<String>,
    /// Its partition count.
    pub partitions: i32,
    /// Its replication factor.
    pub replication_factor: i16,
}

/// `PATCH /v1/topics/{topic}/configs`' body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlterConfigs {
    /// Configs to set.
    #[serde(default)]
    pub set: BTreeMap<String, ConfigValue>,
    /// Configs to remove, so the broker's defaults apply again.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// What `PATCH /v1/topics/{topic}/configs` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigsAltered {
    /// The topic.
    pub topic: String,
    /// The configs set.
    pub set: Vec<String>,
    /// The configs removed.
    pub deleted: Vec<String>,
}

/// `POST /v1/topics/{topic}/partitions`' body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddPartitions {
    /// The partition count after the change.
    pub count: i32,
}

/// What `POST /v1/topics/{topic}/partitions` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionsAdded {
    /// The topic.
    pub topic: String,
    /// Its partition count now.
    pub partitions: i32,
}

/// What `DELETE /v1/topics/{topic}` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicDeleted {
    /// The topic.
    pub topic: String,
    /// Always true: a refusal is an error.
    pub deleted: bool,
}

async fn create_route(
    State(state): State<AdminState>,
    body: Result<Json<CreateTopic>, JsonRejection>,
) -> Result<(StatusCode, Json<TopicCreated>), AdminError> {
    let Json(input) = body?;
    let created = create_topic(&state, input).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created)))
}

async fn alter_route(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    body: Result<Json<AlterConfigs>, JsonRejection>,
) -> Result<Json<ConfigsAltered>, AdminError> {
    let (Path(topic), Json(input)) = (topic?, body?);
    Ok(Json(alter_topic_configs(&state, &topic, input).await?))
}

async fn add_partitions_route(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    body: Result<Json<AddPartitions>, JsonRejection>,
) -> Result<Json<PartitionsAdded>, AdminError> {
    let (Path(topic), Json(input)) = (topic?, body?);
    Ok(Json(add_partitions(&state, &topic, input.count).await?))
}

async fn delete_route(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicDeleted>, AdminError> {
    let Path(topic) = topic?;
    Ok(Json(delete_topic(&state, &topic).await?))
}

/// Create a topic (CreateTopics), or only check it could be created.
pub(crate) async fn create_topic(
    state: &AdminState,
    input: CreateTopic,
) -> Result<TopicCreated, AdminError> {
    let name = input.name.clone();
    let outcome = async {
        if input.configs.len() > CONFIGS_MAX {
            return Err(AdminError::bad_request(format!(
                "{} configs, at most {CONFIGS_MAX}",
                input.configs.len()
            )));
        }
        let partitions = match input.partitions {
            Some(n) if !(1..=PARTITIONS_MAX).contains(&n) => {
                return Err(AdminError::bad_request(format!(
                    "partitions is {n}, from 1 to {PARTITIONS_MAX}"
                )));
            }
            Some(n) => n,
            None => -1,
        };
        let replication_factor = match input.replication_factor {
            Some(n) => i16::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                AdminError::bad_request(format!(
                    "replication_factor is {n}, from 1 to {}",
                    i16::MAX
                ))
            })?,
            None => -1,
        };
        let topic = CreatableTopic::default()
            .with_name(TopicName(text(&input.name)))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                input
                    .configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(text(key))
                            .with_value(Some(text(&value.text())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_validate_only(input.validate_only);
        let response = ask(&state.broker, request, CREATE_TOPICS_VERSION).await?;
        let response = expect_response!(response, CreateTopics)?;
        let result = response
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| crate::kafka::internal("CreateTopics answered no topic"))?;
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("cannot create topic {}", input.name),
        )?;
        Ok(TopicCreated {
            topic: input.name.clone(),
            created: !input.validate_only,
            validate_only: input.validate_only,
            topic_id: (!input.validate_only && !result.topic_id.is_nil())
                .then(|| weir_metadata::uuid_text(result.topic_id)),
            partitions: result.num_partitions,
            replication_factor: result.replication_factor,
        })
    }
    .await;
    logged("create topic", &name, outcome)
}

/// Set and remove a topic's configs (IncrementalAlterConfigs); the others
/// stay as they are.
pub(crate) async fn alter_topic_configs(
    state: &AdminState,
    topic: &str,
    input: AlterConfigs,
) -> Result<ConfigsAltered, AdminError> {
    let outcome = async {
        if input.set.len() + input.delete.len() > CONFIGS_MAX {
            return Err(AdminError::bad_request(format!(
                "{} configs set and deleted, at most {CONFIGS_MAX}",
                input.set.len() + input.delete.len()
            )));
        }
        if input.set.is_empty() && input.delete.is_empty() {
            return Err(AdminError::bad_request(
                "nothing to alter: give configs to set or delete",
            ));
        }
        let mut changes: Vec<AlterableConfig> = input
            .set
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(text(key))
                    .with_config_operation(OP_SET)
                    .with_value(Some(text(&value.text())))
            })
            .collect();
        changes.extend(input.delete.iter().map(|key| {
            AlterableConfig::default()
                .with_name(text(key))
                .with_config_operation(OP_DELETE)
                .with_value(None)
        }));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(text(topic))
                .with_configs(changes),
        ]);
        let response = ask(&state.broker, request, INCREMENTAL_ALTER_CONFIGS_VERSION).await?;
        let response = expect_response!(response, IncrementalAlterConfigs)?;
        for result in &response.responses {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("cannot alter the configs of topic {topic}"),
            )?;
        }
        Ok(ConfigsAltered {
            topic: topic.to_owned(),
            set: input.set.keys().cloned().collect(),
            deleted: input.delete.clone(),
        })
    }
    .await;
    logged("alter topic configs", topic, outcome)
}

/// Grow a topic to `count` partitions in all (CreatePartitions).
pub(crate) async fn add_partitions(
    state: &AdminState,
    topic: &str,
    count: i32,
) -> Result<PartitionsAdded, AdminError> {
    let outcome = async {
        if !(1..=PARTITIONS_MAX).contains(&count) {
            return Err(AdminError::bad_request(format!(
                "count is {count}, from 1 to {PARTITIONS_MAX}"
            )));
        }
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_count(count)
                    .with_assignments(None),
            ])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let response = ask(&state.broker, request, CREATE_PARTITIONS_VERSION).await?;
        let response = expect_response!(response, CreatePartitions)?;
        for result in &response.results {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("cannot grow topic {topic} to {count} partitions"),
            )?;
        }
        Ok(PartitionsAdded {
            topic: topic.to_owned(),
            partitions: count,
        })
    }
    .await;
    logged("add partitions", topic, outcome)
}

/// Delete a topic and its records (DeleteTopics).
pub(crate) async fn delete_topic(
    state: &AdminState,
    topic: &str,
) -> Result<TopicDeleted, AdminError> {
    let outcome = async {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(text(topic))])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let response = ask(&state.broker, request, DELETE_TOPICS_VERSION).await?;
        let response = expect_response!(response, DeleteTopics)?;
        for result in &response.responses {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("cannot delete topic {topic}"),
            )?;
        }
        Ok(TopicDeleted {
            topic: topic.to_owned(),
            deleted: true,
        })
    }
    .await;
    logged("delete topic", topic, outcome)
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// Logs a write through the admin API at info: the operation, what it
/// named, and how it ended; hands the outcome back.
pub(crate) fn logged<T>(
    operation: &str,
    target: &str,
    outcome: Result<T, AdminError>,
) -> Result<T, AdminError> {
    match &outcome {
        Ok(_) => tracing::info!(operation, target, outcome = "done", "admin API write"),
        Err(err) => tracing::info!(
            operation,
            target,
            outcome = "refused",
            status = %err.status(),
            error = %err,
            "admin API write"
        ),
    }
    outcome
}

/// `Ok` for Kafka error code 0, else the HTTP answer for it ([`refused`]).
pub(crate) fn check(code: i16, message: Option<&StrBytes>, what: &str) -> Result<(), AdminError> {
    if code == 0 {
        Ok(())
    } else {
        Err(refused(code, message.map(StrBytes::as_str), what))
    }
}

/// The HTTP answer to a Kafka error code the broker answered `what` with:
/// the status for it, `what`, Kafka's name of the error and the broker's
/// message when it gave one, and the name in `kafka_error`.
pub(crate) fn refused(code: i16, message: Option<&str>, what: &str) -> AdminError {
    let name = match kafka_protocol::ResponseError::try_from_code(code) {
        Some(kafka_protocol::ResponseError::Unknown(_)) | None => format!("ERROR_CODE_{code}"),
        Some(known) => kafka_name(&known),
    };
    let status = status_of(&name);
    let text = match message.filter(|m| !m.is_empty()) {
        Some(detail) => format!("{what}: {name}: {detail}"),
        None => format!("{what}: {name}"),
    };
    AdminError::new(status, text).with_kafka_error(name)
}

/// The HTTP status of a Kafka error, by Kafka's name of it.
fn status_of(name: &str) -> StatusCode {
    match name {
        "TOPIC_ALREADY_EXISTS"
        | "NON_EMPTY_GROUP"
        | "REBALANCE_IN_PROGRESS"
        | "UNKNOWN_MEMBER_ID"
        | "ILLEGAL_GENERATION"
        | "FENCED_INSTANCE_ID"
        | "CONCURRENT_TRANSACTIONS"
        | "STALE_MEMBER_EPOCH"
        | "GROUP_SUBSCRIBED_TO_TOPIC" => StatusCode::CONFLICT,
        "UNKNOWN_TOPIC_OR_PARTITION" | "UNKNOWN_TOPIC_ID" | "GROUP_ID_NOT_FOUND" => {
            StatusCode::NOT_FOUND
        }
        "POLICY_VIOLATION"
        | "OFFSET_OUT_OF_RANGE"
        | "MESSAGE_TOO_LARGE"
        | "RECORD_LIST_TOO_LARGE"
        | "UNSUPPORTED_COMPRESSION_TYPE"
        | "UNSUPPORTED_VERSION" => StatusCode::BAD_REQUEST,
        "TOPIC_DELETION_DISABLED" | "CLUSTER_AUTHORIZATION_FAILED" => StatusCode::FORBIDDEN,
        // RFC 9110's "sent to a server that cannot answer for it": ask the
        // node that leads the partition or coordinates the group.
        "NOT_COORDINATOR" | "NOT_LEADER_OR_FOLLOWER" => StatusCode::MISDIRECTED_REQUEST,
        "NOT_CONTROLLER"
        | "REQUEST_TIMED_OUT"
        | "COORDINATOR_NOT_AVAILABLE"
        | "COORDINATOR_LOAD_IN_PROGRESS"
        | "LEADER_NOT_AVAILABLE"
        | "BROKER_NOT_AVAILABLE"
        | "NOT_ENOUGH_REPLICAS"
        | "NOT_ENOUGH_REPLICAS_AFTER_APPEND"
        | "THROTTLING_QUOTA_EXCEEDED"
        | "KAFKA_STORAGE_ERROR"
        | "NETWORK_EXCEPTION"
        | "FENCED_LEADER_EPOCH"
        | "UNKNOWN_LEADER_EPOCH" => StatusCode::SERVICE_UNAVAILABLE,
        _ if name.starts_with("INVALID_") => StatusCode::BAD_REQUEST,
        _ if name.ends_with("_AUTHORIZATION_FAILED") => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Kafka's name of an error (`TOPIC_ALREADY_EXISTS`), as the metrics
/// spell it.
fn kafka_name(error: &kafka_protocol::ResponseError) -> String {
    weir_metrics::error_name(&format!("{error:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::http::{Method, Request, header};
    use tower::ServiceExt as _;

    async fn send(
        app: &Router,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), crate::BODY_BYTES_MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_topic_is_created_once_and_a_body_must_be_json() {
        let (state, _dir) = crate::tests::state();
        let app = crate::router(state.clone());
        let json = "application/json";
        let body = r#"{"name": "orders", "partitions": 3}"#;
        let (status, answer) = send(&app, Method::POST, "/v1/topics", json, body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["partitions"], 3);
        let (status, answer) = send(&app, Method::POST, "/v1/topics", json, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["kafka_error"], "TOPIC_ALREADY_EXISTS");
        let (status, _) = send(&app, Method::POST, "/v1/topics", "text/plain", body).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, answer) = send(&app, Method::POST, "/v1/topics", json, "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let (status, answer) = send(
            &app,
            Method::PATCH,
            "/v1/topics/nowhere/configs",
            json,
            r#"{"set": {"retention.ms": 1000}}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        // The typed call the console makes.
        let grown = add_partitions(&state, "orders", 5).await.expect("grown");
        assert_eq!(grown.partitions, 5);
        let deleted = delete_topic(&state, "orders").await.expect("deleted");
        assert!(deleted.deleted);
    }

    #[test]
    fn kafka_errors_answer_their_http_status_and_kafka_name() {
        let cases = [
            (36, StatusCode::CONFLICT, "TOPIC_ALREADY_EXISTS"),
            (3, StatusCode::NOT_FOUND, "UNKNOWN_TOPIC_OR_PARTITION"),
            (17, StatusCode::BAD_REQUEST, "INVALID_TOPIC_EXCEPTION"),
            (37, StatusCode::BAD_REQUEST, "INVALID_PARTITIONS"),
            (40, StatusCode::BAD_REQUEST, "INVALID_CONFIG"),
            (41, StatusCode::SERVICE_UNAVAILABLE, "NOT_CONTROLLER"),
            (7, StatusCode::SERVICE_UNAVAILABLE, "REQUEST_TIMED_OUT"),
            (68, StatusCode::CONFLICT, "NON_EMPTY_GROUP"),
            (29, StatusCode::FORBIDDEN, "TOPIC_AUTHORIZATION_FAILED"),
        ];
        for (code, status, name) in cases {
            let err = refused(code, Some("why"), "cannot do it");
            assert_eq!(err.status(), status, "{name}");
            assert_eq!(err.to_string(), format!("cannot do it: {name}: why"));
        }
        let err = refused(36, None, "cannot create topic t");
        assert_eq!(
            err.to_string(),
            "cannot create topic t: TOPIC_ALREADY_EXISTS"
        );
        assert_eq!(err.kafka_error(), Some("TOPIC_ALREADY_EXISTS"));
        let err = refused(-2, None, "x");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.kafka_error(), Some("ERROR_CODE_-2"));
    }
}
