//! `reproject run`: the same projections kept live, exactly once, across swaps, kills, handler
//! errors and lost connections.

use crate::config::{Config, Projection};
use crate::harness::{Project, Runner, TestDb};
use crate::ordering::background_writers;
use crate::tally;
use std::time::{Duration, Instant};

pub use crate::harness::{finish, signal};

/// Waits until `sql` returns true, or panics after `secs`.
pub async fn wait_for(db: &TestDb, sql: &str, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let row = db.client().await.query_one(sql, &[]).await;
        if let Ok(r) = row {
            if r.get::<_, Option<bool>>(0) == Some(true) {
                return;
            }
        }
        assert!(Instant::now() < until, "timed out waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub const CAUGHT_UP: &str = "SELECT to_regclass('reproject.live_checkpoints') IS NOT NULL \
    AND (SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally') = (SELECT max(id) FROM events)";

/// Starts `reproject ARGS` (a `run`) in the background and waits until it has caught up.
pub async fn start_runner(db: &TestDb, p: &Project, args: &str) -> Runner {
    let runner = p.spawn(db, args);
    wait_for(db, CAUGHT_UP, 30).await;
    runner
}

/// `--once` refuses to guess where never-rebuilt tables stand, starts where it is told, applies
/// the new events exactly once, and leaves the checkpoint at the head.
#[tokio::test(flavor = "multi_thread")]
async fn once_catches_up_from_where_it_is_told() {
    let (db, p) = tally::fixture(1000).await;
    p.reproject(&db, "run --once")
        .await
        .code(2)
        .stderr_has("cannot tell which events the live tables of `tally` already hold")
        .stderr_has("--from-position head");
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok()
        .stdout_has("caught up: 0 events applied");
    tally::append(&db, 500).await;
    db.exec("UPDATE events SET bad = true WHERE id IN (1100, 1500)")
        .await;
    let out = p.reproject(&db, "run --once --batch-size 64 --json").await;
    let o = out.ok().json();
    assert_eq!(o["events_applied"], 498, "500 new events less 2 filtered");
    assert_eq!(o["groups"][0]["position"], 1500);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int(
        "SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally'",
        1500,
    )
    .await;
    // Nothing new: nothing applied, nothing changes.
    let o = p.reproject(&db, "run --once --json").await.ok().json();
    assert_eq!(o["events_applied"], 0);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A running runner applies events from concurrent appenders whose transactions commit out of
/// position order (positions taken early, committed late, some rolled back), loses none, applies
/// none twice; a second runner is refused (75) naming the first; `status` shows it up; SIGTERM
/// stops it with exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn appended_events_appear_while_running() {
    let (db, p) = tally::fixture(200).await;
    let runner = start_runner(&db, &p, "run --from-position head --json --batch-size 50").await;

    let second = p.reproject(&db, "run --once").await;
    second
        .code(75)
        .stderr_has("projection `tally` is already kept live by another `reproject run`")
        .stderr_has("reproject process");

    let status = p.reproject(&db, "status --json").await.ok().json();
    let r = &status["projections"][0]["runner"];
    assert_eq!(r["up"], true, "{status}");
    assert_eq!(r["checkpoint"], 200);

    // Four appenders; each transaction takes its positions, then waits before committing, so
    // later positions often commit first. Every fifth transaction rolls back (a permanent gap).
    let mut tasks = Vec::new();
    for a in 0..4 {
        let client = db.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let end = if (a + i) % 5 == 0 { "ROLLBACK" } else { "COMMIT" };
                client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO events (stream, type, data) SELECT 's' || (g % 10), 'added', \
                           jsonb_build_object('amount', g) FROM generate_series(1, 7) g; \
                         SELECT pg_sleep(random() * 0.03); {end}"
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_for(&db, CAUGHT_UP, 30).await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);

    let out = runner.stop().await;
    let o = out.ok().json();
    assert_eq!(o["interrupted"], true);
    assert_eq!(o["events_applied"], 80 * 7, "committed events only");
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["runner"]["up"], false);
    assert_eq!(status["projections"][0]["runner"]["lag_events"], 0);
    db.drop().await;
}

/// PostgreSQL re-plans a prepared statement after the table it names is renamed away and
/// another renamed in: the runner's statements follow a swap to the new tables. And a runner
/// batch that overlaps a swap waits for the swap's locks, finds its checkpoint moved, rolls
/// back and continues from the handed-over position on the new table, applying nothing to the
/// old one and nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_overlapping_a_swap_continues_on_the_new_tables() {
    let db = TestDb::new().await;
    // First the server's behaviour the runner relies on.
    db.exec("CREATE TABLE t (x int); CREATE TABLE t_next (x int)")
        .await;
    let a = db.client().await;
    let insert = a.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    a.execute(&insert, &[&1i32]).await.unwrap();
    db.exec("BEGIN; ALTER TABLE t RENAME TO t_prev; ALTER TABLE t_next RENAME TO t; COMMIT")
        .await;
    a.execute(&insert, &[&2i32]).await.unwrap();
    db.assert_int_because("SELECT sum(x)::bigint FROM t", 2, "went to the new `t`")
        .await;
    db.assert_int("SELECT sum(x)::bigint FROM t_prev", 1).await;

    tally::setup(&db, 100).await;
    let p = tally::project();
    // A runner that has prepared its statements on the live table: it has applied event 101
    // (caught up at the head it started from, it may not have prepared anything yet, and a
    // first preparation would then wait for the swap instead of a batch).
    let runner = start_runner(&db, &p, "run --from-position head --json").await;
    tally::append(&db, 1).await;
    wait_for(&db, CAUGHT_UP, 30).await;
    // A swap in progress: it holds the live table and builds the next generation up to 120.
    let swap = db.client().await;
    swap.batch_execute(
        "BEGIN; LOCK TABLE tally IN ACCESS EXCLUSIVE MODE; \
         CREATE TABLE tally_next (LIKE tally INCLUDING ALL)",
    )
    .await
    .unwrap();
    tally::append(&db, 49).await;
    swap.batch_execute(
        "INSERT INTO tally_next SELECT stream, count(*), sum((data->>'amount')::bigint) FROM events \
           WHERE id <= 120 AND NOT bad GROUP BY stream",
    )
    .await
    .unwrap();
    // The runner's batch (events 101..150) is blocked on the live table.
    wait_for(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'reproject' \
           AND wait_event_type = 'Lock' AND datname = current_database())",
        30,
    )
    .await;
    swap.batch_execute(
        "ALTER TABLE tally RENAME TO tally_prev; ALTER TABLE tally_next RENAME TO tally; \
         UPDATE reproject.live_checkpoints SET position = 120, set_by = 'swap' WHERE projection = 'tally'; \
         COMMIT",
    )
    .await
    .unwrap();
    wait_for(&db, CAUGHT_UP, 30).await;
    let out = runner.stop().await;
    let o = out.ok().json();
    assert_eq!(o["handovers"], 1, "{o}");
    assert_eq!(
        o["events_applied"], 31,
        "101 on the old table, then 121..150 on the new one"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int_because(
        "SELECT sum(n)::bigint FROM tally_prev",
        101,
        "nothing applied to the table swapped out after event 101",
    )
    .await;
    db.drop().await;
}

/// `run` and `rebuild` + swap of the same projection at the same time, with several appenders
/// writing throughout whose transactions commit out of position order (some roll back): the
/// runner keeps the live table current, the swap hands over, and the live table ends equal to a
/// from-scratch computation over every committed event. A rollback, again under appenders, then
/// hands the old table back and the runner re-applies what it missed, once.
#[tokio::test(flavor = "multi_thread")]
async fn run_and_rebuild_together_with_appenders() {
    let db = tally::db(1500).await;
    // A little slow per event, so the rebuild's catch-up and swap overlap the writers.
    let p = tally::slow("0.001");
    let runner = start_runner(&db, &p, "run --from-position head --json --batch-size 20").await;
    let writers = background_writers(&db);
    // Let the writers open transactions before the rebuild starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Corrupt the live table: the rebuild must replace it, and the runner must not undo that.
    db.exec("UPDATE tally SET total = total + 1000000 WHERE stream = 's3'")
        .await;
    let before = db.int("SELECT max(id) FROM events").await;
    let rebuilt = p
        .reproject(&db, "rebuild --yes --batch-size 50 --json")
        .await;
    let during = db.int("SELECT max(id) FROM events").await - before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = writers.stop().await;
    let rebuilt = rebuilt.ok().json();
    assert_eq!(rebuilt["status"], "swapped", "{rebuilt}");
    assert!(
        during > 20 && written > 50,
        "the writers wrote throughout ({during} positions during the rebuild, {written} in all)"
    );
    wait_for(&db, CAUGHT_UP, 60).await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_text_because(
        "SELECT set_by_run::text FROM reproject.live_checkpoints",
        Some("1"),
        "the current tables are those of run 1's swap",
    )
    .await;

    // Rollback under writers: the old table (corrupted, and as of the swap) is back; the
    // runner re-applies every event since the swap to it.
    let swap_position = db
        .int("SELECT swap_position FROM reproject.runs WHERE id = 1")
        .await;
    let writers = background_writers(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.reproject(&db, "rollback --yes").await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    writers.stop().await;
    wait_for(&db, CAUGHT_UP, 60).await;
    db.exec("UPDATE tally SET total = total - 1000000 WHERE stream = 's3'")
        .await;
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "the restored table got every event after the swap position {swap_position}, once"
    );
    let o = runner.stop().await.ok().json();
    assert_eq!(o["interrupted"], true, "{o}");
    db.drop().await;
}

/// SIGKILL in the middle of a batch, then a new runner: nothing lost, nothing applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_batch_loses_and_duplicates_nothing() {
    let db = tally::db(0).await;
    tally::append(&db, 6000).await;
    // Slow handlers so the kill lands inside a batch.
    let p = tally::slow("0.0005");
    let runner = p.spawn(&db, "run --from-position start --batch-size 250");
    wait_for(
        &db,
        "SELECT to_regclass('reproject.live_checkpoints') IS NOT NULL \
         AND (SELECT position FROM reproject.live_checkpoints) >= 1000",
        60,
    )
    .await;
    // Inside a batch: the runner's session is running a statement or in its transaction.
    wait_for(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'reproject' \
           AND datname = current_database() AND state IN ('active', 'idle in transaction') \
           AND xact_start IS NOT NULL AND backend_xid IS NOT NULL)",
        30,
    )
    .await;
    runner.signal("KILL");
    let killed = runner.finish().await;
    assert_eq!(killed.code, -1, "killed by a signal");
    let at = db
        .int("SELECT position FROM reproject.live_checkpoints")
        .await;
    assert!(at < 6000, "killed before the end ({at})");
    db.assert_int_because(
        "SELECT coalesce(sum(n), 0)::bigint FROM tally",
        at,
        "the table holds exactly the committed batches",
    )
    .await;
    // The server notices the dead client; until then its lock is held.
    wait_for(
        &db,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'reproject' AND datname = current_database())",
        30,
    )
    .await;
    p.reproject(&db, "run --once").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// Three projections: `tally`, `big` (which reads `tally`) and the independent `kinds`, whose
