//! EventBridge schedule expressions and when they fire: `cron(...)`, `rate(...)` and `at(...)`,
//! in a time zone, as EventBridge Scheduler evaluates them.
//!
//! croner evaluates the cron patterns (ranges, lists, steps, `L`, `W`, `#`, years, Quartz-style
//! weekdays where 1 is Sunday, as AWS numbers them). This module is the thin layer for where AWS
//! differs from croner:
//!
//! * **Syntax.** Six fields (`minutes hours day-of-month month day-of-week year`), no seconds,
//!   exactly one of day-of-month and day-of-week is `?`, `W` only in day-of-month, `#` only in
//!   day-of-week, years 1970-2199. Everything else croner would also accept is refused here, so
//!   what runs locally is what CloudFormation will accept.
//! * **Daylight saving time.** Scheduler skips a time that does not exist when the clocks go
//!   forward (croner would run it just after the gap) and runs a time that occurs twice only
//!   once when they go back (croner runs `*`/step patterns in both passes).
//! * **Rates.** `rate(5 minutes)` counts fixed durations (a day is 24 hours, as AWS counts it)
//!   from the schedule's start date, or from the Unix epoch without one, so a restart of the
//!   runner keeps the same fire times and so the same run records.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned, civil};
use std::fmt;

/// A parsed schedule expression with its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    zone: TimeZone,
    zone_name: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<Cron>),
    Rate { every: SignedDuration, start: Timestamp },
    At(civil::DateTime),
}

/// Why an expression cannot be a schedule; its message quotes the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule expression {expression:?}: {reason}")]
pub struct ScheduleError {
    pub expression: String,
    pub reason: String,
}

fn invalid(expression: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError { expression: expression.to_owned(), reason: reason.into() }
}

/// The year range EventBridge accepts in the year field.
const YEARS: std::ops::RangeInclusive<i64> = 1970..=2199;

/// Occurrences skipped (DST gaps and repeats) before a search gives up; far more than any zone's
/// transitions in the years a schedule can name.
const MAX_SKIPS: usize = 1000;

impl Schedule {
    /// Parses an expression in the named IANA time zone (`None`: UTC, EventBridge's default).
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        Schedule::parse_from(expression, zone, None)
    }

    /// As [`Schedule::parse`], with a rate's start date (Scheduler's `StartDate`).
    pub fn parse_from(
        expression: &str,
        zone: Option<&str>,
        start: Option<Timestamp>,
    ) -> Result<Schedule, ScheduleError> {
        let zone_name = zone.unwrap_or("UTC").to_owned();
        let tz = jiff::tz::db().get(&zone_name).map_err(|_| {
            invalid(expression, format!("unknown time zone {zone_name:?} (use an IANA name such as Europe/Paris)"))
        })?;
        let trimmed = expression.trim();
        let kind = if let Some(body) = inside(trimmed, "cron") {
            Kind::Cron(Box::new(parse_cron(expression, body)?))
        } else if let Some(body) = inside(trimmed, "rate") {
            Kind::Rate { every: parse_rate(expression, body)?, start: start.unwrap_or(Timestamp::UNIX_EPOCH) }
        } else if let Some(body) = inside(trimmed, "at") {
            let body = body.trim();
            let at: civil::DateTime = body
                .parse()
                .ok()
                .filter(|_| body.len() == "yyyy-mm-ddThh:mm:ss".len())
                .ok_or_else(|| invalid(expression, "at() takes a local date and time, yyyy-mm-ddThh:mm:ss"))?;
            Kind::At(at)
        } else {
            let hint = if trimmed.split_whitespace().count() == 5 {
                "; a five-field crontab line? `livesync cron` translates it"
            } else {
                ""
            };
            return Err(invalid(expression, format!("expected cron(...), rate(...) or at(...){hint}")));
        };
        Ok(Schedule { expression: trimmed.to_owned(), zone: tz, zone_name, kind })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first time the schedule fires strictly after `after`, if it ever does.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Rate { every, start } => {
                if after < *start {
                    return Some(*start);
                }
                let elapsed = after.duration_since(*start).as_nanos();
                let period = every.as_nanos();
                let next = (elapsed / period + 1).checked_mul(period)?;
                start.checked_add(SignedDuration::from_nanos(i64::try_from(next).ok()?)).ok()
            }
            Kind::At(at) => {
                let at = at.to_zoned(self.zone.clone()).ok()?.timestamp();
                (at > after).then_some(at)
            }
            Kind::Cron(cron) => {
                let mut from = after.to_zoned(self.zone.clone());
                for _ in 0..MAX_SKIPS {
                    let next = cron.find_next_occurrence(&from, false).ok()?;
                    if next.year() > *YEARS.end() as i16 {
                        return None;
                    }
                    if self.fires_at(cron, &next) {
                        return Some(next.timestamp());
                    }
                    from = next;
                }
                None
            }
        }
    }

    /// Whether a time croner found is one Scheduler fires at: its wall-clock time is the one the
    /// pattern names (not a time moved past a DST gap), and it is the first pass of a repeated
    /// hour.
    fn fires_at(&self, cron: &Cron, at: &Zoned) -> bool {
        if !cron.is_time_matching(at).unwrap_or(false) {
            return false;
        }
        match self.zone.to_ambiguous_zoned(at.datetime()).offset() {
            AmbiguousOffset::Fold { after, .. } => at.offset() != after,
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Gap { .. } => true,
        }
    }

    /// The fire times after `after`, at most `count`.
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<Timestamp> {
        let mut times = Vec::with_capacity(count);
        let mut from = after;
        while times.len() < count {
            match self.next_after(from) {
                Some(next) => {
                    times.push(next);
                    from = next;
                }
                None => break,
            }
        }
        times
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.zone_name)
    }
}

