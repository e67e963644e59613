//! Schedule math of scheduled runs: the 5-field cron parser, time zones and DST, intervals and
//! one-shot times. Pure: it knows only `jiff` and milliseconds since the epoch, so the config
//! loader can check `[cron.<name>]` with it and the unit tests need no gateway.
//!
//! The rules: a cron expression is evaluated in its zone's civil time, minute by minute
//! resolution; a civil time that does not exist (a DST gap) fires at the next valid minute; a
//! civil time that happens twice (a DST fold) fires once, at its first occurrence. `everyMs`
//! counts from an anchor (the previous scheduled time, never from when a run ended), so its
//! times are `anchor + k × everyMs`. `at` is one instant.

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Span, Timestamp};

/// The shortest `everyMs`.
pub const MIN_EVERY_MS: u64 = 1000;

/// How far ahead a cron expression is searched for its next time (8 years covers every
/// February 29 and every weekday of every date).
const SEARCH_DAYS: i64 = 366 * 8;

/// Why a schedule was refused: the field and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// The field (`cron`, `tz`, `everyMs`, `at`, or empty for the schedule itself).
    pub field: &'static str,
    /// What was wrong and what was expected.
    pub message: String,
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn refuse(field: &'static str, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field,
        message: message.into(),
    }
}

/// A checked schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A 5-field cron expression in a time zone.
    Cron {
        /// The parsed fields.
        expr: CronExpr,
        /// Its zone (UTC by default).
        tz: TimeZone,
    },
    /// Every `every_ms`, counted from an anchor.
    Every {
        /// The interval (at least [`MIN_EVERY_MS`]).
        every_ms: u64,
    },
    /// Once, at this instant (ms since the epoch).
    At {
        /// The instant.
        at: u64,
    },
}

impl Schedule {
    /// Checks the parts of a schedule: exactly one of `cron` (with `tz`), `every_ms` or `at`.
    pub fn new(
        cron: Option<&str>,
        tz: Option<&str>,
        every_ms: Option<u64>,
        at: Option<u64>,
    ) -> Result<Self, ScheduleError> {
        let kinds = [cron.is_some(), every_ms.is_some(), at.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(refuse(
                "",
                "expected exactly one of {cron, tz?}, {everyMs} or {at}",
            ));
        }
        if tz.is_some() && cron.is_none() {
            return Err(refuse("tz", "tz goes with cron only"));
        }
        if let Some(expr) = cron {
            let expr = CronExpr::parse(expr)?;
            let tz = match tz {
                None => TimeZone::UTC,
                Some(name) => TimeZone::get(name).map_err(|_| {
                    refuse(
                        "tz",
                        format!(
                            "unknown time zone {name:?}: expected an IANA name such as Europe/Berlin or America/New_York"
                        ),
                    )
                })?,
            };
            let schedule = Self::Cron { expr, tz };
            // An expression that names only dates that never come (`0 0 30 2 *`).
            if schedule.next_after(0, 0).is_none() {
                return Err(refuse("cron", "this expression never matches a date"));
            }
            return Ok(schedule);
        }
        if let Some(every_ms) = every_ms {
            if every_ms < MIN_EVERY_MS {
                return Err(refuse(
                    "everyMs",
                    format!("found {every_ms}, expected at least {MIN_EVERY_MS} (ms)"),
                ));
            }
            if every_ms > i64::MAX as u64 / 4 {
                return Err(refuse("everyMs", format!("found {every_ms}, too large")));
            }
            return Ok(Self::Every { every_ms });
        }
        let at = at.unwrap_or_default();
        if at > i64::MAX as u64 / 4 {
            return Err(refuse("at", format!("found {at}, too large")));
        }
        Ok(Self::At { at })
    }

    /// The first scheduled time after `t` (exclusive, ms since the epoch); `anchor` is where an
    /// interval counts from. `None`: no more times (a passed `at`).
    pub fn next_after(&self, t: u64, anchor: u64) -> Option<u64> {
        match self {
            Self::At { at } => (*at > t).then_some(*at),
            Self::Every { every_ms } => {
                let every = *every_ms;
                if t < anchor {
                    return anchor.checked_add(every);
                }
                let k = (t - anchor) / every + 1;
                anchor.checked_add(k.checked_mul(every)?)
            }
            Self::Cron { expr, tz } => next_cron(expr, tz, t),
        }
    }

    /// The scheduled times in `(after, until]`: how many and the latest.
    pub fn passed(&self, after: u64, until: u64, anchor: u64) -> (u64, Option<u64>) {
        if let Self::Every { every_ms } = self {
            // Arithmetic: a long downtime of a short interval is not walked.
            let Some(first) = self.next_after(after, anchor) else {
                return (0, None);
            };
            if first > until {
                return (0, None);
            }
            let count = (until - first) / every_ms + 1;
            return (count, Some(first + (count - 1) * every_ms));
        }
        // Minute resolution: a year down is about half a million steps, each within a day.
        let (mut count, mut latest, mut t) = (0, None, after);
        while let Some(next) = self.next_after(t, anchor) {
            if next > until {
                break;
            }
            count += 1;
            latest = Some(next);
            t = next;
        }
        (count, latest)
    }
}

