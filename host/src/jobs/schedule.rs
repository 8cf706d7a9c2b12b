//! When a job fires: a cron pattern in a time zone (`schedule = "0 2 * * *"`,
//! `time_zone = "Europe/Berlin"`), or a fixed period aligned to the epoch (`every =
//! "1h"` fires on every full hour, UTC).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use super::Slot;

/// A job's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: Box<Cron>,
        zone: Tz,
        text: String,
    },
    Every(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("`{text}` is not a cron schedule: {reason}")]
    Cron { text: String, reason: String },
    #[error("unknown time zone `{0}`")]
    Zone(String),
    #[error("`{0}` is not a period: write a number and a unit, e.g. `30s`, `15m`, `1h`, `1d`")]
    Period(String),
    #[error("`every` must be at least one second")]
    TooShort,
}

impl Schedule {
    /// A cron pattern of five fields (minute first) or six (second first).
    pub fn cron(text: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = match zone {
            Some(name) => Tz::from_str(name).map_err(|_| ScheduleError::Zone(name.to_owned()))?,
            None => Tz::UTC,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|error| ScheduleError::Cron {
                text: text.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            zone,
            text: text.to_owned(),
        })
    }

    /// A period: `90s`, `15m`, `1h`, `1d` (a bare number is seconds).
    pub fn every(text: &str) -> Result<Schedule, ScheduleError> {
        let period = parse_period(text)?;
        if period < Duration::from_secs(1) {
            return Err(ScheduleError::TooShort);
        }
        Ok(Schedule::Every(period))
    }

    /// The first firing strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(period) => {
                let period = period.as_millis() as i64;
                Some((after_ms.div_euclid(period) + 1) * period)
            }
            Schedule::Cron { cron, zone, .. } => {
                // Cron works in whole seconds.
                let after = DateTime::<Utc>::from_timestamp(after_ms.div_euclid(1000), 0)?
                    .with_timezone(zone);
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|next| next.timestamp() * 1000)
            }
        }
    }

    /// The last firing at or before `at_ms`.
    pub fn latest_at(&self, at_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(period) => {
                let period = period.as_millis() as i64;
                Some(at_ms.div_euclid(period) * period)
            }
            Schedule::Cron { cron, zone, .. } => {
                let at =
                    DateTime::<Utc>::from_timestamp(at_ms.div_euclid(1000), 0)?.with_timezone(zone);
                cron.find_previous_occurrence(&at, true)
                    .ok()
                    .map(|previous| previous.timestamp() * 1000)
            }
        }
    }

    /// The slot that ends at the firing `end_ms`: it starts at the firing before.
    pub fn slot(&self, end_ms: i64) -> Slot {
        let start_ms = self.latest_at(end_ms - 1).unwrap_or(end_ms);
        Slot { start_ms, end_ms }
    }

    /// How the schedule reads in lists: the pattern, or `every 1h`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron { text, zone, .. } if *zone == Tz::UTC => text.clone(),
            Schedule::Cron { text, zone, .. } => format!("{text} ({zone})"),
            Schedule::Every(period) => format!("every {}", format_period(*period)),
        }
    }
}

fn parse_period(text: &str) -> Result<Duration, ScheduleError> {
    let bad = || ScheduleError::Period(text.to_owned());
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let number: u64 = trimmed[..digits].parse().map_err(|_| bad())?;
    let unit = match trimmed[digits..].trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

fn format_period(period: Duration) -> String {
    let secs = period.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    /// 2026-12-07T10:30:00Z.
    const NOW: i64 = 1_796_639_400_000;

    #[test]
    fn a_nightly_slot_covers_the_day_before_it_fires() {
        let nightly = Schedule::cron("0 0 * * *", None).unwrap();
        let midnight = nightly.latest_at(NOW).unwrap();
        assert_eq!(Slot::format(midnight), "2026-12-07T00:00:00Z");
        assert_eq!(nightly.next_after(midnight), Some(midnight + DAY));
        let slot = nightly.slot(midnight);
        assert_eq!(slot.start_ms, midnight - DAY);
        assert_eq!(
            slot.expand("from={slot_start} to={slot_end} day={slot_date}"),
            "from=2026-12-06T00:00:00Z to=2026-12-07T00:00:00Z day=2026-12-06"
        );
    }

    #[test]
    fn a_time_zone_moves_the_firing() {
        let berlin = Schedule::cron("0 2 * * *", Some("Europe/Berlin")).unwrap();
        // 02:00 in Berlin in December is 01:00 UTC.
        assert_eq!(
            Slot::format(berlin.latest_at(NOW).unwrap()),
            "2026-12-07T01:00:00Z"
        );
        assert_eq!(
            Schedule::cron("0 2 * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::Zone("Mars/Olympus".into())
        );
    }

    #[test]
    fn six_fields_fire_on_seconds() {
        let every_five = Schedule::cron("*/5 * * * * *", None).unwrap();
        assert_eq!(every_five.next_after(NOW), Some(NOW + 5_000));
    }

    #[test]
    fn periods_align_to_the_epoch() {
        let hourly = Schedule::every("1h").unwrap();
        assert_eq!(hourly.latest_at(NOW), Some(NOW - 30 * 60_000));
        assert_eq!(hourly.next_after(NOW), Some(NOW + 30 * 60_000));
        assert_eq!(hourly.describe(), "every 1h");
        assert_eq!(
            Schedule::every("1 fortnight").unwrap_err(),
            ScheduleError::Period("1 fortnight".into())
        );
        assert_eq!(Schedule::every("0s").unwrap_err(), ScheduleError::TooShort);
    }

    #[test]
    fn a_bad_pattern_says_why() {
        let error = Schedule::cron("61 * * * *", None).unwrap_err().to_string();
        assert!(
            error.contains("`61 * * * *` is not a cron schedule"),
            "{error}"
        );
    }
}
