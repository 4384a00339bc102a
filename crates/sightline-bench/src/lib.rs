//! Sightline's benchmarks (run by `scripts/bench/ingest`, results in `docs/benchmarks.md`).
//!
//! - `ingest-load`: an HTTP/1.1 keep-alive load generator for ingest's `/v1/batch`, closed loop
//!   (C connections as fast as they go) or open loop (a fixed request rate, latency measured
//!   from each request's scheduled send time, so a stalled server is not hidden by a load
//!   generator that waits for it).
//! - `bare-publish`: the baseline, a bare lapin publisher with confirms that sends the same
//!   events, batched as ingest batches them, to the same topology: what the broker can take.
//! - `batch-bench`: the batch enricher's `reprocess` of a generated day against the same job in
//!   PySpark `local[2]` on the same files ([`batch_day`] writes them).
//! - `freshness-probe`: one-event requests whose count in the rollups is polled for: the time
//!   from ingest's 2xx to the event counted (run by `scripts/bench/freshness`).
//!
//! The load generators watch the other processes (`--watch ingest=PID`) and report the cores
//! each used.

pub mod baseline;
pub mod batch_day;
pub mod events;
pub mod load;
pub mod procstat;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// A histogram of microseconds from 1 µs to 100 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}
