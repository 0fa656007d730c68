//! Projections written in Rust (src/projection.rs): the example program, and the library
//! in-process: mixed with SQL handlers in dependency order, kept live by `run`, and failing
//! cleanly.

use crate::config::{Config as TestConfig, Projection};
use crate::harness::{example, reproject, Project, TestDb};
use reproject::commands::{self, Engine, RebuildOptions, RunOptions};
use reproject::progress::{Cancel, Silent};
use reproject::Config;
use reproject::Db;
use reproject::ErrorKind;
use reproject::{Batch, BoxFuture, RustProjection};

/// examples/rust_projector.rs rebuilds W1's posting_state with Rust code: paused by
/// `--max-events`, continued by `--resume` after more events arrived, checked and swapped; the
/// rows equal the seed function's. The binary refuses the same config with a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn the_rust_projector_example_pauses_resumes_and_swaps() {
    let db = TestDb::new().await;
    // The example renders history timestamps in UTC; so must the reference.
    db.exec(&format!(
        "ALTER DATABASE \"{}\" SET TimeZone = 'UTC'",
        db.name
    ))
    .await;
    db.psql(&example("postings/schema.sql"), &[]).await;
    db.psql(&example("postings/generate.sql"), &[("n", "300")])
        .await;
    let config = example("postings/reproject_rust.toml");

    // The binary cannot run Rust code: exit 2 naming the projection's line, nothing recorded.
    reproject(&db, &config, &["rebuild", "--yes"])
        .await
        .code(2)
        .stderr_has("reproject_rust.toml:35: projection `posting_state` has neither `handlers` nor `command`, and no Rust projection is registered under that name")
        .stderr_has("hint: a projection without `handlers` is a library projection");
    assert!(!db.exists("posting_state_projection_rebuild").await);

    let bin = std::path::Path::new(crate::harness::binary());
    let program = bin
        .parent()
        .unwrap()
        .join("examples")
        .join("rust_projector");
    assert!(
        program.exists(),
        "{} is missing: run `cargo build --examples` (scripts/test.sh does)",
        program.display()
    );
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg(&config).arg(&db.url).args(args);
        cmd.output()
    };
    let out = run(&["--max-events", "1500", "--batch-size-is-not-an-option"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");

    let out = run(&["--max-events", "1500"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("run 1: paused (1500 events applied)"),
        "{stdout}"
    );
    // Every 50th posting is corrupted in the live table until the swap.
    assert_eq!(mismatches(&db).await, "6");

    // Events that arrive while the run is paused are caught up by the resume.
    db.exec(
        "INSERT INTO execution_events (aggregate_type, aggregate_id, aggregate_version, event_type, event_data) \
         SELECT 'posting', p::text, 16, 'conversation_completed', \
                jsonb_build_object('conversation_id', 9100, 'output', 'late ' || p, 'next_conversation_id', 9101, 'next_execution_order', 17) \
         FROM generate_series(1, 300, 7) p",
    )
    .await;
    let out = run(&["--resume"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("run 1: swapped"), "{stdout}");
    assert!(stderr.contains("resuming run 1 (paused)"), "{stderr}");
    assert_eq!(mismatches(&db).await, "0");
    db.assert_int(
        "SELECT count(*) FROM posting_state_projection WHERE current_step = 17",
        43,
    )
    .await;
    db.assert_text("SELECT status || ' ' || initiated_by || ' ' || (handler_sources->'posting_state')::text FROM reproject.runs", Some("swapped rust-projector-example null")).await;

    // Rebuilt again by Rust code: nothing records handlers that could bring `x_old` up to
    // date, so once an event arrived the binary's rollback refuses rather than restore a
    // table that misses it (a null recorded source is never taken for empty SQL handlers).
    let out = run(&[]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.exec("INSERT INTO execution_events (aggregate_type, aggregate_id, aggregate_version, event_type, event_data) VALUES ('posting', '1', 99, 'posting_created', '{}')")
        .await;
    reproject(&db, &config, &["rollback", "--yes"])
        .await
        .code(2)
        .stderr_has("refusing to roll back run 2: 1 event(s) arrived since the swap")
        .stderr_has("were not built by reproject from SQL handlers");
    // Nothing changed: the swapped tables stay live (missing only the new event of posting 1,
    // which nothing keeps live here) and the previous ones are still kept.
    assert_eq!(mismatches(&db).await, "1");
    assert!(db.exists("posting_state_projection_old").await);
    db.drop().await;
}

/// The last line of examples/postings/compare.sql: postings whose row differs from the seed's.
async fn mismatches(db: &TestDb) -> String {
    let out = db.psql(&example("postings/compare.sql"), &[]).await;
    out.trim().lines().last().unwrap_or("").to_string()
}

/// `counts` built by Rust code (no handlers file), `seen` by SQL handlers that read it.
fn mixed() -> Project {
    let counts = Projection::new("counts").handlers(None).check(
        "no zero counts",
        "SELECT NOT EXISTS (SELECT 1 FROM {{counts}} WHERE n < 1)",
    );
    TestConfig::events("events")
        .event("filter", "NOT bad")
        .projection(counts)
        .projection(Projection::new("seen"))
        .file("seen.sql", SEEN)
        .write()
}

/// Reads the Rust projection's table per event: only right if `counts` is applied before it,
/// event by event.
const SEEN: &str = "\
-- on added
INSERT INTO {{seen}} (id, n_then) SELECT :position, n FROM {{counts}} WHERE stream = :stream;
";

/// Counts the events of each stream, one statement per event.
struct Counts;

impl RustProjection for Counts {
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
        Box::pin(async move {
            assert!(!batch.events.is_empty());
            assert_eq!(batch.projection(), "counts");
            let table = batch.table("public.counts")?.quoted();
            let statement = batch
                .client
                .prepare(&format!(
                    "INSERT INTO {table} AS c (stream, n) VALUES ($1, 1) \
                     ON CONFLICT (stream) DO UPDATE SET n = c.n + 1"
                ))
                .await?;
            for e in batch.events {
                batch.client.execute(&statement, &[&e.stream]).await?;
            }
            Ok(())
        })
    }
}

async fn mixed_setup(db: &TestDb) {
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text NOT NULL, type text NOT NULL, \
             data jsonb NOT NULL DEFAULT '{}', bad boolean NOT NULL DEFAULT false);
         CREATE TABLE counts (stream text PRIMARY KEY, n int NOT NULL);
         CREATE TABLE seen (id bigint PRIMARY KEY, n_then int NOT NULL);
         INSERT INTO events (stream, type) SELECT 's' || (i % 7), 'added' FROM generate_series(1, 200) i;
         INSERT INTO counts SELECT stream, count(*) FROM events GROUP BY stream;
         INSERT INTO seen SELECT id, 0 FROM events;
         UPDATE counts SET n = 999 WHERE stream = 's1';",
    )
    .await;
}

/// Differences between `counts`/`seen` and what the events say they must hold.
async fn mixed_differences(db: &TestDb) -> i64 {
    db.int(
        "SELECT (SELECT count(*) FROM (SELECT stream, count(*)::int FROM events WHERE NOT bad GROUP BY stream \
                  EXCEPT SELECT stream, n FROM counts UNION ALL \
                  SELECT stream, n FROM counts EXCEPT SELECT stream, count(*)::int FROM events WHERE NOT bad GROUP BY stream) a) \
              + (SELECT count(*) FROM (SELECT id, (SELECT count(*)::int FROM events f WHERE f.stream = e.stream AND f.id <= e.id AND NOT f.bad) \
                   FROM events e WHERE NOT bad \
                  EXCEPT SELECT id, n_then FROM seen) b) \
              + (SELECT count(*) FROM seen) - (SELECT count(*) FROM events WHERE NOT bad)",
    )
    .await
}

/// A Rust projection and an SQL projection that reads its table rebuild in one run, in
/// dependency order event by event (batches of 13 straddle streams), then `run --once` keeps
/// both live with the same code.
#[tokio::test(flavor = "multi_thread")]
async fn a_rust_projection_rebuilds_with_sql_projections_and_runs_live() {
    let db = TestDb::new().await;
    mixed_setup(&db).await;
    let p = mixed();
    let mut config = Config::load(&p.config()).unwrap();

    // Not registered: refused before anything is written.
    let engine = Engine {
        config: &config,
        db: Db::new(&db.url).unwrap(),
        reporter: &Silent,
        cancel: Cancel::new(),
    };
    let err = commands::rebuild(&engine, &RebuildOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message.contains(
            "reproject.toml:11: projection `counts` has neither `handlers` nor `command`"
        ),
        "{err}"
    );
    assert!(!db.exists("counts_rebuild").await);
    drop(engine);

    // Registering checks the name and refuses a projection with SQL handlers.
    let err = config.register("nope", Counts).unwrap_err();
    assert!(
        err.message.contains("declares no projection of that name"),
        "{err}"
    );
    let err = config.register("seen", Counts).unwrap_err();
    assert!(
        err.message.contains("projection `seen` has SQL handlers"),
        "{err}"
    );
    config.register("counts", Counts).unwrap();

    let engine = Engine {
        config: &config,
        db: Db::new(&db.url).unwrap(),
        reporter: &Silent,
        cancel: Cancel::new(),
    };
    let plan = commands::plan(&engine, &[]).await.unwrap();
    assert_eq!(plan.order, vec!["counts", "seen"]);
    let outcome = commands::rebuild(
        &engine,
        &RebuildOptions {
            batch_size: 13,
            ..RebuildOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome.status, "swapped");
    assert_eq!(outcome.events_applied, 200);
    assert_eq!(mixed_differences(&db).await, 0);
    db.assert_int("SELECT n::bigint FROM counts WHERE stream = 's1'", 29)
        .await;

    // Live: new events (one filtered out) applied by the same code to the live tables.
    db.exec("INSERT INTO events (stream, type, bad) SELECT 's' || (i % 5), 'added', i = 3 FROM generate_series(1, 40) i")
        .await;
    let ran = commands::run(
        &engine,
        &RunOptions {
            once: true,
            batch_size: 9,
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ran.events_applied, 39);
    assert_eq!(mixed_differences(&db).await, 0);
    db.drop().await;
}

/// Fails on the event with id 150.
struct Failing;

impl RustProjection for Failing {
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
        Box::pin(async move {
            Counts.apply(batch).await?;
            if batch.events.iter().any(|e| e.position == 150) {
                return Err(reproject::Error::runtime("event 150 is not welcome"));
            }
            Ok(())
        })
    }
}

/// Commits the engine's transaction: the engine must notice instead of checkpointing.
struct Committing;

impl RustProjection for Committing {
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
        Box::pin(async move {
            Counts.apply(batch).await?;
            batch.client.batch_execute("COMMIT").await?;
            Ok(())
        })
    }
}

/// A failing Rust projection fails the run naming it and the positions; the live tables are
/// untouched and the checkpoint stays at the last good batch. One that commits is caught.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_committing_rust_projection_fails_the_run() {
    let db = TestDb::new().await;
    mixed_setup(&db).await;
    let p = mixed();

    let mut config = Config::load(&p.config()).unwrap();
    config.register("counts", Failing).unwrap();
    let engine = Engine {
        config: &config,
        db: Db::new(&db.url).unwrap(),
        reporter: &Silent,
        cancel: Cancel::new(),
    };
    let opts = RebuildOptions {
        batch_size: 50,
        projections: vec!["counts".into()],
        ..RebuildOptions::default()
    };
    let err = commands::rebuild(&engine, &opts).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Runtime, "{err}");
    assert!(
        err.message
            .contains("projection `counts` (Rust) failed on the events at positions"),
        "{err}"
    );
    assert_eq!(
        err.causes.first().map(String::as_str),
        Some("event 150 is not welcome")
    );
    db.assert_int("SELECT n::bigint FROM counts WHERE stream = 's1'", 999)
        .await;
    db.assert_text("SELECT status || ' ' || c.position FROM reproject.runs r JOIN reproject.checkpoints c ON c.run_id = r.id", Some("failed 100")).await;
    // The batches before the failing one are kept: 100 events counted in the rebuild table.
    db.assert_int("SELECT sum(n)::bigint FROM counts_rebuild", 100)
        .await;

    let mut config = Config::load(&p.config()).unwrap();
    config.register("counts", Committing).unwrap();
    let engine = Engine {
        config: &config,
        db: Db::new(&db.url).unwrap(),
        reporter: &Silent,
        cancel: Cancel::new(),
    };
    let err = commands::rebuild(&engine, &opts).await.unwrap_err();
    assert!(
        err.message
            .contains("projection `counts` (Rust) ended the engine's transaction"),
        "{err}"
    );
    assert!(
        err.hint
            .as_deref()
            .unwrap_or("")
            .contains("must not COMMIT"),
        "{err}"
    );
    // The server's error is kept as the source: a library user can walk to it and downcast.
    let pg = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(|e| e.as_db_error())
        .unwrap_or_else(|| panic!("no database error as the source of {err}"));
    assert_eq!(Some(pg.code().code()), err.sqlstate(), "{err}");
    db.assert_int("SELECT n::bigint FROM counts WHERE stream = 's1'", 999)
        .await;
    db.drop().await;
}

