//! Fencing: a process that lost its guard (the advisory lock session and its claim row) writes
//! nothing more; a second process can take the run over; a swap that committed is reported as
//! committed; and, under terminated sessions at random moments, the live table is always the
//! truth at its recorded position.

use crate::harness::{wait_for_checkpoint, wait_until, TestDb};
use crate::tally;

/// Terminates the server session that holds the rebuild guard (its advisory lock); returns
/// how many were terminated.
async fn terminate_guard(db: &TestDb) -> i64 {
    db.int(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid = 727002 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
}

async fn checkpoint(db: &TestDb) -> i64 {
    db.int("SELECT coalesce(max(position), 0) FROM reproject.checkpoints")
        .await
}

/// What `table` must hold for the events up to `position` (an SQL expression, read in the same
/// statement, so in the same snapshot as the table): rows that differ.
async fn differences_at(db: &TestDb, table: &str, position: &str) -> i64 {
    db.int(&format!(
        "WITH want AS (SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS total \
                       FROM events WHERE NOT bad AND id <= {position} GROUP BY stream) \
         SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT stream, n, total FROM {table}) a) \
              + (SELECT count(*) FROM (SELECT stream, n, total FROM {table} EXCEPT SELECT * FROM want) b)"
    ))
    .await
}

/// Losing the guard session mid-replay stops the process before its next batch commits (at
/// most the batch that had already proven the guard commits), with a message naming the
/// projection and the next command; a second process then takes the run over and finishes it
/// with every event applied once.
#[tokio::test(flavor = "multi_thread")]
async fn losing_the_guard_stops_the_replay() {
    let db = tally::db(3000).await;
    let p = tally::slow("0.002");
    let child = p.spawn(&db, "rebuild --yes --batch-size 100");
    wait_for_checkpoint(&db, 300).await;
    assert_eq!(terminate_guard(&db).await, 1, "the guard session");
    let at_termination = checkpoint(&db).await;
    let out = child.output().await;
    out.code(1);
    let stderr = &out.stderr;
    assert!(
        stderr.contains("lost the guard of projection `tally`")
            && stderr.contains("nothing was written after that")
            && stderr.contains("reproject rebuild --resume")
            && stderr.contains("reproject status"),
        "{stderr}"
    );
    let stopped_at = checkpoint(&db).await;
    assert!(
        stopped_at <= at_termination + 100,
        "at most the batch in flight commits after the guard went: {at_termination} -> {stopped_at}"
    );
    assert!(stopped_at < 3000, "it did not replay on");
    // Nobody took the guard over: the process took it again (through the claim) to record
    // its failure, as a resume would.
    assert_eq!(
        db.text("SELECT status || ': ' || error FROM reproject.runs WHERE id = 1")
            .await
            .as_deref()
            .map(|s| s.starts_with("failed: lost the guard of projection `tally`")),
        Some(true)
    );
    p.reproject(&db, "rebuild --yes --resume").await.ok();
    tally::assert_run_applied_each_event_once(&db, 3000).await;
    db.drop().await;
}

/// `rebuild --resume` while the run's process still replays is refused (75), naming the
/// holder's process and since when; the first process is not disturbed.
#[tokio::test(flavor = "multi_thread")]
async fn resume_of_a_running_run_is_refused() {
    let db = tally::db(2000).await;
    let p = tally::slow("0.001");
    let child = p.spawn(&db, "rebuild --yes --batch-size 100");
    let pid = child.id().unwrap();
    wait_for_checkpoint(&db, 200).await;
    p.reproject(&db, "rebuild --yes --resume")
        .await
        .code(75)
        .stderr_has("projection `tally` is busy")
        .stderr_has(&format!("claimed by reproject process {pid} on "))
        .stderr_has(" since ");
    let out = child.output().await;
    out.code(0);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        2000,
    )
    .await;
    db.drop().await;
}

