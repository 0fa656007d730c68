//! Dependents of a column that a new shape drops, renames or retypes: found from the catalog,
//! refused unless redefined, and at the swap replaced by the user's definition (kept owner,
//! grants and comment), restored by a rollback. Everything through the binary: `plan` lists
//! what a shape breaks, `rebuild` tries the redefinitions and swaps, `rollback` restores.

use crate::config::{Config, Projection};
use crate::harness::{refused, Project, TestDb};
use crate::tally;

/// The events of the `balances` projections here: `credited` with `id`, `amt` and `qty`.
const EVENTS: &str =
    "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);";

/// Two events: balance 1 gets 50, balance 2 gets 70 (the live rows say 5 and 7, so rebuilt
/// rows are told from the old ones).
const TWO_EVENTS: &str = "INSERT INTO events (stream, type, data) VALUES \
    ('b1', 'credited', '{\"id\": 1, \"amt\": 50, \"qty\": 1}'), \
    ('b2', 'credited', '{\"id\": 2, \"amt\": 70, \"qty\": 1}');";

/// The projection `balances` rebuilt into the shape `ddl` (in `shapes/v2.sql`) by `handlers`,
/// with `redefine = VALUE` (TOML, on line 14 of the config) when given.
fn balances(ddl: &str, handlers: &str, redefine: Option<&str>) -> Config {
    let mut projection = Projection::new("balances").option("reshape", "shapes/v2.sql");
    if let Some(value) = redefine {
        projection = projection.option_toml("redefine", value);
    }
    Config::events("events")
        .projection(projection)
        .file("balances.sql", handlers)
        .file("shapes/v2.sql", ddl)
}

/// `amt` renamed to `amount`, `legacy` dropped, `qty` retyped, `extra` added.
const CHANGE: &str = "ALTER TABLE {{balances}} RENAME COLUMN amt TO amount;\n\
    ALTER TABLE {{balances}} DROP COLUMN legacy;\n\
    ALTER TABLE {{balances}} ALTER COLUMN qty TYPE bigint;\n\
    ALTER TABLE {{balances}} ADD COLUMN extra text;\n";

/// The handlers of the shape `CHANGE` makes.
const CHANGED_HANDLERS: &str = "-- on credited\n\
    INSERT INTO {{balances}} (id, amount, qty) VALUES ((:data->>'id')::int, (:data->>'amt')::int, (:data->>'qty')::bigint);\n";

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

/// The lines of `stderr` that name a broken dependent (one per dependent and column).
fn broken_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(" of public.balances, and the new shape ") || l.contains(" reads view ")
        })
        .collect()
}

/// `plan` finds every kind of dependent by the column it uses, and only those: a view, a view
/// of that view, a materialized view, a policy, foreign keys both ways, triggers (`UPDATE OF`
/// and `WHEN`), a publication's column list; each named with what the change does to its
/// column. What uses only kept columns, and an added column, breaks nothing.
#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_broken_dependent_is_found_by_column() {
    let db = TestDb::new().await;
    db.exec(&format!("{EVENTS}{SCHEMA}")).await;
    let p = balances(CHANGE, CHANGED_HANDLERS, None).write();
    let out = p.reproject(&db, "plan").await;
    out.code(2).stderr_has("refusing to rebuild: 10 problems");
    let expected = [
        "view public.v_legacy uses column `legacy` of public.balances, and the new shape drops column legacy",
        "view public.v_outer reads view public.v_legacy, which uses column `legacy` of public.balances (drops column legacy)",
        "view public.v_qty uses column `qty` of public.balances, and the new shape changes qty from integer to bigint (the view's column would change type)",
        "materialized view public.mv_legacy uses column `legacy` of public.balances, and the new shape drops column legacy",
        "policy p_amt on public.balances uses column `amt` of public.balances, and the new shape renames amt to amount",
        "foreign key balances_legacy_fkey on public.balances uses column `legacy` of public.balances, and the new shape drops column legacy",
        "foreign key lines_amt_fkey on public.lines uses column `amt` of public.balances, and the new shape renames amt to amount",
        "trigger t_legacy on public.balances uses column `legacy` of public.balances, and the new shape drops column legacy",
        "trigger t_qty on public.balances uses column `qty` of public.balances, and the new shape changes qty from integer to bigint",
        "publication pub_cols uses column `amt` of public.balances, and the new shape renames amt to amount",
    ];
    for e in expected {
        out.stderr_has(e);
    }
    let found = broken_lines(&out.stderr);
    assert_eq!(found.len(), expected.len(), "{}", out.stderr);
    for unbroken in ["v_note", "p_note", "t_note", "`extra`", "`id`", "`note`"] {
        assert!(!out.stderr.contains(unbroken), "{unbroken}: {}", out.stderr);
    }

    // An added column breaks nothing.
    let p = balances(
        "ALTER TABLE {{balances}} ADD COLUMN extra text;\n",
        "-- on credited\nINSERT INTO {{balances}} (id, amt, qty) VALUES ((:data->>'id')::int, (:data->>'amt')::int, (:data->>'qty')::int);\n",
        None,
    )
    .write();
    let out = p.reproject(&db, "plan").await;
    out.ok();
    assert!(broken_lines(&out.stderr).is_empty(), "{}", out.stderr);
    db.drop().await;
}

