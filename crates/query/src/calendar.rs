//! Time in the site's zone: resolving a request's range, and planning which rollup rows make
//! up each answer bucket.
//!
//! Day, week (ISO, Monday first) and month buckets are unions of local days. A local day comes
//! from the batch layer's `day` row when a closure covers it, else from the speed layer's `hour`
//! rows when the day starts and ends on whole UTC hours, else from its `minute` rows (zones such
//! as Asia/Kolkata). Hour buckets come from batch `hour` rows inside a closure, else from speed
//! `hour` rows; minute buckets only from the speed layer.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sightline_db::rollup::{Granularity, Layer};
use sightline_proto::query::v1 as pb;

use crate::QueryError;

/// Microseconds in a minute.
pub const MINUTE_US: i64 = 60_000_000;
/// Microseconds in an hour.
pub const HOUR_US: i64 = 3_600_000_000;

/// The width of the buckets of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// UTC minutes (speed layer only).
    Minute,
    /// UTC hours.
    Hour,
    /// Local days.
    Day,
    /// Local ISO weeks, Monday to Sunday.
    Week,
    /// Local calendar months.
    Month,
}

impl Interval {
    /// Every interval.
    pub const ALL: [Interval; 5] = [Self::Minute, Self::Hour, Self::Day, Self::Week, Self::Month];

    /// The API name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The interval called `name`.
    pub fn parse(name: &str) -> Result<Self, QueryError> {
        Self::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| {
                QueryError::InvalidArgument(format!(
                    "interval: unknown interval `{name}` (minute, hour, day, week, month)"
                ))
            })
    }
}

/// How long ranges may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest minute series, hours.
    pub minute_hours: u32,
    /// Longest hour series, days.
    pub hour_days: u32,
    /// Longest day-based range, days.
    pub days: u32,
}

/// A batch closure of one local day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The local day.
    pub day: NaiveDate,
    /// Its first instant, µs.
    pub starts_at_us: i64,
    /// The first instant of the next day, µs.
    pub ends_at_us: i64,
    /// The batch run's revision.
    pub revision: i32,
}

/// A resolved range: `[from_us, to_us)`, with its local days for day-based answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant.
    pub from_us: i64,
    /// End, exclusive.
    pub to_us: i64,
    /// First and last local day (day-based windows).
    pub days: Option<(NaiveDate, NaiveDate)>,
}

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError::InvalidArgument(message.into())
}

/// The first instant of local `date` in `tz` (µs). When midnight does not exist (a DST gap),
/// the first instant after it; when it exists twice, the earlier.
pub fn day_start(tz: Tz, date: NaiveDate) -> i64 {
    let mut local = date.and_time(chrono::NaiveTime::MIN);
    for _ in 0..=16 {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return t.with_timezone(&Utc).timestamp_micros();
            }
            LocalResult::None => local += Duration::minutes(15),
        }
    }
    // No zone has a gap over four hours; fall back to UTC midnight.
    date.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_micros()
}

/// The local date of an instant (µs).
pub fn local_date(tz: Tz, t_us: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(t_us)
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive()
}

/// An instant in the site's zone, RFC 3339.
pub fn local_label(tz: Tz, t_us: i64) -> String {
    DateTime::from_timestamp_micros(t_us)
        .unwrap_or_default()
        .with_timezone(&tz)
        .to_rfc3339()
}

fn parse_date(field: &str, text: &str) -> Result<NaiveDate, QueryError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        invalid(format!(
            "range.{field}: `{text}` is not a date (YYYY-MM-DD)"
        ))
    })
}

fn us_in_range(field: &str, t_us: i64) -> Result<i64, QueryError> {
    // chrono's range, and then some room for rounding.
    if DateTime::from_timestamp_micros(t_us).is_some()
        && t_us.abs() < 200_000 * 365 * 86_400_000_000
    {
        Ok(t_us)
    } else {
        Err(invalid(format!("range.{field}: {t_us} is out of range")))
    }
}

