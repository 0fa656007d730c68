-- Every attempt of a swap or rollback to take and use its locks, in order: how long it waited,
-- how long it held them, how many events the final tail had, and how it ended (`swapped`,
-- `rolled_back`, `tail_too_long`, `hold_exceeded`, `not_locked`), plus blockers it cancelled
-- or terminated when told to.
ALTER TABLE reproject.runs ADD COLUMN lock_attempts jsonb NOT NULL DEFAULT '[]';

-- Where the tables a swap replaced (`x_old`) stand while `reproject rollback` catches them up
-- with the events that arrived since the swap (NULL: as they were at the swap). Moved in the
-- transaction of each batch applied to them, so an interrupted rollback resumes exactly.
ALTER TABLE reproject.runs ADD COLUMN old_position bigint, ADD COLUMN old_transaction_id xid8;