/// `Counts` with a version.
struct CountsVersion(&'static str);

impl RustProjection for CountsVersion {
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
        Counts.apply(batch)
    }
    fn version(&self) -> String {
        self.0.to_string()
    }
}

/// `--resume` refuses to continue a run with another version of the Rust code, continues it
/// with the same one; the binary refuses to `swap` or `run` a Rust projection.
#[tokio::test(flavor = "multi_thread")]
async fn resume_needs_the_same_version_of_the_rust_code() {
    let db = TestDb::new().await;
    mixed_setup(&db).await;
    let p = mixed();
    let rebuild = |version: &'static str, resume: bool| {
        let url = db.url.clone();
        let path = p.config();
        async move {
            let mut config = Config::load(&path).unwrap();
            config.register("counts", CountsVersion(version)).unwrap();
            let engine = Engine {
                config: &config,
                db: Db::new(&url).unwrap(),
                reporter: &Silent,
                cancel: Cancel::new(),
            };
            commands::rebuild(
                &engine,
                &RebuildOptions {
                    batch_size: 10,
                    max_events: (!resume).then_some(60),
                    resume,
                    ..RebuildOptions::default()
                },
            )
            .await
        }
    };
    assert_eq!(rebuild("v1", false).await.unwrap().status, "paused");
    let err = rebuild("v2", true).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(
        err.message
            .contains("the handlers of projection `counts` changed since run 1"),
        "{err}"
    );
    let config = p.config();
    reproject(&db, &config, &["rebuild", "--resume", "--yes"])
        .await
        .code(2)
        .stderr_has("projection `counts` has neither `handlers` nor `command`, and no Rust projection is registered");
    reproject(&db, &config, &["run", "--once"])
        .await
        .code(2)
        .stderr_has("projection `counts` has neither `handlers` nor `command`, and no Rust projection is registered");
    let done = rebuild("v1", true).await.unwrap();
    assert_eq!(done.status, "swapped");
    assert_eq!(done.events_applied, 140);
    assert_eq!(mixed_differences(&db).await, 0);
    db.drop().await;
}

