-- The faults a run survived, so an operator can see them in `history`: each a JSON object
-- {"id", "kind", "at", "detail", ...}. Kinds: `reconnect` (the connection was lost and the run
-- resumed from its last committed batch on a new one), `transient_retry` (a batch or stream
-- lane was rolled back by a serialization failure, deadlock or lock timeout and retried).
-- `id` makes a fault recorded twice (by two attempts of one process) count once.
ALTER TABLE reproject.runs ADD COLUMN faults jsonb NOT NULL DEFAULT '[]'::jsonb;
