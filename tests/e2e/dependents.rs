//! Dependents of a column that a new shape drops, renames or retypes: found from the catalog,
//! refused unless redefined, and at the swap replaced by the user's definition (kept owner,
//! grants and comment), restored by a rollback.

use crate::config::{Config, Projection};
use crate::harness::{refused, TestDb};
use crate::tally;
use reproject::internals::shape::dependents::{self, Dependent, Kind, Redefined};
use reproject::internals::shape::redefine;
use reproject::internals::shape::{Column, ColumnChange, ShapeChange};
use reproject::internals::TableName;

fn column(name: &str, ty: &str) -> Option<Column> {
    Some(Column {
        name: name.into(),
        type_name: ty.into(),
    })
}

fn balances() -> TableName {
    TableName::new("public", "balances")
}

/// `amt` renamed to `amount`, `legacy` dropped, `qty` retyped, `extra` added.
fn change() -> ShapeChange {
    ShapeChange {
        projection: "balances".into(),
        table: balances(),
        columns: vec![
            ColumnChange {
                before: column("amt", "integer"),
                after: column("amount", "integer"),
            },
            ColumnChange {
                before: column("legacy", "text"),
                after: None,
            },
            ColumnChange {
                before: column("qty", "integer"),
                after: column("qty", "bigint"),
            },
            ColumnChange {
                before: None,
                after: column("extra", "text"),
            },
        ],
    }
}

const SCHEMA: &str = "
    CREATE TABLE ledgers (code text PRIMARY KEY);
    CREATE TABLE balances (id int PRIMARY KEY, amt int UNIQUE, legacy text REFERENCES ledgers, qty int, note text);
    CREATE TABLE lines (id int PRIMARY KEY, amt int REFERENCES balances (amt), balance_id int REFERENCES balances (id));
    CREATE VIEW v_legacy AS SELECT id, legacy FROM balances;
    CREATE VIEW v_outer AS SELECT id FROM v_legacy;
    CREATE VIEW v_qty AS SELECT id, qty FROM balances;
    CREATE VIEW v_note AS SELECT id, note FROM balances;
    CREATE MATERIALIZED VIEW mv_legacy AS SELECT id, legacy FROM balances;
    ALTER TABLE balances ENABLE ROW LEVEL SECURITY;
    CREATE POLICY p_amt ON balances USING (amt > 0);
    CREATE POLICY p_note ON balances USING (note IS NOT NULL);
    CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
    CREATE TRIGGER t_legacy BEFORE UPDATE OF legacy ON balances FOR EACH ROW EXECUTE FUNCTION touch();
    CREATE TRIGGER t_qty BEFORE UPDATE ON balances FOR EACH ROW WHEN (OLD.qty IS DISTINCT FROM NEW.qty) EXECUTE FUNCTION touch();
    CREATE TRIGGER t_note BEFORE UPDATE OF note ON balances FOR EACH ROW EXECUTE FUNCTION touch();
    CREATE PUBLICATION pub_cols FOR TABLE balances (id, amt);
