//! Stream lanes (src/engine/lanes.rs): the bulk replay of projections that declare
//! `stream_key`, split by a hash of the stream, `--jobs` lanes at once.

use crate::harness::{example, reproject, wait_until, Project, TestDb};
use crate::per_batch::{w1, w1_mismatches};
use crate::tally;

/// The events a W1 rebuild replays.
const REPLAYABLE: &str = "SELECT count(*) FROM execution_events \
     WHERE coalesce(invalidated, false) = false AND aggregate_type = 'posting'";

/// W1 in ten lanes, two at a time: the seed function's rows, every event counted once, and
/// the plan recorded with every lane done.
#[tokio::test(flavor = "multi_thread")]
async fn w1_in_stream_lanes_equals_the_seed_reference() {
    let db = TestDb::new().await;
    w1(&db, "600").await;
    let config = example("postings/reproject-per-batch.toml");
    assert_ne!(
        w1_mismatches(&db).await,
        "0",
        "the live table starts corrupted"
    );
    reproject(&db, &config, &["rebuild", "--dry-run"])
        .await
        .ok()
        .stdout_has("replay 8994 event(s) up to position 9000 in stream lanes");
    let out = reproject(
        &db,
        &config,
        &["rebuild", "--yes", "--set-batch-size", "997", "--jobs", "2"],
    )
    .await;
    out.ok()
        .stdout_has("run 1: swapped. 8994 events applied")
        .stderr_has("replaying in 10 stream lane(s), 2 at a time");
    assert_eq!(w1_mismatches(&db).await, "0");
    db.assert_int(REPLAYABLE, 8994).await;
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        8994,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 1 AND done_at IS NOT NULL",
        10,
    )
    .await;
    // The lanes partition the events: each replayable event in exactly one lane, and every
    // lane has some (600 postings over 10 lanes).
    assert_eq!(
        db.int(
            "SELECT count(*) FROM (SELECT mod(hashtext(coalesce(aggregate_id::text COLLATE \"C\", ''))::bigint + 2147483648, 10) AS lane, count(*) \
               FROM execution_events GROUP BY 1) l WHERE lane BETWEEN 0 AND 9 AND count > 0"
        )
        .await,
        10
    );
    // The checkpoint moved past the plan in one step, to the plan's end.
    assert_eq!(
        db.int("SELECT position FROM reproject.checkpoints WHERE run_id = 1")
            .await,
        db.int("SELECT max(upto_position) FROM reproject.lanes WHERE run_id = 1")
            .await
    );
    db.drop().await;
}

/// A lane that fails keeps the lanes before it and nothing of itself; once the bad event is
/// fixed, `--resume` applies only the lanes left (a lane applied twice would append its
/// postings' history twice: compare.sql would see it).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_lane_resumes_with_the_lanes_left_and_applies_each_event_once() {
    let db = TestDb::new().await;
    w1(&db, "600").await;
    let config = example("postings/reproject-per-batch.toml");
    // A posting of lane 6 of 10 (1-based) gets an event the handler cannot cast.
    let posting = db
        .int(
            "SELECT min(aggregate_id::int)::bigint FROM execution_events \
              WHERE mod(hashtext(aggregate_id::text COLLATE \"C\")::bigint + 2147483648, 10) = 5",
        )
        .await;
    db.exec(&format!(
        "UPDATE execution_events SET event_data = event_data || '{{\"next_execution_order\": \"oops\"}}' \
          WHERE aggregate_id = '{posting}' AND aggregate_version = 3"
    ))
    .await;
    reproject(
        &db,
        &config,
        &["rebuild", "--yes", "--set-batch-size", "997"],
    )
    .await
    .code(1)
    .stderr_has("projection `posting_state` failed on stream lane 6 of 10")
    .stderr_has("posting_state_per_batch.sql:")
    .stderr_has("invalid input syntax for type integer");
    db.assert_int_because(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 1 AND done_at IS NOT NULL",
        5,
        "lanes 1-5 kept",
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.checkpoints WHERE run_id = 1 AND position IS NULL",
        1,
        "the checkpoint stays before the plan",
    )
    .await;
    let kept = db
        .int("SELECT count(*) FROM posting_state_projection_rebuild")
        .await;
    assert!(kept > 0 && kept < 600, "{kept} rows from the lanes kept");
    // `status` says how far the lanes got, since the checkpoint does not.
    let status = reproject(&db, &config, &["status", "--json"])
        .await
        .ok()
        .json();
    let lanes = &status["projections"][0]["lanes"];
    assert_eq!(lanes["done"], 5, "{status}");
    assert_eq!(lanes["lanes"], 10, "{status}");
    reproject(&db, &config, &["status"])
        .await
        .ok()
        .stdout_has("stream lanes: 5 of 10 done (plan 1: 8994 event(s) up to position 9000");

    db.exec(&format!(
        "UPDATE execution_events SET event_data = event_data || '{{\"next_execution_order\": 4}}' \
          WHERE aggregate_id = '{posting}' AND aggregate_version = 3"
    ))
    .await;
    // What the resume applies: the events of lanes 6-10, nothing of lanes 1-5 again.
    let left_events = db
        .int(
            "SELECT count(*) FROM execution_events \
              WHERE coalesce(invalidated, false) = false AND aggregate_type = 'posting' \
                AND mod(hashtext(aggregate_id::text COLLATE \"C\")::bigint + 2147483648, 10) >= 5",
        )
        .await;
    // A different batch size must not change the plan that is half applied.
    reproject(
        &db,
        &config,
        &[
            "rebuild",
            "--yes",
            "--resume",
            "--set-batch-size",
            "5000",
            "--jobs",
            "3",
        ],
    )
    .await
    .ok()
    .stdout_has(&format!("run 1: swapped. {left_events} events applied"))
    .stderr_has("(5 left of plan 1)");
    assert_eq!(w1_mismatches(&db).await, "0");
    assert_eq!(
        db.int("SELECT events_applied FROM reproject.runs WHERE id = 1")
            .await,
        db.int(REPLAYABLE).await,
        "every event once"
    );
    db.drop().await;
}

