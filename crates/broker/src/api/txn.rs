//! The transactional producer's APIs, answered by the transaction
//! coordinator (`crate::txn`): AddPartitionsToTxn, AddOffsetsToTxn and
//! EndTxn and TxnOffsetCommit; and WriteTxnMarkers, which a coordinator (or an operator
//! aborting a hanging transaction) sends to the leaders of a transaction's
//! partitions; and the admin APIs DescribeTransactions, ListTransactions
//! and DescribeProducers. InitProducerId with a transactional id is in
//! `init_producer_id.rs`.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse, describe_producers_response, describe_transactions_response,
    list_transactions_response,
};
use kafka_protocol::protocol::StrBytes;
use weir_auth::{AclOperation, ResourceType};
use weir_storage::TxnMarker;

use crate::{Broker, HandlerError, RequestContext};

/// First AddPartitionsToTxn version with a list of transactions (KIP-890:
/// brokers verifying a produce, with `verify_only`).
const BATCHED_VERSION: i16 = 4;
/// Most transactions one batched AddPartitionsToTxn may name.
const TRANSACTIONS_MAX: usize = 10_000;
/// Before these versions a fenced producer hears INVALID_PRODUCER_EPOCH
/// rather than PRODUCER_FENCED (KIP-588).
const ADD_PARTITIONS_FENCED_VERSION: i16 = 2;
const ADD_OFFSETS_FENCED_VERSION: i16 = 2;
const END_TXN_FENCED_VERSION: i16 = 2;
/// First EndTxn version of transaction version 2 (KIP-890 part 2): the
/// epoch is bumped at every end and answered.
const END_TXN_BUMPING_VERSION: i16 = 5;

/// PRODUCER_FENCED as an old client knows it.
fn for_version(code: ResponseError, version: i16, fenced_from: i16) -> i16 {
    match code {
        ResponseError::ProducerFenced if version < fenced_from => {
            ResponseError::InvalidProducerEpoch.code()
        }
        _ => code.code(),
    }
}