";

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_broken_dependent_is_found_by_column() {
    let db = TestDb::new().await;
    db.exec(SCHEMA).await;
    let client = db.client().await;
    let found = dependents::broken(&client, &change()).await.unwrap();
    let mut seen: Vec<(String, String, String)> = found
        .iter()
        .map(|b| {
            (
                b.kind.name().to_string(),
                b.dependent.to_string(),
                b.column.clone(),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    let want = |k: &str, d: &str, c: &str| (k.to_string(), d.to_string(), c.to_string());
    let mut expected = vec![
        want("view", "public.v_legacy", "legacy"),
        want("view", "public.v_outer", "legacy"),
        want("view", "public.v_qty", "qty"),
        want("materialized view", "public.mv_legacy", "legacy"),
        want("policy", "p_amt on public.balances", "amt"),
        want(
            "foreign key",
            "balances_legacy_fkey on public.balances",
            "legacy",
        ),
        want("foreign key", "lines_amt_fkey on public.lines", "amt"),
        want("trigger", "t_legacy on public.balances", "legacy"),
        want("trigger", "t_qty on public.balances", "qty"),
        want("publication", "publication pub_cols", "amt"),
    ];
    expected.sort();
    assert_eq!(seen, expected, "{found:#?}");

    // What each message says.
    let text = |d: &str| {
        found
            .iter()
            .find(|b| b.dependent.to_string() == d)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        text("public.v_legacy"),
        "view public.v_legacy uses column `legacy` of public.balances, and the new shape drops column legacy"
    );
    assert!(
        text("public.v_qty")
            .contains("changes qty from integer to bigint (the view's column would change type)"),
        "{}",
        text("public.v_qty")
    );
    assert!(
        text("public.v_outer").contains("reads view public.v_legacy"),
        "{}",
        text("public.v_outer")
    );
    assert!(text("p_amt on public.balances").contains("renames amt to amount"));

    // An added column breaks nothing.
    let added = ShapeChange {
        columns: vec![ColumnChange {
            before: None,
            after: column("extra", "text"),
        }],
        ..change()
    };
    assert!(dependents::broken(&client, &added)
        .await
        .unwrap()
        .is_empty());
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_dependents_are_refused_unless_redefined() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE balances (id int PRIMARY KEY, amt int, legacy text, qty int, note text);
         CREATE VIEW v_legacy AS SELECT id, legacy FROM balances;
         CREATE VIEW v_note AS SELECT id, note FROM balances;",
    )
    .await;
    let client = db.client().await;
    let refusals = dependents::refusals(&client, &[change()], &[("balances", &[])])
        .await
        .unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0]
            .what
            .contains("view public.v_legacy uses column `legacy`"),
        "{refusals:?}"
    );
    assert!(
        refusals[0]
            .hint
            .contains("redefine = { \"public.v_legacy\" = \"shapes/v_legacy.sql\" }"),
        "{refusals:?}"
    );

    let redefinition = |key: &str| dependents::Redefinition {
        key: key.into(),
        dependent: dependents::parse_key(key).unwrap(),
        path: "shapes/x.sql".into(),
        line: 20,
        statements: reproject::internals::parse_statements(
            "CREATE VIEW public.v_legacy AS SELECT id FROM {{balances}}",
        )
        .unwrap(),
    };
    // Redefined: no refusal. A redefinition of a view the change leaves alone: refused.
    let redefs = [
        redefinition("public.v_legacy"),
        redefinition("public.v_note"),
    ];
    let refusals = dependents::refusals(&client, &[change()], &[("balances", &redefs)])
        .await
        .unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0].what.contains(
            "projection `balances` redefines `public.v_note` (line 20), which is not a dependent that the new shape of its tables breaks"
        ),
        "{refusals:?}"
    );
    db.drop().await;
}

/// The `redefine` entry of most tests here: the view `tally_view` from its file.
const TALLY_VIEW: &str = "{ \"public.tally_view\" = \"shapes/tally_view.sql\" }";

/// The tally project with `redefine = VALUE` (the value as TOML).
fn redefining(value: &str) -> Config {
    tally::with(Projection::new("tally").option_toml("redefine", value))
}

