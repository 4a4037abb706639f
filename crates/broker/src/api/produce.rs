//! Produce: append each partition's record batches to the commit log and,
//! for acks=1 and acks=-1, answer only once every batch is durable under its
//! partition's flush policy.
//!
//! Every partition's payload in a request goes to the log in one write
//! (`CommitLog::append_many_checked`), and the durability waits overlap, so a
//! request touching many partitions costs one system call and one group
//! commit, not one of each per partition. Each batch's records are read
//! once, before that (`weir_storage::check_produced`): the delay check and
//! the index entry's summary come from the same parse.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use weir_auth::{AclOperation, ResourceType};
use weir_storage::{AckWait, AppendError, Partition, PartitionId, StorageError, batches};

use crate::error::ApiError;
use crate::record_keys;
use crate::replica::{Leadership, ReplicaManager};
use crate::topic_config;
use crate::topics::{TopicState, internal_topic_refused, is_internal};
use kafka_protocol::messages::ResponseKind;

use crate::{Broker, HandlerError, Reply, RequestContext};

/// First Produce version that addresses topics by ID instead of name.
const TOPIC_ID_VERSION: i16 = 13;
/// First Produce version whose transactional batches add their partition
/// to the producer's transaction rather than have it verified (KIP-890
/// part 2: a producer of transaction version 2 sends no AddPartitionsToTxn).
const IMPLICIT_ADD_VERSION: i16 = 12;

/// Handle a produce to the end: append, then wait for durability.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> Result<Option<ProduceResponse>, HandlerError> {
    Ok(match append(broker, ctx, req).await? {
        Some(appended) => Some(appended.finish().await),
        None => None,
    })
}