/// handlers end with `kinds_extra`; creates their tables.
pub async fn three_projections(db: &TestDb, kinds_extra: &str) -> Project {
    db.exec(
        "CREATE TABLE big (stream text PRIMARY KEY); \
         CREATE TABLE kinds (type text PRIMARY KEY, n int NOT NULL)",
    )
    .await;
    Config::events("events")
        .event("filter", "NOT bad")
        .projection(Projection::new("tally"))
        .projection(Projection::new("big").option_toml("depends_on", "[\"tally\"]"))
        .projection(Projection::new("kinds"))
        .file("tally.sql", tally::HANDLERS)
        .file(
            "big.sql",
            "-- on added\nINSERT INTO {{big}} SELECT stream FROM {{tally}} WHERE total > 1000 ON CONFLICT DO NOTHING;\n",
        )
        .file(
            "kinds.sql",
            &format!("-- on added\nINSERT INTO {{{{kinds}}}} AS k VALUES (:type, 1) ON CONFLICT (type) DO UPDATE SET n = k.n + 1;\n{kinds_extra}"),
        )
        .write()
}

/// A handler error parks the event: its projection and the one that reads it wait just before
/// it, with the error in state and in `status`; the independent projection keeps going. After
/// the event is fixed and `reproject retry` decided, a new runner applies it.
#[tokio::test(flavor = "multi_thread")]
async fn failing_handler_stops_only_its_group() {
    let db = tally::db(100).await;
    let p = three_projections(&db, "").await;
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok();
    tally::append(&db, 100).await;
    db.exec("UPDATE events SET data = '{\"amount\": \"forty-two\"}' WHERE id = 150")
        .await;
    let out = p.reproject(&db, "run --once --batch-size 30").await;
    out.code(1)
        .stderr_has("tally, big wait(s) on a parked event")
        .stderr_has("reproject retry tally 150")
        .stderr_has("projection `tally` failed on event at position 150")
        .stderr_has("invalid input syntax for type bigint");
    let cp = |name: &str| {
        format!("SELECT position FROM reproject.live_checkpoints WHERE projection = '{name}'")
    };
    assert_eq!(db.int(&cp("tally")).await, 149, "up to the failing event");
    assert_eq!(db.int(&cp("big")).await, 149, "stopped with what it reads");
    assert_eq!(db.int(&cp("kinds")).await, 200, "independent: kept going");
    db.assert_int("SELECT n::bigint FROM kinds", 100).await;
    db.assert_int("SELECT sum(n)::bigint FROM tally", 149).await;

    let status = p.reproject(&db, "status --json").await.ok().json();
    let runner = |name: &str| {
        status["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["runner"]
            .clone()
    };
    assert_eq!(runner("tally")["stopped"], false, "parked, not stopped");
    assert_eq!(runner("tally")["last_error_position"], 150);
    assert_eq!(runner("tally")["parked"]["position"], 150, "{status}");
    assert_eq!(
        runner("big")["parked"]["position"],
        150,
        "the group waits together"
    );
    assert!(runner("kinds")["parked"].is_null());
    assert!(runner("tally")["last_error"]
        .as_str()
        .unwrap()
        .contains("forty-two"));
    assert_eq!(runner("big")["last_error_position"], 150);
    assert_eq!(runner("kinds")["stopped"], false);
    assert_eq!(runner("tally")["lag_events"], 51);
    let text = p.reproject(&db, "status").await;
    text.ok()
        .stdout_has("PARKED")
        .stdout_has("runner error at position 150");

    // Running only part of a dependency group is refused.
    p.reproject(&db, "run --once big")
        .await
        .code(2)
        .stderr_has("connected by dependencies to `tally`");

    db.exec("UPDATE events SET data = '{\"amount\": 42}' WHERE id = 150")
        .await;
    p.reproject(&db, "retry tally 150").await.ok();
    p.reproject(&db, "run --once").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert!(
        status["projections"][0]["runner"]["last_error"].is_null(),
        "{status}"
    );
    db.drop().await;
}

/// Lost connections (every session of the runner terminated, as in a server restart): the
/// runner reconnects, takes its lock again and goes on, exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn runner_survives_lost_connections() {
    let (db, p) = tally::fixture(100).await;
    let runner = start_runner(&db, &p, "run --from-position head --json").await;
    for round in 0..3 {
        tally::append(&db, 100).await;
        db.exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'reproject' AND datname = current_database()",
        )
        .await;
        tally::append(&db, 100).await;
        wait_for(&db, CAUGHT_UP, 30).await;
        assert_eq!(
            tally::expected_differences(&db, "tally").await,
            0,
            "round {round}"
        );
    }
    // The lock is held again.
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["runner"]["up"], true);
    let o = runner.stop().await.ok().json();
    assert!(o["reconnects"].as_i64().unwrap() >= 1, "{o}");
    db.drop().await;
}

