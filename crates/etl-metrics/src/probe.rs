//! Measuring the pipeline: one [`Snapshot`] per evaluation, from the database (the speed
//! layer's watermarks, the ledger) and the broker (queue depths), from which the gauges and the
//! alert rules both read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lapin::{Channel, Connection, options::QueueDeclareOptions, types::FieldTable};
use sightline_broker::Topology;
use sqlx::PgPool;
use tracing::debug;

/// Depth of one partition queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// Its consumer group.
    pub group: String,
    /// Its partition.
    pub partition: u32,
    /// Ready messages (not counting those delivered and not yet acknowledged).
    pub messages: u32,
}

/// What the broker said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depths {
    /// Every partition queue that exists.
    pub partitions: Vec<QueueDepth>,
    /// The dead-letter queue's messages, `None` when it does not exist.
    pub dead_letter: Option<u32>,
}

impl Depths {
    fn of(&self, group: &str, partition: u32) -> Option<u32> {
        self.partitions
            .iter()
            .find(|d| d.group == group && d.partition == partition)
            .map(|d| d.messages)
    }
}

/// Rejected and read rows of one pipeline in the recent window.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejects {
    /// The pipeline.
    pub pipeline: String,
    /// Rows (or events) read.
    pub read: i64,
    /// Rows (or events) rejected.
    pub rejected: i64,
}

/// The pipeline at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub now: DateTime<Utc>,
    /// Queue depths; `None` when the broker could not be reached.
    pub depths: Option<Depths>,
    /// The freshness group's name and partitions.
    pub freshness_group: String,
    /// Partitions of the freshness group.
    pub partitions: u32,
    /// `rollup_watermarks.received_until` by partition (shard).
    pub received_until: BTreeMap<u32, DateTime<Utc>>,
    /// Tenants with at least one site.
    pub tenants: Vec<i64>,
    /// The daily job's last complete success (every shard of a sharded run).
    pub last_daily_success: Option<DateTime<Utc>>,
    /// When the ledger was installed.
    pub ledger_epoch: DateTime<Utc>,
    /// Rejects per pipeline.
    pub rejects: Vec<Rejects>,
}

impl Snapshot {
    /// The speed layer's watermark: every event received before it is in the rollups.
    ///
    /// It is the oldest partition watermark (`received_until` of the partition's last flush;
    /// tenants share partitions, so one tenant's events may sit in any of them). A drained
    /// partition is not taken as caught up from its queue alone: a consumer that holds its
    /// prefetched messages unacknowledged (stuck on a flush, or gone) leaves the queue's ready
    /// count at 0. The stream processor moves a drained partition's watermark to the present
    /// itself, every few seconds, so a quiet partition stays fresh only while its consumer is
    /// alive. A partition with no watermark counts from the Unix epoch while messages wait in
    /// its queue, and is left out while none do (it never had traffic). Without depths (broker
    /// unreachable) only the stored watermarks count. `None` when nothing is known.
    pub fn speed_watermark(&self) -> Option<DateTime<Utc>> {
        (0..self.partitions)
            .filter_map(|p| {
                let depth = self
                    .depths
                    .as_ref()
                    .and_then(|d| d.of(&self.freshness_group, p));
                match (self.received_until.get(&p), depth) {
                    (Some(t), _) => Some(*t),
                    (None, Some(0) | None) => None,
                    (None, Some(_)) => Some(DateTime::UNIX_EPOCH),
                }
            })
            .min()
    }

    /// Seconds the speed layer is behind (the same for every tenant: see
    /// [`Snapshot::speed_watermark`]).
    pub fn freshness_lag_secs(&self) -> Option<f64> {
        self.speed_watermark()
            .map(|w| (self.now - w).as_seconds_f64().max(0.0))
    }

    /// Seconds since the daily job last succeeded; since the ledger was installed while it
    /// never did, so a schedule that never runs is noticed too.
    pub fn daily_run_age_secs(&self) -> f64 {
        let since = self.last_daily_success.unwrap_or(self.ledger_epoch);
        (self.now - since).as_seconds_f64().max(0.0)
    }

    /// Rejected over read per pipeline (pipelines that read nothing are left out).
    pub fn rejected_ratios(&self) -> Vec<(String, f64)> {
        self.rejects
            .iter()
            .filter(|r| r.read > 0)
            .map(|r| (r.pipeline.clone(), r.rejected as f64 / r.read as f64))
            .collect()
    }
}

