//! DeleteTopics (API key 20): delete topics by name (v1-v5 `topic_names`,
//! v6 `topics`), or by topic ID (v6). Each topic gets its own result.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use weir_auth::AclOperation;

use crate::acls::topic_denied;
use crate::admin::{self, str_bytes};
use crate::error::ApiError;
use crate::quotas::{self, MutationQuota};
use crate::{Broker, HandlerError, RequestContext};

/// One topic to delete, as the request named it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Name(String),
    Id(Uuid),
    /// A v6 entry with both a name and an ID, or neither.
    Ambiguous(Option<String>, Uuid),
}

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
) -> Result<DeleteTopicsResponse, HandlerError> {
    // A version decodes into only one of the two lists; reading both keeps
    // this correct whatever the version.
    let mut targets: Vec<Target> = req
        .topic_names
        .iter()
        .map(|name| Target::Name(name.0.to_string()))
        .collect();
    for topic in &req.topics {
        targets.push(match (&topic.name, topic.topic_id.is_nil()) {
            (Some(name), true) => Target::Name(name.0.to_string()),
            (None, false) => Target::Id(topic.topic_id),
            (name, _) => Target::Ambiguous(name.as_ref().map(|n| n.0.to_string()), topic.topic_id),
        });
    }
    let quota = broker.mutation_quota(ctx, MUTATION_QUOTA_STRICT_SINCE);
    let repeated = admin::duplicates(targets.iter().cloned());
    let mut answered = std::collections::BTreeSet::new();
    let mut responses = Vec::with_capacity(targets.len());
    for target in targets {
        if repeated.contains(&target) {
            if answered.insert(target.clone()) {
                let err = admin::invalid_request("topic appears more than once in the request");
                responses.push(result(&target, None, Err(err)));
            }
            continue;
        }
        let (name, outcome) = delete(broker, ctx, &target, quota.as_ref());
        responses.push(result(&target, name, outcome));
    }
    Ok(DeleteTopicsResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(quota.map_or(0, |q| q.throttle_time_ms())))
}

/// The first version a `controller_mutation_rate` in debt refuses with
/// THROTTLING_QUOTA_EXCEEDED (KIP-599); older ones are only throttled.
const MUTATION_QUOTA_STRICT_SINCE: i16 = 5;

/// Delete one topic; returns its name when known, for the response.
fn delete(
    broker: &Broker,
    ctx: &RequestContext,
    target: &Target,
    quota: Option<&MutationQuota>,
) -> (Option<String>, Result<Uuid, ApiError>) {
    let name = match target {
        Target::Name(name) => name.clone(),
        Target::Id(id) => match broker.topic_by_id(*id) {
            Some(state) => state.meta.name.clone(),
            None => {
                let err = ApiError::new(
                    ResponseError::UnknownTopicId,
                    format!("no topic has ID {id}"),
                );
                return (None, Err(err));
            }
        },
        Target::Ambiguous(name, _) => {
            let err = admin::invalid_request(
                "give either a topic name or a topic ID, not both or neither",
            );
            return (name.clone(), Err(err));
        }
    };
    // DELETE on the topic, asked by name before the deletion looks it up.
    if !broker.allowed_on_topic(ctx, AclOperation::Delete, &name) {
        return (
            Some(name.clone()),
            Err(topic_denied(ctx, AclOperation::Delete, &name)),
        );
    }
    let outcome = quotas::within_mutation_quota(quota, false, |check_only| {
        if check_only {
            let topic = broker
                .topic(&name)
                .ok_or_else(|| ApiError::unknown_topic(&name))?;
            return Ok((topic.meta.id, 0));
        }
        let meta = broker.delete_topic(&name)?;
        Ok((meta.id, usize::try_from(meta.partitions).unwrap_or(0)))
    });
    (Some(name), outcome)
}

