-- `reproject run`: where the live tables of each projection stand.
--
-- One row per projection kept live. `position` is the last event applied to the live tables
-- (NULL: none yet, start from the first event). It is advanced with a compare-and-swap in the
-- same transaction as the batch of events that got it there, and set by a rebuild's swap (in the
-- swap transaction) to the position the new tables hold, so the runner continues on them from
-- exactly there.
CREATE TABLE reproject.live_checkpoints (
    projection          text PRIMARY KEY,
    position            bigint,
    events              bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- who set the position last: 'run' (a batch), 'swap', 'rollback' or 'start' (--from-position)
    set_by              text NOT NULL,
    -- the rebuild run whose swap (or rollback) made the current generation of live tables
    set_by_run          bigint REFERENCES reproject.runs (id) ON DELETE SET NULL,
    -- before a swap: where the replaced tables stood, so a rollback can hand them back
    replaced_position   bigint,
    replaced_known      boolean NOT NULL DEFAULT false,
    -- the runner that last started on this projection
    runner_host         text,
    runner_pid          integer,
    runner_started_at   timestamptz,
    -- a handler error stops the projection (and those connected to it by dependencies)
    stopped             boolean NOT NULL DEFAULT false,
    last_error          text,
    last_error_position bigint,
    last_error_at       timestamptz,
    CONSTRAINT live_checkpoints_set_by_check CHECK (set_by IN ('run', 'swap', 'rollback', 'start'))
);
