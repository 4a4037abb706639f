//! The web console: HTML pages served from the admin listener, for an
//! operator with a browser (docs/console.md). It owns the pages, their
//! layout, the embedded static files, the throughput readings and the lag
//! history the charts draw; it gathers no data of its own, but renders
//! what the JSON API's data functions return (`topics::topic_list`,
//! `brokers::broker_list`, ...), and its forms write through the JSON
//! write routes (htmx with the `json-enc` extension), then re-render.
//!
//! Pages are built on the server with maud and made live with htmx; the
//! charts are uPlot, drawn by `assets/console.js`. Every file is embedded
//! in the binary ([`assets`]): the console needs no network.
//!
//! | route | page |
//! |-------|------|
//! | `GET /` (and `/console`) | overview: cluster, partitions needing attention, throughput, topics ([`overview`]) |
//! | `GET /console/cluster` | brokers, quorum, partitions short of a leader or ISR |
//! | `GET /console/topics`, `/console/topics/{topic}` | topics (with a create form), one topic's partitions, configs and throughput ([`topics`]) |
//! | `GET /console/topics/{topic}/messages` | the message browser: by offset, time or key ([`messages`]) |
//! | `GET /console/topics/{topic}/delayed`, `/console/delayed` | delayed records pending ([`delayed`]) |
//! | `GET /console/groups`, `/console/groups/{group}` | consumer and share groups, lag over time ([`groups`]) |
//! | `GET /console/dead-letters`, `/console/dead-letters/{topic}` | dead-letter browser with re-drive ([`dead_letters`]) |
//! | `GET /console/throughput.json` | produce and fetch counters for the charts ([`throughput`]) |
//! | `GET /assets/{name}` | the embedded static files ([`assets`]) |
//!
//! Errors answer an HTML page with the admin error's status and message.
//! Bounds: each list a page shows is capped by a named constant in its
//! module; the lag history by [`lag::GROUPS_MAX`] and [`lag::POINTS_MAX`].

mod assets;
mod dead_letters;
mod delayed;
mod groups;
mod lag;
mod layout;
mod messages;
mod overview;
mod throughput;
mod topics;

use axum::Router;

use crate::AdminState;

/// The routes of the console.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .merge(assets::routes())
        .merge(overview::routes())
        .merge(topics::routes())
        .merge(messages::routes())
        .merge(delayed::routes())
        .merge(groups::routes())
        .merge(dead_letters::routes())
        .merge(throughput::routes())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{StatusCode, header};
    use tower::ServiceExt as _;

    use super::assets::{ASSETS, CACHE_CONTROL};
    use crate::topic_admin::{CreateTopic, create_topic};

    /// `GET path` of the whole admin router: status, content type, body.
    async fn get(state: crate::AdminState, path: &str) -> (StatusCode, String, Vec<u8>) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = crate::router(state)
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, content_type, body.to_vec())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_asset_is_embedded_and_served_with_its_type_and_a_long_cache() {
        let (state, _dir) = crate::tests::state();
        for (name, content_type, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
            let request = Request::get(format!("/assets/{name}"))
                .body(Body::empty())
                .expect("request");
            let response = crate::router(state.clone())
                .oneshot(request)
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{name}");
            assert_eq!(headers[header::CACHE_CONTROL], CACHE_CONTROL, "{name}");
        }
        let (status, _, _) = get(state, "/assets/jquery.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pages_load_only_what_the_broker_serves() {
        let (state, _dir) = crate::tests::state();
        let (status, content_type, body) = get(state, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/html; charset=utf-8");
        let html = String::from_utf8(body).expect("UTF-8");
        // Every script and stylesheet is one of ours: nothing from a CDN.
        let elsewhere: Vec<&str> = html
            .split(['"', '\''])
            .filter(|p| p.contains("://"))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "the page names another origin: {elsewhere:?}"
        );
        for (name, _, _) in ASSETS {
            assert!(
                html.contains(&format!("/assets/{name}")),
                "{name} not loaded"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_home_page_lists_the_topics_each_linking_to_its_page() {
        let (state, _dir) = crate::tests::state();
        for name in ["orders", "payments.v2"] {
            create_topic(
                &state,
                CreateTopic {
                    name: name.to_owned(),
                    partitions: Some(2),
                    replication_factor: None,
                    configs: Default::default(),
                    validate_only: false,
                },
            )
            .await
            .expect("created");
        }
        let (_, _, body) = get(state.clone(), "/").await;
        let html = String::from_utf8(body).expect("UTF-8");
        assert!(
            html.contains(r#"<a href="/console/topics/orders">orders</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"<a href="/console/topics/payments.v2">payments.v2</a>"#));
        let (status, _, body) = get(state.clone(), "/console/topics/payments.v2").await;
        assert_eq!(status, StatusCode::OK);
        let html = String::from_utf8(body).expect("UTF-8");
        assert!(html.contains("<h1>Topic payments.v2</h1>"), "{html}");
        assert_eq!(
            html.matches("/console/topics/payments.v2/messages?partition=")
                .count(),
            2
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unknown_topic_is_a_404_page() {
        let (state, _dir) = crate::tests::state();
        for path in [
            "/console/topics/nope",
            "/console/topics/nope/messages",
            "/console/dead-letters/nope",
            "/console/groups/nope",
        ] {
            let (status, content_type, body) = get(state.clone(), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(content_type, "text/html; charset=utf-8", "{path}");
            let html = String::from_utf8(body).expect("UTF-8");
            assert!(html.contains("role=\"alert\""), "{path}: {html}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_page_renders_on_a_fresh_broker() {
        let (state, _dir) = crate::tests::state();
        for path in [
            "/",
            "/console",
            "/console/cluster",
            "/console/topics",
            "/console/topics/table",
            "/console/groups",
            "/console/delayed",
            "/console/dead-letters",
        ] {
            let (status, content_type, _) = get(state.clone(), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "text/html; charset=utf-8", "{path}");
        }
        let (status, content_type, body) = get(state, "/console/throughput.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert!(
            json["bytes_in"].is_u64() && json["time_ms"].is_i64(),
            "{json}"
        );
    }
}
