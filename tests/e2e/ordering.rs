//! Ordering safety: events whose transactions commit after a later position was seen are never
//! skipped, rolled-back positions do not stall a rebuild and are recorded, and the hand-over
//! checkpoint of an external projector is set to the swap position.

use crate::config::{Config, Projection};
use crate::harness::{wait_until, Background, Project, TestDb};
use crate::tally;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The tally handler, slowed down a little per event so the rebuild overlaps the writers.
const SLOW_HANDLERS: &str = "\
-- on added
INSERT INTO {{tally}} AS t (stream, n, total) VALUES (:stream, 1, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = t.n + 1, total = t.total + EXCLUDED.total;
SELECT pg_sleep(0.002);
";

const HANDOVER_TABLE: &str =
    "CREATE TABLE ext_checkpoints (name text PRIMARY KEY, pos bigint, tx xid8);
     INSERT INTO ext_checkpoints VALUES ('tally', 0, NULL);";

/// The tally project (in `xid8` order if asked) handing over to `ext_checkpoints` at column
/// `position_column` (and `tx` in `xid8` order), with the handlers given.
fn project(xid8: bool, position_column: &str, handlers: &str) -> Project {
    let mut events = Config::tally_events();
    let mut handover = format!(
        "{{ table = \"ext_checkpoints\", key_column = \"name\", key = \"tally\", position_column = \"{position_column}\""
    );
    if xid8 {
        events = events
            .event("ordering", "xid8")
            .event("transaction_id", "tx");
        handover.push_str(", transaction_id_column = \"tx\"");
    }
    events
        .projection(Projection::new("tally").option_toml("handover", &format!("{handover} }}")))
        .file("tally.sql", handlers)
        .write()
}

/// What `tally` must hold for the committed events that `cut` (an SQL condition on `events`)
/// selects: 0 when equal, row for row, both ways.
async fn differences(db: &TestDb, cut: &str) -> i64 {
    db.int(&format!(
        "WITH want AS (SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS total \
                       FROM events WHERE NOT bad AND ({cut}) GROUP BY stream) \
         SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT stream, n, total FROM tally) a) \
              + (SELECT count(*) FROM (SELECT stream, n, total FROM tally EXCEPT SELECT * FROM want) b)"
    ))
    .await
}

/// Concurrent appenders, each on its own connection, until `stop`: quick ones (autocommit),
/// slow ones that hold their position for a while before committing, and ones that roll back.
/// Every seventh event is `bad` (filtered out).
pub fn writers(db: &TestDb, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<i64>> {
    let counter = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    // (kind, how many tasks)
    for (kind, n) in [("quick", 2), ("slow", 3), ("rollback", 1)] {
        for w in 0..n {
            let url = db.url.clone();
            let stop = stop.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("writer cannot connect");
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let mut written = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let i = counter.fetch_add(1, Ordering::SeqCst);
                    let insert = format!(
                        "INSERT INTO events (stream, type, data, bad) \
                         VALUES ('s{}', 'added', jsonb_build_object('amount', {i}), {})",
                        i % 10,
                        i % 7 == 0
                    );
                    match kind {
                        "quick" => {
                            client.batch_execute(&insert).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(15)).await;
                        }
                        "slow" => {
                            client
                                .batch_execute(&format!("BEGIN; {insert}"))
                                .await
                                .unwrap();
                            tokio::time::sleep(Duration::from_millis(150 + 100 * w)).await;
                            client.batch_execute("COMMIT").await.unwrap();
                        }
                        _ => {
                            client
                                .batch_execute(&format!("BEGIN; {insert}"))
                                .await
                                .unwrap();
                            tokio::time::sleep(Duration::from_millis(60)).await;
                            client.batch_execute("ROLLBACK").await.unwrap();
                        }
                    }
                    written += 1;
                }
                written
            }));
        }
    }
    tasks
}

/// The writers above, in the background.
pub fn background_writers(db: &TestDb) -> Background {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(db, &stop);
    Background::of(stop, tasks)
}

