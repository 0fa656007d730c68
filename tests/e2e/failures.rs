//! What goes wrong, and what reproject does then: nothing lost, the failure named, the exit
//! code documented.

use crate::config::Projection;
use crate::harness::{Out, TestDb};
use crate::tally;

/// A handler that fails on one event: exit 1, the error names the projection, the event's
/// position and type and the database's message; the batch is rolled back, the checkpoint
/// stays at the last committed batch, the live table is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn handler_failure_names_the_event() {
    let db = tally::db(1000).await;
    db.exec("UPDATE events SET data = '{\"amount\": \"forty-two\"}' WHERE id = 417")
        .await;
    let p = tally::project();
    let live_before = db.int("SELECT sum(total)::bigint FROM tally").await;
    let out = p.reproject(&db, "rebuild --yes --batch-size 100").await;
    out.code(1)
        .stderr_has(
            "projection `tally` failed on event at position 417 (type `added`, stream `s7`)",
        )
        .stderr_has("invalid input syntax for type bigint")
        .stderr_has("tally.sql:2")
        .stderr_has("forty-two");
    db.assert_int("SELECT position FROM reproject.checkpoints", 400)
        .await;
    db.assert_int_because(
        "SELECT sum(n)::bigint FROM tally_rebuild",
        400,
        "the failed batch left nothing",
    )
    .await;
    db.assert_int("SELECT sum(total)::bigint FROM tally", live_before)
        .await;
    assert!(!db.exists("tally_old").await);
    let run = p.reproject(&db, "history --json").await.ok().json()["runs"].clone();
    assert_eq!(run[0]["status"], "failed");
    assert!(run[0]["error"].as_str().unwrap().contains("position 417"));
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["state"], "failed");
    assert_eq!(status["projections"][0]["checkpoint"], 400);
    db.drop().await;
}

/// A custom check that returns false refuses the swap: exit 3, run recorded as checks_failed
/// with the figures, the rebuilt table kept, the live table untouched. `swap --skip-checks`
/// then swaps deliberately.
#[tokio::test(flavor = "multi_thread")]
async fn failing_check_refuses_the_swap() {
    let db = tally::db(300).await;
    let p = tally::with(Projection::new("tally").check(
        "no stream above 5 events",
        "SELECT max(n) <= 5 FROM {{tally}}",
    ))
    .write();
    let out = p.reproject(&db, "rebuild --yes").await;
    out.code(3)
        .stderr_has("no stream above 5 events: returned false")
        .stderr_has("nothing was swapped");
    assert!(db.exists("tally_rebuild").await, "kept for inspection");
    assert!(!db.exists("tally_old").await);
    let runs = p.reproject(&db, "history --json").await.ok().json()["runs"].clone();
    assert_eq!(runs[0]["status"], "checks_failed");
    let checks = runs[0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["passed"], true, "row count");
    assert_eq!(checks[1]["passed"], false);
    assert_eq!(runs[0]["rows_after"]["tally"], 10);

    p.reproject(&db, "swap --yes --skip-checks")
        .await
        .ok()
        .stdout_has("swapped");
    assert!(db.exists("tally_old").await);
    let runs = p.reproject(&db, "history --json").await.ok().json()["runs"].clone();
    assert_eq!(
        runs[0]["options"]["skip_checks"], true,
        "the override is recorded"
    );
    assert!(runs[0]["error"].is_null());
    db.drop().await;
}

/// The row-count check: a rebuild that produces far fewer rows than live is refused.
#[tokio::test(flavor = "multi_thread")]
async fn row_count_outside_tolerance_refuses_the_swap() {
    let db = tally::db(300).await;
    // The live table has rows for 10 streams; events of 8 of them are now filtered out.
    db.exec("UPDATE events SET bad = true WHERE stream NOT IN ('s1', 's2')")
        .await;
    let p = tally::project();
    p.reproject(&db, "rebuild --yes")
        .await
        .code(3)
        .stderr_has("row count of tally: live 10, rebuilt 2, difference 80.00% (tolerance 10%)");
    // With a tolerance that allows it, the same rebuild swaps.
    let p = tally::option("row_count_tolerance", "80");
    p.reproject(&db, "rebuild --yes").await.ok();
    db.assert_int("SELECT count(*) FROM tally", 2).await;
    db.drop().await;
}

/// Snapshot of everything a command could create.
async fn catalog_snapshot(db: &TestDb) -> (i64, i64) {
    (
        db.int("SELECT count(*) FROM pg_class").await,
        db.int("SELECT count(*) FROM pg_namespace").await,
    )
}

