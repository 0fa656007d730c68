-- The shape changes of runs (`reshape`): for each live table whose rebuilt copy a run reshaped,
-- the DDL as run and its hash, the column map read from the catalog (every column, before and
-- after, matched by attribute number), the changes in words (as `plan` showed them), and the
-- copy's catalog fingerprint right after the DDL under the names it takes once live: what the
-- swap proves the new live table equal to, and what a later run compares the live table with
-- to tell that the shape is already in place.
CREATE TABLE reproject.run_shapes (
    run_id        bigint NOT NULL REFERENCES reproject.runs (id) ON DELETE CASCADE,
    projection    text NOT NULL,
    table_schema  text NOT NULL,
    live_name     text NOT NULL,
    ddl           text NOT NULL,
    ddl_hash      text NOT NULL,
    columns       jsonb NOT NULL,
    changes       jsonb NOT NULL,
    shaped        jsonb NOT NULL,
    PRIMARY KEY (run_id, table_schema, live_name)
);
