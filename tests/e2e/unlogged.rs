//! `build_unlogged = true`: the rebuild tables are UNLOGGED during the replay, LOGGED before the
//! swap (so the new live table is exactly the old one, persistence included), an UNLOGGED live
//! table stays unlogged, and a run whose server crashed under its unlogged tables (which crash
//! recovery empties) is refused rather than resumed into a wrong result.

use crate::harness::{Project, TestDb};
use crate::pgserver::PgServer;
use crate::tally;

fn project(unlogged: bool) -> Project {
    if unlogged {
        tally::option("build_unlogged", "true")
    } else {
        tally::project()
    }
}

/// `relpersistence` of a relation: `p` logged, `u` unlogged.
async fn persistence(db: &TestDb, relation: &str) -> String {
    db.text(&format!(
        "SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass('{relation}')"
    ))
    .await
    .unwrap_or_else(|| panic!("no relation `{relation}`"))
}

const PAUSE: [&str; 6] = [
    "rebuild",
    "--yes",
    "--max-events",
    "250",
    "--batch-size",
    "100",
];

/// Paused after 250 events, the rebuild table and its index are unlogged; the resumed run
/// (with more events arrived meanwhile) makes them logged and swaps: the live table is logged,
/// the swap's fingerprint check passed, and the rows are exact.
#[tokio::test(flavor = "multi_thread")]
async fn rebuild_tables_are_unlogged_during_the_replay_and_logged_at_the_swap() {
    let db = tally::db(1000).await;
    let p = project(true);
    p.reproject(&db, &PAUSE)
        .await
        .ok()
        .stdout_has("stopped after 250 events");
    assert_eq!(persistence(&db, "tally_rebuild").await, "u");
    assert_eq!(persistence(&db, "tally_rebuild_pkey").await, "u");
    assert_eq!(persistence(&db, "tally").await, "p");
    db.assert_int("SELECT sum(n)::bigint FROM tally_rebuild", 250)
        .await;
    tally::append(&db, 100).await;
    let out = p.reproject(&db, "rebuild --yes --resume --json").await;
    out.ok().stderr_has("made `tally_rebuild` logged");
    assert_eq!(out.json()["status"], "swapped");
    assert_eq!(persistence(&db, "tally").await, "p");
    assert_eq!(persistence(&db, "tally_pkey").await, "p");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(
        db.int("SELECT sum(n)::bigint FROM tally").await,
        db.int("SELECT count(*) FROM events WHERE NOT bad").await
    );
    db.drop().await;
}

/// Without the option nothing changes: the rebuild table is logged from the start. With it,
/// `--no-swap` leaves a logged table waiting (it may wait for days), and `swap` finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn default_is_logged_and_no_swap_waits_logged() {
    let db = tally::db(300).await;
    project(false).reproject(&db, &PAUSE).await.ok();
    assert_eq!(persistence(&db, "tally_rebuild").await, "p");
    let p = project(true);
    p.reproject(&db, "rebuild --yes --no-swap")
        .await
        .ok()
        .stderr_has("made `tally_rebuild` logged");
    assert_eq!(persistence(&db, "tally_rebuild").await, "p");
    p.reproject(&db, "swap --yes").await.ok();
    assert_eq!(persistence(&db, "tally").await, "p");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// An UNLOGGED live table keeps its persistence: its clone is unlogged, stays so, and the
/// swapped-in table is unlogged like the one it replaces.
#[tokio::test(flavor = "multi_thread")]
async fn an_unlogged_live_table_stays_unlogged() {
    let db = tally::db(300).await;
    db.exec("ALTER TABLE tally SET UNLOGGED").await;
    let p = project(true);
    let out = p.reproject(&db, "rebuild --yes").await;
    out.ok();
    assert!(
        !out.stderr.contains("logged (build_unlogged)"),
        "nothing to make logged:\n{}",
        out.stderr
    );
    assert_eq!(persistence(&db, "tally").await, "u");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A server crash empties unlogged tables while the run's checkpoint survives: resuming would
/// silently lose the first 250 events. The resume and the swap are refused, naming the table;
/// a new rebuild is exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_under_unlogged_tables_refuses_to_resume() {
    let Some(server) = PgServer::start_plain() else {
        eprintln!("SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) on this machine");
        return;
    };
    let db = TestDb::new_on(server.admin()).await;
    tally::setup(&db, 1000).await;
    let p = project(true);
    p.reproject(&db, &PAUSE).await.ok();
    db.assert_int("SELECT sum(n)::bigint FROM tally_rebuild", 250)
        .await;
    // The replay commits asynchronously; make its checkpoint durable, as the WAL writer would
    // within a fraction of a second.
    db.exec("CHECKPOINT").await;
    server.crash();
    server.start_again();
    // The hazard is real: crash recovery emptied the table, the checkpoint still says 250.
    db.assert_int("SELECT count(*) FROM tally_rebuild", 0).await;
    db.assert_int("SELECT position FROM reproject.checkpoints", 250)
        .await;
    for args in [
        &["rebuild", "--yes", "--resume"][..],
        &["swap", "--yes"][..],
    ] {
        p.reproject(&db, args)
            .await
            .code(1)
            .stderr_has("`tally_rebuild` is UNLOGGED")
            .stderr_has("server has restarted");
    }
    db.assert_int("SELECT count(*) FROM tally", 10).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(persistence(&db, "tally").await, "p");
    db.drop().await;
}
