//! The home page (`/`): the cluster at a glance (nodes, quorum, partitions
//! needing attention), live throughput, and every topic linking to its
//! page; and the cluster page (`/console/cluster`): each broker, the
//! quorum's voters and observers, and the partitions short of a leader or
//! of in-sync replicas.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};

use super::layout::{PageResult, Section, page, time};
use super::topics::topic_table;
use crate::AdminState;
use crate::brokers::{BrokersView, broker_list};
use crate::topics::{topic_detail, topic_list};

/// Most topics the cluster page describes when it looks for partitions
/// needing attention (each is one DescribeConfigs and a metadata read);
/// past it the page says the list is cut.
pub(crate) const ATTENTION_TOPICS_MAX: usize = 200;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(home))
        .route("/console", get(home))
        .route("/console/cluster", get(cluster))
}

async fn home(State(state): State<AdminState>) -> PageResult {
    let brokers = broker_list(&state).await?;
    let topics = topic_list(&state).await?;
    let replication = state.broker.replication_stats();
    let body = html! {
        section.cards {
            (cluster_card(&brokers))
            div.card {
                h2 { "Partitions needing attention" }
                dl {
                    dt { "Offline (no leader)" } dd.num #offline { (replication.offline) }
                    dt { "Under-replicated" } dd.num { (replication.under_replicated) }
                    dt { "Under min ISR" } dd.num { (replication.under_min_isr) }
                }
                a href="/console/cluster" { "Cluster details" }
            }
        }
        section {
            h2 { "Throughput" }
            (throughput_chart(None))
        }
        section {
            h2 { "Topics" }
            (topic_table(&topics))
        }
    };
    Ok(page("Overview", Section::Overview, body))
}

/// The cluster's identity, nodes and quorum in a card.
fn cluster_card(view: &BrokersView) -> Markup {
    let active = view.brokers.iter().filter(|b| b.state == "active").count();
    html! {
        div.card {
            h2 { "Cluster" }
            dl {
                dt { "Cluster id" } dd { code { (view.cluster_id) } }
                dt { "This node" } dd { (view.node_id) }
                dt { "Brokers" } dd { (active) " active of " (view.brokers.len()) }
                dt { "Quorum" }
                dd {
                    @match &view.quorum {
                        Some(q) if q.leader_id >= 0 => {
                            "leader " (q.leader_id) ", term " (q.leader_epoch) ", "
                            (q.voters.len()) " voters"
                        }
                        Some(_) => span.bad { "no leader" },
                        None => "single node (no quorum)",
                    }
                }
            }
        }
    }
}

/// A live throughput chart, of every topic or of `topic`: the page's
/// script polls `/console/throughput.json` and charts the rates.
pub(crate) fn throughput_chart(topic: Option<&str>) -> Markup {
    let src = match topic {
        Some(t) => format!(
            "/console/throughput.json?topic={}",
            super::layout::encode(t)
        ),
        None => "/console/throughput.json".to_owned(),
    };
    html! {
        div.chart data-throughput=(src) {
            p.muted.chart-note { "Waiting for two readings…" }
        }
    }
}

async fn cluster(State(state): State<AdminState>) -> PageResult {
    let view = broker_list(&state).await?;
    let topics = topic_list(&state).await?;
    let mut attention = Vec::new();
    let cut = topics.len() > ATTENTION_TOPICS_MAX;
    for t in topics
        .iter()
        .filter(|t| t.view_of.is_none())
        .take(ATTENTION_TOPICS_MAX)
    {
        // A topic deleted since the list is no longer there to need attention.
        let Ok(detail) = topic_detail(&state, &t.name).await else {
            continue;
        };
        for p in detail.partition_details {
            let why = if p.leader < 0 {
                Some("offline: no leader")
            } else if p.isr.len() < p.replicas.len() {
                Some("under-replicated")
            } else {
                None
            };
            if let Some(why) = why {
                attention.push((t.name.clone(), p, why));
            }
        }
    }
    let body = html! {
        section.cards { (cluster_card(&view)) }
        section {
            h2 { "Brokers" }
            table {
                thead { tr { th { "Node" } th { "Host" } th { "Rack" } th { "State" } th { "Listeners" } } }
                tbody {
                    @for b in &view.brokers {
                        tr {
                            td { (b.node_id) @if b.this_node { " (this node)" } }
                            td { (b.host) ":" (b.port) }
                            td { (b.rack.as_deref().unwrap_or("—")) }
                            td class=(if b.state == "active" { "good" } else { "bad" }) { (b.state) }
                            td {
                                @for l in &b.listeners {
                                    div { (l.name) " " (l.host) ":" (l.port)
                                        @if let Some(p) = &l.security_protocol { " (" (p) ")" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(q) = &view.quorum {
            section {
                h2 { "Metadata quorum" }
                p { "Leader " (q.leader_id) ", term " (q.leader_epoch) ", committed to offset " (q.high_watermark) }
                table {
                    thead { tr { th { "Node" } th { "Role" } th { "Log end" } th { "Last fetch" } th { "Last caught up" } } }
                    tbody {
                        @for (role, members) in [("voter", &q.voters), ("observer", &q.observers)] {
                            @for m in members {
                                tr {
                                    td.num { (m.node_id) }
                                    td { @if m.node_id == q.leader_id { "leader" } @else { (role) } }
                                    td.num { (m.log_end_offset) }
                                    td { (time(m.last_fetch_timestamp_ms)) }
                                    td { (time(m.last_caught_up_timestamp_ms)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Partitions needing attention" }
            @if attention.is_empty() {
                p.good #no-attention { "Every partition has a leader and all its replicas in sync." }
            } @else {
                table {
                    thead { tr { th { "Topic" } th { "Partition" } th { "Leader" } th { "Replicas" } th { "ISR" } th { "Why" } } }
                    tbody {
                        @for (topic, p, why) in &attention {
                            tr {
                                td { a href=(format!("/console/topics/{}", super::layout::encode(topic))) { (topic) } }
                                td.num { (p.partition) }
                                td.num { (p.leader) }
                                td { (format!("{:?}", p.replicas)) }
                                td { (format!("{:?}", p.isr)) }
                                td.bad { (why) }
                            }
                        }
                    }
                }
            }
            @if cut {
                p.muted { "Only the first " (ATTENTION_TOPICS_MAX) " topics were looked at." }
            }
        }
    };
    Ok(page("Cluster", Section::Cluster, body))
}
