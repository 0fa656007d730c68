//! Rebuilding into a new shape (`reshape`): the DDL runs on the clone, the handlers write the
//! new shape, the swap proves "old table + declared change = new table" and carries everything
//! else (owner, grants, column grants through renames, comments, RLS, triggers, views), and a
//! rollback returns to the old shape and the old rows.

use crate::balances::{
    assert_columns, assert_currency_filled, column, config, credit, fingerprint, handler, names,
    old_handlers, plain, project, reshaped, v2_handlers, wrong_balances, Balances, COLUMNS,
    OLD_COLUMNS, OLD_VALUES, V2, V2_COLUMNS,
};
use crate::config::Projection;
use crate::harness::{assert_adds_one, Project, TestDb};
use serde_json::Value;

/// The rows as text, in order (compared before and after a rollback).
async fn rows(db: &TestDb) -> String {
    db.text("SELECT string_agg(b::text, ';' ORDER BY account) FROM balances b")
        .await
        .unwrap_or_default()
}

/// Everything the user did not ask to change is the old table's, and the application works.
async fn assert_carried(db: &TestDb, reader: &str, original: &Value, now: &Value, step: &str) {
    for key in [
        "owner",
        "acl",
        "comment",
        "row_security",
        "policies",
        "triggers",
        "publications",
        "reloptions",
        "replica_identity",
    ] {
        assert_eq!(now[key], original[key], "{step}: {key}");
    }
    assert_eq!(
        column(now, "region"),
        column(original, "region"),
        "{step}: a kept column"
    );
    assert_eq!(wrong_balances(db).await, 0, "{step}: rows");
    let visible = db
        .int_as(
            reader,
            "SELECT count(*) FROM balances",
            &format!("{step}: the reader cannot read"),
        )
        .await;
    assert_eq!(visible, 39, "{step}: RLS hides the 'secret' account");
    let through_view = db
        .int_as(
            reader,
            "SELECT count(*) FROM balances_view",
            &format!("{step}: the view does not work"),
        )
        .await;
    assert_eq!(through_view, 40, "{step}: view");
    assert_adds_one(
        db,
        "SELECT count(*) FROM audit",
        "UPDATE balances SET region = region WHERE account = 'acct-3'",
        &format!("{step}: trigger"),
    )
    .await;
    let odd = db
        .int(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace \
             AND relname LIKE '%rebuild%'",
        )
        .await;
    assert_eq!(odd, 0, "{step}: nothing is named after the rebuild table");
}

