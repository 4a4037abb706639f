//! The topic pages: `/console/topics` (every topic, and a form that
//! creates one through `POST /v1/topics`), `/console/topics/table` (the
//! list alone, which the page reloads after a write), and
//! `/console/topics/{topic}` (its partitions with offsets and sizes, its
//! configs, its live throughput, and links to its messages and delayed
//! records).

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use maud::{Markup, html};

use super::layout::{PageResult, Section, encode, page, size};
use super::overview::throughput_chart;
use crate::AdminState;
use crate::topics::{TopicSummary, topic_detail, topic_list};

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/console/topics", get(topics))
        .route("/console/topics/table", get(table))
        .route("/console/topics/{topic}", get(topic))
}

/// The page of `topic`.
pub(crate) fn topic_href(topic: &str) -> String {
    format!("/console/topics/{}", encode(topic))
}

/// Every topic in a table, each linking to its page.
pub(crate) fn topic_table(topics: &[TopicSummary]) -> Markup {
    html! {
        @if topics.is_empty() {
            p.muted #no-topics { "No topics yet." }
        } @else {
            table #topics {
                thead {
                    tr { th { "Topic" } th { "Partitions" } th { "Replication" } th { "Size here" } th { "Records (est.)" } th { "Kind" } }
                }
                tbody {
                    @for t in topics {
                        tr data-topic=(t.name) {
                            td { a href=(topic_href(&t.name)) { (t.name) } }
                            td.num { (t.partitions) }
                            td.num { (t.replication_factor) }
                            td.num { (size(t.size_bytes)) }
                            td.num { (t.records) }
                            td { (kind(t)) }
                        }
                    }
                }
            }
        }
    }
}

/// What sort of topic it is, in a word or two.
fn kind(t: &TopicSummary) -> Markup {
    html! {
        @if t.internal { span.tag { "internal" } }
        @if let Some(source) = &t.view_of {
            span.tag { "view of " a href=(topic_href(source)) { (source) } }
        }
        @if t.dead_letter {
            span.tag { a href=(super::dead_letters::browser_href(&t.name)) { "dead letters" } }
        }
    }
}

async fn topics(State(state): State<AdminState>) -> PageResult {
    let topics = topic_list(&state).await?;
    let body = html! {
        section {
            h2 { "Create a topic" }
            form #create-topic hx-post="/v1/topics" hx-ext="json-enc" hx-swap="none"
                hx-vals="js:{...weirConsole.numbers(this)}" data-changes="topics" {
                label { "Name " input name="name" required pattern="[a-zA-Z0-9._\\-]{1,249}"; }
                label { "Partitions " input name="partitions" type="number" min="1" value="1" data-number; }
                label { "Replication factor " input name="replication_factor" type="number" min="1" value="1" data-number; }
                button type="submit" { "Create" }
                output.form-answer role="status" {}
            }
        }
        section {
            h2 { "Topics" }
            div #topic-table hx-get="/console/topics/table" hx-trigger="weir:topics from:body" {
                (topic_table(&topics))
            }
        }
    };
    Ok(page("Topics", Section::Topics, body))
}

async fn table(State(state): State<AdminState>) -> PageResult {
    Ok(topic_table(&topic_list(&state).await?))
}

async fn topic(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
) -> PageResult {
    let Path(topic) = topic.map_err(crate::AdminError::from)?;
    let detail = topic_detail(&state, &topic).await?;
    let s = &detail.summary;
    let messages = super::messages::browser_href(&s.name);
    let body = html! {
        section.cards {
            div.card {
                dl {
                    dt { "Topic id" } dd { code { (s.topic_id) } }
                    dt { "Partitions" } dd { (s.partitions) " (" (s.partitions_held) " held here)" }
                    dt { "Replication factor" } dd { (s.replication_factor) }
                    dt { "Size here" } dd { (size(s.size_bytes)) }
                    dt { "Records (est.)" } dd #topic-records { (s.records) }
                    dt { "Kind" } dd { (kind(s)) @if !s.internal && s.view_of.is_none() && !s.dead_letter { "topic" } }
                }
                p {
                    a #browse-messages href=(messages) { "Browse messages" }
                    " · "
                    a href=(super::delayed::topic_href(&s.name)) { "Delayed records" }
                    @if s.dead_letter {
                        " · " a href=(super::dead_letters::browser_href(&s.name)) { "Dead-letter browser" }
                    }
                }
            }
        }
        section {
            h2 { "Throughput" }
            (throughput_chart(Some(&s.name)))
        }
        section {
            h2 { "Partitions" }
            table #partitions {
                thead {
                    tr {
                        th { "Partition" } th { "Leader" } th { "Epoch" } th { "Replicas" } th { "ISR" }
                        th { "Log start" } th { "High watermark" } th { "Last stable" } th { "Log end" } th { "Size" } th { "Note" }
                    }
                }
                tbody {
                    @for p in &detail.partition_details {
                        tr {
                            td.num { a href=(format!("{messages}?partition={}", p.partition)) { (p.partition) } }
                            td.num class=(if p.leader < 0 { "bad" } else { "" }) { (p.leader) }
                            td.num { (p.leader_epoch) }
                            td { (list(&p.replicas)) }
                            td class=(if p.isr.len() < p.replicas.len() { "bad" } else { "" }) { (list(&p.isr)) }
                            td.num { (opt(p.log_start_offset)) }
                            td.num { (opt(p.high_watermark)) }
                            td.num { (opt(p.last_stable_offset)) }
                            td.num { (opt(p.log_end_offset)) }
                            td.num { (p.size_bytes.map(size).unwrap_or_else(|| "—".to_owned())) }
                            td.muted { (p.note.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Configs" }
            table #configs {
                thead { tr { th { "Name" } th { "Value" } th { "Source" } } }
                tbody {
                    @for c in &detail.configs {
                        tr class=(if c.source == "DYNAMIC_TOPIC_CONFIG" { "set" } else { "" }) {
                            td { code { (c.name) } }
                            td {
                                @if c.sensitive { em { "hidden" } }
                                @else { (c.value.as_deref().unwrap_or("")) }
                            }
                            td.muted { (c.source) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&format!("Topic {}", s.name), Section::Topics, body))
}

fn list(ids: &[i32]) -> String {
    ids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt(value: Option<i64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| v.to_string())
}