/// A broken dependent is refused with the `redefine` entry that fixes it; redefined, it is
/// not; a redefinition of a dependent the change leaves alone is refused (it would be ignored).
#[tokio::test(flavor = "multi_thread")]
async fn broken_dependents_are_refused_unless_redefined() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "{EVENTS}
         CREATE TABLE balances (id int PRIMARY KEY, amt int, legacy text, qty int, note text);
         CREATE VIEW v_legacy AS SELECT id, legacy FROM balances;
         CREATE VIEW v_note AS SELECT id, note FROM balances;"
    ))
    .await;
    let p = balances(CHANGE, CHANGED_HANDLERS, None).write();
    p.reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("refusing to rebuild: view public.v_legacy uses column `legacy`")
        .stderr_has(
            "hint: define it against the new shape: on projection `balances`, `redefine = { \"public.v_legacy\" = \"shapes/v_legacy.sql\" }`",
        );

    // Redefined: no refusal. A redefinition of a view the change leaves alone: refused.
    let view = "CREATE VIEW public.v_legacy AS SELECT id FROM {{balances}};\n";
    let p = balances(
        CHANGE,
        CHANGED_HANDLERS,
        Some("{ \"public.v_legacy\" = \"shapes/v_legacy.sql\", \"public.v_note\" = \"shapes/v_note.sql\" }"),
    )
    .file("shapes/v_legacy.sql", view)
    .file("shapes/v_note.sql", "CREATE VIEW public.v_note AS SELECT id FROM {{balances}};\n")
    .write();
    let out = p.reproject(&db, "plan").await;
    out.code(2)
        .stderr_has(
            "refusing to rebuild: projection `balances` redefines `public.v_note` (line 14), which is not a dependent that the new shape of its tables breaks",
        )
        .stderr_has("the new shape breaks `public.v_legacy`");
    assert!(broken_lines(&out.stderr).is_empty(), "{}", out.stderr);

    // Only the one that is broken: the plan passes.
    let p = balances(
        CHANGE,
        CHANGED_HANDLERS,
        Some("{ \"public.v_legacy\" = \"shapes/v_legacy.sql\" }"),
    )
    .file("shapes/v_legacy.sql", view)
    .write();
    p.reproject(&db, "plan").await.ok();
    db.drop().await;
}

/// The `redefine` entry of most tests here: the view `tally_view` from its file.
const TALLY_VIEW: &str = "{ \"public.tally_view\" = \"shapes/tally_view.sql\" }";

/// The tally project with `redefine = VALUE` (the value as TOML).
fn redefining(value: &str) -> Config {
    tally::with(Projection::new("tally").option_toml("redefine", value))
}

