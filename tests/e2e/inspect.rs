//! `status` and `history` report the state as recorded.

use crate::tally;

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_state_checkpoint_and_lag() {
    let (db, p) = tally::fixture(500).await;
    let s = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(s["head"], 500);
    assert_eq!(s["projections"][0]["state"], "live");
    assert_eq!(s["projections"][0]["tables"], serde_json::json!(["tally"]));

    p.reproject(&db, "rebuild --yes --max-events 200 --batch-size 50")
        .await
        .ok();
    tally::append(&db, 10).await;
    let s = p.reproject(&db, "status --json").await.ok().json();
    let t = &s["projections"][0];
    assert_eq!(t["state"], "paused");
    assert_eq!(t["checkpoint"], 200);
    assert_eq!(t["lag"], 310);
    assert_eq!(
        t["helper_tables"],
        serde_json::json!(["tally_rebuild (rebuild)"])
    );
    let human = p.reproject(&db, "status").await;
    human.ok().stdout_has("paused").stdout_has("310");

    // An interrupted run (its process gone while `running`) is shown as such.
    db.exec("UPDATE reproject.runs SET status = 'running'")
        .await;
    let s = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(s["projections"][0]["state"], "interrupted");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_records_who_why_and_outcome() {
    let (db, p) = tally::fixture(100).await;
    p.reproject(
        &db,
        &[
            "rebuild",
            "--yes",
            "--reason",
            "fix totals",
            "--initiated-by",
            "oncall-anna",
        ],
    )
    .await
    .ok();
    p.reproject(&db, "rollback --yes").await.ok();
    let out = p.reproject(&db, "history").await;
    out.ok()
        .stdout_has("run 1 [rolled_back] tally by oncall-anna")
        .stdout_has("reason: fix totals")
        .stdout_has("events 100, positions start..100")
        .stdout_has("checks 1/1 passed");
    // The same figures are queryable in SQL.
    db.assert_text(
        "SELECT initiated_by FROM reproject.runs",
        Some("oncall-anna"),
    )
    .await;
    db.assert_int("SELECT count(*) FROM reproject.runs WHERE rolled_back_at IS NOT NULL AND swapped_at IS NOT NULL", 1).await;
    db.drop().await;
}

/// `status` and `plan` never queue behind a swap's locks: after a short lock_timeout they
/// exit 75 saying a table is locked.
#[tokio::test(flavor = "multi_thread")]
async fn status_does_not_wait_behind_a_swap_lock() {
    let (db, p) = tally::fixture(10).await;
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE tally IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    p.reproject(&db, "status")
        .await
        .code(75)
        .stderr_has("is locked by another session");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    holder.batch_execute("ROLLBACK").await.unwrap();
    p.reproject(&db, "status").await.ok();
    db.drop().await;
}
