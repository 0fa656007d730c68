//! A replay writes only its own generation's tables: validation refuses handler and check
//! statements whose write target the server resolves to another table, and a run-time guard
//! stops (and rolls back) a batch whose transaction wrote one anyway, through a function or a
//! trigger.

use crate::config::Projection;
use crate::harness::{Project, TestDb};
use crate::tally;

/// The tally handlers with one more statement (line 4 of the file).
fn with_statement(extra: &str) -> Project {
    tally::handlers(&format!("{}{extra}\n", tally::HANDLERS))
}

/// What the live `tally` holds, to prove it was not touched.
async fn live_sum(db: &TestDb) -> i64 {
    db.int("SELECT coalesce(sum(n) * 1000000 + sum(total), 0)::bigint FROM tally")
        .await
}

/// A handler calling a function that writes the live table: no planner can see it; the guard
/// stops the first batch, which is rolled back, the run is recorded failed naming the table.
#[tokio::test(flavor = "multi_thread")]
async fn a_function_writing_the_live_table_is_stopped_at_run_time() {
    let db = tally::db(50).await;
    db.exec(
        "CREATE FUNCTION bump(s text) RETURNS void LANGUAGE plpgsql AS
           $f$ BEGIN UPDATE tally SET n = n + 1 WHERE stream = s; END $f$;",
    )
    .await;
    let before = live_sum(&db).await;
    let p = with_statement("SELECT bump(:stream);");
    let out = p.reproject(&db, "rebuild --yes").await;
    out.code(1)
        .stderr_has("wrote `public.tally`, which is not one of the rebuild tables")
        .stderr_has("projection `tally`")
        .stderr_has("the batch was rolled back")
        .stderr_has("{{tally}}");
    assert_eq!(live_sum(&db).await, before, "the live table is untouched");
    db.assert_int_because(
        "SELECT count(*) FROM tally_rebuild",
        0,
        "the batch was rolled back",
    )
    .await;
    assert_eq!(
        db.text("SELECT status || ': ' || error FROM reproject.runs ORDER BY id DESC LIMIT 1")
            .await
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap(),
        "failed"
    );
    assert!(db
        .text("SELECT error FROM reproject.runs ORDER BY id DESC LIMIT 1")
        .await
        .unwrap_or_default()
        .contains("public.tally"));
    db.drop().await;
}

/// A function writing a table of no projection is stopped too; a zero-row write counts (the
/// lock is the proof), and TRUNCATE does.
#[tokio::test(flavor = "multi_thread")]
async fn writes_to_unrelated_tables_through_functions_are_stopped() {
    let db = tally::db(20).await;
    db.exec(
        "CREATE TABLE side (k text);
         CREATE FUNCTION touch(s text) RETURNS void LANGUAGE plpgsql AS
           $f$ BEGIN DELETE FROM side WHERE k = s; END $f$;
         CREATE FUNCTION wipe() RETURNS void LANGUAGE plpgsql AS
           $f$ BEGIN TRUNCATE side; END $f$;",
    )
    .await;
    for call in [
        "SELECT touch(:stream);",
        "SELECT wipe() WHERE :stream IS NOT NULL;",
    ] {
        let p = with_statement(call);
        p.reproject(&db, "rebuild --yes")
            .await
            .code(1)
            .stderr_has("wrote `public.side`");
    }
    db.drop().await;
}

/// With `replay_triggers = true` the live table's triggers fire on the rebuild table; one that
/// writes the live table itself is stopped (one that keeps its own audit table is not: see
/// fidelity.rs).
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_trigger_writing_the_live_table_is_stopped() {
    let db = tally::db(20).await;
    db.exec(
        "CREATE FUNCTION mirror() RETURNS trigger LANGUAGE plpgsql AS
           $f$ BEGIN IF TG_TABLE_NAME <> 'tally' THEN UPDATE tally SET total = total WHERE stream = NEW.stream; END IF; RETURN NEW; END $f$;
         CREATE TRIGGER mirror AFTER INSERT OR UPDATE ON tally FOR EACH ROW EXECUTE FUNCTION mirror();",
    )
    .await;
    let before = live_sum(&db).await;
    let p = tally::option("replay_triggers", "true");
    p.reproject(&db, "rebuild --yes")
        .await
        .code(1)
        .stderr_has("wrote `public.tally`");
    assert_eq!(live_sum(&db).await, before);
    db.drop().await;
}

