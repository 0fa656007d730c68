-- The stream lanes of a run's bulk replay (src/engine/lanes.rs). The events of a run of
-- stream-scoped projections after its checkpoint (`after_position`) up to a proven bound
-- (`upto_position`) are split by a hash of their stream into `lanes` parts, applied in
-- parallel. A set-based lane is one transaction that sets its `done_at`; a per-event lane
-- goes in batches, each moving the lane's own `position` (compare-and-set) in the batch's
-- transaction, the last one setting `done_at`. The run's checkpoint moves from
-- `after_position` to `upto_position` only in the transaction that finds every lane of the
-- plan done. A resumed run finds its unfinished plan by run and `after_position` and keeps it.
CREATE TABLE reproject.lanes (
    run_id         bigint NOT NULL REFERENCES reproject.runs (id) ON DELETE CASCADE,
    plan           integer NOT NULL,        -- 1, 2, ... within the run
    lane           integer NOT NULL,        -- 0 .. lanes - 1
    lanes          integer NOT NULL,
    after_position bigint,                  -- the checkpoint the plan starts after (NULL: before the first event)
    upto_position  bigint NOT NULL,         -- inclusive
    plan_events    bigint NOT NULL,         -- events of the whole plan (all lanes), counted when planned
    position       bigint,                  -- per-event lanes: the lane's last applied event (NULL: none yet)
    events         bigint,                  -- per-event lanes: events the lane applied (NULL: set-based)
    planned_at     timestamptz NOT NULL DEFAULT now(),
    done_at        timestamptz,
    PRIMARY KEY (run_id, plan, lane)
);
