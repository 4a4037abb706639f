//! The dead-letter topics share groups write to (KIP-1191): where a record
//! a member rejects, or one released at the delivery count limit, is
//! written (`weir dlq redrive` moves them back):
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/dead-letter-topics` | `{"topics": [...]}`, a [`DeadLetterTopic`] per topic, by name: each topic that takes dead letters (`errors.deadletterqueue.group.enable=true`) or that a share group this node coordinates writes to, with its record estimate and the groups feeding it |
//!
//! A share group writes to its `errors.deadletterqueue.topic.name` (empty:
//! none), else to `<errors.deadletterqueue.topic.name.prefix><group>`
//! (`dlq.<group>` by default). A topic named by a group but missing is
//! listed with `exists: false` (it is created on the first dead letter
//! when `errors.deadletterqueue.auto.create.topics.enable` is on); one that
//! exists without `errors.deadletterqueue.group.enable=true` with
//! `accepts_dead_letters: false`, as the writer then refuses to write
//! there. The record estimate counts the partitions held here, as in
//! `GET /v1/topics`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::{AdminError, AdminState};

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/v1/dead-letter-topics", get(list))
}

/// One dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeadLetterTopic {
    /// The topic's name.
    pub topic: String,
    /// The topic exists.
    pub exists: bool,
    /// It has `errors.deadletterqueue.group.enable=true`: share groups may
    /// write to it.
    pub accepts_dead_letters: bool,
    /// Its partition count (0 when it does not exist).
    pub partitions: i32,
    /// Dead letters in its partitions held here, estimated (high watermark
    /// less log start).
    pub records: i64,
    /// Bytes its partitions held here take.
    pub size_bytes: u64,
    /// The share groups this node coordinates that write to it, sorted.
    pub groups: Vec<String>,
}

/// Every dead-letter topic, by name.
pub(crate) async fn dead_letter_topics(
    state: &AdminState,
) -> Result<Vec<DeadLetterTopic>, AdminError> {
    let share_groups = crate::groups::share_group_ids(state).await?;
    let topics = crate::topics::topic_list(state).await?;
    let broker = state.broker.clone();
    let feeding = crate::kafka::blocking(move || {
        let mut feeding: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for group in share_groups {
            if let Some(topic) = crate::groups::dead_letter_topic_of(&broker, &group) {
                feeding.entry(topic).or_default().push(group);
            }
        }
        feeding
    })
    .await?;
    let mut out: BTreeMap<String, DeadLetterTopic> = BTreeMap::new();
    for t in topics {
        let groups = feeding.get(&t.name).cloned().unwrap_or_default();
        if !t.dead_letter && groups.is_empty() {
            continue;
        }
        out.insert(
            t.name.clone(),
            DeadLetterTopic {
                topic: t.name,
                exists: true,
                accepts_dead_letters: t.dead_letter,
                partitions: t.partitions,
                records: t.records,
                size_bytes: t.size_bytes,
                groups,
            },
        );
    }
    for (topic, groups) in feeding {
        out.entry(topic.clone()).or_insert(DeadLetterTopic {
            topic,
            exists: false,
            accepts_dead_letters: false,
            partitions: 0,
            records: 0,
            size_bytes: 0,
            groups,
        });
    }
    Ok(out.into_values().collect())
}

async fn list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, AdminError> {
    let topics = dead_letter_topics(&state).await?;
    Ok(Json(serde_json::json!({ "topics": topics })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_broker_without_share_groups_has_no_dead_letter_topics() {
        let (state, _dir) = crate::tests::state();
        let topics = dead_letter_topics(&state)
            .await
            .expect("dead-letter topics");
        assert!(topics.is_empty());
    }
}
