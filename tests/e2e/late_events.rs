//! Positions reserved before the inserting transaction (Marten's Rich append mode: `nextval`
//! in an autocommitted command of its own, the insert later in another transaction, after a
//! later writer committed): with `gap_age` the rebuild and `run` wait for such a gap and apply
//! the event; without it, the event lands below the checkpoint.

use crate::harness::TestDb;
use crate::live::{start_runner, wait_for, CAUGHT_UP};
use crate::tally;
use std::time::Duration;

/// Reserves the next position as Marten's Rich append mode does: `nextval` in a statement of
/// its own, autocommitted, before the transaction that inserts the event. No lock shows it.
pub async fn reserve(db: &TestDb) -> i64 {
    db.int("SELECT nextval('events_id_seq')").await
}

/// Inserts the event of a reserved position: `amount` on `stream`.
pub async fn insert_at(db: &TestDb, position: i64, stream: &str, amount: i64) {
    db.exec(&format!(
        "INSERT INTO events (id, stream, type, data) VALUES ({position}, '{stream}', 'added', '{{\"amount\": {amount}}}')"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_gap_age_a_position_reserved_early_is_applied_by_rebuild_and_run() {
    let db = tally::db(100).await;
    let p = tally::config().event("gap_age", "4s").write();
    let plan = p.reproject(&db, "plan --json").await;
    assert_eq!(plan.ok().json()["ordering"]["gap_age_seconds"], 4.0);
    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("ordering: gap-aware: a gap is passed once no open transaction can fill it and it is at least 4s old (gap_age)");

    // The rebuild: position 101 is reserved, 102..106 commit, then the rebuild starts and the
    // reserved event is inserted while it runs.
    let reserved = reserve(&db).await;
    tally::append(&db, 5).await;
    let rebuild = p.spawn(&db, "rebuild --yes");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    insert_at(&db, reserved, "s3", 1000).await;
    rebuild.output().await.ok();
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "the event inserted late at position {reserved} is in the swapped table"
    );
    db.assert_int_because(
        "SELECT count(*) FROM reproject.gaps",
        0,
        "no gap was passed",
    )
    .await;

    // The runner, from the swap's hand-over: the same appends while it runs.
    let runner = start_runner(&db, &p, "run").await;
    let reserved = reserve(&db).await;
    tally::append(&db, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    insert_at(&db, reserved, "s4", 2000).await;
    wait_for(&db, CAUGHT_UP, 30).await;
    runner.stop().await.ok();
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "the runner applied the event inserted late at position {reserved}"
    );
    db.drop().await;
}

/// A `bigserial` position: its sequence (found from the column) starts at 1, the first
/// position, so a rebuild from the start does not wait for the gap age; a later gap does.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_gap_age_a_rebuild_from_the_sequences_start_does_not_wait() {
    let db = tally::db(100).await;
    let p = tally::config().event("gap_age", "4s").write();
    let out = p.reproject(&db, "-v rebuild --yes").await;
    out.ok()
        .stderr_has("positions begin at 1, the start of `events_id_seq`");
    assert!(
        !out.stderr.contains("waited"),
        "nothing held the start: {}",
        out.stderr
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    // A sequence named in the config must exist.
    tally::config()
        .event("position_sequence", "no_such_seq")
        .write()
        .reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("`events.position_sequence`: sequence `no_such_seq` does not exist");
    // Position 1 deleted (an archive, say): the hole from the sequence's start is a gap, proven
    // and aged like any other, and recorded.
    db.exec("DELETE FROM events WHERE id = 1").await;
    let out = p.reproject(&db, "-v rebuild --yes").await;
    out.ok()
        .stderr_has("`events_id_seq` starts at 1, the lowest position is 2")
        .stderr_has("before replaying past the start");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int_because(
        "SELECT count(*) FROM reproject.gaps WHERE from_position = 1 AND to_position = 1",
        1,
        "the hole at the start was passed as a gap",
    )
    .await;
    db.drop().await;
}

/// Without a gap age, the runner passes the reserved position as a gap; the event inserted
/// there later is found by the runner's re-check, reported and recorded; `gaps` lists it and
/// exits 5; `gaps --repair` rebuilds its stream (with the runner still running) and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_event_below_the_runners_checkpoint_is_found_recorded_and_repaired() {
    let db = tally::db(100).await;
    let p = tally::with_stream_key().write();
    p.reproject(&db, "gaps")
        .await
        .ok()
        .stdout_has("0 gap(s) passed")
        .stdout_has("no late events");
    p.reproject(&db, "rebuild --yes").await.ok();
    let runner = start_runner(&db, &p, "run --recheck-gaps-every 200ms").await;
    let reserved = reserve(&db).await;
    tally::append(&db, 5).await;
    wait_for(&db, CAUGHT_UP, 30).await;
    db.assert_int_because(
        &format!("SELECT count(*) FROM reproject.gaps WHERE run_id IS NULL AND from_position = {reserved} AND projections = '{{tally}}'"),
        1,
        "the runner recorded the gap it passed",
    )
    .await;
    insert_at(&db, reserved, "s3", 1000).await;
    wait_for(
        &db,
        &format!("SELECT EXISTS (SELECT 1 FROM reproject.late_events WHERE position = {reserved} AND projection = 'tally' AND stream = 's3' AND event_type = 'added' AND found_by = 'run')"),
        30,
    )
    .await;
    assert_ne!(
        tally::expected_differences(&db, "tally").await,
        0,
        "the live tally misses the late event"
    );
    p.reproject(&db, "gaps")
        .await
        .code(6)
        .stdout_has(&format!(
            "position {reserved} (stream `s3`, type `added`): missing from `tally`"
        ))
        .stdout_has("reproject rebuild tally --streams s3 --yes")
        .stderr_has("1 late event(s) not repaired: the tables of `tally` miss them");
    let out = p.reproject(&db, "gaps --repair --json").await;
    let report = out.ok().json();
    assert_eq!(report["repairs"][0]["streams"][0], "s3", "{report}");
    assert_eq!(report["unrepaired"].as_array().map(Vec::len), Some(0));
    let run = report["repairs"][0]["run_id"]
        .as_i64()
        .expect("a repair run");
    wait_for(&db, CAUGHT_UP, 30).await;
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "repaired: the tally equals every event"
    );
    db.assert_text(
        &format!("SELECT repaired_by FROM reproject.late_events WHERE position = {reserved}"),
        Some(&format!("run {run} (--streams s3)")),
    )
    .await;
    let out = runner.stop().await;
    out.ok().stderr_has(&format!(
        "late event: position {reserved} (stream `s3`, type `added`) was committed after `tally` had passed its position as a final gap"
    ));
    p.reproject(&db, "gaps")
        .await
        .ok()
        .stdout_has("no late events");
    db.drop().await;
}

