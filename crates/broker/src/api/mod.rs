//! One module per Kafka API, named after it, and the dispatch that routes a
//! decoded request to its handler.

mod acls;
mod alter_configs;
mod api_versions;
mod client_quotas;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_quorum;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
pub(crate) mod produce;
mod raft_voters;
mod reassignments;
mod share_acknowledge;
mod share_fetch;
mod share_group_describe;
mod share_group_heartbeat;
mod share_group_offsets;
mod share_group_state;
mod sync_group;
mod txn;
mod unregister_broker;
mod user_scram_credentials;

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::VersionRange;

use crate::{Broker, RequestContext};

/// The APIs and versions this broker serves, as advertised in ApiVersions.
/// A handler must serve every version listed for it: the whole range the
/// kafka-protocol crate decodes, unless narrowed here with a reason.
pub(crate) static SERVED: std::sync::LazyLock<Vec<(ApiKey, VersionRange)>> =
    std::sync::LazyLock::new(|| {
        [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::Metadata,
            ApiKey::ApiVersions,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::DeleteRecords,
            ApiKey::InitProducerId,
            ApiKey::OffsetForLeaderEpoch,
            ApiKey::DescribeConfigs,
            ApiKey::AlterConfigs,
            ApiKey::CreatePartitions,
            ApiKey::IncrementalAlterConfigs,
            ApiKey::DescribeCluster,
            ApiKey::DescribeLogDirs,
            ApiKey::DescribeQuorum,
            ApiKey::FindCoordinator,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::Heartbeat,
            ApiKey::LeaveGroup,
            ApiKey::OffsetCommit,
            ApiKey::OffsetFetch,
            ApiKey::DescribeGroups,
            ApiKey::ListGroups,
            ApiKey::DeleteGroups,
            ApiKey::OffsetDelete,
            ApiKey::ConsumerGroupHeartbeat,
            ApiKey::ConsumerGroupDescribe,
            ApiKey::ElectLeaders,
            ApiKey::AlterPartitionReassignments,
            ApiKey::ListPartitionReassignments,
            ApiKey::AddPartitionsToTxn,
            ApiKey::AddOffsetsToTxn,
            ApiKey::EndTxn,
            ApiKey::WriteTxnMarkers,
            ApiKey::DescribeTransactions,
            ApiKey::ListTransactions,
            ApiKey::TxnOffsetCommit,
            ApiKey::DescribeProducers,
            ApiKey::DescribeUserScramCredentials,
            ApiKey::AlterUserScramCredentials,
            ApiKey::SaslHandshake,
            ApiKey::SaslAuthenticate,
            ApiKey::CreateAcls,
            ApiKey::DescribeAcls,
            ApiKey::DeleteAcls,
            ApiKey::DescribeClientQuotas,
            ApiKey::AlterClientQuotas,
        ]
        .into_iter()
        .map(|key| match key {
            // The crate's range comes from the response schema; its request
            // decoder stops at v5 (v6 is KIP-939's two-phase commit).
            ApiKey::InitProducerId => (key, VersionRange { min: 0, max: 5 }),
            // The same for the group APIs whose response schema is ahead of
            // the request decoder (v10 addresses topics by id).
            ApiKey::OffsetCommit => (key, VersionRange { min: 2, max: 9 }),
            ApiKey::OffsetFetch => (key, VersionRange { min: 1, max: 9 }),
            _ => (key, key.valid_versions()),
        })
        .collect()
    });

/// The APIs only a cluster serves (a single node decodes them but closes
/// the connection, as for any API it does not serve), with [`SERVED`]
/// advertised by a cluster's brokers.
pub(crate) static CLUSTER_SERVED: std::sync::LazyLock<Vec<(ApiKey, VersionRange)>> =
    std::sync::LazyLock::new(|| {
        let mut served = SERVED.clone();
        for key in [
            ApiKey::UnregisterBroker,
            ApiKey::AddRaftVoter,
            ApiKey::RemoveRaftVoter,
        ] {
            served.push((key, key.valid_versions()));
        }
        served
    });

