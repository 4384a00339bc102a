//! The metrics a caller can ask for, which rollup dimensions carry them, and how each is
//! computed from summed counters and united visitor sketches.

use sightline_db::rollup::Dimension;
use sightline_event::VisitorSketch;
use sightline_proto::query::v1 as pb;

use crate::QueryError;

/// A figure of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Page and screen views.
    Pageviews,
    /// Unique visitors (HLL sketch: approximate).
    Visitors,
    /// Visits (sessions), counted in the bucket where they started.
    Visits,
    /// Bounces (one-pageview visits) over visits.
    BounceRate,
    /// Mean visit duration, seconds.
    VisitDuration,
    /// Pageviews over visits.
    ViewsPerVisit,
    /// Every non-bot event.
    Events,
    /// Revenue in the site's currency.
    Revenue,
    /// Visitors who sent the named event over all visitors.
    ConversionRate,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 9] = [
        Self::Pageviews,
        Self::Visitors,
        Self::Visits,
        Self::BounceRate,
        Self::VisitDuration,
        Self::ViewsPerVisit,
        Self::Events,
        Self::Revenue,
        Self::ConversionRate,
    ];

    /// The API name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pageviews => "pageviews",
            Self::Visitors => "visitors",
            Self::Visits => "visits",
            Self::BounceRate => "bounce_rate",
            Self::VisitDuration => "visit_duration",
            Self::ViewsPerVisit => "views_per_visit",
            Self::Events => "events",
            Self::Revenue => "revenue",
            Self::ConversionRate => "conversion_rate",
        }
    }

    /// Whether rows of `dimension` carry what this metric needs (see "What a row holds" in
    /// docs/stream-processor.md). Conversion rates have their own rules (see `request`).
    pub fn carried_by(self, dimension: Dimension) -> bool {
        use Dimension as D;
        let visit_attribute = matches!(
            dimension,
            D::Source
                | D::Medium
                | D::UtmSource
                | D::UtmMedium
                | D::UtmCampaign
                | D::Browser
                | D::Os
                | D::Device
        );
        if dimension == D::Total || visit_attribute {
            return true;
        }
        match self {
            Self::Pageviews => dimension == D::Page,
            Self::Visitors | Self::Events => matches!(dimension, D::Page | D::Event),
            Self::Visits => matches!(dimension, D::EntryPage | D::ExitPage),
            Self::BounceRate => dimension == D::EntryPage,
            Self::Revenue => dimension == D::Event,
            Self::VisitDuration | Self::ViewsPerVisit | Self::ConversionRate => false,
        }
    }
}

/// Dimensions a caller may break down or filter by.
pub const DIMENSIONS: [Dimension; 12] = [
    Dimension::Page,
    Dimension::EntryPage,
    Dimension::ExitPage,
    Dimension::Source,
    Dimension::Medium,
    Dimension::UtmSource,
    Dimension::UtmMedium,
    Dimension::UtmCampaign,
    Dimension::Browser,
    Dimension::Os,
    Dimension::Device,
    Dimension::Event,
];

