//! The dead-letter browser: `/console/dead-letters` (every dead-letter
//! topic, `dead_letters::dead_letter_topics`, with its record estimate and
//! the share groups writing to it) and `/console/dead-letters/{topic}`
//! (its dead letters, read by `messages::read_messages`, each with where
//! it came from and why, from its `__dlq.errors.*` headers; and a form
//! that re-drives them through `POST
//! /v1/dead-letter-topics/{topic}/redrive`, as `weir dlq redrive` does).
//!
//! The browser shows the first [`RECORDS_SHOWN`] dead letters from
//! `offset` (the log start by default) of every partition.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{PageResult, Section, encode, page, size, time};
use super::messages::shown;
use crate::dead_letters::dead_letter_topics;
use crate::messages::{Format, Isolation, Message, MessageQuery, Start, read_messages};
use crate::{AdminError, AdminState};

/// Dead letters a page shows.
pub(crate) const RECORDS_SHOWN: usize = 100;
/// Bytes of each key, value and header shown.
pub(crate) const BYTES_SHOWN: usize = 1_024;
/// The prefix of the headers a dead letter carries (KIP-1191).
const ERRORS_PREFIX: &str = "__dlq.errors.";

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/console/dead-letters", get(list))
        .route("/console/dead-letters/{topic}", get(browser))
}

/// The dead-letter browser of `topic`.
pub(crate) fn browser_href(topic: &str) -> String {
    format!("/console/dead-letters/{}", encode(topic))
}

async fn list(State(state): State<AdminState>) -> PageResult {
    let topics = dead_letter_topics(&state).await?;
    let body = html! {
        @if topics.is_empty() {
            p.muted #no-dead-letter-topics { "No dead-letter topics: no share group writes dead letters, and no topic takes them." }
        } @else {
            table #dead-letter-topics {
                thead { tr { th { "Topic" } th.num { "Dead letters (est.)" } th.num { "Size here" } th.num { "Partitions" } th { "Written by" } th { "State" } } }
                tbody {
                    @for t in &topics {
                        tr data-topic=(t.topic) {
                            td { @if t.exists { a href=(browser_href(&t.topic)) { (t.topic) } } @else { (t.topic) } }
                            td.num { (t.records) }
                            td.num { (size(t.size_bytes)) }
                            td.num { (t.partitions) }
                            td { @for g in &t.groups { a.tag href=(super::groups::group_href(g)) { (g) } } }
                            td {
                                @if !t.exists { span.muted { "not created yet" } }
                                @else if !t.accepts_dead_letters { span.bad { "refuses dead letters (errors.deadletterqueue.group.enable is not true)" } }
                                @else { span.good { "ready" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Dead letters", Section::DeadLetters, body))
}

#[derive(Debug, Default, Deserialize)]
struct BrowseQuery {
    offset: Option<i64>,
}

/// A dead letter's `__dlq.errors.*` headers, by name without the prefix.
fn errors_of(m: &Message) -> BTreeMap<String, String> {
    m.headers
        .iter()
        .filter_map(|h| {
            let key = h.key.data.as_str()?;
            let name = key.strip_prefix(ERRORS_PREFIX)?;
            let value = match h.value.as_ref().map(|v| &v.data) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Some((name.to_owned(), value))
        })
        .collect()
}

async fn browser(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    query: Result<Query<BrowseQuery>, QueryRejection>,
) -> PageResult {
    let Path(topic) = topic.map_err(AdminError::from)?;
    let Query(query) = query.map_err(AdminError::from)?;
    let start = match query.offset {
        Some(o) if o < 0 => {
            return Err(AdminError::bad_request(format!("offset is {o}, at least 0")).into());
        }
        Some(o) => Start::Offset(o),
        None => Start::default(),
    };
    let read = read_messages(
        &state,
        &topic,
        MessageQuery {
            partition: None,
            start,
            key: None,
            limit: RECORDS_SHOWN,
            format: Format::Utf8,
            bytes: BYTES_SHOWN,
            isolation: Isolation::ReadCommitted,
        },
    )
    .await?;
    let rows: Vec<(&Message, BTreeMap<String, String>)> =
        read.records.iter().map(|m| (m, errors_of(m))).collect();
    // The topic most dead letters came from: where a re-drive goes back to.
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, errors) in &rows {
        if let Some(t) = errors.get("topic") {
            *sources.entry(t.as_str()).or_default() += 1;
        }
    }
    let back_to = sources
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(t, _)| (*t).to_owned())
        .unwrap_or_default();
    let body = html! {
        section {
            h2 { "Re-drive" }
            p.muted {
                "Produces the dead letters not re-driven yet to a topic (with their copy of the record, or the original read back), "
                "and remembers how far it got, as " code { "weir dlq redrive" } " does."
            }
            form #redrive hx-post=(format!("/v1/dead-letter-topics/{}/redrive", encode(&topic)))
                hx-ext="json-enc" hx-swap="none" hx-vals="js:{...weirConsole.objects(this)}"
                data-changes="dead-letters" data-keep {
                label { "To topic " input name="to" required value=(back_to); }
                label { "Only where (KEY=VALUE, comma-separated)"
                    input name="where" data-json-object placeholder="delivery.count=5";
                }
                button type="submit" { "Re-drive" }
                output.form-answer role="status" {}
            }
        }
        section {
            h2 { "Dead letters" }
            @if rows.is_empty() {
                p.muted #no-dead-letters { "No dead letters." }
            } @else {
                table #dead-letters {
                    thead { tr { th.num { "Partition" } th.num { "Offset" } th { "Written" } th { "From" } th { "Group" } th.num { "Deliveries" } th { "Why" } th { "Copy of the record" } } }
                    tbody {
                        @for (m, errors) in &rows {
                            tr data-offset=(m.offset) {
                                td.num { (m.partition) }
                                td.num { (m.offset) }
                                td { (time(m.timestamp_ms)) }
                                td { (source(errors)) }
                                td { @if let Some(g) = errors.get("group") { a href=(super::groups::group_href(g)) { (g) } } }
                                td.num { (errors.get("delivery.count").map(String::as_str).unwrap_or("")) }
                                td { (errors.get("message").map(String::as_str).unwrap_or("")) }
                                td.bytes { (shown(m.value.as_ref())) }
                            }
                        }
                    }
                }
            }
            @if read.records.len() >= RECORDS_SHOWN || read.cut {
                p.muted { "Only the first " (RECORDS_SHOWN) " are shown: "
                    a href=(super::messages::browser_href(&topic)) { "browse them all" } }
            }
        }
    };
    Ok(page(
        &format!("Dead letters in {topic}"),
        Section::DeadLetters,
        body,
    ))
}

/// `TOPIC/PARTITION/OFFSET` of the record a dead letter stands for, the
/// topic linked.
fn source(errors: &BTreeMap<String, String>) -> Markup {
    let get = |k: &str| errors.get(k).map(String::as_str).unwrap_or("?");
    html! {
        @if let Some(t) = errors.get("topic") {
            a href=(super::topics::topic_href(t)) { (t) } "/" (get("partition")) "/" (get("offset"))
        }
    }
}
