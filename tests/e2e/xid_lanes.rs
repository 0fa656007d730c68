//! Stream lanes (`--jobs`) for events read in (transaction id, position) order: an Emmett
//! layout (`preset = "emmett"`, `ordering = "xid8"`) appended by concurrent transactions, so
//! that position order and commit order differ. The lanes cover the events below the cut,
//! each lane in (transaction id, position) order; what commits later is caught up on one
//! connection.

use crate::config::{Config, Projection};
use crate::harness::{assert_same_rows, wait_until, Project, TestDb};
use std::time::Duration;

/// Emmett's `emt_messages` (partitioned, a global position from its sequence, the writer's
/// transaction id) and the projection's table: per stream the balance, the event count and
/// the stream positions in the order they were applied (`trail`), which any event applied
/// out of its stream's order, twice or not at all changes.
pub const LAYOUT: &str = "CREATE SEQUENCE emt_global_message_position;
     CREATE TABLE emt_messages (
       stream_id text NOT NULL, stream_position bigint NOT NULL,
       partition text NOT NULL DEFAULT 'emt:default', message_kind char(1) NOT NULL DEFAULT 'E',
       message_data jsonb NOT NULL, message_metadata jsonb NOT NULL,
       message_schema_version text NOT NULL, message_type text NOT NULL,
       message_id text NOT NULL, is_archived boolean NOT NULL DEFAULT false,
       global_position bigint DEFAULT nextval('emt_global_message_position'),
       transaction_id xid8 NOT NULL, created timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (stream_id, stream_position, partition, is_archived)
     ) PARTITION BY LIST (partition);
     CREATE TABLE emt_messages_global PARTITION OF emt_messages FOR VALUES IN ('emt:default')
       PARTITION BY LIST (is_archived);
     CREATE TABLE emt_messages_global_active PARTITION OF emt_messages_global FOR VALUES IN (false);
     CREATE TABLE emt_messages_global_archived PARTITION OF emt_messages_global FOR VALUES IN (true);
     CREATE TABLE accounts (stream text PRIMARY KEY, balance bigint NOT NULL, events int NOT NULL,
       trail text NOT NULL);";

/// Per event: each event adds to its stream's row and its `n` to the trail.
pub const HANDLERS: &str = "\
-- on Deposited
INSERT INTO {{accounts}} AS a (stream, balance, events, trail)
VALUES (:stream, (:data->>'amount')::bigint, 1, :data->>'n')
ON CONFLICT (stream) DO UPDATE SET balance = a.balance + EXCLUDED.balance, events = a.events + 1,
  trail = a.trail || ',' || EXCLUDED.trail;
";

/// Set-based: each batch (or lane) adds its events per stream, in stream order.
pub const PER_BATCH: &str = "\
-- per batch
INSERT INTO {{accounts}} AS a (stream, balance, events, trail)
SELECT e.stream, sum((e.data->>'amount')::bigint), count(*),
       string_agg(e.data->>'n', ',' ORDER BY (e.data->>'n')::int)
FROM :events AS e GROUP BY e.stream
ON CONFLICT (stream) DO UPDATE SET balance = a.balance + EXCLUDED.balance,
  events = a.events + EXCLUDED.events, trail = a.trail || ',' || EXCLUDED.trail;
";

/// What `accounts` must hold for the events (not the commands) that `cut` (an SQL condition
/// on `emt_messages`) selects, computed from the store's rows in stream order.
fn truth(cut: &str) -> String {
    format!(
        "(SELECT stream_id AS stream, sum((message_data->>'amount')::bigint) AS balance, \
                count(*)::int AS events, string_agg(stream_position::text, ',' ORDER BY stream_position) AS trail \
           FROM emt_messages WHERE message_kind = 'E' AND ({cut}) GROUP BY stream_id) truth"
    )
}

async fn assert_truth(db: &TestDb, cut: &str, why: &str) {
    assert_same_rows(
        db,
        "accounts",
        &truth(cut),
        "stream, balance, events, trail",
        why,
    )
    .await;
}

/// The events (not commands) in the store.
async fn events(db: &TestDb) -> i64 {
    db.int("SELECT count(*) FROM emt_messages WHERE message_kind = 'E'")
        .await
}

/// The accounts project on the Emmett preset, its projection declared stream-scoped.
fn project(handlers: &str) -> Project {
    Config::default()
        .event("preset", "emmett")
        .projection(
            Projection::new("accounts")
                .option("stream_key", "stream")
                .option_toml("row_count_tolerance", "100"),
        )
        .file("accounts.sql", handlers)
        .write()
}

/// Handlers that also sleep `seconds` per event, so a run can be caught between batches.
fn slow(seconds: &str) -> String {
    format!("{HANDLERS}SELECT pg_sleep({seconds});\n")
}

