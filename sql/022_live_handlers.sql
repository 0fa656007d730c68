-- Which handlers `reproject run` applies to a projection when they are not its config's: a
-- swap or a rollback handed it tables built with other handler files, and it switched to the
-- ones the building run recorded (engine/live_handlers.rs). NULL: the config's. `status` shows
-- it; a runner clears it when it starts.
ALTER TABLE reproject.live_checkpoints ADD COLUMN handlers text;
