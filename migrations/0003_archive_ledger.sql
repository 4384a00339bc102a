-- The archive consumer group's ledger: which broker batches went into which lake objects.
--
-- A flush first records its intent (a `pending` row listing every object key it will write,
-- and one `archive_batches` row per batch), then writes the objects, then marks the row
-- `stored`; messages are acknowledged after that. A batch redelivered after its flush was
-- stored (a crash between the write and the ack) is recognised and not written again under
-- another key; the objects of a flush that never reached `stored` are deleted before its
-- batches are written anew. See crates/stream-processor/README.md.
--
-- Not tenant data (one batch holds events of many tenants): under Citus these stay local
-- tables, like the migrations table.
CREATE TABLE archive_flushes (
    flush_id   uuid        PRIMARY KEY,
    -- The broker queue whose messages the flush covers.
    queue      text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('pending', 'stored')),
    -- Every object key the flush writes.
    keys       text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    stored_at  timestamptz
);

-- Pruning finds old stored flushes by age.
CREATE INDEX archive_flushes_stored_age ON archive_flushes (created_at) WHERE state = 'stored';

CREATE TABLE archive_batches (
    queue    text NOT NULL,
    batch_id text NOT NULL,
    flush_id uuid NOT NULL REFERENCES archive_flushes (flush_id) ON DELETE CASCADE,
    PRIMARY KEY (queue, batch_id)
);

-- The cascade from archive_flushes.
CREATE INDEX archive_batches_flush ON archive_batches (flush_id);