/// The tally fixture with the view `tally_view` on `tally`.
async fn db_with_view(events: i64) -> TestDb {
    let db = tally::db(events).await;
    db.exec("CREATE VIEW tally_view AS SELECT stream, total FROM tally")
        .await;
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn redefine_entries_are_checked_with_the_config() {
    let db = db_with_view(10).await;
    let view = "CREATE VIEW public.tally_view AS SELECT stream, total FROM {{tally}};\n";

    // The file is missing.
    let p = redefining(TALLY_VIEW).write();
    refused(
        &db,
        &p,
        &[
            "reproject.toml:15: projection `tally`: cannot read",
            "shapes/tally_view.sql",
        ],
    )
    .await;

    // A key without its schema.
    let p = redefining("{ \"tally_view\" = \"shapes/tally_view.sql\" }")
        .file("shapes/tally_view.sql", view)
        .write();
    refused(
        &db,
        &p,
        &[
            "reproject.toml:15: projection `tally`: `redefine` key `tally_view`",
            "write `public.tally_view`",
        ],
    )
    .await;

    // The same dependent twice.
    let p = redefining(
        "{ \"public.tally_view\" = \"shapes/tally_view.sql\", 'public.\"tally_view\"' = \"shapes/tally_view.sql\" }",
    )
    .file("shapes/tally_view.sql", view)
    .write();
    refused(
        &db,
        &p,
        &["reproject.toml:15", "names `public.tally_view` twice"],
    )
    .await;

    // A misspelt key.
    let p = tally::with(Projection::new("tally").option_toml("redefines", TALLY_VIEW))
        .file("shapes/tally_view.sql", view)
        .write();
    refused(&db, &p, &["unknown field `redefines`"]).await;

    // A table reference that names no table of the config, with the file's line.
    let p = redefining(TALLY_VIEW)
        .file(
            "shapes/tally_view.sql",
            &format!("\n{}", view.replace("{{tally}}", "{{talley}}")),
        )
        .write();
    refused(
        &db,
        &p,
        &[
            "shapes/tally_view.sql:2: projection `tally`: redefinition of `public.tally_view`",
            "{{talley}}",
        ],
    )
    .await;

    // Well-formed, but nothing in the new shape breaks the view: refused, not ignored.
    let p = redefining(TALLY_VIEW)
        .file("shapes/tally_view.sql", view)
        .write();
    refused(
        &db,
        &p,
        &["projection `tally` redefines `public.tally_view` (line 15), which is not a dependent that the new shape of its tables breaks"],
    )
    .await;
    db.drop().await;
}

async fn exchange(
    client: &tokio_postgres::Client,
    incoming: &TableName,
    parked: &TableName,
    suffix: &str,
    redefined: &[Redefined],
) -> reproject::Result<()> {
    let live = balances();
    let prepared = reproject::internals::swap::exchange::Prepared::prepare(
        client,
        std::slice::from_ref(&live),
    )
    .await?;
    client.batch_execute("BEGIN").await.unwrap();
    let result = reproject::internals::swap::exchange::exchange(
        client,
        &prepared,
        &reproject::internals::swap::exchange::Exchange {
            live: &live,
            incoming,
            parked,
            suffix: suffix.into(),
            cloned_from: None,
            redefined,
            shape: None,
            partition: false,
        },
    )
    .await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await.unwrap();
    result.map(|_| ())
}

/// The state schema and a swapped run of `balances` to record redefinitions under: a client
/// and the run's id.
async fn swapped_run(db: &TestDb) -> (tokio_postgres::Client, i64) {
    let mut client = db.client().await;
    reproject::internals::migrate::migrate(&mut client)
        .await
        .unwrap();
    let run_id: i64 = client
        .query_one(
            "INSERT INTO reproject.runs (projections, initiated_by, status, phase) VALUES ('{balances}', 'test', 'swapped', 'done') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (client, run_id)
}

/// Reads the definitions `redefined` replaces and records them under run `run_id`, as the
/// swap does in its transaction; returns them.
async fn record_originals(
    client: &tokio_postgres::Client,
    run_id: i64,
    redefined: &[Redefined],
) -> Vec<Redefined> {
    let live = balances();
    let originals = redefine::originals(client, &live, redefined).await.unwrap();
    redefine::record(client, run_id, &live, &originals)
        .await
        .unwrap();
    originals
}

/// The tables an exchange of `balances` moves: the rebuilt one, the kept old one, and the one
/// a rollback parks.
fn rebuild_old_rolled_back() -> (TableName, TableName, TableName) {
    let live = balances();
    (
        live.sibling("balances_rebuild"),
        live.sibling("balances_old"),
        live.sibling("balances_rolled_back"),
    )
}

/// The swap hook on its own (the new shape itself comes from `reshape`): the view is replaced
/// by the given definition with its owner, grants and comment, a view of it with it; the
/// recorded original definitions put both back when the exchange runs the other way.
#[tokio::test(flavor = "multi_thread")]
async fn the_swap_redefines_a_view_and_the_rollback_restores_it() {
    let db = TestDb::new().await;
    db.exec(
        "DO $$ BEGIN CREATE ROLE reproject_dep_owner; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         DO $$ BEGIN CREATE ROLE reproject_dep_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE TABLE balances (id int PRIMARY KEY, amt int NOT NULL);
         INSERT INTO balances VALUES (1, 5), (2, 7);
         CREATE VIEW summary AS SELECT id, amt FROM balances;
         CREATE VIEW outer_summary AS SELECT id FROM summary;
         GRANT SELECT ON balances TO reproject_dep_owner;
         ALTER VIEW summary OWNER TO reproject_dep_owner;
         GRANT SELECT ON summary TO reproject_dep_reader;
         COMMENT ON VIEW summary IS 'per balance';
         CREATE VIEW untouched AS SELECT id FROM balances;
         CREATE TABLE balances_rebuild (LIKE balances INCLUDING ALL);
         INSERT INTO balances_rebuild VALUES (1, 50), (2, 70);",
    )
    .await;
    let (client, run_id) = swapped_run(&db).await;
    let view = |name: &str, sql: &str| Redefined {
        kind: Kind::View,
        dependent: Dependent::Relation(TableName::new("public", name)),
        sql: vec![sql.to_string()],
    };
    let redefined = vec![
        view(
            "summary",
            "CREATE VIEW public.summary AS SELECT id, amt * 100 AS cents FROM public.balances",
        ),
        view(
            "outer_summary",
            "CREATE VIEW public.outer_summary AS SELECT id, cents FROM public.summary",
        ),
    ];
    let live = balances();
    let (rebuild, old, rolled_back) = rebuild_old_rolled_back();

    // A redefinition that does not create what it names is refused; nothing changes.
    let wrong = vec![
        view(
            "summary",
            "CREATE VIEW public.summary_typo AS SELECT id FROM public.balances",
        ),
        view(
            "outer_summary",
            "CREATE VIEW public.outer_summary AS SELECT id FROM public.summary_typo",
        ),
    ];
    let err = exchange(&client, &rebuild, &old, "old1", &wrong)
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains("did not create view `public.summary`"),
        "{err}"
    );
    assert_eq!(db.int("SELECT sum(amt)::bigint FROM summary").await, 12);

    // The originals are recorded in the swap's transaction (here: before it).
    let originals = record_originals(&client, run_id, &redefined).await;
    exchange(&client, &rebuild, &old, "old1", &redefined)
        .await
        .unwrap();

    // The new definitions read the new table, with the view's owner, grants and comment.
    assert_eq!(
        db.int("SELECT sum(cents)::bigint FROM summary").await,
        12000
    );
    assert_eq!(
        db.int("SELECT sum(cents)::bigint FROM outer_summary").await,
        12000
    );
    assert_eq!(db.int("SELECT count(*) FROM untouched").await, 2);
    assert_summary_owner_and_comment(&db).await;
    assert_eq!(
        db.int("SELECT count(*) FROM aclexplode((SELECT relacl FROM pg_class WHERE oid = 'summary'::regclass)) a WHERE pg_get_userbyid(a.grantee) = 'reproject_dep_reader' AND a.privilege_type = 'SELECT'").await,
        1
    );

    // The rollback: the recorded definitions are its redefinitions.
    let recorded = redefine::recorded(&client, run_id, &live).await.unwrap();
    assert_eq!(recorded, originals);
    exchange(&client, &old, &rolled_back, "rb1", &recorded)
        .await
        .unwrap();
    assert_eq!(db.int("SELECT sum(amt)::bigint FROM summary").await, 12);
    assert_eq!(db.int("SELECT count(*) FROM outer_summary").await, 2);
    assert_summary_owner_and_comment(&db).await;
    db.drop().await;
}

/// The view `summary` has the owner and comment the test gave it.
async fn assert_summary_owner_and_comment(db: &TestDb) {
    db.assert_text(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'summary'::regclass",
        Some("reproject_dep_owner"),
    )
    .await;
    db.assert_text(
        "SELECT obj_description('summary'::regclass, 'pg_class')",
        Some("per balance"),
    )
    .await;
}

/// The same for a policy and a trigger of the table, another table's foreign key to it and a
/// publication's column list: replaced at the swap, the originals back at the rollback.
#[tokio::test(flavor = "multi_thread")]
async fn the_swap_redefines_policies_triggers_foreign_keys_and_publications() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE balances (id int PRIMARY KEY, amt int NOT NULL UNIQUE);
         INSERT INTO balances VALUES (1, 5), (2, 7);
         CREATE TABLE lines (id int PRIMARY KEY, amt int REFERENCES balances (amt));
         INSERT INTO lines VALUES (1, 5);
         CREATE POLICY p_amt ON balances USING (amt > 0);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER t_amt BEFORE UPDATE OF amt ON balances FOR EACH ROW EXECUTE FUNCTION touch();
         CREATE PUBLICATION pub_cols FOR TABLE balances (id, amt);
         CREATE TABLE balances_rebuild (LIKE balances INCLUDING ALL);
         INSERT INTO balances_rebuild VALUES (1, 5), (2, 7);",
    )
    .await;
    let (client, run_id) = swapped_run(&db).await;
    let live = balances();
    let on = |kind: Kind, key: &str, sql: &str| Redefined {
        kind,
        dependent: dependents::parse_key(key).unwrap(),
        sql: vec![sql.to_string()],
    };
    let redefined = vec![
        on(Kind::Policy, "p_amt on public.balances", "CREATE POLICY p_amt ON public.balances USING (amt > 1)"),
        on(Kind::Trigger, "t_amt on public.balances", "CREATE TRIGGER t_amt BEFORE UPDATE OF amt, id ON public.balances FOR EACH ROW EXECUTE FUNCTION touch()"),
        on(Kind::ForeignKey, "lines_amt_fkey on public.lines", "ALTER TABLE public.lines ADD CONSTRAINT lines_amt_fkey FOREIGN KEY (amt) REFERENCES public.balances (amt) NOT VALID"),
        on(Kind::Publication, "publication pub_cols", "ALTER PUBLICATION pub_cols ADD TABLE public.balances (id)"),
    ];
    let before = dependent_state(&db).await;
    assert!(
        before.1.as_deref().unwrap().contains("UPDATE OF amt ON"),
        "{before:?}"
    );

    record_originals(&client, run_id, &redefined).await;
    let (rebuild, old, rolled_back) = rebuild_old_rolled_back();
    exchange(&client, &rebuild, &old, "old1", &redefined)
        .await
        .unwrap();
    let after = dependent_state(&db).await;
    assert_eq!(after.0.as_deref(), Some("(amt > 1)"));
    assert!(
        after
            .1
            .as_deref()
            .unwrap()
            .contains("UPDATE OF amt, id ON public.balances"),
        "{after:?}"
    );
    assert!(
        after.2.as_deref().unwrap().contains("NOT VALID"),
        "{after:?}"
    );
    assert_eq!(after.3.as_deref(), Some("id"));
    // The old table keeps no foreign key and no publication membership.
    assert_eq!(
        db.int("SELECT count(*) FROM pg_constraint WHERE confrelid = 'balances_old'::regclass")
            .await,
        0
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'balances_old'")
            .await,
        0
    );

    let recorded = redefine::recorded(&client, run_id, &live).await.unwrap();
    exchange(&client, &old, &rolled_back, "rb1", &recorded)
        .await
        .unwrap();
    let restored = dependent_state(&db).await;
    assert_eq!(restored.0, before.0);
    assert_eq!(restored.1, before.1);
    // Re-created NOT VALID, validated after the commit by the rollback.
    assert_eq!(
        restored.2.as_deref().map(|d| d.replace(" NOT VALID", "")),
        before.2
    );
    assert_eq!(restored.3, before.3);
    db.drop().await;
}

