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
