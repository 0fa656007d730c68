//! Set-based handlers (`-- per batch`): statements that run once per batch over `:events`.

use crate::config::Projection;
use crate::harness::{example, reproject, Project, TestDb};
use crate::tally;

/// The tally projection written set-based: one UPSERT per stream per batch.
const TALLY_PER_BATCH: &str = "\
-- per batch
INSERT INTO {{tally}} AS t (stream, n, total)
SELECT e.stream, count(*), sum((e.data->>'amount')::bigint)
  FROM :events AS e
 WHERE e.type = 'added'
 GROUP BY e.stream
ON CONFLICT (stream) DO UPDATE SET n = t.n + EXCLUDED.n, total = t.total + EXCLUDED.total;
";

pub(crate) async fn w1(db: &TestDb, postings: &str) {
    db.psql(&example("postings/schema.sql"), &[]).await;
    db.psql(&example("postings/generate.sql"), &[("n", postings)])
        .await;
}

pub(crate) async fn w1_mismatches(db: &TestDb) -> String {
    let out = db.psql(&example("postings/compare.sql"), &[]).await;
    out.trim().lines().last().unwrap_or_default().to_string()
}

/// W1 with the example's set-based handlers gives the seed function's rows whatever the batch
/// size: one batch for everything, and batches that split postings' events anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn w1_per_batch_handlers_equal_the_seed_reference_at_any_batch_size() {
    let db = TestDb::new().await;
    w1(&db, "600").await;
    let config = example("postings/reproject-per-batch.toml");
    assert_eq!(
        w1_mismatches(&db).await,
        "12",
        "the live table starts corrupted"
    );

    let plan = reproject(&db, &config, &["plan"]).await;
    plan.ok()
        .stdout_has("set-based: once per batch over :events");

    reproject(&db, &config, &["rebuild", "--yes"])
        .await
        .ok()
        .stdout_has("run 1: swapped. 8994 events applied");
    assert_eq!(w1_mismatches(&db).await, "0", "one batch");
    // Every batch is one transaction with its checkpoint: one batch, one checkpoint advance.
    let history = reproject(&db, &config, &["history", "--json"])
        .await
        .ok()
        .json()["runs"]
        .clone();
    assert_eq!(history[0]["options"]["set_batch_size"], 1_000_000);

    // Corrupt the live table again, then rebuild with batches of 997 events (postings' events
    // interleave, so every batch merges into rows earlier batches wrote). Without `stream_key`:
    // with it, the replay would go by stream lanes (tests/e2e/lanes.rs) instead of batches.
    db.exec("UPDATE posting_state_projection SET outputs = '{}' WHERE posting_id % 7 = 0")
        .await;
    assert_ne!(w1_mismatches(&db).await, "0");
    let handlers = example("postings/handlers");
    let undeclared = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stream_key = \"posting_id\"\n", "")
        .replace(
            "handlers = \"handlers/",
            &format!("handlers = \"{}/", handlers.display()),
        );
    assert!(!undeclared.contains("stream_key"));
    let positional = Project::new(&undeclared, &[]);
    positional
        .reproject(&db, "rebuild --yes --set-batch-size 997")
        .await
        .ok()
        .stdout_has("run 2: swapped. 8994 events applied");
    assert_eq!(w1_mismatches(&db).await, "0", "batches of 997 events");
    db.assert_int_because(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 2",
        0,
        "batches, not lanes",
    )
    .await;
    db.drop().await;
}

