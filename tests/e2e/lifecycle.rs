//! Rebuild, swap, rollback, cleanup and the states in between.

use crate::config::Projection;
use crate::harness::TestDb;
use crate::tally;

/// Swap keeps the old table, rollback puts it back and keeps the replaced one, cleanup lists
/// and then drops only reproject's helper tables.
#[tokio::test(flavor = "multi_thread")]
async fn swap_rollback_and_cleanup() {
    let db = tally::db(500).await;
    // Corrupt the live table so the rebuild visibly repairs it.
    db.exec("UPDATE tally SET total = 0 WHERE stream = 's1'")
        .await;
    let original = db.oid("tally").await;
    let p = tally::project();

    p.reproject(&db, "rebuild --yes").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(
        db.oid("tally_old").await,
        original,
        "the old live table is kept as tally_old"
    );
    assert!(!db.exists("tally_rebuild").await);

    let out = p.reproject(&db, "rollback --yes").await;
    out.ok().stdout_has("tally_rolled_back_1");
    assert_eq!(
        db.oid("tally").await,
        original,
        "rollback restores the very same table"
    );
    db.assert_int("SELECT total FROM tally WHERE stream = 's1'", 0)
        .await;
    assert!(db.exists("tally_rolled_back_1").await);
    assert_eq!(
        tally::expected_differences(&db, "tally_rolled_back_1").await,
        0
    );
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["state"], "rolled back");

    // A second rollback has nothing to roll back to.
    p.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("nothing to roll back");

    // A user table that merely looks like a helper is never listed or dropped.
    db.exec("CREATE TABLE tally_old_notes (x int)").await;
    let listed = p.reproject(&db, "cleanup").await;
    listed.ok().stdout_has("would drop `tally_rolled_back_1`");
    assert!(
        db.exists("tally_rolled_back_1").await,
        "cleanup without --yes drops nothing"
    );
    p.reproject(&db, "cleanup --yes")
        .await
        .ok()
        .stdout_has("dropped `tally_rolled_back_1`");
    assert!(!db.exists("tally_rolled_back_1").await);
    assert!(db.exists("tally_old_notes").await);
    db.assert_int("SELECT count(*) FROM reproject.helper_tables", 0)
        .await;
    p.reproject(&db, "cleanup --yes")
        .await
        .ok()
        .stdout_has("nothing to clean up");
    db.drop().await;
}

/// Rebuilding twice: the second swap drops the first swap's `_old` table first, and the live
/// table keeps working through both.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_rebuilds_replace_the_old_table() {
    let (db, p) = tally::fixture(300).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    let first_generation = db.oid("tally").await;
    tally::append(&db, 50).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    assert_eq!(db.oid("tally_old").await, first_generation);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    // Only one old table exists, registered as reproject's.
    db.assert_int(
        "SELECT count(*) FROM reproject.helper_tables WHERE kind = 'old'",
        1,
    )
    .await;
    db.drop().await;
}

/// `--no-swap` leaves a checked rebuild waiting; events that arrive meanwhile are caught up by
/// `swap`, which then swaps.
#[tokio::test(flavor = "multi_thread")]
async fn no_swap_then_swap_catches_up() {
    let (db, p) = tally::fixture(400).await;
    let original = db.oid("tally").await;
    p.reproject(&db, "rebuild --no-swap")
        .await
        .ok()
        .stdout_has("not swapped");
    assert_eq!(
        db.oid("tally").await,
        original,
        "--no-swap leaves the live table alone"
    );
    assert!(db.exists("tally_rebuild").await);
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["state"], "awaiting swap");

    tally::append(&db, 123).await;
    // Without a terminal and without --yes, swap refuses rather than waiting for an answer.
    p.reproject(&db, "swap").await.code(2).stderr_has("--yes");
    let out = p.reproject(&db, "swap --yes --json").await;
    let outcome = out.ok().json();
    assert_eq!(outcome["status"], "swapped");
    assert_eq!(
        outcome["events_applied"], 123,
        "swap applies only the events that arrived since"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(outcome["swap_position"], 523);
    db.drop().await;
}

