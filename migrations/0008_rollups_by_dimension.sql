-- no-transaction
--
-- The query service reads one dimension of a site at a time (the totals for a time series, the
-- pages for a breakdown) over bucket ranges of one granularity and layer. The primary key has the
-- bucket before the dimension, so such a range scan walks every dimension's rows in the range:
-- for a day of speed hour rows of a site with 100 pages from 8 partitions, about 100 index
-- entries for each one read. This index puts the equality columns first and the bucket range
-- last. Only key columns: counter updates stay HOT.
--
-- Built CONCURRENTLY (hence no transaction, and one statement in this file) so the stream
-- processor keeps writing rollups meanwhile. If the build fails it leaves an invalid index behind:
-- `DROP INDEX rollups_by_dimension;` and run the migrations again.
CREATE INDEX CONCURRENTLY rollups_by_dimension
    ON rollups (tenant_id, site_id, dimension, granularity, layer, bucket, value);