/// Append now, in request order, and defer only the wait for durability
/// (see [`Broker::begin`]).
pub(crate) async fn begin(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> Result<Reply, HandlerError> {
    Ok(match append(broker, ctx, req).await? {
        Some(appended) => Reply::Later(Box::pin(async move {
            Ok(Some(ResponseKind::Produce(appended.finish().await)))
        })),
        None => Reply::Ready(None),
    })
}

/// [`append_now`] on a blocking thread: the log write (and an auto-created
/// topic's index files and metadata commit) must not hold a worker. The
/// caller awaits it before the connection's next request is begun, so a
/// produce's batches still reach the log in the order they were sent.
async fn append(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> Result<Option<Appended>, HandlerError> {
    let broker = broker.clone();
    let version = ctx.version;
    let transactional_id = req.transactional_id.as_deref().filter(|id| !id.is_empty());
    let transaction_allowed = transactional_id.is_none_or(|id| {
        broker.allowed(ctx, AclOperation::Write, ResourceType::TransactionalId, id)
    });
    let verified = match transaction_allowed {
        true => join_transaction(&broker, version, &req).await?,
        false => None,
    };
    let ctx = ctx.clone();
    crate::blocking::run(move || {
        append_now(&broker, &ctx, req, (transaction_allowed, verified.as_ref()))
    })
    .await
}

/// What a transaction's coordinator answered, before the append, for each
/// partition of a produce it was asked about.
type Verified = HashMap<(String, i32), Result<(), ResponseError>>;

/// For a transactional produce, before the append: have each partition
/// whose log does not hold the producer's open transaction (at the batch's
/// epoch) join the transaction, in one request to the coordinator per
/// producer. From Produce v12 the coordinator adds them; before, it
/// verifies that the producer added them, and when this broker coordinates
/// the id that check is left to [`check`] (`None`), under no wait. The
/// partitions are found on the blocking pool (reading a partition's
/// producer state takes its lock).
async fn join_transaction(
    broker: &Arc<Broker>,
    version: i16,
    req: &ProduceRequest,
) -> Result<Option<Verified>, HandlerError> {
    let Some(id) = req
        .transactional_id
        .as_ref()
        .map(|id| id.to_string())
        .filter(|id| !id.is_empty())
    else {
        return Ok(None);
    };
    let joining = if version >= IMPLICIT_ADD_VERSION {
        crate::txn::Joining::Add
    } else {
        crate::txn::Joining::Verify
    };
    if joining == crate::txn::Joining::Verify
        && (!broker.metadata().replicated() || broker.txns().coordinates(&id))
    {
        return Ok(None);
    }
    let topics = req.topic_data.clone();
    let probing = broker.clone();
    let unverified =
        crate::blocking::run(move || unverified_partitions(&probing, version, &topics)).await?;
    let mut verified = Verified::new();
    // One producer sends a produce; a request mixing several is checked
    // per producer all the same.
    let mut producers: Vec<(i64, i16)> = unverified.iter().map(|(p, _)| *p).collect();
    producers.sort_unstable();
    producers.dedup();
    for producer in producers {
        let partitions: Vec<(String, i32)> = unverified
            .iter()
            .filter(|(p, _)| *p == producer)
            .map(|(_, key)| key.clone())
            .collect();
        let answers = broker
            .join_transaction(&id, producer, &partitions, joining)
            .await;
        verified.extend(partitions.into_iter().zip(answers));
    }
    Ok(Some(verified))
}

/// The partitions of a produce with a transactional batch whose producer
/// has no transaction open in the partition's log at the batch's epoch,
/// with that producer. Blocks on the partitions' locks.
fn unverified_partitions(
    broker: &Broker,
    version: i16,
    topics: &[TopicProduceData],
) -> Vec<((i64, i16), (String, i32))> {
    let mut out = Vec::new();
    for topic in topics {
        let state = if version >= TOPIC_ID_VERSION {
            broker.topic_by_id(topic.topic_id)
        } else {
            broker.topic(&topic.name)
        };
        // An unknown topic is refused by the checks that follow.
        let Some(state) = state else { continue };
        for data in &topic.partition_data {
            let Some(producer) = data.records.as_deref().and_then(transactional_producer) else {
                continue;
            };
            let open = crate::topics::local_partition(&state, data.index)
                .map(|p| p.in_open_transaction(producer.0, producer.1))
                .unwrap_or(false);
            if !open {
                out.push((producer, (state.meta.name.clone(), data.index)));
            }
        }
    }
    out
}

/// A produce whose batches are in the log, waiting to be answered.
struct Appended {
    topics: Vec<TopicProduceResponse>,
    waits: Vec<((usize, usize), AckWait)>,
    /// acks=all appends, checked again against `min.insync.replicas` once
    /// committed: (slot, partition, min.insync.replicas).
    isr_checks: Vec<((usize, usize), PartitionId, usize)>,
    replicas: Arc<ReplicaManager>,
    /// The leaders named in NOT_LEADER_OR_FOLLOWER answers (KIP-951).
    node_endpoints: Vec<NodeEndpoint>,
}

impl Appended {
    /// Wait until every appended batch is durable and build the response.
    async fn finish(mut self) -> ProduceResponse {
        for ((topic, partition), result) in wait_all(self.waits).await {
            if let Err(err) = result {
                report_storage_failure(&err);
                if let Some(slot) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partition_responses.get_mut(partition))
                {
                    *slot = failed(slot.index, &ApiError::from(err).into());
                }
            }
        }
        // Kafka's rule: committed while the ISR was too small to count is
        // written but not as safe as asked.
        for ((topic, partition), id, min_isr) in self.isr_checks {
            let isr = match self.replicas.leadership(id) {
                Leadership::Leader { isr } => isr,
                Leadership::NotLeader { .. } => 0,
            };
            if let Some(slot) = self
                .topics
                .get_mut(topic)
                .and_then(|t| t.partition_responses.get_mut(partition))
                && slot.error_code == 0
                && isr < min_isr
            {
                let err = ApiError::new(
                    ResponseError::NotEnoughReplicasAfterAppend,
                    format!(
                        "the ISR shrank to {isr}, below min.insync.replicas {min_isr}, while the batch was committed"
                    ),
                );
                *slot = failed(slot.index, &err.into());
            }
        }
        ProduceResponse::default()
            .with_responses(self.topics)
            .with_throttle_time_ms(0)
            .with_node_endpoints(self.node_endpoints)
    }
}

/// Check and append every partition's batches. `None` when no response is
/// owed (acks=0). `listener` is the one the request came in on, whose
/// endpoints the client is told. Blocks on file I/O.
fn append_now(
    broker: &Broker,
    ctx: &RequestContext,
    req: ProduceRequest,
    (transaction_allowed, verified): (bool, Option<&Verified>),
) -> Option<Appended> {
    let listener = &*ctx.listener;
    let by_id = ctx.version >= TOPIC_ID_VERSION;
    let acks_error = if !matches!(req.acks, -1..=1) {
        Some(ApiError::new(
            ResponseError::InvalidRequiredAcks,
            format!("acks must be 0, 1 or -1, not {}", req.acks),
        ))
    } else if !transaction_allowed {
        Some(ApiError::new(
            ResponseError::TransactionalIdAuthorizationFailed,
            format!("{} may not write with this transactional id", ctx.principal),
        ))
    } else {
        None
    };
    // Checked before the topic is looked up, so a client that may not
    // write to a topic cannot auto-create it either.
    let write_denied = |name: &str| {
        (!broker.allowed_on_topic(ctx, AclOperation::Write, name))
            .then(|| crate::acls::topic_denied(ctx, AclOperation::Write, name))
    };

    let mut topics = Vec::with_capacity(req.topic_data.len());
    // Every partition's payload is appended in one go after the checks, so
    // the log takes one write for the whole request.
    let mut appends = Vec::new();
    let mut slots = Vec::new();
    let mut node_endpoints: Vec<NodeEndpoint> = Vec::new();
    let broker_defaults = broker.broker_topic_defaults();
    let transactional_id = req.transactional_id.as_ref().map(|id| id.to_string());
    for topic in req.topic_data {
        let state = match &acks_error {
            Some(err) => Err(err.clone()),
            None if by_id => broker
                .topic_by_id(topic.topic_id)
                .ok_or_else(|| {
                    ApiError::new(
                        ResponseError::UnknownTopicId,
                        format!("no topic has id {}", topic.topic_id),
                    )
                })
                .and_then(|state| match write_denied(&state.meta.name) {
                    Some(denied) => Err(denied),
                    None => Ok(state),
                })
                .and_then(|state| match is_internal(&state.meta.name) {
                    true => Err(internal_topic_refused("append to", &state.meta.name)),
                    false => Ok(state),
                }),
            None => match write_denied(&topic.name) {
                Some(denied) => Err(denied),
                // Checked before the lookup, so an internal name is never
                // auto-created.
                None if is_internal(&topic.name) => {
                    Err(internal_topic_refused("append to", &topic.name))
                }
                None if broker.topic(&topic.name).is_none()
                    && !broker.may_create_topic(ctx, &topic.name) =>
                {
                    Err(ApiError::unknown_topic(&topic.name))
                }
                None => broker.topic_or_auto_create(&topic.name),
            },
        };
        let state = state.and_then(|state| {
            crate::view::refuse_if_view(&state, "produce to")?;
            Ok(state)
        });
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let checked = state
                .as_ref()
                .map_err(|err| Refused::from(err.clone()))
                .and_then(|state| {
                    check(
                        broker,
                        state,
                        (data.index, data.records),
                        (req.acks, transactional_id.as_deref()),
                        &broker_defaults,
                        verified,
                    )
                });
            match checked {
                Ok((partition, records, summaries, min_isr)) => {
                    appends.push((partition, records, summaries));
                    let topic = state.as_ref().ok().map(Arc::clone);
                    slots.push(((topics.len(), partitions.len()), min_isr, topic));
                    // Filled in once the appends below are done.
                    partitions.push(PartitionProduceResponse::default().with_index(data.index));
                }
                Err(err) => {
                    if let Some(leader) = err.leader.as_deref()
                        && !node_endpoints.iter().any(|e| e.node_id == leader.leader_id)
                        && let Some((host, port)) =
                            broker.client_endpoint(leader.leader_id.0, listener)
                    {
                        node_endpoints.push(
                            NodeEndpoint::default()
                                .with_node_id(leader.leader_id)
                                .with_host(host.into())
                                .with_port(port),
                        );
                    }
                    partitions.push(failed(data.index, &err));
                }
            }
        }
        let mut response = TopicProduceResponse::default().with_partition_responses(partitions);
        if by_id {
            response.topic_id = topic.topic_id;
        } else {
            response.name = topic.name;
        }
        topics.push(response);
    }

    let mut waits = Vec::with_capacity(appends.len());
    let mut isr_checks = Vec::new();
    let ids: Vec<(PartitionId, usize)> =
        appends.iter().map(|(p, r, _)| (p.id(), r.len())).collect();
    let outcomes = broker.log().append_many_checked(&appends);
    let metrics = weir_metrics::metrics();
    for ((((topic, partition), min_isr, state), outcome), (id, bytes)) in
        slots.into_iter().zip(outcomes).zip(ids)
    {
        let Some(slot) = topics
            .get_mut(topic)
            .and_then(|t| t.partition_responses.get_mut(partition))
        else {
            continue;
        };
        match outcome {
            Ok(outcome) => {
                if let Some(state) = state.filter(|_| !outcome.duplicate) {
                    let records = outcome.last_offset - outcome.base_offset + 1;
                    metrics.topic_in(&state.meta.name, bytes, u64::try_from(records).unwrap_or(0));
                }
                slot.error_code = 0;
                slot.base_offset = outcome.base_offset;
                slot.log_append_time_ms = outcome.log_append_time;
                slot.log_start_offset = outcome.log_start_offset;
                // acks=all waits for the high watermark, acks=1 for local durability.
                waits.push(((topic, partition), outcome.ack_wait(req.acks == -1)));
                if req.acks == -1 {
                    isr_checks.push(((topic, partition), id, min_isr));
                }
            }
            Err(err) => {
                if let AppendError::Storage(storage) = &err {
                    report_storage_failure(storage);
                }
                *slot = failed(slot.index, &ApiError::from(err).into());
            }
        }
    }

    if req.acks == 0 && acks_error.is_none() {
        return None;
    }
    Some(Appended {
        topics,
        waits,
        isr_checks,
        replicas: broker.replicas.clone(),
        node_endpoints,
    })
}

