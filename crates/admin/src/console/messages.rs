//! The message browser, `/console/topics/{topic}/messages`: a topic's
//! records read by `messages::read_messages` (this node's replicas, what a
//! consumer would be given), from an offset, from a time, or only those
//! with a key, each shown with its partition, offset, timestamp, key,
//! value and headers, and a link on to the next page.
//!
//! The query is the form's (a plain GET, so a page can be bookmarked):
//! `partition`, `offset`, `time` (ms since the epoch, or a UTC date and
//! time `YYYY-MM-DD[T ]hh:mm[:ss[.mmm]][Z]`), `key`, `limit` (at most
//! [`LIMIT_MAX`] here), `format` (`utf8`, `json`, `hex`) and `isolation`;
//! an empty field is as if not given. Each key, value and header is shown
//! cut to [`BYTES_SHOWN`] bytes.

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{PageResult, Section, encode, page, time};
use crate::messages::{
    Format, Isolation, Message, MessagePage, MessageQuery, Shown, Start, read_messages,
};
use crate::{AdminError, AdminState};

/// Records a page shows when the form names no limit.
pub(crate) const LIMIT_DEFAULT: usize = 50;
/// The most records a page shows.
pub(crate) const LIMIT_MAX: usize = 500;
/// Bytes of each key, value and header shown.
pub(crate) const BYTES_SHOWN: usize = 2_048;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/console/topics/{topic}/messages", get(browser))
}

/// The message browser of `topic`.
pub(crate) fn browser_href(topic: &str) -> String {
    format!("/console/topics/{}/messages", encode(topic))
}

/// Bytes as text when they are UTF-8, else base64, marked; `null` for none.
pub(crate) fn shown_bytes(value: Option<&[u8]>) -> Markup {
    use base64::Engine as _;
    match value {
        None => html! { span.null { "null" } },
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => html! { (text) },
            Err(_) => html! {
                span.b64 title="not UTF-8: base64" {
                    "base64:" (base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        },
    }
}

/// Bytes as `messages` rendered them; `null` for none.
pub(crate) fn shown(value: Option<&Shown>) -> Markup {
    match value {
        None => html! { span.null { "null" } },
        Some(s) => html! {
            @match &s.data {
                serde_json::Value::String(text) => (text),
                other => code { (other.to_string()) },
            }
            @if s.cut { span.muted title=(format!("{} bytes in all", s.size)) { " …" } }
        },
    }
}

/// The browser's form, as given: every field text, empty when not given.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BrowseForm {
    #[serde(default)]
    partition: String,
    #[serde(default)]
    offset: String,
    #[serde(default)]
    time: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    isolation: String,
}

impl BrowseForm {
    /// The question the form asks, or 400 saying which field is wrong.
    fn query(&self) -> Result<MessageQuery, AdminError> {
        let partition = number::<i32>("partition", &self.partition)?;
        let offset = number::<i64>("offset", &self.offset)?;
        let time = match self.time.trim() {
            "" => None,
            text => Some(parse_time(text).ok_or_else(|| {
                AdminError::bad_request(format!(
                    "time {text:?} is neither ms since the epoch nor YYYY-MM-DDThh:mm[:ss] (UTC)"
                ))
            })?),
        };
        let start = match (offset, time) {
            (Some(_), Some(_)) => {
                return Err(AdminError::bad_request(
                    "give an offset or a time, not both",
                ));
            }
            (Some(o), None) if o < 0 => {
                return Err(AdminError::bad_request(format!(
                    "offset is {o}, at least 0"
                )));
            }
            (Some(o), None) => Start::Offset(o),
            (None, Some(ms)) => Start::Timestamp(ms),
            (None, None) => Start::default(),
        };
        let limit = number::<usize>("limit", &self.limit)?.unwrap_or(LIMIT_DEFAULT);
        if limit == 0 || limit > LIMIT_MAX {
            return Err(AdminError::bad_request(format!(
                "limit is {limit}, 1 to {LIMIT_MAX}"
            )));
        }
        let format = match self.format.as_str() {
            "" | "utf8" => Format::Utf8,
            "json" => Format::Json,
            "hex" => Format::Hex,
            other => return Err(AdminError::bad_request(format!("no format {other:?}"))),
        };
        let isolation = match self.isolation.as_str() {
            "" | "read_committed" => Isolation::ReadCommitted,
            "read_uncommitted" => Isolation::ReadUncommitted,
            other => return Err(AdminError::bad_request(format!("no isolation {other:?}"))),
        };
        Ok(MessageQuery {
            partition,
            start,
            key: (!self.key.is_empty()).then(|| self.key.clone().into_bytes()),
            limit,
            format,
            bytes: BYTES_SHOWN,
            isolation,
        })
    }
}

/// An optional number field: `None` when empty, 400 when not a number.
fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<Option<T>, AdminError> {
    match text.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| AdminError::bad_request(format!("{name} {t:?} is not a number"))),
    }
}

