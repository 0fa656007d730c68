//! A small fixture used by many tests: events `added {amount}` per stream, and a projection
//! `tally` that counts and sums them per stream.

use crate::harness::{Project, TestDb};

pub const CONFIG: &str = r#"
[events]
table = "events"
position = "id"
stream = "stream"
type = "type"
data = "data"
timestamp = "at"
filter = "NOT bad"

[[projection]]
name = "tally"
tables = ["tally"]
handlers = "tally.sql"
"#;

pub const HANDLERS: &str = "\
-- on added
INSERT INTO {{tally}} AS t (stream, n, total) VALUES (:stream, 1, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = t.n + 1, total = t.total + EXCLUDED.total;
";

/// Creates the tables, `events` events over 10 streams, and a correct live `tally`.
pub async fn setup(db: &TestDb, events: i64) {
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text NOT NULL, type text NOT NULL, \
             data jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now(), bad boolean NOT NULL DEFAULT false);
         CREATE TABLE tally (stream text PRIMARY KEY, n int NOT NULL, total bigint NOT NULL);",
    )
    .await;
    append(db, events).await;
    db.exec("INSERT INTO tally SELECT stream, count(*), sum((data->>'amount')::bigint) FROM events WHERE NOT bad GROUP BY stream")
        .await;
}

/// Appends `n` more `added` events.
pub async fn append(db: &TestDb, n: i64) {
    db.exec(&format!(
        "INSERT INTO events (stream, type, data) SELECT 's' || (i % 10), 'added', jsonb_build_object('amount', i) \
         FROM generate_series(1, {n}) i"
    ))
    .await;
}

/// What `tally` must hold for the events now in the table.
pub async fn expected_differences(db: &TestDb, table: &str) -> i64 {
    db.int(&format!(
        "WITH want AS (SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS total FROM events WHERE NOT bad GROUP BY stream) \
         SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT stream, n, total FROM {table}) a) \
              + (SELECT count(*) FROM (SELECT stream, n, total FROM {table} EXCEPT SELECT * FROM want) b)"
    ))
    .await
}

pub fn project() -> Project {
    Project::new(CONFIG, &[("tally.sql", HANDLERS)])
}
