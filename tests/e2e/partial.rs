//! Partial rebuilds: `--streams` rebuilds only the selected streams' rows and leaves every other
//! row identical to the live one at the swap; `--from-position` keeps the live rows up to the
//! position and replays the rest, and is refused where that state is not well defined.

use crate::config::{Config, Projection};
use crate::harness::{differing_rows, Background, Project, TestDb};
use crate::tally;
use std::time::Duration;

/// The tally fixture with `stream_key` and handlers that double every amount: rows they build
/// differ from the live ones (built by the right handlers), so a test can tell rebuilt rows
/// from copied ones.
fn doubling_with_stream_key() -> Project {
    tally::with_stream_key()
        .file("tally.sql", &tally::doubling_handlers())
        .write()
}

/// The tally projection with one more option, the right handlers.
fn tally_with(key: &str, value: &str) -> Project {
    tally::with(Projection::new("tally").option(key, value)).write()
}

/// What the doubling handlers build for the events now in the table, per stream.
const DOUBLED: &str =
    "(SELECT stream, count(*)::int AS n, 2 * sum((data->>'amount')::bigint) AS total \
                       FROM events WHERE NOT bad GROUP BY stream)";

/// What the right handlers build, per stream.
const RIGHT: &str = "(SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS total \
                     FROM events WHERE NOT bad GROUP BY stream)";

/// Changes live rows with `changes` (SQL), then keeps a copy of `tally` as `live_before`.
async fn keep_live_before(db: &TestDb, changes: &str) {
    db.exec(changes).await;
    db.exec("CREATE TABLE live_before AS SELECT * FROM tally")
        .await;
}