/// The next time of `expr` in `tz` after `t` (ms): civil candidates in order, each resolved
/// to an instant (a gap: the next valid minute; a fold: the earlier), the first past `t`.
fn next_cron(expr: &CronExpr, tz: &TimeZone, t: u64) -> Option<u64> {
    let ts = Timestamp::from_millisecond(i64::try_from(t).ok()?).ok()?;
    let local = tz.to_datetime(ts);
    let start_minute = u32::from(local.hour() as u8) * 60 + u32::from(local.minute() as u8);
    let mut date = local.date();
    for day in 0..SEARCH_DAYS {
        if day > 0 {
            date = date.tomorrow().ok()?;
        }
        if !expr.matches_date(date) {
            continue;
        }
        for hour in 0..24u32 {
            if expr.hours & (1 << hour) == 0 {
                continue;
            }
            for minute in 0..60u32 {
                if expr.minutes & (1 << minute) == 0 {
                    continue;
                }
                if day == 0 && hour * 60 + minute < start_minute {
                    continue;
                }
                let dt = date.at(hour as i8, minute as i8, 0, 0);
                let instant = resolve(tz, dt)?;
                if instant > t {
                    return Some(instant);
                }
            }
        }
    }
    None
}

/// The instant (ms) of the civil time `dt` in `tz`: a gap's time is the first valid minute
/// after it, a fold's the earlier of its two.
fn resolve(tz: &TimeZone, dt: DateTime) -> Option<u64> {
    let mut dt = dt;
    // A gap is at most a day long; minute by minute to the first civil time that exists.
    for _ in 0..=24 * 60 {
        let ambiguous = tz.to_ambiguous_timestamp(dt);
        match ambiguous.offset() {
            AmbiguousOffset::Gap { .. } => {
                dt = dt.checked_add(Span::new().minutes(1)).ok()?;
            }
            _ => {
                let ts = ambiguous.earlier().ok()?;
                return u64::try_from(ts.as_millisecond()).ok();
            }
        }
    }
    None
}

/// A parsed 5-field cron expression: minute, hour, day of month, month, day of week, each a
/// bit set. `*`, numbers, `a-b` ranges, `,` lists and `/n` steps; month and weekday names
/// (`jan`, `mon`); weekday 0 and 7 are Sunday. When both day fields are restricted, a date
/// matching either matches (as in Vixie cron).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronExpr {
    /// Parses `minute hour day-of-month month day-of-week`.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(refuse(
                "cron",
                format!(
                    "found {} fields in {text:?}, expected 5: minute hour day-of-month month day-of-week",
                    fields.len()
                ),
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day-of-month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(fields[4], "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any: fields[2].starts_with('*'),
            weekdays_any: fields[4].starts_with('*'),
        })
    }

    fn matches_date(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        }
    }
}

