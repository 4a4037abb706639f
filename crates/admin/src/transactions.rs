//! The transactional ids this node coordinates, as `weir txn list` and
//! `weir txn describe` (Kafka's `kafka-transactions.sh`) show them:
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/transactions` | [`TransactionList`]: per transactional id its state, producer id and epoch, timeout, start time and the partitions in its open transaction, by id; at most [`TRANSACTIONS_MAX`] (`cut` says when more exist) |
//!
//! From ListTransactions and DescribeTransactions sent to this broker
//! in-process: on a cluster, only the ids whose coordinator is this node.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use serde::Serialize;

use crate::kafka::{ask, expect_response, failed};
use crate::{AdminError, AdminState};

/// The most transactional ids listed (by id); the rest are left out.
pub(crate) const TRANSACTIONS_MAX: usize = 10_000;
/// ListTransactions v1: with the duration filter, without the pattern.
const LIST_VERSION: i16 = 1;
/// DescribeTransactions v0: its only version.
const DESCRIBE_VERSION: i16 = 0;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/v1/transactions", get(list))
}

/// The answer of `GET /v1/transactions`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TransactionList {
    /// The transactional ids, sorted.
    pub transactions: Vec<TransactionSummary>,
    /// More than [`TRANSACTIONS_MAX`] ids exist: the ones after are left
    /// out.
    pub cut: bool,
}

/// One transactional id.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TransactionSummary {
    /// The transactional id.
    pub transactional_id: String,
    /// Kafka's state: `Empty`, `Ongoing`, `PrepareCommit`, `PrepareAbort`,
    /// `CompleteCommit`, `CompleteAbort`, `PrepareEpochFence` or `Dead`.
    pub state: String,
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch (`None` when DescribeTransactions did not answer
    /// for the id, as for one that expired between the two requests).
    pub producer_epoch: Option<i16>,
    /// `transaction.timeout.ms`.
    pub timeout_ms: Option<i32>,
    /// When the open transaction started, in ms since the epoch; -1 when
    /// none is open.
    pub start_time_ms: Option<i64>,
    /// The partitions in the open transaction, sorted.
    pub partitions: Vec<crate::groups::TopicPartition>,
}

/// Every transactional id this node coordinates, with its state.
pub(crate) async fn transaction_list(state: &AdminState) -> Result<TransactionList, AdminError> {
    let request = ListTransactionsRequest::default().with_duration_filter(-1);
    let response = ask(&state.broker, request, LIST_VERSION).await?;
    let response = expect_response!(response, ListTransactions)?;
    if response.error_code != 0 {
        return Err(failed("ListTransactions", response.error_code, None));
    }
    let mut listed: Vec<(String, i64, String)> = response
        .transaction_states
        .into_iter()
        .map(|t| {
            (
                t.transactional_id.0.to_string(),
                t.producer_id.0,
                t.transaction_state.to_string(),
            )
        })
        .collect();
    listed.sort();
    let cut = listed.len() > TRANSACTIONS_MAX;
    listed.truncate(TRANSACTIONS_MAX);
    if listed.is_empty() {
        return Ok(TransactionList {
            transactions: Vec::new(),
            cut,
        });
    }
    let request = DescribeTransactionsRequest::default().with_transactional_ids(
        listed
            .iter()
            .map(|(id, _, _)| TransactionalId(id.clone().into()))
            .collect(),
    );
    let response = ask(&state.broker, request, DESCRIBE_VERSION).await?;
    let response = expect_response!(response, DescribeTransactions)?;
    let described: std::collections::HashMap<String, _> = response
        .transaction_states
        .into_iter()
        .filter(|t| t.error_code == 0)
        .map(|t| (t.transactional_id.0.to_string(), t))
        .collect();
    let transactions = listed
        .into_iter()
        .map(|(id, producer_id, listed_state)| {
            let d = described.get(&id);
            let mut partitions: Vec<crate::groups::TopicPartition> = d
                .map(|d| {
                    d.topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(|p| crate::groups::TopicPartition {
                                topic: t.topic.0.to_string(),
                                partition: *p,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            partitions.sort();
            TransactionSummary {
                state: d.map_or(listed_state, |d| d.transaction_state.to_string()),
                producer_id: d.map_or(producer_id, |d| d.producer_id.0),
                producer_epoch: d.map(|d| d.producer_epoch),
                timeout_ms: d.map(|d| d.transaction_timeout_ms),
                start_time_ms: d.map(|d| d.transaction_start_time_ms),
                partitions,
                transactional_id: id,
            }
        })
        .collect();
    Ok(TransactionList { transactions, cut })
}

async fn list(State(state): State<AdminState>) -> Result<Json<TransactionList>, AdminError> {
    transaction_list(&state).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_broker_without_transactions_lists_none() {
        let (state, _dir) = crate::tests::state();
        let list = transaction_list(&state).await.expect("transactions");
        assert!(list.transactions.is_empty());
        assert!(!list.cut);
    }
}