/// Most per-record errors one partition's answer lists (KIP-467). Kafka
/// lists every one; each costs the broker a message, so past this many the
/// answer's error message still gives the total.
const RECORD_ERRORS_MAX: usize = 1_000;

/// Why a partition's records were refused: the error, and for
/// INVALID_RECORD the records at fault (Produce v8+ `record_errors`).
#[derive(Debug)]
struct Refused {
    error: ApiError,
    record_errors: Vec<BatchIndexAndErrorMessage>,
    /// For NOT_LEADER_OR_FOLLOWER: the leader (KIP-951).
    leader: Option<Box<LeaderIdAndEpoch>>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            record_errors: Vec::new(),
            leader: None,
        }
    }
}

/// The partition and payload to append, and the topic's
/// `min.insync.replicas`, after the checks the log does not make: this
/// broker leads the partition, and for acks=all its ISR is large enough.
fn check(
    broker: &Broker,
    state: &Arc<TopicState>,
    (index, records): (i32, Option<Bytes>),
    (acks, transactional_id): (i16, Option<&str>),
    broker_defaults: &std::collections::BTreeMap<String, String>,
    verified: Option<&Verified>,
) -> Result<(Partition, Bytes, weir_storage::Summaries, usize), Refused> {
    if !(0..state.meta.partitions).contains(&index) {
        return Err(ApiError::unknown_partition(&state.meta.name, index).into());
    }
    let id = weir_storage::PartitionId {
        topic_id: state.meta.id,
        partition: index,
    };
    let min_isr = topic_config::min_insync_replicas(&state.meta.configs, broker_defaults);
    match broker.replicas.leadership(id) {
        Leadership::NotLeader {
            leader,
            leader_epoch,
        } => {
            let mut refused = Refused::from(ApiError::new(
                ResponseError::NotLeaderOrFollower,
                format!(
                    "this broker does not lead {}-{index}; broker {leader} does",
                    state.meta.name
                ),
            ));
            refused.leader = Some(Box::new(
                LeaderIdAndEpoch::default()
                    .with_leader_id(leader.into())
                    .with_leader_epoch(leader_epoch),
            ));
            return Err(refused);
        }
        Leadership::Leader { isr } if acks == -1 && isr < min_isr => {
            return Err(ApiError::new(
                ResponseError::NotEnoughReplicas,
                format!(
                    "the ISR of {}-{index} has {isr} replicas, below min.insync.replicas {min_isr}",
                    state.meta.name
                ),
            )
            .into());
        }
        Leadership::Leader { .. } => {}
    }
    let partition = crate::topics::local_partition(state, index)?;
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::new(ResponseError::InvalidRecord, "no record batch to append"))?;
    if let Some((producer_id, epoch)) = transactional_producer(&records) {
        verify_transaction(
            broker,
            transactional_id,
            &partition,
            (&state.meta.name, index),
            (producer_id, epoch),
            verified,
        )?;
    }
    if partition.config().compact {
        check_keys(&state.meta.name, index, &records)?;
    }
    let config = partition.config();
    // A pending record lives in its partition: retention must not delete
    // it before it is due.
    let delay_max_ms = topic_config::delay_max_ms(&state.meta.configs, broker_defaults);
    let bound = match config.retention_ms {
        Some(retention) if retention < delay_max_ms => weir_storage::DelayBound {
            max_ms: retention,
            config: "retention.ms",
        },
        _ => weir_storage::DelayBound {
            max_ms: delay_max_ms,
            config: topic_config::DELAY_MAX_MS,
        },
    };
    let summaries = check_delays(
        broker,
        (&state.meta.name, index),
        &records,
        (config.compact, config.tag_summaries, bound),
    )?;
    Ok((partition, records, summaries, min_isr))
}