/// `--print-notify-sql` prints the trigger (and installs nothing); once it is installed, a
/// runner that would otherwise sleep 20 s between looks wakes as soon as events commit.
#[tokio::test(flavor = "multi_thread")]
async fn notifications_wake_the_runner() {
    let (db, p) = tally::fixture(100).await;
    let out = p.reproject(&db, "run --print-notify-sql").await;
    let sql = out.ok().stdout.clone();
    assert!(
        sql.contains("CREATE TRIGGER reproject_notify AFTER INSERT ON \"public\".\"events\""),
        "{sql}"
    );
    assert!(
        !db.exists("reproject.live_checkpoints").await,
        "printing writes nothing"
    );
    db.assert_int(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'reproject_notify'",
        0,
    )
    .await;
    db.exec(&sql).await;
    let runner = p.spawn(
        &db,
        "run --from-position head --poll-interval 20s --max-poll-interval 20s",
    );
    wait_for(&db, CAUGHT_UP, 30).await;
    // Now asleep for 20 s unless woken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tally::append(&db, 10).await;
    wait_for(&db, CAUGHT_UP, 30).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}: not woken by the notification"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    let out = runner.stop().await;
    out.ok()
        .stderr_has("listening for new events on channel `reproject_events`");
    db.drop().await;
}