/// A rebuild whose replay read past a gap finds, after its catch-up, the event inserted there
/// since, and says so; the swapped tables miss it until `gaps --repair`.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_finds_a_late_event_in_a_gap_it_passed() {
    let db = tally::db(50).await;
    let p = tally::with_stream_key()
        .file("tally.sql", &tally::slow_handlers("0.005"))
        .write();
    let reserved = reserve(&db).await;
    tally::append(&db, 300).await;
    let rebuild = p.spawn(&db, "rebuild --yes --batch-size 20");
    // Once the replay has read past the gap (the checkpoint is beyond it), the event comes.
    wait_for(
        &db,
        &format!("SELECT to_regclass('reproject.gaps') IS NOT NULL AND EXISTS (SELECT 1 FROM reproject.gaps WHERE from_position = {reserved}) \
                  AND (SELECT position FROM reproject.checkpoints WHERE run_id = 1) > {reserved}"),
        30,
    )
    .await;
    insert_at(&db, reserved, "s3", 1000).await;
    let out = rebuild.output().await;
    out.ok().stderr_has(&format!(
        "late event: position {reserved} (stream `s3`, type `added`)"
    ));
    db.assert_text(
        &format!("SELECT found_by FROM reproject.late_events WHERE position = {reserved}"),
        Some("run 1 (catch-up)"),
    )
    .await;
    assert_ne!(tally::expected_differences(&db, "tally").await, 0);
    p.reproject(&db, "gaps --repair").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}
