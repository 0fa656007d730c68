//! Batches run as one call of a temporary PL/pgSQL loop when every handler statement allows it
//! (src/replay.rs), statement by statement otherwise, with the same rows either way. A handler
//! sees which way it ran through `current_query()`: the loop's call, or its own statement.

use crate::config::Projection;
use crate::harness::{Project, TestDb};
use crate::tally;

/// Two statements per event. The UPDATE reads and writes a column named `found`, which is
/// also the name of a PL/pgSQL variable: inside the loop it must still mean the column.
const PLAIN: &str = "\
-- on added
INSERT INTO {{calls}} (position, stream, q, found) VALUES (:position, :stream, current_query(), false);
UPDATE {{calls}} SET found = NOT found WHERE position = :position;
";

async fn setup(db: &TestDb, events: i64) -> Project {
    tally::setup(db, events).await;
    db.exec("CREATE TABLE calls (position bigint PRIMARY KEY, stream text NOT NULL, q text NOT NULL, found boolean NOT NULL)")
        .await;
    // A bad event in the middle of a batch: skipped by the filter, must not shift anything.
    db.exec("UPDATE events SET bad = true WHERE id = 150").await;
    tally::config()
        .projection(Projection::new("calls"))
        .file("calls.sql", PLAIN)
        .write()
}

async fn check_rows(db: &TestDb, events: i64) {
    assert_eq!(tally::expected_differences(db, "tally").await, 0);
    assert_eq!(db.int("SELECT count(*) FROM calls").await, events - 1);
    assert_eq!(
        db.int("SELECT count(*) FROM calls c JOIN events e ON e.id = c.position AND e.stream = c.stream WHERE c.found AND NOT e.bad")
            .await,
        events - 1,
        "every event once, with its own stream, and the UPDATE saw the INSERT's row"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_statements_run_as_one_server_call_per_batch() {
    let db = TestDb::new().await;
    let p = setup(&db, 1000).await;
    p.reproject(&db, "rebuild --yes --batch-size 100")
        .await
        .ok();
    check_rows(&db, 1000).await;
    db.assert_int_because(
        "SELECT count(*) FROM calls WHERE q LIKE 'SELECT pg_temp.reproject_g%_loop(%'",
        999,
        "every event was applied by the server loop",
    )
    .await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_plpgsql_cannot_run_keeps_every_statement_separate() {
    let db = TestDb::new().await;
    let p = setup(&db, 1000).await;
    // WITH ... INSERT is not a plain INSERT: the whole projector falls back, same rows.
    p.write(
        "calls.sql",
        &PLAIN.replace(
            "INSERT INTO {{calls}}",
            "WITH x AS (SELECT 1) INSERT INTO {{calls}}",
        ),
    );
    p.reproject(&db, "rebuild --yes --batch-size 100")
        .await
        .ok();
    check_rows(&db, 1000).await;
    db.assert_int_because(
        "SELECT count(*) FROM calls WHERE q LIKE 'WITH x AS (SELECT 1) INSERT INTO %'",
        999,
        "every event was applied by its own statement",
    )
    .await;
    db.drop().await;
}

/// A handler failing inside the server loop: the batch is rolled back to its savepoint and run
/// again statement by statement, which names the event and the handler line; the batches
/// before it stay committed, nothing of the failed one is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_in_the_server_loop_names_the_event() {
    let db = TestDb::new().await;
    let p = setup(&db, 1000).await;
    db.exec("UPDATE events SET data = '{\"amount\": \"x\"}' WHERE id = 555")
        .await;
    p.reproject(&db, "rebuild --yes --batch-size 100")
        .await
        .code(1)
        .stderr_has(
            "projection `tally` failed on event at position 555 (type `added`, stream `s5`)",
        )
        .stderr_has("tally.sql:2")
        .stderr_has("invalid input syntax for type bigint");
    // Five batches of 100 events (positions 1..501, 150 filtered out) were committed.
    db.assert_int("SELECT count(*) FROM calls_rebuild", 500)
        .await;
    db.assert_int(
        "SELECT count(*) FROM calls_rebuild WHERE q LIKE 'SELECT pg_temp.reproject_g%'",
        500,
    )
    .await;
    db.assert_int("SELECT max(position) FROM calls_rebuild", 501)
        .await;
    db.assert_int(
        "SELECT position FROM reproject.checkpoints WHERE projection = 'calls'",
        501,
    )
    .await;
    db.drop().await;
}
