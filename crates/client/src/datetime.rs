//! RFC 3339 times as the commands and the admin API read them
//! (`--to-datetime`, `--from-datetime`, `to_datetime`): milliseconds since
//! the Unix epoch, as Kafka's timestamps count, with a time without a zone
//! taken as UTC.

use std::time::UNIX_EPOCH;

/// What `--from-datetime` and `--to-datetime` accept, for their help and errors.
pub const DATETIME_FORMS: &str = "an RFC 3339 time such as 2026-11-24T08:00:00Z or \
2026-11-24T10:00:00+02:00; a time without a zone (2026-11-24T08:00:00) is UTC";

/// Parses an RFC 3339 instant into milliseconds since the Unix epoch, as
/// Kafka's timestamps count. The zone is `Z`, a `+HH:MM` / `-HH:MM` offset,
/// or absent, which means UTC (never the local zone: a script then gets the
/// same instant on every machine). Fractions of a second are allowed.
pub fn parse_datetime_ms(arg: &str) -> Result<i64, String> {
    let bad = |why: String| format!("{arg:?} is not {DATETIME_FORMS} ({why})");
    let (local, offset_ms) = split_utc_offset(arg).map_err(bad)?;
    let instant = humantime::parse_rfc3339_weak(local).map_err(|err| bad(err.to_string()))?;
    let since_epoch = instant
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{arg:?} is before 1970"))?;
    let local_ms =
        i64::try_from(since_epoch.as_millis()).map_err(|_| format!("{arg:?} is too far ahead"))?;
    // 10:00+02:00 is 08:00 UTC: the offset is subtracted.
    local_ms
        .checked_sub(offset_ms)
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| format!("{arg:?} is before 1970"))
}

/// The largest hour of a UTC offset RFC 3339 can write (+23:59).
const UTC_OFFSET_HOURS_MAX: i64 = 23;

/// Splits a trailing `+HH:MM` / `-HH:MM` offset off an RFC 3339 time: the
/// time without it, and the offset in milliseconds (0 when there is none).
fn split_utc_offset(arg: &str) -> Result<(&str, i64), String> {
    // An offset is the last six characters, after the time of day (so the
    // dashes of the date are never taken for one).
    let Some(split) = arg.len().checked_sub(6) else {
        return Ok((arg, 0));
    };
    let (Some(local), Some(offset)) = (arg.get(..split), arg.get(split..)) else {
        return Ok((arg, 0));
    };
    let sign = match offset.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Ok((arg, 0)),
    };
    if !local.contains(['T', 't', ' ']) {
        return Ok((arg, 0));
    }
    let bad = || format!("bad UTC offset {offset:?} (write +HH:MM or -HH:MM)");
    let field = |range: std::ops::Range<usize>, max: i64| -> Result<i64, String> {
        offset
            .get(range)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<i64>().ok())
            .filter(|n| *n <= max)
            .ok_or_else(bad)
    };
    if offset.as_bytes().get(3) != Some(&b':') {
        return Err(bad());
    }
    let minutes = field(1..3, UTC_OFFSET_HOURS_MAX)? * 60 + field(4..6, 59)?;
    Ok((local, sign * minutes * 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_milliseconds() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(
            parse_datetime_ms("2026-11-24T08:00:00Z"),
            Ok(1_795_507_200_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-24T08:00:00.250Z"),
            Ok(1_795_507_200_250)
        );
        assert!(parse_datetime_ms("yesterday").is_err());
    }

    #[test]
    fn datetimes_take_an_offset_and_zoneless_ones_are_utc() {
        let utc = parse_datetime_ms("2026-11-24T08:00:00Z");
        assert_eq!(parse_datetime_ms("2026-11-24T10:00:00+02:00"), utc);
        assert_eq!(parse_datetime_ms("2026-11-24T03:30:00-04:30"), utc);
        assert_eq!(parse_datetime_ms("2026-11-24T08:00:00+00:00"), utc);
        assert_eq!(parse_datetime_ms("2026-11-24T08:00:00"), utc);
        assert_eq!(
            parse_datetime_ms("2026-11-24T10:00:00.250+02:00"),
            Ok(1_795_507_200_250)
        );
        for bad in [
            "2026-11-24T08:00:00+2:00",
            "2026-11-24T08:00:00+24:00",
            "2026-11-24T08:00:00+02:60",
            "2026-11-24T08:00:00+0200",
            "2026-11-24",
            "1970-01-01T00:00:00+00:01",
        ] {
            assert!(parse_datetime_ms(bad).is_err(), "{bad:?} accepted");
        }
    }
}