/// `--max-events` stops early and leaves a paused run; `swap` finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn max_events_pauses_and_swap_finishes() {
    let (db, p) = tally::fixture(1000).await;
    let out = p
        .reproject(&db, "rebuild --yes --max-events 250 --batch-size 100")
        .await;
    out.ok().stdout_has("stopped after 250 events");
    db.assert_int("SELECT position FROM reproject.checkpoints", 250)
        .await;
    db.assert_int(
        "SELECT count(*) FROM reproject.runs WHERE status = 'paused'",
        1,
    )
    .await;
    db.assert_int("SELECT sum(n)::bigint FROM tally_rebuild", 250)
        .await;
    let outcome = p.reproject(&db, "swap --yes --json").await.ok().json();
    assert_eq!(outcome["events_applied"], 750);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A leftover rebuild table of reproject's own is replaced by the next rebuild, and the run
/// that made it is marked superseded.
#[tokio::test(flavor = "multi_thread")]
async fn leftover_rebuild_table_is_replaced() {
    let (db, p) = tally::fixture(200).await;
    p.reproject(&db, "rebuild --no-swap").await.ok();
    let leftover = db.oid("tally_rebuild").await;
    p.reproject(&db, "rebuild --yes")
        .await
        .ok()
        .stderr_has("superseded by run 2");
    assert_ne!(db.oid("tally_old").await, leftover);
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("superseded"),
    )
    .await;
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 2",
        Some("swapped"),
    )
    .await;
    db.drop().await;
}

/// A table named like a helper that reproject did not create is the user's: refused, untouched.
#[tokio::test(flavor = "multi_thread")]
async fn user_owned_helper_names_are_refused() {
    let db = tally::db(100).await;
    db.exec("CREATE TABLE tally_rebuild (keep text); INSERT INTO tally_rebuild VALUES ('mine')")
        .await;
    let p = tally::project();
    p.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("`tally_rebuild` exists and was not created by reproject");
    db.assert_text("SELECT keep FROM tally_rebuild", Some("mine"))
        .await;

    db.exec("DROP TABLE tally_rebuild; CREATE TABLE tally_old (keep text)")
        .await;
    p.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("`tally_old` exists and was not created by reproject");
    assert!(db.exists("tally_old").await);
    assert!(
        !db.exists("reproject.runs").await,
        "refused before anything was written, the state schema included"
    );
    db.drop().await;
}

/// Names are never silently truncated: a 60-character table name gets hashed helper names of
/// at most 63 bytes, and swap, rollback and cleanup work with them.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_character_table_names_work() {
    let db = tally::db(100).await;
    let long = format!("tally_{}", "x".repeat(54));
    assert_eq!(long.len(), 60);
    db.exec(&format!("ALTER TABLE tally RENAME TO {long}"))
        .await;
    let p = tally::with(Projection::new("tally").tables(&[&long]))
        .file(
            "tally.sql",
            &tally::HANDLERS.replace("{{tally}}", &format!("{{{{{long}}}}}")),
        )
        .write();
    p.reproject(&db, "rebuild --yes").await.ok();
    let helpers: Vec<String> = db
        .client()
        .await
        .query("SELECT table_name FROM reproject.helper_tables", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(helpers.len(), 1);
    assert!(
        helpers[0].len() <= 63 && helpers[0].ends_with("_old"),
        "{helpers:?}"
    );
    assert_eq!(tally::expected_differences(&db, &long).await, 0);
    p.reproject(&db, "rollback --yes").await.ok();
    p.reproject(&db, "cleanup --yes").await.ok();
    db.assert_int(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        2,
    )
    .await;
    db.drop().await;
}

/// One active run per projection: while another session holds the projection's lock, a
/// rebuild exits 75 and names the holder.
#[tokio::test(flavor = "multi_thread")]
async fn second_run_of_the_same_projection_is_busy() {
    let (db, p) = tally::fixture(100).await;
    let holder = db.client().await;
    holder
        .batch_execute("SET application_name = 'other-reproject'; SELECT pg_advisory_lock(727002, hashtext('reproject:tally'))")
        .await
        .unwrap();
    p.reproject(&db, "rebuild --yes")
        .await
        .code(75)
        .stderr_has("projection `tally` is busy")
        .stderr_has("other-reproject");
    drop(holder);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    db.drop().await;
}

