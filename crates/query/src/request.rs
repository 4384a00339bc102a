//! What a metrics request selects, checked against what the rollups can answer.

use sightline_db::rollup::Dimension;
use sightline_proto::query::v1 as pb;

use crate::{
    QueryError,
    measure::{Metric, check_carried, parse_dimension, parse_metrics},
};

/// The rows a request reads and the figures it computes from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Figures, in the caller's order.
    pub metrics: Vec<Metric>,
    /// Rows of this dimension...
    pub dimension: Dimension,
    /// ...with this value (`None`: every value, a breakdown).
    pub value: Option<String>,
    /// The event whose visitors are the numerator of `conversion_rate`.
    pub conversion_event: Option<String>,
}

impl Selection {
    /// Whether `conversion_rate` is asked for.
    pub fn converts(&self) -> bool {
        self.metrics.contains(&Metric::ConversionRate)
    }
}

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError::InvalidArgument(message.into())
}

fn filter(filter: Option<&pb::Filter>) -> Result<Option<(Dimension, String)>, QueryError> {
    match filter {
        None => Ok(None),
        Some(f) if f.dimension.is_empty() && f.value.is_empty() => Ok(None),
        Some(f) => Ok(Some((
            parse_dimension("filter.dimension", &f.dimension)?,
            f.value.clone(),
        ))),
    }
}

/// A time series or aggregate: the site's totals, or one dimension value's rows.
pub fn totals(
    metrics: &[String],
    filter_by: Option<&pb::Filter>,
    conversion_event: &str,
) -> Result<Selection, QueryError> {
    let metrics = parse_metrics(metrics)?;
    let filter = filter(filter_by)?;
    let mut selection = Selection {
        metrics,
        dimension: Dimension::Total,
        value: Some(String::new()),
        conversion_event: None,
    };
    if let Some((dimension, value)) = filter {
        check_carried(&selection.metrics, dimension)?;
        selection.dimension = dimension;
        selection.value = Some(value);
    }
    if selection.converts() {
        if selection.dimension != Dimension::Total {
            return Err(invalid(
                "metrics: `conversion_rate` cannot be combined with a filter (rows hold one dimension)",
            ));
        }
        if conversion_event.is_empty() {
            return Err(invalid(
                "conversion_event: name the event whose `conversion_rate` is asked for",
            ));
        }
        selection.conversion_event = Some(conversion_event.to_string());
    }
    Ok(selection)
}

/// A breakdown by `dimension`, optionally narrowed to one of its own values.
pub fn breakdown(
    dimension: &str,
    metrics: &[String],
    filter_by: Option<&pb::Filter>,
) -> Result<Selection, QueryError> {
    let dimension = parse_dimension("dimension", dimension)?;
    let metrics = parse_metrics(metrics)?;
    check_carried(&metrics, dimension)?;
    let value = match filter(filter_by)? {
        None => None,
        Some((d, value)) if d == dimension => Some(value),
        Some((d, _)) => {
            return Err(invalid(format!(
                "filter: a breakdown by `{}` can only be filtered by `{}` itself, not `{}` (rows hold one dimension)",
                dimension.as_str(),
                dimension.as_str(),
                d.as_str()
            )));
        }
    };
    if metrics.contains(&Metric::ConversionRate) && dimension != Dimension::Event {
        return Err(invalid(format!(
            "metrics: `conversion_rate` is available in breakdowns by `event`, not `{}`",
            dimension.as_str()
        )));
    }
    Ok(Selection {
        metrics,
        dimension,
        value,
        conversion_event: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn conversion_rates_need_an_event_and_no_filter() {
        let m = names(&["visitors", "conversion_rate"]);
        assert!(
            totals(&m, None, "")
                .unwrap_err()
                .to_string()
                .contains("conversion_event")
        );
        let s = totals(&m, None, "Order Completed").unwrap();
        assert_eq!(s.conversion_event.as_deref(), Some("Order Completed"));
        let f = pb::Filter {
            dimension: "source".into(),
            value: "Google".into(),
        };
        assert!(totals(&m, Some(&f), "Order Completed").is_err());
        assert!(breakdown("event", &m, None).is_ok());
        assert!(breakdown("page", &m, None).is_err());
    }

    #[test]
    fn filters_read_that_dimensions_rows() {
        let f = pb::Filter {
            dimension: "page".into(),
            value: "/shoes".into(),
        };
        let s = totals(&names(&["pageviews"]), Some(&f), "").unwrap();
        assert_eq!(
            (s.dimension, s.value.as_deref()),
            (Dimension::Page, Some("/shoes"))
        );
        let error = totals(&names(&["visits"]), Some(&f), "").unwrap_err();
        assert!(error.to_string().contains("`visits`"), "{error}");
        let other = pb::Filter {
            dimension: "browser".into(),
            value: "Chrome".into(),
        };
        assert!(breakdown("page", &names(&["pageviews"]), Some(&other)).is_err());
        assert!(breakdown("page", &names(&["pageviews"]), Some(&f)).is_ok());
    }
}