// The daily job's last complete success. A run sharded over pods (`--shard i --shards n`, in the
// run's parameters) is one run per shard: a day counts once every shard of it succeeded, at the
// last one's finish. Runs without shard parameters are one shard of one.
const DAILY_SUCCESS: &str = "SELECT max(done) FROM ( \
        SELECT max(finished_at) AS done FROM pipeline_runs \
         WHERE pipeline = $1 AND job = $2 AND status = 'succeeded' \
         GROUP BY coalesce(params->>'date', left(params->>'now', 10)), \
                  coalesce(params->>'shards', '1') \
        HAVING count(DISTINCT coalesce(params->>'shard', '0')) \
               >= max(coalesce(substring(params->>'shards' FROM '^[0-9]{1,6}$')::int, 1))) complete";

/// What a snapshot is taken with.
pub struct Probe {
    pool: PgPool,
    broker: BrokerProbe,
    daily: (String, String),
    freshness_group: String,
    partitions: u32,
    rejected_window_secs: i64,
}

impl Probe {
    /// A probe on `pool` and the broker at `broker_url`.
    pub fn new(
        pool: PgPool,
        broker_url: String,
        topology: Topology,
        config: &crate::config::EtlMetricsConfig,
    ) -> Self {
        Self {
            pool,
            partitions: topology.partitions,
            broker: BrokerProbe::new(broker_url, topology),
            daily: (config.daily_pipeline.clone(), config.daily_job.clone()),
            freshness_group: config.freshness_group.clone(),
            rejected_window_secs: i64::try_from(config.rejected_ratio_window_secs)
                .unwrap_or(i64::MAX),
        }
    }

    /// Measures. Fails only when the database does; an unreachable broker leaves the depths
    /// out.
    pub async fn snapshot(&mut self) -> sqlx::Result<Snapshot> {
        let depths = match self.broker.depths().await {
            Ok(d) => Some(d),
            Err(error) => {
                debug!(%error, "cannot read queue depths");
                None
            }
        };
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?;
        let received_until: Vec<(i32, DateTime<Utc>)> =
            sqlx::query_as("SELECT shard, received_until FROM rollup_watermarks")
                .fetch_all(&self.pool)
                .await?;
        let tenants: Vec<i64> =
            sqlx::query_scalar("SELECT DISTINCT tenant_id FROM sites ORDER BY tenant_id")
                .fetch_all(&self.pool)
                .await?;
        let last_daily_success: Option<DateTime<Utc>> = sqlx::query_scalar(DAILY_SUCCESS)
            .bind(&self.daily.0)
            .bind(&self.daily.1)
            .fetch_one(&self.pool)
            .await?;
        let ledger_epoch: DateTime<Utc> =
            sqlx::query_scalar("SELECT created_at FROM pipeline_ledger_epoch")
                .fetch_one(&self.pool)
                .await?;
        let rejects: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT pipeline, sum(read)::bigint, sum(rejected)::bigint FROM ( \
               SELECT r.pipeline, s.rows_read AS read, s.rows_rejected AS rejected \
                 FROM pipeline_stage_runs s JOIN pipeline_runs r USING (run_id) \
                WHERE s.finished_at >= now() - make_interval(secs => $1) \
               UNION ALL \
               SELECT pipeline, events_in, events_rejected FROM pipeline_stream_windows \
                WHERE window_end >= now() - make_interval(secs => $1)) recent \
             GROUP BY pipeline ORDER BY pipeline",
        )
        .bind(self.rejected_window_secs as f64)
        .fetch_all(&self.pool)
        .await?;
        Ok(Snapshot {
            now,
            depths,
            freshness_group: self.freshness_group.clone(),
            partitions: self.partitions,
            received_until: received_until
                .into_iter()
                .filter_map(|(shard, t)| Some((u32::try_from(shard).ok()?, t)))
                .collect(),
            tenants,
            last_daily_success,
            ledger_epoch,
            rejects: rejects
                .into_iter()
                .map(|(pipeline, read, rejected)| Rejects {
                    pipeline,
                    read,
                    rejected,
                })
                .collect(),
        })
    }

    /// The daily job watched, (pipeline, job).
    pub fn daily_job(&self) -> (&str, &str) {
        (&self.daily.0, &self.daily.1)
    }
}

/// Reads queue depths with passive declares (plain AMQP: no management plugin needed), on a
/// connection kept between readings.
struct BrokerProbe {
    url: String,
    topology: Topology,
    connection: Option<Connection>,
}

impl BrokerProbe {
    fn new(url: String, topology: Topology) -> Self {
        Self {
            url,
            topology,
            connection: None,
        }
    }