/// A projector pasted as it was, the live table named without braces: refused by `plan`,
/// `rebuild --dry-run` and `rebuild` (exit 2) naming the file, line and table and the fix,
/// before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_pasted_handler_writing_the_live_table_is_refused_up_front() {
    let db = tally::db(30).await;
    let before = live_sum(&db).await;
    let p = tally::handlers("-- on added\n\
             INSERT INTO tally AS t (stream, n, total) VALUES (:stream, 1, (:data->>'amount')::bigint)\n\
             ON CONFLICT (stream) DO UPDATE SET n = t.n + 1, total = t.total + EXCLUDED.total;\n");
    for args in [
        &["plan"][..],
        &["rebuild", "--dry-run"],
        &["rebuild", "--yes"],
    ] {
        p.reproject(&db, args)
            .await
            .code(2)
            .stderr_has("tally.sql:2: projection `tally`, section `-- on added`")
            .stderr_has("writes `public.tally` (INSERT), the live table")
            .stderr_has("write {{tally}} (in braces)");
    }
    assert_eq!(live_sum(&db).await, before, "the live table is untouched");
    assert!(!db.exists("tally_rebuild").await, "nothing was created");
    db.assert_int(
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'reproject_standin%'",
        0,
    )
    .await;
    db.drop().await;
}

/// The server resolves the name: schema-qualified, quoted, through the search_path, in a
/// writable CTE, through an updatable view; and a table of no projection.
#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_a_foreign_write_target_is_refused() {
    let db = tally::db(10).await;
    db.exec(
        "CREATE TABLE side (k text);
         CREATE VIEW tally_view AS SELECT * FROM tally;
         CREATE SCHEMA app; CREATE TABLE app.\"Mixed Case\" (k text);",
    )
    .await;
    for (statement, table) in [
        ("UPDATE public.tally SET n = n WHERE stream = :stream;", "public.tally"),
        ("DELETE FROM \"public\".\"tally\" WHERE stream = :stream;", "public.tally"),
        ("WITH gone AS (DELETE FROM tally WHERE stream = :stream RETURNING 1) SELECT count(*) FROM gone;", "public.tally"),
        ("UPDATE tally_view SET n = n WHERE stream = :stream;", "public.tally"),
        ("INSERT INTO side VALUES (:stream);", "public.side"),
        ("INSERT INTO app.\"Mixed Case\" VALUES (:stream);", "app.\"Mixed Case\""),
    ] {
        let p = with_statement(statement);
        p.reproject(&db, "plan")
            .await
            .code(2)
            .stderr_has("tally.sql:4: projection `tally`")
            .stderr_has(&format!("writes `{table}`"));
    }
    // Reading any table is fine; so is a function that only reads.
    let p = with_statement("SELECT count(*) FROM side WHERE k = :stream;");
    p.reproject(&db, "plan").await.ok();
    db.drop().await;
}

/// A check that writes is refused up front, and one that writes through a function fails at
/// the checks (read-only transaction), never touching the table.
#[tokio::test(flavor = "multi_thread")]
async fn checks_only_read() {
    let db = tally::db(10).await;
    let sneaky = |sql: &str| tally::with(Projection::new("tally").check("sneaky", sql)).write();
    let p = sneaky("WITH x AS (DELETE FROM tally RETURNING 1) SELECT count(*) >= 0 FROM x");
    p.reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("check `sneaky`: the check writes `public.tally` (DELETE)");
    db.exec(
        "CREATE FUNCTION wipe_tally() RETURNS boolean LANGUAGE plpgsql AS
           $f$ BEGIN DELETE FROM tally; RETURN true; END $f$;",
    )
    .await;
    let before = live_sum(&db).await;
    let p = sneaky("SELECT wipe_tally()");
    p.reproject(&db, "rebuild --yes")
        .await
        .code(3)
        .stderr_has("read-only transaction");
    assert_eq!(live_sum(&db).await, before);
    db.drop().await;
}

/// `reproject run` may write its projections' live tables and nothing else: a handler whose
/// function writes a table of no projection stops the runner (exit 1) with the batch rolled
/// back and the live checkpoint where it was.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_runner_writes_only_its_live_tables() {
    let db = tally::db(10).await;
    db.exec(
        "CREATE TABLE side (k text);
         CREATE FUNCTION note(s text) RETURNS void LANGUAGE plpgsql AS
           $f$ BEGIN INSERT INTO side VALUES (s); END $f$;",
    )
    .await;
    let p = tally::project();
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok();
    let checkpoint = "SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally'";
    db.assert_int(checkpoint, 10).await;
    tally::append(&db, 5).await;
    let before = live_sum(&db).await;
    p.write(
        "tally.sql",
        &format!("{}SELECT note(:stream);\n", tally::HANDLERS),
    );
    p.reproject(&db, "run --once")
        .await
        .code(1)
        .stderr_has("projection `tally`: the batch of the events after position 10 up to position 15 wrote `public.side`, which is not one of the live tables it builds");
    db.assert_int_because("SELECT count(*) FROM side", 0, "rolled back")
        .await;
    assert_eq!(live_sum(&db).await, before);
    db.assert_int_because(checkpoint, 10, "the checkpoint did not move")
        .await;
    db.drop().await;
}
