//! The console's static files, embedded in the binary so that the console
//! works with no network: htmx and its `json-enc` extension, uPlot and its
//! stylesheet (vendored from npm, versions and licences in
//! `crates/admin/assets/VENDORED.md`), and the console's own stylesheet
//! and script.
//!
//! Each is served at `/assets/{name}` with its content type and a year-long
//! `immutable` cache header: a vendored file's name carries its version,
//! and the console's own files carry the crate's version in their URL
//! ([`own_url`]), so a changed file is a new URL.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::{AdminError, AdminState};

/// The `Cache-Control` of every asset: a year, never revalidated.
pub(crate) const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// htmx, the page's requests and swaps.
pub(crate) const HTMX: &str = "htmx-2.0.11.min.js";
/// htmx's `json-enc` extension: forms post JSON bodies, as the write
/// routes take only `application/json`.
pub(crate) const HTMX_JSON_ENC: &str = "htmx-ext-json-enc-2.0.3.min.js";
/// uPlot, the charts.
pub(crate) const UPLOT: &str = "uPlot-1.6.32.iife.min.js";
/// uPlot's stylesheet.
pub(crate) const UPLOT_CSS: &str = "uPlot-1.6.32.min.css";
/// The console's stylesheet.
pub(crate) const CONSOLE_CSS: &str = "console.css";
/// The console's script: charts, polling and form answers.
pub(crate) const CONSOLE_JS: &str = "console.js";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every asset: its name, content type and bytes.
pub(crate) const ASSETS: [(&str, &str, &[u8]); 6] = [
    (HTMX, JS, include_bytes!("../../assets/htmx-2.0.11.min.js")),
    (
        HTMX_JSON_ENC,
        JS,
        include_bytes!("../../assets/htmx-ext-json-enc-2.0.3.min.js"),
    ),
    (
        UPLOT,
        JS,
        include_bytes!("../../assets/uPlot-1.6.32.iife.min.js"),
    ),
    (
        UPLOT_CSS,
        CSS,
        include_bytes!("../../assets/uPlot-1.6.32.min.css"),
    ),
    (
        CONSOLE_CSS,
        CSS,
        include_str!("../../assets/console.css").as_bytes(),
    ),
    (
        CONSOLE_JS,
        JS,
        include_str!("../../assets/console.js").as_bytes(),
    ),
];

/// The routes of the assets.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/assets/{name}", get(asset))
}

/// The URL of asset `name`; the console's own files get the crate's
/// version as a query, so an upgraded broker's files are fetched anew.
pub(crate) fn url(name: &str) -> String {
    if name == CONSOLE_CSS || name == CONSOLE_JS {
        own_url(name)
    } else {
        format!("/assets/{name}")
    }
}

/// `/assets/{name}?v={crate version}`.
fn own_url(name: &str) -> String {
    format!("/assets/{name}?v={}", env!("CARGO_PKG_VERSION"))
}

async fn asset(Path(name): Path<String>) -> Result<Response, AdminError> {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Err(AdminError::not_found(format!("no asset named {name}")));
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        *bytes,
    )
        .into_response())
}