/// Resolves `range` for `interval` in `tz`: day-based intervals (and breakdowns and aggregates,
/// which pass [`Interval::Day`]) widen instants to whole local days; minute and hour series round
/// outwards to whole minutes and hours.
pub fn resolve(
    range: Option<&pb::TimeRange>,
    interval: Interval,
    tz: Tz,
    limits: Limits,
) -> Result<Window, QueryError> {
    let range = range.ok_or_else(|| invalid("range: missing"))?;
    let by_date = !range.from_date.is_empty() || !range.to_date.is_empty();
    let (from_us, to_us, days) = if by_date {
        let from = parse_date("from_date", &range.from_date)?;
        let to = parse_date("to_date", &range.to_date)?;
        if to < from {
            return Err(invalid(format!(
                "range: to_date {to} is before from_date {from}"
            )));
        }
        let next = to
            .succ_opt()
            .ok_or_else(|| invalid("range.to_date: out of range"))?;
        (day_start(tz, from), day_start(tz, next), Some((from, to)))
    } else {
        let from = us_in_range("from_us", range.from_us)?;
        let to = us_in_range("to_us", range.to_us)?;
        if from == 0 && to == 0 {
            return Err(invalid(
                "range: set from_us and to_us, or from_date and to_date",
            ));
        }
        if to <= from {
            return Err(invalid("range: from_us must be before to_us"));
        }
        (from, to, None)
    };
    let too_long = |what: &str, limit: String| {
        invalid(format!(
            "range: too long for {what}: at most {limit} (query.max_* settings)"
        ))
    };
    match interval {
        Interval::Minute | Interval::Hour => {
            let width = if interval == Interval::Minute {
                MINUTE_US
            } else {
                HOUR_US
            };
            let from = from_us.div_euclid(width) * width;
            let to = (to_us + width - 1).div_euclid(width) * width;
            let (max_us, limit) = if interval == Interval::Minute {
                (
                    i64::from(limits.minute_hours) * HOUR_US,
                    format!("{} hours", limits.minute_hours),
                )
            } else {
                (
                    i64::from(limits.hour_days) * 24 * HOUR_US,
                    format!("{} days", limits.hour_days),
                )
            };
            if to - from > max_us {
                return Err(too_long(&format!("{} buckets", interval.name()), limit));
            }
            Ok(Window {
                from_us: from,
                to_us: to,
                days: None,
            })
        }
        Interval::Day | Interval::Week | Interval::Month => {
            let (first, last) = match days {
                Some(days) => days,
                None => (local_date(tz, from_us), local_date(tz, to_us - 1)),
            };
            let count = (last - first).num_days() + 1;
            if count > i64::from(limits.days) {
                return Err(too_long("this range", format!("{} days", limits.days)));
            }
            let next = last
                .succ_opt()
                .ok_or_else(|| invalid("range: out of range"))?;
            Ok(Window {
                from_us: day_start(tz, first),
                to_us: day_start(tz, next),
                days: Some((first, last)),
            })
        }
    }
}

/// Rows of one layer and granularity with buckets in `[lo_us, hi_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Speed or batch.
    pub layer: Layer,
    /// Minute, hour or day rows.
    pub granularity: Granularity,
    /// First bucket.
    pub lo_us: i64,
    /// End, exclusive.
    pub hi_us: i64,
}

/// One bucket of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Start, µs.
    pub start_us: i64,
    /// End, exclusive, µs.
    pub end_us: i64,
    /// Local label.
    pub label: String,
    /// Every part from the batch layer.
    pub is_final: bool,
    /// Highest batch revision among the parts.
    pub revision: i32,
}

/// Which rows make up which bucket.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The answer's buckets, in time order.
    pub slots: Vec<Slot>,
    /// The rows to read (adjacent parts of one kind merged).
    pub parts: Vec<Part>,
    locate: Locate,
}

#[derive(Debug, Clone)]
enum Locate {
    /// Fixed-width UTC buckets from an origin.
    Fixed { from_us: i64, width_us: i64 },
    /// Local days, each mapped to its slot.
    Days {
        tz: Tz,
        first: NaiveDate,
        slot_of_day: Vec<usize>,
    },
}

impl Plan {
    /// The slot a row's bucket (µs) counts in; `None` outside the plan.
    pub fn slot_of(&self, bucket_us: i64) -> Option<usize> {
        match &self.locate {
            Locate::Fixed { from_us, width_us } => {
                let i = (bucket_us - from_us).div_euclid(*width_us);
                usize::try_from(i).ok().filter(|i| *i < self.slots.len())
            }
            Locate::Days {
                tz,
                first,
                slot_of_day,
            } => {
                let day = (local_date(*tz, bucket_us) - *first).num_days();
                usize::try_from(day)
                    .ok()
                    .and_then(|d| slot_of_day.get(d).copied())
            }
        }
    }

    /// Whether every slot is final, and the highest revision.
    pub fn finality(&self) -> (bool, i32) {
        let is_final = !self.slots.is_empty() && self.slots.iter().all(|s| s.is_final);
        let revision = self.slots.iter().map(|s| s.revision).max().unwrap_or(0);
        (is_final, revision)
    }
}

