//! `cleanup`, `history` and `rollback` act on the config's projections (database-wide only with
//! `--all-projections`); `cleanup` says what each drop ends; a rollback after the first rebuild
//! of tables the application built works with `--with-current-handlers`; what interrupted runs
//! leave is explained and cleared.

use crate::config::{Config, Projection};
use crate::harness::{wait_until, Project, TestDb};
use crate::tally;

/// A second projection over the same events, in a config of its own: `counts` (events per
/// stream), which shares no table with `tally`.
const COUNTS_HANDLERS: &str = "\
-- on added
INSERT INTO {{counts}} AS c (stream, n) VALUES (:stream, 1)
ON CONFLICT (stream) DO UPDATE SET n = c.n + 1;
";

/// Projection `counts` (events per stream) with the handlers given.
fn counts_with(handlers: &str) -> Project {
    Config::tally_events()
        .projection(Projection::new("counts"))
        .file("counts.sql", handlers)
        .write()
}

fn counts() -> Project {
    counts_with(COUNTS_HANDLERS)
}

/// One config with both projections.
fn both() -> Project {
    tally::config()
        .projection(Projection::new("counts"))
        .file("counts.sql", COUNTS_HANDLERS)
        .write()
}

/// `tally` as the tally fixture sets it up, and `counts` built by "the application".
async fn setup(db: &TestDb, events: i64) {
    tally::setup(db, events).await;
    db.exec(
        "CREATE TABLE counts (stream text PRIMARY KEY, n int NOT NULL);
         INSERT INTO counts SELECT stream, count(*) FROM events WHERE NOT bad GROUP BY stream;",
    )
    .await;
}

/// Two configs in one database that share no projection: with config A, `history` shows only
/// A's runs, `cleanup --yes` drops only A's helper tables (B's rollback still works after it),
/// and `--all-projections` widens both to the whole database.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_history_and_rollback_keep_to_the_config() {
    let db = TestDb::new().await;
    setup(&db, 200).await;
    let a = tally::project();
    let b = counts();
    a.reproject(&db, "rebuild --yes").await.ok();
    b.reproject(&db, "rebuild --yes").await.ok();

    let history = a.reproject(&db, "history").await;
    history
        .ok()
        .stdout_has("run 1 [swapped] tally")
        .stdout_has("1 run(s) of projections not in this config are not shown");
    assert!(!history.stdout.contains("run 2"), "{}", history.stdout);
    let runs = a.reproject(&db, "history --json").await.ok().json()["runs"].clone();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let all = a.reproject(&db, "history --all-projections").await;
    all.ok()
        .stdout_has("run 1 [swapped] tally")
        .stdout_has("run 2 [swapped] counts");
    a.reproject(&db, "history counts")
        .await
        .code(2)
        .stderr_has("unknown projection `counts`")
        .stderr_has("--all-projections");
    a.reproject(&db, "history --all-projections counts")
        .await
        .ok()
        .stdout_has("run 2 [swapped] counts");

    // The newest swap in the database is B's; A's rollback undoes A's.
    a.reproject(&db, "rollback --yes")
        .await
        .ok()
        .stdout_has("run 1: rolled back (tally)");

    let listed = a.reproject(&db, "cleanup").await;
    listed
        .ok()
        .stdout_has("would drop `tally_rolled_back_1`")
        .stdout_has("not considered: 1 helper table(s) of counts (not in this config; `--all-projections` includes them)");
    assert!(!listed.stdout.contains("counts_old"), "{}", listed.stdout);
    let dropped = a.reproject(&db, "cleanup --yes").await;
    dropped.ok().stdout_has("dropped `tally_rolled_back_1`");
    assert!(!dropped.stdout.contains("counts_old"), "{}", dropped.stdout);
    assert!(db.exists("counts_old").await, "B's rollback point is kept");

    // B's rollback still works.
    let counts_before = db.oid("counts_old").await;
    b.reproject(&db, "rollback --yes")
        .await
        .ok()
        .stdout_has("run 2: rolled back (counts)");
    assert_eq!(db.oid("counts").await, counts_before);

    // Database-wide only when asked.
    a.reproject(&db, "cleanup --all-projections --yes")
        .await
        .ok()
        .stdout_has("dropped `counts_rolled_back_2`");
    db.assert_int("SELECT count(*) FROM reproject.helper_tables", 0)
        .await;
    db.drop().await;
}

/// A run that swapped projections of two configs together is not rolled back from a config
/// that has only one of them (it would change the other's tables, or mix generations), unless
/// `--all-projections` says so; the refusal's hint is that command, and it works.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_partly_outside_the_config_is_rolled_back_only_with_the_flag() {
    let db = TestDb::new().await;
    setup(&db, 100).await;
    both().reproject(&db, "rebuild --yes").await.ok();
    let a = tally::project();
    let live = db.oid("tally").await;
    a.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("run 1 swapped tally, counts together, and `counts` is not in this config")
        .stderr_has("`reproject rollback --all-projections tally counts`");
    assert_eq!(db.oid("tally").await, live, "nothing was changed");
    let old_tally = db.oid("tally_old").await;
    let old_counts = db.oid("counts_old").await;
    a.reproject(&db, "rollback --yes --all-projections tally counts")
        .await
        .ok()
        .stdout_has("run 1: rolled back (");
    assert_eq!(db.oid("tally").await, old_tally);
    assert_eq!(db.oid("counts").await, old_counts);
    db.drop().await;
}

