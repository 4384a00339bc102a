//! The `ledger_outbox` table and the delivery of its rows, in order.

use prost::Message;
use sightline_proto::pipeline::v1::{self as pb, pipeline_ledger_client::PipelineLedgerClient};
use sqlx::PgPool;
use tonic::{Code, transport::Channel};
use tracing::{info, warn};

/// The advisory lock one draining process holds (any other skips): `hashtext`-free constant,
/// "ledgerob" in ASCII.
const DRAIN_LOCK: i64 = 0x6c65_6467_6572_6f62;

/// What an outbox row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    StartRun,
    ReportStage,
    FinishRun,
    StreamWindow,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Self::StartRun,
        Self::ReportStage,
        Self::FinishRun,
        Self::StreamWindow,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::StartRun => "start_run",
            Self::ReportStage => "report_stage",
            Self::FinishRun => "finish_run",
            Self::StreamWindow => "stream_window",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

pub(crate) async fn insert(pool: &PgPool, kind: Kind, payload: &[u8]) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO ledger_outbox (kind, payload) VALUES ($1, $2)")
        .bind(kind.as_str())
        .bind(payload)
        .execute(pool)
        .await
        .map(|_| ())
}

pub(crate) async fn pending(pool: &PgPool) -> sqlx::Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_outbox WHERE rejected_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// How one batch went.
pub(crate) enum Batch {
    /// Nothing was pending.
    Empty,
    /// Every row of a batch was delivered or refused; there may be more.
    Delivered,
    /// Another process is delivering.
    Busy,
    /// A row could not be delivered (etl-metrics unreachable or failing): stop, keep order.
    Stopped,
}

/// Why one report did not go through.
enum Failure {
    /// etl-metrics refused it for good: set it aside.
    Refused(String),
    /// Try again later.
    Retry(String),
}

/// Delivers up to `limit` pending rows in one transaction that holds the drain lock and deletes
/// what was delivered; a crash before the commit delivers them again (harmless: idempotent).
pub(crate) async fn deliver_batch(
    pool: &PgPool,
    channel: &Channel,
    limit: i64,
) -> sqlx::Result<Batch> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(DRAIN_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(Batch::Busy);
    }
    let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, kind, payload FROM ledger_outbox WHERE rejected_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(Batch::Empty);
    }
    let mut client = PipelineLedgerClient::new(channel.clone());
    let mut delivered = Vec::with_capacity(rows.len());
    let mut outcome = Batch::Delivered;
    for (id, kind, payload) in rows {
        match send(&mut client, &kind, &payload).await {
            Ok(()) => delivered.push(id),
            Err(Failure::Refused(reason)) => {
                warn!(id, kind, %reason, "etl-metrics refused a ledger report; kept aside in the outbox");
                sqlx::query(
                    "UPDATE ledger_outbox SET rejected_at = now(), attempts = attempts + 1, \
                     last_error = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
            }
            Err(Failure::Retry(reason)) => {
                info!(id, kind, %reason, "ledger report not delivered, will retry");
                sqlx::query(
                    "UPDATE ledger_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
                outcome = Batch::Stopped;
                break;
            }
        }
    }
    sqlx::query("DELETE FROM ledger_outbox WHERE id = ANY($1)")
        .bind(&delivered)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn send(
    client: &mut PipelineLedgerClient<Channel>,
    kind: &str,
    payload: &[u8],
) -> Result<(), Failure> {
    let Some(kind) = Kind::from_name(kind) else {
        return Err(Failure::Refused(format!("unknown outbox kind `{kind}`")));
    };
    let result = match kind {
        Kind::StartRun => {
            client
                .start_run(decode::<pb::StartRunRequest>(payload)?)
                .await
        }
        Kind::ReportStage => {
            client
                .report_stage(decode::<pb::ReportStageRequest>(payload)?)
                .await
        }
        Kind::FinishRun => {
            client
                .finish_run(decode::<pb::FinishRunRequest>(payload)?)
                .await
        }
        Kind::StreamWindow => {
            client
                .report_stream_window(decode::<pb::ReportStreamWindowRequest>(payload)?)
                .await
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(status) if refused(status.code()) => Err(Failure::Refused(status.to_string())),
        Err(status) => Err(Failure::Retry(status.to_string())),
    }
}

fn decode<M: Message + Default>(payload: &[u8]) -> Result<M, Failure> {
    M::decode(payload).map_err(|e| Failure::Refused(format!("undecodable outbox payload: {e}")))
}

/// Codes that a retry cannot change: the report itself is wrong.
fn refused(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound | Code::OutOfRange
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_only_invalid_reports_are_refused() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
        }
        assert!(refused(Code::InvalidArgument) && refused(Code::FailedPrecondition));
        for transient in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(!refused(transient), "{transient:?}");
        }
    }
}