/// `run` refuses `ordering = "xid8"` (its checkpoints are positions, and its bound is proven on
/// positions) with a configuration error, before touching anything.
#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_xid8_ordering() {
    let db = tally::db(10).await;
    db.exec("ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id()")
        .await;
    let p = Config::tally_events()
        .event("ordering", "xid8")
        .event("transaction_id", "tx")
        .projection(Projection::new("tally"))
        .file("tally.sql", tally::HANDLERS)
        .write();
    p.reproject(&db, "run --once --from-position head")
        .await
        .code(2)
        .stderr_has("`reproject run` does not support `events.ordering = \"xid8\"`")
        .stderr_has("gap-aware");
    assert!(
        !db.exists("reproject.live_checkpoints").await,
        "refused before writing any state"
    );
    db.drop().await;
}

/// A writer that draws its position with `nextval()` before inserting (as ORMs with sequence
/// prefetch do) holds only the sequence's lock while later positions commit: the runner holds
/// its bound below that position until the writer ends, saying which transaction holds it,
/// then applies it; nothing is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn a_position_drawn_before_its_insert_is_not_skipped() {
    let (db, p) = tally::fixture(100).await;
    let runner = p.spawn(
        &db,
        &[
            "run",
            "--from-position",
            "head",
            "--json",
            // Looks often enough that the report comes at 10 s, not up to 2 s later.
            "--max-poll-interval",
            "200ms",
        ],
    );
    wait_for(&db, CAUGHT_UP, 30).await;
    let early = db.client().await;
    early.batch_execute("BEGIN").await.unwrap();
    let drawn: i64 = early
        .query_one("SELECT nextval('events_id_seq')", &[])
        .await
        .unwrap()
        .get(0);
    tally::append(&db, 10).await;
    // Long enough for many rounds of the runner, and for its report (every 10 s).
    tokio::time::sleep(Duration::from_millis(11_500)).await;
    let checkpoint = "SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally'";
    assert_eq!(
        db.int(checkpoint).await,
        drawn - 1,
        "held below the position the open writer drew"
    );
    early
        .batch_execute(&format!(
            "INSERT INTO events (id, stream, type, data) VALUES ({drawn}, 's1', 'added', '{{\"amount\": 5}}'); COMMIT"
        ))
        .await
        .unwrap();
    wait_for(&db, CAUGHT_UP, 30).await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    let out = runner.stop().await;
    out.stderr_has(&format!(
        "holding at position {} for 10s: a gap below position {} can still be filled by pid",
        drawn - 1,
        drawn + 10
    ))
    .stderr_has("idle in transaction");
    let o = out.ok().json();
    assert_eq!(o["events_applied"], 11, "{o}");
    db.drop().await;
}

