-- Days the batch layer has closed: the contract between the batch enricher (writer) and the
-- query service (reader) for switching a day from provisional speed figures to final ones.
--
-- A closure covers one site's local day (in the site's time zone): the UTC instants
-- [starts_at, ends_at). The batch enricher closes a day in one transaction that
--   1. deletes the site's `layer = 'batch'` rollups of that day (an earlier revision),
--   2. inserts the new batch rows (shard 0, `revision` = the closure's revision):
--      one `day` row per dimension value with `bucket = starts_at`, and `hour` rows for the UTC
--      hours whose start lies in [starts_at, ends_at),
--   3. upserts this row with the new revision.
-- So readers see the old day or the new one, never half of it.
--
-- Readers take a bucket from the batch layer when a closure covers its start (an `hour`
-- bucket in [starts_at, ends_at), a `day` bucket equal to starts_at) and from the speed layer
-- otherwise. Speed rows of closed hours may linger (the stream processor still counts late
-- events there); they are ignored, and the batch enricher may delete them.
CREATE TABLE rollup_closures (
    tenant_id bigint      NOT NULL,
    site_id   bigint      NOT NULL,
    -- The local day.
    day       date        NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz NOT NULL CHECK (ends_at > starts_at),
    -- Increases each time the day is closed again (reprocessing).
    revision  integer     NOT NULL CHECK (revision > 0),
    closed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, site_id, day)
);

-- Readers look closures up by instant.
CREATE INDEX rollup_closures_range ON rollup_closures (tenant_id, site_id, starts_at);