/// The same, rebuilt into the shape `ddl` (in `shapes/v2.sql`).
fn redefining_into(value: &str, ddl: &str) -> Config {
    tally::with(
        Projection::new("tally")
            .option_toml("redefine", value)
            .option("reshape", "shapes/v2.sql"),
    )
    .file("shapes/v2.sql", ddl)
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

/// The roles of a test that owns and reads a view (cluster-wide, so named after the
/// database): (owner, reader).
async fn view_roles(db: &TestDb) -> (String, String) {
    let (owner, reader) = (
        format!("dep_owner_{}", db.name),
        format!("dep_reader_{}", db.name),
    );
    db.exec(&format!("CREATE ROLE {owner}; CREATE ROLE {reader};"))
        .await;
    (owner, reader)
}

/// Drops the roles (with what they own) and the database.
async fn drop_with_roles(db: TestDb, roles: &[&str]) {
    let list = roles.join(", ");
    db.exec(&format!("DROP OWNED BY {list} CASCADE; DROP ROLE {list}"))
        .await;
    db.drop().await;
}

/// `amt` of `balances` (int) becomes bigint: what reads it must be redefined.
const RETYPE_AMT: &str = "ALTER TABLE {{balances}} ALTER COLUMN amt TYPE bigint;\n";

const AMT_HANDLERS: &str = "-- on credited\n\
    INSERT INTO {{balances}} (id, amt) VALUES ((:data->>'id')::int, (:data->>'amt')::bigint);\n";

/// The swap replaces a broken view by the given definition with its owner, grants and
/// comment, and a view of it with it; a view of kept columns is left alone. A redefinition
/// that does not create what it names refuses the swap (exit 4) and changes nothing. The
/// rollback restores the recorded definitions.
#[tokio::test(flavor = "multi_thread")]
async fn the_swap_redefines_a_view_and_the_rollback_restores_it() {
    let db = TestDb::new().await;
    let (owner, reader) = view_roles(&db).await;
    // The swap locks the view, and PostgreSQL locks a view's tables with its owner's
    // privileges: ACCESS EXCLUSIVE needs UPDATE (or DELETE, TRUNCATE), not only SELECT.
    db.exec(&format!(
        "{EVENTS}{TWO_EVENTS}
         CREATE TABLE balances (id int PRIMARY KEY, amt int NOT NULL);
         INSERT INTO balances VALUES (1, 5), (2, 7);
         CREATE VIEW summary AS SELECT id, amt FROM balances;
         CREATE VIEW outer_summary AS SELECT id FROM summary;
         GRANT SELECT, UPDATE ON balances TO {owner};
         ALTER VIEW summary OWNER TO {owner};
         GRANT SELECT ON summary TO {reader};
         COMMENT ON VIEW summary IS 'per balance';
         CREATE VIEW untouched AS SELECT id FROM balances;"
    ))
    .await;
    let redefine = "{ \"public.summary\" = \"shapes/summary.sql\", \"public.outer_summary\" = \"shapes/outer_summary.sql\" }";

    // A redefinition that does not create what it names is refused at the swap; nothing
    // changes.
    let p: Project = balances(RETYPE_AMT, AMT_HANDLERS, Some(redefine))
        .file(
            "shapes/summary.sql",
            "CREATE VIEW public.summary_typo AS SELECT id FROM {{balances}};\n",
        )
        .file(
            "shapes/outer_summary.sql",
            "CREATE VIEW public.outer_summary AS SELECT id FROM public.summary_typo;\n",
        )
        .write();
    p.reproject(&db, "rebuild --yes")
        .await
        .code(4)
        .stderr_has("did not create view `public.summary`");
    assert_eq!(db.int("SELECT sum(amt)::bigint FROM summary").await, 12);
    assert_eq!(db.int("SELECT count(*) FROM outer_summary").await, 2);
    assert!(!db.exists("summary_typo").await);

    // Corrected, the swap runs them against the new table.
    p.write(
        "shapes/summary.sql",
        "CREATE VIEW public.summary AS SELECT id, amt * 100 AS cents FROM {{balances}};\n",
    );
    p.write(
        "shapes/outer_summary.sql",
        "CREATE VIEW public.outer_summary AS SELECT id, cents FROM public.summary;\n",
    );
    p.reproject(&db, "swap --yes").await.ok();
    assert_eq!(
        db.int("SELECT sum(cents)::bigint FROM summary").await,
        12000
    );
    assert_eq!(
        db.int("SELECT sum(cents)::bigint FROM outer_summary").await,
        12000
    );
    assert_eq!(db.int("SELECT count(*) FROM untouched").await, 2);
    assert_summary_owner_and_comment(&db, &owner).await;
    assert_eq!(
        db.int(&format!("SELECT count(*) FROM aclexplode((SELECT relacl FROM pg_class WHERE oid = 'summary'::regclass)) a WHERE pg_get_userbyid(a.grantee) = '{reader}' AND a.privilege_type = 'SELECT'")).await,
        1
    );

    // The rollback: the recorded definitions are its redefinitions.
    p.reproject(&db, "rollback --yes").await.ok();
    assert_eq!(db.int("SELECT sum(amt)::bigint FROM summary").await, 12);
    assert_eq!(db.int("SELECT count(*) FROM outer_summary").await, 2);
    assert_eq!(
        db.int("SELECT count(*) FROM information_schema.columns WHERE table_name = 'summary' AND column_name = 'cents'").await,
        0
    );
    assert_summary_owner_and_comment(&db, &owner).await;
    drop_with_roles(db, &[&owner, &reader]).await;
}

/// The view `summary` has the owner and comment the test gave it.
async fn assert_summary_owner_and_comment(db: &TestDb, owner: &str) {
    db.assert_text(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'summary'::regclass",
        Some(owner),
    )
    .await;
    db.assert_text(
        "SELECT obj_description('summary'::regclass, 'pg_class')",
        Some("per balance"),
    )
    .await;
}

/// The same for a policy and a trigger of the table, another table's foreign key to it and a
/// publication's column list: replaced at the swap (the foreign key created `NOT VALID`, then
/// validated), the originals back at the rollback.
#[tokio::test(flavor = "multi_thread")]
async fn the_swap_redefines_policies_triggers_foreign_keys_and_publications() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "{EVENTS}{TWO_EVENTS}
         CREATE TABLE balances (id int PRIMARY KEY, amt int NOT NULL UNIQUE);
         INSERT INTO balances VALUES (1, 50), (2, 70);
         CREATE TABLE lines (id int PRIMARY KEY, amt int REFERENCES balances (amt));
         INSERT INTO lines VALUES (1, 50);
         CREATE POLICY p_amt ON balances USING (amt > 0);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER t_amt BEFORE UPDATE OF amt ON balances FOR EACH ROW EXECUTE FUNCTION touch();
         CREATE PUBLICATION pub_cols FOR TABLE balances (id, amt);"
    ))
    .await;
    let before = dependent_state(&db).await;
    assert!(
        before.1.as_deref().unwrap().contains("UPDATE OF amt ON"),
        "{before:?}"
    );
    let p = balances(
        RETYPE_AMT,
        AMT_HANDLERS,
        Some("{ \"p_amt on public.balances\" = \"shapes/p_amt.sql\", \"t_amt on public.balances\" = \"shapes/t_amt.sql\", \"lines_amt_fkey on public.lines\" = \"shapes/fk.sql\", \"publication pub_cols\" = \"shapes/pub.sql\" }"),
    )
    .file("shapes/p_amt.sql", "CREATE POLICY p_amt ON {{balances}} USING (amt > 1);\n")
    .file(
        "shapes/t_amt.sql",
        "CREATE TRIGGER t_amt BEFORE UPDATE OF amt, id ON {{balances}} FOR EACH ROW EXECUTE FUNCTION touch();\n",
    )
    .file(
        "shapes/fk.sql",
        "ALTER TABLE public.lines ADD CONSTRAINT lines_amt_fkey FOREIGN KEY (amt) REFERENCES {{balances}} (amt) NOT VALID;\n",
    )
    .file("shapes/pub.sql", "ALTER PUBLICATION pub_cols ADD TABLE {{balances}} (id);\n")
    .write();
    p.reproject(&db, "rebuild --yes").await.ok();
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
    assert_eq!(
        after.2.as_deref(),
        Some("FOREIGN KEY (amt) REFERENCES balances(amt)"),
        "validated after the commit"
    );
    assert_eq!(after.3.as_deref(), Some("id"));
    // The old table keeps no foreign key and no publication membership.
    let old = "SELECT oid FROM pg_class WHERE relname LIKE 'balances\\_old%' AND relkind = 'r'";
    assert_eq!(db.int(&format!("SELECT count(*) FROM ({old}) o")).await, 1);
    assert_eq!(
        db.int(&format!(
            "SELECT count(*) FROM pg_constraint WHERE confrelid IN ({old})"
        ))
        .await,
        0
    );
    assert_eq!(
        db.int(&format!(
            "SELECT count(*) FROM pg_publication_rel WHERE prrelid IN ({old})"
        ))
        .await,
        0
    );

    p.reproject(&db, "rollback --yes").await.ok();
    let restored = dependent_state(&db).await;
    assert_eq!(restored, before);
    db.drop().await;
}

