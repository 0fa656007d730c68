-- What a swap redefined (`redefine`: dependents of a column the new shape drops, renames or
-- retypes, re-created from the user's statements), as it was before: the statements that
-- re-create each one on the old table. A rollback of the run runs them in its place.
-- `relation_*`: the view, or the table holding the policy, trigger, rule or foreign key (NULL
-- for a publication); `object_name`: the object's name (NULL for a view).
CREATE TABLE reproject.redefined_dependents (
    run_id          bigint NOT NULL REFERENCES reproject.runs (id) ON DELETE CASCADE,
    table_schema    text NOT NULL,
    live_name       text NOT NULL,
    position        integer NOT NULL,
    kind            text NOT NULL,
    relation_schema text,
    relation_name   text,
    object_name     text,
    statements      text[] NOT NULL,
    PRIMARY KEY (run_id, table_schema, live_name, position)
);