/// A run stopped after some batches (`--max-events`) resumes from its checkpoint, a batch end,
/// and gives the same rows; events appended before the swap are caught up set-based too.
#[tokio::test(flavor = "multi_thread")]
async fn per_batch_resume_and_catch_up_apply_every_event_once() {
    let db = TestDb::new().await;
    w1(&db, "300").await;
    let config = example("postings/reproject-per-batch.toml");
    reproject(
        &db,
        &config,
        &[
            "rebuild",
            "--yes",
            "--set-batch-size",
            "1000",
            "--max-events",
            "2500",
        ],
    )
    .await
    .ok();
    // The budget cuts the third batch to 500 events: 2,500 applied, checkpoint on an event.
    let applied = db
        .int("SELECT events_applied FROM reproject.runs WHERE id = 1")
        .await;
    assert_eq!(applied, 2500);
    let position = db
        .int("SELECT position FROM reproject.checkpoints WHERE run_id = 1")
        .await;
    db.assert_int_because(
        &format!(
            "SELECT count(*) FROM execution_events WHERE event_id <= {position} \
             AND coalesce(invalidated, false) = false AND aggregate_type = 'posting'"
        ),
        2500,
        "the checkpoint is the 2,500th replayed event",
    )
    .await;
    // New events for an existing posting and a new one arrive before the rest is replayed.
    db.exec(
        "INSERT INTO execution_events (aggregate_id, aggregate_type, aggregate_version, event_type, event_data, event_timestamp)
         VALUES ('7', 'posting', 16, 'conversation_completed', '{\"conversation_id\": 77777, \"output\": \"late\", \"next_conversation_id\": 77778, \"next_execution_order\": 16}', now()),
                ('100001', 'posting', 1, 'posting_created', '{\"initial_step\": 3}', now()),
                ('100001', 'posting', 2, 'conversation_completed', '{\"conversation_id\": 5, \"output\": \"x\", \"next_conversation_id\": 6, \"next_execution_order\": 4}', now())",
    )
    .await;
    reproject(
        &db,
        &config,
        &["rebuild", "--yes", "--resume", "--set-batch-size", "1000"],
    )
    .await
    .ok()
    .stdout_has("run 1: swapped");
    assert_eq!(w1_mismatches(&db).await, "0");
    let replayable = db
        .int("SELECT count(*) FROM execution_events WHERE coalesce(invalidated, false) = false AND aggregate_type = 'posting'")
        .await;
    assert_eq!(replayable, 4500 - 3 + 3, "3 invalidated, 3 new");
    db.assert_int_because(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        replayable,
        "every event once",
    )
    .await;
    assert_eq!(
        db.int(
            "SELECT current_step::bigint FROM posting_state_projection WHERE posting_id = 100001"
        )
        .await,
        4
    );
    db.drop().await;
}

/// A set-based and a per-event projection in one run, with batches that do not divide the
/// events evenly: both see every event once. In `xid8` ordering too.
#[tokio::test(flavor = "multi_thread")]
async fn per_batch_and_per_event_projections_share_a_run() {
    for xid8 in [false, true] {
        let db = tally::db(1234).await;
        db.exec(
            "UPDATE events SET bad = true WHERE id % 97 = 0;
             CREATE TABLE tally2 (LIKE tally INCLUDING ALL);
             UPDATE tally SET total = -1 WHERE stream = 's3';",
        )
        .await;
        let ordering = if xid8 {
            db.exec("ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id()")
                .await;
            "ordering = \"xid8\"\ntransaction_id = \"tx\"\n"
        } else {
            ""
        };
        let config = tally::CONFIG.replace("filter = \"NOT bad\"\n", &format!("filter = \"NOT bad\"\n{ordering}"))
            + "\n[[projection]]\nname = \"tally2\"\ntables = [\"tally2\"]\nhandlers = \"tally2.sql\"\n";
        let project = Project::new(
            &config,
            &[
                ("tally.sql", TALLY_PER_BATCH),
                (
                    "tally2.sql",
                    &tally::HANDLERS.replace("{{tally}}", "{{tally2}}"),
                ),
            ],
        );
        project
            .reproject(
                &db,
                &[
                    "rebuild",
                    "--yes",
                    "--set-batch-size",
                    "301",
                    "--batch-size",
                    "17",
                    "--reason",
                    if xid8 { "xid8" } else { "gap-aware" },
                ],
            )
            .await
            .ok()
            .stdout_has("swapped");
        assert_eq!(
            tally::expected_differences(&db, "tally").await,
            0,
            "xid8: {xid8}"
        );
        assert_eq!(
            tally::expected_differences(&db, "tally2").await,
            0,
            "xid8: {xid8}"
        );
        let applied = db.int("SELECT events_applied FROM reproject.runs").await;
        assert_eq!(
            applied,
            db.int("SELECT count(*) FROM events WHERE NOT bad").await
        );
        db.drop().await;
    }
}