const TALLY_PER_BATCH: &str = "\
-- per batch
INSERT INTO {{tally}} AS t (stream, n, total)
SELECT e.stream, count(*), sum((e.data->>'amount')::bigint) FROM :events AS e GROUP BY e.stream
ON CONFLICT (stream) DO UPDATE SET n = t.n + EXCLUDED.n, total = t.total + EXCLUDED.total;
";

/// `--jobs` on projections without `stream_key` is refused up front (tests/e2e/preflight.rs
/// has the dry run); without it, the run replays on one connection, as before.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_without_stream_key_is_refused_and_replays_on_one_connection_without_jobs() {
    let db = tally::db(300).await;
    let p = tally::handlers(TALLY_PER_BATCH);
    p.reproject(&db, "rebuild --yes --set-batch-size 50 --jobs 2")
        .await
        .code(2)
        .stderr_has("--jobs 2 needs stream lanes, and projection `tally`");
    p.reproject(&db, "rebuild --yes --set-batch-size 50")
        .await
        .ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int_because("SELECT count(*) FROM reproject.lanes", 0, "no lanes")
        .await;
    // With the declaration, the same handlers replay in lanes (one per 50 events).
    let p2 = tally::with_stream_key()
        .file("tally.sql", TALLY_PER_BATCH)
        .write();
    tally::append(&db, 20).await;
    p2.reproject(&db, "rebuild --yes --set-batch-size 50 --jobs 2")
        .await
        .ok()
        .stderr_has("replaying in 7 stream lane(s), 2 at a time");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    // A budget of events stops at an exact event: no lanes, and it says so.
    p2.reproject(&db, "rebuild --yes --max-events 40 --jobs 2")
        .await
        .ok()
        .stderr_has("a run with --max-events cannot use them");
    db.assert_int("SELECT count(*) FROM reproject.lanes WHERE run_id = 3", 0)
        .await;
    db.drop().await;
}

/// Per-event handlers in two lanes at once: each lane in batches of its own events, with its
/// own cursor; the seed function's rows, every event once.
#[tokio::test(flavor = "multi_thread")]
async fn w1_per_event_handlers_in_two_lanes_equal_the_seed_reference() {
    let db = TestDb::new().await;
    w1(&db, "400").await;
    let config = example("postings/reproject.toml");
    reproject(&db, &config, &["rebuild", "--dry-run"])
        .await
        .ok()
        .stdout_has("in batches (with --jobs N: in N stream lanes at once");
    reproject(
        &db,
        &config,
        &["rebuild", "--yes", "--jobs", "2", "--batch-size", "250"],
    )
    .await
    .ok()
    .stdout_has("run 1: swapped. 5996 events applied")
    .stderr_has("replaying in 2 stream lane(s), 2 at a time");
    assert_eq!(w1_mismatches(&db).await, "0");
    db.assert_int(REPLAYABLE, 5996).await;
    // Each lane counted its own events; together, the plan's.
    db.assert_int(
        "SELECT sum(events)::bigint FROM reproject.lanes WHERE run_id = 1 AND done_at IS NOT NULL",
        5996,
    )
    .await;
    db.assert_int(
        "SELECT min(plan_events) FROM reproject.lanes WHERE run_id = 1",
        5996,
    )
    .await;
    // Without --jobs, one lane is no split: the replay of before.
    reproject(&db, &config, &["rebuild", "--yes"])
        .await
        .ok()
        .stdout_has("run 2: swapped. 5996 events applied");
    db.assert_int("SELECT count(*) FROM reproject.lanes WHERE run_id = 2", 0)
        .await;
    assert_eq!(w1_mismatches(&db).await, "0");
    db.drop().await;
}