/// One field: a `,` list of `*`, `v`, `a-b`, each with an optional `/step`.
fn field(
    text: &str,
    name: &'static str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<u64, ScheduleError> {
    let bad = |why: String| {
        refuse(
            "cron",
            format!(
                "{name} field {text:?}: {why} (expected {min}-{max}, `*`, `a-b`, `,` lists and `/n` steps)"
            ),
        )
    };
    let value = |v: &str| -> Result<u32, ScheduleError> {
        let lower = v.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Months count from 1, weekdays from 0.
            return Ok(if names.len() == 12 {
                i as u32 + 1
            } else {
                i as u32
            });
        }
        let n: u32 = v
            .parse()
            .map_err(|_| bad(format!("{v:?} is not a number")))?;
        if n < min || n > max {
            return Err(bad(format!("{n} is out of range")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| bad(format!("step {step:?} is not a number")))?;
                if step == 0 || step > max {
                    return Err(bad(format!("step {step} is out of range")));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else if range.is_empty() {
            return Err(bad("an empty item".into()));
        } else {
            let a = value(range)?;
            // `a/n`: from a to the end, every n.
            (a, if step > 1 { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        let ts: Timestamp = text.parse().expect("timestamp");
        ts.as_millisecond() as u64
    }

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule::new(Some(expr), Some(tz), None, None).expect("schedule")
    }

    #[test]
    fn dst_gap_fires_at_the_next_valid_minute() {
        // 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist.
        let s = cron("30 2 * * *", "America/New_York");
        let next = s.next_after(ms("2026-03-08T05:00:00Z"), 0);
        assert_eq!(next, Some(ms("2026-03-08T07:00:00Z")), "03:00 EDT");
        // And the day after, 02:30 exists again.
        assert_eq!(
            s.next_after(ms("2026-03-08T07:00:00Z"), 0),
            Some(ms("2026-03-09T06:30:00Z"))
        );
        // Several gap minutes collapse into one firing at 03:00, then 03:00 itself is not
        // fired a second time.
        let s = cron("*/30 2-3 * * *", "America/New_York");
        let first = s.next_after(ms("2026-03-08T06:50:00Z"), 0);
        assert_eq!(first, Some(ms("2026-03-08T07:00:00Z")));
        assert_eq!(
            s.next_after(ms("2026-03-08T07:00:00Z"), 0),
            Some(ms("2026-03-08T07:30:00Z")),
            "03:30 EDT"
        );
    }

    #[test]
    fn dst_fold_fires_once() {
        // 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:30 happens twice.
        let s = cron("30 1 * * *", "America/New_York");
        let first = s.next_after(ms("2026-11-01T04:00:00Z"), 0);
        assert_eq!(first, Some(ms("2026-11-01T05:30:00Z")), "01:30 EDT");
        let second = s.next_after(ms("2026-11-01T05:30:00Z"), 0);
        assert_eq!(
            second,
            Some(ms("2026-11-02T06:30:00Z")),
            "next day, 01:30 EST"
        );
        // Started during the second 01:00 hour: that day's 01:30 has fired already.
        let s = cron("*/30 * * * *", "America/New_York");
        assert_eq!(
            s.next_after(ms("2026-11-01T06:10:00Z"), 0),
            Some(ms("2026-11-01T07:00:00Z")),
            "02:00 EST"
        );
        let (count, _) = s.passed(ms("2026-11-01T04:00:00Z"), ms("2026-11-01T08:00:00Z"), 0);
        // 00:00 EDT .. 03:00 EST is 5 wall-clock hours; the repeated 01:00 and 01:30 are left
        // out: 00:30, 01:00, 01:30, 02:00, 02:30, 03:00.
        assert_eq!(count, 6);
    }

    #[test]
    fn every_counts_from_the_previous_scheduled_time() {
        let s = Schedule::new(None, None, Some(1000), None).expect("every");
        let anchor = 10_000;
        assert_eq!(s.next_after(anchor, anchor), Some(11_000));
        // A run that ended late does not move the grid.
        assert_eq!(s.next_after(11_730, anchor), Some(12_000));
        assert_eq!(s.next_after(12_000, anchor), Some(13_000));
        assert_eq!(s.passed(11_000, 15_500, anchor), (4, Some(15_000)));
        assert_eq!(s.passed(11_000, 11_999, anchor), (0, None));
    }

    #[test]
    fn at_fires_once() {
        let s = Schedule::new(None, None, None, Some(5000)).expect("at");
        assert_eq!(s.next_after(4999, 0), Some(5000));
        assert_eq!(s.next_after(5000, 0), None);
    }

    #[test]
    fn expressions() {
        let utc = |e| cron(e, "UTC");
        // 2026-01-01 is a Thursday.
        let t = ms("2026-01-01T00:00:00Z");
        assert_eq!(
            utc("0 9 * * mon-fri").next_after(t, 0),
            Some(ms("2026-01-01T09:00:00Z"))
        );
        assert_eq!(
            utc("0 9 * * 0").next_after(t, 0),
            Some(ms("2026-01-04T09:00:00Z"))
        );
        assert_eq!(
            utc("0 9 * * 7").next_after(t, 0),
            Some(ms("2026-01-04T09:00:00Z"))
        );
        assert_eq!(
            utc("15,45 */6 1 feb *").next_after(t, 0),
            Some(ms("2026-02-01T00:15:00Z"))
        );
        // Both day fields restricted: either matches.
        assert_eq!(
            utc("0 0 15 * sun").next_after(t, 0),
            Some(ms("2026-01-04T00:00:00Z"))
        );
        assert_eq!(
            utc("* * * * *").next_after(ms("2026-01-01T00:00:30Z"), 0),
            Some(ms("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            utc("0 0 29 2 *").next_after(t, 0),
            Some(ms("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn refusals() {
        let err = |c: Option<&str>, tz: Option<&str>, e: Option<u64>, a: Option<u64>| {
            Schedule::new(c, tz, e, a).expect_err("refused")
        };
        assert_eq!(err(Some("* * * *"), None, None, None).field, "cron");
        assert!(
            err(Some("61 * * * *"), None, None, None)
                .message
                .contains("minute")
        );
        assert_eq!(err(Some("0 0 30 2 *"), None, None, None).field, "cron");
        assert_eq!(
            err(Some("* * * * *"), Some("Mars/Base"), None, None).field,
            "tz"
        );
        assert_eq!(err(None, None, Some(999), None).field, "everyMs");
        assert_eq!(err(None, None, Some(1000), Some(5)).field, "");
        assert_eq!(err(None, None, None, None).field, "");
        assert_eq!(err(None, Some("UTC"), Some(5000), None).field, "tz");
        assert!(CronExpr::parse("*/0 * * * *").is_err());
        assert!(CronExpr::parse("5-1 * * * *").is_err());
        assert!(CronExpr::parse("a * * * *").is_err());
    }
}
