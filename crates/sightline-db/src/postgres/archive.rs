use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgStore;
use crate::{ArchiveFlush, ArchiveLedger, DbError};

#[async_trait]
impl ArchiveLedger for PgStore {
    async fn archive_flushes_holding(
        &self,
        queue: &str,
        batch_ids: &[String],
    ) -> Result<Vec<ArchiveFlush>, DbError> {
        Ok(sqlx::query_as(
            "SELECT f.flush_id, f.state, f.keys, array_agg(b.batch_id ORDER BY b.batch_id) AS batch_ids \
             FROM archive_batches b JOIN archive_flushes f ON f.flush_id = b.flush_id \
             WHERE b.queue = $1 AND b.batch_id = ANY($2) \
             GROUP BY f.flush_id, f.state, f.keys \
             ORDER BY f.flush_id",
        )
        .bind(queue)
        .bind(batch_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn begin_archive_flush(
        &self,
        flush_id: Uuid,
        queue: &str,
        keys: &[String],
        batch_ids: &[String],
    ) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO archive_flushes (flush_id, queue, state, keys) \
             VALUES ($1, $2, 'pending', $3)",
        )
        .bind(flush_id)
        .bind(queue)
        .bind(keys)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO archive_batches (queue, batch_id, flush_id) \
             SELECT $1, id, $3 FROM unnest($2::text[]) AS id",
        )
        .bind(queue)
        .bind(batch_ids)
        .bind(flush_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_archive_flush(&self, flush_id: Uuid) -> Result<(), DbError> {
        let done = sqlx::query(
            "UPDATE archive_flushes SET state = 'stored', stored_at = now() \
             WHERE flush_id = $1 AND state = 'pending'",
        )
        .bind(flush_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(DbError::NotFound(format!(
                "pending archive flush {flush_id}"
            )))
        }
    }

    async fn forget_archive_flush(&self, flush_id: Uuid) -> Result<(), DbError> {
        // archive_batches rows go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM archive_flushes WHERE flush_id = $1")
            .bind(flush_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_archive_ledger(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, DbError> {
        // Pending flushes stay: their objects must be cleaned up when their batches come back.
        let done = sqlx::query(
            "DELETE FROM archive_flushes WHERE flush_id IN ( \
                 SELECT flush_id FROM archive_flushes \
                 WHERE state = 'stored' AND created_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
