-- What each swap or rollback of a run found on the streaming standbys (src/standby.rs), one
-- entry per exchange: each standby, how far behind it was and when it had replayed the commit,
-- and the longest its readers of the tables could have waited. NULL: no standby was seen.
-- The wait for the standbys before each lock attempt is in `lock_attempts` (`blockers`).
ALTER TABLE reproject.runs ADD COLUMN standbys jsonb;