/// Rebuilds into the shape `ddl` with `handlers`, checks what every shape change must keep,
/// hands the new fingerprint to `check`, then rolls back and checks the old shape and rows.
async fn reshape_round_trip(ddl: &str, handlers: &str, check: impl Fn(&Value, &Value)) {
    let fx = Balances::new().await;
    let db = &fx.db;
    let original = fingerprint(db, "balances").await;
    let old_rows = rows(db).await;
    let p = project(handlers, ddl);
    p.reproject(db, "rebuild --yes").await.ok();
    let now = fingerprint(db, "balances").await;
    assert_carried(db, &fx.reader, &original, &now, "after the swap").await;
    check(&original, &now);

    p.reproject(db, "rollback --yes").await.ok();
    let back = fingerprint(db, "balances").await;
    let d = crate::catalog::differences(&original, &back);
    assert!(d.is_empty(), "after the rollback: {d:#?}");
    assert_eq!(rows(db).await, old_rows, "the rollback restores the rows");
    fx.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adds_columns_with_a_default_and_not_null_filled_by_the_replay() {
    let ddl = "ALTER TABLE {{balances}} ADD COLUMN currency text NOT NULL;\n\
               ALTER TABLE {{balances}} ADD COLUMN tier integer NOT NULL DEFAULT 1;\n\
               COMMENT ON COLUMN {{balances}}.currency IS 'ISO code';\n";
    let h = handler(
        &format!("{OLD_COLUMNS}, currency"),
        &format!("{OLD_VALUES}, :data->>'currency'"),
        "account",
    );
    reshape_round_trip(ddl, &h, |original, now| {
        assert_eq!(
            names(now, "columns"),
            ["account", "owner", "balance", "note", "region", "currency", "tier"]
        );
        assert_eq!(column(now, "currency")["not_null"], true);
        assert_eq!(column(now, "currency")["comment"], "ISO code");
        assert_eq!(column(now, "tier")["default"], "1");
        // Column grants and statistics of kept columns.
        assert_eq!(column(now, "owner"), column(original, "owner"));
        assert_eq!(column(now, "note"), column(original, "note"));
        assert_eq!(column(now, "balance"), column(original, "balance"));
        assert_eq!(now["indexes"], original["indexes"]);
        assert_eq!(now["constraints"], original["constraints"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drops_a_column_and_its_grants() {
    let h = old_handlers();
    reshape_round_trip(
        "ALTER TABLE {{balances}} DROP COLUMN note;",
        &h,
        |original, now| {
            assert_eq!(
                names(now, "columns"),
                ["account", "owner", "balance", "region"]
            );
            assert_eq!(column(now, "owner"), column(original, "owner"));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_a_type_keeping_comment_statistics_and_checks() {
    let h = handler(
        OLD_COLUMNS,
        "'owner-' || :stream, (:data->>'amount')::numeric / 1, :data->>'region'",
        "account",
    );
    reshape_round_trip(
        "ALTER TABLE {{balances}} ALTER COLUMN balance TYPE numeric(14,2);\n\
         COMMENT ON COLUMN {{balances}}.balance IS 'in euros';\n",
        &h,
        |original, now| {
            let (b, a) = (column(original, "balance"), column(now, "balance"));
            assert_eq!(a["type"], "numeric(14,2)");
            // The comment the reshape set stays; the grants are carried.
            assert_eq!(a["comment"], "in euros");
            assert_eq!(a["acl"], b["acl"]);
            assert_eq!(a["statistics"], 500);
            // The check is kept; PostgreSQL prints it for the new type.
            assert_eq!(names(now, "constraints"), names(original, "constraints"));
            assert_eq!(
                now["constraints"][0]["definition"],
                "CHECK ((balance >= (0)::numeric))"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renames_a_column_carrying_its_grants_comment_and_statistics() {
    let h = handler("owner_id, balance, region", OLD_VALUES, "account");
    reshape_round_trip(
        "ALTER TABLE {{balances}} RENAME COLUMN owner TO owner_id;",
        &h,
        |original, now| {
            let (b, a) = (column(original, "owner"), column(now, "owner_id"));
            assert_eq!(a["acl"], b["acl"], "the column grant follows the rename");
            assert!(!a["acl"].as_array().unwrap().is_empty());
            assert_eq!(a["comment"], "who owns it");
            assert_eq!(a["statistics"], 300);
            let index = now["indexes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "balances_by_owner")
                .expect("the index keeps its name");
            assert!(
                index["definition"]
                    .as_str()
                    .unwrap()
                    .ends_with("USING btree (owner_id)"),
                "{index}"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adds_and_drops_indexes() {
    let h = old_handlers();
    reshape_round_trip(
        "CREATE INDEX balances_by_region ON {{balances}} (region);\n\
         DROP INDEX {{balances_by_owner}};\n\
         CREATE INDEX ON {{balances}} (balance);\n",
        &h,
        |_, now| {
            assert_eq!(
                names(now, "indexes"),
                [
                    "balances_balance_idx",
                    "balances_by_region",
                    "balances_pkey"
                ]
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn adds_drops_and_changes_check_and_unique_constraints() {
    let h = old_handlers();
    reshape_round_trip(
        "ALTER TABLE {{balances}} DROP CONSTRAINT balance_not_negative,\n\
           ADD CONSTRAINT balance_not_negative CHECK (balance > -1);\n\
         ALTER TABLE {{balances}} ADD CHECK (length(account) > 0);\n\
         ALTER TABLE {{balances}} ADD UNIQUE (owner, account);\n",
        &h,
        |_, now| {
            assert_eq!(
                names(now, "constraints"),
                [
                    "balance_not_negative",
                    "balances_account_check",
                    "balances_owner_account_key",
                    "balances_pkey"
                ]
            );
            assert_eq!(
                now["constraints"][0]["definition"],
                "CHECK ((balance > '-1'::integer))"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_the_primary_key() {
    let h = handler(OLD_COLUMNS, OLD_VALUES, "account, region");
    reshape_round_trip(
        "ALTER TABLE {{balances}} DROP CONSTRAINT {{balances_pkey}};\n\
         ALTER TABLE {{balances}} ADD PRIMARY KEY (account, region);\n",
        &h,
        |_, now| {
            let pk = now["constraints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "p")
                .unwrap();
            assert_eq!(pk["name"], "balances_pkey");
            assert_eq!(pk["definition"], "PRIMARY KEY (account, region)");
        },
    )
    .await;
}

async fn state_runs(db: &TestDb) -> i64 {
    if db.exists("reproject.runs").await {
        db.int("SELECT count(*) FROM reproject.runs").await
    } else {
        0
    }
}

/// `plan` shows the change, `history` and `status` record it, and a second rebuild with the
/// shape already live keeps it instead of applying the DDL again.
#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_the_change_history_records_it_and_it_is_applied_once() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let p = project(&v2_handlers(), V2);
    p.reproject(db, "plan")
        .await
        .ok()
        .stdout_has("new shape (")
        .stdout_has("      added column currency text\n")
        .stdout_has("      renamed column owner → owner_id\n")
        .stdout_has("      added index balances_by_currency: btree (currency)\n");
    let json = p.reproject(db, "plan --json").await.ok().json();
    let shape = &json["projections"][0]["tables"][0]["shape"];
    assert_eq!(
        shape["columns"][1]["after"]["name"], "currency",
        "{shape:#}"
    );
    assert_eq!(
        shape["objects"][0]["name"], "balances_by_currency",
        "{shape:#}"
    );
    p.reproject(db, "rebuild --dry-run")
        .await
        .ok()
        .stdout_has("renamed column owner → owner_id")
        .stdout_has("on the rebuild tables of `balances` (their new shape)");
    assert!(!db.exists("balances_rebuild").await);
    assert_eq!(state_runs(db).await, 0, "plan and dry run write nothing");
    // The live runner writes the live tables, which do not have the new shape yet.
    p.reproject(db, "run --once --from-position head")
        .await
        .code(2)
        .stderr_has("projection `balances` declares `reshape`");

    p.reproject(db, "rebuild --yes").await.ok();
    let shaped = fingerprint(db, "balances").await;
    assert_eq!(names(&shaped, "columns"), V2_COLUMNS);
    p.reproject(db, "history")
        .await
        .ok()
        .stdout_has("new shape of `balances`: renamed column owner → owner_id; added column currency text; added index balances_by_currency");
    let history = p.reproject(db, "history --json").await.ok().json()["runs"].clone();
    let shapes = &history[0]["shapes"];
    assert_eq!(shapes[0]["run_id"], 1, "{history:#}");
    assert_eq!(shapes[0]["ddl"], V2);
    assert_eq!(shapes[0]["columns"][0]["after"]["name"], "owner_id");
    p.reproject(db, "status")
        .await
        .ok()
        .stdout_has("new shape of `balances` (run 1): renamed column owner → owner_id");

    // Again, the config unchanged: the shape is live already.
    let already = "reshape already applied by run 1; the clone keeps the live shape; remove `reshape` from the config";
    p.reproject(db, "plan").await.ok().stdout_has(already);
    p.reproject(db, "rebuild --yes")
        .await
        .ok()
        .stderr_has(already);
    let again = fingerprint(db, "balances").await;
    let d = crate::catalog::differences(&shaped, &again);
    assert!(d.is_empty(), "the second rebuild keeps the shape: {d:#?}");
    assert_currency_filled(db).await;

    // The shape in place another way (not by the last swapped run): the DDL fails on the copy.
    db.exec("ALTER TABLE balances RENAME COLUMN owner_id TO owner_ref")
        .await;
    p.reproject(db, "plan")
        .await
        .code(2)
        .stderr_has("shapes/v2.sql:1: projection `balances`: the reshape statement fails on the rebuilt copy of `balances`")
        .stderr_has("already exists");
    fx.drop().await;
}

/// With `ddl` in `shapes/v2.sql`, `reproject ARGS` is refused as a config error saying `needle`.
async fn refused_with_shape(db: &TestDb, p: &Project, ddl: &str, args: &str, needle: &str) {
    p.write("shapes/v2.sql", ddl);
    p.reproject(db, args).await.code(2).stderr_has(needle);
}

/// A DDL that fails on the copy is refused by `plan` and `rebuild` alike, naming the file, the
/// statement and the table, before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_statement_is_refused_before_anything_is_written() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let p = project(
        &old_handlers(),
        "ALTER TABLE {{balances}} ADD COLUMN currency text;\n\nALTER TABLE {{balances}} ADD COLUMN owner text;\n",
    );
    for args in ["plan", "rebuild --dry-run", "rebuild --yes"] {
        p.reproject(db, args)
            .await
            .code(2)
            .stderr_has("shapes/v2.sql:3: projection `balances`: the reshape statement fails on the rebuilt copy of `balances`")
            .stderr_has("column \"owner\" of relation \"balances_rebuild\" already exists");
    }
    assert!(!db.exists("balances_rebuild").await);
    assert_eq!(state_runs(db).await, 0);
    assert!(
        fingerprint(db, "balances").await["columns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "currency"),
        "the live table is untouched"
    );

    // Handlers that write a column the new shape does not have are refused the same way.
    refused_with_shape(
        db,
        &p,
        "ALTER TABLE {{balances}} DROP COLUMN region;\n",
        "plan",
        "balances.sql:2: projection `balances`, section `-- on credited`: the statement does not prepare",
    )
    .await;

    // A partial rebuild copies rows of the old shape: refused.
    refused_with_shape(
        db,
        &p,
        "ALTER TABLE {{balances}} ADD COLUMN tier int;\n",
        "rebuild --yes --streams acct-1",
        "a partial rebuild",
    )
    .await;
    assert_eq!(state_runs(db).await, 0);
    fx.drop().await;
}

/// A reshape changes the projection's own tables only: another projection's table in braces,
/// or a table written without braces, is refused naming the file and line.
#[tokio::test(flavor = "multi_thread")]
async fn a_reshape_changes_only_the_projections_tables() {
    let fx = Balances::new().await;
    let db = &fx.db;
    db.exec("CREATE TABLE other_table (id int PRIMARY KEY)")
        .await;
    let p = config(reshaped())
        .projection(Projection::new("other").tables(&["other_table"]))
        .file("balances.sql", &old_handlers())
        .file("other.sql", "-- on nothing\nSELECT 1 FROM {{other_table}};\n")
        .file(
            "shapes/v2.sql",
            "ALTER TABLE {{balances}} ADD COLUMN tier int;\nALTER TABLE {{other_table}} ADD COLUMN x int;\n",
        )
        .write();
    p.reproject(db, "plan")
        .await
        .code(2)
        .stderr_has("shapes/v2.sql:2: projection `balances`: the reshape names `{{other_table}}`, a table of projection `other`");
    refused_with_shape(
        db,
        &p,
        "ALTER TABLE {{balances}} ADD COLUMN tier int;\nALTER TABLE balances ADD COLUMN x int;\n",
        "plan balances",
        "shapes/v2.sql:2: projection `balances`: the reshape statement changes `balances`, which is not a rebuilt copy",
    )
    .await;
    refused_with_shape(
        db,
        &p,
        "DROP INDEX {{no_such_index}};\n",
        "plan balances",
        "shapes/v2.sql:1: projection `balances`: the reshape names `{{no_such_index}}`, which is neither a table of the projection nor an index of one",
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'balances'::regclass AND attname = 'x'",
        0,
    )
    .await;
    fx.drop().await;
}

/// A resumed run continues with the shape it applied; a changed reshape file is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_refuses_a_changed_reshape() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let p = project(&v2_handlers(), V2);
    p.reproject(db, "rebuild --yes --max-events 100 --batch-size 50")
        .await
        .ok();
    p.write(
        "shapes/v2.sql",
        &format!("{V2}ALTER TABLE {{{{balances}}}} ADD COLUMN tier int;\n"),
    );
    p.reproject(db, "rebuild --yes --resume")
        .await
        .code(2)
        .stderr_has("the `reshape` of projection `balances` changed since run 1 built its tables");
    p.write("shapes/v2.sql", V2);
    p.reproject(db, "rebuild --yes --resume").await.ok();
    assert_currency_filled(db).await;
    fx.drop().await;
}

/// After a rebuild into a new shape, a rollback restores the old generation (built by the
/// handlers of the old shape) and catches it up with the events since the swap with those
/// handlers.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_catches_the_old_shape_up_with_the_old_handlers() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let p = config(plain())
        .file("balances.sql", &old_handlers())
        .file("shapes/v2.sql", V2)
        .write();
    p.reproject(db, "rebuild --yes").await.ok();
    let original = fingerprint(db, "balances").await;

    p.write("reproject.toml", &config(reshaped()).toml());
    p.write("balances.sql", &v2_handlers());
    p.reproject(db, "rebuild --yes").await.ok();
    assert_eq!(
        column(&fingerprint(db, "balances").await, "currency")["type"],
        "text"
    );
    credit(db, 401, 480).await;
    p.reproject(db, "rollback --yes")
        .await
        .ok()
        .stdout_has("caught up with 80 event(s) since the swap");
    let back = fingerprint(db, "balances").await;
    let d = crate::catalog::differences(&original, &back);
    assert!(d.is_empty(), "the old shape is back: {d:#?}");
    assert_carried(db, &fx.reader, &original, &back, "after the rollback").await;
    fx.drop().await;
}

/// The swap proves "old table + declared change": anything else that differs on the rebuilt
/// table (here a column added by hand after the clone) refuses the swap, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_was_not_declared_refuses_the_swap() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let p = project(&v2_handlers(), V2);
    p.reproject(db, "rebuild --yes --no-swap").await.ok();
    db.exec("ALTER TABLE balances_rebuild ADD COLUMN extra int")
        .await;
    p.reproject(db, "swap --yes")
        .await
        .code(4)
        .stderr_has("refusing to swap `balances`: the new table would differ from the live one with the declared shape change")
        .stderr_has("columns `extra` is new");
    assert_columns(db, &COLUMNS, "nothing was swapped").await;
    db.exec("ALTER TABLE balances_rebuild DROP COLUMN extra")
        .await;
    p.reproject(db, "swap --yes").await.ok();
    assert_columns(db, &V2_COLUMNS, "swapped").await;
    fx.drop().await;
}

/// An external projector (`command`) writes the new shape the same way: the DDL runs on the
/// rebuild table it is handed.
#[tokio::test(flavor = "multi_thread")]
async fn an_external_projector_builds_the_new_shape() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let projector = format!(
        "#!/bin/sh\nset -eu\n\"{}\" -X -q -v ON_ERROR_STOP=1 -v from=\"$REPROJECT_FROM_POSITION\" -v to=\"$REPROJECT_TO_POSITION\" <<SQL\n\
         INSERT INTO $REPROJECT_TABLE_BALANCES AS b (account, owner_id, balance, region, currency)\n\
         SELECT stream, 'owner-' || stream, sum((data->>'amount')::bigint), min(data->>'region'), min(data->>'currency')\n\
         FROM events WHERE id > :from AND id <= :to GROUP BY stream\n\
         ON CONFLICT (account) DO UPDATE SET balance = b.balance + EXCLUDED.balance;\nSQL\n",
        crate::harness::psql_bin().display()
    );
    let external = plain()
        .handlers(None)
        .option_toml("command", "[\"sh\", \"projector.sh\"]")
        .option("reshape", "shapes/v2.sql");
    let p = config(external)
        .file("projector.sh", &projector)
        .file("shapes/v2.sql", V2)
        .write();
    p.reproject(db, "plan")
        .await
        .ok()
        .stdout_has("      added column currency text\n");
    p.reproject(db, "rebuild --yes").await.ok();
    assert_columns(db, &V2_COLUMNS, "the new shape").await;
    assert_currency_filled(db).await;
    fx.drop().await;
}

/// Stream lanes (`--jobs`) replay into the new shape like a single lane.
#[tokio::test(flavor = "multi_thread")]
async fn stream_lanes_replay_into_the_new_shape() {
    let fx = Balances::new().await;
    let db = &fx.db;
    let p = config(reshaped().option("stream_key", "account"))
        .file("balances.sql", &v2_handlers())
        .file("shapes/v2.sql", V2)
        .write();
    p.reproject(db, "rebuild --yes --jobs 2").await.ok();
    assert_columns(db, &V2_COLUMNS, "the new shape").await;
    assert_eq!(wrong_balances(db).await, 0);
    fx.drop().await;
}
