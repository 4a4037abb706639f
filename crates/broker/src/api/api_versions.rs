//! ApiVersions: the APIs and version ranges this broker serves.
//!
//! A client asking at a version newer than served never reaches this
//! handler: `weir-protocol` answers it with a v0 body (KIP-511).

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    _ctx: &RequestContext,
    _req: ApiVersionsRequest,
) -> Result<ApiVersionsResponse, HandlerError> {
    Ok(response(&broker.advertised_apis(), broker.shares_enabled()))
}

/// The feature flags this broker supports, each at the level it finalizes
/// (Kafka's `kafka-features.sh describe`): `transaction.version` 2 is
/// KIP-890 part 2, which tells a Java client 4.0+ to end each transaction
/// with EndTxn v5 (its epoch bumped), and to let Produce v12 and
/// TxnOffsetCommit v5 add their partitions to the transaction.
const FEATURES: [(&str, i16, i16); 1] = [("transaction.version", 0, 2)];
/// With `group.share.enable`, share groups (KIP-932) are on: Kafka 4.1's
/// `share.version` 1, listed as supported and finalized.
const SHARE_FEATURE: (&str, i16, i16) = ("share.version", 0, 1);
/// The epoch of the finalized features: clients take a response's features
/// only when its epoch is newer than one they have seen, and the features
/// never change while a broker runs.
const FINALIZED_FEATURES_EPOCH: i64 = 1;