pub(crate) async fn add_partitions(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> Result<AddPartitionsToTxnResponse, HandlerError> {
    let response = AddPartitionsToTxnResponse::default().with_throttle_time_ms(0);
    if ctx.version < BATCHED_VERSION {
        let results = add_one(
            broker,
            ctx,
            req.v3_and_below_transactional_id.as_str(),
            (
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
            ),
            req.v3_and_below_topics,
            false,
        )
        .await;
        return Ok(response.with_results_by_topic_v3_and_below(results));
    }
    if req.transactions.len() > TRANSACTIONS_MAX {
        return Err(HandlerError::InvalidRequest(format!(
            "{} transactions is more than {TRANSACTIONS_MAX}",
            req.transactions.len()
        )));
    }
    // From v4 only brokers send it, to verify a produce's transaction.
    if !broker.allowed_on_cluster(ctx, AclOperation::ClusterAction) {
        return Ok(response.with_error_code(ResponseError::ClusterAuthorizationFailed.code()));
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for txn in req.transactions {
        let topics = add_one(
            broker,
            ctx,
            txn.transactional_id.as_str(),
            (txn.producer_id.0, txn.producer_epoch),
            txn.topics,
            txn.verify_only,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id)
                .with_topic_results(topics),
        );
    }
    Ok(response
        .with_error_code(0)
        .with_results_by_transaction(results))
}

/// Add (or, `verify_only`, check) one transaction's partitions. Without
/// WRITE on the transactional id every partition fails with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED; partitions of topics the client
/// may not write fail with TOPIC_AUTHORIZATION_FAILED, unknown ones with
/// UNKNOWN_TOPIC_OR_PARTITION, and the others then with
/// OPERATION_NOT_ATTEMPTED, as in Kafka; otherwise all share one outcome.
async fn add_one(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    transactional_id: &str,
    (producer_id, epoch): (i64, i16),
    topics: Vec<AddPartitionsToTxnTopic>,
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let version = ctx.version;
    let id_allowed = broker.allowed(
        ctx,
        AclOperation::Write,
        ResourceType::TransactionalId,
        transactional_id,
    );
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    let mut denied = Vec::new();
    // A view is read-only: nothing of a transaction can be written to it.
    let mut views = Vec::new();
    for topic in &topics {
        let writable =
            id_allowed && broker.allowed_on_topic(ctx, AclOperation::Write, topic.name.as_str());
        let known = broker.topic(topic.name.as_str());
        for &p in &topic.partitions {
            let name = topic.name.to_string();
            match &known {
                _ if !writable => denied.push((name, p)),
                Some(state) if state.view.is_some() => views.push((name, p)),
                Some(state) if (0..state.meta.partitions).contains(&p) => wanted.push((name, p)),
                _ => unknown.push((name, p)),
            }
        }
    }
    let outcome = |part: &(String, i32)| -> i16 {
        if !id_allowed {
            ResponseError::TransactionalIdAuthorizationFailed.code()
        } else if denied.contains(part) {
            ResponseError::TopicAuthorizationFailed.code()
        } else if unknown.contains(part) {
            ResponseError::UnknownTopicOrPartition.code()
        } else if views.contains(part) {
            ResponseError::InvalidRequest.code()
        } else if !unknown.is_empty() || !views.is_empty() || !denied.is_empty() {
            ResponseError::OperationNotAttempted.code()
        } else {
            0
        }
    };
    let mut codes: Vec<((String, i32), i16)> = wanted
        .iter()
        .chain(&unknown)
        .chain(&views)
        .chain(&denied)
        .map(|p| (p.clone(), outcome(p)))
        .collect();
    if unknown.is_empty() && views.is_empty() && denied.is_empty() {
        let txns = broker.txns();
        let result = if verify_only {
            wanted
                .iter()
                .map(|p| txns.verify(transactional_id, producer_id, epoch, p).err())
                .collect::<Vec<_>>()
        } else {
            let added = txns
                .add_partitions(transactional_id, producer_id, epoch, &wanted)
                .await;
            vec![added.err(); wanted.len()]
        };
        for ((_, code), err) in codes.iter_mut().zip(result) {
            *code = err.map_or(0, |e| {
                for_version(e, version, ADD_PARTITIONS_FENCED_VERSION)
            });
        }
    }
    let mut by_topic: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition), code) in codes {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(code);
        match by_topic.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.results_by_partition.push(result),
            None => by_topic.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(topic.into()))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    by_topic
}

pub(crate) async fn add_offsets(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AddOffsetsToTxnRequest,
) -> Result<AddOffsetsToTxnResponse, HandlerError> {
    let denied = if !transaction_allowed(broker, ctx, req.transactional_id.as_str()) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !broker.allowed_on_group(ctx, AclOperation::Read, req.group_id.as_str()) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    if let Some(denied) = denied {
        return Ok(AddOffsetsToTxnResponse::default().with_error_code(denied.code()));
    }
    let partitions = broker.groups().config().offsets_topic_num_partitions;
    let offsets_partitions = broker
        .topic(crate::group::OFFSETS_TOPIC)
        .map_or(partitions, |t| t.meta.partitions);
    let index = crate::group::records::partition_for(req.group_id.as_str(), offsets_partitions);
    let added = broker
        .txns()
        .add_partitions(
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            &[(crate::group::OFFSETS_TOPIC.to_string(), index)],
        )
        .await;
    Ok(AddOffsetsToTxnResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(added.err().map_or(0, |e| {
            for_version(e, ctx.version, ADD_OFFSETS_FENCED_VERSION)
        })))
}

pub(crate) async fn end(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: EndTxnRequest,
) -> Result<EndTxnResponse, HandlerError> {
    if !transaction_allowed(broker, ctx, req.transactional_id.as_str()) {
        return Ok(EndTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1));
    }
    let rules = if ctx.version >= END_TXN_BUMPING_VERSION {
        crate::txn::state::EndRules::V2
    } else {
        crate::txn::state::EndRules::V1
    };
    let ended = broker
        .txns()
        .end(
            broker,
            req.transactional_id.as_str(),
            (req.producer_id.0, req.producer_epoch),
            req.committed,
            rules,
        )
        .await;
    let response = EndTxnResponse::default().with_throttle_time_ms(0);
    Ok(match ended {
        Ok(next) => response
            .with_error_code(0)
            .with_producer_id(next.producer_id.into())
            .with_producer_epoch(next.epoch),
        Err(err) => {
            tracing::debug!(transactional_id = %req.transactional_id.as_str(), error = ?err, "EndTxn refused");
            response
                .with_error_code(for_version(err, ctx.version, END_TXN_FENCED_VERSION))
                .with_producer_id((-1).into())
                .with_producer_epoch(-1)
        }
    })
}