/// A statement that fails on some event fails its batch: exit 1 naming the projection, the
/// batch and the handler line; nothing of the batch is kept, the live table is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_batch_names_its_range_and_keeps_nothing() {
    let db = tally::db(500).await;
    db.exec(
        "INSERT INTO events (stream, type, data) VALUES ('s1', 'added', '{\"amount\": \"oops\"}')",
    )
    .await;
    let live_before = db.int("SELECT sum(total)::bigint FROM tally").await;
    let project = tally::project();
    project.write("tally.sql", TALLY_PER_BATCH);
    let out = project
        .reproject(&db, "rebuild --yes --set-batch-size 200")
        .await;
    out.code(1)
        .stderr_has("projection `tally` failed on the batch of 101 event(s) after position 400 up to position 501")
        .stderr_has("tally.sql:2:")
        .stderr_has("invalid input syntax for type bigint");
    db.assert_int("SELECT sum(total)::bigint FROM tally", live_before)
        .await;
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("failed"),
    )
    .await;
    // The batches before it were committed: the checkpoint stands at their end.
    db.assert_int(
        "SELECT position FROM reproject.checkpoints WHERE run_id = 1",
        400,
    )
    .await;
    db.drop().await;
}

/// Mistakes in set-based handler files and their use are config errors (exit 2) that name the
/// file and line or the projection.
#[tokio::test(flavor = "multi_thread")]
async fn per_batch_mistakes_are_config_errors() {
    let db = tally::db(10).await;
    let project = tally::project();

    project.write(
        "tally.sql",
        "-- per batch\nINSERT INTO {{tally}} (stream, n, total) VALUES (:stream, 1, 1);\n",
    );
    project
        .reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("tally.sql:2: a `-- per batch` statement runs once per batch");

    project.write(
        "tally.sql",
        &format!("{}\n-- on added\nSELECT 1;\n", TALLY_PER_BATCH),
    );
    project
        .reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("must be the only section of its file");

    project.write(
        "tally.sql",
        "-- on added\nINSERT INTO {{tally}} SELECT * FROM :events;\n",
    );
    project
        .reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("tally.sql:2: `:events` is the batch of a `-- per batch` section");

    // A statement that does not prepare against the live table names its section.
    project.write("tally.sql", "-- per batch\nINSERT INTO {{tally}} (stream, n, total) SELECT e.nope, 1, 1 FROM :events e;\n");
    project
        .reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("section `-- per batch`: the statement does not prepare")
        .stderr_has("nope");

    // Reading a set-based projection from another projection is refused.
    project.write("tally.sql", TALLY_PER_BATCH);
    db.exec("CREATE TABLE reader (stream text PRIMARY KEY, n int)")
        .await;
    let reading = tally::config()
        .projection(Projection::new("reader"))
        .file("tally.sql", TALLY_PER_BATCH)
        .file("reader.sql", "-- on added\nINSERT INTO {{reader}} SELECT stream, n FROM {{tally}} WHERE stream = :stream ON CONFLICT DO NOTHING;\n")
        .write();
    reading
        .reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("projection `reader` depends on `tally`, and `tally` is set-based");

    // `run` keeps per-event projections live only.
    project
        .reproject(&db, "run --once")
        .await
        .code(2)
        .stderr_has("`reproject run` does not run set-based projections: `tally`");
    db.drop().await;
}

/// A partial rebuild (`--streams`) of a set-based projection: `:events` holds only the
/// selected streams' events, so their rows are rebuilt and every other row is the live one.
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_rebuild_of_a_set_based_projection_reads_only_its_streams() {
    let db = tally::db(500).await;
    db.exec("UPDATE tally SET total = -1 WHERE stream IN ('s1', 's2')")
        .await;
    let project = tally::with_stream_key()
        .file("tally.sql", TALLY_PER_BATCH)
        .write();
    project
        .reproject(&db, "rebuild --yes --streams s1 --set-batch-size 77")
        .await
        .ok()
        .stdout_has("swapped");
    // s1 is rebuilt, s2 keeps its (corrupted) live row, the rest are unchanged.
    // (s2's wrong row and its missing right one: the only difference, counted both ways)
    assert_eq!(tally::expected_differences(&db, "tally").await, 2);
    db.assert_int("SELECT total FROM tally WHERE stream = 's2'", -1)
        .await;
    assert_eq!(
        db.int("SELECT total FROM tally WHERE stream = 's1'").await,
        db.int("SELECT sum((data->>'amount')::bigint)::bigint FROM events WHERE stream = 's1' AND NOT bad")
            .await
    );
    assert_eq!(
        db.int("SELECT events_applied FROM reproject.runs WHERE id = 1")
            .await,
        db.int("SELECT count(*) FROM events WHERE stream = 's1' AND NOT bad")
            .await
    );
    db.drop().await;
}