/// A process that lost its guard while another went on with the run cannot change the run's
/// status: the run stays the new holder's (running, then swapped), never `failed`.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_process_cannot_change_the_run() {
    let db = tally::db(800).await;
    // Batches of about two seconds: the stale process is mid-batch when the other takes over.
    let p = tally::slow("0.01");
    let stale = p.spawn(&db, "rebuild --yes --batch-size 200");
    wait_for_checkpoint(&db, 200).await;
    assert_eq!(terminate_guard(&db).await, 1);
    let taker = p.spawn(&db, "rebuild --yes --resume");
    let out = stale.output().await;
    out.code(1);
    out.stderr_has("lost the guard");
    let status = db
        .text("SELECT status FROM reproject.runs WHERE id = 1")
        .await
        .unwrap();
    assert!(
        status == "running" || status == "swapped",
        "the stale process set the run to {status}"
    );
    let out = taker.output().await;
    out.code(0);
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("swapped"),
    )
    .await;
    tally::assert_run_applied_each_event_once(&db, 800).await;
    db.drop().await;
}

/// Sessions terminated right after the swap committed (while it waits for its commit to reach
/// the disk): the swap is reported as done, exit 0, with a warning.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_that_committed_is_reported_committed() {
    let db = tally::db(500).await;
    db.exec("UPDATE tally SET total = 0").await;
    let p = tally::project();
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    // The first write to the run after the swap commit (confirm_durable's) waits 3 s.
    db.exec(
        "CREATE FUNCTION test_sleep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;
         CREATE TRIGGER test_sleep AFTER UPDATE ON reproject.runs FOR EACH ROW \
           WHEN (OLD.status = 'swapped' AND NEW.status = 'swapped') EXECUTE FUNCTION test_sleep();",
    )
    .await;
    let child = p.spawn(&db, "swap --yes --json");
    wait_until(
        &db,
        "SELECT status = 'swapped' FROM reproject.runs WHERE id = 1",
    )
    .await;
    wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
           AND application_name = 'reproject' AND query LIKE '%lock_hold_ms = coalesce%' AND state = 'active')",
    )
    .await;
    assert!(db.terminate_reproject_sessions().await >= 1);
    let out = child.output().await;
    out.code(0);
    out.stderr_has("the swap committed, but its durability could not be confirmed");
    let outcome = out.json();
    assert_eq!(outcome["status"], "swapped");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A small deterministic generator (xorshift), so that a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Fault injection, bounded: while `reproject run` keeps the projection live and events are
/// appended, rounds of a rebuild (or a resume of the unfinished run) whose sessions (all of
/// reproject's, the runner's included, or only the rebuild's guard, then taken over at once by
/// a second process) are terminated at a random moment. After every round the live table is
/// the truth at its live checkpoint, and every failure names the next command; finally, runs
/// until done and the runner leave the live table equal to the truth.
#[tokio::test(flavor = "multi_thread")]
async fn terminated_sessions_never_leave_a_wrong_table() {
    const ROUNDS: usize = 6;
    let seed = std::env::var("FENCING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let mut rng = Rng(seed);
    let db = tally::db(1500).await;
    let p = tally::slow("0.0005");
    let runner = crate::live::start_runner(&db, &p, "run --from-position head --json").await;
    let live_position =
        "(SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally')";
    let unfinished = "SELECT count(*) FROM reproject.runs WHERE status NOT IN ('swapped', 'rolled_back', 'superseded')";
    for round in 0..ROUNDS {
        let resume = db.exists("reproject.runs").await && db.int(unfinished).await > 0;
        let mut args = vec!["rebuild", "--yes", "--batch-size", "100"];
        if resume {
            args.push("--resume");
        }
        let child = p.spawn(&db, &args);
        let delay = 100 + rng.below(2500);
        let guard_only = rng.below(3) == 0;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        // With only the guard gone, a second process takes the run over at once, as an
        // operator or a cron job would: the two must never both write.
        let taker = if guard_only {
            terminate_guard(&db).await;
            Some(p.spawn(&db, "rebuild --yes --resume --batch-size 100"))
        } else {
            db.terminate_reproject_sessions().await;
            None
        };
        tally::append(&db, 50).await;
        let limit = std::time::Duration::from_secs(120);
        let mut outs = vec![tokio::time::timeout(limit, child.wait_with_output())
            .await
            .expect("a round ends")
            .unwrap()];
        if let Some(taker) = taker {
            outs.push(
                tokio::time::timeout(limit, taker.wait_with_output())
                    .await
                    .expect("a round ends")
                    .unwrap(),
            );
        }
        // The first process may have swapped before its guard was terminated: the process
        // taking over then rightly finds nothing to resume (exit 2).
        let first_swapped = outs[0].status.code() == Some(0);
        for (k, out) in outs.into_iter().enumerate() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            let what = format!(
                "round {round} (seed {seed}, {delay} ms, {}{}): exit {code:?}: {stderr}",
                if guard_only { "guard" } else { "all sessions" },
                match (k, resume) {
                    (1, _) => ", the process taking over",
                    (_, true) => ", --resume",
                    _ => "",
                }
            );
            eprintln!("{}", what.lines().next().unwrap_or_default());
            // The process taking over may find the guard held again for a moment: the one
            // that lost it takes it back to record its failure when nobody else has it.
            let nothing_left =
                k == 1 && first_swapped && code == Some(2) && stderr.contains("nothing to resume");
            assert!(
                matches!(code, Some(0 | 1)) || (k == 1 && code == Some(75)) || nothing_left,
                "{what}"
            );
            if code != Some(0) && !nothing_left {
                assert!(
                    stderr.contains("reproject rebuild --resume")
                        || stderr.contains("reproject status"),
                    "a failure names the next command: {what}"
                );
            }
        }
        assert_eq!(
            differences_at(&db, "tally", live_position).await,
            0,
            "the live table is the truth at its live checkpoint (round {round}, seed {seed})"
        );
        tally::append(&db, 150).await;
    }
    // Until done: a resume of the unfinished run, or a new run.
    for _ in 0..4 {
        let mut args = vec!["rebuild", "--yes"];
        if db.int(unfinished).await > 0 {
            args.push("--resume");
        }
        if p.reproject(&db, &args).await.code == 0 {
            break;
        }
    }
    crate::live::wait_for(&db, crate::live::CAUGHT_UP, 60).await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    runner.stop().await.ok();
    db.drop().await;
}

