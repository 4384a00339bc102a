//! `sightline query …`: `serve` runs the service; the other subcommands call a running one and
//! print tables (or JSON with `--json`), so a person can look at figures without a client.

use std::io::Write as _;

use arrow::{
    ipc::reader::StreamReader,
    util::display::{ArrayFormatter, FormatOptions},
};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};
use sightline_proto::query::v1::{self as pb, query_client::QueryClient};
use tonic::transport::Channel;

/// A result whose error is a message for the person at the terminal.
type CliResult<T> = Result<T, String>;

/// `sightline query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: QueryCommand,
}

/// Where the service is and who is asking.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The query service's gRPC address.
    #[arg(
        long,
        env = "SIGHTLINE_QUERY_ADDRESS",
        default_value = "http://127.0.0.1:50051"
    )]
    pub address: String,
    /// A read token (`sightline admin read-token issue`).
    #[arg(long, env = "SIGHTLINE_QUERY_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A range: local dates (YYYY-MM-DD, both inclusive) or RFC 3339 instants (`--to` exclusive).
#[derive(Debug, Args, Clone)]
pub struct RangeArgs {
    /// First day or instant; default six days before today.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day or end instant; default today.
    #[arg(long)]
    pub to: Option<String>,
}

/// The figures asked for.
#[derive(Debug, Args, Clone)]
pub struct MetricArgs {
    /// Site id.
    #[arg(long)]
    pub site: i64,
    /// Comma-separated metrics: pageviews, visitors, visits, bounce_rate, visit_duration,
    /// views_per_visit, events, revenue, conversion_rate.
    #[arg(long, value_delimiter = ',', default_value = "visitors,pageviews")]
    pub metrics: Vec<String>,
    /// Keep one dimension value: `source=Google`.
    #[arg(long)]
    pub filter: Option<String>,
    /// The event of conversion_rate.
    #[arg(long)]
    pub conversion_event: Option<String>,
    #[command(flatten)]
    pub range: RangeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Run the query service.
    Serve,
    /// Metrics per minute, hour, day, week or month.
    Timeseries {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        metrics: MetricArgs,
        /// minute, hour, day, week or month.
        #[arg(long, default_value = "day")]
        interval: String,
    },
    /// Top values of a dimension.
    Breakdown {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        metrics: MetricArgs,
        /// page, entry_page, exit_page, source, medium, utm_source, utm_medium, utm_campaign,
        /// browser, os, device, event.
        #[arg(long)]
        dimension: String,
        /// Sort by this metric (default the first).
        #[arg(long)]
        order_by: Option<String>,
        /// Rows per page.
        #[arg(long, default_value_t = 10)]
        limit: i32,
        /// The next_page_token of a previous answer.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Totals over a range, and over the same number of days before it.
    Aggregate {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        metrics: MetricArgs,
    },
    /// Visitors in the last five minutes and the top pages.
    Realtime {
        #[command(flatten)]
        client: ClientArgs,
        /// Site id.
        #[arg(long)]
        site: i64,
        /// Pages to show.
        #[arg(long, default_value_t = 10)]
        top: i32,
    },
    /// Up to when each site's figures are complete.
    Freshness {
        #[command(flatten)]
        client: ClientArgs,
        /// Site ids; default every site the token may read.
        #[arg(long = "site")]
        sites: Vec<i64>,
    },
    /// SQL over the lake (`events`, `trusted_events`) of the token's tenant.
    Sql {
        #[command(flatten)]
        client: ClientArgs,
        /// For admin tokens: the tenant to query.
        #[arg(long, default_value_t = 0)]
        tenant: i64,
        /// The query.
        sql: String,
    },
}

fn range(args: &RangeArgs) -> CliResult<pb::TimeRange> {
    let today = Utc::now().date_naive();
    let from = args
        .from
        .clone()
        .unwrap_or_else(|| (today - chrono::Duration::days(6)).to_string());
    let to = args.to.clone().unwrap_or_else(|| today.to_string());
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    match (date(&from), date(&to)) {
        (Some(_), Some(_)) => Ok(pb::TimeRange {
            from_date: from,
            to_date: to,
            ..Default::default()
        }),
        _ => {
            let instant = |s: &str| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_micros())
                    .map_err(|_| {
                        format!("`{s}` is neither a date (YYYY-MM-DD) nor an RFC 3339 instant")
                    })
            };
            Ok(pb::TimeRange {
                from_us: instant(&from)?,
                to_us: instant(&to)?,
                ..Default::default()
            })
        }
    }
}