/// The busy message names the holder in this database, not a run of the same projection
/// name in another database on the server (advisory locks are per database; pg_locks is not).
#[tokio::test(flavor = "multi_thread")]
async fn busy_names_the_holder_in_its_own_database() {
    let mut others = Vec::new();
    for i in 0..5 {
        let other = TestDb::new().await;
        let holder = other.client().await;
        holder
            .batch_execute(&format!("SET application_name = 'elsewhere-{i}'; SELECT pg_advisory_lock(727002, hashtext('reproject:tally'))"))
            .await
            .unwrap();
        others.push((other, holder));
    }
    let db = tally::db(10).await;
    let holder = db.client().await;
    holder
        .batch_execute("SET application_name = 'right-here'; SELECT pg_advisory_lock(727002, hashtext('reproject:tally'))")
        .await
        .unwrap();
    let out = tally::project().reproject(&db, "rebuild --yes").await;
    out.code(75).stderr_has("application `right-here`");
    drop(holder);
    db.drop().await;
    for (other, holder) in others {
        drop(holder);
        other.drop().await;
    }
}

/// A session holding a lock on the live table: the swap retries within its budget, then exits
/// 75 leaving a complete rebuild awaiting its swap; once the lock is gone, `swap` succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn swap_gives_up_on_a_held_lock_and_swaps_later() {
    let (db, p) = tally::fixture(200).await;
    // A first swap, so there is a rollback point (`tally_old`) that a failed swap must keep.
    p.reproject(&db, "rebuild --yes").await.ok();
    let rollback_point = db.oid("tally_old").await;
    let blocker = db.client().await;
    blocker
        .batch_execute("SET application_name = 'long-report'; BEGIN; SELECT count(*) FROM tally")
        .await
        .unwrap();
    let out = p
        .reproject(&db, "rebuild --yes --lock-timeout 50ms --lock-budget 1s")
        .await;
    out.code(75)
        .stderr_has("could not lock")
        .stderr_has("long-report");
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 2",
        Some("awaiting_swap"),
    )
    .await;
    assert!(db.exists("tally_rebuild").await);
    assert_eq!(
        db.oid("tally_old").await,
        rollback_point,
        "the failed swap kept the rollback point"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    let live_before = db.oid("tally").await;
    p.reproject(&db, "swap --yes")
        .await
        .ok()
        .stdout_has("swapped");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(db.oid("tally_old").await, live_before);
    assert_eq!(
        db.oid("tally_retired_1").await,
        0,
        "the retired table is dropped after the commit"
    );
    db.assert_int("SELECT count(*) FROM reproject.helper_tables", 1)
        .await;
    db.drop().await;
}

/// SIGINT stops after the current batch: exit 130, the run recorded as cancelled, the
/// checkpoint at the last committed batch, and the rebuild table holding exactly those events.
#[tokio::test(flavor = "multi_thread")]
async fn sigint_cancels_after_the_current_batch() {
    let db = tally::db(3000).await;
    // Slow handlers so there is time to interrupt.
    let p = tally::slow("0.001");
    let child = p.spawn(&db, "rebuild --yes --batch-size 100");
    let pid = child.id().unwrap();
    // Wait until at least one batch is committed.
    crate::harness::wait_for_checkpoint(&db, 1).await;
    std::process::Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let out = child.output().await;
    out.code(130);
    out.stderr_has("cancelled after");
    db.assert_text("SELECT status FROM reproject.runs", Some("cancelled"))
        .await;
    let checkpoint = db.int("SELECT position FROM reproject.checkpoints").await;
    assert!(
        checkpoint > 0 && checkpoint < 3000 && checkpoint % 100 == 0,
        "checkpoint {checkpoint}"
    );
    db.assert_int_because(
        "SELECT sum(n)::bigint FROM tally_rebuild",
        checkpoint,
        "exactly the committed batches",
    )
    .await;
    db.assert_int("SELECT events_applied FROM reproject.runs", checkpoint)
        .await;
    assert!(!db.exists("tally_old").await, "nothing was swapped");
    db.drop().await;
}