fn names<T: Copy>(items: &[T], name: impl Fn(T) -> &'static str) -> String {
    items
        .iter()
        .map(|i| name(*i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The metrics named in a request, in order, each once.
pub fn parse_metrics(requested: &[String]) -> Result<Vec<Metric>, QueryError> {
    if requested.is_empty() {
        return Err(QueryError::InvalidArgument(format!(
            "metrics: name at least one of {}",
            names(&Metric::ALL, Metric::name)
        )));
    }
    let mut metrics = Vec::new();
    for name in requested {
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                QueryError::InvalidArgument(format!(
                    "metrics: unknown metric `{name}` (known: {})",
                    names(&Metric::ALL, Metric::name)
                ))
            })?;
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    Ok(metrics)
}

/// A dimension named in a request (`field` says where, for the message).
pub fn parse_dimension(field: &str, name: &str) -> Result<Dimension, QueryError> {
    DIMENSIONS
        .into_iter()
        .find(|d| d.as_str() == name)
        .ok_or_else(|| {
            QueryError::InvalidArgument(format!(
                "{field}: unknown dimension `{name}` (known: {})",
                names(&DIMENSIONS, Dimension::as_str)
            ))
        })
}

/// Refuses metrics that rows of `dimension` do not carry.
pub fn check_carried(metrics: &[Metric], dimension: Dimension) -> Result<(), QueryError> {
    for m in metrics {
        if *m != Metric::ConversionRate && !m.carried_by(dimension) {
            let carried: Vec<Metric> = Metric::ALL
                .into_iter()
                .filter(|m| *m != Metric::ConversionRate && m.carried_by(dimension))
                .collect();
            return Err(QueryError::InvalidArgument(format!(
                "metrics: `{}` is not available for dimension `{}` (available: {})",
                m.name(),
                dimension.as_str(),
                names(&carried, Metric::name)
            )));
        }
    }
    Ok(())
}

/// Counters summed over rollup rows, and their visitor sketches (serialised) to unite.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Non-bot events.
    pub events: i64,
    /// Page and screen views.
    pub pageviews: i64,
    /// Visits started.
    pub visits: i64,
    /// One-pageview visits.
    pub bounces: i64,
    /// Total visit duration, µs.
    pub duration_us: i64,
    /// Revenue, millionths of the site's currency.
    pub revenue_micros: i64,
    /// Visitor sketches of the rows.
    pub sketches: Vec<Vec<u8>>,
}

impl Totals {
    /// Adds another set of rows.
    pub fn add(&mut self, other: Totals) {
        self.events += other.events;
        self.pageviews += other.pageviews;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration_us += other.duration_us;
        self.revenue_micros += other.revenue_micros;
        self.sketches.extend(other.sketches);
    }

    /// The union of every sketch.
    fn united(&self) -> Result<VisitorSketch, QueryError> {
        let sketches = self
            .sketches
            .iter()
            .map(|b| VisitorSketch::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueryError::Internal(format!("unreadable visitor sketch: {e}")))?;
        Ok(VisitorSketch::union_of(&sketches))
    }

    /// Replaces the sketches with their union (the same visitors, one sketch to read later).
    pub fn unite(&mut self) -> Result<(), QueryError> {
        if self.sketches.len() > 1 {
            self.sketches = vec![self.united()?.to_bytes()];
        }
        Ok(())
    }

    /// The estimated visitors of the union of every sketch.
    pub fn visitors(&self) -> Result<f64, QueryError> {
        if self.sketches.is_empty() {
            return Ok(0.0);
        }
        Ok(self.united()?.estimate().round())
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// The figures of `metrics` over `totals`. `conversions` are the totals of the converting
/// visitors' rows (needed for [`Metric::ConversionRate`]).
pub fn values(
    metrics: &[Metric],
    totals: &Totals,
    conversions: Option<&Totals>,
) -> Result<Vec<pb::Value>, QueryError> {
    let needs_visitors = metrics
        .iter()
        .any(|m| matches!(m, Metric::Visitors | Metric::ConversionRate));
    let visitors = if needs_visitors {
        totals.visitors()?
    } else {
        0.0
    };
    let error = VisitorSketch::relative_error();
    let mut out = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let t = totals;
        let (value, relative_error) = match metric {
            Metric::Pageviews => (t.pageviews as f64, 0.0),
            Metric::Visitors => (visitors, error),
            Metric::Visits => (t.visits as f64, 0.0),
            Metric::BounceRate => (ratio(t.bounces as f64, t.visits as f64), 0.0),
            Metric::VisitDuration => (ratio(t.duration_us as f64 / 1e6, t.visits as f64), 0.0),
            Metric::ViewsPerVisit => (ratio(t.pageviews as f64, t.visits as f64), 0.0),
            Metric::Events => (t.events as f64, 0.0),
            Metric::Revenue => (t.revenue_micros as f64 / 1e6, 0.0),
            Metric::ConversionRate => {
                let converted = match conversions {
                    Some(c) => c.visitors()?,
                    None => 0.0,
                };
                // A ratio of two estimates: their relative errors add up at worst.
                (ratio(converted, visitors).min(1.0), 2.0 * error)
            }
        };
        out.push(pb::Value {
            metric: metric.name().to_string(),
            value,
            approximate: relative_error > 0.0,
            relative_error,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unavailable_metrics_are_named() {
        let error = parse_metrics(&["pageviews".into(), "pagevews".into()]).unwrap_err();
        assert!(error.to_string().contains("`pagevews`"), "{error}");
        assert!(parse_metrics(&[]).is_err());
        let error = check_carried(&[Metric::BounceRate], Dimension::Page).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("`bounce_rate`") && text.contains("`page`"),
            "{text}"
        );
        assert!(check_carried(&Metric::ALL, Dimension::Source).is_ok());
        assert!(check_carried(&[Metric::Visits, Metric::BounceRate], Dimension::EntryPage).is_ok());
        let error = parse_dimension("dimension", "currency").unwrap_err();
        assert!(error.to_string().contains("`currency`"));
    }

    #[test]
    fn ratios_of_nothing_are_zero_and_visitors_are_united() {
        let mut a = VisitorSketch::new();
        a.insert("v1");
        a.insert("v2");
        let mut b = VisitorSketch::new();
        b.insert("v2");
        b.insert("v3");
        let totals = Totals {
            pageviews: 6,
            visits: 3,
            bounces: 1,
            duration_us: 90_000_000,
            revenue_micros: 1_500_000,
            sketches: vec![a.to_bytes(), b.to_bytes()],
            ..Totals::default()
        };
        let conv = Totals {
            sketches: vec![b.to_bytes()],
            ..Totals::default()
        };
        let v = values(&Metric::ALL, &totals, Some(&conv)).unwrap();
        let get = |m: Metric| v.iter().find(|x| x.metric == m.name()).unwrap().value;
        assert_eq!(get(Metric::Visitors), 3.0);
        assert_eq!(get(Metric::BounceRate), 1.0 / 3.0);
        assert_eq!(get(Metric::VisitDuration), 30.0);
        assert_eq!(get(Metric::ViewsPerVisit), 2.0);
        assert_eq!(get(Metric::Revenue), 1.5);
        assert_eq!(get(Metric::ConversionRate), 2.0 / 3.0);
        let empty = values(&Metric::ALL, &Totals::default(), None).unwrap();
        assert!(empty.iter().all(|x| x.value == 0.0));
    }
}