/// After a `--streams s1,s2` run of the doubling handlers: s1 and s2 as those build them, every
/// other row as `live_before` held it.
async fn assert_s1_s2_rebuilt_and_others_copied(db: &TestDb) {
    let selected = "stream IN ('s1', 's2')";
    tally::assert_rows(db, selected, DOUBLED, "the selected streams, rebuilt").await;
    let others = "stream NOT IN ('s1', 's2')";
    tally::assert_rows(db, others, "live_before", "every other row, copied").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_rebuilds_only_those_rows_and_copies_every_other_row() {
    let db = tally::db(300).await;
    // Live rows that a rebuild would change, in selected and in other streams.
    keep_live_before(&db, "UPDATE tally SET total = -1 WHERE stream IN ('s1', 's2', 's3'); UPDATE tally SET n = 999 WHERE stream = 's7'").await;
    let p = doubling_with_stream_key();

    let dry = p
        .reproject(&db, "rebuild --dry-run --json --streams s1,s2")
        .await;
    let plan = dry.ok().json();
    let steps = plan["steps"].to_string();
    assert!(
        steps.contains("replays 60 of the 300 event(s)"),
        "dry run counts the selected events: {steps}"
    );
    assert!(
        !db.exists("reproject.runs").await,
        "a dry run writes nothing"
    );

    let out = p.reproject(&db, "rebuild --yes --streams s1,s2").await;
    out.ok()
        .stderr_has("partial rebuild of 2 stream(s)")
        .stderr_has("the 8 row(s) of the streams that were not rebuilt now equal the live ones");
    db.assert_int("SELECT count(*) FROM tally", 10).await;
    // The selected streams: exactly what the new handlers build from all their events.
    tally::assert_rows(
        &db,
        "stream IN ('s1', 's2')",
        DOUBLED,
        "rebuilt by the doubling handlers",
    )
    .await;
    // Every other row: identical to live, its corruption included (copied, not rebuilt).
    tally::assert_rows(&db, "stream NOT IN ('s1', 's2')", "live_before", "").await;
    db.assert_int("SELECT total FROM tally WHERE stream = 's3'", -1)
        .await;
    // The selected rows equal a full rebuild's with the same handlers.
    db.exec("CREATE TABLE partial_result AS SELECT * FROM tally")
        .await;
    p.reproject(&db, "rebuild --yes").await.ok();
    tally::assert_rows(
        &db,
        "stream IN ('s1', 's2')",
        "partial_result",
        "the partial run's rows",
    )
    .await;
    // The history shows what the partial run rebuilt.
    p.reproject(&db, "history")
        .await
        .ok()
        .stdout_has("partial rebuild of 2 stream(s): s1, s2");
    db.drop().await;
}

/// The rows of the other streams are copied under the swap's locks: whatever live holds then
/// (rows changed, deleted or added since the rebuild started) is what the new table holds.
#[tokio::test(flavor = "multi_thread")]
async fn the_copy_is_taken_at_the_swap_whatever_changed_in_live_meanwhile() {
    let db = tally::db(300).await;
    let p = doubling_with_stream_key();
    p.reproject(
        &db,
        &[
            "rebuild",
            "--yes",
            "--no-swap",
            "--streams-where",
            "stream = 's1'",
        ],
    )
    .await
    .ok()
    .stderr_has("partial rebuild of 1 stream(s) (selected by `stream = 's1'`): s1");
    // Meanwhile: new events for s1 and s5; the application's projector keeps live current;
    // other live rows change, one disappears, one appears.
    db.exec(
        "INSERT INTO events (stream, type, data) SELECT s, 'added', jsonb_build_object('amount', i) \
           FROM generate_series(1, 20) i, unnest(ARRAY['s1', 's5']) s;
         UPDATE tally t SET n = r.n, total = r.total FROM (SELECT stream, count(*)::int n, sum((data->>'amount')::bigint) total FROM events GROUP BY stream) r \
           WHERE t.stream = r.stream AND t.stream IN ('s1', 's5');
         UPDATE tally SET n = 999 WHERE stream = 's6';
         DELETE FROM tally WHERE stream = 's7';
         INSERT INTO tally VALUES ('manual', 1, 1);",
    )
    .await;
    db.exec("CREATE TABLE live_at_swap AS SELECT * FROM tally")
        .await;
    p.reproject(&db, "swap --yes")
        .await
        .ok()
        .stderr_has("the 9 row(s) of the streams that were not rebuilt now equal the live ones")
        .stderr_has("3 removed and 3 added since the early copy");
    tally::assert_rows(
        &db,
        "stream <> 's1'",
        "live_at_swap",
        "every other row is the live one at the swap",
    )
    .await;
    // s1 includes the events that arrived after the rebuild started (caught up by `swap`,
    // which kept the recorded stream selection: s5's new events were not applied twice).
    tally::assert_rows(
        &db,
        "stream = 's1'",
        DOUBLED,
        "rebuilt by the doubling handlers",
    )
    .await;
    // Rollback brings back the live table as it was at the swap, every row.
    p.reproject(&db, "rollback --yes").await.ok();
    assert_eq!(
        differing_rows(&db, "tally", "live_at_swap", "stream, n, total").await,
        0
    );
    db.drop().await;
}

/// An application projector keeps writing other streams' rows while the rebuild runs and
/// swaps: the swap copies them under the lock and the projector's later writes land on the new
/// table, so nothing it wrote is lost.
#[tokio::test(flavor = "multi_thread")]
async fn rows_written_by_the_application_during_the_rebuild_are_kept() {
    let db = tally::db(3000).await;
    let p = doubling_with_stream_key();
    // The application's projector: appends to s5 and updates its row in one transaction.
    let writer = Background::repeat(&db, Duration::from_millis(5), |i| {
        format!(
            "BEGIN;
             INSERT INTO events (stream, type, data) VALUES ('s5', 'added', '{{\"amount\": {i}}}');
             UPDATE tally SET n = n + 1, total = total + {i} WHERE stream = 's5';
             COMMIT;"
        )
    })
    .await;
    p.reproject(&db, "rebuild --yes --batch-size 20 --streams s1,s2")
        .await
        .ok();
    // Keep writing for a moment after the swap, onto the new table.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = writer.stop().await;
    assert!(
        written > 10,
        "the writer ran during the rebuild ({written})"
    );
    tally::assert_rows(
        &db,
        "stream NOT IN ('s1', 's2')",
        RIGHT,
        "s5 holds every update of the application's projector, before, during and after the swap",
    )
    .await;
    tally::assert_rows(
        &db,
        "stream IN ('s1', 's2')",
        DOUBLED,
        "rebuilt by the doubling handlers",
    )
    .await;
    db.drop().await;
}

/// `ledger`: one row per event, keyed by its position.
fn ledger_project() -> Project {
    Config::tally_events()
        .projection(Projection::new("ledger").option("position_column", "event_position"))
        .file("ledger.sql", LEDGER_HANDLERS)
        .write()
}

/// The new handlers mark their rows `v2`; the live table was written by `v1`.
const LEDGER_HANDLERS: &str = "\
-- on added
INSERT INTO {{ledger}} (event_position, stream, amount, version) VALUES (:position, :stream, (:data->>'amount')::bigint, 'v2');
";

async fn ledger_setup(db: &TestDb) {
    tally::setup(db, 300).await;
    db.exec(
        "UPDATE events SET at = '2026-01-01T00:00:00Z'::timestamptz + id * interval '1 minute';
         UPDATE events SET bad = true WHERE id IN (50, 250);
         CREATE TABLE ledger (event_position bigint PRIMARY KEY, stream text NOT NULL, amount bigint NOT NULL, version text NOT NULL);
         INSERT INTO ledger SELECT id, stream, (data->>'amount')::bigint, 'v1' FROM events WHERE NOT bad;
         -- a wrong live row before the position and one after it
         UPDATE ledger SET amount = -5 WHERE event_position IN (10, 200);",
    )
    .await;
}

/// Rows up to `upto` as live has them (v1, the wrong row included), the rest as v2 builds them.
async fn ledger_differences(db: &TestDb, upto: i64) -> i64 {
    differing_rows(
        db,
        "ledger",
        &format!(
            "(SELECT id AS event_position, stream, CASE WHEN id = 10 THEN -5 ELSE (data->>'amount')::bigint END AS amount, \
                     CASE WHEN id <= {upto} THEN 'v1' ELSE 'v2' END AS version FROM events WHERE NOT bad) e"
        ),
        "event_position, stream, amount, version",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn from_position_keeps_the_rows_up_to_it_and_replays_the_rest() {
    let db = TestDb::new().await;
    ledger_setup(&db).await;
    let p = ledger_project();
    let dry = p
        .reproject(&db, "rebuild --dry-run --json --from-position 150")
        .await;
    let steps = dry.ok().json()["steps"].to_string();
    assert!(steps.contains("replays 149 of the 298 event(s)"), "{steps}");
    p.reproject(&db, "rebuild --yes --from-position 150")
        .await
        .ok()
        .stderr_has("copied 149 row(s) that are not rebuilt");
    assert_eq!(ledger_differences(&db, 150).await, 0);
    db.assert_int_because(
        "SELECT amount FROM ledger WHERE event_position = 200",
        200,
        "the wrong row after the position was rebuilt",
    )
    .await;

    // --from-time: the last event before 02:00:30 is the one at 02:00 (position 120).
    let out = p
        .reproject(&db, "rebuild --yes --from-time 2026-01-01T02:00:30Z")
        .await;
    out.ok().stderr_has("is at position 120");
    // Rows up to 120 are the live ones (v1 up to 120, as the previous rebuild left them).
    assert_eq!(ledger_differences(&db, 120).await, 0);
    p.reproject(&db, "history").await.ok().stdout_has(
        "partial rebuild from position 120 (the last event before 2026-01-01T02:00:30+00:00)",
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn from_position_is_refused_where_the_state_there_is_not_defined() {
    let db = TestDb::new().await;
    ledger_setup(&db).await;
    // No position_column: refused, naming the projection and why.
    tally::project()
        .reproject(&db, "rebuild --yes --from-position 100")
        .await
        .code(2)
        .stderr_has("projection `tally` declares no `position_column`, which --from-position needs")
        .stderr_has("state at a position cannot be reconstructed")
        .stderr_has("hint: declare `position_column = \"COLUMN\"` under projection `tally`");
    // An upsert handler: rows change after they are written, so refused even with the column.
    db.exec("ALTER TABLE tally ADD COLUMN pos bigint").await;
    let upsert = tally_with("position_column", "pos");
    upsert.reproject(&db, "rebuild --yes --from-position 100")
    .await
    .code(2)
    .stderr_has("tally.sql:2: projection `tally`: --from-position needs append-only tables, and this statement updates rows it conflicts with");
    // A position the live tables have not reached.
    db.exec("DELETE FROM ledger WHERE event_position > 100")
        .await;
    let p = ledger_project();
    p.reproject(&db, "rebuild --yes --from-position 200")
        .await
        .code(2)
        .stderr_has("hold no row written at or after it (highest `event_position`: 100)");
    assert!(!db.exists("reproject.runs").await, "nothing was written");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_partial_requests_are_config_errors() {
    let db = tally::db(50).await;
    tally::project()
        .reproject(&db, "rebuild --yes --streams s1")
        .await
        .code(2)
        .stderr_has("projection `tally` declares no `stream_key`, which --streams needs")
        .stderr_has("hint: declare `stream_key = \"COLUMN\"`");
    let unknown = tally_with("stream_key", "posting_id");
    unknown.reproject(&db, "rebuild --yes --streams s1")
    .await
    .code(2)
    .stderr_has("reproject.toml:15: projection `tally`: `stream_key = \"posting_id\"` is not a column of table `tally`");
    assert!(!db.exists("reproject.runs").await, "nothing was written");
    // A column that exists but does not hold the stream: warned before the swap.
    let wrong = tally_with("stream_key", "n");
    wrong
        .reproject(&db, "rebuild --yes --no-swap --streams s1")
        .await
        .ok();
    wrong
        .reproject(&db, "swap --yes")
        .await
        .ok()
        .stderr_has("no row of `tally_rebuild` has a selected stream in its `stream_key` column");
    let p = doubling_with_stream_key();
    p.reproject(
        &db,
        &["rebuild", "--yes", "--streams-where", "no_such_column = 1"],
    )
    .await
    .code(2)
    .stderr_has("--streams-where `no_such_column = 1` cannot be evaluated on the events");
    p.reproject(
        &db,
        &["rebuild", "--yes", "--streams-where", "stream = 'nobody'"],
    )
    .await
    .code(2)
    .stderr_has("selects no event");
    p.reproject(&db, "rebuild --yes --resume --streams s1")
        .await
        .code(2);
    db.drop().await;
}

/// Events the live runner has not applied yet (20 each for s1 and s5), and live rows that
/// differ from what the handlers build.
async fn runner_behind(db: &TestDb) {
    db.exec(
        "INSERT INTO events (stream, type, data) SELECT s, 'added', jsonb_build_object('amount', i) \
           FROM generate_series(1, 20) i, unnest(ARRAY['s1', 's5']) s;
         UPDATE tally SET n = 999 WHERE stream = 's6';
         UPDATE tally SET n = 0 WHERE stream = 's1';",
    )
    .await;
}

/// After the swap: s1 rebuilt, s5 brought from the runner's checkpoint to the swap position,
/// s6 copied as it was; the runner continues from the swap position with nothing left to do.
async fn assert_every_row_at_the_swap_position(db: &TestDb, p: &Project) {
    db.assert_int(
        "SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally'",
        340,
    )
    .await;
    tally::assert_rows(
        db,
        "stream <> 's6'",
        RIGHT,
        "s1 rebuilt, s5 at the swap position",
    )
    .await;
    db.assert_int("SELECT n::bigint FROM tally WHERE stream = 's6'", 999)
        .await;
    p.reproject(db, "run --once --json")
        .await
        .ok()
        .stdout_has("\"events_applied\": 0");
}

/// With `reproject run` keeping the projection live, its checkpoint is committed with its rows:
/// the other streams' rows are copied in one snapshot with it, the rebuild replays s1's events
/// up to it and every event after it, and nothing is copied under the swap's locks.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_live_checkpoint_the_copy_is_taken_at_its_position() {
    let db = tally::db(300).await;
    let p = tally::with_stream_key().write();
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok();
    runner_behind(&db).await;
    let steps = p
        .reproject(&db, "rebuild --dry-run --json --streams s1")
        .await
        .ok()
        .json()["steps"]
        .to_string();
    assert!(
        steps.contains("replays 70 of the 340 event(s) up to position 340 (the selected streams' events up to the live position 300, and every event after it)"),
        "{steps}"
    );
    let out = p.reproject(&db, "rebuild --yes --streams s1").await;
    out.ok()
        .stderr_has(
            "copied 9 row(s) that are not rebuilt from the live tables at the live position 300",
        )
        .stderr_has("replaying 70 event(s)")
        .stderr_has("are the live ones at position 300, brought to position 340 by the replay");
    assert!(
        !out.stderr.contains("under the lock"),
        "nothing copied under the lock:\n{}",
        out.stderr
    );
    assert_every_row_at_the_swap_position(&db, &p).await;
    db.drop().await;
}

/// A runner started after the rebuild's early copy: its checkpoint, read under the swap's
/// locks, is behind the swap position, so the other streams' events in between are applied to
/// the rows copied there, and the runner neither skips nor repeats an event.
#[tokio::test(flavor = "multi_thread")]
async fn rows_copied_behind_the_swap_position_are_brought_up_to_it() {
    let db = tally::db(300).await;
    let p = tally::with_stream_key().write();
    p.reproject(&db, "rebuild --yes --no-swap --streams s1")
        .await
        .ok()
        .stderr_has("(an early copy");
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok();
    runner_behind(&db).await;
    p.reproject(&db, "swap --yes").await.ok().stderr_has(
        "and applied the 20 event(s) of those streams the live tables had not yet applied",
    );
    assert_every_row_at_the_swap_position(&db, &p).await;
    db.drop().await;
}

/// `--resume` (and `swap`) continue a partial run with the selection it recorded.
#[tokio::test(flavor = "multi_thread")]
async fn resume_continues_with_the_recorded_selection() {
    let db = tally::db(300).await;
    keep_live_before(
        &db,
        "UPDATE tally SET total = -1 WHERE stream IN ('s1', 's3')",
    )
    .await;
    let p = doubling_with_stream_key();
    p.reproject(
        &db,
        "rebuild --yes --batch-size 5 --max-events 10 --streams s1,s2",
    )
    .await
    .ok();
    db.assert_text("SELECT status FROM reproject.runs", Some("paused"))
        .await;
    p.reproject(&db, "rebuild --yes --resume")
        .await
        .ok()
        .stderr_has("the 8 row(s) of the streams that were not rebuilt now equal the live ones");
    assert_s1_s2_rebuilt_and_others_copied(&db).await;
    db.assert_int_because(
        "SELECT events_applied FROM reproject.runs",
        60,
        "only the selected streams' events were replayed",
    )
    .await;
    db.drop().await;
}

/// The copy works on any table: identity and generated columns, no primary key, duplicate rows
/// (compared as multisets), NULL stream keys (never selected), several tables per projection.
#[tokio::test(flavor = "multi_thread")]
async fn the_copy_keeps_duplicates_identities_and_generated_columns() {
    let db = tally::db(100).await;
    db.exec(
        "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY, stream text, note text NOT NULL, \
                             len int GENERATED ALWAYS AS (length(note)) STORED);
         CREATE TABLE dups (stream text, note text);
         INSERT INTO notes (stream, note) SELECT stream, 'v1' FROM events ORDER BY id;
         INSERT INTO notes (stream, note) VALUES (NULL, 'orphan');
         INSERT INTO dups SELECT stream, 'v1' FROM events;",
    )
    .await;
    let notes = Projection::new("notes")
        .tables(&["notes", "dups"])
        .option("stream_key", "stream");
    let p = Config::events("events")
        .projection(notes)
        .file(
            "notes.sql",
            "-- on added\nINSERT INTO {{notes}} (stream, note) VALUES (:stream, 'v2');\nINSERT INTO {{dups}} (stream, note) VALUES (:stream, 'v2');\n",
        )
        .write();
    p.reproject(&db, "rebuild --yes --no-swap --streams s1")
        .await
        .ok();
    // Live changes after the early copy: one duplicate fewer, one more, a note rewritten.
    db.exec(
        "DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE stream = 's3');
         INSERT INTO dups VALUES ('s4', 'v1'), (NULL, NULL);
         UPDATE notes SET note = 'changed' WHERE id = (SELECT max(id) FROM notes WHERE stream = 's5');",
    )
    .await;
    db.exec("CREATE TABLE notes_at_swap AS SELECT * FROM notes; CREATE TABLE dups_at_swap AS SELECT * FROM dups")
        .await;
    p.reproject(&db, "swap --yes").await.ok();
    for (table, at_swap, columns) in [
        ("notes", "notes_at_swap", "id, stream, note, len"),
        ("dups", "dups_at_swap", "stream, note"),
    ] {
        assert_eq!(
            differing_rows(
                &db,
                &format!("(SELECT * FROM {table} WHERE stream IS DISTINCT FROM 's1') t"),
                &format!("(SELECT * FROM {at_swap} WHERE stream IS DISTINCT FROM 's1') b"),
                columns
            )
            .await,
            0,
            "`{table}`: every other row, duplicates counted, is the live one at the swap"
        );
    }
    db.assert_int(
        "SELECT count(*) FROM dups WHERE stream = 's1' AND note = 'v2'",
        10,
    )
    .await;
    db.assert_int("SELECT count(*) FROM dups WHERE stream = 's1'", 10)
        .await;
    db.assert_int(
        "SELECT count(*) FROM notes WHERE stream = 's1' AND note = 'v2' AND len = 2",
        10,
    )
    .await;
    db.drop().await;
}

/// `reproject run` keeps the table live and appenders write all streams (out of position order,
/// some rolling back) throughout a `--streams` rebuild and its swap: afterwards every row is
/// exact — the selected streams rebuilt, the others carried on from the runner's checkpoint
/// without losing or repeating an event (their live corruption kept, as copied rows).
#[tokio::test(flavor = "multi_thread")]
async fn streams_rebuild_under_a_live_runner_and_appenders_loses_nothing() {
    use crate::live::{wait_for, CAUGHT_UP};
    let db = tally::db(1500).await;
    let p = tally::with_stream_key()
        .file("tally.sql", &tally::slow_handlers("0.001"))
        .write();
    let runner =
        crate::live::start_runner(&db, &p, "run --from-position head --batch-size 20").await;
    let writers = crate::ordering::background_writers(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.exec("UPDATE tally SET total = total + 1000000 WHERE stream IN ('s1', 's3')")
        .await;
    let out = p
        .reproject(&db, "rebuild --yes --batch-size 50 --streams s1,s2")
        .await;
    out.ok().stderr_has("at the live position");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = writers.stop().await;
    assert!(written > 20, "the writers wrote throughout ({written})");
    wait_for(&db, CAUGHT_UP, 60).await;
    runner.stop().await.ok();
    assert_eq!(
        db.int("SELECT total FROM tally WHERE stream = 's3'").await
            - db.int("SELECT sum((data->>'amount')::bigint)::bigint FROM events WHERE stream = 's3' AND NOT bad")
                .await,
        1000000,
        "s3 was copied (its live corruption kept) and carried on by the runner"
    );
    db.exec("UPDATE tally SET total = total - 1000000 WHERE stream = 's3'")
        .await;
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "every row exact: s1, s2 rebuilt; the others neither lost nor repeated an event"
    );
    db.drop().await;
}

/// A live checkpoint left by an earlier swap, with no runner since, does not say where the
/// live tables are: here the application's projector moved them on. It is not taken as the
/// live position, so the other streams' rows are copied as the application left them and no
/// event is applied to them twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_left_by_a_swap_is_not_taken_as_the_live_position() {
    let db = tally::db(300).await;
    let p = tally::with_stream_key().write();
    p.reproject(&db, "rebuild --yes").await.ok();
    db.assert_text(
        "SELECT set_by FROM reproject.live_checkpoints",
        Some("swap"),
    )
    .await;
    // The application appends and projects 20 events of s5 itself.
    db.exec(
        "BEGIN;
         INSERT INTO events (stream, type, data) SELECT 's5', 'added', jsonb_build_object('amount', i) FROM generate_series(1, 20) i;
         UPDATE tally SET n = n + 20, total = total + 210 WHERE stream = 's5';
         COMMIT;",
    )
    .await;
    p.reproject(&db, "rebuild --yes --streams s1")
        .await
        .ok()
        .stderr_has("(an early copy");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// `ordering = "xid8"`: `--streams` reads the selected streams in (transaction id, position)
/// order like any rebuild; with a hand-over checkpoint (one position is no cut there) it is
/// refused, and so is `--from-position`.
#[tokio::test(flavor = "multi_thread")]
async fn streams_in_xid8_mode() {
    let db = tally::db(300).await;
    db.exec(
        "ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
         UPDATE tally SET total = -1 WHERE stream IN ('s1', 's3');
         CREATE TABLE live_before AS SELECT * FROM tally;
         CREATE TABLE ext_checkpoints (name text PRIMARY KEY, pos bigint, tx xid8);
         INSERT INTO ext_checkpoints VALUES ('tally', 300, NULL);",
    )
    .await;
    let xid8 = |projection: Projection| {
        Config::tally_events()
            .event("ordering", "xid8")
            .event("transaction_id", "tx")
            .projection(projection.option("stream_key", "stream"))
            .file("tally.sql", &tally::doubling_handlers())
            .write()
    };
    let with_handover = xid8(Projection::new("tally").option_toml("handover", "{ table = \"ext_checkpoints\", key_column = \"name\", key = \"tally\", position_column = \"pos\", transaction_id_column = \"tx\" }"));
    with_handover.reproject(&db, "rebuild --yes --streams s1")
    .await
    .code(2)
    .stderr_has("`--streams` with `ordering = \"xid8\"` is refused for a projection whose live tables are kept by `reproject run` or a `handover` projector");
    let p = xid8(Projection::new("tally"));
    p.reproject(&db, "rebuild --yes --from-position 100")
        .await
        .code(2)
        .stderr_has("--from-position is refused with `ordering = \"xid8\"`");
    p.reproject(&db, "rebuild --yes --streams s1,s2").await.ok();
    assert_s1_s2_rebuilt_and_others_copied(&db).await;
    db.drop().await;
}
