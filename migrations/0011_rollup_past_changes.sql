-- Changes to hours that had ended well before they were written, counted apart (migration 0009
-- counts every change): the speed layer's late events, and every closure of the batch layer.
--
-- A writer adds one here when its transaction writes a bucket whose UTC hour ended at least
-- ten minutes before (`sightline_db::rollup::SETTLED_AFTER_US`). While the sum over a site's rows
-- stays, the rows of every hour that ended longer ago than that, with a margin, are what they
-- were: the query service keeps their sums and reads only the recent hours again after each of
-- the speed layer's flushes (`crates/query/src/closed.rs`).
ALTER TABLE rollup_versions ADD COLUMN past_changes bigint NOT NULL DEFAULT 0;
