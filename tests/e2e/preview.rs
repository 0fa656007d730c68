//! A rolling deploy with a preview schema (`rebuild --preview-schema`): while the run waits for
//! its swap, the next application version reads the new shape through views named like the
//! live tables (`search_path = v2, public`), with only the privileges the application has; the
//! same views read the live table after the swap; a rollback drops them.

use crate::config::Projection;
use crate::harness::{Project, TestDb};
use crate::ordering::background_writers;
use crate::tally;
use std::time::Duration;

/// The new shape: `total` renamed, and a new column.
const V2_DDL: &str = "ALTER TABLE {{tally}} RENAME COLUMN total TO amount_total;\n\
                      ALTER TABLE {{tally}} ADD COLUMN biggest bigint NOT NULL;\n";

/// The handlers of the new shape.
const V2_HANDLERS: &str = "\
-- on added
INSERT INTO {{tally}} AS t (stream, n, amount_total, biggest)
VALUES (:stream, 1, (:data->>'amount')::bigint, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = t.n + 1, amount_total = t.amount_total + EXCLUDED.amount_total,
    biggest = greatest(t.biggest, EXCLUDED.biggest);
";

fn v2() -> Project {
    tally::with(Projection::new("tally").option("reshape", "shapes/v2.sql"))
        .file("tally.sql", V2_HANDLERS)
        .file("shapes/v2.sql", V2_DDL)
        .write()
}

/// What the new shape must hold for the events now in the table, compared with `relation`
/// (both ways), as the superuser.
fn v2_differences_sql(relation: &str) -> String {
    format!(
        "WITH want AS (SELECT stream, count(*)::int AS n, sum((data->>'amount')::bigint) AS amount_total, \
                max((data->>'amount')::bigint) AS biggest FROM events WHERE NOT bad GROUP BY stream) \
         SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT stream, n, amount_total, biggest FROM {relation}) a) \
              + (SELECT count(*) FROM (SELECT stream, n, amount_total, biggest FROM {relation} EXCEPT SELECT * FROM want) b)"
    )
}

/// Runs `sql` as `role` with `search_path = v2, public` (how the new application version
/// connects), returning the first column of its one row, or the server's error.
async fn as_new_app(db: &TestDb, role: &str, sql: &str) -> Result<i64, String> {
    let client = db.client().await;
    client
        .batch_execute(&format!("SET ROLE {role}; SET search_path = v2, public"))
        .await
        .unwrap();
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string())
        })
}

/// The roles of the application: `app` reads the whole table, `narrow` two columns of it.
struct Roles {
    app: String,
    narrow: String,
}

impl Roles {
    async fn create(db: &TestDb) -> Roles {
        let roles = Roles {
            app: format!("app_{}", db.name),
            narrow: format!("narrow_{}", db.name),
        };
        db.exec(&format!(
            "CREATE ROLE {app}; CREATE ROLE {narrow};
             GRANT SELECT ON tally TO {app};
             GRANT SELECT (stream, total) ON tally TO {narrow};",
            app = roles.app,
            narrow = roles.narrow
        ))
        .await;
        roles
    }

    async fn drop(&self, db: &TestDb) {
        db.exec(&format!(
            "DROP OWNED BY {app}, {narrow} CASCADE; DROP ROLE {app}; DROP ROLE {narrow}",
            app = self.app,
            narrow = self.narrow
        ))
        .await;
    }
}