/// Runs `rebuild` while the writers write, then stops them and waits until every one of their
/// transactions has ended.
async fn rebuild_under_writers(db: &TestDb, project: &Project) -> serde_json::Value {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(db, &stop);
    // Let the writers open transactions before the rebuild starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = project
        .reproject(db, "rebuild --yes --batch-size 7 --json")
        .await;
    stop.store(true, Ordering::SeqCst);
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    out.ok();
    assert!(written > 50, "the writers wrote only {written} events");
    let history = project.reproject(db, "history --json").await;
    history.ok().json()["runs"][0].clone()
}

/// Gap-aware mode (the default) on a plain bigserial: the swapped table equals a from-scratch
/// computation over every committed event up to the swap position, and every hole below it is
/// recorded as a skipped gap.
#[tokio::test(flavor = "multi_thread")]
async fn gap_aware_rebuild_under_concurrent_writers_misses_nothing() {
    let db = tally::db(300).await;
    db.exec(HANDOVER_TABLE).await;
    let project = project(false, "pos", SLOW_HANDLERS);
    let run = rebuild_under_writers(&db, &project).await;
    assert_eq!(run["status"], "swapped", "{run}");
    let swap = run["swap_position"].as_i64().expect("a swap position");
    assert!(
        swap >= 300,
        "the swap position {swap} is below the initial head"
    );
    assert_eq!(
        differences(&db, &format!("id <= {swap}")).await,
        0,
        "the swapped tally differs from the committed events up to position {swap}"
    );
    // Every hole up to the swap position is a recorded gap, and no recorded gap holds an event.
    let unrecorded = db
        .int(&format!(
            "SELECT count(*) FROM generate_series(1, {swap}) p \
             WHERE NOT EXISTS (SELECT 1 FROM events WHERE id = p) \
               AND NOT EXISTS (SELECT 1 FROM reproject.gaps g WHERE g.run_id = 1 AND p BETWEEN g.from_position AND g.to_position)"
        ))
        .await;
    assert_eq!(
        unrecorded, 0,
        "holes below the swap position not in reproject.gaps"
    );
    let filled = db
        .int("SELECT count(*) FROM reproject.gaps g JOIN events e ON e.id BETWEEN g.from_position AND g.to_position")
        .await;
    assert_eq!(filled, 0, "a recorded gap holds a committed event");
    assert!(
        db.int(&format!(
            "SELECT count(*) FROM reproject.gaps WHERE to_position <= {swap}"
        ))
        .await
            > 0,
        "the rolled-back writer left holes below the swap position"
    );
    // The external projector continues exactly where the swapped table ends.
    db.assert_int("SELECT pos FROM ext_checkpoints WHERE name = 'tally'", swap)
        .await;
    db.drop().await;
}

/// xid8 mode: reading in (transaction id, position) order below the snapshot's xmin; the
/// checkpoint is the pair, and the swapped table equals the committed events up to that pair.
#[tokio::test(flavor = "multi_thread")]
async fn xid8_rebuild_under_concurrent_writers_misses_nothing() {
    let db = tally::db(300).await;
    db.exec("ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id()")
        .await;
    db.exec(HANDOVER_TABLE).await;
    let project = project(true, "pos", SLOW_HANDLERS);
    let run = rebuild_under_writers(&db, &project).await;
    assert_eq!(run["status"], "swapped", "{run}");
    let position = db
        .int("SELECT DISTINCT position FROM reproject.checkpoints WHERE run_id = 1")
        .await;
    let tx = db
        .text("SELECT DISTINCT transaction_id::text FROM reproject.checkpoints WHERE run_id = 1")
        .await
        .expect("the checkpoint has a transaction id");
    assert_eq!(run["swap_position"], position);
    let cut = format!("(tx, id) <= ('{tx}'::xid8, {position})");
    assert_eq!(
        differences(&db, &cut).await,
        0,
        "the swapped tally differs from the committed events up to ({tx}, {position})"
    );
    assert!(
        db.int(&format!("SELECT count(*) FROM events WHERE {cut}"))
            .await
            >= 300
    );
    db.assert_int(
        "SELECT pos FROM ext_checkpoints WHERE name = 'tally'",
        position,
    )
    .await;
    assert_eq!(
        db.text("SELECT tx::text FROM ext_checkpoints WHERE name = 'tally'")
            .await
            .as_deref(),
        Some(tx.as_str())
    );
    db.drop().await;
}