/// The share group APIs (KIP-932), served and advertised only with
/// `group.share.enable`: the versions librdkafka's share consumer and
/// Kafka 4.1's clients send.
pub(crate) static SHARE_SERVED: std::sync::LazyLock<Vec<(ApiKey, VersionRange)>> =
    std::sync::LazyLock::new(|| {
        [
            ApiKey::ShareGroupHeartbeat,
            ApiKey::ShareGroupDescribe,
            ApiKey::ShareFetch,
            ApiKey::ShareAcknowledge,
            ApiKey::DescribeShareGroupOffsets,
            ApiKey::AlterShareGroupOffsets,
            ApiKey::DeleteShareGroupOffsets,
        ]
        .into_iter()
        .map(|key| (key, key.valid_versions()))
        .collect()
    });

/// The share coordinator's inter-broker APIs (KIP-932's
/// ReadShareGroupState and WriteShareGroupState), served and advertised by
/// a cluster's brokers with `group.share.enable`.
pub(crate) static SHARE_CLUSTER_SERVED: std::sync::LazyLock<Vec<(ApiKey, VersionRange)>> =
    std::sync::LazyLock::new(|| {
        [ApiKey::ReadShareGroupState, ApiKey::WriteShareGroupState]
            .into_iter()
            .map(|key| (key, key.valid_versions()))
            .collect()
    });

/// `items` in the order first seen, each once by `key`. Handlers that
/// answer a list of names use it, so a request repeating a name cannot make a
/// response as many times larger as it repeats it: one answer per name is
/// all a client can use.
pub(crate) fn first_of_each<T, K: std::hash::Hash + Eq>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items
        .into_iter()
        .filter(|item| seen.insert(key(item)))
        .collect()
}

/// The APIs whose handling is mostly file I/O and fsyncs from start to end
/// (index files created or removed, metadata committed, log starts
/// checkpointed, index files read for a time look-up), or that read the
/// metadata store, whose lock a commit holds across its fsync: they run
/// whole on a blocking thread (see `crate::blocking`). The others do their
/// file I/O there piece by piece, since they also wait (a produce for its
/// fsync, a fetch for data, a group for its rebalance) and a wait must not
/// hold a thread.
const DISK_BOUND: [ApiKey; 21] = [
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DeleteRecords,
    ApiKey::ListOffsets,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeConfigs,
    ApiKey::DescribeLogDirs,
    ApiKey::DescribeQuorum,
    ApiKey::UnregisterBroker,
    ApiKey::AddRaftVoter,
    ApiKey::RemoveRaftVoter,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::CreateAcls,
    ApiKey::DescribeAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
];

/// Route a request to its handler. `None` means no response is sent
/// (a produce with acks=0).
pub(crate) async fn dispatch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    body: RequestKind,
) -> Result<Option<ResponseKind>, crate::HandlerError> {
    if !DISK_BOUND.contains(&ctx.api_key) {
        return route(broker, ctx, body).await;
    }
    let (broker, ctx) = (broker.clone(), ctx.clone());
    // These handlers never wait on anything but their own file I/O, so the
    // blocking thread drives them to the end.
    let runtime = tokio::runtime::Handle::current();
    crate::blocking::run(move || runtime.block_on(route(&broker, &ctx, body))).await?
}

