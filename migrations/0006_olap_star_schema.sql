-- The `olap` star schema over the pipeline ledger (0005), for dashboards and ad-hoc questions
-- (docs/etl-metrics.md has the SQL). Filled by the etl-metrics loader, incrementally: each load
-- reads the ledger rows written since its watermark and upserts them by their natural key, in
-- one transaction that also moves the watermark, so a load run twice (or concurrently: it takes
-- an advisory lock) leaves the same rows.
--
-- Dates and times of day are UTC.
CREATE SCHEMA olap;

-- Calendar days, added as facts need them.
CREATE TABLE olap.dim_date (
    date_key    integer  PRIMARY KEY, -- yyyymmdd
    date        date     NOT NULL UNIQUE,
    year        smallint NOT NULL,
    quarter     smallint NOT NULL,
    month       smallint NOT NULL,
    day         smallint NOT NULL,
    iso_year    smallint NOT NULL,
    iso_week    smallint NOT NULL,
    -- 1 = Monday ... 7 = Sunday.
    iso_dow     smallint NOT NULL,
    is_weekend  boolean  NOT NULL
);

-- Minutes of the day, all 1440 of them.
CREATE TABLE olap.dim_time_of_day (
    time_key integer  PRIMARY KEY, -- minutes since midnight
    hour     smallint NOT NULL,
    minute   smallint NOT NULL,
    label    text     NOT NULL     -- 'HH:MM'
);
INSERT INTO olap.dim_time_of_day (time_key, hour, minute, label)
SELECT m, m / 60, m % 60, to_char(make_time(m / 60, m % 60, 0), 'HH24:MI')
  FROM generate_series(0, 1439) AS m;

-- Stages of batch jobs, and the consumer groups of streams.
CREATE TABLE olap.dim_stage (
    stage_key serial PRIMARY KEY,
    stage     text   NOT NULL UNIQUE
);

-- Pipeline, job and code version: a new version is a new row, so a trend shows deployments.
CREATE TABLE olap.dim_pipeline (
    pipeline_key serial PRIMARY KEY,
    pipeline     text   NOT NULL,
    job          text   NOT NULL,
    version      text   NOT NULL,
    UNIQUE (pipeline, job, version)
);

-- Tenants; tenant_id 0 stands for work over every tenant (a stream partition, a daily run).
CREATE TABLE olap.dim_tenant (
    tenant_key serial PRIMARY KEY,
    tenant_id  bigint NOT NULL UNIQUE,
    slug       text   NOT NULL,
    name       text   NOT NULL
);
INSERT INTO olap.dim_tenant (tenant_id, slug, name) VALUES (0, '(all)', 'All tenants');

CREATE TABLE olap.dim_status (
    status_key smallint PRIMARY KEY,
    status     text     NOT NULL UNIQUE
);
INSERT INTO olap.dim_status VALUES (1, 'running'), (2, 'succeeded'), (3, 'failed'), (4, 'skipped');

-- One attempt of one stage of a batch run (grain of pipeline_stage_runs).
CREATE TABLE olap.fact_stage_run (
    run_id        uuid             NOT NULL,
    stage         text             NOT NULL,
    attempt       integer          NOT NULL,
    -- The stage's start.
    date_key      integer          NOT NULL REFERENCES olap.dim_date,
    time_key      integer          NOT NULL REFERENCES olap.dim_time_of_day,
    stage_key     integer          NOT NULL REFERENCES olap.dim_stage,
    pipeline_key  integer          NOT NULL REFERENCES olap.dim_pipeline,
    tenant_key    integer          NOT NULL REFERENCES olap.dim_tenant,
    status_key    smallint         NOT NULL REFERENCES olap.dim_status,
    started_at    timestamptz      NOT NULL,
    finished_at   timestamptz      NOT NULL,
    duration_s    double precision NOT NULL,
    rows_read     bigint           NOT NULL,
    rows_written  bigint           NOT NULL,
    rows_rejected bigint           NOT NULL,
    bytes_read    bigint           NOT NULL,
    bytes_written bigint           NOT NULL,
    PRIMARY KEY (run_id, stage, attempt)
);
CREATE INDEX fact_stage_run_date ON olap.fact_stage_run (date_key, stage_key);
CREATE INDEX fact_stage_run_tenant ON olap.fact_stage_run (tenant_key, date_key);

-- One window of one stream partition (grain of pipeline_stream_windows); the consumer group is
-- the stage, the tenant is always 0.
CREATE TABLE olap.fact_stream_window (
    pipeline        text        NOT NULL,
    consumer_group  text        NOT NULL,
    partition       integer     NOT NULL,
    window_start    timestamptz NOT NULL,
    date_key        integer     NOT NULL REFERENCES olap.dim_date,
    time_key        integer     NOT NULL REFERENCES olap.dim_time_of_day,
    stage_key       integer     NOT NULL REFERENCES olap.dim_stage,
    pipeline_key    integer     NOT NULL REFERENCES olap.dim_pipeline,
    window_s        double precision NOT NULL,
    events_in       bigint      NOT NULL,
    events_out      bigint      NOT NULL,
    events_rejected bigint      NOT NULL,
    lag_ms          bigint      NOT NULL,
    PRIMARY KEY (pipeline, consumer_group, partition, window_start)
);
CREATE INDEX fact_stream_window_date ON olap.fact_stream_window (date_key, stage_key);

-- How far each source table is loaded: every ledger row whose `changed_xid` is below
-- `loaded_below_xid` is in the facts.
CREATE TABLE olap.load_watermarks (
    source           text        PRIMARY KEY,
    loaded_below_xid xid8        NOT NULL,
    rows_loaded      bigint      NOT NULL DEFAULT 0,
    loaded_at        timestamptz NOT NULL DEFAULT now()
);
INSERT INTO olap.load_watermarks (source, loaded_below_xid)
VALUES ('pipeline_stage_runs', '0'), ('pipeline_stream_windows', '0');
