//! Tag-filtered views: RocketMQ's tags for unmodified Kafka clients.
//!
//! A producer tags a record with the header `weir.tag`. A view is a topic
//! created with the configs `weir.view.source` (the topic it reads) and
//! `weir.view.tags` (a RocketMQ tag expression, `VIP || GOLD` or `*`). It
//! has no storage of its own: its partitions are the source's, it answers
//! Fetch with only the matching records at their source offsets (the
//! storage filters, see `weir_storage::tags`), ListOffsets and
//! OffsetForLeaderEpoch with the source's offsets, and Metadata with the
//! source's leaders, so consumer groups and commits work on it as on any
//! topic. Retention, compaction and partition count follow the source.
//!
//! Everything that would write to a view (Produce, DeleteRecords,
//! CreatePartitions, config changes) is refused with INVALID_REQUEST naming
//! the source. A source cannot be deleted while views read it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use weir_storage::TagExpr;

use crate::Broker;
use crate::error::ApiError;
use crate::topics::{TopicState, is_internal};

/// The topic config naming a view's source topic.
pub(crate) const VIEW_SOURCE: &str = "weir.view.source";
/// The topic config holding a view's tag expression.
pub(crate) const VIEW_TAGS: &str = "weir.view.tags";

/// What makes a topic a view.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// The topic whose records the view filters.
    pub source: String,
    /// Which records it serves. A filter that no longer parses (written by
    /// a later build with a richer syntax) serves nothing: every read of
    /// the view answers INVALID_CONFIG with the reason.
    pub filter: Result<Arc<TagExpr>, String>,
}

impl View {
    /// The view a topic's configs describe, if they name a source.
    pub(crate) fn of(configs: &BTreeMap<String, String>) -> Option<View> {
        let source = configs.get(VIEW_SOURCE)?.clone();
        let tags = configs.get(VIEW_TAGS).map_or("*", String::as_str);
        let filter = TagExpr::parse(tags)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        Some(View { source, filter })
    }

    /// The filter, or INVALID_CONFIG when it does not parse.
    pub(crate) fn filter(&self, view: &str) -> Result<Arc<TagExpr>, ApiError> {
        self.filter.clone().map_err(|why| {
            ApiError::new(
                ResponseError::InvalidConfig,
                format!("view {view} has a tag filter this broker cannot read: {why}"),
            )
        })
    }
}

/// INVALID_REQUEST for an operation that would change a view's data or
/// shape, naming the topic that holds its data.
pub(crate) fn read_only(action: &str, view: &str, source: &str) -> ApiError {
    ApiError::new(
        ResponseError::InvalidRequest,
        format!(
            "Cannot {action} topic {view}: it is a read-only view of topic {source}; \
             {action} topic {source} instead"
        ),
    )
}

/// INVALID_REQUEST for `action` on `state` when it is a view; `Ok` otherwise.
pub(crate) fn refuse_if_view(state: &TopicState, action: &str) -> Result<(), ApiError> {
    match &state.view {
        Some(view) => Err(read_only(action, &state.meta.name, &view.source)),
        None => Ok(()),
    }
}

/// The checked configs and partition count of a view to create: the source
/// exists and is an ordinary topic, the tag expression parses, and nothing
/// but the two view configs is set (a view has no data of its own to
/// configure). `partitions` and `replication_factor` may be -1 (the
/// source's) or the source's own.
pub(crate) fn check_new_view(
    broker: &Broker,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &BTreeMap<String, String>,
) -> Result<(Arc<TopicState>, Arc<TagExpr>), ApiError> {
    let invalid_config = |why: String| ApiError::new(ResponseError::InvalidConfig, why);
    let source_name = configs
        .get(VIEW_SOURCE)
        .ok_or_else(|| invalid_config(format!("{VIEW_TAGS} is set without {VIEW_SOURCE}")))?;
    if let Some(other) = configs
        .keys()
        .find(|k| *k != VIEW_SOURCE && *k != VIEW_TAGS)
    {
        return Err(invalid_config(format!(
            "view {name} takes only {VIEW_SOURCE} and {VIEW_TAGS}, not {other}: its data, \
             retention and compaction are those of topic {source_name}"
        )));
    }
    let tags = configs.get(VIEW_TAGS).map_or("*", String::as_str);
    let filter = TagExpr::parse(tags)
        .map_err(|e| invalid_config(format!("invalid value for {VIEW_TAGS}: {e}")))?;
    if source_name == name {
        return Err(invalid_config(format!("view {name} cannot read itself")));
    }
    if is_internal(source_name) {
        return Err(invalid_config(format!(
            "view {name} cannot read internal topic {source_name}"
        )));
    }
    let source = broker.topic(source_name).ok_or_else(|| {
        ApiError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("view {name} reads topic {source_name}, which does not exist"),
        )
    })?;
    if let Some(view) = &source.view {
        return Err(invalid_config(format!(
            "view {name} cannot read {source_name}, itself a view (of {}); \
             give it {} as source",
            view.source, view.source
        )));
    }
    let count = source.meta.partitions;
    if partitions != -1 && partitions != count {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!(
                "view {name} has the {count} partitions of topic {source_name}; \
                 give -1 or {count}, not {partitions}"
            ),
        ));
    }
    let factor = source.meta.replication_factor;
    if replication_factor != -1 && replication_factor != factor {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "view {name} has the replication factor of topic {source_name} ({factor}); \
                 give -1 or {factor}, not {replication_factor}"
            ),
        ));
    }
    Ok((source, Arc::new(filter)))
}

impl Broker {
    /// The source topic of a view, as registered now: UNKNOWN_TOPIC_OR_PARTITION
    /// if it is gone (a cluster may apply a source's deletion before its view's).
    pub(crate) fn view_source(&self, view: &View, name: &str) -> Result<Arc<TopicState>, ApiError> {
        self.topic(&view.source).ok_or_else(|| {
            ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!(
                    "view {name} reads topic {}, which does not exist",
                    view.source
                ),
            )
        })
    }

    /// The topic holding a topic's data: the topic itself, or a view's
    /// source, with the view's filter.
    pub(crate) fn data_topic(
        &self,
        state: Arc<TopicState>,
    ) -> Result<(Arc<TopicState>, Option<Arc<TagExpr>>), ApiError> {
        match &state.view {
            None => Ok((state, None)),
            Some(view) => {
                let filter = view.filter(&state.meta.name)?;
                Ok((self.view_source(view, &state.meta.name)?, Some(filter)))
            }
        }
    }

    /// The topics among `topics` that views read.
    pub(crate) fn view_sources(&self, topics: &[Arc<TopicState>]) -> HashSet<String> {
        topics
            .iter()
            .filter_map(|t| t.view.as_ref().map(|v| v.source.clone()))
            .collect()
    }

    /// The views that read topic `source`, by name.
    pub(crate) fn views_of(&self, source: &str) -> Vec<String> {
        self.topic_list()
            .iter()
            .filter(|t| t.view.as_ref().is_some_and(|v| v.source == source))
            .map(|t| t.meta.name.clone())
            .collect()
    }
}
