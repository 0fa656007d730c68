-- reproject's own state. Applied automatically, once, by `reproject` (see src/state/migrate.rs).
-- Every table reproject creates is registered in helper_tables with its OID, so reproject only
-- ever replaces or drops a table it can prove it made.

CREATE TABLE reproject.runs (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL DEFAULT 'rebuild',
    projections     text[] NOT NULL,
    reason          text,
    initiated_by    text NOT NULL,
    host            text,
    pid             integer,
    -- running, paused, awaiting_swap, checks_failed, failed, cancelled, swapped, rolled_back, superseded
    status          text NOT NULL,
    -- clone, replay, catch_up, checks, swap, done
    phase           text NOT NULL,
    options         jsonb NOT NULL DEFAULT '{}',
    -- sha256 of each projection's handler file when the run started: a later `swap` refuses
    -- to catch up with different handlers than the ones that built the tables.
    handler_digests jsonb NOT NULL DEFAULT '{}',
    handler_sources jsonb NOT NULL DEFAULT '{}',
    start_position  bigint,
    target_position bigint,
    swap_position   bigint,
    events_applied  bigint NOT NULL DEFAULT 0,
    rows_before     jsonb NOT NULL DEFAULT '{}',
    rows_after      jsonb NOT NULL DEFAULT '{}',
    checks          jsonb NOT NULL DEFAULT '[]',
    lock_wait_ms    bigint,
    lock_hold_ms    bigint,
    error           text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    swapped_at      timestamptz,
    rolled_back_at  timestamptz,
    finished_at     timestamptz,
    CONSTRAINT runs_status_check CHECK (status IN ('running', 'paused', 'awaiting_swap',
        'checks_failed', 'failed', 'cancelled', 'swapped', 'rolled_back', 'superseded'))
);

-- Per projection, the last event position applied to its rebuild tables. Advanced with a
-- compare-and-swap in the same transaction as the batch that got it there.
CREATE TABLE reproject.checkpoints (
    run_id      bigint NOT NULL REFERENCES reproject.runs (id) ON DELETE CASCADE,
    projection  text NOT NULL,
    position    bigint,
    events      bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, projection)
);

-- The tables of a run: live name and the rebuild table built for it.
CREATE TABLE reproject.run_tables (
    run_id        bigint NOT NULL REFERENCES reproject.runs (id) ON DELETE CASCADE,
    projection    text NOT NULL,
    table_schema  text NOT NULL,
    live_name     text NOT NULL,
    rebuild_name  text NOT NULL,
    old_name      text NOT NULL,
    PRIMARY KEY (run_id, table_schema, live_name)
);

-- Tables reproject created and still owns: `rebuild` (being built), `old` (the previous live
-- table after a swap), `rolled_back` (the table a rollback replaced).
CREATE TABLE reproject.helper_tables (
    table_schema  text NOT NULL,
    table_name    text NOT NULL,
    table_oid     oid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('rebuild', 'old', 'rolled_back')),
    live_name     text NOT NULL,
    projection    text NOT NULL,
    run_id        bigint REFERENCES reproject.runs (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, table_name)
);