/// Delayed delivery's rules (`crate::delay`): every `weir.delay-ms` and
/// `weir.deliver-at-ms` header must be a non-negative decimal number, at
/// most one of them per record, due within `bound` (`weir.delay.max.ms`, or
/// `retention.ms` when that is shorter), and never on a compacted
/// topic or in a transaction; `weir.delayed-from-offset` is the broker's.
/// Refused with INVALID_RECORD naming each record at fault. The batches
/// are read once for this and for their index entries: the summaries
/// returned go to the append (with tag summaries when `tags`).
fn check_delays(
    broker: &Broker,
    (topic, partition): (&str, i32),
    records: &[u8],
    (compact, tags, bound): (bool, bool, weir_storage::DelayBound<'_>),
) -> Result<weir_storage::Summaries, Refused> {
    let invalid = |message: String| ApiError::new(ResponseError::InvalidRecord, message);
    let now = broker.clock.now_ms();
    let mut before = 0usize;
    let mut record_errors = Vec::new();
    let mut first = None;
    let checked = weir_storage::check_produced(records, now, bound, tags);
    for (header, answer) in checked.batches {
        let count = usize::try_from(header.record_count).unwrap_or(0);
        let refusal = match answer {
            Ok(false) => None,
            Ok(true) if compact => Some(format!(
                "{topic}-{partition} is compacted (cleanup.policy=compact), which keeps only the \
                 newest record per key: it takes no delayed records"
            )),
            Ok(true) if header.is_transactional() => Some(
                "delayed records cannot be part of a transaction: send them outside it".to_owned(),
            ),
            Ok(true) if !broker.delays.running() => {
                return Err(ApiError::new(
                    ResponseError::KafkaStorageError,
                    "delayed delivery is stopped on this broker (see its log); \
                     delayed records are refused until it is restarted",
                )
                .into());
            }
            Ok(true) => None,
            // The log refuses a batch it cannot read, with the code that
            // says why (UNSUPPORTED_COMPRESSION_TYPE, CORRUPT_MESSAGE, ...).
            Err(weir_storage::ValidateError::Unreadable(_)) => None,
            Err(weir_storage::ValidateError::BadRecords(bad)) => {
                for b in bad {
                    let at = before + b.index;
                    first.get_or_insert_with(|| format!("record {at}: {}", b.message));
                    if record_errors.len() < RECORD_ERRORS_MAX {
                        record_errors.push(
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(i32::try_from(at).unwrap_or(i32::MAX))
                                .with_batch_index_error_message(Some(StrBytes::from_string(
                                    b.message,
                                ))),
                        );
                    }
                }
                None
            }
        };
        if let Some(why) = refusal {
            return Err(invalid(why).into());
        }
        before += count;
    }
    match first {
        None => Ok(checked.summaries),
        Some(first) => Err(Refused {
            error: invalid(format!(
                "{} records of {topic}-{partition} have refused delayed-delivery headers; the \
                 first is {first}",
                record_errors.len()
            )),
            record_errors,
            leader: None,
        }),
    }
}

/// A compacted topic keeps the newest value per key, so a record without a
/// key could never be compacted: Kafka refuses the whole batch with
/// INVALID_RECORD and names each such record.
fn check_keys(topic: &str, partition: i32, records: &[u8]) -> Result<(), Refused> {
    let invalid = |message: String| ApiError::new(ResponseError::InvalidRecord, message);
    let positions = record_keys::null_key_positions(records).map_err(|err| {
        invalid(format!(
            "cannot check the record keys of {topic}-{partition}: {err}"
        ))
    })?;
    let Some(&first) = positions.first() else {
        return Ok(());
    };
    let why = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
    );
    let record_errors = positions
        .iter()
        .take(RECORD_ERRORS_MAX)
        .map(|&batch_index| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(batch_index)
                .with_batch_index_error_message(Some(StrBytes::from_string(why.clone())))
        })
        .collect();
    let error = invalid(format!(
        "One or more records have been rejected due to {} record errors in total; \
         the first is record {first}: {why}",
        positions.len()
    ));
    Err(Refused {
        record_errors,
        ..Refused::from(error)
    })
}

