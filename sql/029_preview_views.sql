-- Preview schemas (`rebuild --preview-schema NAME`): a schema of views named like the live
-- tables that read a run's rebuild tables, so the next application version reads the new
-- shape before the swap. Views bind by OID, so after the swap they read the live tables.
-- One run owns a schema's views at a time: a later run with the same NAME replaces them.
CREATE TABLE reproject.preview_schemas (
    schema_name    text PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES reproject.runs (id),
    created_schema boolean NOT NULL,   -- reproject created the schema: dropped once empty
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Each view, by OID: reproject drops only a view it can prove it made.
CREATE TABLE reproject.preview_views (
    schema_name text   NOT NULL REFERENCES reproject.preview_schemas (schema_name) ON DELETE CASCADE,
    view_name   text   NOT NULL,
    view_oid    oid    NOT NULL,
    run_id      bigint NOT NULL REFERENCES reproject.runs (id),
    live_table  text   NOT NULL,       -- the live table it stands for (schema.name, quoted)
    reads       text   NOT NULL,       -- the table it was created on (the run's rebuild table)
    PRIMARY KEY (schema_name, view_name)
);
CREATE INDEX ON reproject.preview_views (run_id);