/// Most partitions one WriteTxnMarkers may name in all.
const MARKER_PARTITIONS_MAX: usize = 100_000;

pub(crate) async fn write_markers(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: WriteTxnMarkersRequest,
) -> Result<WriteTxnMarkersResponse, HandlerError> {
    // Only a transaction coordinator sends it: the cluster acting.
    let cluster_action = broker.allowed_on_cluster(ctx, AclOperation::ClusterAction);
    let total: usize = req
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .map(|t| t.partition_indexes.len())
        .sum();
    if total > MARKER_PARTITIONS_MAX {
        return Err(HandlerError::InvalidRequest(format!(
            "{total} marker partitions is more than {MARKER_PARTITIONS_MAX}"
        )));
    }
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let marker = TxnMarker {
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let code = match broker.topic(t.name.as_str()) {
                    _ if !cluster_action => ResponseError::ClusterAuthorizationFailed.code(),
                    None => ResponseError::UnknownTopicOrPartition.code(),
                    Some(_) => broker
                        .write_marker_here(
                            t.name.as_str(),
                            p,
                            m.producer_id.0,
                            m.producer_epoch,
                            marker,
                        )
                        .await
                        .err()
                        .map_or(0, |e| e.code()),
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    Ok(WriteTxnMarkersResponse::default().with_markers(markers))
}

/// Most transactional ids one DescribeTransactions may name.
const DESCRIBE_IDS_MAX: usize = 10_000;

pub(crate) async fn describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> Result<DescribeTransactionsResponse, HandlerError> {
    if req.transactional_ids.len() > DESCRIBE_IDS_MAX {
        return Err(HandlerError::InvalidRequest(format!(
            "{} transactional ids is more than {DESCRIBE_IDS_MAX}",
            req.transactional_ids.len()
        )));
    }
    let ids = super::first_of_each(req.transactional_ids, |id| id.clone());
    let states = ids
        .into_iter()
        .map(|id| {
            let state = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone());
            if !broker.allowed(
                ctx,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                id.as_str(),
            ) {
                return state
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
            }
            match broker.txns().describe(id.as_str()) {
                Ok(summary) => {
                    let v = summary.value;
                    let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
                    for (topic, partition) in &v.partitions {
                        match topics.last_mut() {
                            Some(t) if t.topic.as_str() == topic => t.partitions.push(*partition),
                            _ => topics.push(
                                describe_transactions_response::TopicData::default()
                                    .with_topic(TopicName(topic.clone().into()))
                                    .with_partitions(vec![*partition]),
                            ),
                        }
                    }
                    state
                        .with_error_code(0)
                        .with_transaction_state(StrBytes::from_static_str(v.status.name()))
                        .with_transaction_timeout_ms(v.timeout_ms)
                        .with_transaction_start_time_ms(v.start_ms)
                        .with_producer_id(v.producer_id.into())
                        .with_producer_epoch(v.producer_epoch)
                        .with_topics(topics)
                }
                Err(code) => state
                    .with_error_code(code.code())
                    .with_transaction_state(StrBytes::default())
                    .with_transaction_start_time_ms(-1)
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1),
            }
        })
        .collect();
    Ok(DescribeTransactionsResponse::default()
        .with_throttle_time_ms(0)
        .with_transaction_states(states))
}

/// Kafka's names of the states ListTransactions filters on.
const STATE_NAMES: [&str; 8] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

/// Largest compiled transactional id pattern (ListTransactions v2): a
/// client's pattern must not make the broker build an automaton of any size.
const PATTERN_BYTES_MAX: usize = 1 << 20;

