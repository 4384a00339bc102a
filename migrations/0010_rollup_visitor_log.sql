-- The rollup group's visitor states as a log per partition, with `rollup_visitors` as its
-- snapshot.
--
-- A flush changes the state of most visitors it saw. Upserting a `rollup_visitors` row for each
-- (one index update per row and key, tens of thousands of rows a second under load) was most of
-- PostgreSQL's work for the rollup group. Instead, a flush appends one row here holding every
-- state it changed (postcard, zstd), in the same transaction as its rollups; every
-- `stream.rollup.visitor_snapshot_flushes` flushes, the partition writes the latest state of
-- each visitor changed since into `rollup_visitors` and deletes its log rows, again in the
-- flush's transaction. A partition consumer that starts reads its log in `seq` order over the
-- snapshot, so it resumes from exactly the last commit.
CREATE TABLE rollup_visitor_log (
    shard  integer NOT NULL,
    seq    bigint  NOT NULL,
    states bytea   NOT NULL,
    PRIMARY KEY (shard, seq)
);
-- Already compressed: keep PostgreSQL from trying again.
ALTER TABLE rollup_visitor_log ALTER COLUMN states SET STORAGE EXTERNAL;