/// Every table `cleanup` lists says what dropping it ends: the rollback of a swap, the resume
/// of a failed run, the resume of a run whose process died; a run awaiting its swap is kept.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_says_what_each_drop_ends() {
    let db = TestDb::new().await;
    setup(&db, 300).await;
    tally::project().reproject(&db, "rebuild --yes").await.ok();
    let swapped_at = db
        .text("SELECT to_char(swapped_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM reproject.runs WHERE id = 1")
        .await
        .unwrap();
    // Run 2 of `counts` fails on its 50th event: its table is the resume point.
    let failing = counts_with(&COUNTS_HANDLERS.replace(
        "VALUES (:stream, 1)",
        "VALUES (:stream, 1 / (50 - :position)::int)",
    ));
    failing
        .reproject(&db, "rebuild --yes --batch-size 10")
        .await
        .code(1);
    let everything = both();
    let listed = everything.reproject(&db, "cleanup").await;
    listed
        .ok()
        .stdout_has("would drop `tally_old` (previous table of `tally`, projection tally, run 1")
        .stdout_has(&format!(
            "ends the rollback of run 1 (swapped {swapped_at} UTC)"
        ))
        .stdout_has(
            "would drop `counts_rebuild` (rebuild table of `counts`, projection counts, run 2",
        )
        .stdout_has("ends the resume of run 2 (failed");

    // Run 3 of `counts` is killed mid-replay: recorded as running, held by nobody.
    let slow = counts_with(&format!("{COUNTS_HANDLERS}SELECT pg_sleep(0.01);\n"));
    let mut child = slow.spawn(&db, "rebuild --yes --batch-size 5");
    wait_until(
        &db,
        "SELECT position >= 20 FROM reproject.checkpoints WHERE run_id = 3",
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let listed = everything.reproject(&db, "cleanup").await;
    listed
        .ok()
        .stdout_has(
            "would drop `counts_rebuild` (rebuild table of `counts`, projection counts, run 3",
        )
        .stdout_has("ends the resume of run 3 (interrupted in phase replay");

    // A run awaiting its swap keeps its tables.
    everything
        .reproject(&db, "rebuild --yes --no-swap counts")
        .await
        .ok();
    everything
        .reproject(&db, "cleanup")
        .await
        .ok()
        .stdout_has("kept `counts_rebuild` (rebuild table of `counts`): run 4 is awaiting_swap");
    db.drop().await;
}

/// The first rebuild of a table the application built records no handlers for the replaced
/// table. The rebuild says so and what rollback will need; with events since the swap, a plain
/// rollback refuses with a hint that works: `--with-current-handlers` catches the old table up
/// with the config's handlers, from the swap position, and restores it holding every event.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_after_the_first_rebuild_catches_up_with_consent() {
    let (db, p) = tally::fixture(200).await;
    let app_built = db.oid("tally").await;
    p.reproject(&db, "rebuild --yes")
        .await
        .ok()
        .stdout_has("undo with `reproject rollback`")
        .stdout_has("note: the tables replaced for `tally` were not built by reproject's handlers")
        .stdout_has("as long as no event arrives after the swap position (200)")
        .stdout_has("`reproject rollback --with-current-handlers`");
    // `reproject run` keeps the new table live; it started after the swap.
    let runner = p.spawn(&db, "run --batch-size 20");
    tally::append(&db, 30).await;
    let caught_up =
        "SELECT (SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally') \
                     = (SELECT max(id) FROM events)";
    wait_until(&db, caught_up).await;
    let refused = p.reproject(&db, "rollback --yes").await;
    refused
        .code(2)
        .stderr_has("refusing to roll back run 1: 30 event(s) arrived since the swap")
        .stderr_has(
            "hint: nothing was changed; `reproject rollback --with-current-handlers tally`",
        );
    assert_ne!(db.oid("tally").await, app_built, "nothing was changed");
    p.reproject(&db, "rollback --yes --with-current-handlers tally")
    .await
    .ok()
    .stderr_has("as --with-current-handlers allows, the previous tables are caught up with this config's handlers")
    .stdout_has("caught up with 30 event(s) since the swap, to position 230");
    assert_eq!(
        db.oid("tally").await,
        app_built,
        "the application's table is back"
    );
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "it holds every event up to its new position"
    );
    // The runner continues on the restored table from there.
    tally::append(&db, 15).await;
    wait_until(&db, caught_up).await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    std::process::Command::new("kill")
        .args(["-TERM", &runner.id().unwrap().to_string()])
        .status()
        .unwrap();
    runner.wait_with_output().await.unwrap();
    db.drop().await;
}

