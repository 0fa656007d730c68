//! The swap under traffic: readers keep reading while tables are swapped, a session holding a
//! lock makes the swap retry without piling readers up behind it, and the time the locks are
//! held is bounded (a long final tail is caught up outside the lock, a slow statement or a
//! frozen reproject process loses the locks).

use crate::harness::TestDb;
use crate::tally;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until the newest run reaches phase `swap` (it is about to lock, or locking).
pub(crate) async fn wait_for_swap_phase(db: &TestDb) {
    let client = db.client().await;
    for _ in 0..1200 {
        // The state schema appears when the run starts.
        if let Ok(row) = client
            .query_one(
                "SELECT phase FROM reproject.runs ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
        {
            if row.get::<_, String>(0) == "swap" {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the run never reached its swap phase");
}

/// A session that read `tally` in an open transaction: it holds ACCESS SHARE until it ends.
pub(crate) async fn hold_share_lock(db: &TestDb) -> tokio_postgres::Client {
    let blocker = db.client().await;
    blocker
        .batch_execute("SET application_name = 'long-report'; BEGIN; SELECT count(*) FROM tally")
        .await
        .unwrap();
    blocker
}

/// What `tally` must hold for the events up to `position`.
async fn differences_up_to(db: &TestDb, position: i64) -> i64 {
    db.int(&format!(
        "WITH want AS (SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS total \
                       FROM events WHERE NOT bad AND id <= {position} GROUP BY stream) \
         SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT stream, n, total FROM tally) a) \
              + (SELECT count(*) FROM (SELECT stream, n, total FROM tally EXCEPT SELECT * FROM want) b)"
    ))
    .await
}

/// Reader tasks that query the live table in a tight loop, each on its own connection with a
/// short statement timeout, until stopped. Returns (queries, errors, worst latency).
struct Readers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>, Duration)>>,
}

impl Readers {
    async fn start(db: &TestDb, n: usize) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let client = db.client().await;
            client
                .batch_execute("SET application_name = 'reader'; SET statement_timeout = '3s'")
                .await
                .unwrap();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut queries, mut errors, mut worst) = (0u64, Vec::new(), Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match client
                        .query_one("SELECT count(*), sum(total)::bigint FROM tally", &[])
                        .await
                    {
                        Ok(_) => queries += 1,
                        Err(e) => errors.push(format!("{e:?}")),
                    }
                    worst = worst.max(started.elapsed());
                    // A tight loop, but one that leaves the 2 test cores to the rebuild too:
                    // the latency measured is the swap's, not the scheduler's.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (queries, errors, worst)
            }));
        }
        Readers { stop, tasks }
    }

    async fn stop(self) -> (u64, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut queries, mut errors, mut worst) = (0, Vec::new(), Duration::ZERO);
        for t in self.tasks {
            let (q, e, w) = t.await.unwrap();
            queries += q;
            errors.extend(e);
            worst = worst.max(w);
        }
        (queries, errors, worst)
    }
}

