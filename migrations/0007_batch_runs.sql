-- The batch enricher's own state: job runs, the tenant-days each run finished, and which lake
-- objects hold the current revision of each trusted partition.
--
-- A run is identified by its key (`daily/2025-03-10/shard=0of4`, `reprocess/7/2025-03-01..2025-03-09`).
-- A run that was interrupted (killed pod, failed tenant-day) is resumed by the next run with the
-- same key: the tenant-days it finished are skipped. A run that succeeded is not resumed: the same
-- key then starts a new run (reprocessing again on purpose).
CREATE TABLE batch_runs (
    run_id      uuid        PRIMARY KEY,
    run_key     text        NOT NULL,
    job         text        NOT NULL CHECK (job IN ('daily', 'reprocess', 'import')),
    params      jsonb       NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    -- How many times the run was started (1, then one more per resume).
    attempts    integer     NOT NULL DEFAULT 1,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    error       text
);

-- At most one unfinished run per key: that is the one a restart resumes.
CREATE UNIQUE INDEX batch_runs_open_key ON batch_runs (run_key) WHERE status <> 'succeeded';

-- Tenant-days a run finished; written in the transaction that closes the day's rollups.
CREATE TABLE batch_run_days (
    run_id        uuid        NOT NULL REFERENCES batch_runs (run_id) ON DELETE CASCADE,
    tenant_id     bigint      NOT NULL,
    day           date        NOT NULL,
    revision      integer     NOT NULL,
    rows_read     bigint      NOT NULL,
    rows_written  bigint      NOT NULL,
    rows_rejected bigint      NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, tenant_id, day)
);

-- The manifest of the lake's trusted partitions (`trusted/{dataset}/tenant=T/date=D/`): the
-- revision readers should use and exactly its objects. Objects of other revisions under the same
-- prefix are leftovers being deleted; readers that go through this table never see them.
CREATE TABLE lake_partitions (
    tenant_id  bigint      NOT NULL,
    dataset    text        NOT NULL,
    day        date        NOT NULL,
    revision   integer     NOT NULL CHECK (revision > 0),
    keys       text[]      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dataset, day)
);
