-- Fencing (src/state/fence.rs): every write transaction of a holder reads its claim rows
-- `FOR KEY SHARE`, so that a take-over, which changes the row's token, waits until that
-- transaction ends. A row lock mode that lets the holder's own heartbeat (an UPDATE of
-- `heartbeat_at`) through but not a take-over needs the token to be a key column: a column of
-- a unique index. (token, lock_class, projection) is unique because (lock_class, projection)
-- is; the index exists for that lock semantics.
CREATE UNIQUE INDEX claims_token_key ON reproject.claims (token, lock_class, projection);

-- The proof itself: of the claims ($2 projections with $3 tokens, class $1) those whose server
-- session still holds the advisory lock, locked FOR KEY SHARE until the calling transaction
-- ends. A PL/pgSQL function so that its plan is cached per session: planned inline, the query
-- over pg_locks costs more to plan than to run, on every batch.
CREATE FUNCTION reproject.fence(integer, text[], text[]) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT c.projection FROM reproject.claims c
      JOIN unnest($2, $3) AS w(projection, token) ON w.projection = c.projection AND w.token = c.token
     WHERE c.lock_class = $1
       AND EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = c.backend_pid
                      AND l.classid = $1::oid AND l.objsubid = 2
                      AND l.objid = (hashtext('reproject:' || c.projection)::bigint & 4294967295)::oid
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
       FOR KEY SHARE OF c;
END
$$;
