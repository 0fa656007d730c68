-- The database roles a run connected as, beside `initiated_by` (the person or account that
-- started it): `session_user` (the role that logged in) and `current_user` (the role the
-- statements ran as, different after SET ROLE). Runs recorded before this migration have NULL.
ALTER TABLE reproject.runs ADD COLUMN db_session_user text;
ALTER TABLE reproject.runs ADD COLUMN db_current_user text;