/// Opens a transaction that takes the next position and keeps it open; returns the client
/// (drop it only after ending the transaction) and its backend pid.
async fn hold_a_position(db: &TestDb) -> (tokio_postgres::Client, i32) {
    let holder = db.client().await;
    holder
        .batch_execute(
            "BEGIN; INSERT INTO events (stream, type, data) VALUES ('s1', 'added', '{\"amount\": 1000}')",
        )
        .await
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    (holder, pid)
}

/// A position taken by a transaction that rolls back is a permanent hole: the rebuild holds at
/// it while the transaction is open, passes it once the transaction has ended, and records it
/// with the evidence.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_position_is_passed_and_recorded() {
    let db = tally::db(100).await;
    let (holder, pid) = hold_a_position(&db).await; // takes position 101
    tally::append(&db, 10).await; // 102..111, committed
    let project = tally::project();
    let mut rebuild = project.spawn(&db, "rebuild --yes");
    // The rebuild waits for the open transaction rather than passing position 101. It reads
    // the head once its clone has committed; on a loaded machine that can take longer than
    // any fixed pause, and a rollback before it would leave no transaction to name.
    wait_until(&db, "SELECT to_regclass('tally_rebuild') IS NOT NULL").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        rebuild.try_wait().unwrap().is_none(),
        "the rebuild did not wait at the open gap"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    rebuild.output().await.ok();
    let run = project.reproject(&db, "history --json").await;
    let run = run.ok().json()["runs"][0].clone();
    assert_eq!(run["swap_position"], 111);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int("SELECT count(*) FROM reproject.gaps WHERE run_id = 1 AND from_position = 101 AND to_position = 101", 1).await;
    db.assert_int("SELECT count(*) FROM reproject.gaps", 1)
        .await;
    let evidence = db
        .text("SELECT evidence::text FROM reproject.gaps WHERE from_position = 101")
        .await
        .unwrap();
    assert!(
        evidence.contains(&format!("\"pid\": {pid}")),
        "the evidence names the transaction that held the gap: {evidence}"
    );
    db.drop().await;
}

/// The counterpart: a position held open while later ones commit, then committed, is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_position_committed_late_is_not_skipped() {
    let db = tally::db(100).await;
    let (holder, _) = hold_a_position(&db).await;
    tally::append(&db, 10).await;
    let project = tally::project();
    let rebuild = project.spawn(&db, "rebuild --yes");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    rebuild.output().await.ok();
    // The late event (amount 1000 on s1) is in the swapped table: it equals all events.
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int("SELECT count(*) FROM reproject.gaps", 0)
        .await;
    db.drop().await;
}

/// A hand-over naming a column that does not exist is a config error before anything is
/// written; a missing checkpoint row fails the swap as a whole (the live table stays).
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_handover_refuses_to_swap() {
    let db = tally::db(50).await;
    db.exec("CREATE TABLE ext_checkpoints (name text PRIMARY KEY, pos bigint)")
        .await;
    let wrong = project(false, "position", tally::HANDLERS);
    wrong.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("reproject.toml:15: projection `tally`: the hand-over checkpoint in `ext_checkpoints` cannot be set");
    assert!(!db.exists("reproject.runs").await, "nothing was written");

    let missing_row = project(false, "pos", tally::HANDLERS);
    db.exec("UPDATE tally SET total = -1 WHERE stream = 's1'")
        .await;
    missing_row
        .reproject(&db, "rebuild --yes")
        .await
        .code(1)
        .stderr_has("matched 0 rows, not 1; nothing was swapped");
    db.assert_int_because(
        "SELECT total FROM tally WHERE stream = 's1'",
        -1,
        "the live table was not swapped",
    )
    .await;
    db.assert_text_because(
        "SELECT status FROM reproject.runs",
        Some("awaiting_swap"),
        "the swap transaction rolled back as a whole: the rebuilt tables can still be swapped",
    )
    .await;
    // As the hint says: create the row, then swap.
    db.exec("INSERT INTO ext_checkpoints VALUES ('tally', 0)")
        .await;
    missing_row.reproject(&db, "swap --yes").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(
        db.int("SELECT pos FROM ext_checkpoints").await,
        db.int("SELECT max(id) FROM events").await
    );
    db.drop().await;
}