async fn fresh_db() -> TestDb {
    let db = TestDb::new().await;
    db.exec(LAYOUT).await;
    db
}

/// `writers` concurrent appenders, each on its own connection, each `appends` transactions
/// long, each transaction appending 1-3 events to one of the writer's four streams (as
/// Emmett's appendToStream does), pausing between its inserts and before its commit, so that
/// transactions overlap: a later transaction id often holds an earlier position. Every fifth
/// transaction also writes a command row, which is no event. The streams are named after
/// `tag`, the writer and the stream: a second call with the same tag appends to them.
async fn append_concurrently(db: &TestDb, tag: &str, writers: usize, appends: usize) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = db.client().await;
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            // Streams written before continue where they are.
            let mut positions = [0i64; 4];
            for (k, at) in positions.iter_mut().enumerate() {
                *at = client
                    .query_one(
                        "SELECT coalesce(max(stream_position), 0) FROM emt_messages WHERE stream_id = $1",
                        &[&format!("{tag}-{w}-{k}")],
                    )
                    .await
                    .unwrap()
                    .get(0);
            }
            for t in 0..appends {
                let k = (t + w) % 4;
                let stream = format!("{tag}-{w}-{k}");
                client.batch_execute("BEGIN").await.unwrap();
                for e in 0..(1 + (t * 7 + w) % 3) {
                    positions[k] += 1;
                    let n = positions[k];
                    client
                        .batch_execute(&format!(
                            "INSERT INTO emt_messages (stream_id, stream_position, message_data, message_metadata, \
                               message_schema_version, message_type, message_id, transaction_id) \
                             VALUES ('{stream}', {n}, jsonb_build_object('amount', {amount}, 'n', {n}), '{{}}', \
                               '1', 'Deposited', gen_random_uuid()::text, pg_current_xact_id())",
                            amount = 10 * n + e as i64 + w as i64
                        ))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(((t + e) % 3) as u64)).await;
                }
                if t % 5 == 0 {
                    positions[k] += 1;
                    client
                        .batch_execute(&format!(
                            "INSERT INTO emt_messages (stream_id, stream_position, message_kind, message_data, \
                               message_metadata, message_schema_version, message_type, message_id, transaction_id) \
                             VALUES ('{stream}', {}, 'C', '{{\"amount\": 999}}', '{{}}', '1', 'Deposited', \
                               gen_random_uuid()::text, pg_current_xact_id())",
                            positions[k]
                        ))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis((w % 3) as u64)).await;
                client.batch_execute("COMMIT").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Fails unless commit order and position order differ somewhere: else (transaction id,
/// position) order would be position order and the test would prove nothing about it.
async fn assert_interleaved(db: &TestDb) {
    let crossed = db
        .int(
            "SELECT count(*) FROM emt_messages a JOIN emt_messages b \
               ON a.global_position < b.global_position AND a.transaction_id > b.transaction_id",
        )
        .await;
    assert!(
        crossed > 0,
        "the writers' transactions did not overlap: positions and transaction ids agree"
    );
}

/// Waits until the per-event lanes of run 1 applied at least `n` events.
async fn wait_for_lane_events(db: &TestDb, n: i64) {
    wait_until(
        db,
        &format!(
            "SELECT coalesce((SELECT sum(events) FROM reproject.lanes WHERE run_id = 1), 0) >= {n}"
        ),
    )
    .await;
}

/// Per-event handlers in three lanes at once on a store read in (transaction id, position)
/// order: the plan says so, each lane reads its streams' events in that order, the table
/// equals the truth and a rebuild on one connection, every event once, and the checkpoint
/// moves to the plan's end, a (transaction id, position) pair.
#[tokio::test(flavor = "multi_thread")]
async fn xid8_lanes_equal_one_connection_and_the_truth() {
    let db = fresh_db().await;
    append_concurrently(&db, "acc", 6, 40).await;
    assert_interleaved(&db).await;
    let all = events(&db).await;
    let p = project(HANDLERS);
    p.reproject(&db, "rebuild --dry-run")
        .await
        .ok()
        .stdout_has("in batches (with --jobs N: in N stream lanes at once, split by a hash of the stream, below the transaction-id cut)");
    p.reproject(&db, "rebuild --yes --jobs 3 --batch-size 25")
        .await
        .ok()
        .stdout_has(&format!("run 1: swapped. {all} events applied"))
        .stderr_has("replaying in 3 stream lane(s), 3 at a time (each lane: the events of the streams that hash to it, up to transaction ");
    assert_truth(&db, "true", "three lanes").await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 1 AND done_at IS NOT NULL \
            AND upto_transaction_id IS NOT NULL AND after_transaction_id IS NULL AND after_position IS NULL",
        3,
        "one plan of three lanes, from the start, recorded with its end's transaction id",
    )
    .await;
    db.assert_int_because(
        "SELECT sum(events)::bigint FROM reproject.lanes WHERE run_id = 1",
        all,
        "the lanes partition the events",
    )
    .await;
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        all,
    )
    .await;
    // Each lane's cursor and the run's checkpoint are pairs; the checkpoint is the plan's end,
    // the last event in (transaction id, position) order.
    db.assert_int(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 1 AND transaction_id IS NULL",
        0,
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.checkpoints c JOIN reproject.lanes l USING (run_id) \
          WHERE c.run_id = 1 AND l.lane = 0 AND c.position = l.upto_position \
            AND c.transaction_id = l.upto_transaction_id \
            AND (c.transaction_id, c.position) = (SELECT transaction_id, global_position FROM emt_messages \
                  WHERE message_kind = 'E' ORDER BY transaction_id DESC, global_position DESC LIMIT 1)",
        1,
        "the checkpoint moved to the plan's end",
    )
    .await;
    db.exec("CREATE TABLE in_lanes AS SELECT * FROM accounts")
        .await;
    // The same on one connection.
    p.reproject(&db, "rebuild --yes")
        .await
        .ok()
        .stdout_has(&format!("run 2: swapped. {all} events applied"));
    db.assert_int("SELECT count(*) FROM reproject.lanes WHERE run_id = 2", 0)
        .await;
    assert_same_rows(
        &db,
        "accounts",
        "in_lanes",
        "stream, balance, events, trail",
        "lanes and one connection",
    )
    .await;
    db.drop().await;
}