fn filter(text: &Option<String>) -> CliResult<Option<pb::Filter>> {
    match text {
        None => Ok(None),
        Some(t) => {
            let (dimension, value) = t
                .split_once('=')
                .ok_or_else(|| format!("--filter `{t}`: write dimension=value"))?;
            Ok(Some(pb::Filter {
                dimension: dimension.to_string(),
                value: value.to_string(),
            }))
        }
    }
}

fn request<T>(message: T, token: &str) -> CliResult<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token is not a valid header value".to_string())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

async fn connect(address: &str) -> CliResult<QueryClient<Channel>> {
    let channel = Channel::from_shared(address.to_string())
        .map_err(|e| format!("bad address `{address}`: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach the query service at {address}: {e}"))?;
    Ok(QueryClient::new(channel))
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Runs a client subcommand; `Serve` is the caller's (it needs the configuration).
pub async fn client(command: QueryCommand) -> std::process::ExitCode {
    match run_client(command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn time(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .filter(|_| us != 0)
        .map_or_else(|| "-".to_string(), |t| t.to_rfc3339())
}

fn watermark_json(w: &Option<pb::Watermark>) -> Json {
    let w = w.unwrap_or_default();
    json!({
        "complete_until": time(w.complete_until_us),
        "speed_complete_until": time(w.speed_complete_until_us),
        "batch_complete_until": time(w.batch_complete_until_us),
    })
}

fn values_json(values: &[pb::Value]) -> Json {
    Json::Object(
        values
            .iter()
            .map(|v| {
                let figure = if v.approximate {
                    json!({"value": v.value, "approximate": true, "relative_error": v.relative_error})
                } else {
                    json!(v.value)
                };
                (v.metric.clone(), figure)
            })
            .collect(),
    )
}

fn cell(v: &pb::Value) -> String {
    let text = match v.metric.as_str() {
        "bounce_rate" | "conversion_rate" => format!("{:.1}%", v.value * 100.0),
        "visit_duration" => format!("{:.0}s", v.value),
        "views_per_visit" => format!("{:.2}", v.value),
        "revenue" => format!("{:.2}", v.value),
        _ => format!("{}", v.value),
    };
    if v.approximate {
        format!("~{text}")
    } else {
        text
    }
}

/// Prints an aligned table.
fn table(headers: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        line(&headers.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

fn print_json(value: &Json) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("cannot encode JSON: {error}"),
    }
}

fn footer(watermark: &Option<pb::Watermark>) {
    let w = watermark.unwrap_or_default();
    println!(
        "complete until {} (speed {}, batch {}); ~ approximate (HLL)",
        time(w.complete_until_us),
        time(w.speed_complete_until_us),
        time(w.batch_complete_until_us)
    );
}

async fn run_client(command: QueryCommand) -> CliResult<()> {
    match command {
        QueryCommand::Serve => Err("`serve` runs the service, not a client".into()),
        QueryCommand::Timeseries {
            client,
            metrics,
            interval,
        } => {
            let answer = connect(&client.address)
                .await?
                .get_timeseries(request(
                    pb::TimeseriesRequest {
                        site_id: metrics.site,
                        metrics: metrics.metrics.clone(),
                        interval,
                        range: Some(range(&metrics.range)?),
                        filter: filter(&metrics.filter)?,
                        conversion_event: metrics.conversion_event.clone().unwrap_or_default(),
                    },
                    &client.token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if client.json {
                let buckets: Vec<Json> = answer
                    .buckets
                    .iter()
                    .map(|b| {
                        json!({"bucket": b.label, "is_final": b.is_final, "revision": b.revision,
                               "values": values_json(&b.values)})
                    })
                    .collect();
                print_json(
                    &json!({"time_zone": answer.time_zone, "currency": answer.currency,
                    "buckets": buckets, "watermark": watermark_json(&answer.watermark)}),
                );
                return Ok(());
            }
            let mut headers = vec!["bucket".to_string(), "final".to_string()];
            headers.extend(metrics.metrics.iter().cloned());
            let rows: Vec<Vec<String>> = answer
                .buckets
                .iter()
                .map(|b| {
                    let mut row = vec![
                        b.label.clone(),
                        if b.is_final {
                            format!("r{}", b.revision)
                        } else {
                            "-".into()
                        },
                    ];
                    row.extend(b.values.iter().map(cell));
                    row
                })
                .collect();
            table(&headers, &rows);
            footer(&answer.watermark);
            Ok(())
        }
        QueryCommand::Breakdown {
            client,
            metrics,
            dimension,
            order_by,
            limit,
            page_token,
        } => {
            let answer = connect(&client.address)
                .await?
                .get_breakdown(request(
                    pb::BreakdownRequest {
                        site_id: metrics.site,
                        dimension: dimension.clone(),
                        metrics: metrics.metrics.clone(),
                        range: Some(range(&metrics.range)?),
                        filter: filter(&metrics.filter)?,
                        conversion_event: metrics.conversion_event.clone().unwrap_or_default(),
                        order_by: order_by.unwrap_or_default(),
                        page_size: limit,
                        page_token: page_token.unwrap_or_default(),
                    },
                    &client.token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if client.json {
                let rows: Vec<Json> = answer
                    .rows
                    .iter()
                    .map(|r| json!({"value": r.value, "values": values_json(&r.values)}))
                    .collect();
                print_json(
                    &json!({"dimension": dimension, "rows": rows, "total_values": answer.total_values,
                    "next_page_token": answer.next_page_token, "is_final": answer.is_final,
                    "revision": answer.revision, "watermark": watermark_json(&answer.watermark)}),
                );
                return Ok(());
            }
            let mut headers = vec![dimension];
            headers.extend(metrics.metrics.iter().cloned());
            let rows: Vec<Vec<String>> = answer
                .rows
                .iter()
                .map(|r| {
                    let mut row = vec![r.value.clone()];
                    row.extend(r.values.iter().map(cell));
                    row
                })
                .collect();
            table(&headers, &rows);
            if !answer.next_page_token.is_empty() {
                println!(
                    "{} values; next page: --page-token {}",
                    answer.total_values, answer.next_page_token
                );
            }
            footer(&answer.watermark);
            Ok(())
        }
        QueryCommand::Aggregate { client, metrics } => {
            let answer = connect(&client.address)
                .await?
                .get_aggregate(request(
                    pb::AggregateRequest {
                        site_id: metrics.site,
                        metrics: metrics.metrics.clone(),
                        range: Some(range(&metrics.range)?),
                        filter: filter(&metrics.filter)?,
                        conversion_event: metrics.conversion_event.clone().unwrap_or_default(),
                    },
                    &client.token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let current = answer.current.unwrap_or_default();
            let previous = answer.previous.unwrap_or_default();
            if client.json {
                let period = |p: &pb::Period| {
                    json!({"from": time(p.start_us), "to": time(p.end_us), "is_final": p.is_final,
                           "revision": p.revision, "values": values_json(&p.values)})
                };
                print_json(
                    &json!({"current": period(&current), "previous": period(&previous),
                    "watermark": watermark_json(&answer.watermark)}),
                );
                return Ok(());
            }
            let headers: Vec<String> = ["metric", "current", "previous", "change"]
                .map(String::from)
                .to_vec();
            let rows: Vec<Vec<String>> = current
                .values
                .iter()
                .zip(&previous.values)
                .map(|(c, p)| {
                    let change = if p.value != 0.0 {
                        format!("{:+.1}%", (c.value - p.value) / p.value * 100.0)
                    } else {
                        "-".into()
                    };
                    vec![c.metric.clone(), cell(c), cell(p), change]
                })
                .collect();
            table(&headers, &rows);
            footer(&answer.watermark);
            Ok(())
        }
        QueryCommand::Realtime { client, site, top } => {
            let answer = connect(&client.address)
                .await?
                .get_realtime(request(
                    pb::RealtimeRequest {
                        site_id: site,
                        top_pages: top,
                    },
                    &client.token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let visitors = answer.visitors.unwrap_or_default().value;
            if client.json {
                let pages: Vec<Json> = answer
                    .top_pages
                    .iter()
                    .map(|p| {
                        json!({"page": p.page, "pageviews": p.pageviews,
                                    "visitors": p.visitors.as_ref().map_or(0.0, |v| v.value)})
                    })
                    .collect();
                print_json(
                    &json!({"from": time(answer.from_us), "to": time(answer.to_us),
                    "visitors": visitors, "pageviews": answer.pageviews, "top_pages": pages}),
                );
                return Ok(());
            }
            println!(
                "{visitors} visitors, {} pageviews since {}",
                answer.pageviews,
                time(answer.from_us)
            );
            let rows: Vec<Vec<String>> = answer
                .top_pages
                .iter()
                .map(|p| {
                    vec![
                        p.page.clone(),
                        p.visitors.as_ref().map_or(0.0, |v| v.value).to_string(),
                        p.pageviews.to_string(),
                    ]
                })
                .collect();
            table(&["page", "visitors", "pageviews"].map(String::from), &rows);
            Ok(())
        }
        QueryCommand::Freshness { client, sites } => {
            let answer = connect(&client.address)
                .await?
                .get_freshness(request(
                    pb::FreshnessRequest { site_ids: sites },
                    &client.token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            if client.json {
                let sites: Vec<Json> = answer
                    .sites
                    .iter()
                    .map(|s| json!({"site_id": s.site_id, "time_zone": s.time_zone,
                        "watermark": watermark_json(&s.watermark), "last_closed_day": s.last_closed_day,
                        "last_closed_revision": s.last_closed_revision}))
                    .collect();
                print_json(&json!({"sites": sites}));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = answer
                .sites
                .iter()
                .map(|s| {
                    let w = s.watermark.unwrap_or_default();
                    vec![
                        s.site_id.to_string(),
                        s.time_zone.clone(),
                        time(w.speed_complete_until_us),
                        time(w.batch_complete_until_us),
                        format!("{} r{}", s.last_closed_day, s.last_closed_revision),
                    ]
                })
                .collect();
            table(
                &[
                    "site",
                    "time_zone",
                    "speed_until",
                    "batch_until",
                    "last_closed",
                ]
                .map(String::from),
                &rows,
            );
            Ok(())
        }
        QueryCommand::Sql {
            client,
            tenant,
            sql,
        } => {
            let mut stream = connect(&client.address)
                .await?
                .execute_sql(request(
                    pb::SqlRequest {
                        sql,
                        tenant_id: tenant,
                        page_size: 0,
                    },
                    &client.token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let mut headers: Vec<String> = Vec::new();
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut truncated = false;
            while let Some(page) = stream.message().await.map_err(status)? {
                if headers.is_empty() {
                    headers = page.columns.iter().map(|c| c.name.clone()).collect();
                }
                truncated |= page.truncated;
                let reader = StreamReader::try_new(std::io::Cursor::new(page.arrow_ipc), None)
                    .map_err(|e| format!("unreadable page: {e}"))?;
                for batch in reader {
                    let batch = batch.map_err(|e| format!("unreadable page: {e}"))?;
                    let options = FormatOptions::default().with_null("NULL");
                    let formatters = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("unprintable column: {e}"))?;
                    for i in 0..batch.num_rows() {
                        rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
                    }
                }
            }
            if client.json {
                let objects: Vec<Json> = rows
                    .iter()
                    .map(|r| {
                        Json::Object(
                            headers
                                .iter()
                                .cloned()
                                .zip(r.iter().map(|c| json!(c)))
                                .collect(),
                        )
                    })
                    .collect();
                print_json(&json!({"rows": objects, "truncated": truncated}));
            } else {
                table(&headers, &rows);
                if truncated {
                    println!("(cut at the row limit)");
                }
            }
            Ok(())
        }
    }
}
