//! The time range a replay reads: its bounds as the user writes them, and which Hive
//! partitions (`dt=2026-11-28/hour=10`) can hold events inside it, so that a day's
//! replay lists a prefix but downloads only that day's objects.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `[from, to)` in epoch milliseconds; either bound may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl TimeRange {
    /// Both bounds as written: a date (`2026-11-28`, midnight UTC), a UTC time without
    /// offset (`2026-11-28T10:00:00`) or RFC 3339 (`2026-11-28T10:00:00+01:00`).
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, String> {
        let range = TimeRange {
            from_ms: from.map(|text| parse_bound(text, "from")).transpose()?,
            to_ms: to.map(|text| parse_bound(text, "to")).transpose()?,
        };
        if let (Some(from), Some(to)) = (range.from_ms, range.to_ms)
            && from >= to
        {
            return Err(format!(
                "`from` ({}) is not before `to` ({})",
                rfc3339(from),
                rfc3339(to)
            ));
        }
        Ok(range)
    }

    pub fn is_open(&self) -> bool {
        self.from_ms.is_none() && self.to_ms.is_none()
    }

    pub fn contains(&self, millis: i64) -> bool {
        self.from_ms.is_none_or(|from| millis >= from) && self.to_ms.is_none_or(|to| millis < to)
    }

    /// Whether an object at `path` may hold events in the range, judged by its `dt=` (or
    /// `date=`) and `hour=` path segments; a path without them may.
    pub fn may_hold(&self, path: &str) -> bool {
        let Some((start, length)) = partition_span(path) else {
            return true;
        };
        let end = start + length;
        self.from_ms.is_none_or(|from| end > from) && self.to_ms.is_none_or(|to| start < to)
    }
}

fn rfc3339(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .map_or_else(|| millis.to_string(), |time| time.to_rfc3339())
}

fn parse_bound(text: &str, name: &str) -> Result<i64, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    if let Ok(time) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        return Ok(time.and_utc().timestamp_millis());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_millis());
    }
    Err(format!(
        "`{name}` `{text}` is not a date (2026-11-28) or a time (2026-11-28T10:00:00Z)"
    ))
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The start and length of the time a Hive partition path covers: a day for `dt=`,
/// an hour with `hour=` beside it.
fn partition_span(path: &str) -> Option<(i64, i64)> {
    let value = |key: &str| {
        path.split('/')
            .find_map(|segment| segment.strip_prefix(key)?.strip_prefix('='))
    };
    let date = value("dt").or_else(|| value("date"))?;
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let midnight = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
    match value("hour").and_then(|hour| hour.parse::<i64>().ok()) {
        Some(hour) if (0..24).contains(&hour) => Some((midnight + hour * HOUR_MS, HOUR_MS)),
        _ => Some((midnight, DAY_MS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28T00:00:00Z
    const NOV_28: i64 = 1_795_824_000_000;

    #[test]
    fn bounds_are_dates_or_times() {
        let day = TimeRange::parse(Some("2026-11-28"), Some("2026-11-29")).unwrap();
        assert_eq!(day.from_ms, Some(NOV_28));
        assert_eq!(day.to_ms, Some(NOV_28 + DAY_MS));
        let hour = TimeRange::parse(Some("2026-11-28T10:00:00Z"), Some("2026-11-28T12:00:00+01:00"))
            .unwrap();
        assert_eq!(hour.from_ms, Some(NOV_28 + 10 * HOUR_MS));
        assert_eq!(hour.to_ms, Some(NOV_28 + 11 * HOUR_MS));
        assert_eq!(
            TimeRange::parse(Some("2026-11-28T10:00:00"), None).unwrap().from_ms,
            Some(NOV_28 + 10 * HOUR_MS)
        );
        let error = TimeRange::parse(Some("yesterday"), None).unwrap_err();
        assert!(error.contains("`from` `yesterday`"), "{error}");
        let error = TimeRange::parse(Some("2026-11-29"), Some("2026-11-28")).unwrap_err();
        assert!(error.contains("is not before"), "{error}");
    }

    #[test]
    fn the_range_is_half_open() {
        let day = TimeRange::parse(Some("2026-11-28"), Some("2026-11-29")).unwrap();
        assert!(day.contains(NOV_28));
        assert!(day.contains(NOV_28 + DAY_MS - 1));
        assert!(!day.contains(NOV_28 + DAY_MS));
        assert!(!day.contains(NOV_28 - 1));
        assert!(TimeRange::default().contains(i64::MIN));
    }

    #[test]
    fn partitions_outside_the_range_are_not_read() {
        let day = TimeRange::parse(Some("2026-11-28"), Some("2026-11-29")).unwrap();
        assert!(day.may_hold("lake/dt=2026-11-28/hour=23/device=a/x.parquet"));
        assert!(day.may_hold("lake/date=2026-11-28/x.parquet"));
        assert!(!day.may_hold("lake/dt=2026-11-29/hour=00/x.parquet"));
        assert!(!day.may_hold("lake/dt=2026-11-27/x.parquet"));
        // Nothing to judge by: read it, and let the time field decide per event.
        assert!(day.may_hold("lake/2026/11/27/x.parquet"));
        let hours = TimeRange::parse(Some("2026-11-28T10:30:00Z"), Some("2026-11-28T11:00:00Z"))
            .unwrap();
        assert!(hours.may_hold("dt=2026-11-28/hour=10/x.parquet"));
        assert!(!hours.may_hold("dt=2026-11-28/hour=11/x.parquet"));
        assert!(!hours.may_hold("dt=2026-11-28/hour=09/x.parquet"));
    }
}