/// A per-event lane that fails on an event names it and keeps its batches before it and the
/// other lane's work; `--resume` continues each lane from its own cursor.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_per_event_lane_names_the_event_and_resumes_from_its_cursor() {
    let db = TestDb::new().await;
    w1(&db, "400").await;
    let config = example("postings/reproject.toml");
    // A late event (the 10th step) of a posting in lane 2 of 2.
    let (posting, position) = {
        let posting = db
            .int(
                "SELECT min(aggregate_id::int)::bigint FROM execution_events \
                  WHERE mod(hashtext(aggregate_id::text COLLATE \"C\")::bigint + 2147483648, 2) = 1",
            )
            .await;
        let position = db
            .int(&format!(
                "SELECT event_id FROM execution_events WHERE aggregate_id = '{posting}' AND aggregate_version = 10"
            ))
            .await;
        (posting, position)
    };
    db.exec(&format!(
        "UPDATE execution_events SET event_data = event_data || '{{\"next_execution_order\": \"oops\"}}' WHERE event_id = {position}"
    ))
    .await;
    reproject(
        &db,
        &config,
        &["rebuild", "--yes", "--jobs", "2", "--batch-size", "100"],
    )
    .await
    .code(1)
    .stderr_has(&format!("position {position}"))
    .stderr_has("invalid input syntax for type integer");
    let failing_lane_position = db
        .int("SELECT coalesce(position, 0) FROM reproject.lanes WHERE run_id = 1 AND lane = 1")
        .await;
    assert!(
        failing_lane_position < position,
        "the failing lane stopped before the event ({failing_lane_position})"
    );
    assert!(
        failing_lane_position > 0,
        "the failing lane's batches before the event are kept"
    );
    // `status` sees the lanes' progress although the checkpoint waits for the whole plan.
    let counted = db
        .int("SELECT sum(events)::bigint FROM reproject.lanes WHERE run_id = 1")
        .await;
    assert!(counted > 0);
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        counted,
    )
    .await;
    db.exec(&format!(
        "UPDATE execution_events SET event_data = event_data || '{{\"next_execution_order\": 11}}' WHERE event_id = {position}"
    ))
    .await;
    reproject(
        &db,
        &config,
        &[
            "rebuild",
            "--yes",
            "--resume",
            "--jobs",
            "2",
            "--batch-size",
            "100",
        ],
    )
    .await
    .ok()
    .stdout_has("run 1: swapped");
    assert_eq!(w1_mismatches(&db).await, "0", "posting {posting}");
    assert_eq!(
        db.int("SELECT events_applied FROM reproject.runs WHERE id = 1")
            .await,
        db.int(REPLAYABLE).await,
        "every event once"
    );
    db.drop().await;
}

/// The tally projection, declared stream-scoped, with a handler slow enough to be caught
/// between batches.
fn slow_declared_tally() -> Project {
    tally::with_stream_key()
        .file("tally.sql", &tally::slow_handlers("0.001"))
        .write()
}

/// Waits until the lanes of run 1 applied at least `n` events.
async fn wait_for_lane_events(db: &TestDb, n: i64) {
    wait_until(
        db,
        &format!(
            "SELECT coalesce((SELECT sum(events) FROM reproject.lanes WHERE run_id = 1), 0) >= {n}"
        ),
    )
    .await;
}

/// Every reproject session terminated while two per-event lanes run (a restart, a failover):
/// the rebuild resumes by itself, the lanes continue from their cursors, every event once.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_connection_during_lanes_resumes_by_itself() {
    let db = tally::db(3000).await;
    db.exec("UPDATE tally SET total = 0").await;
    let p = slow_declared_tally();
    let child = p.spawn(&db, "rebuild --yes --jobs 2 --batch-size 100 --json");
    wait_for_lane_events(&db, 300).await;
    let terminated = db.terminate_reproject_sessions().await;
    assert!(
        terminated >= 3,
        "the run's, the lanes' and the lock sessions: {terminated}"
    );
    let out = child.output().await;
    out.code(0);
    let stderr = &out.stderr;
    out.stderr_has("lost the connection to PostgreSQL");
    assert!(
        stderr.contains("left of plan 1"),
        "the same plan continued: {stderr}"
    );
    tally::assert_run_applied_each_event_once(&db, 3000).await;
    db.drop().await;
}

/// `reproject cancel` while lanes run: they stop after their current batch (exit 130, the
/// checkpoint still before the plan), and `--resume` finishes the same plan.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_lanes_stops_them_and_resume_finishes_the_plan() {
    let db = tally::db(3000).await;
    db.exec("UPDATE tally SET total = 0").await;
    let p = slow_declared_tally();
    let child = p.spawn(&db, "rebuild --yes --jobs 2 --batch-size 100");
    wait_for_lane_events(&db, 200).await;
    p.reproject(&db, "cancel").await.ok();
    let out = child.output().await;
    out.code(130);
    out.stderr_has("stream lane(s) not done");
    let applied = db
        .int("SELECT sum(events)::bigint FROM reproject.lanes WHERE run_id = 1")
        .await;
    assert!(applied > 0 && applied < 3000, "{applied}");
    db.assert_int(
        "SELECT count(*) FROM reproject.checkpoints WHERE run_id = 1 AND position IS NULL",
        1,
    )
    .await;
    p.reproject(&db, "rebuild --yes --resume --jobs 2")
        .await
        .ok()
        .stdout_has(&format!(
            "run 1: swapped. {} events applied",
            3000 - applied
        ));
    tally::assert_run_applied_each_event_once(&db, 3000).await;
    db.drop().await;
}
