//! Retiring a table a projection no longer has (`retire`): the swap keeps it as `_old` beside
//! the replaced tables, a rollback puts it back, `cleanup` drops it; what depends on it is
//! refused up front; a later rebuild skips the entry with a note.

use crate::config::Projection;
use crate::harness::{Project, TestDb};
use crate::tally;

/// The tally fixture with a second live table, `tally_log` (one row per event), that the
/// projection wrote until now.
async fn db_with_log(events: i64) -> TestDb {
    let db = tally::db(events).await;
    db.exec(
        "CREATE TABLE tally_log (id bigint PRIMARY KEY, stream text NOT NULL);
         INSERT INTO tally_log SELECT id, stream FROM events WHERE NOT bad;",
    )
    .await;
    db
}

/// `projection` retiring `tally_log`.
fn retires_log(projection: Projection) -> Projection {
    projection.option_toml("retire", "[\"tally_log\"]")
}

/// The projection that writes both `tally` and `tally_log`.
fn with_log() -> Projection {
    Projection::new("tally").tables(&["tally", "tally_log"])
}

/// The projection without `tally_log`, retiring it.
fn retiring() -> Project {
    tally::with(retires_log(Projection::new("tally"))).write()
}

/// The database with `tally_log` and the project that retires it.
async fn fixture(events: i64) -> (TestDb, Project) {
    (db_with_log(events).await, retiring())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_table_is_kept_as_old_and_comes_back_with_a_rollback() {
    let (db, p) = fixture(300).await;
    let log = db.oid("tally_log").await;

    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("retired table `tally_log` (300 rows): no longer rebuilt, kept as `tally_log_old` after the swap");
    p.reproject(&db, "rebuild --yes").await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert!(
        !db.exists("tally_log").await,
        "the retired table is gone from its name"
    );
    assert_eq!(
        db.oid("tally_log_old").await,
        log,
        "the retired table is kept as tally_log_old"
    );
    db.assert_int(
        "SELECT count(*) FROM reproject.helper_tables WHERE table_name = 'tally_log_old' AND kind = 'old' AND run_id = 1",
        1,
    )
    .await;

    p.reproject(&db, "rollback --yes").await.ok();
    assert_eq!(
        db.oid("tally_log").await,
        log,
        "the rollback puts the very same table back"
    );
    db.assert_int("SELECT count(*) FROM tally_log", 300).await;
    assert!(!db.exists("tally_log_old").await);
    db.assert_int(
        "SELECT count(*) FROM reproject.helper_tables WHERE table_name LIKE 'tally_log%'",
        0,
    )
    .await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_rebuild_skips_the_retired_entry_and_cleanup_drops_the_kept_table() {
    let (db, p) = fixture(200).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    assert!(db.exists("tally_log_old").await);

    // The entry still in the config names no table now: a note, not an error.
    tally::append(&db, 20).await;
    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("`retire` names `tally_log`, which does not exist");
    p.reproject(&db, "rebuild --yes")
        .await
        .ok()
        .stderr_has("nothing to retire");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert!(!db.exists("tally_log").await);

    // Run 1 can no longer be rolled back: cleanup drops what it kept, the retired table too.
    p.reproject(&db, "cleanup --yes")
        .await
        .ok()
        .stdout_has("dropped `tally_log_old`");
    assert!(!db.exists("tally_log_old").await);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retiring_a_table_something_depends_on_is_refused_naming_it() {
    let (db, p) = fixture(50).await;
    db.exec(
        "CREATE VIEW log_per_stream AS SELECT stream, count(*) FROM tally_log GROUP BY stream;
         CREATE TABLE log_notes (id bigint REFERENCES tally_log (id));
         CREATE POLICY logged_only ON log_notes USING (id IN (SELECT id FROM tally_log));
         CREATE PUBLICATION log_changes FOR TABLE tally_log;",
    )
    .await;
    for command in ["plan", "rebuild --yes"] {
        p.reproject(&db, command)
            .await
            .code(2)
            .stderr_has("projection `tally` retires `tally_log`, and 4 depend(s) on it")
            .stderr_has("view log_per_stream")
            .stderr_has("foreign key log_notes_id_fkey of log_notes")
            .stderr_has("policy logged_only of log_notes")
            .stderr_has("publication log_changes");
    }
    assert!(db.exists("tally_log").await, "nothing was renamed");
    assert!(!db.exists("tally_rebuild").await, "nothing was built");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_both_listed_and_retired_is_a_config_error() {
    let db = db_with_log(10).await;
    let p = tally::with(retires_log(with_log())).write();
    p.reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("projection `tally` retires table `tally_log`, which projection `tally` still lists under `tables`");
    db.drop().await;
}

/// Events that arrive after the swap reach a retired table at a rollback too: the handlers
/// that built the previous generation (recorded by the run before) still write it, and write
/// its kept `_old` table before it is renamed back.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_catches_the_retired_table_up_with_the_handlers_that_built_it() {
    let db = db_with_log(100).await;
    let log_handler = "INSERT INTO {{tally_log}} (id, stream) VALUES (:position, :stream);\n";
    let both = tally::with(with_log())
        .file("tally.sql", &format!("{}{log_handler}", tally::HANDLERS))
        .write();
    both.reproject(&db, "rebuild --yes").await.ok();
    db.assert_int("SELECT count(*) FROM tally_log", 100).await;

    let p = retiring();
    p.reproject(&db, "rebuild --yes").await.ok();
    assert!(!db.exists("tally_log").await);
    tally::append(&db, 30).await;
    p.reproject(&db, "rollback --yes").await.ok();
    db.assert_int_because(
        "SELECT count(*) FROM tally_log",
        130,
        "the 30 events since the swap were applied to the retired table before it came back",
    )
    .await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// A view that appears on the retired table while the rebuild waits for its swap is refused
/// by the swap, which leaves everything as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_dependent_that_appears_before_the_swap_refuses_the_swap() {
    let (db, p) = fixture(50).await;
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    db.exec("CREATE VIEW late_view AS SELECT * FROM tally_log")
        .await;
    p.reproject(&db, "swap --yes")
        .await
        .code(2)
        .stderr_has("retires `tally_log`, and 1 depend(s) on it: view late_view");
    assert!(db.exists("tally_log").await);
    assert!(!db.exists("tally_log_old").await);
    assert!(db.exists("tally_rebuild").await, "the rebuilt table waits");
    db.exec("DROP VIEW late_view").await;
    p.reproject(&db, "swap --yes").await.ok();
    assert!(db.exists("tally_log_old").await);
    db.drop().await;
}