/// The live runner proves its guard in every batch: when its lock session is terminated (only
/// that one), it stops writing, takes its locks again through the claim and goes on, exactly
/// once, while a rebuild of the same projection swaps beside it.
#[tokio::test(flavor = "multi_thread")]
async fn the_runner_takes_its_guard_again() {
    use crate::live::{wait_for, CAUGHT_UP};
    let (db, p) = tally::fixture(200).await;
    let runner = crate::live::start_runner(&db, &p, "run --from-position head --json").await;
    for round in 0..3 {
        tally::append(&db, 100).await;
        let ended = db
            .int(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND classid = 727003 \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await;
        assert_eq!(ended, 1, "the runner's guard session, round {round}");
        tally::append(&db, 100).await;
        if round == 1 {
            p.reproject(&db, "rebuild --yes").await.ok();
        }
        wait_for(&db, CAUGHT_UP, 30).await;
        assert_eq!(
            tally::expected_differences(&db, "tally").await,
            0,
            "round {round}"
        );
    }
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["runner"]["up"], true);
    runner.stop().await.ok();
    db.drop().await;
}

/// Sessions terminated while the swap's COMMIT is being processed: the swap did not commit,
/// and the error says so (the run's status is read back on a new connection) and names the
/// command that finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_lost_at_its_commit_says_whether_it_committed() {
    let db = tally::db(300).await;
    db.exec("UPDATE tally SET total = 0").await;
    let p = tally::project();
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    // The swap's commit runs this deferred trigger: 3 s in which its session is terminated.
    db.exec(
        "CREATE FUNCTION test_sleep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER test_sleep AFTER UPDATE ON reproject.runs DEFERRABLE INITIALLY DEFERRED \
           FOR EACH ROW WHEN (NEW.status = 'swapped' AND OLD.status <> 'swapped') EXECUTE FUNCTION test_sleep();",
    )
    .await;
    let child = p.spawn(&db, "swap --yes");
    wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
           AND application_name = 'reproject' AND query = 'COMMIT' AND wait_event = 'PgSleep')",
    )
    .await;
    assert!(db.terminate_reproject_sessions().await >= 1);
    let out = child.output().await;
    out.code(1);
    let stderr = &out.stderr;
    assert!(
        stderr.contains("the connection was lost before the swap committed; nothing was swapped")
            && stderr.contains("`reproject swap`"),
        "{stderr}"
    );
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("awaiting_swap"),
    )
    .await;
    assert!(!db.exists("tally_old").await, "nothing was swapped");
    db.exec("DROP TRIGGER test_sleep ON reproject.runs").await;
    p.reproject(&db, "swap --yes").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}
