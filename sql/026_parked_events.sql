-- Parked events (src/state/parked_events.rs): an event on which a group of projections kept
-- live by `reproject run` failed with a handler error. The group waits just before it (the
-- runner keeps serving the other groups) until an operator decides: `reproject skip` (apply
-- the group's events without this one) or `reproject retry` (after fixing the cause). A
-- restarted runner finds the open row and waits again, instead of failing on it in a loop.
--
-- Lifecycle of a row: pending (decision NULL) -> decided (skip / retry, by whom, when, why)
-- -> acted on (acted_at, outcome: `skipped`, `applied`, `failed again`, or `overtaken` when a
-- swap handed over tables past it). A retry that fails again closes its row and opens a new
-- pending one at the same position. The error names the projection whose handler failed.
CREATE TABLE reproject.parked_events (
    id             bigserial PRIMARY KEY,
    -- the group of projections (connected by dependencies) that waits on the event
    projections    text[] NOT NULL,
    position       bigint NOT NULL,
    stream         text,
    event_type     text,
    error          text NOT NULL,
    sqlstate       text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    -- attempts that failed on it (a restarted runner that stays parked makes none)
    times_seen     integer NOT NULL DEFAULT 1,
    decision       text,
    decided_by     text,
    decided_at     timestamptz,
    reason         text,
    acted_at       timestamptz,
    outcome        text,
    CONSTRAINT parked_events_decision_check CHECK (decision IN ('skip', 'retry')),
    CONSTRAINT parked_events_outcome_check CHECK (outcome IN ('skipped', 'applied', 'failed again', 'overtaken'))
);
-- One open row per event and group.
CREATE UNIQUE INDEX parked_events_open ON reproject.parked_events (position, projections)
    WHERE acted_at IS NULL;