/// A swap of tables built with another version of a Rust projection's code while a runner keeps
/// it live: the runner cannot switch code, so it stops that projection (and the ones connected
/// to it) with the run and the fix, and applies nothing to the new tables.
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_stops_a_rust_projection_swapped_in_by_another_version() {
    let db = TestDb::new().await;
    mixed_setup(&db).await;
    let p = mixed();
    let engine_with = |version: &'static str| {
        let mut config = Config::load(&p.config()).unwrap();
        config.register("counts", CountsVersion(version)).unwrap();
        config
    };
    let v1 = engine_with("v1");
    let v2 = engine_with("v2");
    let engine = |config| Engine {
        config,
        db: Db::new(&db.url).unwrap(),
        reporter: &Silent,
        cancel: Cancel::new(),
    };
    let full = RebuildOptions {
        batch_size: 50,
        ..RebuildOptions::default()
    };
    let first = commands::rebuild(&engine(&v1), &full).await.unwrap();
    assert_eq!(first.status, "swapped");

    let runner = engine(&v1);
    let stop = runner.cancel.clone();
    let opts = RunOptions {
        poll_interval: std::time::Duration::from_millis(20),
        max_poll_interval: std::time::Duration::from_millis(100),
        ..RunOptions::default()
    };
    let ran = commands::run(&runner, &opts);
    let swap = async {
        // Let the runner start, then swap in tables built by the other version.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let second = commands::rebuild(&engine(&v2), &full).await.unwrap();
        assert_eq!(second.status, "swapped");
        db.exec("INSERT INTO events (stream, type) SELECT 's' || (i % 5), 'added' FROM generate_series(1, 10) i")
            .await;
        // A safety net: the runner must have stopped on its own long before.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        stop.cancel();
    };
    let (ran, ()) = tokio::select! {
        r = ran => (r, ()),
        () = swap => panic!("the runner did not stop"),
    };
    let err = ran.unwrap_err();
    assert!(
        err.message
            .contains("every projection of this runner stopped on an error"),
        "{err}"
    );
    assert!(
        err.causes.iter().any(|c| c.contains(
            "run 2 built the tables of Rust projection `counts` that were swapped in with another version than this runner's"
        ) && c.contains("restart `reproject run` with the binary and config that built them")),
        "{err}"
    );
    db.assert_int_because(
        "SELECT count(*) FROM reproject.live_checkpoints c, reproject.runs r \
         WHERE r.id = 2 AND c.position = r.swap_position",
        2,
        "nothing applied to the new tables",
    )
    .await;
    db.drop().await;
}