type State = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Policy `p_amt`, trigger `t_amt`, foreign key `lines_amt_fkey` and the columns `pub_cols`
/// publishes of the table named `balances`.
async fn dependent_state(db: &TestDb) -> State {
    (
        db.text("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'p_amt' AND polrelid = 'balances'::regclass").await,
        db.text("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 't_amt' AND tgrelid = 'balances'::regclass").await,
        db.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'lines_amt_fkey' AND confrelid = 'balances'::regclass").await,
        db.text("SELECT array_to_string(attnames, ',') FROM pg_publication_tables WHERE pubname = 'pub_cols' AND tablename = 'balances'").await,
    )
}

/// From the config to the swap: the `redefine` file of a broken view, rendered with the live
/// table's name, is what the swap of that table runs; with it, nothing is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_configured_redefinition_reaches_the_swap_rendered() {
    let db = db_with_view(10).await;
    let p = redefining(TALLY_VIEW)
        .file(
            "shapes/tally_view.sql",
            "-- the total, in cents\nCREATE VIEW public.tally_view AS SELECT stream, total * 100 AS cents FROM {{tally}};\n",
        )
        .write();
    let config = reproject::Config::load(&p.config()).unwrap();
    let client = db.client().await;
    let resolved = reproject::internals::validate(&client, &config)
        .await
        .unwrap();
    let retyped = ShapeChange {
        projection: "tally".into(),
        table: TableName::new("public", "tally"),
        columns: vec![ColumnChange {
            before: column("total", "bigint"),
            after: column("total", "numeric"),
        }],
    };
    let redefinitions = dependents::of_projections(&config, &[0]);
    let refusals = dependents::refusals(&client, std::slice::from_ref(&retyped), &redefinitions)
        .await
        .unwrap();
    assert!(refusals.is_empty(), "{refusals:?}");
    let for_swap = dependents::for_swap(&client, &config, &resolved, &[retyped])
        .await
        .unwrap();
    assert_eq!(
        for_swap.get(&TableName::new("public", "tally")).unwrap(),
        &vec![Redefined {
            kind: Kind::View,
            dependent: Dependent::Relation(TableName::new("public", "tally_view")),
            sql: vec![
                "CREATE VIEW public.tally_view AS SELECT stream, total * 100 AS cents FROM \"public\".\"tally\""
                    .to_string()
            ],
        }]
    );
    db.drop().await;
}

