-- Ordering safety (see docs/design.md, "Reading events without skipping any").

-- In `ordering = "xid8"` mode a checkpoint is the pair (transaction id, position) of the last
-- applied event, compared as a pair: positions alone are not in commit order. NULL in the
-- other modes, where every position up to `position` is applied and final.
ALTER TABLE reproject.checkpoints ADD COLUMN transaction_id xid8;

-- Every gap in the positions that a run passed in `ordering = "gap-aware"` mode, with the
-- evidence that no transaction could still fill it: the transactions open when the gap was
-- observed, all of which had ended when it was passed.
CREATE TABLE reproject.gaps (
    run_id         bigint NOT NULL REFERENCES reproject.runs (id) ON DELETE CASCADE,
    from_position  bigint NOT NULL,
    to_position    bigint NOT NULL,
    skipped_at     timestamptz NOT NULL DEFAULT now(),
    evidence       jsonb NOT NULL,
    PRIMARY KEY (run_id, from_position),
    CHECK (from_position <= to_position)
);
