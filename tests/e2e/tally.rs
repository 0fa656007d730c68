//! A small fixture used by many tests: events `added {amount}` per stream, and a projection
//! `tally` that counts and sums them per stream.

use crate::config::{Config, Projection};
use crate::harness::{assert_same_rows, Project, TestDb};

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

/// The tally config (the same text as `CONFIG`) with its handlers, to add to or change.
pub fn config() -> Config {
    with(Projection::new("tally"))
}

/// The tally config with the projection given (`Projection::new("tally")` with options, say).
pub fn with(projection: Projection) -> Config {
    Config::tally_events()
        .projection(projection)
        .file("tally.sql", HANDLERS)
}

pub fn project() -> Project {
    config().write()
}

/// The tally project with `from` replaced by `to` in its config text: for what the builder
/// does not write (a misspelt key, a value of the wrong kind).
pub fn replaced(from: &str, to: &str) -> Project {
    Project::new(&CONFIG.replace(from, to), &[("tally.sql", HANDLERS)])
}

/// The tally project with one more option, `KEY = VALUE` (the value as TOML).
pub fn option(key: &str, value: &str) -> Project {
    with(Projection::new("tally").option_toml(key, value)).write()
}

/// The tally projection with `stream_key = "stream"` (what `--streams` and lanes need).
pub fn with_stream_key() -> Config {
    with(Projection::new("tally").option("stream_key", "stream"))
}

/// The tally project with other handlers.
pub fn handlers(text: &str) -> Project {
    config().file("tally.sql", text).write()
}

/// The tally project whose handlers, after the tally's own statement, run `sql` on each event.
pub fn handlers_then(sql: &str) -> Project {
    handlers(&format!("{HANDLERS}{sql}"))
}

/// The handlers, each event also sleeping `seconds` (so a run can be caught in the middle).
pub fn slow_handlers(seconds: &str) -> String {
    format!("{HANDLERS}SELECT pg_sleep({seconds});\n")
}

/// The tally project with handlers that sleep `seconds` per event.
pub fn slow(seconds: &str) -> Project {
    handlers(&slow_handlers(seconds))
}

/// Handlers that double every amount: the rows they build differ from the live ones (built by
/// the right handlers), so a test can tell rebuilt rows from copied ones.
pub fn doubling_handlers() -> String {
    HANDLERS.replace(
        "(:data->>'amount')::bigint)",
        "2 * (:data->>'amount')::bigint)",
    )
}

/// A fresh database with the fixture set up with `events` events.
pub async fn db(events: i64) -> TestDb {
    let db = TestDb::new().await;
    setup(&db, events).await;
    db
}

/// A fresh database with the fixture, and the tally project.
pub async fn fixture(events: i64) -> (TestDb, Project) {
    (db(events).await, project())
}

/// The same on another server (one a test started itself).
pub async fn db_on(admin: tokio_postgres::Config, events: i64) -> TestDb {
    let db = TestDb::new_on(admin).await;
    setup(&db, events).await;
    db
}

/// Fails the test unless the rows of `tally` that match `filter` (an SQL condition on its
/// columns) are those of `want` (a table, or a query in parentheses) that match it.
pub async fn assert_rows(db: &TestDb, filter: &str, want: &str, why: &str) {
    assert_same_rows(
        db,
        &format!("(SELECT * FROM tally WHERE {filter}) t"),
        &format!("(SELECT * FROM {want} w WHERE {filter}) w"),
        "stream, n, total",
        why,
    )
    .await;
}

/// After run 1 (a rebuild that swapped): `tally` is exact and the run applied `events` events,
/// each once.
pub async fn assert_run_applied_each_event_once(db: &TestDb, events: i64) {
    assert_eq!(expected_differences(db, "tally").await, 0);
    db.assert_int_because(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        events,
        "every event once",
    )
    .await;
}