/// A projection whose config has no handlers a rollback can apply (a Rust projection here is
/// out of reach of the binary; an old table that lost a column is not): the refusal says so
/// and points to what can be done instead, never to a flag that would fail too.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_never_suggests_handlers_that_cannot_apply() {
    let db = tally::db(50).await;
    db.exec("ALTER TABLE tally ADD COLUMN note text").await;
    let with_note =
        tally::handlers_then("UPDATE {{tally}} SET note = 'seen' WHERE stream = :stream;\n");
    with_note.reproject(&db, "rebuild --yes").await.ok();
    // The application's table (now `tally_old`) loses the column the handlers write.
    db.exec("ALTER TABLE tally_old DROP COLUMN note").await;
    tally::append(&db, 5).await;
    with_note.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("this config's handlers cannot be applied to them either")
        .stderr_has("keep the current tables (to change them, fix the projection and run `reproject rebuild tally`)");
    with_note
        .reproject(&db, "rollback --yes --with-current-handlers")
        .await
        .code(2)
        .stderr_has("refusing to roll back run 1: 5 event(s)");
    db.drop().await;
}

/// A swap whose drop of the retired table did not happen (refused here by an event trigger,
/// as a process killed right after the commit would leave it) leaves `tally_retired_1`:
/// `cleanup` says what it is and that nothing depends on it, and the next swap drops it.
#[tokio::test(flavor = "multi_thread")]
async fn a_retired_table_left_behind_is_explained_and_dropped_by_the_next_swap() {
    let (db, p) = tally::fixture(100).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    db.exec(
        "CREATE FUNCTION refuse_retired_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects()
                      WHERE object_type = 'table' AND object_name LIKE 'tally_retired%') THEN
             RAISE EXCEPTION 'test: the drop of a retired table is refused';
           END IF;
         END $$;
         CREATE EVENT TRIGGER refuse_retired_drop ON sql_drop EXECUTE FUNCTION refuse_retired_drop();",
    )
    .await;
    p.reproject(&db, "rebuild --yes")
        .await
        .ok()
        .stderr_has("could not drop `tally_retired_1`");
    assert!(db.exists("tally_retired_1").await);
    p.reproject(&db, "cleanup")
        .await
        .ok()
        .stdout_has("would drop `tally_retired_1` (retired previous table of `tally`, projection tally, run 1")
        .stdout_has("retired by the swap of run 2")
        .stdout_has("nothing depends on it")
        .stdout_has("ends the rollback of run 2");
    // A registry written before retired tables had a kind of their own (as `old`) is
    // reclassified by the migration that introduced it.
    db.exec(
        "UPDATE reproject.helper_tables SET kind = 'old' WHERE table_name = 'tally_retired_1';
         ALTER TABLE reproject.helper_tables DROP COLUMN retired_by;
         ALTER TABLE reproject.helper_tables DROP CONSTRAINT helper_tables_kind_check;
         ALTER TABLE reproject.helper_tables ADD CONSTRAINT helper_tables_kind_check
             CHECK (kind IN ('rebuild', 'old', 'rolled_back'));
         DELETE FROM reproject.schema_migrations WHERE version = 13;",
    )
    .await;
    p.reproject(&db, "cleanup")
        .await
        .ok()
        .stdout_has("would drop `tally_retired_1` (retired previous table of `tally`, projection tally, run 1")
        .stdout_has("retired by the swap of run 2");
    db.exec("DROP EVENT TRIGGER refuse_retired_drop").await;
    p.reproject(&db, "rebuild --yes").await.ok().stderr_has(
        "dropping `tally_retired_1`, left by an interrupted drop after the swap of run 2",
    );
    assert!(!db.exists("tally_retired_1").await);
    assert!(!db.exists("tally_retired_2").await);
    db.assert_text_because(
        "SELECT string_agg(table_name || ' ' || kind, ', ') FROM reproject.helper_tables",
        Some("tally_old old"),
        "only the rollback point of the newest swap is left",
    )
    .await;
    db.drop().await;
}

/// Run 1 swapped `tally` and `counts` together, run 2 only `tally`: run 1 can no longer be
/// rolled back (its `tally_old` was retired by run 2), so `counts_old` is listed as what it is
/// now, a table nothing depends on, not as a rollback point.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_tells_a_rollback_point_from_a_table_no_rollback_can_use() {
    let db = TestDb::new().await;
    setup(&db, 100).await;
    let p = both();
    p.reproject(&db, "rebuild --yes").await.ok();
    p.reproject(&db, "rebuild --yes tally").await.ok();
    p.reproject(&db, "cleanup")
        .await
        .ok()
        .stdout_has("would drop `counts_old` (previous table of `counts`, projection counts, run 1")
        .stdout_has("run 1 (swapped ")
        .stdout_has("can no longer be rolled back (`tally_old` is now the rollback point of run 2): nothing depends on it")
        .stdout_has("would drop `tally_old` (previous table of `tally`, projection tally, run 2")
        .stdout_has("ends the rollback of run 2 (swapped ");
    db.drop().await;
}
