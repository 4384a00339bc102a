-- Tenants, their sites, the public write keys sites send events with, and the hashed read
-- tokens query clients present. The tenant id leads every key so the tables can be distributed
-- by tenant (Citus) when one node is not enough.

CREATE TABLE tenants (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    id         BIGINT GENERATED ALWAYS AS IDENTITY,
    domain     TEXT NOT NULL CHECK (domain <> ''),
    -- IANA name; day, week and month buckets follow it.
    time_zone  TEXT NOT NULL,
    -- ISO 4217 code that revenue is reported in.
    currency   TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, domain)
);

-- Write keys are public (they ship in web pages), so they are stored as they are.
CREATE TABLE write_keys (
    key                TEXT PRIMARY KEY,
    tenant_id          BIGINT NOT NULL,
    site_id            BIGINT NOT NULL,
    -- Events a second this key may send; NULL takes ingest's configured default.
    rate_limit_per_sec INTEGER CHECK (rate_limit_per_sec > 0),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at         TIMESTAMPTZ,
    -- Ingest loads keys changed since its last look; every change must bump this.
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id)
);
CREATE INDEX write_keys_updated_at ON write_keys (updated_at);
CREATE INDEX write_keys_site ON write_keys (tenant_id, site_id);

-- Read tokens are secrets: only a SHA-256 of the token is kept, with a short prefix for people
-- to recognise it by.
CREATE TABLE read_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL for the admin scope (internal teams, every tenant).
    tenant_id  BIGINT REFERENCES tenants (id),
    scope      TEXT NOT NULL CHECK (scope IN ('tenant', 'admin')),
    -- Sites the token may read; NULL means every site of the tenant.
    site_ids   BIGINT[],
    token_hash BYTEA NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    label      TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ,
    CHECK ((scope = 'admin') = (tenant_id IS NULL))
);
