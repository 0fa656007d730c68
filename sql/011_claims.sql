-- One row per projection (and lock class) that a reproject command is working on: the second
-- guard beside the session advisory lock. Behind a transaction-pooling connection pooler
-- (pgbouncer `pool_mode = transaction`) a session advisory lock can stay with a pooled server
-- connection and be taken again, re-entrantly, by another client through that same connection;
-- the row cannot. A row is taken over when its holder is gone: its heartbeat (every 10 s) is
-- older than 60 s, or its server session no longer holds the advisory lock.
CREATE TABLE reproject.claims (
    lock_class   integer NOT NULL,          -- 727002 rebuild/swap/rollback, 727003 live runner
    projection   text NOT NULL,
    token        text NOT NULL,             -- the claiming process's own random-ish token
    backend_pid  integer NOT NULL,          -- its server session when it claimed
    host         text NOT NULL,
    pid          integer NOT NULL,          -- its OS process id
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lock_class, projection)
);