/// Readers hammer the live table while events arrive and a rebuild replays, catches up and
/// swaps: none of them sees an error, the worst latency stays short, and the swapped table
/// holds exactly the events up to the swap position.
#[tokio::test(flavor = "multi_thread")]
async fn readers_see_no_error_and_no_stall_during_a_swap() {
    let db = TestDb::new().await;
    tally::setup(&db, 5_000).await;
    let p = tally::project();
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let client = db.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(
                        "INSERT INTO events (stream, type, data) SELECT 's' || (i % 10), 'added', \
                         jsonb_build_object('amount', i) FROM generate_series(1, 20) i",
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let readers = Readers::start(&db, 4).await;
    let out = p
        .spawn(&db, "rebuild --yes --batch-size 500")
        .output()
        .await;
    // Keep reading a little after the swap: the new table must serve at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (queries, errors, worst) = readers.stop().await;
    stop.store(true, Ordering::Relaxed);
    appender.await.unwrap();
    out.ok();
    eprintln!(
        "readers during rebuild + swap: {queries} queries, {} errors, worst latency {} ms",
        errors.len(),
        worst.as_millis()
    );
    assert!(errors.is_empty(), "readers saw errors: {errors:?}");
    assert!(queries > 100, "the readers did read ({queries})");
    assert!(
        worst < Duration::from_secs(2),
        "worst read latency {worst:?}"
    );
    let position = db
        .int("SELECT swap_position FROM reproject.runs WHERE id = 1")
        .await;
    assert!(position > 5_000, "events arrived during the rebuild");
    assert_eq!(differences_up_to(&db, position).await, 0);
    eprintln!(
        "the swap: lock wait {} ms, lock hold {} ms",
        db.int("SELECT lock_wait_ms FROM reproject.runs WHERE id = 1")
            .await,
        db.int("SELECT lock_hold_ms FROM reproject.runs WHERE id = 1")
            .await
    );
    db.drop().await;
}

/// While a session holds a lock on the live table, every lock attempt of the swap waits only
/// one short slice, so readers that queue behind it get through quickly; once the session
/// ends, the swap succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_makes_the_swap_retry_without_stalling_readers() {
    let (db, p) = tally::fixture(500).await;
    let blocker = hold_share_lock(&db).await;
    let live_before = db.oid("tally").await;
    let child = p.spawn(&db, "rebuild --yes --lock-budget 60s");
    wait_for_swap_phase(&db).await;
    let readers = Readers::start(&db, 4).await;
    // Several attempts: 100, 200, 400, 800, 1000 ms slices.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(db.oid("tally").await, live_before, "not swapped yet");
    blocker.batch_execute("COMMIT").await.unwrap();
    let out = child.output().await;
    let (queries, errors, worst) = readers.stop().await;
    // The attempts collapse into a summary naming the blocker (tests/e2e/output.rs).
    out.ok()
        .stderr_has("took the locks on ")
        .stderr_has("long-report");
    eprintln!(
        "readers while the swap retried: {queries} queries, {} errors, worst latency {} ms",
        errors.len(),
        worst.as_millis()
    );
    assert!(errors.is_empty(), "readers saw errors: {errors:?}");
    assert!(queries > 20, "the readers did read ({queries})");
    // One slice is at most 1 s; a reader never waits for the whole retry sequence (> 4 s).
    assert!(
        worst < Duration::from_secs(2),
        "worst read latency {worst:?}"
    );
    assert_ne!(db.oid("tally").await, live_before, "swapped");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// More events than --max-tail-events pending once the locks are held: the swap releases the
/// locks, catches up outside them and tries again; every attempt is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_final_tail_is_caught_up_outside_the_lock() {
    let (db, p) = tally::fixture(200).await;
    let blocker = hold_share_lock(&db).await;
    let child = p.spawn(&db, "rebuild --yes --max-tail-events 100");
    wait_for_swap_phase(&db).await;
    // These arrive while the swap waits for its locks: its final tail.
    tally::append(&db, 500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let out = child.output().await;
    out.ok().stderr_has("more than --max-tail-events 100");
    let attempts = db
        .text("SELECT lock_attempts::text FROM reproject.runs WHERE id = 1")
        .await
        .unwrap();
    let attempts: serde_json::Value = serde_json::from_str(&attempts).unwrap();
    let outcomes: Vec<&str> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["tail_too_long", "swapped"], "{attempts}");
    assert_eq!(attempts[0]["tail_events"], 500);
    assert!(attempts[1]["tail_events"].as_i64().unwrap() <= 100);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A statement under the lock that runs longer than --lock-hold-max is cancelled by its
/// statement_timeout: the swap is rolled back (exit 75), the run stays swappable.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_statement_under_the_lock_rolls_the_swap_back() {
    let db = tally::db(200).await;
    let p = tally::handlers_then("\n-- on slow\nSELECT pg_sleep(2);\n");
    let blocker = hold_share_lock(&db).await;
    let live_before = db.oid("tally").await;
    let child = p.spawn(&db, "rebuild --yes --lock-hold-max 300ms");
    wait_for_swap_phase(&db).await;
    db.exec("INSERT INTO events (stream, type, data) VALUES ('s1', 'slow', '{}')")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let out = child.output().await;
    out.code(75).stderr_has("--lock-hold-max (300 ms)");
    assert_eq!(db.oid("tally").await, live_before, "nothing was swapped");
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("awaiting_swap"),
    )
    .await;
    db.assert_text(
        "SELECT lock_attempts->-1->>'outcome' FROM reproject.runs WHERE id = 1",
        Some("hold_exceeded"),
    )
    .await;
    let hold = db
        .int("SELECT (lock_attempts->-1->>'lock_hold_ms')::bigint FROM reproject.runs WHERE id = 1")
        .await;
    assert!(
        hold < 1500,
        "cancelled before the 2 s statement ended ({hold} ms)"
    );
    db.drop().await;
}