/// The text inside `name( ... )`.
fn inside<'a>(expression: &'a str, name: &str) -> Option<&'a str> {
    expression.strip_prefix(name)?.trim_start().strip_prefix('(')?.strip_suffix(')')
}

fn parse_cron(expression: &str, body: &str) -> Result<Cron, ScheduleError> {
    let fields: Vec<&str> = body.split_whitespace().collect();
    let [minutes, hours, day_of_month, month, day_of_week, year] = fields[..] else {
        return Err(invalid(
            expression,
            format!("cron() takes 6 fields (minutes hours day-of-month month day-of-week year), not {}", fields.len()),
        ));
    };
    match (day_of_month == "?", day_of_week == "?") {
        (true, true) => return Err(invalid(expression, "only one of day-of-month and day-of-week may be ?")),
        (false, false) => {
            return Err(invalid(
                expression,
                "one of day-of-month and day-of-week must be ? (EventBridge cannot combine them)",
            ));
        }
        _ => {}
    }
    let month_numbers = without_names(month, &MONTHS);
    for (name, field) in [("minutes", minutes), ("hours", hours), ("month", month_numbers.as_str()), ("year", year)] {
        if let Some(c) = field.chars().find(|c| matches!(c, '?' | 'L' | 'W' | '#')) {
            return Err(invalid(expression, format!("{c} is not allowed in the {name} field")));
        }
    }
    if day_of_month.contains('#') {
        return Err(invalid(expression, "# is only allowed in the day-of-week field"));
    }
    if without_names(day_of_week, &WEEKDAYS).contains('W') {
        return Err(invalid(expression, "W is only allowed in the day-of-month field"));
    }
    check_years(expression, year)?;
    // `*/5` counts from EventBridge's first year (1970, as Quartz does), not from croner's.
    let year = year.split(',').map(|item| item.replacen("*/", "1970-2199/", 1)).collect::<Vec<_>>().join(",");
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        // AWS numbers weekdays 1 (Sunday) to 7 (Saturday), as Quartz does, and takes `0/15`.
        .alternative_weekdays(true)
        .sloppy_ranges(true)
        .build()
        .parse(&format!("0 {minutes} {hours} {day_of_month} {month} {day_of_week} {year}"))
        .map_err(|e| {
            let hint = if day_of_week != "?" { " (weekdays are 1-7, SUN-SAT: 1 is Sunday)" } else { "" };
            invalid(expression, format!("{e}{hint}"))
        })
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/// A field with its month or weekday names taken out, so that the letters left are wildcards.
fn without_names(field: &str, names: &[&str]) -> String {
    names.iter().fold(field.to_ascii_uppercase(), |field, name| field.replace(name, ""))
}

/// Every year the year field names lies in EventBridge's range (a step is a count, not a year).
fn check_years(expression: &str, year: &str) -> Result<(), ScheduleError> {
    for item in year.split(',') {
        let range = item.split_once('/').map_or(item, |(range, _step)| range);
        for number in range.split('-').filter(|part| *part != "*") {
            match number.parse::<i64>() {
                Ok(n) if YEARS.contains(&n) => {}
                Ok(n) => {
                    return Err(invalid(
                        expression,
                        format!("year {n} is out of range ({}-{})", YEARS.start(), YEARS.end()),
                    ));
                }
                Err(_) => return Err(invalid(expression, format!("{number:?} is not a year"))),
            }
        }
    }
    Ok(())
}

fn parse_rate(expression: &str, body: &str) -> Result<SignedDuration, ScheduleError> {
    let fields: Vec<&str> = body.split_whitespace().collect();
    let [value, unit] = fields[..] else {
        return Err(invalid(expression, "rate() takes a value and a unit, as in rate(5 minutes)"));
    };
    let value: i64 = match value.parse() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(invalid(
                expression,
                format!("the rate's value must be a positive whole number, not {value:?}"),
            ));
        }
    };
    let (seconds, singular) = match unit {
        "minute" | "minutes" => (60, unit == "minute"),
        "hour" | "hours" => (3600, unit == "hour"),
        "day" | "days" => (86_400, unit == "day"),
        _ => return Err(invalid(expression, format!("unknown unit {unit:?} (minutes, hours or days)"))),
    };
    // As AWS requires: rate(1 hour), rate(5 hours); never rate(1 hours) or rate(5 hour).
    if singular != (value == 1) {
        let fix = if value == 1 { unit.trim_end_matches('s').to_owned() } else { format!("{unit}s") };
        return Err(invalid(expression, format!("write rate({value} {fix})")));
    }
    value.checked_mul(seconds).map(SignedDuration::from_secs).ok_or_else(|| invalid(expression, "the rate is too long"))
}

