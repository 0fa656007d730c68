-- Tables a run adds to a projection (`create`): they did not exist live when the run cloned,
-- so the run built them from their definition, has no fingerprint of a live table for them,
-- and its swap renames them into place with no `_old` (a rollback parks them instead).
ALTER TABLE reproject.run_tables ADD COLUMN added boolean NOT NULL DEFAULT false;
