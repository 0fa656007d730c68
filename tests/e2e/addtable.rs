//! Adding a table to a projection (`create`): the table is listed under `tables` before it
//! exists, with its definition; the rebuild builds it from the definition, the swap renames it
//! into place (nothing replaced, no `_old`), a rollback parks it as `_rolled_back_N` and
//! `cleanup` drops it; once live, the definition is compared, never run again; a definition
//! that does not fit is refused before anything is written.

use crate::config::Projection;
use crate::harness::{refused, Background, Project, TestDb};
use crate::tally;
use std::time::Duration;

/// The new table: one row per event, written beside `tally` (the other half of a split).
const LOG_HANDLER: &str =
    "INSERT INTO {{tally_log}} (id, stream, amount) VALUES (:position, :stream, (:data->>'amount')::bigint);\n";

/// The definition of `tally_log`, granting `reader` what the application needs.
fn definition(reader: &str) -> String {
    format!(
        "-- the log of every amount, per event
CREATE TABLE {{{{tally_log}}}} (
    id bigint PRIMARY KEY,
    stream text NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0)
);
CREATE INDEX tally_log_by_stream ON {{{{tally_log}}}} (stream);
GRANT SELECT ON {{{{tally_log}}}} TO {reader};
"
    )
}

/// The tally projection keeping `tally` and adding `tally_log` (defined by `def`).
fn adding(def: &str) -> Project {
    tally::with(
        Projection::new("tally")
            .tables(&["tally", "tally_log"])
            .option_toml("create", "{ tally_log = \"tally_log.sql\" }"),
    )
    .file("tally.sql", &format!("{}{LOG_HANDLER}", tally::HANDLERS))
    .file("tally_log.sql", def)
    .write()
}

/// The tally fixture with `tally` owned by a role of its own, and a reader role.
struct Fixture {
    db: TestDb,
    owner: String,
    reader: String,
}

impl Fixture {
    async fn new(events: i64) -> Fixture {
        let db = tally::db(events).await;
        let (owner, reader) = (format!("owner_{}", db.name), format!("reader_{}", db.name));
        db.exec(&format!(
            "CREATE ROLE {owner}; CREATE ROLE {reader};
             ALTER TABLE tally OWNER TO {owner}; GRANT SELECT ON tally TO {reader};"
        ))
        .await;
        Fixture { db, owner, reader }
    }

    async fn drop(self) {
        let Fixture { db, owner, reader } = self;
        db.exec(&format!(
            "DROP OWNED BY {owner}, {reader} CASCADE; DROP ROLE {owner}; DROP ROLE {reader}"
        ))
        .await;
        db.drop().await;
    }
}

