-- A change counter per site and writer, so a reader can tell that a site's rollups have not
-- changed since it last read them (the query service's answer cache, `crates/query/src/cache.rs`).
--
-- Every transaction that changes a site's rollups adds one to its row here, in that same
-- transaction: the stream processor's flush (writer = the partition it consumes) and the batch
-- enricher's closure of a day (writer = -1). Counters only grow, so the sum over a site's rows
-- grows with each such commit: two reads that see the same sum saw the same rollups.
CREATE TABLE rollup_versions (
    tenant_id bigint  NOT NULL,
    site_id   bigint  NOT NULL,
    writer    integer NOT NULL,
    changes   bigint  NOT NULL,
    PRIMARY KEY (tenant_id, site_id, writer)
);