/// Ctrl-C while the swap waits for its locks stops waiting (exit 130); nothing is swapped and
/// the complete rebuild stays swappable.
#[tokio::test(flavor = "multi_thread")]
async fn sigint_while_waiting_for_locks_stops_waiting() {
    let (db, p) = tally::fixture(100).await;
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM tally")
        .await
        .unwrap();
    let child = p.spawn(&db, "rebuild --yes --lock-budget 60s");
    let pid = child.id().unwrap();
    crate::harness::wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM reproject.runs WHERE phase = 'swap')",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    std::process::Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let out = child.output().await;
    out.code(130);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "it stopped waiting"
    );
    out.stderr_has("cancelled while waiting to lock");
    db.assert_text("SELECT status FROM reproject.runs", Some("awaiting_swap"))
        .await;
    assert!(!db.exists("tally_old").await);
    blocker.batch_execute("COMMIT").await.unwrap();
    p.reproject(&db, "swap --yes").await.ok();
    db.drop().await;
}

/// SIGKILL during the replay, then `rebuild --resume`: the same run continues from its last
/// committed batch and ends with exactly the tables of an uninterrupted run.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_then_resume_gives_the_uninterrupted_result() {
    let db = tally::db(3000).await;
    db.exec("UPDATE tally SET total = 0").await;
    let slow = tally::slow("0.001");
    let mut child = slow.spawn(&db, "rebuild --yes --batch-size 100");
    crate::harness::wait_for_checkpoint(&db, 300).await;
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let killed_at = db.int("SELECT position FROM reproject.checkpoints").await;
    assert!((300..3000).contains(&killed_at), "killed at {killed_at}");
    db.assert_int("SELECT sum(n)::bigint FROM tally_rebuild", killed_at)
        .await;
    let status = slow.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["state"], "interrupted");

    // More events arrive meanwhile; the resumed run takes them too.
    tally::append(&db, 77).await;
    // Resuming with other handlers would mix two versions: refused.
    let p = tally::project();
    p.reproject(&db, "rebuild --yes --resume")
        .await
        .code(2)
        .stderr_has("the handlers of projection `tally` changed since run 1");
    let p = slow;
    let out = p.reproject(&db, "rebuild --yes --resume --json").await;
    let outcome = out.ok().stderr_has("resuming run 1").json();
    assert_eq!(outcome["run_id"], 1, "the same run continues");
    assert_eq!(outcome["events_applied"], 3077 - killed_at);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        3077,
    )
    .await;
    db.assert_int("SELECT count(*) FROM reproject.runs", 1)
        .await;

    // Nothing left to resume now.
    p.reproject(&db, "rebuild --yes --resume")
        .await
        .code(2)
        .stderr_has("nothing to resume");
    db.drop().await;
}

/// A lost connection in the middle of the replay (here every reproject session is terminated,
/// as in a restart or failover) does not end the rebuild: it resumes from its last committed
/// batch by itself, and the result is that of an uninterrupted run, every event once.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_connection_resumes_by_itself() {
    let db = tally::db(3000).await;
    db.exec("UPDATE tally SET total = 0").await;
    let slow = tally::slow("0.001");
    let child = slow.spawn(&db, "rebuild --yes --batch-size 100 --json");
    crate::harness::wait_for_checkpoint(&db, 300).await;
    let terminated = db.terminate_reproject_sessions().await;
    assert!(
        terminated >= 2,
        "the replay and the lock sessions: {terminated}"
    );
    let out = child.output().await;
    out.code(0);
    let stderr = &out.stderr;
    assert!(
        stderr.contains("lost the connection to PostgreSQL") && stderr.contains("resuming run 1"),
        "{stderr}"
    );
    let outcome = out.json();
    assert_eq!(outcome["status"], "swapped");
    assert_eq!(outcome["run_id"], 1, "the same run continues");
    tally::assert_run_applied_each_event_once(&db, 3000).await;
    db.assert_int("SELECT count(*) FROM reproject.runs", 1)
        .await;
    // The run records the lost connection it resumed after, and `history` shows it.
    assert_eq!(
        db.int(
            "SELECT count(*) FROM reproject.runs, jsonb_array_elements(faults) f \
             WHERE f->>'kind' = 'reconnect'"
        )
        .await,
        1
    );
    slow.reproject(&db, "history")
        .await
        .ok()
        .stdout_has("survived reconnect: lost the connection")
        .stdout_has("resumed from the last committed batch (attempt 1 of 5)");
    db.drop().await;
}