/// `tally_log` holds one row per event of the table `events`.
async fn assert_log_complete(db: &TestDb, why: &str) {
    db.assert_int_because(
        "SELECT (SELECT count(*) FROM events WHERE NOT bad) - (SELECT count(*) FROM tally_log l JOIN events e ON e.id = l.id AND e.stream = l.stream AND (e.data->>'amount')::bigint = l.amount)",
        0,
        why,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_table_is_built_from_its_definition_swapped_in_and_parked_by_a_rollback() {
    let fx = Fixture::new(300).await;
    let db = &fx.db;
    // Run 1 builds `tally` with the handlers of the old version, which a rollback reapplies.
    tally::project().reproject(db, "rebuild --yes").await.ok();
    let p = adding(&definition(&fx.reader));
    let tally_oid = db.oid("tally").await;

    p.reproject(db, "plan")
        .await
        .ok()
        .stdout_has("new table `tally_log` -> built as `tally_log_rebuild` from")
        .stdout_has("column amount bigint NOT NULL")
        .stdout_has("index USING btree (stream)");
    p.reproject(db, "rebuild --dry-run")
        .await
        .ok()
        .stdout_has("create `tally_log_rebuild` from")
        .stdout_has("rename each new table's `x_rebuild` to `x`");
    assert!(
        !db.exists("tally_log").await,
        "plan and the dry run create nothing"
    );

    // Readers of the live table and appenders of events during the whole rebuild and swap.
    let reader = Background::repeat(db, Duration::from_millis(5), |_| {
        "SELECT count(*) FROM tally".to_string()
    })
    .await;
    let appender = Background::repeat(db, Duration::from_millis(20), |i| {
        format!(
            "INSERT INTO events (stream, type, data) VALUES ('s{}', 'added', jsonb_build_object('amount', {i}))",
            i % 10
        )
    })
    .await;
    p.reproject(db, "rebuild --yes")
        .await
        .ok()
        .stdout_has("swapped");
    assert!(reader.stop().await > 0);
    assert!(appender.stop().await > 0);

    // Fidelity: the replaced table as in every swap, the new one as its definition says.
    assert_ne!(db.oid("tally").await, tally_oid);
    assert!(db.exists("tally_old").await);
    assert!(
        !db.exists("tally_log_old").await,
        "a new table replaces nothing"
    );
    // `run` is not up: catch the events appended after the swap position up by hand.
    db.assert_int(
        "SELECT count(*) FROM tally_log WHERE id > (SELECT swap_position FROM reproject.runs WHERE id = 2)",
        0,
    )
    .await;
    db.assert_text(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'tally_log'::regclass",
        Some(&fx.owner),
    )
    .await;
    assert_eq!(
        db.int_as(
            &fx.reader,
            "SELECT count(*) FROM tally_log",
            "the definition's grant"
        )
        .await,
        db.int("SELECT count(*) FROM tally_log").await
    );
    db.assert_int(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname LIKE '%rebuild%'",
        0,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM pg_class WHERE relname IN ('tally_log_pkey', 'tally_log_by_stream')",
        2,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'tally_log'::regclass AND conname = 'tally_log_amount_check'",
        1,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM reproject.helper_tables WHERE table_name LIKE 'tally_log%'",
        0,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM reproject.run_tables WHERE live_name = 'tally_log' AND added",
        1,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM tally_log WHERE id <= (SELECT swap_position FROM reproject.runs WHERE id = 2)",
        db.int("SELECT count(*) FROM events WHERE NOT bad AND id <= (SELECT swap_position FROM reproject.runs WHERE id = 2)").await,
    )
    .await;
    let added_oid = db.oid("tally_log").await;

    // Rollback: the old set of tables, with the old data caught up; the new table leaves.
    tally::append(db, 30).await;
    p.reproject(db, "rollback --yes").await.ok();
    assert_eq!(
        db.oid("tally").await,
        tally_oid,
        "the replaced table is back"
    );
    assert_eq!(
        tally::expected_differences(db, "tally").await,
        0,
        "caught up"
    );
    assert!(
        !db.exists("tally_log").await,
        "the old generation never had it"
    );
    assert_eq!(
        db.oid("tally_log_rolled_back_2").await,
        added_oid,
        "parked like a replaced table"
    );
    db.assert_int(
        "SELECT count(*) FROM reproject.helper_tables WHERE table_name = 'tally_log_rolled_back_2' AND kind = 'rolled_back'",
        1,
    )
    .await;

    p.reproject(db, "cleanup --yes")
        .await
        .ok()
        .stdout_has("tally_log_rolled_back_2");
    assert!(!db.exists("tally_log_rolled_back_2").await);

    // Rebuilt again, it is added again.
    p.reproject(db, "rebuild --yes").await.ok();
    assert_log_complete(db, "the second addition").await;
    fx.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn once_live_the_definition_is_not_run_again_and_the_table_is_rebuilt_like_any_other() {
    let fx = Fixture::new(100).await;
    let db = &fx.db;
    let p = adding(&definition(&fx.reader));
    p.reproject(db, "rebuild --yes").await.ok();
    let first = db.oid("tally_log").await;

    tally::append(db, 5).await;
    p.reproject(db, "plan")
        .await
        .ok()
        .stdout_has("`tally_log` exists with the shape its definition (")
        .stdout_has("remove it from `create`")
        .stdout_has("table `tally_log` (100 rows) -> rebuilt as `tally_log_rebuild`, kept as `tally_log_old`");
    p.reproject(db, "rebuild --yes")
        .await
        .ok()
        .stderr_has("exists with the shape its definition");
    assert_eq!(
        db.oid("tally_log_old").await,
        first,
        "replaced, kept for a rollback"
    );
    assert_log_complete(db, "rebuilt").await;
    assert_eq!(tally::expected_differences(db, "tally").await, 0);
    db.assert_int(
        "SELECT count(*) FROM reproject.run_tables WHERE run_id = 2 AND added",
        0,
    )
    .await;
    fx.drop().await;
}

/// Split: `tally_log` (one row per event) is retired, `tally_entries` takes its place with
/// another shape; a rollback brings back the old pair.
#[tokio::test(flavor = "multi_thread")]
async fn a_split_retires_one_table_and_adds_another_and_a_rollback_returns_to_the_old_set() {
    let db = tally::db(120).await;
    let old_log = "INSERT INTO {{tally_log}} (id, stream) VALUES (:position, :stream);\n";
    let before = tally::with(Projection::new("tally").tables(&["tally", "tally_log"]))
        .file("tally.sql", &format!("{}{old_log}", tally::HANDLERS))
        .write();
    db.exec("CREATE TABLE tally_log (id bigint PRIMARY KEY, stream text NOT NULL)")
        .await;
    before.reproject(&db, "rebuild --yes").await.ok();
    let log_oid = db.oid("tally_log").await;

    let entries = "INSERT INTO {{tally_entries}} (position, stream, amount) VALUES (:position, :stream, (:data->>'amount')::bigint);\n";
    let after = tally::with(
        Projection::new("tally")
            .tables(&["tally", "tally_entries"])
            .option_toml("retire", "[\"tally_log\"]")
            .option_toml("create", "{ tally_entries = \"entries.sql\" }"),
    )
    .file("tally.sql", &format!("{}{entries}", tally::HANDLERS))
    .file(
        "entries.sql",
        "CREATE TABLE {{tally_entries}} (position bigint PRIMARY KEY, stream text NOT NULL, amount bigint NOT NULL);\n",
    )
    .write();
    after
        .reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("new table `tally_entries`")
        .stdout_has("retired table `tally_log` (120 rows)");
    after.reproject(&db, "rebuild --yes").await.ok();
    assert!(!db.exists("tally_log").await);
    db.assert_int("SELECT count(*) FROM tally_entries", 120)
        .await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);

    tally::append(&db, 15).await;
    after.reproject(&db, "rollback --yes").await.ok();
    assert_eq!(db.oid("tally_log").await, log_oid);
    db.assert_int_because(
        "SELECT count(*) FROM tally_log",
        135,
        "the retired table came back caught up by the handlers that built it",
    )
    .await;
    assert!(!db.exists("tally_entries").await);
    assert!(db.exists("tally_entries_rolled_back_2").await);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_definition_that_does_not_fit_is_refused_before_anything_is_written() {
    let fx = Fixture::new(20).await;
    let db = &fx.db;

    // A statement that fails: file and line.
    let broken = adding("CREATE TABLE {{tally_log}} (id bigint PRIMARY KEY, stream text NOT NULL, amount bigint);\nCREATE INDEX ON {{tally_log}} (no_such_column);\n");
    broken
        .reproject(db, "plan")
        .await
        .code(2)
        .stderr_has("tally_log.sql:2: projection `tally`: the definition of the new table `tally_log` fails")
        .stderr_has("no_such_column");
    refused(db, &broken, &["tally_log.sql:2"]).await;

    // Handlers that do not fit the new table: prepared against what the definition makes.
    let wrong_handlers = tally::with(
        Projection::new("tally")
            .tables(&["tally", "tally_log"])
            .option_toml("create", "{ tally_log = \"tally_log.sql\" }"),
    )
    .file(
        "tally.sql",
        &format!(
            "{}INSERT INTO {{{{tally_log}}}} (id, missing) VALUES (:position, 1);\n",
            tally::HANDLERS
        ),
    )
    .file("tally_log.sql", &definition(&fx.reader))
    .write();
    refused(
        db,
        &wrong_handlers,
        &["the statement does not prepare", "missing"],
    )
    .await;

    // The table exists with another shape (another table of that name, or changed by hand).
    db.exec("CREATE TABLE tally_log (id bigint PRIMARY KEY, stream text)")
        .await;
    let p = adding(&definition(&fx.reader));
    for command in ["plan", "rebuild --dry-run"] {
        p.reproject(db, command)
            .await
            .code(2)
            .stderr_has("projection `tally`: `create` defines `tally_log`, which exists with a different shape")
            .stderr_has("the definition has column amount bigint NOT NULL; the table does not")
            .stderr_has("the definition has column stream text NOT NULL; the table does not");
    }
    refused(db, &p, &["which exists with a different shape"]).await;
    db.exec("DROP TABLE tally_log").await;

    // A definition for a table the projection does not list, or naming another table.
    let unlisted = tally::with(
        Projection::new("tally").option_toml("create", "{ tally_log = \"tally_log.sql\" }"),
    )
    .file("tally_log.sql", &definition(&fx.reader))
    .write();
    unlisted.reproject(db, "plan").await.code(2).stderr_has(
        "projection `tally`: `create` defines `tally_log`, which is not under `tables`",
    );
    let other = adding(
        "CREATE TABLE {{tally_log}} (id bigint);\nALTER TABLE {{tally}} ADD COLUMN x int;\n",
    );
    other
        .reproject(db, "plan")
        .await
        .code(2)
        .stderr_has("tally_log.sql:2: projection `tally`: the definition of `tally_log` names `{{tally}}`; it may name only `{{tally_log}}`");

    // A name another projection owns.
    let taken = tally::with(
        Projection::new("tally")
            .tables(&["tally", "tally_log"])
            .option_toml("create", "{ tally_log = \"tally_log.sql\" }"),
    )
    .projection(Projection::new("other").tables(&["tally_log"]))
    .file("tally.sql", &format!("{}{LOG_HANDLER}", tally::HANDLERS))
    .file("other.sql", "-- on added\nSELECT 1;\n")
    .file("tally_log.sql", &definition(&fx.reader))
    .write();
    taken
        .reproject(db, "plan")
        .await
        .code(2)
        .stderr_has("table `tally_log` is listed by projections `tally` and `other`");
    assert!(!db.exists("tally_log").await);
    fx.drop().await;
}

/// A live runner with the new config before the swap would write a table that does not exist;
/// a partial rebuild would copy its rows from a live table that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_runner_and_partial_rebuilds_are_refused_until_the_new_table_exists() {
    let fx = Fixture::new(20).await;
    let db = &fx.db;
    let p = adding(&definition(&fx.reader));
    p.reproject(db, "run --from-position 0")
        .await
        .code(2)
        .stderr_has("projection `tally` lists `tally_log`, which does not exist yet (`create`)");
    // A partial rebuild keeps rows of the live tables, and the new table has none.
    p.reproject(db, "rebuild --yes --from-position 10")
        .await
        .code(2)
        .stderr_has("projection `tally` declares `create` for `tally_log`: a partial rebuild");
    assert!(!db.exists("reproject.runs").await, "nothing written");
    fx.drop().await;
}

/// A table created under the new table's name while the run waits for its swap: the swap
/// replaces nothing it did not plan to, and is refused (exit 4) with everything left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_created_under_the_name_before_the_swap_refuses_the_swap() {
    let fx = Fixture::new(40).await;
    let db = &fx.db;
    let p = adding(&definition(&fx.reader));
    p.reproject(db, "rebuild --yes --no-swap").await.ok();
    assert!(db.exists("tally_log_rebuild").await);
    // The same shape (so the config still validates), made by someone else.
    db.exec("CREATE TABLE tally_log (LIKE tally_log_rebuild INCLUDING ALL)")
        .await;
    let made = db.oid("tally_log").await;
    let tally = db.oid("tally").await;
    p.reproject(db, "swap --yes")
        .await
        .code(4)
        .stderr_has("projection `tally`: `tally_log` exists now; the run was to create it");
    assert_eq!(db.oid("tally_log").await, made, "not replaced");
    assert_eq!(db.oid("tally").await, tally, "nothing swapped");
    assert!(
        db.exists("tally_log_rebuild").await,
        "the rebuilt table waits"
    );
    db.exec("DROP TABLE tally_log").await;
    p.reproject(db, "swap --yes").await.ok();
    assert_log_complete(db, "swapped once the name was free").await;
    fx.drop().await;
}

/// A rolling deploy that adds a table, with `reproject run` up on the old config and appenders
/// throughout: after the swap the runner applies the handlers that built the new generation,
/// new table included; after the rollback it is back on its own handlers and the new table is
/// parked.
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_on_the_old_config_follows_the_swap_that_adds_a_table_and_its_rollback() {
    use crate::live::{start_runner, wait_for, CAUGHT_UP};
    let fx = Fixture::new(200).await;
    let db = &fx.db;
    let v1 = tally::project();
    v1.reproject(db, "rebuild --yes").await.ok();
    let v2 = adding(&definition(&fx.reader));
    let runner = start_runner(db, &v1, "run --from-position head --batch-size 20").await;

    let writers = crate::ordering::background_writers(db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    v2.reproject(db, "rebuild --no-swap --batch-size 50")
        .await
        .ok();
    v2.reproject(db, "swap --yes").await.ok();
    let swap_position = db
        .int("SELECT swap_position FROM reproject.runs WHERE id = 2")
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    writers.stop().await;
    wait_for(db, CAUGHT_UP, 60).await;
    assert!(db.int("SELECT max(id) FROM events WHERE NOT bad").await > swap_position);
    assert_eq!(tally::expected_differences(db, "tally").await, 0);
    assert_log_complete(db, "the runner writes the added table after the swap").await;

    let writers = crate::ordering::background_writers(db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    v2.reproject(db, "rollback --yes").await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    writers.stop().await;
    wait_for(db, CAUGHT_UP, 60).await;
    assert!(!db.exists("tally_log").await);
    assert_eq!(
        tally::expected_differences(db, "tally").await,
        0,
        "every event once in the restored table"
    );
    runner
        .stop()
        .await
        .ok()
        .stderr_has("handlers switched: the tables of `tally` were swapped in, built by run 2");
    fx.drop().await;
}
