//! `reproject rollback` loses no event: the tables it restores first get the events that arrived
//! since the swap, applied with the handlers that built them; when that is impossible it refuses
//! rather than restoring a stale table.

use crate::config::Projection;
use crate::harness::Project;
use crate::tally;

/// Handlers that count every amount twice: a "bad deploy" to roll back.
fn doubling() -> Project {
    tally::handlers(&tally::HANDLERS.replace(
        "(:data->>'amount')::bigint)",
        "2 * (:data->>'amount')::bigint)",
    ))
}

/// Run 1 builds `tally` with the right handlers, run 2 with doubling ones; events arrive after
/// run 2's swap. Rolling back run 2 (with the doubling handlers still in the config) restores
/// run 1's tables caught up with those events by run 1's recorded handlers: exact, none lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_applies_the_events_since_the_swap_with_the_old_handlers() {
    let db = tally::db(300).await;
    tally::project().reproject(&db, "rebuild --yes").await.ok();
    let bad = doubling();
    bad.reproject(&db, "rebuild --yes").await.ok();
    assert!(
        tally::expected_differences(&db, "tally").await > 0,
        "doubled"
    );
    let first_generation = db.oid("tally_old").await;
    tally::append(&db, 250).await;
    let out = bad.reproject(&db, "rollback --yes --batch-size 100").await;
    out.ok()
        .stdout_has("caught up with 250 event(s) since the swap")
        .stderr_has("handlers recorded by run(s) 1");
    assert_eq!(db.oid("tally").await, first_generation);
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "the restored table holds every event, applied by the handlers that built it"
    );
    assert_eq!(
        db.int("SELECT old_position FROM reproject.runs WHERE id = 2")
            .await,
        db.int("SELECT max(id) FROM events").await
    );
    db.assert_text(
        "SELECT lock_attempts->-1->>'outcome' FROM reproject.runs WHERE id = 2",
        Some("rolled_back"),
    )
    .await;
    db.drop().await;
}

/// The table the first swap replaced was not built by reproject: without consent to use the
/// config's handlers, nobody can apply the events that arrived since, so the rollback refuses,
/// changes nothing and names the flag that would do; with no new events it goes ahead.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_refuses_to_restore_a_stale_table() {
    let (db, p) = tally::fixture(100).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    let current = db.oid("tally").await;
    tally::append(&db, 10).await;
    p.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("refusing to roll back run 1: 10 event(s) arrived since the swap")
        .stderr_has("were not built by reproject")
        .stderr_has(
            "hint: nothing was changed; `reproject rollback --with-current-handlers tally`",
        );
    assert_eq!(db.oid("tally").await, current, "nothing was changed");
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("swapped"),
    )
    .await;
    db.drop().await;
}

/// With `reproject run` keeping the projection live, a rollback that caught the previous tables
/// up hands the runner its own position: the runner continues right after it, applying nothing
/// twice (a rewind to where the tables stood at the swap would apply those events again).
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_hands_the_runner_the_position_it_caught_up_to() {
    let db = tally::db(300).await;
    let good = tally::project();
    good.reproject(&db, "rebuild --yes").await.ok();
    doubling().reproject(&db, "rebuild --yes").await.ok();
    let runner = good.spawn(&db, "run --batch-size 20");
    let caught_up =
        "SELECT (SELECT position FROM reproject.live_checkpoints WHERE projection = 'tally') \
                     = (SELECT max(id) FROM events)";
    tally::append(&db, 100).await;
    crate::harness::wait_until(&db, caught_up).await;
    good.reproject(&db, "rollback --yes")
        .await
        .ok()
        .stdout_has("caught up with 100 event(s) since the swap");
    let head = db.int("SELECT max(id) FROM events").await;
    assert_eq!(
        db.text("SELECT position || ' ' || set_by FROM reproject.live_checkpoints")
            .await
            .as_deref(),
        Some(format!("{head} rollback").as_str())
    );
    tally::append(&db, 40).await;
    crate::harness::wait_until(&db, caught_up).await;
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "every event exactly once: 100 by the rollback, 40 by the runner"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &runner.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = runner.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.drop().await;
}

/// The handlers that built the previous tables name a table the config no longer has: they
/// cannot be applied, so with events since the swap the rollback refuses and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_refuses_when_the_old_handlers_no_longer_fit() {
    let db = tally::db(100).await;
    db.exec("CREATE TABLE tally_log (stream text, amount bigint)")
        .await;
    let with_log = tally::with(Projection::new("tally").tables(&["tally", "tally_log"]))
        .file(
            "tally.sql",
            &format!("{}INSERT INTO {{{{tally_log}}}} (stream, amount) VALUES (:stream, (:data->>'amount')::bigint);\n", tally::HANDLERS),
        )
        .write();
    with_log.reproject(&db, "rebuild --yes").await.ok();
    let p = tally::project();
    p.reproject(&db, "rebuild --yes").await.ok();
    let current = db.oid("tally").await;
    tally::append(&db, 5).await;
    p.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("refusing to roll back run 2: 5 event(s) arrived since the swap")
        .stderr_has("recorded by run 1")
        .stderr_has("`{{tally_log}}` is no longer a table of a projection")
        .stderr_has("`reproject rollback --with-current-handlers tally`");
    assert_eq!(db.oid("tally").await, current, "nothing was changed");
    // The hint works: the config's handlers catch the previous table up.
    let previous = db.oid("tally_old").await;
    p.reproject(&db, "rollback --yes --with-current-handlers tally")
        .await
        .ok()
        .stdout_has("caught up with 5 event(s) since the swap");
    assert_eq!(db.oid("tally").await, previous);
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// The handlers that built the previous tables no longer prepare against them (a column they
/// write was dropped since): with events since the swap the rollback refuses and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_refuses_when_the_old_handlers_no_longer_prepare() {
    let db = tally::db(100).await;
    db.exec("ALTER TABLE tally ADD COLUMN note text").await;
    let with_note =
        tally::handlers_then("UPDATE {{tally}} SET note = 'seen' WHERE stream = :stream;\n");
    with_note.reproject(&db, "rebuild --yes").await.ok();
    db.exec("ALTER TABLE tally DROP COLUMN note").await;
    let p = tally::project();
    p.reproject(&db, "rebuild --yes").await.ok();
    let current = db.oid("tally").await;
    tally::append(&db, 3).await;
    p.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("refusing to roll back run 2: 3 event(s) arrived since the swap")
        .stderr_has("cannot prepare the handler");
    assert_eq!(db.oid("tally").await, current, "nothing was changed");
    db.drop().await;
}
