-- The catalog fingerprint of each live table when its rebuild started (sql/fingerprint.sql):
-- a swap refuses to go on if the table's structure changed since, because the clone was made
-- from the old structure.
ALTER TABLE reproject.run_tables ADD COLUMN fingerprint jsonb;
-- Foreign keys a swap re-created NOT VALID and could not validate afterwards.
ALTER TABLE reproject.runs ADD COLUMN unvalidated_foreign_keys text[] NOT NULL DEFAULT '{}';