/// `--wait`: a second runner stands by (saying who holds the projection) instead of exiting 75,
/// and takes over when the first stops; between them every event is applied once. A standby
/// stopped on request exits 0 having done nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_runner_takes_over() {
    let (db, p) = tally::fixture(100).await;
    let first = start_runner(&db, &p, "run --from-position head --json").await;
    let standby = p.spawn(&db, "run --wait --json");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tally::append(&db, 50).await;
    wait_for(&db, CAUGHT_UP, 30).await;
    let o = first.stop().await.ok().json();
    assert_eq!(o["events_applied"], 50, "{o}");
    tally::append(&db, 70).await;
    wait_for(&db, CAUGHT_UP, 30).await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);

    // A third one stands by behind the standby that took over, and is stopped.
    let third = p.spawn(&db, "run --wait --json");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let out = third.stop().await;
    out.stderr_has(
        "standing by (--wait): projection `tally` is already kept live by another `reproject run`",
    );
    let o = out.ok().json();
    assert_eq!(o["interrupted"], true);
    assert_eq!(o["events_applied"], 0);

    let out = standby.stop().await;
    out.stderr_has("standing by (--wait)")
        .stderr_has("took over: the other runner stopped");
    let o = out.ok().json();
    assert_eq!(o["events_applied"], 70, "{o}");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A group far behind (here `kinds`, from the start, with slow handlers) does not hold back an
/// independent group that is current: new events reach `tally` while `kinds` still catches up.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_far_behind_does_not_hold_back_the_others() {
    let db = tally::db(2000).await;
    let p = three_projections(&db, "SELECT pg_sleep(0.003);\n").await;
    p.reproject(&db, "run --once --from-position head kinds")
        .await
        .ok();
    // `kinds` is empty: it starts from the first event.
    db.exec("UPDATE reproject.live_checkpoints SET position = NULL WHERE projection = 'kinds'")
        .await;
    let runner = start_runner(&db, &p, "run --from-position head --batch-size 50 --json").await;
    tally::append(&db, 10).await;
    wait_for(&db, CAUGHT_UP, 10).await;
    let kinds =
        "SELECT coalesce(position, 0) FROM reproject.live_checkpoints WHERE projection = 'kinds'";
    assert!(
        db.int(kinds).await < 1500,
        "`kinds` was still far behind when `tally` had caught up"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    wait_for(
        &db,
        "SELECT (SELECT position FROM reproject.live_checkpoints WHERE projection = 'kinds') = (SELECT max(id) FROM events)",
        60,
    )
    .await;
    assert_eq!(
        db.int("SELECT n::bigint FROM kinds").await,
        db.int("SELECT count(*) FROM events WHERE NOT bad").await
    );
    runner.stop().await.ok();
    db.drop().await;
}