/// A reproject process frozen while it holds the swap's locks loses them: the server ends its
/// idle session after --lock-hold-max and readers get through; nothing of that attempt is
/// swapped. Once the process runs again it finds its connection gone and resumes the run by
/// itself (a lost connection), catching up and swapping.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_swap_loses_its_locks() {
    let db = tally::db(200).await;
    // Slow handlers make the final tail take a while, so the freeze lands under the lock.
    let p = tally::slow("0.005");
    let blocker = hold_share_lock(&db).await;
    let live_before = db.oid("tally").await;
    let child = p.spawn(&db, "rebuild --yes --lock-hold-max 2s");
    let pid = child.id().unwrap().to_string();
    wait_for_swap_phase(&db).await;
    tally::append(&db, 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let watcher = db.client().await;
    let mut frozen = false;
    for _ in 0..2000 {
        let held: bool = watcher
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'tally'::regclass \
                   AND mode = 'AccessExclusiveLock' AND granted)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if held {
            std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap();
            frozen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(frozen, "the swap never held its locks");
    let started = Instant::now();
    watcher
        .batch_execute("SET statement_timeout = '20s'; SELECT count(*) FROM tally")
        .await
        .unwrap();
    let waited = started.elapsed();
    eprintln!(
        "a reader waited {} ms behind the frozen swap",
        waited.as_millis()
    );
    assert!(
        waited < Duration::from_secs(6),
        "the frozen session lost its locks ({waited:?})"
    );
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    let out = child.output().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("lost the connection to PostgreSQL")
            && out.stderr.contains("resuming run 1"),
        "{}",
        out.stderr
    );
    assert_ne!(
        db.oid("tally").await,
        live_before,
        "swapped on the resumed attempt"
    );
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("swapped"),
    )
    .await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// Opt-in: `--terminate-blockers-after` ends a session that sits in an open transaction holding
/// a lock on the live table, once locking has taken that long; logged and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn terminate_blockers_after_ends_an_idle_blocking_transaction() {
    let (db, p) = tally::fixture(100).await;
    let blocker = hold_share_lock(&db).await;
    let started = Instant::now();
    let out = p
        .reproject(&db, "rebuild --yes --terminate-blockers-after 500ms")
        .await;
    out.ok()
        .stderr_has("terminated blocking session pid")
        .stderr_has("long-report");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        blocker.batch_execute("SELECT 1").await.is_err(),
        "the blocking session was terminated"
    );
    let attempt = db
        .text("SELECT lock_attempts->-1->'blockers'->0->>'action' FROM reproject.runs WHERE id = 1")
        .await;
    assert_eq!(attempt.as_deref(), Some("terminated"));
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// Opt-in: `--cancel-blockers-after` cancels a long statement that holds a lock on the live
/// table; the session itself survives.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_blockers_after_cancels_a_long_statement() {
    let (db, p) = tally::fixture(100).await;
    let blocker = db.client().await;
    blocker
        .batch_execute("SET application_name = 'slow-report'")
        .await
        .unwrap();
    let query = tokio::spawn(async move {
        let r = blocker
            .batch_execute("SELECT count(*) FROM tally, pg_sleep(30)")
            .await;
        (
            r.map_err(|e| e.code().map(|c| c.code().to_string())),
            blocker,
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = p
        .reproject(&db, "rebuild --yes --cancel-blockers-after 500ms")
        .await;
    out.ok()
        .stderr_has("cancelled blocking session pid")
        .stderr_has("slow-report");
    let (result, blocker) = query.await.unwrap();
    assert_eq!(
        result,
        Err(Some("57014".to_string())),
        "the statement was cancelled"
    );
    blocker
        .batch_execute("SELECT 1")
        .await
        .expect("the session survives a cancel");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// After a big rebuild autovacuum vacuums the new and old tables, and it gives way to a lock
/// request only after `deadlock_timeout` (1 s), longer than the swap's first attempts: left
/// alone it held swaps off for a minute in the benchmark. The swap cancels it (as the server
/// itself would; autovacuum comes back later) and swaps at once. On a server of the test's own,
/// where autovacuum wakes every second.
#[tokio::test(flavor = "multi_thread")]
async fn the_swap_cancels_autovacuum_in_its_way() {
    let Some(server) = crate::pgserver::PgServer::start_plain_with("autovacuum_naptime = 1\n")
    else {
        eprintln!("SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) on this machine");
        return;
    };
    let db = TestDb::new_on(server.admin()).await;
    tally::setup(&db, 100).await;
    // Many dead row versions, and a vacuum that sleeps after every page: it stays busy with
    // `tally` far longer than this test.
    db.exec(
        "ALTER TABLE tally SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, \
             autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1);
         DO $$ BEGIN FOR i IN 1..3000 LOOP UPDATE tally SET n = n; END LOOP; END $$;",
    )
    .await;
    crate::harness::wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' \
         AND query LIKE '%tally%')",
    )
    .await;
    let started = Instant::now();
    let out = tally::project().reproject(&db, "rebuild --yes").await;
    out.ok().stderr_has("cancelled autovacuum pid");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the swap waited {:?}",
        started.elapsed()
    );
    let attempts = db
        .text("SELECT lock_attempts::text FROM reproject.runs WHERE id = 1")
        .await
        .unwrap();
    assert!(attempts.contains("cancelled autovacuum"), "{attempts}");
    // Cancelled before the first attempt, not after a slice spent waiting behind it.
    assert!(attempts.contains("\"after_ms\": 0"), "{attempts}");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
    drop(server);
}