/// Waits (up to `secs`) until `sql` returns true.
async fn until(db: &TestDb, sql: &str, secs: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let row = db.client().await.query_one(sql, &[]).await;
        if matches!(row, Ok(r) if r.get::<_, bool>(0)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_new_version_reads_the_new_shape_before_and_after_the_swap() {
    let (db, v1) = tally::fixture(300).await;
    // The old generation built by reproject: its handlers are recorded, so the rollback can
    // catch the old table up with the events written after the swap.
    v1.reproject(&db, "rebuild --yes").await.ok();
    let roles = Roles::create(&db).await;
    let v2 = v2();
    let writers = background_writers(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = (chrono::Utc::now() + chrono::Duration::seconds(25)).to_rfc3339();
    let rebuild = v2.spawn(
        &db,
        [
            "rebuild",
            "--yes",
            "--batch-size",
            "50",
            "--swap-at",
            &at,
            "--preview-schema",
            "v2",
        ]
        .as_slice(),
    );
    until(
        &db,
        "SELECT to_regclass('v2.tally') IS NOT NULL",
        60,
        "the preview view appears",
    )
    .await;
    let view_oid = db.oid("v2.tally").await;
    let events_at_preview = db.int("SELECT max(id) FROM events").await;

    // While the run waits: the new version reads the new shape, with the application's grants.
    let rows = as_new_app(
        &db,
        &roles.app,
        "SELECT count(*) FROM tally WHERE amount_total > 0 AND biggest > 0",
    )
    .await
    .expect("the new version reads the new shape through v2");
    assert_eq!(rows, 10, "one row per stream");
    assert_eq!(
        as_new_app(&db, &roles.narrow, "SELECT count(amount_total) FROM tally").await,
        Ok(10),
        "a column grant follows the renamed column"
    );
    let denied = as_new_app(&db, &roles.narrow, "SELECT count(biggest) FROM tally").await;
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.contains("permission denied")),
        "no grant on a column the live table did not grant: {denied:?}"
    );
    // The old version still reads the old shape.
    let old = db
        .int_as(
            &roles.app,
            "SELECT count(total) FROM public.tally",
            "the old version reads the live table",
        )
        .await;
    assert_eq!(old, 10);
    db.assert_int_because(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.tally'::regclass AND attname = 'amount_total'",
        0,
        "the live table keeps the old shape until the swap",
    )
    .await;
    let status = v2.reproject(&db, "status --json").await.ok().json();
    assert_eq!(status["projections"][0]["preview_schema"], "v2", "{status}");

    // Current: events written after the preview was made reach the views while the run waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    writers.stop().await;
    assert!(
        db.int("SELECT max(id) FROM events").await > events_at_preview,
        "events arrived after the preview was made"
    );
    until(
        &db,
        &format!("SELECT ({}) = 0", v2_differences_sql("v2.tally")),
        30,
        "the preview shows every event while the run waits",
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.runs WHERE status = 'running' AND phase = 'waiting'",
        1,
        "the run was still waiting for its swap",
    )
    .await;

    let out = rebuild.finish().await;
    out.ok()
        .stdout_has("preview schema `v2`")
        .stderr_has("stay current while the run waits");
    tally::append(&db, 40).await;
    v2.reproject(&db, "run --once").await.ok();

    // After the swap: the same view reads the live table, unchanged for the new version.
    assert_eq!(db.oid("v2.tally").await, view_oid, "the same view");
    db.assert_int_because(
        &v2_differences_sql("public.tally"),
        0,
        "the live table holds the new shape",
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM (SELECT * FROM v2.tally EXCEPT SELECT stream, n, amount_total, biggest FROM public.tally) a",
        0,
        "the view shows the live table's rows",
    )
    .await;
    assert_eq!(
        as_new_app(
            &db,
            &roles.app,
            "SELECT sum(amount_total)::bigint FROM tally"
        )
        .await,
        Ok(db
            .int("SELECT sum(amount_total)::bigint FROM public.tally")
            .await),
        "the new version reads the live rows through v2 after the swap"
    );
    v2.reproject(&db, "history")
        .await
        .ok()
        .stdout_has("preview schema v2: v2.tally");

    // The rollback drops the preview (it would show the parked table) and the schema it made.
    v2.reproject(&db, "rollback --yes")
        .await
        .ok()
        .stdout_has("dropped the run's preview views \"v2\".\"tally\"");
    db.assert_int_because(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'v2'",
        0,
        "the schema reproject created goes with its last view",
    )
    .await;
    db.assert_int("SELECT count(*) FROM reproject.preview_views", 0)
        .await;
    roles.drop(&db).await;
    db.drop().await;
}

/// `--no-swap`: the preview is made when the run stops, with a warning that it is current only
/// to the run's checkpoint; `swap` keeps the views; a second rebuild with the same schema
/// replaces them; `cleanup` of a superseded run drops the views that read its table.
#[tokio::test(flavor = "multi_thread")]
async fn no_swap_previews_are_current_to_the_checkpoint_and_are_replaced_by_the_next_run() {
    let (db, _) = tally::fixture(200).await;
    let v2 = v2();
    let out = v2
        .reproject(&db, "rebuild --no-swap --preview-schema v2 --json")
        .await;
    out.ok()
        .stderr_has("the views in `v2` are current to position 200 only");
    let json = out.json();
    assert_eq!(json["preview"]["schema"], "v2", "{json}");
    assert_eq!(
        json["preview"]["views"][0]["columns"],
        serde_json::json!(["stream", "n", "amount_total", "biggest"])
    );
    db.assert_int(&v2_differences_sql("v2.tally"), 0).await;
    tally::append(&db, 30).await;
    db.assert_int_because(
        &format!(
            "SELECT (({}) > 0)::int::bigint",
            v2_differences_sql("v2.tally")
        ),
        1,
        "without a waiting run, the preview falls behind",
    )
    .await;
    let first = db.oid("v2.tally").await;

    // A second run with the same schema replaces the first run's views.
    v2.reproject(&db, "rebuild --no-swap --preview-schema v2")
        .await
        .ok()
        .stderr_has("replacing the views of run 1");
    assert_ne!(db.oid("v2.tally").await, first, "new views");
    db.assert_int(
        "SELECT count(*) FROM reproject.preview_views WHERE run_id = 2",
        1,
    )
    .await;
    db.assert_int(&v2_differences_sql("v2.tally"), 0).await;
    let second = db.oid("v2.tally").await;
    v2.reproject(&db, "swap --yes").await.ok();
    assert_eq!(db.oid("v2.tally").await, second, "the swap keeps the views");
    db.assert_int(&v2_differences_sql("v2.tally"), 0).await;

    // A run superseded while awaiting its swap (as by a run that failed before its clone):
    // cleanup drops its table and the views on it.
    v2.reproject(&db, "rebuild --no-swap --preview-schema v3")
        .await
        .ok();
    db.exec("UPDATE reproject.runs SET status = 'superseded' WHERE id = 3")
        .await;
    v2.reproject(&db, "cleanup")
        .await
        .ok()
        .stdout_has("the preview views that read it go with it: \"v3\".\"tally\"");
    v2.reproject(&db, "cleanup --yes").await.ok();
    db.assert_int_because(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'v3'",
        0,
        "the views went with their table, and the schema reproject made with them",
    )
    .await;
    db.drop().await;
}

/// What `--preview-schema` cannot do is refused before anything is written, by `plan`, the dry
/// run and `rebuild` alike.
#[tokio::test(flavor = "multi_thread")]
async fn previews_that_cannot_work_are_refused_up_front() {
    let (db, _) = tally::fixture(50).await;
    let v2 = v2();
    v2.reproject(&db, "rebuild --yes --preview-schema v2")
        .await
        .code(2)
        .stderr_has("--preview-schema needs --no-swap, --swap-at or --swap-window");

    db.exec("ALTER TABLE tally ENABLE ROW LEVEL SECURITY").await;
    for cmd in [
        "plan --preview-schema v2",
        "rebuild --dry-run --no-swap --preview-schema v2",
        "rebuild --no-swap --preview-schema v2",
    ] {
        v2.reproject(&db, cmd)
            .await
            .code(2)
            .stderr_has("`tally` has row-level security enabled; a view reads as its owner and would bypass the policies");
    }
    db.exec("ALTER TABLE tally DISABLE ROW LEVEL SECURITY")
        .await;

    db.exec("CREATE SCHEMA app; CREATE TABLE app.settings (k text)")
        .await;
    v2.reproject(&db, "rebuild --no-swap --preview-schema app")
        .await
        .code(2)
        .stderr_has("schema `app` exists and holds objects reproject did not create there: table app.settings");
    let long = "v".repeat(64);
    v2.reproject(
        &db,
        format!("rebuild --no-swap --preview-schema {long}").as_str(),
    )
    .await
    .code(2)
    .stderr_has("is 64 bytes long; PostgreSQL would truncate it to 63");
    db.assert_int_because(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'reproject'",
        0,
        "nothing was written",
    )
    .await;

    // What the preview would create, shown and written nowhere.
    let plan = v2
        .reproject(&db, "plan --preview-schema v2 --json")
        .await
        .ok()
        .json();
    let view = &plan["preview"]["views"][0];
    assert_eq!(view["view"], "\"v2\".\"tally\"", "{plan}");
    assert_eq!(view["reads"], "tally_rebuild");
    assert_eq!(
        view["columns"],
        serde_json::json!(["stream", "n", "amount_total", "biggest"])
    );
    assert_eq!(plan["preview"]["schema_exists"], false);
    v2.reproject(&db, "rebuild --dry-run --swap-at 23:59 --preview-schema v2")
        .await
        .ok()
        .stdout_has("create schema `v2` and view \"v2\".\"tally\" reading `tally_rebuild`");
    db.assert_int(
        "SELECT count(*) FROM pg_namespace WHERE nspname IN ('v2', 'reproject')",
        0,
    )
    .await;
    db.drop().await;
}

/// A live table owned by an application role (not the role reproject runs as), with column
/// grants for writes: the view gets that owner and only the SELECT grant, reads the rebuild
/// table before the swap (reproject lets the owner read it), and the swap still proves the
/// new live table's owner and grants equal to the old one's.
#[tokio::test(flavor = "multi_thread")]
async fn views_get_the_live_tables_owner_and_only_its_select_grants() {
    use crate::balances::{fingerprint, project, v2_handlers, Balances, V2};
    let fx = Balances::new().await;
    let db = &fx.db;
    db.exec("ALTER TABLE balances DISABLE ROW LEVEL SECURITY")
        .await;
    let original = fingerprint(db, "balances").await;
    let p = project(&v2_handlers(), V2);
    p.reproject(db, "rebuild --no-swap --preview-schema v2")
        .await
        .ok();
    db.assert_text(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'v2.balances'::regclass",
        Some(&fx.owner),
    )
    .await;
    let read = "SELECT count(*) FROM balances WHERE currency = 'EUR' AND owner_id LIKE 'owner-%'";
    assert_eq!(
        as_new_app(db, &fx.reader, read).await,
        Ok(40),
        "the reader reads the new shape through v2 (the view's owner reads the rebuild table)"
    );
    let update = as_new_app(
        db,
        &fx.reader,
        "WITH u AS (UPDATE balances SET note = 'x' RETURNING 1) SELECT count(*) FROM u",
    )
    .await;
    assert!(
        update
            .as_ref()
            .is_err_and(|e| e.contains("permission denied")),
        "the live table's UPDATE grant is not carried to the view: {update:?}"
    );
    p.reproject(db, "swap --yes").await.ok();
    assert_eq!(
        as_new_app(db, &fx.reader, read).await,
        Ok(40),
        "the same view reads the live table after the swap"
    );
    let now = fingerprint(db, "balances").await;
    assert_eq!(now["owner"], original["owner"]);
    assert_eq!(
        now["acl"], original["acl"],
        "the grant that let the owner read the rebuild table is gone"
    );
    fx.drop().await;
}

/// Two tables of the run with the same name in different schemas would both be `NAME.x`:
/// refused, naming both, before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn two_tables_of_the_same_name_are_refused() {
    let (db, _) = tally::fixture(20).await;
    db.exec("CREATE SCHEMA archive; CREATE TABLE archive.tally (LIKE public.tally INCLUDING ALL)")
        .await;
    let p = crate::config::Config::tally_events()
        .projection(Projection::new("tally").tables(&["public.tally"]))
        .file(
            "tally.sql",
            &tally::HANDLERS.replace("{{tally}}", "{{public.tally}}"),
        )
        .projection(
            Projection::new("archived")
                .tables(&["archive.tally"])
                .handlers(Some("archived.sql")),
        )
        .file(
            "archived.sql",
            &tally::HANDLERS.replace("{{tally}}", "{{archive.tally}}"),
        )
        .write();
    p.reproject(&db, "rebuild --no-swap --preview-schema v2")
        .await
        .code(2)
        .stderr_has("`tally` and `archive.tally` would both be previewed as `v2.tally`");
    db.assert_int(
        "SELECT count(*) FROM pg_namespace WHERE nspname IN ('v2', 'reproject')",
        0,
    )
    .await;
    db.drop().await;
}
