-- Late events (src/state/late_events.rs): gaps are passed by `reproject run` too, and every gap
-- passed is re-checked later; an event found in one was committed after its position was
-- passed as final, so the tables built past it miss it.

-- The live runner has no run row: its gaps have no run_id, and name the projections whose
-- tables passed them (a run's gaps: the run's projections).
ALTER TABLE reproject.gaps DROP CONSTRAINT gaps_pkey;
ALTER TABLE reproject.gaps ALTER COLUMN run_id DROP NOT NULL;
ALTER TABLE reproject.gaps ADD COLUMN id bigserial PRIMARY KEY;
ALTER TABLE reproject.gaps ADD COLUMN projections text[];
UPDATE reproject.gaps g SET projections = r.projections FROM reproject.runs r WHERE r.id = g.run_id;
ALTER TABLE reproject.gaps ALTER COLUMN projections SET NOT NULL;
CREATE UNIQUE INDEX gaps_run_from ON reproject.gaps (run_id, from_position)
    WHERE run_id IS NOT NULL;
CREATE UNIQUE INDEX gaps_runner_from ON reproject.gaps (projections, from_position)
    WHERE run_id IS NULL;

-- One row per late event and projection whose tables miss it, until repaired (a partial
-- rebuild of its stream, or a full rebuild started after it was found).
CREATE TABLE reproject.late_events (
    position     bigint NOT NULL,
    projection   text NOT NULL,
    stream       text,
    event_type   text,
    found_at     timestamptz NOT NULL DEFAULT now(),
    -- `run`, `run 7 (catch-up)`, `gaps`
    found_by     text NOT NULL,
    repaired_at  timestamptz,
    -- `run 9 (--streams s3)`
    repaired_by  text,
    PRIMARY KEY (position, projection)
);