/// The transactional id pattern of ListTransactions v2 (KIP-1152), which
/// must match a whole id, as Kafka's RE2/J `matches()` does; `None` when
/// the request has none (null or empty).
fn id_pattern(pattern: Option<&str>) -> Result<Option<regex::Regex>, regex::Error> {
    match pattern.filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => regex::RegexBuilder::new(&format!("^(?:{p})$"))
            .size_limit(PATTERN_BYTES_MAX)
            .dfa_size_limit(PATTERN_BYTES_MAX)
            .build()
            .map(Some),
    }
}

pub(crate) async fn list(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> Result<ListTransactionsResponse, HandlerError> {
    let pattern = match id_pattern(req.transactional_id_pattern.as_deref()) {
        Ok(pattern) => pattern,
        Err(err) => {
            tracing::debug!(error = %err, "ListTransactions with a pattern that does not compile");
            return Ok(ListTransactionsResponse::default()
                .with_throttle_time_ms(0)
                .with_error_code(ResponseError::InvalidRegularExpression.code()));
        }
    };
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|s| !STATE_NAMES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now_ms = broker.clock.now_ms();
    let states = broker
        .txns()
        .list()
        .into_iter()
        .filter(|t| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == t.value.status.name())
        })
        .filter(|t| {
            req.producer_id_filters.is_empty()
                || req
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == t.value.producer_id)
        })
        // The ids the client may describe, as Kafka lists them.
        .filter(|t| {
            broker.allowed_quietly(
                ctx,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                &t.transactional_id,
            )
        })
        // v1 (KIP-994): transactions open longer than the duration, in ms.
        .filter(|t| {
            req.duration_filter < 0
                || (t.value.start_ms >= 0
                    && now_ms.saturating_sub(t.value.start_ms) >= req.duration_filter)
        })
        // v2 (KIP-1152): ids the pattern matches.
        .filter(|t| {
            pattern
                .as_ref()
                .is_none_or(|p| p.is_match(&t.transactional_id))
        })
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(t.transactional_id.into()))
                .with_producer_id(t.value.producer_id.into())
                .with_transaction_state(StrBytes::from_static_str(t.value.status.name()))
        })
        .collect();
    Ok(ListTransactionsResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states))
}

/// First TxnOffsetCommit version with the committed leader epoch.
const TXN_COMMIT_LEADER_EPOCH_VERSION: i16 = 2;
/// Before this version a fenced producer hears INVALID_PRODUCER_EPOCH.
const TXN_COMMIT_FENCED_VERSION: i16 = 2;
/// First TxnOffsetCommit version that adds the group's offsets partition
/// to the transaction itself (KIP-890 part 2).
const TXN_COMMIT_IMPLICIT_ADD_VERSION: i16 = 5;

/// TxnOffsetCommit: a consume-transform-produce transaction's consumer
/// offsets. The group's `__consumer_offsets` partition must be in the
/// producer's open transaction (AddOffsetsToTxn), or from v5 joins it
/// here; the offsets are written
/// as the producer's transactional records and take effect with the
/// transaction's COMMIT marker.
pub(crate) async fn offset_commit(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: TxnOffsetCommitRequest,
) -> Result<TxnOffsetCommitResponse, HandlerError> {
    let groups = broker.groups();
    let offsets_partitions = broker
        .topic(crate::group::OFFSETS_TOPIC)
        .map_or(groups.config().offsets_topic_num_partitions, |t| {
            t.meta.partitions
        });
    let home = (
        crate::group::OFFSETS_TOPIC.to_string(),
        crate::group::records::partition_for(req.group_id.as_str(), offsets_partitions),
    );
    if !transaction_allowed(broker, ctx, req.transactional_id.as_str()) {
        let denied = ResponseError::TransactionalIdAuthorizationFailed.code();
        let topics = req
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(denied)
                            })
                            .collect(),
                    )
            })
            .collect();
        return Ok(TxnOffsetCommitResponse::default().with_topics(topics));
    }
    let (answers, accepted) = super::offset_commit::check_partitions(
        broker,
        (ctx, &req.group_id),
        req.topics.iter().map(|t| {
            (
                t.name.as_str(),
                t.partitions.iter().map(|p| super::offset_commit::Offered {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_deref(),
                }),
            )
        }),
        ctx.version >= TXN_COMMIT_LEADER_EPOCH_VERSION,
    );
    let group_error = if accepted.is_empty() {
        None
    } else {
        // Transaction version 2 sends no AddOffsetsToTxn: the group's
        // partition joins the transaction here.
        let joining = if ctx.version >= TXN_COMMIT_IMPLICIT_ADD_VERSION {
            crate::txn::Joining::Add
        } else {
            crate::txn::Joining::Verify
        };
        let verified = broker
            .join_transaction(
                req.transactional_id.as_str(),
                (req.producer_id.0, req.producer_epoch),
                std::slice::from_ref(&home),
                joining,
            )
            .await
            .pop()
            .unwrap_or(Err(ResponseError::UnknownServerError));
        match verified {
            Err(code) => Some(code),
            Ok(()) => groups
                .txn_commit(
                    &req.group_id,
                    (
                        &req.member_id,
                        req.group_instance_id.as_deref(),
                        req.generation_id,
                    ),
                    (req.producer_id.0, req.producer_epoch),
                    accepted,
                )
                .await
                .err(),
        }
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = req
        .topics
        .iter()
        .map(|t| TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (t, p, error) in answers {
        let index = req
            .topics
            .get(t)
            .and_then(|topic| topic.partitions.get(p))
            .map_or(-1, |part| part.partition_index);
        let code = error.or(group_error).map_or(0, |e| {
            for_version(e, ctx.version, TXN_COMMIT_FENCED_VERSION)
        });
        if let Some(topic) = topics.get_mut(t) {
            topic.partitions.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(code),
            );
        }
    }
    Ok(TxnOffsetCommitResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics))
}