/// Milliseconds since the epoch from `text`: digits are ms already; else a
/// UTC date and time, `YYYY-MM-DD[T ]hh:mm[:ss[.mmm]][Z]`.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, clock) = text.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (clock, millis) = match clock.split_once('.') {
        Some((c, frac)) => {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            (c, digits.parse::<i64>().ok()?)
        }
        None => (clock, 0),
    };
    let mut c = clock.splitn(3, ':').map(str::parse::<i64>);
    let (h, min) = (c.next()?.ok()?, c.next()?.ok()?);
    let s = c.next().transpose().ok()?.unwrap_or(0);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    Some(((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + millis).filter(|ms| *ms >= 0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

async fn browser(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    form: Result<Query<BrowseForm>, QueryRejection>,
) -> PageResult {
    let Path(topic) = topic.map_err(AdminError::from)?;
    let Query(form) = form.map_err(AdminError::from)?;
    let asked = !(form.offset.is_empty() && form.time.is_empty() && form.key.is_empty());
    // A wrong field is said above the form, which keeps what was typed; an
    // unknown topic is a 404 page.
    let (page_read, error) = match form.query() {
        Ok(query) => match read_messages(&state, &topic, query).await {
            Ok(p) => (Some(p), None),
            Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND && !asked => {
                return Err(e.into());
            }
            Err(e) => (None, Some(e.to_string())),
        },
        Err(e) => (None, Some(e.to_string())),
    };
    let body = html! {
        p { a href=(super::topics::topic_href(&topic)) { "Topic " (topic) } }
        (browse_form(&topic, &form))
        @if let Some(e) = &error { p.error role="alert" #browse-error { (e) } }
        @if let Some(p) = &page_read { (results(&topic, &form, p)) }
    };
    Ok(page(&format!("Messages in {topic}"), Section::Topics, body))
}

fn browse_form(topic: &str, f: &BrowseForm) -> Markup {
    html! {
        form #browse method="get" action=(browser_href(topic)) {
            label { "Partition" input name="partition" type="number" min="0" size="5" value=(f.partition) placeholder="all"; }
            label { "From offset" input name="offset" type="number" min="0" value=(f.offset); }
            label { "or from time (UTC)" input name="time" value=(f.time) placeholder="2026-01-31T12:00:00 or ms"; }
            label { "Key" input name="key" value=(f.key) placeholder="any"; }
            label { "Limit" input name="limit" type="number" min="1" max=(LIMIT_MAX) size="5" value=(f.limit) placeholder=(LIMIT_DEFAULT); }
            label { "Format"
                select name="format" {
                    @for (v, label) in [("utf8", "text"), ("json", "JSON"), ("hex", "hex")] {
                        option value=(v) selected[f.format == v] { (label) }
                    }
                }
            }
            label { "Isolation"
                select name="isolation" {
                    @for v in ["read_committed", "read_uncommitted"] {
                        option value=(v) selected[f.isolation == v] { (v) }
                    }
                }
            }
            button type="submit" { "Browse" }
        }
    }
}

fn results(topic: &str, f: &BrowseForm, p: &MessagePage) -> Markup {
    // "Next page": each partition read on from where it stopped; offered
    // when one partition was read (offsets are per partition).
    let next = match p.partitions.as_slice() {
        [one] => one
            .next_offset
            .filter(|n| one.end_offset.is_some_and(|end| *n < end))
            .map(|n| {
                format!(
                    "{}?partition={}&offset={n}&key={}&limit={}&format={}&isolation={}",
                    browser_href(topic),
                    one.partition,
                    encode(&f.key),
                    encode(&f.limit),
                    encode(&f.format),
                    encode(&f.isolation)
                )
            }),
        _ => None,
    };
    html! {
        p.muted #browse-summary {
            (p.records.len()) " records shown, " (p.scanned_records) " read"
            @if p.cut { " (stopped at a read bound: go on with the next page)" }
        }
        @for problem in &p.problems { p.bad { (problem) } }
        @for part in p.partitions.iter().filter(|r| r.note.is_some()) {
            p.muted { "Partition " (part.partition) ": " (part.note.as_deref().unwrap_or("")) }
        }
        @if p.records.is_empty() {
            p.muted #no-messages { "No records." }
        } @else {
            table #messages {
                thead { tr { th.num { "Partition" } th.num { "Offset" } th { "Timestamp" } th { "Key" } th { "Value" } th { "Headers" } } }
                tbody {
                    @for m in &p.records { (message_row(m)) }
                }
            }
        }
        @if let Some(href) = next { p { a #next-page href=(href) { "Next page →" } } }
    }
}

fn message_row(m: &Message) -> Markup {
    html! {
        tr data-offset=(m.offset) {
            td.num { (m.partition) }
            td.num { (m.offset) }
            td title=(m.timestamp_type) { (time(m.timestamp_ms)) }
            td.bytes.key { (shown(m.key.as_ref())) }
            td.bytes.value { (shown(m.value.as_ref())) }
            td.headers {
                @for h in &m.headers {
                    div.header { (shown(Some(&h.key))) " = " (shown(h.value.as_ref())) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_ms_or_utc_dates() {
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(
            parse_time("2024-02-29 23:59:59.999"),
            Some(1_709_251_199_999)
        );
        assert_eq!(parse_time("2024-02-29T23:59"), Some(1_709_251_140_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2024-13-01T00:00"), None);
    }

    #[test]
    fn an_empty_field_is_as_if_not_given_and_a_wrong_one_is_refused() {
        let form = BrowseForm::default();
        let q = form
            .query()
            .expect("an empty form reads from the log start");
        assert_eq!(q.start, Start::default());
        assert_eq!((q.limit, q.partition, q.key), (LIMIT_DEFAULT, None, None));
        let form = BrowseForm {
            offset: "5".into(),
            time: "0".into(),
            ..BrowseForm::default()
        };
        assert!(form.query().is_err(), "offset and time together");
        let form = BrowseForm {
            limit: "100000".into(),
            ..BrowseForm::default()
        };
        assert!(form.query().is_err(), "a limit past the bound");
    }
}
