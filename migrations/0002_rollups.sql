-- Rollups: the serving database's metrics, written by the speed layer (stream processor) and
-- replaced day by day by the batch layer. Tenant first in every key (Citus distribution column).
--
-- One row per (tenant, site, granularity, bucket, dimension, value, layer, shard). The speed
-- layer writes one row per partition (`shard`) that owns it, so each partition consumer is the
-- only writer of its rows and can merge the visitor sketch in memory; readers add the counters
-- and union the sketches of every shard. Batch rows use shard 0.
CREATE TABLE rollups (
    tenant_id      bigint      NOT NULL,
    site_id        bigint      NOT NULL,
    granularity    text        NOT NULL CHECK (granularity IN ('minute', 'hour', 'day')),
    -- Start of the bucket, UTC.
    bucket         timestamptz NOT NULL,
    -- '' with value '' for the site's totals; else page, entry_page, exit_page, source, medium,
    -- utm_source, utm_medium, utm_campaign, browser, os, device, event, currency, bot.
    dimension      text        NOT NULL,
    value          text        NOT NULL,
    layer          text        NOT NULL CHECK (layer IN ('speed', 'batch')),
    shard          integer     NOT NULL,
    events         bigint      NOT NULL DEFAULT 0,
    pageviews      bigint      NOT NULL DEFAULT 0,
    visits         bigint      NOT NULL DEFAULT 0,
    bounces        bigint      NOT NULL DEFAULT 0,
    -- Total visit duration, microseconds.
    duration_us    bigint      NOT NULL DEFAULT 0,
    orders         bigint      NOT NULL DEFAULT 0,
    -- Revenue in millionths of the currency unit: the site's currency, except on `currency` rows.
    revenue_micros bigint      NOT NULL DEFAULT 0,
    -- Events from bots, counted apart from everything above.
    bot_events     bigint      NOT NULL DEFAULT 0,
    -- Unique visitors: an Apache DataSketches HLL sketch (lg_k 12), NULL when none.
    visitors       bytea,
    -- Batch layer: the revision of the job run that wrote the row.
    revision       integer     NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, site_id, granularity, bucket, dimension, value, layer, shard)
);

-- Batch ids whose events the rollups already hold: a redelivered batch changes nothing.
CREATE TABLE rollup_batches (
    batch_id     text        PRIMARY KEY,
    shard        integer     NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollup_batches_processed_at ON rollup_batches (processed_at);

-- Each visitor's open visit and recent event ids, owned by the partition its events go to;
-- written in the same transaction as the rollups so a restart resumes exactly.
CREATE TABLE rollup_visitors (
    tenant_id  bigint  NOT NULL,
    site_id    bigint  NOT NULL,
    visitor_id text    NOT NULL,
    shard      integer NOT NULL,
    -- Time of the visitor's latest event, microseconds since the Unix epoch.
    last_us    bigint  NOT NULL,
    -- JSON of the stream processor's visitor state.
    state      bytea   NOT NULL,
    PRIMARY KEY (tenant_id, site_id, visitor_id)
);
CREATE INDEX rollup_visitors_expiry ON rollup_visitors (shard, last_us);

-- How far each partition's rollups are: freshness for readers.
CREATE TABLE rollup_watermarks (
    shard          integer     PRIMARY KEY,
    -- When the partition last committed a flush.
    flushed_at     timestamptz NOT NULL,
    -- Receipt time of the newest event that flush held.
    received_until timestamptz NOT NULL,
    -- Event time of the newest event that flush held.
    event_until    timestamptz NOT NULL
);