    async fn connection(&mut self) -> Result<&Connection, String> {
        let alive = self
            .connection
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if !alive {
            let c = sightline_broker::rabbitmq::connect(&self.url, "sightline-etl-metrics")
                .await
                .map_err(|e| e.to_string())?;
            self.connection = Some(c);
        }
        self.connection
            .as_ref()
            .ok_or_else(|| "no connection".to_string())
    }

    async fn depths(&mut self) -> Result<Depths, String> {
        let mut queues: Vec<(Option<(String, u32)>, String)> = self
            .topology
            .partition_queues()
            .map(|(group, p, queue)| (Some((group, p)), queue))
            .collect();
        queues.push((None, self.topology.dead_letter_queue()));
        let connection = self.connection().await?;
        let mut channel = open(connection).await?;
        let mut depths = Depths::default();
        for (partition, queue) in queues {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let messages = match declared {
                Ok(q) => Some(q.message_count()),
                Err(error) => {
                    if !connection.status().connected() {
                        return Err(error.to_string());
                    }
                    // The queue does not exist: the broker closed the channel.
                    debug!(%queue, %error, "queue not found");
                    channel = open(connection).await?;
                    None
                }
            };
            match (partition, messages) {
                (Some((group, partition)), Some(messages)) => depths.partitions.push(QueueDepth {
                    queue,
                    group,
                    partition,
                    messages,
                }),
                (None, messages) => depths.dead_letter = messages,
                (Some(_), None) => {}
            }
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }
}

async fn open(connection: &Connection) -> Result<Channel, String> {
    connection.create_channel().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn snapshot(depths: Option<Vec<u32>>, watermarks: &[(u32, i64)]) -> Snapshot {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Snapshot {
            now,
            depths: depths.map(|d| Depths {
                partitions: d
                    .into_iter()
                    .enumerate()
                    .map(|(p, messages)| QueueDepth {
                        queue: format!("ns.rollup.p{p}"),
                        group: "rollup".into(),
                        partition: p as u32,
                        messages,
                    })
                    .collect(),
                dead_letter: Some(0),
            }),
            freshness_group: "rollup".into(),
            partitions: 3,
            received_until: watermarks
                .iter()
                .map(|&(p, ago)| (p, now - Duration::seconds(ago)))
                .collect(),
            tenants: vec![1],
            last_daily_success: None,
            ledger_epoch: now - Duration::hours(2),
            rejects: vec![],
        }
    }

    #[test]
    fn the_oldest_partition_watermark_sets_the_lag_whatever_its_queue_holds() {
        // p0 is 7200 s behind with messages waiting, p1 10000 s with none ready (its consumer
        // holds them, or is gone: a live one would have moved its watermark), p2 100 s.
        let s = snapshot(Some(vec![5, 0, 3]), &[(0, 7200), (1, 10_000), (2, 100)]);
        assert_eq!(s.freshness_lag_secs(), Some(10_000.0));
        // Without depths the same.
        let s = snapshot(None, &[(0, 7200), (1, 10_000), (2, 100)]);
        assert_eq!(s.freshness_lag_secs(), Some(10_000.0));
        // Partitions that never had traffic are left out...
        let s = snapshot(Some(vec![0, 0, 0]), &[(0, 5)]);
        assert_eq!(s.freshness_lag_secs(), Some(5.0));
        // ...unless messages wait in them: then nothing they hold is counted yet.
        let s = snapshot(Some(vec![0, 2, 0]), &[(0, 5)]);
        assert_eq!(s.freshness_lag_secs(), Some(1_800_000_000.0));
        // Nothing known at all.
        assert_eq!(snapshot(None, &[]).freshness_lag_secs(), None);
        assert_eq!(
            snapshot(Some(vec![0, 0, 0]), &[]).freshness_lag_secs(),
            None
        );
    }

    #[test]
    fn daily_age_counts_from_the_ledger_epoch_until_a_first_success() {
        let mut s = snapshot(None, &[]);
        assert_eq!(s.daily_run_age_secs(), 7200.0);
        s.last_daily_success = Some(s.now - Duration::minutes(30));
        assert_eq!(s.daily_run_age_secs(), 1800.0);
    }

    #[test]
    fn ratios_leave_out_pipelines_that_read_nothing() {
        let mut s = snapshot(None, &[]);
        s.rejects = vec![
            Rejects {
                pipeline: "a".into(),
                read: 200,
                rejected: 5,
            },
            Rejects {
                pipeline: "b".into(),
                read: 0,
                rejected: 0,
            },
        ];
        assert_eq!(s.rejected_ratios(), vec![("a".to_string(), 0.025)]);
    }
}