async fn route(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    body: RequestKind,
) -> Result<Option<ResponseKind>, crate::HandlerError> {
    let response = match body {
        RequestKind::Produce(req) => {
            return Ok(produce::handle(broker, ctx, req)
                .await?
                .map(ResponseKind::Produce));
        }
        RequestKind::Fetch(req) => ResponseKind::Fetch(fetch::handle(broker, ctx, req).await?),
        RequestKind::ListOffsets(req) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, ctx, req).await?)
        }
        RequestKind::Metadata(req) => {
            ResponseKind::Metadata(metadata::handle(broker, ctx, req).await?)
        }
        RequestKind::ApiVersions(req) => {
            ResponseKind::ApiVersions(api_versions::handle(broker, ctx, req).await?)
        }
        RequestKind::CreateTopics(req) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, ctx, req).await?)
        }
        RequestKind::DeleteTopics(req) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, ctx, req).await?)
        }
        RequestKind::DeleteRecords(req) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, ctx, req).await?)
        }
        RequestKind::InitProducerId(req) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, ctx, req).await?)
        }
        RequestKind::OffsetForLeaderEpoch(req) => ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(broker, ctx, req).await?,
        ),
        RequestKind::AlterConfigs(req) => {
            ResponseKind::AlterConfigs(alter_configs::handle(broker, ctx, req).await?)
        }
        RequestKind::DescribeConfigs(req) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, ctx, req).await?)
        }
        RequestKind::CreatePartitions(req) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, ctx, req).await?)
        }
        RequestKind::IncrementalAlterConfigs(req) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(broker, ctx, req).await?,
        ),
        RequestKind::DescribeCluster(req) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, ctx, req).await?)
        }
        RequestKind::DescribeLogDirs(req) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, ctx, req).await?)
        }
        RequestKind::DescribeQuorum(req) => {
            ResponseKind::DescribeQuorum(describe_quorum::handle(broker, ctx, req).await?)
        }
        // A SASL listener's connection answers these itself
        // (weir-server's `sasl.rs`); one that reaches a handler came over
        // a listener without SASL, as Kafka answers it.
        RequestKind::SaslHandshake(_) => ResponseKind::SaslHandshake(
            kafka_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(kafka_protocol::ResponseError::IllegalSaslState.code()),
        ),
        RequestKind::SaslAuthenticate(_) => ResponseKind::SaslAuthenticate(
            kafka_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(kafka_protocol::ResponseError::IllegalSaslState.code())
                .with_error_message(Some(crate::admin::str_bytes(
                    "this listener does not authenticate with SASL".to_owned(),
                ))),
        ),
        RequestKind::DescribeUserScramCredentials(req) => {
            ResponseKind::DescribeUserScramCredentials(
                user_scram_credentials::describe(broker, ctx, req).await?,
            )
        }
        RequestKind::AlterUserScramCredentials(req) => ResponseKind::AlterUserScramCredentials(
            user_scram_credentials::alter(broker, ctx, req).await?,
        ),
        RequestKind::CreateAcls(req) => {
            ResponseKind::CreateAcls(acls::create(broker, ctx, req).await?)
        }
        RequestKind::DescribeAcls(req) => {
            ResponseKind::DescribeAcls(acls::describe(broker, ctx, req).await?)
        }
        RequestKind::DeleteAcls(req) => {
            ResponseKind::DeleteAcls(acls::delete(broker, ctx, req).await?)
        }
        RequestKind::DescribeClientQuotas(req) => {
            ResponseKind::DescribeClientQuotas(client_quotas::describe(broker, ctx, req).await?)
        }
        RequestKind::AlterClientQuotas(req) => {
            ResponseKind::AlterClientQuotas(client_quotas::alter(broker, ctx, req).await?)
        }
        RequestKind::FindCoordinator(req) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(broker, ctx, req).await?)
        }
        RequestKind::JoinGroup(req) => {
            ResponseKind::JoinGroup(join_group::handle(broker, ctx, req).await?)
        }
        RequestKind::SyncGroup(req) => {
            ResponseKind::SyncGroup(sync_group::handle(broker, ctx, req).await?)
        }
        RequestKind::Heartbeat(req) => {
            ResponseKind::Heartbeat(heartbeat::handle(broker, ctx, req).await?)
        }
        RequestKind::LeaveGroup(req) => {
            ResponseKind::LeaveGroup(leave_group::handle(broker, ctx, req).await?)
        }
        RequestKind::OffsetCommit(req) => {
            ResponseKind::OffsetCommit(offset_commit::handle(broker, ctx, req).await?)
        }
        RequestKind::OffsetFetch(req) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(broker, ctx, req).await?)
        }
        RequestKind::DescribeGroups(req) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, ctx, req).await?)
        }
        RequestKind::ListGroups(req) => {
            ResponseKind::ListGroups(list_groups::handle(broker, ctx, req).await?)
        }
        RequestKind::DeleteGroups(req) => {
            ResponseKind::DeleteGroups(delete_groups::handle(broker, ctx, req).await?)
        }
        RequestKind::OffsetDelete(req) => {
            ResponseKind::OffsetDelete(offset_delete::handle(broker, ctx, req).await?)
        }
        RequestKind::ConsumerGroupHeartbeat(req) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_group_heartbeat::handle(broker, ctx, req).await?,
        ),
        RequestKind::ConsumerGroupDescribe(req) => ResponseKind::ConsumerGroupDescribe(
            consumer_group_describe::handle(broker, ctx, req).await?,
        ),
        RequestKind::ShareGroupHeartbeat(req) if broker.shares_enabled() => {
            ResponseKind::ShareGroupHeartbeat(
                share_group_heartbeat::handle(broker, ctx, req).await?,
            )
        }
        RequestKind::ShareGroupDescribe(req) if broker.shares_enabled() => {
            ResponseKind::ShareGroupDescribe(share_group_describe::handle(broker, ctx, req).await?)
        }
        RequestKind::ShareFetch(req) if broker.shares_enabled() => {
            ResponseKind::ShareFetch(share_fetch::handle(broker, ctx, req).await?)
        }
        RequestKind::ShareAcknowledge(req) if broker.shares_enabled() => {
            ResponseKind::ShareAcknowledge(share_acknowledge::handle(broker, ctx, req).await?)
        }
        RequestKind::DescribeShareGroupOffsets(req) if broker.shares_enabled() => {
            ResponseKind::DescribeShareGroupOffsets(
                share_group_offsets::describe(broker, ctx, req).await?,
            )
        }
        RequestKind::AlterShareGroupOffsets(req) if broker.shares_enabled() => {
            ResponseKind::AlterShareGroupOffsets(
                share_group_offsets::alter(broker, ctx, req).await?,
            )
        }
        RequestKind::DeleteShareGroupOffsets(req) if broker.shares_enabled() => {
            ResponseKind::DeleteShareGroupOffsets(
                share_group_offsets::delete(broker, ctx, req).await?,
            )
        }
        RequestKind::ReadShareGroupState(req)
            if broker.shares_enabled() && broker.metadata().replicated() =>
        {
            ResponseKind::ReadShareGroupState(share_group_state::read(broker, ctx, req).await?)
        }
        RequestKind::WriteShareGroupState(req)
            if broker.shares_enabled() && broker.metadata().replicated() =>
        {
            ResponseKind::WriteShareGroupState(share_group_state::write(broker, ctx, req).await?)
        }
        RequestKind::ElectLeaders(req) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, ctx, req).await?)
        }
        RequestKind::AlterPartitionReassignments(req) => {
            ResponseKind::AlterPartitionReassignments(reassignments::alter(broker, ctx, req).await?)
        }
        RequestKind::ListPartitionReassignments(req) => {
            ResponseKind::ListPartitionReassignments(reassignments::list(broker, ctx, req).await?)
        }
        RequestKind::AddPartitionsToTxn(req) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions(broker, ctx, req).await?)
        }
        RequestKind::AddOffsetsToTxn(req) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets(broker, ctx, req).await?)
        }
        RequestKind::EndTxn(req) => ResponseKind::EndTxn(txn::end(broker, ctx, req).await?),
        RequestKind::WriteTxnMarkers(req) => {
            ResponseKind::WriteTxnMarkers(txn::write_markers(broker, ctx, req).await?)
        }
        RequestKind::TxnOffsetCommit(req) => {
            ResponseKind::TxnOffsetCommit(txn::offset_commit(broker, ctx, req).await?)
        }
        RequestKind::DescribeProducers(req) => {
            ResponseKind::DescribeProducers(txn::describe_producers(broker, ctx, req).await?)
        }
        RequestKind::DescribeTransactions(req) => {
            ResponseKind::DescribeTransactions(txn::describe(broker, ctx, req).await?)
        }
        RequestKind::ListTransactions(req) => {
            ResponseKind::ListTransactions(txn::list(broker, ctx, req).await?)
        }
        RequestKind::UnregisterBroker(req) if broker.metadata().replicated() => {
            ResponseKind::UnregisterBroker(unregister_broker::handle(broker, ctx, req).await?)
        }
        RequestKind::AddRaftVoter(req) if broker.metadata().replicated() => {
            ResponseKind::AddRaftVoter(raft_voters::add(broker, ctx, req).await?)
        }
        RequestKind::RemoveRaftVoter(req) if broker.metadata().replicated() => {
            ResponseKind::RemoveRaftVoter(raft_voters::remove(broker, ctx, req).await?)
        }
        _ => return Err(crate::HandlerError::Unsupported(ctx.api_key)),
    };
    Ok(Some(response))
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_of_each_keeps_the_first_of_each_key_in_order() {
        let items = vec![("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)];
        assert_eq!(
            super::first_of_each(items, |(name, _)| *name),
            [("b", 1), ("a", 2), ("c", 4)]
        );
    }
}