/// Most partitions one DescribeProducers may name in all.
const PRODUCER_PARTITIONS_MAX: usize = 10_000;

/// DescribeProducers: the producers each partition this broker leads
/// remembers, with their open transactions (how `weir txn` and Kafka's
/// `kafka-transactions.sh find-hanging` spot a hanging transaction).
pub(crate) async fn describe_producers(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> Result<DescribeProducersResponse, HandlerError> {
    let total: usize = req.topics.iter().map(|t| t.partition_indexes.len()).sum();
    if total > PRODUCER_PARTITIONS_MAX {
        return Err(HandlerError::InvalidRequest(format!(
            "{total} partitions is more than {PRODUCER_PARTITIONS_MAX}"
        )));
    }
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let readable = broker.allowed_on_topic(ctx, AclOperation::Read, &t.name);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let answer = describe_producers_response::PartitionResponse::default()
                        .with_partition_index(p);
                    if !readable {
                        return answer
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let led = broker.partition(&t.name, p).and_then(|partition| {
                        match broker.replicas.leadership(partition.id()) {
                            crate::replica::Leadership::Leader { .. } => Ok(partition),
                            crate::replica::Leadership::NotLeader { .. } => {
                                Err(crate::error::ApiError::new(
                                    ResponseError::NotLeaderOrFollower,
                                    format!("this broker does not lead {}-{p}", t.name.as_str()),
                                ))
                            }
                        }
                    });
                    match led {
                        Ok(partition) => answer.with_error_code(0).with_active_producers(
                            partition
                                .producers()
                                .into_iter()
                                .map(|s| {
                                    describe_producers_response::ProducerState::default()
                                        .with_producer_id(s.producer_id.into())
                                        .with_producer_epoch(i32::from(s.producer_epoch))
                                        .with_last_sequence(s.last_sequence)
                                        .with_last_timestamp(s.last_timestamp)
                                        .with_coordinator_epoch(s.coordinator_epoch)
                                        .with_current_txn_start_offset(
                                            s.txn_start_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                        Err(err) => answer
                            .with_error_code(err.code())
                            .with_error_message(Some(StrBytes::from_string(err.message))),
                    }
                })
                .collect();
            describe_producers_response::TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(DescribeProducersResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics))
}

/// Whether the client may write with `transactional_id` (WRITE on it),
/// which every transactional request needs.
fn transaction_allowed(broker: &Broker, ctx: &RequestContext, transactional_id: &str) -> bool {
    broker.allowed(
        ctx,
        AclOperation::Write,
        ResourceType::TransactionalId,
        transactional_id,
    )
}