/// Set-based handlers: one lane per --set-batch-size events, each lane one transaction over
/// its streams' events below the cut.
#[tokio::test(flavor = "multi_thread")]
async fn xid8_set_based_lanes_equal_the_truth() {
    let db = fresh_db().await;
    append_concurrently(&db, "acc", 4, 30).await;
    assert_interleaved(&db).await;
    let all = events(&db).await;
    let p = project(PER_BATCH);
    p.reproject(&db, "rebuild --dry-run")
        .await
        .ok()
        .stdout_has("in stream lanes (split by a hash of the stream: one lane per --set-batch-size events, --jobs at a time, below the transaction-id cut)");
    let lanes = (all + 39) / 40;
    p.reproject(&db, "rebuild --yes --jobs 2 --set-batch-size 40")
        .await
        .ok()
        .stdout_has(&format!("run 1: swapped. {all} events applied"))
        .stderr_has(&format!("replaying in {lanes} stream lane(s), 2 at a time"));
    assert_truth(&db, "true", "set-based lanes").await;
    db.assert_int(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 1 AND done_at IS NOT NULL AND upto_transaction_id IS NOT NULL",
        lanes,
    )
    .await;
    db.drop().await;
}

/// `reproject cancel` while three per-event lanes run: they stop after their current batch
/// (exit 130, the checkpoint still before the plan, each lane's cursor a pair), and
/// `--resume` finishes the same plan from each lane's cursor: every event once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn cancelled_xid8_lanes_resume_with_each_event_once() {
    let db = fresh_db().await;
    append_concurrently(&db, "acc", 6, 50).await;
    let all = events(&db).await;
    let p = project(&slow("0.01"));
    let child = p.spawn(&db, "rebuild --yes --jobs 3 --batch-size 20");
    wait_for_lane_events(&db, 60).await;
    p.reproject(&db, "cancel").await.ok();
    let out = child.output().await;
    out.code(130);
    out.stderr_has("stream lane(s) not done");
    let applied = db
        .int("SELECT sum(events)::bigint FROM reproject.lanes WHERE run_id = 1")
        .await;
    assert!(applied > 0 && applied < all, "{applied} of {all}");
    db.assert_int_because(
        "SELECT count(*) FROM reproject.checkpoints WHERE run_id = 1 AND position IS NULL AND transaction_id IS NULL",
        1,
        "the checkpoint stays before the plan",
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 1 AND position IS NOT NULL AND transaction_id IS NULL",
        0,
        "a lane's cursor is a pair",
    )
    .await;
    p.reproject(&db, "rebuild --yes --resume --jobs 3 --batch-size 20")
        .await
        .ok()
        .stdout_has(&format!("run 1: swapped. {} events applied", all - applied))
        .stderr_has("left of plan 1");
    assert_truth(&db, "true", "resumed lanes").await;
    db.assert_int_because(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        all,
        "every event once",
    )
    .await;
    db.drop().await;
}

