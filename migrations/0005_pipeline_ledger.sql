-- The pipeline ledger (OLTP): what job runs and stream windows did, written by the etl-metrics
-- service from the gRPC reports of `sightline.pipeline.v1` (proto/sightline/pipeline/v1), and the
-- outbox its clients deliver them from.
--
-- Every row is keyed by the client's idempotency key; a repeat of a key changes nothing (first
-- write wins). `changed_xid` is the id of the transaction that wrote the row: the star-schema
-- loader (0006) reads rows whose transaction is older than every transaction still running, so
-- it never skips a row committed late (a timestamp or a sequence watermark would).

-- One run of a batch job.
CREATE TABLE pipeline_runs (
    run_id      uuid        PRIMARY KEY,
    pipeline    text        NOT NULL,
    job         text        NOT NULL,
    version     text        NOT NULL,
    -- NULL: the run covers every tenant.
    tenant_id   bigint,
    params      jsonb       NOT NULL DEFAULT '{}',
    status      text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    error       text,
    started_at  timestamptz NOT NULL,
    -- NULL while running.
    finished_at timestamptz,
    received_at timestamptz NOT NULL DEFAULT now(),
    changed_xid xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE INDEX pipeline_runs_started ON pipeline_runs (started_at DESC, run_id DESC);
-- "Last successful daily run": the newest finish of a job with a status.
CREATE INDEX pipeline_runs_job_finished ON pipeline_runs (pipeline, job, status, finished_at DESC);
CREATE INDEX pipeline_runs_changed ON pipeline_runs (changed_xid);

-- One attempt of one stage of a run.
CREATE TABLE pipeline_stage_runs (
    run_id        uuid        NOT NULL REFERENCES pipeline_runs (run_id) ON DELETE CASCADE,
    stage         text        NOT NULL,
    attempt       integer     NOT NULL CHECK (attempt >= 1),
    -- NULL: the run's tenant.
    tenant_id     bigint,
    rows_read     bigint      NOT NULL CHECK (rows_read >= 0),
    rows_written  bigint      NOT NULL CHECK (rows_written >= 0),
    rows_rejected bigint      NOT NULL CHECK (rows_rejected >= 0),
    bytes_read    bigint      NOT NULL CHECK (bytes_read >= 0),
    bytes_written bigint      NOT NULL CHECK (bytes_written >= 0),
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL CHECK (finished_at >= started_at),
    status        text        NOT NULL CHECK (status IN ('succeeded', 'failed', 'skipped')),
    error         text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    changed_xid   xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (run_id, stage, attempt)
);
CREATE INDEX pipeline_stage_runs_finished ON pipeline_stage_runs (finished_at);
CREATE INDEX pipeline_stage_runs_changed ON pipeline_stage_runs (changed_xid);

-- One window of one stream partition's work.
CREATE TABLE pipeline_stream_windows (
    pipeline        text        NOT NULL,
    consumer_group  text        NOT NULL,
    partition       integer     NOT NULL CHECK (partition >= 0),
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL CHECK (window_end > window_start),
    version         text        NOT NULL,
    events_in       bigint      NOT NULL CHECK (events_in >= 0),
    events_out      bigint      NOT NULL CHECK (events_out >= 0),
    events_rejected bigint      NOT NULL CHECK (events_rejected >= 0),
    lag_ms          bigint      NOT NULL CHECK (lag_ms >= 0),
    received_at     timestamptz NOT NULL DEFAULT now(),
    changed_xid     xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (pipeline, consumer_group, partition, window_start)
);
CREATE INDEX pipeline_stream_windows_end ON pipeline_stream_windows (window_end);
CREATE INDEX pipeline_stream_windows_changed ON pipeline_stream_windows (changed_xid);

-- When the ledger was installed: "no successful daily run in 26 hours" counts from here while
-- no run ever succeeded, so a schedule that never ran still pages.
CREATE TABLE pipeline_ledger_epoch (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pipeline_ledger_epoch DEFAULT VALUES;

-- The ledger client's outbox (crates/sightline-ledger): every report is written here first, in
-- the job's database, then delivered to etl-metrics in `id` order and deleted. Shared by every
-- process using the client on this database; one drains at a time (advisory lock).
CREATE TABLE ledger_outbox (
    id          bigserial   PRIMARY KEY,
    -- `start_run`, `report_stage`, `finish_run`, `stream_window`.
    kind        text        NOT NULL,
    -- The encoded gRPC request (protobuf).
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text,
    -- Set when etl-metrics refused the report for good (invalid): kept for inspection, no longer
    -- delivered.
    rejected_at timestamptz
);
CREATE INDEX ledger_outbox_pending ON ledger_outbox (id) WHERE rejected_at IS NULL;

-- Alert instances that are pending or firing, so a restart neither forgets nor re-pages them.
CREATE TABLE alert_state (
    -- The rule's name.
    rule        text        NOT NULL,
    -- Identifies the instance among the rule's (its labels, canonical JSON); '{}' for one.
    fingerprint text        NOT NULL,
    labels      jsonb       NOT NULL,
    -- `pending` (breached, waiting for its for-duration), `firing`, or `resolved` (no longer
    -- breached; the row goes once the resolution was delivered).
    state       text        NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    -- When the breach began (the webhook's startsAt).
    active_since timestamptz NOT NULL,
    fired_at    timestamptz,
    resolved_at timestamptz,
    last_value  double precision NOT NULL,
    -- Set once the firing notification was delivered: only then is a resolution sent.
    notified_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, fingerprint)
);