/// Before the replay, the redefinitions are tried against an empty table of the new shape: a
/// view that still names the old column is refused, with the file and line; a correct one,
/// and a correct policy, pass; nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn redefinitions_are_tried_against_the_new_shape_before_the_replay() {
    let db = db_with_view(10).await;
    db.exec("CREATE POLICY big ON tally USING (total > 10)")
        .await;
    let config = redefining(
        "{ \"public.tally_view\" = \"shapes/tally_view.sql\", \"big on public.tally\" = \"shapes/big.sql\" }",
    )
    .file(
        "shapes/big.sql",
        "CREATE POLICY big ON {{tally}} USING (sum > 10);\n",
    );
    let renamed = ShapeChange {
        projection: "tally".into(),
        table: TableName::new("public", "tally"),
        columns: vec![ColumnChange {
            before: column("total", "bigint"),
            after: column("sum", "bigint"),
        }],
    };
    let trial = |view: &'static str| {
        let p = config.clone().file("shapes/tally_view.sql", view).write();
        let renamed = renamed.clone();
        let url = db.url.clone();
        async move {
            let config = reproject::Config::load(&p.config()).unwrap();
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let resolved = reproject::internals::validate(&client, &config)
                .await
                .unwrap();
            reproject::internals::shape::stand_in::try_redefinitions(
                &client,
                &config,
                &resolved,
                &[renamed],
            )
            .await
            .unwrap()
        }
    };
    let refusals =
        trial("\nCREATE VIEW public.tally_view AS SELECT stream, total FROM {{tally}};\n").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0]
            .what
            .contains("the redefinition of `public.tally_view` (")
            && refusals[0]
                .what
                .contains("shapes/tally_view.sql:2) does not fit the new shape of `tally`")
            && refusals[0].what.contains("column \"total\" does not exist"),
        "{refusals:?}"
    );
    let refusals =
        trial("CREATE VIEW public.tally_view AS SELECT stream, sum AS total FROM {{tally}};\n")
            .await;
    assert!(refusals.is_empty(), "{refusals:?}");
    assert!(!db.exists("tally_shape_check").await);
    assert_eq!(
        db.int("SELECT count(*) FROM pg_policy WHERE polname = 'big'")
            .await,
        1
    );
    db.drop().await;
}