/// `reproject cancel` from another terminal stops a running rebuild after its current batch:
/// exit 130, recorded as cancelled with who asked, and resumable.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_from_another_terminal() {
    let db = tally::db(3000).await;
    let slow = tally::slow("0.001");
    slow.reproject(&db, "cancel")
        .await
        .code(2)
        .stderr_has("nothing to cancel");
    let child = slow.spawn(&db, "rebuild --yes --batch-size 100");
    crate::harness::wait_for_checkpoint(&db, 1).await;
    // While it runs, `status` shows the phase, speed and ETA.
    let s = slow.reproject(&db, "status --json").await.ok().json();
    let t = &s["projections"][0];
    assert_eq!(t["state"], "rebuilding");
    assert_eq!(t["phase"], "replay");
    assert!(t["events_applied"].as_i64().unwrap() > 0, "{t}");
    assert!(t["events_per_second"].as_f64().unwrap() > 0.0, "{t}");
    assert!(t["eta_seconds"].as_f64().is_some(), "{t}");
    slow.reproject(&db, "cancel --initiated-by oncall-bob")
        .await
        .ok()
        .stdout_has("run 1: cancellation requested");
    let out = child.output().await;
    out.code(130);
    out.stderr_has("cancellation requested by oncall-bob");
    db.assert_text("SELECT status FROM reproject.runs", Some("cancelled"))
        .await;
    let at = db.int("SELECT position FROM reproject.checkpoints").await;
    assert!(
        at < 3000 && at % 100 == 0,
        "stopped after a whole batch: {at}"
    );
    slow.reproject(&db, "rebuild --yes --resume").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// Maintenance windows: `swap` refuses outside its window (exit 75) and swaps inside it; a
/// rebuild with `--swap-at` in the future waits for it, catching up, and one in the past swaps
/// at once.
#[tokio::test(flavor = "multi_thread")]
async fn swap_windows_are_honoured() {
    use chrono::{Duration, Local};
    let (db, p) = tally::fixture(200).await;
    let now = Local::now();
    let hhmm = |d: Duration| (now + d).format("%H:%M").to_string();

    p.reproject(&db, "rebuild --no-swap").await.ok();
    let outside = format!("{}-{}", hhmm(Duration::hours(2)), hhmm(Duration::hours(3)));
    p.reproject(&db, &["swap", "--yes", "--swap-window", &outside])
        .await
        .code(75)
        .stderr_has("outside the swap window");
    assert!(!db.exists("tally_old").await);
    db.assert_text("SELECT status FROM reproject.runs", Some("awaiting_swap"))
        .await;
    let inside = format!("{}-{}", hhmm(Duration::hours(-1)), hhmm(Duration::hours(1)));
    p.reproject(&db, &["swap", "--yes", "--swap-window", &inside])
        .await
        .ok()
        .stdout_has("swapped");

    // A moment three seconds ahead: the rebuild waits for it, and takes what arrives meanwhile.
    let at = (Local::now() + Duration::seconds(3)).to_rfc3339();
    let started = std::time::Instant::now();
    let child = p.spawn(&db, &["rebuild", "--yes", "--swap-at", &at]);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    tally::append(&db, 25).await;
    let out = child.output().await;
    out.code(0);
    out.stderr_has("waiting for the swap window");
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);

    // A moment in the past: swap now.
    let past = (Local::now() - Duration::hours(1)).to_rfc3339();
    let out = p
        .reproject(&db, &["rebuild", "--yes", "--swap-at", &past])
        .await;
    out.ok().stdout_has("swapped");
    assert!(!out.stderr.contains("waiting for the swap window"));
    p.reproject(&db, "rebuild --yes --swap-window 25:00-26:00")
        .await
        .code(2)
        .stderr_has("--swap-window");
    db.drop().await;
}
