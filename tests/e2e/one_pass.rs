//! The bulk replay reads its range in one ordered pass, and `plan` names each read's access
//! path: a store read in (transaction id, position) order with no index in that order (as
//! Emmett's and Sequent's tables come) rebuilds with the rows of that order, exactly once
//! across a crash, and `plan` warns with the index to create until it exists.

use crate::config::{Config, Projection};
use crate::harness::{assert_same_rows, Project, TestDb};
use crate::tally;

/// Order-sensitive handlers: `total` is the amount of the stream's last event in reading
/// order, so a replay in position order (or any other) builds other rows.
const LAST_AMOUNT: &str = "\
-- on added
INSERT INTO {{tally}} AS t (stream, n, total) VALUES (:stream, 1, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = t.n + 1, total = EXCLUDED.total;
";

/// What `tally` must hold: per stream, the count and the last amount in (tx, id) order.
const WANT: &str = "(SELECT DISTINCT ON (stream) stream, (count(*) OVER (PARTITION BY stream))::int AS n, \
     (data->>'amount')::bigint AS total FROM events WHERE NOT bad ORDER BY stream, tx DESC, id DESC)";

/// The tally's events with a transaction id column and no index in reading order, appended
/// by two writers whose transactions overlap, `rounds` times: the first takes positions
/// before and after the second's, so transaction order differs from position order. Each
/// round appends 3 × `per_insert` events.
async fn xid8_store(rounds: i64, per_insert: i64) -> TestDb {
    let db = tally::db(0).await;
    db.exec("ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id()")
        .await;
    let (a, b) = (db.client().await, db.client().await);
    let insert = |k: i64| {
        format!(
            "INSERT INTO events (stream, type, data) SELECT 's' || (i % 10), 'added', \
             jsonb_build_object('amount', {k} * 100000 + i) FROM generate_series(1, {per_insert}) i"
        )
    };
    for r in 0..rounds {
        a.batch_execute(&format!("BEGIN; {}", insert(3 * r)))
            .await
            .unwrap();
        b.batch_execute(&format!("BEGIN; {}", insert(3 * r + 1)))
            .await
            .unwrap();
        a.batch_execute(&insert(3 * r + 2)).await.unwrap();
        b.batch_execute("COMMIT").await.unwrap();
        a.batch_execute("COMMIT").await.unwrap();
    }
    db.exec("ANALYZE events").await;
    db
}

/// The tally in `xid8` order with `handlers`.
fn xid8_project(handlers: &str) -> Project {
    Config::tally_events()
        .event("ordering", "xid8")
        .event("transaction_id", "tx")
        .projection(Projection::new("tally"))
        .file("tally.sql", handlers)
        .write()
}

/// Sequential scans of `events` so far (the statistics of ended sessions).
async fn seq_scans(db: &TestDb) -> i64 {
    db.exec("SELECT pg_stat_clear_snapshot()").await;
    db.int("SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'events'")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xid8_store_without_an_index_in_reading_order_rebuilds_in_one_pass() {
    let db = xid8_store(10, 100).await;
    let p = xid8_project(LAST_AMOUNT);
    assert_ne!(
        db.int(&format!("SELECT count(*) FROM (SELECT * FROM {WANT} w EXCEPT SELECT stream, n, total FROM (SELECT DISTINCT ON (stream) stream, (count(*) OVER (PARTITION BY stream))::int AS n, (data->>'amount')::bigint AS total FROM events ORDER BY stream, id DESC) x) d"))
            .await,
        0,
        "the fixture's transaction order differs from its position order"
    );
    let before = seq_scans(&db).await;
    let out = p
        .reproject(&db, "rebuild --yes --json --batch-size 50")
        .await;
    let outcome = out.ok().json();
    assert_eq!(outcome["status"], "swapped", "{outcome}");
    assert_eq!(outcome["events_applied"], 3000);
    assert_same_rows(
        &db,
        "(SELECT * FROM tally) t",
        &format!("{WANT} w"),
        "stream, n, total",
        "the rebuilt tally is the one of (transaction id, position) order",
    )
    .await;
    // 60 batches: a read per batch would scan the table at least 60 times. The one pass scans
    // it once; the counts, bounds and the swap's final read add a few.
    let mut scans = 0;
    for _ in 0..50 {
        scans = seq_scans(&db).await - before;
        if scans > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        (1..20).contains(&scans),
        "{scans} sequential scans of `events` for 60 batches"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_in_the_middle_of_the_one_pass_replay_resumes_with_every_event_once() {
    let db = xid8_store(10, 100).await;
    let slow = xid8_project(&format!("{LAST_AMOUNT}SELECT pg_sleep(0.001);\n"));
    let mut child = slow.spawn(&db, "rebuild --yes --batch-size 100");
    crate::harness::wait_until(
        &db,
        "SELECT events_applied >= 300 FROM reproject.runs WHERE id = 1",
    )
    .await;
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    let killed_at = db
        .int("SELECT events_applied FROM reproject.runs WHERE id = 1")
        .await;
    assert!((300..3000).contains(&killed_at), "killed at {killed_at}");
    db.assert_int("SELECT sum(n)::bigint FROM tally_rebuild", killed_at)
        .await;

    let outcome = slow
        .reproject(&db, "rebuild --yes --resume --json --batch-size 100")
        .await
        .ok()
        .json();
    assert_eq!(outcome["run_id"], 1, "the same run continues");
    assert_eq!(outcome["events_applied"], 3000 - killed_at);
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        3000,
    )
    .await;
    assert_same_rows(
        &db,
        "(SELECT * FROM tally) t",
        &format!("{WANT} w"),
        "stream, n, total",
        "every event applied once, in reading order, across the crash",
    )
    .await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_the_access_path_and_the_index_a_repeated_read_needs() {
    let db = xid8_store(10, 100).await;
    let p = xid8_project(LAST_AMOUNT);
    let out = p.reproject(&db, "plan").await;
    out.ok()
        .stdout_has("read for the bulk replay:")
        .stdout_has("one ordered pass")
        .stdout_has("read for the catch-up rounds:")
        .stdout_has("warning: no index serves the reading order of `events`");
    let plan = p.reproject(&db, "plan --json").await.ok().json();
    let reads = plan["reads"].as_array().expect("reads");
    assert_eq!(reads.len(), 2, "{plan}");
    assert_eq!(reads[1]["per_batch"], true);
    assert_eq!(reads[1]["ordered_by_index"], false, "{plan}");
    let warning = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .find(|w| w.contains("no index serves"))
        .expect("the warning")
        .to_string();
    let create = &warning[warning
        .find("CREATE INDEX CONCURRENTLY")
        .expect("the statement")..];
    // Exactly the statement given (outside a transaction, as CONCURRENTLY needs).
    db.exec(create).await;
    db.exec("ANALYZE events").await;

    let plan = p.reproject(&db, "plan --json").await.ok().json();
    let reads = plan["reads"].as_array().expect("reads");
    assert_eq!(reads[1]["ordered_by_index"], true, "{plan}");
    assert!(
        reads[1]["access_path"].as_str().unwrap().contains("Index"),
        "{plan}"
    );
    assert!(
        !plan["warnings"].to_string().contains("no index serves"),
        "{plan}"
    );
    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("in index order");
    db.drop().await;
}

/// Read sessions (their last statement read the cursor) of the test database that hold a
/// snapshot while idle in a transaction: what keeps dead row versions from being pruned.
const IDLE_SNAPSHOTS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() \
     AND (query LIKE 'FETCH%' OR query LIKE 'DECLARE%') \
     AND state LIKE 'idle in transaction%' AND backend_xmin IS NOT NULL";

#[tokio::test(flavor = "multi_thread")]
async fn the_one_pass_read_holds_no_snapshot_between_batches() {
    let db = xid8_store(10, 100).await;
    let slow = xid8_project(&format!("{LAST_AMOUNT}SELECT pg_sleep(0.002);\n"));
    let child = slow.spawn(&db, "rebuild --yes --batch-size 50");
    crate::harness::wait_until(
        &db,
        "SELECT events_applied >= 200 FROM reproject.runs WHERE id = 1",
    )
    .await;
    // The write transaction of a batch takes about 100 ms here; between fetches the read
    // session would sit idle in its transaction if it kept one open.
    let mut looks = 0;
    let mut reads_seen = 0;
    while db
        .int("SELECT count(*) FROM reproject.runs WHERE id = 1 AND events_applied < 2500")
        .await
        == 1
        && looks < 200
    {
        assert_eq!(
            db.int(IDLE_SNAPSHOTS).await,
            0,
            "a session holds a snapshot while the replay runs (look {looks})"
        );
        reads_seen += db
            .int("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'FETCH%'")
            .await;
        looks += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(looks >= 10, "only {looks} looks during the replay");
    assert!(
        reads_seen > 0,
        "the read session was never seen in {looks} looks"
    );
    child.output().await.ok();
    assert_same_rows(
        &db,
        "(SELECT * FROM tally) t",
        &format!("{WANT} w"),
        "stream, n, total",
        "every event applied once, in reading order",
    )
    .await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_room_for_the_ordered_read_the_replay_reads_batch_by_batch() {
    let db = xid8_store(10, 100).await;
    // Rows beyond work_mem spill to a temporary file, which may not pass 64 kB here.
    db.exec(&format!(
        "ALTER DATABASE {} SET work_mem = '64kB'; ALTER DATABASE {} SET temp_file_limit = '64kB'",
        db.name, db.name
    ))
    .await;
    let p = xid8_project(LAST_AMOUNT);
    let out = p.reproject(&db, "rebuild --yes --batch-size 100").await;
    out.ok()
        .stderr_has("no room to keep the ordered read of `events`")
        .stderr_has("reading it batch by batch");
    db.exec(&format!(
        "ALTER DATABASE {} RESET work_mem; ALTER DATABASE {} RESET temp_file_limit",
        db.name, db.name
    ))
    .await;
    assert_same_rows(
        &db,
        "(SELECT * FROM tally) t",
        &format!("{WANT} w"),
        "stream, n, total",
        "every event applied once, in reading order, read per batch",
    )
    .await;
    db.drop().await;
}
