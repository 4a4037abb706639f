//! The frame every console page shares (head, assets, navigation), the
//! HTML error answer, and small formatters (sizes, times, counts).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::assets;
use crate::AdminError;

/// The sections of the navigation bar; a page names its own, which is
/// shown as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Cluster,
    Topics,
    Groups,
    Delayed,
    DeadLetters,
}

impl Section {
    const ALL: [(Section, &'static str, &'static str); 6] = [
        (Section::Overview, "Overview", "/"),
        (Section::Cluster, "Cluster", "/console/cluster"),
        (Section::Topics, "Topics", "/console/topics"),
        (Section::Groups, "Groups", "/console/groups"),
        (Section::Delayed, "Delayed", "/console/delayed"),
        (
            Section::DeadLetters,
            "Dead letters",
            "/console/dead-letters",
        ),
    ];
}

/// A whole page: `title` in the tab and as the heading, `body` under it.
pub(crate) fn page(title: &str, section: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Weir" }
                // No favicon request: the console asks nothing it does not serve.
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::url(assets::UPLOT_CSS));
                link rel="stylesheet" href=(assets::url(assets::CONSOLE_CSS));
                script src=(assets::url(assets::HTMX)) {}
                script src=(assets::url(assets::HTMX_JSON_ENC)) {}
                script src=(assets::url(assets::UPLOT)) {}
                script src=(assets::url(assets::CONSOLE_JS)) defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Weir" }
                    nav {
                        @for (s, label, href) in Section::ALL {
                            a href=(href) aria-current=[(s == section).then_some("page")] { (label) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An HTML answer with a status: `Markup` is 200.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

/// A console request that failed: the admin error, shown as a page with
/// its status (a fragment's caller shows it in place).
#[derive(Debug)]
pub(crate) struct PageError(pub AdminError);

impl From<AdminError> for PageError {
    fn from(err: AdminError) -> Self {
        Self(err)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self.0, "console request failed");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        html_response(
            status,
            page(
                title,
                Section::Overview,
                html! { p.error role="alert" { (self.0.to_string()) } },
            ),
        )
    }
}

/// What a console handler answers.
pub(crate) type PageResult = Result<Markup, PageError>;

/// `bytes` in B, KiB, MiB, GiB or TiB, one decimal above bytes.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("TiB"))
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss.mmm UTC`;
/// a negative time (Kafka's -1, none) as `—`.
pub(crate) fn time(ms: i64) -> String {
    if ms < 0 {
        return "—".to_owned();
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}.{milli:03} UTC")
}

/// Year, month and day of `days` since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A JSON island for the page's script: `<script type="application/json">`
/// with `id`, its text escaped so that no `</script>` can close it early.
pub(crate) fn json_island(id: &str, value: &impl serde::Serialize) -> Markup {
    let text = serde_json::to_string(value)
        .unwrap_or_else(|_| "null".to_owned())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    html! { script type="application/json" id=(id) { (PreEscaped(text)) } }
}

/// The path segment or query value `text`, percent-encoded (everything but
/// RFC 3986's unreserved characters).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(time(1_709_251_199_999), "2024-02-29 23:59:59.999 UTC");
        assert_eq!(time(-1), "—");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn a_json_island_cannot_close_its_script() {
        let island = json_island("x", &"</script><b>").into_string();
        assert!(!island.contains("</script><b>"), "{island}");
        assert!(island.ends_with("</script>"));
    }

    #[test]
    fn names_are_percent_encoded_for_urls() {
        assert_eq!(encode("dlq.orders-workers"), "dlq.orders-workers");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
