//! `reproject run` across real server restarts, on a PostgreSQL of the test's own
//! (pgserver.rs): the runner rides out "connection refused" and "the database system is
//! starting up", reconnects, takes its lock again and ends exactly once; with
//! `--reconnect-timeout` it gives up instead of retrying forever. And a prepared transaction
//! (which the shared test server does not allow) holding a position across a restart.

use crate::harness::TestDb;
use crate::live::{wait_for, CAUGHT_UP};
use crate::pgserver::PgServer;
use crate::tally;
use std::time::{Duration, Instant};

fn start() -> Option<PgServer> {
    let server = PgServer::start_plain();
    if server.is_none() {
        eprintln!("SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) on this machine");
    }
    server
}

/// The live table holds every committed event exactly once: it equals a from-scratch count,
/// and its event count is the number of committed, unfiltered events.
async fn exactly_once(db: &TestDb, what: &str) {
    assert_eq!(
        tally::expected_differences(db, "tally").await,
        0,
        "{what}: live table differs from a from-scratch computation"
    );
    assert_eq!(
        db.int("SELECT coalesce(sum(n), 0)::bigint FROM tally")
            .await,
        db.int("SELECT count(*) FROM events WHERE NOT bad").await,
        "{what}: events applied"
    );
}

/// Stop the server (fast: sessions terminated, open transactions rolled back), keep it down a
/// while, start it again on the same port; twice, once with the runner idle and once in the
/// middle of catching up, and with a writer's transaction open across the stop. The runner
/// reconnects, holds its lock again (`status`: up) and ends exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn runner_survives_a_server_restart() {
    let Some(server) = start() else { return };
    let db = tally::db_on(server.admin(), 100).await;
    // Handlers a little slow, so the second stop lands inside a batch.
    let p = tally::slow("0.0005");
    let runner = p.spawn(
        &db,
        "run --from-position head --json --batch-size 50 --reconnect-timeout 2min",
    );
    wait_for(&db, CAUGHT_UP, 30).await;
    tally::append(&db, 100).await;
    wait_for(&db, CAUGHT_UP, 30).await;

    // Round 1: the runner is idle; a writer holds positions in an open transaction.
    let writer = db.client().await;
    writer
        .batch_execute(
            "BEGIN; INSERT INTO events (stream, type, data) \
             SELECT 's1', 'added', jsonb_build_object('amount', 1000000) FROM generate_series(1, 5)",
        )
        .await
        .unwrap();
    server.stop();
    // Down for a while: the runner's attempts are refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_again();
    assert!(
        writer.batch_execute("COMMIT").await.is_err(),
        "the writer's transaction died with the server"
    );
    tally::append(&db, 100).await;
    wait_for(&db, CAUGHT_UP, 60).await;
    exactly_once(&db, "after the first restart").await;

    // Round 2: stop inside a batch while the runner catches up 3000 events in batches of 50.
    tally::append(&db, 3000).await;
    wait_for(
        &db,
        "SELECT (SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally') > \
                (SELECT max(id) - 3000 FROM events)",
        30,
    )
    .await;
    wait_for(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'reproject' \
           AND datname = current_database() AND backend_xid IS NOT NULL)",
        30,
    )
    .await;
    assert!(
        db.int("SELECT (SELECT max(id) FROM events) - position FROM reproject.live_checkpoints")
            .await
            > 0,
        "still catching up when the server stops"
    );
    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start_again();
    tally::append(&db, 100).await;
    wait_for(&db, CAUGHT_UP, 60).await;
    exactly_once(&db, "after the second restart").await;

    // The lock was taken again: a second runner is refused, `status` shows the runner up.
    p.reproject(&db, "run --once")
        .await
        .code(75)
        .stderr_has("already kept live by another `reproject run`");
    let status = p.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["runner"]["up"], true, "{status}");

    let out = runner.stop().await;
    out.stderr_has("reconnected to the database");
    let o = out.ok().json();
    assert!(o["reconnects"].as_i64().unwrap() >= 2, "{o}");
    assert_eq!(o["interrupted"], true);
    // 100 + 100 + 3000 + 100 committed after the start; the open transaction's 5 never were.
    assert_eq!(o["events_applied"], 3300, "{o}");
    db.drop().await;
}

/// With the server down longer than `--reconnect-timeout`, `run --once` gives up (exit 1,
/// saying so) instead of retrying forever; nothing is lost, and a later `--once` finishes the
/// job exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn once_gives_up_after_the_reconnect_timeout() {
    let Some(server) = start() else { return };
    let db = tally::db_on(server.admin(), 0).await;
    tally::append(&db, 4000).await;
    // Slow handlers: the runner is still catching up when the server goes away.
    let slow = tally::slow("0.0005");
    let runner = slow.spawn(
        &db,
        "run --once --from-position start --batch-size 100 --reconnect-timeout 2s",
    );
    wait_for(
        &db,
        "SELECT to_regclass('reproject.live_checkpoints') IS NOT NULL \
         AND (SELECT position FROM reproject.live_checkpoints) >= 300",
        60,
    )
    .await;
    server.stop();
    let stopped = Instant::now();
    let out = runner.finish().await;
    let took = stopped.elapsed();
    out.code(1)
        .stderr_has("gave up after 2s without a working database connection (--reconnect-timeout)")
        .stderr_has("cannot connect to PostgreSQL");
    assert!(
        took < Duration::from_secs(15),
        "gave up only after {took:?}"
    );
    server.start_again();
    let at = db
        .int("SELECT position FROM reproject.live_checkpoints")
        .await;
    assert!(at < 4000, "stopped before the end ({at})");
    db.assert_int_because(
        "SELECT coalesce(sum(n), 0)::bigint FROM tally",
        at,
        "the table holds exactly the committed batches",
    )
    .await;
    slow.reproject(&db, "run --once").await.ok();
    exactly_once(&db, "after the second --once").await;
    db.drop().await;
}

/// A prepared transaction holds a position without a session (and across a server restart):
/// the runner's bound stays below it until `COMMIT PREPARED`, then its event is applied, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_transaction_holds_the_runner_back_across_a_restart() {
    let Some(server) = start() else { return };
    let db = tally::db_on(server.admin(), 100).await;
    let p = tally::project();
    let runner = crate::live::start_runner(&db, &p, "run --from-position head --json").await;
    db.exec(
        "BEGIN; INSERT INTO events (stream, type, data) VALUES ('s1', 'added', '{\"amount\": 7}'); \
         PREPARE TRANSACTION 'reproject_live_test'",
    )
    .await;
    tally::append(&db, 10).await;
    let checkpoint = "SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally'";
    tokio::time::sleep(Duration::from_millis(1500)).await;
    db.assert_int_because(checkpoint, 100, "held below the prepared position")
        .await;
    server.stop();
    server.start_again();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    db.assert_int_because(
        checkpoint,
        100,
        "still held after the restart: the prepared transaction survived it",
    )
    .await;
    db.exec("COMMIT PREPARED 'reproject_live_test'").await;
    wait_for(&db, CAUGHT_UP, 30).await;
    exactly_once(&db, "after COMMIT PREPARED").await;
    let o = runner.stop().await.ok().json();
    assert_eq!(o["events_applied"], 11, "{o}");
    db.drop().await;
}