fn push_part(parts: &mut Vec<Part>, part: Part) {
    if let Some(last) = parts.last_mut()
        && last.layer == part.layer
        && last.granularity == part.granularity
        && last.hi_us == part.lo_us
    {
        last.hi_us = part.hi_us;
        return;
    }
    parts.push(part);
}

/// The plan of a series over `window` with buckets of `interval`, given the closures that
/// overlap it. `single` puts every day into one bucket (breakdowns and aggregates).
pub fn plan(
    window: &Window,
    interval: Interval,
    tz: Tz,
    closures: &[Closure],
    single: bool,
) -> Plan {
    let mut parts = Vec::new();
    let mut slots = Vec::new();
    match (interval, window.days) {
        (Interval::Minute, _) | (Interval::Hour, _) | (_, None) => {
            let (width, granularity) = if interval == Interval::Minute {
                (MINUTE_US, Granularity::Minute)
            } else {
                (HOUR_US, Granularity::Hour)
            };
            let mut t = window.from_us;
            while t < window.to_us {
                let closure = (interval == Interval::Hour)
                    .then(|| {
                        closures
                            .iter()
                            .find(|c| c.starts_at_us <= t && t < c.ends_at_us)
                    })
                    .flatten();
                let layer = if closure.is_some() {
                    Layer::Batch
                } else {
                    Layer::Speed
                };
                push_part(
                    &mut parts,
                    Part {
                        layer,
                        granularity,
                        lo_us: t,
                        hi_us: t + width,
                    },
                );
                slots.push(Slot {
                    start_us: t,
                    end_us: t + width,
                    label: local_label(tz, t),
                    is_final: closure.is_some(),
                    revision: closure.map_or(0, |c| c.revision),
                });
                t += width;
            }
            Plan {
                slots,
                parts,
                locate: Locate::Fixed {
                    from_us: window.from_us,
                    width_us: width,
                },
            }
        }
        (_, Some((first, last))) => {
            let mut slot_of_day = Vec::new();
            let mut key_of_last: Option<(i32, u32)> = None;
            let mut day = first;
            while day <= last {
                let next = day.succ_opt().unwrap_or(day);
                let key = match interval {
                    _ if single => (0, 0),
                    Interval::Week => (day.iso_week().year(), day.iso_week().week()),
                    Interval::Month => (day.year(), day.month()),
                    _ => (day.year(), day.ordinal()),
                };
                let (start, end) = (day_start(tz, day), day_start(tz, next));
                if key_of_last != Some(key) {
                    let label_day = match interval {
                        _ if single => day,
                        Interval::Week => {
                            day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
                        }
                        Interval::Month => day.with_day(1).unwrap_or(day),
                        _ => day,
                    };
                    slots.push(Slot {
                        start_us: start,
                        end_us: end,
                        label: label_day.to_string(),
                        is_final: true,
                        revision: 0,
                    });
                    key_of_last = Some(key);
                }
                let index = slots.len() - 1;
                let slot = &mut slots[index];
                slot.end_us = end;
                match closures.iter().find(|c| c.day == day) {
                    Some(c) => {
                        slot.revision = slot.revision.max(c.revision);
                        push_part(
                            &mut parts,
                            Part {
                                layer: Layer::Batch,
                                granularity: Granularity::Day,
                                lo_us: c.starts_at_us,
                                hi_us: c.ends_at_us,
                            },
                        );
                    }
                    None => {
                        slot.is_final = false;
                        let granularity = if start % HOUR_US == 0 && end % HOUR_US == 0 {
                            Granularity::Hour
                        } else {
                            Granularity::Minute
                        };
                        push_part(
                            &mut parts,
                            Part {
                                layer: Layer::Speed,
                                granularity,
                                lo_us: start,
                                hi_us: end,
                            },
                        );
                    }
                }
                slot_of_day.push(index);
                if next == day {
                    break;
                }
                day = next;
            }
            Plan {
                slots,
                parts,
                locate: Locate::Days {
                    tz,
                    first,
                    slot_of_day,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        minute_hours: 48,
        hour_days: 31,
        days: 732,
    };

    fn dates(from: &str, to: &str) -> pb::TimeRange {
        pb::TimeRange {
            from_date: from.into(),
            to_date: to.into(),
            ..Default::default()
        }
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn local_days_follow_the_zone_and_its_dst_changes() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 is 23 hours long in New York, 2026-11-01 25 hours.
        let short = day_start(ny, date("2026-03-09")) - day_start(ny, date("2026-03-08"));
        let long = day_start(ny, date("2026-11-02")) - day_start(ny, date("2026-11-01"));
        assert_eq!((short / HOUR_US, long / HOUR_US), (23, 25));
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(
            local_label(kolkata, day_start(kolkata, date("2026-11-02"))),
            "2026-11-02T00:00:00+05:30"
        );
        // Midnight does not exist in Santiago on the day DST starts: the day starts at 01:00.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let start = day_start(santiago, date("2026-09-06"));
        assert_eq!(local_label(santiago, start), "2026-09-06T01:00:00-03:00");
    }

    #[test]
    fn open_days_compose_from_hours_or_minutes_and_closed_days_from_batch() {
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let w = resolve(
            Some(&dates("2026-11-02", "2026-11-03")),
            Interval::Day,
            kolkata,
            LIMITS,
        )
        .unwrap();
        let closure = Closure {
            day: date("2026-11-02"),
            starts_at_us: w.from_us,
            ends_at_us: day_start(kolkata, date("2026-11-03")),
            revision: 3,
        };
        let p = plan(
            &w,
            Interval::Day,
            kolkata,
            std::slice::from_ref(&closure),
            false,
        );
        assert_eq!(p.slots.len(), 2);
        assert!(p.slots[0].is_final && p.slots[0].revision == 3);
        assert!(!p.slots[1].is_final && p.slots[1].revision == 0);
        assert_eq!(p.parts[0].layer, Layer::Batch);
        assert_eq!(
            p.parts[1].granularity,
            Granularity::Minute,
            "+05:30 is not whole hours"
        );
        assert_eq!(p.slot_of(closure.starts_at_us), Some(0));
        assert_eq!(p.slot_of(closure.ends_at_us + MINUTE_US), Some(1));
        assert_eq!(p.slot_of(closure.ends_at_us - MINUTE_US), Some(0));

        let utc = chrono_tz::UTC;
        let w = resolve(
            Some(&dates("2026-11-02", "2026-11-04")),
            Interval::Day,
            utc,
            LIMITS,
        )
        .unwrap();
        let p = plan(&w, Interval::Day, utc, &[], false);
        assert_eq!(p.parts.len(), 1, "adjacent open days read as one range");
        assert_eq!(p.parts[0].granularity, Granularity::Hour);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let utc = chrono_tz::UTC;
        // Thursday 2026-10-29 to Tuesday 2026-11-10.
        let w = resolve(
            Some(&dates("2026-10-29", "2026-11-10")),
            Interval::Week,
            utc,
            LIMITS,
        )
        .unwrap();
        let p = plan(&w, Interval::Week, utc, &[], false);
        let labels: Vec<&str> = p.slots.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["2026-10-26", "2026-11-02", "2026-11-09"]);
        assert_eq!(
            p.slots[0].start_us, w.from_us,
            "the first week is clipped to the range"
        );
        let p = plan(&w, Interval::Month, utc, &[], false);
        let labels: Vec<&str> = p.slots.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["2026-10-01", "2026-11-01"]);
    }

    #[test]
    fn bad_and_long_ranges_are_refused_with_the_reason() {
        let utc = chrono_tz::UTC;
        let cases = [
            (dates("2026-11-03", "2026-11-02"), Interval::Day, "before"),
            (
                dates("2026-13-01", "2026-11-02"),
                Interval::Day,
                "from_date",
            ),
            (dates("2020-01-01", "2026-11-02"), Interval::Day, "732 days"),
            (dates("2026-10-01", "2026-11-02"), Interval::Hour, "31 days"),
            (
                dates("2026-11-01", "2026-11-05"),
                Interval::Minute,
                "48 hours",
            ),
            (pb::TimeRange::default(), Interval::Day, "set from_us"),
        ];
        for (range, interval, expected) in cases {
            let error = resolve(Some(&range), interval, utc, LIMITS).unwrap_err();
            assert!(error.to_string().contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn hours_inside_a_closure_are_final() {
        let utc = chrono_tz::UTC;
        let day = date("2026-11-02");
        let closure = Closure {
            day,
            starts_at_us: day_start(utc, day),
            ends_at_us: day_start(utc, date("2026-11-03")),
            revision: 1,
        };
        let range = pb::TimeRange {
            from_us: closure.ends_at_us - 2 * HOUR_US,
            to_us: closure.ends_at_us + HOUR_US,
            ..Default::default()
        };
        let w = resolve(Some(&range), Interval::Hour, utc, LIMITS).unwrap();
        let p = plan(&w, Interval::Hour, utc, &[closure], false);
        let finals: Vec<bool> = p.slots.iter().map(|s| s.is_final).collect();
        assert_eq!(finals, [true, true, false]);
        assert_eq!(p.parts.len(), 2);
    }
}