/// Translates a five-field crontab line (`0 2 * * *`) into EventBridge's form
/// (`cron(0 2 * * ? *)`), or says why it cannot.
pub fn from_crontab(line: &str) -> Result<String, ScheduleError> {
    let line = line.trim();
    let nickname = match line {
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        "@monthly" => Some("0 0 1 * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        _ if line.starts_with('@') => {
            return Err(invalid(line, "EventBridge has no equivalent: it runs schedules, not events such as a reboot"));
        }
        _ => None,
    };
    let fields: Vec<&str> = nickname.unwrap_or(line).split_whitespace().collect();
    let [minutes, hours, day_of_month, month, day_of_week] = fields[..] else {
        return Err(invalid(
            line,
            format!("a crontab line has 5 fields (minute hour day-of-month month day-of-week), not {}", fields.len()),
        ));
    };
    let (day_of_month, day_of_week) = match (day_of_month, day_of_week) {
        (_, "*") => (day_of_month.to_owned(), "?".to_owned()),
        ("*", _) => ("?".to_owned(), aws_weekdays(line, day_of_week)?),
        _ => {
            return Err(invalid(
                line,
                "crontab runs when either the day of the month or the weekday matches; EventBridge cannot \
                 say that (one of them must be ?): use two schedules, one for each",
            ));
        }
    };
    let translated = format!("cron({minutes} {hours} {day_of_month} {month} {day_of_week} *)");
    Schedule::parse(&translated, None)
        .map_err(|e| invalid(line, format!("it translates to {translated}, but {}", e.reason)))?;
    Ok(translated)
}

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A crontab day-of-week field (0-7, 0 and 7 Sunday, names, ranges, lists, steps) as AWS names
/// it: the set of days, written with names, in runs where they are consecutive.
fn aws_weekdays(line: &str, field: &str) -> Result<String, ScheduleError> {
    let day = |text: &str| -> Result<usize, ScheduleError> {
        let upper = text.to_ascii_uppercase();
        if let Some(index) = WEEKDAYS.iter().position(|name| *name == upper) {
            return Ok(index);
        }
        match text.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(n % 7),
            _ => Err(invalid(line, format!("{text:?} is not a day of the week (0-7 or SUN-SAT)"))),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| invalid(line, format!("bad step in {item:?}")))?,
            ),
            None => (item, 1),
        };
        let (first, last) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                // 7 ends a range as Sunday after Saturday: `5-7` is Friday to Sunday.
                Some((a, "7")) if a != "7" => (day(a)?, 7),
                Some((a, b)) => (day(a)?, day(b)?),
                // As cronie reads `1/2`: from 1 to the end of the week (7, Sunday).
                None if step > 1 => (day(range)?, 7),
                None => (day(range)?, day(range)?),
            },
        };
        if first > last {
            return Err(invalid(line, format!("the range {range:?} runs backwards")));
        }
        for n in (first..=last).step_by(step) {
            days[n % 7] = true;
        }
    }
    let mut runs: Vec<String> = Vec::new();
    let mut n = 0;
    while n < 7 {
        if !days[n] {
            n += 1;
            continue;
        }
        let start = n;
        while n + 1 < 7 && days[n + 1] {
            n += 1;
        }
        runs.push(match n - start {
            0 => WEEKDAYS[start].to_owned(),
            1 => format!("{},{}", WEEKDAYS[start], WEEKDAYS[n]),
            _ => format!("{}-{}", WEEKDAYS[start], WEEKDAYS[n]),
        });
        n += 1;
    }
    Ok(runs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// The next `count` fire times after `after`, as RFC 3339 UTC strings.
    fn fires(expression: &str, zone: Option<&str>, after: &str, count: usize) -> Vec<String> {
        let schedule = Schedule::parse(expression, zone).unwrap();
        schedule.upcoming(utc(after), count).iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_default_backup_schedule_fires_daily_at_two_utc() {
        assert_eq!(
            fires("cron(0 2 * * ? *)", None, "2026-12-02T07:00:00Z", 3),
            ["2026-12-03T02:00:00Z", "2026-12-04T02:00:00Z", "2026-12-05T02:00:00Z"]
        );
    }

    #[test]
    fn a_time_exactly_on_a_fire_time_waits_for_the_next_one() {
        assert_eq!(fires("cron(55 23 * * ? *)", None, "2026-12-02T23:55:00Z", 1), ["2026-12-03T23:55:00Z"]);
    }

    #[test]
    fn the_expected_fire_times_of_a_table_of_expressions() {
        let table: &[(&str, &str, &[&str])] = &[
            // Month ends: L is the last day, whatever the month's length.
            (
                "cron(0 12 L * ? *)",
                "2026-01-01T00:00:00Z",
                &["2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z", "2026-04-30T12:00:00Z"],
            ),
            // Leap years: 29 February only comes in 2028.
            ("cron(0 0 29 2 ? *)", "2026-01-01T00:00:00Z", &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
            ("cron(0 0 L 2 ? *)", "2027-06-01T00:00:00Z", &["2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"]),
            // W: the weekday nearest the 15th; 2026-08-15 is a Saturday, 2026-11-15 a Sunday.
            (
                "cron(0 9 15W * ? *)",
                "2026-08-01T00:00:00Z",
                &["2026-08-14T09:00:00Z", "2026-09-15T09:00:00Z", "2026-10-15T09:00:00Z", "2026-11-16T09:00:00Z"],
            ),
            // W never leaves the month: 2026-08-01 is a Saturday, so 1W is Monday the 3rd.
            ("cron(0 9 1W 8 ? 2026)", "2026-01-01T00:00:00Z", &["2026-08-03T09:00:00Z"]),
            // #: the second Tuesday (AWS numbers Sunday 1, so Tuesday is 3).
            ("cron(30 8 ? * 3#2 *)", "2026-12-01T00:00:00Z", &["2026-12-08T08:30:00Z", "2027-01-12T08:30:00Z"]),
            // L in day-of-week: the last Friday (6) of the month.
            ("cron(0 17 ? * 6L *)", "2026-12-01T00:00:00Z", &["2026-12-25T17:00:00Z", "2027-01-29T17:00:00Z"]),
            // Weekday names and ranges: Monday to Friday.
            ("cron(0 8 ? * MON-FRI *)", "2026-12-04T09:00:00Z", &["2026-12-07T08:00:00Z", "2026-12-08T08:00:00Z"]),
            ("cron(0 8 ? * 2-6 *)", "2026-12-04T09:00:00Z", &["2026-12-07T08:00:00Z", "2026-12-08T08:00:00Z"]),
            // Sunday is 1.
            ("cron(0 10 ? * 1 *)", "2026-12-02T00:00:00Z", &["2026-12-06T10:00:00Z", "2026-12-13T10:00:00Z"]),
            // Steps, AWS's `0/15` included, and lists.
            (
                "cron(0/15 * * * ? *)",
                "2026-12-02T10:07:00Z",
                &["2026-12-02T10:15:00Z", "2026-12-02T10:30:00Z", "2026-12-02T10:45:00Z", "2026-12-02T11:00:00Z"],
            ),
            ("cron(*/20 9-10 * * ? *)", "2026-12-02T10:41:00Z", &["2026-12-03T09:00:00Z", "2026-12-03T09:20:00Z"]),
            ("cron(0 6,18 * * ? *)", "2026-12-02T07:00:00Z", &["2026-12-02T18:00:00Z", "2026-12-03T06:00:00Z"]),
            // Year steps and ranges.
            ("cron(0 0 1 1 ? */5)", "2026-12-02T00:00:00Z", &["2030-01-01T00:00:00Z", "2035-01-01T00:00:00Z"]),
            ("cron(0 0 1 1 ? 2030/2,2041)", "2026-12-02T00:00:00Z", &["2030-01-01T00:00:00Z", "2032-01-01T00:00:00Z"]),
            // Months by name; a year list ends the schedule.
            (
                "cron(0 0 1 JAN,JUL ? 2027,2028)",
                "2026-12-02T00:00:00Z",
                &["2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z", "2028-01-01T00:00:00Z", "2028-07-01T00:00:00Z"],
            ),
            // Rates count from the epoch: 2026-12-02T00:00Z is a multiple of every one of these.
            ("rate(5 minutes)", "2026-12-02T10:07:30Z", &["2026-12-02T10:10:00Z", "2026-12-02T10:15:00Z"]),
            ("rate(1 hour)", "2026-12-02T10:00:00Z", &["2026-12-02T11:00:00Z", "2026-12-02T12:00:00Z"]),
            ("rate(1 day)", "2026-12-02T10:00:00Z", &["2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z"]),
            ("at(2026-12-24T18:00:00)", "2026-12-02T00:00:00Z", &["2026-12-24T18:00:00Z"]),
        ];
        for (expression, after, expected) in table {
            assert_eq!(fires(expression, None, after, expected.len()), *expected, "{expression} after {after}");
        }
    }

    #[test]
    fn a_schedule_with_only_past_years_never_fires_again() {
        assert!(fires("cron(0 0 1 1 ? 2025)", None, "2026-01-01T00:00:00Z", 1).is_empty());
        assert!(fires("at(2026-01-01T00:00:00)", None, "2026-12-02T00:00:00Z", 1).is_empty());
    }

    #[test]
    fn a_time_zone_moves_the_fire_times_with_its_offset() {
        // 02:00 in Paris is 01:00 UTC in winter and 00:00 UTC in summer.
        assert_eq!(
            fires("cron(0 2 * * ? *)", Some("Europe/Paris"), "2026-12-02T12:00:00Z", 1),
            ["2026-12-03T01:00:00Z"]
        );
        assert_eq!(
            fires("cron(0 2 * * ? *)", Some("Europe/Paris"), "2026-07-02T12:00:00Z", 1),
            ["2026-07-03T00:00:00Z"]
        );
        // at() is a local time too.
        assert_eq!(
            fires("at(2026-12-24T18:00:00)", Some("America/New_York"), "2026-12-02T00:00:00Z", 1),
            ["2026-12-24T23:00:00Z"]
        );
    }

    #[test]
    fn a_time_that_does_not_exist_when_clocks_go_forward_is_skipped() {
        // New York skipped 02:00-03:00 on 2026-03-08: the 02:30 run of that day does not happen.
        assert_eq!(
            fires("cron(30 2 * * ? *)", Some("America/New_York"), "2026-03-06T12:00:00Z", 3),
            ["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]
        );
        // Every 30 minutes: nothing in the missing hour, and 03:00 EDT follows 01:30 EST.
        assert_eq!(
            fires("cron(0/30 * * * ? *)", Some("America/New_York"), "2026-03-08T06:15:00Z", 3),
            ["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"]
        );
    }

    #[test]
    fn a_time_that_occurs_twice_when_clocks_go_back_fires_once() {
        // New York repeated 01:00-02:00 on 2026-11-01 (EDT, then EST).
        assert_eq!(
            fires("cron(30 1 * * ? *)", Some("America/New_York"), "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        // Every 30 minutes: 01:00 and 01:30 once (EDT), then on to 02:00 EST.
        assert_eq!(
            fires("cron(0/30 * * * ? *)", Some("America/New_York"), "2026-11-01T04:45:00Z", 3),
            ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z"]
        );
    }

    #[test]
    fn a_rate_of_days_is_24_hours_whatever_the_clocks_do() {
        let start = utc("2026-03-07T12:00:00Z");
        let schedule = Schedule::parse_from("rate(1 day)", Some("America/New_York"), Some(start)).unwrap();
        let times: Vec<String> = schedule.upcoming(start, 2).iter().map(|t| t.to_string()).collect();
        assert_eq!(times, ["2026-03-08T12:00:00Z", "2026-03-09T12:00:00Z"]);
        assert_eq!(schedule.next_after(utc("2026-01-01T00:00:00Z")), Some(start), "the first fire is the start date");
    }

    #[test]
    fn invalid_expressions_are_refused_with_a_reason() {
        let table: &[(&str, &str)] = &[
            (
                "0 2 * * *",
                "expected cron(...), rate(...) or at(...); a five-field crontab line? `livesync cron` translates it",
            ),
            ("cron(0 2 * * *)", "cron() takes 6 fields (minutes hours day-of-month month day-of-week year), not 5"),
            ("cron(0 2 * * * *)", "one of day-of-month and day-of-week must be ? (EventBridge cannot combine them)"),
            ("cron(0 2 ? * ? *)", "only one of day-of-month and day-of-week may be ?"),
            ("cron(0 2 * * ? 1969)", "year 1969 is out of range (1970-2199)"),
            ("cron(0 2 ? * 2W *)", "W is only allowed in the day-of-month field"),
            ("cron(0 2 1#2 * ? *)", "# is only allowed in the day-of-week field"),
            ("cron(0 L * * ? *)", "L is not allowed in the hours field"),
            ("rate(0 minutes)", "the rate's value must be a positive whole number, not \"0\""),
            ("rate(5 minute)", "write rate(5 minutes)"),
            ("rate(1 hours)", "write rate(1 hour)"),
            ("rate(5 weeks)", "unknown unit \"weeks\" (minutes, hours or days)"),
            ("rate(5)", "rate() takes a value and a unit, as in rate(5 minutes)"),
            ("at(tomorrow)", "at() takes a local date and time, yyyy-mm-ddThh:mm:ss"),
            ("at(2027-01-01)", "at() takes a local date and time, yyyy-mm-ddThh:mm:ss"),
        ];
        for (expression, reason) in table {
            let error = Schedule::parse(expression, None).unwrap_err();
            assert_eq!(error.reason, *reason, "{expression}");
            assert!(error.to_string().contains(expression), "the message quotes the expression: {error}");
        }
        // Values out of a field's range are croner's to refuse; the message still names the expression.
        for expression in ["cron(61 2 * * ? *)", "cron(0 25 * * ? *)", "cron(0 2 32 * ? *)", "cron(0 2 ? * 8 *)"] {
            assert!(Schedule::parse(expression, None).is_err(), "{expression}");
        }
        let sunday_zero = Schedule::parse("cron(0 0 ? * 0 *)", None).unwrap_err();
        assert!(sunday_zero.reason.ends_with("(weekdays are 1-7, SUN-SAT: 1 is Sunday)"), "{sunday_zero}");
        assert_eq!(Schedule::parse("cron(0 0 1 1 ? 2030/2200)", None).map(|_| ()), Ok(()), "a step is not a year");
        let zone = Schedule::parse("cron(0 2 * * ? *)", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(zone.reason, "unknown time zone \"Mars/Olympus\" (use an IANA name such as Europe/Paris)");
    }

    #[test]
    fn crontab_lines_translate_to_eventbridge_expressions() {
        let table: &[(&str, &str)] = &[
            ("0 2 * * *", "cron(0 2 * * ? *)"),
            ("55 23 * * *", "cron(55 23 * * ? *)"),
            ("*/15 * * * *", "cron(*/15 * * * ? *)"),
            ("0 9 * * 1-5", "cron(0 9 ? * MON-FRI *)"),
            ("0 9 * * 0", "cron(0 9 ? * SUN *)"),
            ("0 9 * * 7", "cron(0 9 ? * SUN *)"),
            ("0 9 * * 5-7", "cron(0 9 ? * SUN,FRI,SAT *)"),
            ("0 9 * * sat,sun", "cron(0 9 ? * SUN,SAT *)"),
            ("0 9 * * */2", "cron(0 9 ? * SUN,TUE,THU,SAT *)"),
            ("0 9 * * 7-7", "cron(0 9 ? * SUN *)"),
            ("0 9 * * 0-7", "cron(0 9 ? * SUN-SAT *)"),
            ("0 9 * * 1/2", "cron(0 9 ? * SUN,MON,WED,FRI *)"),
            ("0 0 1 * *", "cron(0 0 1 * ? *)"),
            ("@daily", "cron(0 0 * * ? *)"),
            ("@weekly", "cron(0 0 ? * SUN *)"),
        ];
        for (line, expected) in table {
            assert_eq!(from_crontab(line).as_deref(), Ok(*expected), "{line}");
            assert!(Schedule::parse(expected, None).is_ok());
        }
    }

    #[test]
    fn crontab_lines_eventbridge_cannot_express_are_explained() {
        let reason = |line: &str| from_crontab(line).unwrap_err().reason;
        assert!(reason("0 0 1 * 1").contains("use two schedules"), "{}", reason("0 0 1 * 1"));
        assert!(reason("@reboot").contains("no equivalent"));
        assert!(reason("0 2 * *").contains("5 fields"));
        assert!(reason("0 2 * * 9").contains("not a day of the week"));
        assert!(reason("99 2 * * *").starts_with("it translates to cron(99 2 * * ? *), but"));
    }
}