/// Every reproject session terminated while the lanes run (their ordered reads too): the
/// rebuild resumes by itself, the same plan, every event once.
#[tokio::test(flavor = "multi_thread")]
async fn xid8_lanes_survive_a_lost_connection() {
    let db = fresh_db().await;
    append_concurrently(&db, "acc", 6, 50).await;
    let all = events(&db).await;
    let p = project(&slow("0.005"));
    let child = p.spawn(&db, "rebuild --yes --jobs 3 --batch-size 20");
    wait_for_lane_events(&db, 60).await;
    let terminated = db.terminate_reproject_sessions().await;
    assert!(
        terminated >= 4,
        "the run's, lanes' and reads' sessions: {terminated}"
    );
    let out = child.output().await;
    out.code(0);
    out.stderr_has("lost the connection to PostgreSQL");
    assert!(out.stderr.contains("left of plan 1"), "{}", out.stderr);
    assert_truth(&db, "true", "lanes after a lost connection").await;
    db.assert_int_because(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        all,
        "every event once",
    )
    .await;
    db.drop().await;
}

/// Events committed while the lanes run are above the plan's cut: the catch-up applies them
/// after the plan, and the swapped table equals the truth up to the swap checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn events_committed_during_xid8_lanes_are_caught_up() {
    let db = fresh_db().await;
    append_concurrently(&db, "acc", 6, 30).await;
    let before = events(&db).await;
    let p = project(&slow("0.01"));
    let child = p.spawn(&db, "rebuild --yes --jobs 3 --batch-size 20");
    wait_for_lane_events(&db, 30).await;
    // New streams, and more events for streams the lanes are replaying.
    append_concurrently(&db, "new", 3, 10).await;
    append_concurrently(&db, "acc", 2, 5).await;
    let out = child.output().await;
    out.code(0).stdout_has("run 1: swapped");
    let (tx, position) = (
        db.text("SELECT transaction_id::text FROM reproject.checkpoints WHERE run_id = 1")
            .await
            .expect("the checkpoint has a transaction id"),
        db.int("SELECT position FROM reproject.checkpoints WHERE run_id = 1")
            .await,
    );
    let cut = format!("(transaction_id, global_position) <= ('{tx}'::xid8, {position})");
    assert_truth(&db, &cut, "lanes, then the catch-up").await;
    db.assert_int_because(
        "SELECT plan_events FROM reproject.lanes WHERE run_id = 1 AND lane = 0",
        before,
        "the plan holds the events below the cut",
    )
    .await;
    let caught_up = db
        .int(&format!(
            "SELECT count(*) FROM (SELECT * FROM emt_messages WHERE message_kind = 'E' AND ({cut})) m, \
                    reproject.lanes l \
              WHERE l.run_id = 1 AND l.lane = 0 \
                AND (m.transaction_id, m.global_position) > (l.upto_transaction_id, l.upto_position)"
        ))
        .await;
    assert!(caught_up > 0, "no event after the plan was caught up");
    db.assert_int(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        before + caught_up,
    )
    .await;
    db.drop().await;
}

/// A run that cannot use lanes says why, in `plan` and when asked for `--jobs`, and replays
/// on one connection: here a per-event and a set-based projection in the same run.
#[tokio::test(flavor = "multi_thread")]
async fn plan_and_rebuild_say_why_a_run_cannot_use_lanes() {
    let db = fresh_db().await;
    db.exec("CREATE TABLE totals (LIKE accounts INCLUDING ALL)")
        .await;
    append_concurrently(&db, "acc", 3, 10).await;
    let all = events(&db).await;
    let p = Config::default()
        .event("preset", "emmett")
        .projection(
            Projection::new("accounts")
                .option("stream_key", "stream")
                .option_toml("row_count_tolerance", "100"),
        )
        .projection(
            Projection::new("totals")
                .option("stream_key", "stream")
                .option_toml("row_count_tolerance", "100"),
        )
        .file("accounts.sql", HANDLERS)
        .file(
            "totals.sql",
            &PER_BATCH.replace("{{accounts}}", "{{totals}}"),
        )
        .write();
    let why = "not in stream lanes: its projections are not all SQL handlers of one kind";
    p.reproject(&db, "rebuild --dry-run")
        .await
        .ok()
        .stdout_has(&format!("in batches on one connection ({why}"));
    p.reproject(&db, "rebuild --yes --jobs 2")
        .await
        .ok()
        .stdout_has(&format!("run 1: swapped. {all} events applied"))
        .stderr_has(
            "this run cannot use them: its projections are not all SQL handlers of one kind",
        );
    db.assert_int("SELECT count(*) FROM reproject.lanes", 0)
        .await;
    assert_truth(&db, "true", "one connection").await;
    db.drop().await;
}