type State = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Policy `p_amt`, trigger `t_amt`, foreign key `lines_amt_fkey` (with ` NOT VALID` unless
/// validated) and the columns `pub_cols` publishes of the table named `balances`.
async fn dependent_state(db: &TestDb) -> State {
    (
        db.text("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'p_amt' AND polrelid = 'balances'::regclass").await,
        db.text("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 't_amt' AND tgrelid = 'balances'::regclass").await,
        db.text("SELECT pg_get_constraintdef(oid) || CASE WHEN convalidated THEN '' ELSE ' NOT VALID' END FROM pg_constraint WHERE conname = 'lines_amt_fkey' AND confrelid = 'balances'::regclass").await,
        db.text("SELECT array_to_string(attnames, ',') FROM pg_publication_tables WHERE pubname = 'pub_cols' AND tablename = 'balances'").await,
    )
}

/// From the config to the swap: the `redefine` file of a broken view (a comment line, then
/// the statement), rendered with the live table's name, is what the swap of that table runs;
/// with it, nothing is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_configured_redefinition_reaches_the_swap_rendered() {
    let db = db_with_view(10).await;
    let p = redefining_into(
        TALLY_VIEW,
        "ALTER TABLE {{tally}} ALTER COLUMN total TYPE numeric;\n",
    )
    .file(
            "shapes/tally_view.sql",
            "-- the total, in cents\nCREATE VIEW public.tally_view AS SELECT stream, total * 100 AS cents FROM {{tally}};\n",
        )
        .write();
    p.reproject(&db, "rebuild --yes").await.ok();
    db.assert_text(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tally'::regclass AND attname = 'total'",
        Some("numeric"),
    )
    .await;
    assert_eq!(
        db.int("SELECT (SELECT sum(cents) FROM tally_view)::bigint - 100 * (SELECT sum(total) FROM tally)::bigint")
            .await,
        0
    );
    assert!(db.int("SELECT sum(cents)::bigint FROM tally_view").await > 0);
    // It reads the live table, by its qualified name.
    db.assert_int(
        "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
         WHERE r.ev_class = 'tally_view'::regclass AND d.refobjid = 'tally'::regclass AND d.refobjsubid > 0",
        2,
    )
    .await;
    db.drop().await;
}

