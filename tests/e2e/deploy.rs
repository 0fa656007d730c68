//! A rolling deploy of a shape change with `reproject run` up: the runner started with the old
//! config keeps the old table current while the new generation is built with the new config,
//! switches to the handlers that built the new tables at the swap, and back at a rollback; a
//! runner started with the old config after the swap is refused.

use crate::config::Projection;
use crate::harness::{Project, TestDb};
use crate::live::{start_runner, wait_for, CAUGHT_UP};
use crate::ordering::background_writers;
use crate::tally;
use std::time::Duration;

/// The new shape: the biggest amount per stream, a column every row must have.
const V2_DDL: &str = "ALTER TABLE {{tally}} ADD COLUMN biggest bigint NOT NULL;\n";

/// The new handlers, which fill it.
const V2_HANDLERS: &str = "\
-- on added
INSERT INTO {{tally}} AS t (stream, n, total, biggest)
VALUES (:stream, 1, (:data->>'amount')::bigint, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = t.n + 1, total = t.total + EXCLUDED.total,
    biggest = greatest(t.biggest, EXCLUDED.biggest);
";

/// The tally project after the change: its `reshape` and the new handlers.
fn v2() -> Project {
    tally::with(Projection::new("tally").option("reshape", "shapes/v2.sql"))
        .file("tally.sql", V2_HANDLERS)
        .file("shapes/v2.sql", V2_DDL)
        .write()
}

/// Rows of `tally` that differ from what the new handlers make of every event (both ways).
async fn v2_differences(db: &TestDb) -> i64 {
    db.int(
        "WITH want AS (SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS total, \
                max((data->>'amount')::bigint) AS biggest FROM events WHERE NOT bad GROUP BY stream) \
         SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT stream, n, total, biggest FROM tally) a) \
              + (SELECT count(*) FROM (SELECT stream, n, total, biggest FROM tally EXCEPT SELECT * FROM want) b)",
    )
    .await
}

async fn has_biggest(db: &TestDb) -> bool {
    db.int(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'tally'::regclass AND attname = 'biggest' AND NOT attisdropped",
    )
    .await
        == 1
}

/// The deploy flow under concurrent appenders: runner (old config) up, `rebuild --no-swap` with
/// the new config, `swap`: the runner applies the new handlers to the new table from the swap
/// position on (every event once, the new column right for events after the swap too); then
/// `rollback`: the runner applies the old handlers to the restored table again.
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_follows_a_shape_change_swap_and_its_rollback() {
    deploy_and_roll_back(false).await;
}

/// The same when reproject built the old generation (so the rollback catches it up itself with
/// the handlers recorded for it, and the runner continues after that).
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_follows_a_shape_change_of_tables_reproject_built() {
    deploy_and_roll_back(true).await;
}

/// The deploy flow; with `rebuilt_before`, the old generation is run 1's (old handlers
/// recorded), and the new one run 2's.
async fn deploy_and_roll_back(rebuilt_before: bool) {
    let (db, v1) = tally::fixture(300).await;
    let v2 = v2();
    if rebuilt_before {
        v1.reproject(&db, "rebuild --yes").await.ok();
    }
    let new_run = if rebuilt_before { 2 } else { 1 };
    // The new config must not write the new shape's rows into the old table.
    v2.reproject(&db, "run --once --from-position head")
        .await
        .code(2)
        .stderr_has("declares `reshape`");
    let runner = start_runner(&db, &v1, "run --from-position head --batch-size 20").await;
    let runs = |sql: &str| sql.replace("RUN", &new_run.to_string());

    let writers = background_writers(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    v2.reproject(&db, "rebuild --no-swap --batch-size 50")
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    v2.reproject(&db, "swap --yes").await.ok();
    let swap_position = db
        .int(&runs(
            "SELECT swap_position FROM reproject.runs WHERE id = RUN",
        ))
        .await;
    // Appenders go on after the swap: the runner applies those events to the new table.
    tokio::time::sleep(Duration::from_millis(800)).await;
    writers.stop().await;
    wait_for(&db, CAUGHT_UP, 60).await;
    assert!(
        db.int("SELECT max(id) FROM events WHERE NOT bad").await > swap_position,
        "events arrived after the swap"
    );
    assert!(has_biggest(&db).await, "the new shape is live");
    assert_eq!(
        v2_differences(&db).await,
        0,
        "the new table holds every event once, by the new handlers, before and after the swap"
    );
    let status = v1.reproject(&db, "status --json").await.ok().json();
    let handlers = &status["projections"][0]["runner"]["handlers"];
    assert!(
        handlers
            .as_str()
            .is_some_and(|h| h.starts_with(&runs("the handlers recorded by run RUN"))),
        "status shows that the runner applies the new run's handlers: {status}"
    );
    v1.reproject(&db, "status")
        .await
        .ok()
        .stdout_has(&runs("runner applies the handlers recorded by run RUN"));

    // Back to the old shape with appenders: the runner re-applies the events since the swap to
    // the restored table with its configured (old) handlers.
    let writers = background_writers(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    v2.reproject(&db, "rollback --yes").await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    writers.stop().await;
    wait_for(&db, CAUGHT_UP, 60).await;
    assert!(!has_biggest(&db).await, "the old shape is back");
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "the restored table holds every event once, by the old handlers"
    );
    let status = v1.reproject(&db, "status --json").await.ok().json();
    assert_eq!(
        status["projections"][0]["runner"]["handlers"],
        serde_json::Value::Null,
        "back on its configured handlers: {status}"
    );

    let out = runner.stop().await;
    out.ok()
        .stderr_has(&runs("handlers switched: the tables of `tally` were swapped in, built by run RUN with other handlers than this runner's config"))
        .stderr_has("restart `reproject run` with the config that built them")
        .stderr_has(if rebuilt_before {
            "handlers switched: the tables of `tally` were rolled back to, built by run 1 with this runner's configured handlers"
        } else {
            "handlers switched: the tables of `tally` were rolled back to by a rollback, and no run recorded the handlers that built them"
        });
    db.drop().await;
}

/// A runner started with the old config after the swap would write the old rows into the new
/// shape: refused, naming the run and the fix, before anything is applied; the new config runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_with_the_config_before_the_shape_change_is_refused() {
    let (db, v1) = tally::fixture(200).await;
    let v2 = v2();
    v2.reproject(&db, "rebuild --yes").await.ok();
    tally::append(&db, 50).await;
    v1.reproject(&db, "run --once")
        .await
        .code(2)
        .stderr_has("the live tables of projection `tally` were reshaped and built by run 1 with other handlers than this config's")
        .stderr_has("restart `reproject run` with the config that built them");
    db.assert_int_because(
        "SELECT count(*) FROM reproject.live_checkpoints c, reproject.runs r \
         WHERE r.id = 1 AND c.position = r.swap_position AND c.events = 0",
        1,
        "nothing applied: the checkpoint is where the swap set it",
    )
    .await;
    v2.reproject(&db, "run --once").await.ok();
    assert_eq!(v2_differences(&db).await, 0);
    db.drop().await;
}
