-- Fencing (src/state/fence.rs): every write transaction of a holder reads its claim rows
-- `FOR KEY SHARE`, so that a take-over, which changes the row's token, waits until that
-- transaction ends. A row lock mode that lets the holder's own heartbeat (an UPDATE of
-- `heartbeat_at`) through but not a take-over needs the token to be a key column: a column of
-- a unique index. (token, lock_class, projection) is unique because (lock_class, projection)
-- is; the index exists for that lock semantics.
CREATE UNIQUE INDEX claims_token_key ON reproject.claims (token, lock_class, projection);