/// `rebuild --dry-run` and `plan` write nothing, not even the state schema.
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_and_plan_write_nothing() {
    let (db, p) = tally::fixture(100).await;
    let before = catalog_snapshot(&db).await;
    let out = p.reproject(&db, "rebuild --dry-run").await;
    out.ok()
        .stdout_has("create `tally_rebuild` (LIKE `tally` INCLUDING ALL)")
        .stdout_has("100 to replay")
        .stdout_has("dry run: nothing was written");
    p.reproject(&db, "plan").await.ok();
    p.reproject(&db, "status").await.ok().stdout_has("live");
    p.reproject(&db, "history")
        .await
        .ok()
        .stdout_has("no runs recorded");
    assert_eq!(catalog_snapshot(&db).await, before);
    assert!(!db.exists("reproject.runs").await);
    db.drop().await;
}

/// Without a terminal, a rebuild that would swap needs `--yes`: refused at once, never hangs.
#[tokio::test(flavor = "multi_thread")]
async fn no_confirmation_without_a_terminal() {
    let (db, p) = tally::fixture(10).await;
    p.reproject(&db, "rebuild")
        .await
        .code(2)
        .stderr_has("pass `--yes`");
    p.reproject(&db, "rollback")
        .await
        .code(2)
        .stderr_has("pass `--yes`");
    assert!(!db.exists("reproject.runs").await);
    db.drop().await;
}

/// An unreachable database is a clear runtime error without the password in it.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_database_is_named_without_password() {
    let p = tally::project();
    let out = tokio::process::Command::new(crate::harness::binary())
        .args(["--config"])
        .arg(p.config())
        .args([
            "plan",
            "--database-url",
            "postgres://alice:s3cret@127.0.0.1:1/nowhere",
        ])
        .output()
        .await
        .unwrap();
    let out = Out::from(out);
    out.code(1);
    let stderr = &out.stderr;
    out.stderr_has("cannot connect to PostgreSQL at alice@127.0.0.1:1/nowhere");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// Transient errors (serialization failure, deadlock, lock timeout) roll the batch back and
/// retry it; the result is exact. A handler's own error is not retried.
#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried() {
    let db = tally::db(300).await;
    // A sequence survives the rollback of the batch, so it counts attempts: the 150th and
    // 151st calls fail as a serialization failure would.
    db.exec(
        "CREATE SEQUENCE calls;
         CREATE FUNCTION flaky() RETURNS void LANGUAGE plpgsql AS $f$
         BEGIN
           IF nextval('calls') IN (150, 151) THEN
             RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001';
           END IF;
         END $f$;",
    )
    .await;
    let p = tally::handlers_then("SELECT flaky();\n");
    let out = p.reproject(&db, "rebuild --yes --batch-size 100").await;
    out.ok()
        .stderr_has("hit a transient error (attempt 1 of 5")
        .stderr_has("attempt 2 of 5");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int("SELECT events_applied FROM reproject.runs", 300)
        .await;
    // The run records the retries it survived, and `history` shows them.
    assert_eq!(
        db.int(
            "SELECT count(*) FROM reproject.runs, jsonb_array_elements(faults) f \
             WHERE f->>'kind' = 'transient_retry'"
        )
        .await,
        2
    );
    p.reproject(&db, "history")
        .await
        .ok()
        .stdout_has("survived transient retry: batch after")
        .stdout_has("attempt 2 of 5");
    db.drop().await;
}

/// The connection goes while the clone is being created (its transaction never commits): the
/// automatic resume finds a run without tables or progress, ends it as failed with the reason,
/// and starts a new run (which supersedes it, keeping the reason), which swaps. Nothing is applied twice; no wrong table is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_while_cloning_starts_a_new_run() {
    let db = tally::db(500).await;
    let p = tally::project();
    // A first rebuild creates reproject's schema.
    p.reproject(&db, "rebuild --yes").await.ok();
    // Registering the clone inserts into helper_tables: held up by this lock.
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE reproject.helper_tables IN SHARE ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let run = p.spawn(&db, "rebuild --yes");
    crate::harness::wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE NOT l.granted AND a.application_name = 'reproject' \
           AND l.relation = 'reproject.helper_tables'::regclass)",
    )
    .await;
    assert!(db.terminate_reproject_sessions().await >= 1);
    locker.batch_execute("COMMIT").await.unwrap();
    let out = run.finish().await;
    out.ok().stderr_has(
        "interrupted before its clone committed; nothing to continue; starting a new run",
    );
    db.assert_text(
        "SELECT status || ': ' || coalesce(error, '') FROM reproject.runs WHERE id = 2",
        Some("superseded: interrupted before its clone committed; nothing to continue; superseded by run 3"),
    )
    .await;
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 3",
        Some("swapped"),
    )
    .await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 3",
        500,
    )
    .await;
}