/// Before the replay, the redefinitions are tried against an empty table of the new shape: a
/// view that still names the old column is refused, with the file and line, before anything
/// is written; a correct one, and a correct policy, pass; the trial leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn redefinitions_are_tried_against_the_new_shape_before_the_replay() {
    let db = db_with_view(10).await;
    db.exec("CREATE POLICY big ON tally USING (total > 10)")
        .await;
    let config = redefining_into(
        "{ \"public.tally_view\" = \"shapes/tally_view.sql\", \"big on public.tally\" = \"shapes/big.sql\" }",
        "ALTER TABLE {{tally}} RENAME COLUMN total TO sum;\n",
    )
    .file("tally.sql", &tally::HANDLERS.replace("total", "sum"))
    .file(
        "shapes/big.sql",
        "CREATE POLICY big ON {{tally}} USING (sum > 10);\n",
    );
    let p = config
        .clone()
        .file(
            "shapes/tally_view.sql",
            "\nCREATE VIEW public.tally_view AS SELECT stream, total FROM {{tally}};\n",
        )
        .write();
    refused(
        &db,
        &p,
        &[
            "the redefinition of `public.tally_view` (",
            "shapes/tally_view.sql:2) does not fit the new shape of `tally`",
            "column \"total\" does not exist",
        ],
    )
    .await;
    assert!(!db.exists("tally_shape_check").await);
    db.assert_int("SELECT count(*) FROM pg_policy WHERE polname = 'big'", 1)
        .await;

    let p = config
        .file(
            "shapes/tally_view.sql",
            "CREATE VIEW public.tally_view AS SELECT stream, sum AS total FROM {{tally}};\n",
        )
        .write();
    p.reproject(&db, "rebuild --yes").await.ok();
    assert!(!db.exists("tally_shape_check").await);
    db.assert_text(
        "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'big' AND polrelid = 'tally'::regclass",
        Some("(sum > 10)"),
    )
    .await;
    assert_eq!(
        db.int("SELECT (SELECT sum(total) FROM tally_view)::bigint - (SELECT sum(sum) FROM tally)::bigint")
            .await,
        0
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