fn failed(index: i32, refused: &Refused) -> PartitionProduceResponse {
    let err = &refused.error;
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(err.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(StrBytes::from_string(err.message.clone())))
        .with_record_errors(refused.record_errors.clone())
        .with_current_leader(refused.leader.as_deref().cloned().unwrap_or_default())
}

/// The producer id and epoch of the first transactional batch in a produce
/// payload, if any. A payload too short to tell is left to the log, which
/// refuses malformed batches.
fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    batches(records)
        .map_while(Result::ok)
        .find(|(header, _)| header.is_transactional())
        .map(|(header, _)| (header.producer_id, header.producer_epoch))
}

/// A transactional batch may go to a partition only inside its producer's
/// transaction (KIP-890's verification): the produce must name the
/// transactional id, and unless the partition already holds the
/// producer's open transaction at the batch's epoch, the coordinator must
/// have it among the transaction's partitions: asked here, or before the
/// append (`verified`, [`join_transaction`]). Otherwise INVALID_TXN_STATE,
/// or the coordinator's answer (a fenced producer hears
/// INVALID_PRODUCER_EPOCH, as Kafka answers a produce).
fn verify_transaction(
    broker: &Broker,
    transactional_id: Option<&str>,
    partition: &Partition,
    (topic, index): (&str, i32),
    (producer_id, epoch): (i64, i16),
    verified: Option<&Verified>,
) -> Result<(), Refused> {
    let Some(id) = transactional_id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::new(
            ResponseError::InvalidTxnState,
            "a transactional batch must come with the producer's transactional id",
        )
        .into());
    };
    if partition.in_open_transaction(producer_id, epoch) {
        return Ok(());
    }
    let key = (topic.to_string(), index);
    let answer = match verified {
        None => broker.txns().verify(id, producer_id, epoch, &key),
        // A partition the coordinator was not asked about (its transaction
        // ended in between, or its topic was created by this produce) is
        // retried by the producer.
        Some(answers) => answers
            .get(&key)
            .cloned()
            .unwrap_or(Err(ResponseError::NotEnoughReplicas)),
    };
    answer.map_err(|code| {
        let code = match code {
            ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
            other => other,
        };
        ApiError::new(
            code,
            format!(
                "producer {producer_id} (epoch {epoch}) of transactional id {id} has not \
                     added {topic}-{index} to an open transaction"
            ),
        )
        .into()
    })
}

