-- Stream lanes for events read in (transaction id, position) order (`ordering = "xid8"`,
-- src/pipeline/lanes.rs). There a position alone is no cursor: a plan's start and end and each
-- per-event lane's cursor are (transaction id, position) pairs, compared as pairs, like the
-- run's checkpoint (reproject.checkpoints.transaction_id, migration 002). The plan's end is
-- the last event below the cut it was made at, so every row of its range is final. NULL in
-- the position modes.
ALTER TABLE reproject.lanes
    ADD COLUMN after_transaction_id xid8,   -- with after_position: the checkpoint the plan starts after
    ADD COLUMN upto_transaction_id  xid8,   -- with upto_position: the plan's last event (inclusive)
    ADD COLUMN transaction_id       xid8;   -- with position: a per-event lane's last applied event