/// The same for every version: the fields a version lacks are left at
/// their defaults and not encoded (the features, from v3).
fn response(
    served: &[(
        kafka_protocol::messages::ApiKey,
        kafka_protocol::protocol::VersionRange,
    )],
    shares: bool,
) -> ApiVersionsResponse {
    let features = || FEATURES.iter().chain(shares.then_some(&SHARE_FEATURE));
    let api_keys = served
        .iter()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_throttle_time_ms(0)
        .with_api_keys(api_keys)
        .with_supported_features(
            features()
                .map(|&(name, min, max)| {
                    SupportedFeatureKey::default()
                        .with_name(StrBytes::from_static_str(name))
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(
            features()
                .map(|&(name, _, finalized)| {
                    FinalizedFeatureKey::default()
                        .with_name(StrBytes::from_static_str(name))
                        .with_min_version_level(finalized)
                        .with_max_version_level(finalized)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;

    #[test]
    fn every_served_api_is_listed_at_every_version() {
        for version in 0..=4 {
            let mut buf = BytesMut::new();
            response(Broker::served_apis(), false)
                .encode(&mut buf, version)
                .expect("encodes");
            let decoded = ApiVersionsResponse::decode(&mut buf.freeze(), version).expect("decodes");
            assert_eq!(decoded.error_code, 0);
            if version >= 3 {
                let tv = decoded
                    .finalized_features
                    .iter()
                    .find(|f| f.name.as_str() == "transaction.version")
                    .expect("transaction.version is finalized");
                assert_eq!(tv.max_version_level, 2, "KIP-890 part 2 is served");
                assert!(decoded.finalized_features_epoch >= 0);
            }
            assert_eq!(
                decoded.api_keys.len(),
                Broker::served_apis().len(),
                "v{version}"
            );
            for (key, range) in Broker::served_apis() {
                let listed = decoded
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == *key as i16)
                    .expect("listed");
                assert_eq!(
                    (listed.min_version, listed.max_version),
                    (range.min, range.max)
                );
            }
        }
    }

    #[test]
    fn the_data_path_apis_are_advertised() {
        for key in [
            ApiKey::ApiVersions,
            ApiKey::Metadata,
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::InitProducerId,
            ApiKey::OffsetForLeaderEpoch,
        ] {
            assert!(Broker::served_versions(key).is_some(), "{key:?}");
        }
    }

    /// Every advertised version must be decodable, or a client choosing it
    /// would have its connection closed.
    #[test]
    fn every_advertised_version_of_every_api_decodes() {
        use kafka_protocol::messages::RequestKind;
        let mut undecodable = Vec::new();
        for (key, range) in Broker::served_apis() {
            for version in range.min..=range.max {
                let mut buf = BytesMut::new();
                let Ok(empty) = default_request(*key) else {
                    undecodable.push((*key, version));
                    continue;
                };
                if empty.encode(&mut buf, version).is_err()
                    || RequestKind::decode(*key, &mut buf.freeze(), version).is_err()
                {
                    undecodable.push((*key, version));
                }
            }
        }
        assert!(
            undecodable.is_empty(),
            "advertised but not decodable: {undecodable:?}"
        );
    }

    fn default_request(key: ApiKey) -> Result<kafka_protocol::messages::RequestKind, ()> {
        use kafka_protocol::messages::RequestKind as R;
        Ok(match key {
            ApiKey::Produce => R::Produce(Default::default()),
            ApiKey::Fetch => R::Fetch(Default::default()),
            ApiKey::ListOffsets => R::ListOffsets(Default::default()),
            ApiKey::Metadata => R::Metadata(Default::default()),
            ApiKey::ApiVersions => R::ApiVersions(Default::default()),
            ApiKey::CreateTopics => R::CreateTopics(Default::default()),
            ApiKey::DeleteTopics => R::DeleteTopics(Default::default()),
            ApiKey::DeleteRecords => R::DeleteRecords(Default::default()),
            ApiKey::InitProducerId => R::InitProducerId(Default::default()),
            ApiKey::OffsetForLeaderEpoch => R::OffsetForLeaderEpoch(Default::default()),
            ApiKey::DescribeConfigs => R::DescribeConfigs(Default::default()),
            ApiKey::AlterConfigs => R::AlterConfigs(Default::default()),
            ApiKey::CreatePartitions => R::CreatePartitions(Default::default()),
            ApiKey::IncrementalAlterConfigs => R::IncrementalAlterConfigs(Default::default()),
            ApiKey::DescribeCluster => R::DescribeCluster(Default::default()),
            ApiKey::DescribeLogDirs => R::DescribeLogDirs(Default::default()),
            ApiKey::ElectLeaders => R::ElectLeaders(Default::default()),
            ApiKey::AlterPartitionReassignments => {
                R::AlterPartitionReassignments(Default::default())
            }
            ApiKey::ListPartitionReassignments => R::ListPartitionReassignments(Default::default()),
            ApiKey::DescribeQuorum => R::DescribeQuorum(Default::default()),
            ApiKey::FindCoordinator => R::FindCoordinator(Default::default()),
            ApiKey::JoinGroup => R::JoinGroup(Default::default()),
            ApiKey::SyncGroup => R::SyncGroup(Default::default()),
            ApiKey::Heartbeat => R::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => R::LeaveGroup(Default::default()),
            ApiKey::OffsetCommit => R::OffsetCommit(Default::default()),
            ApiKey::OffsetFetch => R::OffsetFetch(Default::default()),
            ApiKey::DescribeGroups => R::DescribeGroups(Default::default()),
            ApiKey::ListGroups => R::ListGroups(Default::default()),
            ApiKey::DeleteGroups => R::DeleteGroups(Default::default()),
            ApiKey::OffsetDelete => R::OffsetDelete(Default::default()),
            ApiKey::ConsumerGroupHeartbeat => R::ConsumerGroupHeartbeat(Default::default()),
            ApiKey::ConsumerGroupDescribe => R::ConsumerGroupDescribe(Default::default()),
            ApiKey::AddPartitionsToTxn => R::AddPartitionsToTxn(Default::default()),
            ApiKey::AddOffsetsToTxn => R::AddOffsetsToTxn(Default::default()),
            ApiKey::EndTxn => R::EndTxn(Default::default()),
            ApiKey::WriteTxnMarkers => R::WriteTxnMarkers(Default::default()),
            ApiKey::TxnOffsetCommit => R::TxnOffsetCommit(Default::default()),
            ApiKey::DescribeTransactions => R::DescribeTransactions(Default::default()),
            ApiKey::ListTransactions => R::ListTransactions(Default::default()),
            ApiKey::DescribeProducers => R::DescribeProducers(Default::default()),
            ApiKey::DescribeUserScramCredentials => {
                R::DescribeUserScramCredentials(Default::default())
            }
            ApiKey::AlterUserScramCredentials => R::AlterUserScramCredentials(Default::default()),
            ApiKey::SaslHandshake => R::SaslHandshake(Default::default()),
            ApiKey::SaslAuthenticate => R::SaslAuthenticate(Default::default()),
            ApiKey::CreateAcls => R::CreateAcls(Default::default()),
            ApiKey::DescribeAcls => R::DescribeAcls(Default::default()),
            ApiKey::DeleteAcls => R::DeleteAcls(Default::default()),
            ApiKey::DescribeClientQuotas => R::DescribeClientQuotas(Default::default()),
            ApiKey::AlterClientQuotas => R::AlterClientQuotas(Default::default()),
            _ => return Err(()),
        })
    }
}
