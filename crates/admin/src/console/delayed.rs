//! The delayed-records pages, on `weir_broker::delay`'s tools (as the
//! `/v1/topics/{topic}/delayed` routes): `/console/delayed` (pending
//! counts and next due time of every topic with records pending) and
//! `/console/topics/{topic}/delayed` (its earliest pending records, each
//! with a button that cancels it through `DELETE
//! /v1/topics/{topic}/partitions/{partition}/delayed/{offset}`).

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use maud::{Markup, html};
use weir_broker::delay;

use super::layout::{PageResult, Section, encode, page, time};
use super::messages::shown_bytes;
use crate::delayed::refused;
use crate::topics::topic_list;
use crate::{AdminError, AdminState};

/// Most topics the summary page asks about (one question to the delay
/// mover each); past it the page says the list is cut.
pub(crate) const TOPICS_MAX: usize = 200;
/// Pending records a topic's page lists, earliest first.
pub(crate) const RECORDS_SHOWN: usize = 100;
/// Bytes of each key, value and header value shown.
pub(crate) const BYTES_SHOWN: usize = 256;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/console/delayed", get(summary))
        .route("/console/topics/{topic}/delayed", get(topic))
}

/// The delayed-records page of `topic`.
pub(crate) fn topic_href(topic: &str) -> String {
    format!("/console/topics/{}/delayed", encode(topic))
}

async fn summary(State(state): State<AdminState>) -> PageResult {
    let topics = topic_list(&state).await?;
    let data: Vec<_> = topics
        .iter()
        .filter(|t| !t.internal && t.view_of.is_none())
        .collect();
    let cut = data.len() > TOPICS_MAX;
    let mut rows = Vec::new();
    for t in data.into_iter().take(TOPICS_MAX) {
        // A topic deleted since the list has nothing pending.
        if let Ok(delays) = delay::describe(&state.broker, &t.name).await
            && delays.pending() > 0
        {
            rows.push((t.name.clone(), delays));
        }
    }
    let body = html! {
        @if rows.is_empty() {
            p.muted #no-delayed { "No delayed records are pending." }
        } @else {
            table #delayed-topics {
                thead { tr { th { "Topic" } th { "Pending" } th { "Next due" } } }
                tbody {
                    @for (name, d) in &rows {
                        tr {
                            td { a href=(topic_href(name)) { (name) } }
                            td.num { (d.pending()) }
                            td {
                                (d.next_due_ms.map_or_else(|| "—".to_owned(), time))
                                @if !d.exact { " (or earlier)" }
                            }
                        }
                    }
                }
            }
        }
        @if cut { p.muted { "Only the first " (TOPICS_MAX) " topics were asked." } }
    };
    Ok(page("Delayed records", Section::Delayed, body))
}

async fn topic(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
) -> PageResult {
    let Path(topic) = topic.map_err(AdminError::from)?;
    let listed = delay::list(&state.broker, &topic, None, RECORDS_SHOWN, BYTES_SHOWN)
        .await
        .map_err(refused)?;
    let body = html! {
        p {
            a href=(super::topics::topic_href(&topic)) { "Topic " (topic) }
            " · " (listed.delays.pending()) " pending"
            @if let Some(due) = listed.delays.next_due_ms { ", next due " (time(due)) }
        }
        @if listed.records.is_empty() {
            p.muted { "Nothing pending." }
        } @else {
            table #delayed-records {
                thead { tr { th { "Partition" } th { "Offset" } th { "Due" } th { "Key" } th { "Value" } th { "Headers" } th {} } }
                tbody {
                    @for r in &listed.records {
                        tr {
                            td.num { (r.partition) }
                            td.num { (r.offset) }
                            td { (time(r.due_ms)) }
                            @match &r.record {
                                Ok(v) => {
                                    td { (shown_bytes(v.key.as_deref())) }
                                    td { (shown_bytes(v.value.as_deref())) }
                                    td { (headers(&v.headers)) }
                                }
                                Err(why) => { td.bad colspan="3" { (why) } }
                            }
                            td {
                                button hx-delete=(format!("/v1/topics/{}/partitions/{}/delayed/{}", encode(&topic), r.partition, r.offset))
                                    hx-confirm="Cancel this delayed record?" hx-swap="none" data-changes="reload" { "Cancel" }
                            }
                        }
                    }
                }
            }
            @if !listed.exact || listed.cut { p.muted { "Only some of the pending records are shown." } }
        }
    };
    Ok(page(
        &format!("Delayed records of {topic}"),
        Section::Delayed,
        body,
    ))
}

fn headers(headers: &[(Vec<u8>, Option<Vec<u8>>)]) -> Markup {
    html! {
        @for (k, v) in headers {
            div.header { (shown_bytes(Some(k))) " = " (shown_bytes(v.as_deref())) }
        }
    }
}