/// `reproject rollback` puts back what the swap of the run redefined, from the record: here
/// a record written by hand for a swap that redefined `tally_view` (the new shape itself
/// comes from `reshape`).
#[tokio::test(flavor = "multi_thread")]
async fn rollback_restores_the_recorded_definitions() {
    let db = db_with_view(20).await;
    let p = tally::project();
    p.reproject(&db, "rebuild --yes").await.ok();
    // As if the swap had replaced the view by the new definition and recorded the original.
    db.exec(
        "DROP VIEW tally_view;
         CREATE VIEW tally_view AS SELECT stream, total * 100 AS cents FROM tally;
         INSERT INTO reproject.redefined_dependents
                (run_id, table_schema, live_name, position, kind, relation_schema, relation_name, object_name, statements)
         SELECT max(id), 'public', 'tally', 0, 'view', 'public', 'tally_view', NULL,
                ARRAY['CREATE VIEW public.tally_view AS SELECT stream, total FROM public.tally']
           FROM reproject.runs;",
    )
    .await;
    p.reproject(&db, "rollback --yes").await.ok();
    assert_eq!(
        db.int("SELECT count(*) FROM information_schema.columns WHERE table_name = 'tally_view' AND column_name = 'total'").await,
        1
    );
    // It reads the restored table.
    assert_eq!(
        db.int(
            "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                WHERE r.ev_class = 'tally_view'::regclass AND d.refobjid = 'tally'::regclass"
        )
        .await
        .min(1),
        1
    );
    assert_eq!(
        db.int("SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                WHERE r.ev_class = 'tally_view'::regclass AND d.refobjid = to_regclass('tally_rolled_back_1')")
            .await,
        0
    );
    db.drop().await;
}
