//! The group pages: `/console/groups` (consumer, classic and share groups
//! with their state, members and lag) and `/console/groups/{group}` (its
//! members, its lag per partition, refreshed every
//! [`LAG_POLL_SECONDS`] seconds from `/console/groups/{group}/lag`, and
//! its lag over time, charted from the samples those polls keep in
//! [`super::lag`]); a share group's page also shows its records in flight
//! and links to its dead-letter topic.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use maud::{Markup, html};

use super::lag::{self, Sample};
use super::layout::{PageResult, Section, encode, json_island, page};
use super::topics::topic_href;
use crate::groups::{GroupDetail, group_detail, group_list};
use crate::{AdminError, AdminState};

/// How often a group's page asks for its lag.
pub(crate) const LAG_POLL_SECONDS: u32 = 2;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/console/groups", get(groups))
        .route("/console/groups/{group}", get(group))
        .route("/console/groups/{group}/lag", get(lag_fragment))
}

/// The page of `group`.
pub(crate) fn group_href(group: &str) -> String {
    format!("/console/groups/{}", encode(group))
}

async fn groups(State(state): State<AdminState>) -> PageResult {
    let list = group_list(&state).await?;
    let body = html! {
        @if list.groups.is_empty() {
            p.muted #no-groups { "No groups are coordinated by this node." }
        } @else {
            table #groups {
                thead { tr { th { "Group" } th { "Type" } th { "State" } th.num { "Members" } th.num { "Lag" } } }
                tbody {
                    @for g in &list.groups {
                        tr data-group=(g.group_id) {
                            td { a href=(group_href(&g.group_id)) { (g.group_id) } }
                            td { (g.group_type) @if let Some(p) = &g.protocol_type { " (" (p) ")" } }
                            td { (g.state) }
                            td.num { (g.members) }
                            td.num { (opt(g.lag)) }
                        }
                    }
                }
            }
            @if list.cut { p.muted { "Only some groups are listed." } }
        }
    };
    Ok(page("Groups", Section::Groups, body))
}

async fn group(
    State(state): State<AdminState>,
    group: Result<Path<String>, PathRejection>,
) -> PageResult {
    let Path(group) = group.map_err(AdminError::from)?;
    let detail = group_detail(&state, &group).await?;
    let in_flight = if detail.group_type == "share" {
        state.broker.share_group_in_flight(&group)
    } else {
        None
    };
    let body = html! {
        section.cards {
            div.card {
                dl {
                    dt { "Type" } dd { (detail.group_type) @if let Some(p) = &detail.protocol_type { " (" (p) ")" } }
                    dt { "State" } dd { (detail.state) }
                    dt { "Members" } dd { (detail.members.len()) }
                    @if let Some(a) = &detail.assignor { dt { "Assignor" } dd { (a) } }
                    @if let Some(e) = detail.group_epoch { dt { "Epoch" } dd { (e) } }
                    @if let Some(t) = &detail.dead_letter_topic {
                        dt { "Dead letters to" }
                        dd { a href=(super::dead_letters::browser_href(t)) { (t) } }
                    }
                }
            }
        }
        section {
            h2 { "Lag over time" }
            div.chart data-lag-chart {
                p.muted.chart-note { "Sampled every " (LAG_POLL_SECONDS) " s while this page is open." }
            }
            div #group-lag hx-get=(format!("{}/lag", group_href(&group)))
                hx-trigger=(format!("every {LAG_POLL_SECONDS}s")) {
                (lag_table(&group, &detail, state.broker.clock().now_ms()))
            }
        }
        section {
            h2 { "Members" }
            @if detail.members.is_empty() {
                p.muted { "No members." }
            } @else {
                table #members {
                    thead { tr { th { "Member" } th { "Client" } th { "Host" } th { "Assigned" } } }
                    tbody {
                        @for m in &detail.members {
                            tr {
                                td { code { (m.member_id) } @if let Some(i) = &m.instance_id { " (" (i) ")" } }
                                td { (m.client_id) }
                                td { (m.host) }
                                td {
                                    @for tp in &m.assignment { span.tag { (tp.topic) "-" (tp.partition) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(views) = in_flight {
            section {
                h2 { "Records in flight" }
                table #in-flight {
                    thead { tr { th { "Topic" } th.num { "Partition" } th.num { "Start" } th.num { "End" } th.num { "Acquired" } th.num { "Redeliverable" } th.num { "Backing off" } th.num { "Dead-lettering" } } }
                    tbody {
                        @for v in &views {
                            tr {
                                td {
                                    @match &v.topic {
                                        Some(t) => a href=(topic_href(t)) { (t) },
                                        None => span.muted { "deleted topic " (v.topic_id) },
                                    }
                                }
                                td.num { (v.partition) }
                                td.num { (v.in_flight.start_offset) }
                                td.num { (v.in_flight.end_offset) }
                                td.num { (v.in_flight.acquired) }
                                td.num { (v.in_flight.redeliverable) }
                                td.num { (v.in_flight.backing_off) }
                                td.num { (v.in_flight.dead_lettering) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&format!("Group {group}"), Section::Groups, body))
}

/// The lag table, polled: each poll adds a sample to the group's history,
/// which goes with the table for the chart.
async fn lag_fragment(
    State(state): State<AdminState>,
    group: Result<Path<String>, PathRejection>,
) -> PageResult {
    let Path(group) = group.map_err(AdminError::from)?;
    let detail = group_detail(&state, &group).await?;
    Ok(lag_table(&group, &detail, state.broker.clock().now_ms()))
}

/// The group's lag per partition and in all, sampled into its history at
/// `now_ms`, with the history as a JSON island for the chart.
fn lag_table(group: &str, detail: &GroupDetail, now_ms: i64) -> Markup {
    let history = detail.lag.map(|lag| {
        lag::record(
            group,
            Sample {
                time_ms: now_ms,
                lag,
            },
        )
    });
    html! {
        p { "Total lag: " strong #group-lag-total { (opt(detail.lag)) } " records" }
        (json_island("lag-history", &history.unwrap_or_default()))
        @if detail.partitions.is_empty() {
            p.muted { "No committed offsets or assigned partitions." }
        } @else {
            table #group-partitions {
                thead { tr { th { "Topic" } th.num { "Partition" } th.num { "Committed" } th.num { "Log end" } th.num { "Lag" } th { "Members" } } }
                tbody {
                    @for p in &detail.partitions {
                        tr {
                            td { a href=(topic_href(&p.topic)) { (p.topic) } }
                            td.num { (p.partition) }
                            td.num { (opt(p.committed_offset)) }
                            td.num { (opt(p.log_end_offset)) }
                            td.num.lag { (opt(p.lag)) }
                            td { @for m in &p.member_ids { code { (m) } " " } }
                        }
                    }
                }
            }
        }
    }
}

fn opt(value: Option<i64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| v.to_string())
}