type Wait = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

/// Await every durability wait at once and return each result with its key.
async fn wait_all<K>(waits: Vec<(K, AckWait)>) -> Vec<(K, Result<(), StorageError>)> {
    let mut pending: Vec<Option<(K, Wait)>> = waits
        .into_iter()
        .map(|(key, wait)| Some((key, Box::pin(wait.wait()) as Wait)))
        .collect();
    let mut done = Vec::with_capacity(pending.len());
    std::future::poll_fn(|cx| {
        for slot in pending.iter_mut() {
            let ready = match slot {
                Some((_, wait)) => wait.as_mut().poll(cx),
                None => continue,
            };
            if let Poll::Ready(result) = ready
                && let Some((key, _)) = slot.take()
            {
                done.push((key, result));
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done
}

/// Log a storage failure at error level the first time it is seen. Once the
/// log is poisoned every produce fails the same way; one line says why, and
/// the repeats go to debug.
fn report_storage_failure(err: &StorageError) {
    static LAST: Mutex<Option<String>> = Mutex::new(None);
    let text = err.to_string();
    // A poisoned lock only loses the de-duplication: every failure is then
    // logged at error level.
    let mut last = weir_sync::lock(&LAST).ok();
    if last.as_deref().and_then(|l| l.as_deref()) == Some(text.as_str()) {
        tracing::debug!(error = %text, "produce failed: commit log unavailable");
    } else {
        tracing::error!(error = %text, "produce failed: commit log unavailable");
        if let Some(last) = last.as_deref_mut() {
            *last = Some(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_storage::RecordBatchHeader;

    use super::*;

    /// A batch header with the given attributes and `payload` bytes after it.
    fn batch(attributes: i16, payload: usize) -> Vec<u8> {
        type H = RecordBatchHeader;
        let mut out = vec![0u8; H::BYTES + payload];
        let length = (out.len() - H::LOG_OVERHEAD_BYTES) as i32;
        out[H::BATCH_LENGTH_AT..H::BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        out[H::MAGIC_AT] = 2;
        out[H::ATTRIBUTES_AT..H::ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        out
    }

    #[test]
    fn transactional_batch_is_found_behind_plain_ones() {
        let mut payload = batch(0, 10);
        payload.extend(batch(0x04, 3));
        assert_eq!(transactional_producer(&payload), None);
        payload.extend(batch(RecordBatchHeader::TRANSACTIONAL, 0));
        assert_eq!(transactional_producer(&payload), Some((0, 0)));
    }

    #[test]
    fn malformed_payload_is_left_to_the_log_without_panicking() {
        assert_eq!(None, transactional_producer(&[]));
        assert_eq!(None, transactional_producer(&[0xff; 22]));
        let mut negative = batch(0, 0);
        negative[RecordBatchHeader::BATCH_LENGTH_AT..RecordBatchHeader::LOG_OVERHEAD_BYTES]
            .copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(None, transactional_producer(&negative));
        let mut huge = batch(0, 0);
        huge[RecordBatchHeader::BATCH_LENGTH_AT..RecordBatchHeader::LOG_OVERHEAD_BYTES]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(None, transactional_producer(&huge));
    }
}