fn result(
    target: &Target,
    name: Option<String>,
    outcome: Result<Uuid, ApiError>,
) -> DeletableTopicResult {
    let (error_code, error_message) = admin::outcome(&outcome);
    let name = name.or_else(|| match target {
        Target::Name(name) => Some(name.clone()),
        Target::Id(_) | Target::Ambiguous(..) => None,
    });
    let topic_id = match (&outcome, target) {
        (Ok(id), _) => *id,
        (Err(_), Target::Id(id) | Target::Ambiguous(_, id)) => *id,
        (Err(_), Target::Name(_)) => Uuid::nil(),
    };
    DeletableTopicResult::default()
        .with_name(name.map(|n| TopicName(str_bytes(n))))
        .with_topic_id(topic_id)
        .with_error_code(error_code)
        .with_error_message(error_message)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use std::collections::BTreeMap;

    use super::*;
    use crate::admin::testing::{self, call};

    fn name(s: &str) -> TopicName {
        TopicName(str_bytes(s))
    }

    fn by_name(version: i16, names: &[&str]) -> DeleteTopicsRequest {
        let req = DeleteTopicsRequest::default().with_timeout_ms(5_000);
        if version >= 6 {
            req.with_topics(
                names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(name(n))))
                    .collect(),
            )
        } else {
            req.with_topic_names(names.iter().map(|n| name(n)).collect())
        }
    }

    #[tokio::test]
    async fn every_version_deletes_by_name_and_reports_unknown_names() {
        let t = testing::broker();
        for version in testing::versions(ApiKey::DeleteTopics) {
            let doomed = format!("doomed-v{version}");
            let id = t
                .broker
                .create_topic(&doomed, 2, 1, BTreeMap::new(), false)
                .unwrap()
                .id;
            let resp = call(
                &t.broker,
                version,
                by_name(version, &[&doomed, "never-was"]),
            )
            .await;
            let first = &resp.responses[0];
            assert_eq!(
                first.name.as_ref().map(|n| n.0.as_str()),
                Some(doomed.as_str())
            );
            assert_eq!(first.error_code, 0, "v{version}: {:?}", first.error_message);
            if version >= 6 {
                assert_eq!(first.topic_id, id);
            }
            assert_eq!(
                resp.responses[1].error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
            assert!(t.broker.topic(&doomed).is_none());
            assert!(t.broker.metadata().topic(&doomed).is_none());
        }
    }

    #[tokio::test]
    async fn v6_deletes_by_topic_id_and_unknown_id_is_unknown_topic_id() {
        let t = testing::broker();
        let id = t
            .broker
            .create_topic("by-id", 1, 1, BTreeMap::new(), false)
            .unwrap()
            .id;
        let unknown = Uuid::from_u128(42);
        let req = DeleteTopicsRequest::default().with_topics(vec![
            DeleteTopicState::default().with_topic_id(id),
            DeleteTopicState::default().with_topic_id(unknown),
            DeleteTopicState::default()
                .with_name(Some(name("both")))
                .with_topic_id(Uuid::from_u128(7)),
        ]);
        let resp = call(&t.broker, 6, req).await;
        let seen: Vec<(Option<String>, Uuid, i16)> = resp
            .responses
            .iter()
            .map(|r| {
                (
                    r.name.as_ref().map(|n| n.0.to_string()),
                    r.topic_id,
                    r.error_code,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (Some("by-id".to_string()), id, 0),
                (None, unknown, ResponseError::UnknownTopicId.code()),
                (
                    Some("both".to_string()),
                    Uuid::from_u128(7),
                    ResponseError::InvalidRequest.code()
                ),
            ]
        );
        assert!(t.broker.topic("by-id").is_none());
    }

    #[tokio::test]
    async fn a_name_repeated_in_one_request_is_invalid_request_and_kept() {
        let t = testing::broker();
        t.broker
            .create_topic("twice", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let resp = call(&t.broker, 5, by_name(5, &["twice", "twice"])).await;
        assert_eq!(resp.responses.len(), 1);
        assert_eq!(
            resp.responses[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        assert!(t.broker.topic("twice").is_some());
    }
}
