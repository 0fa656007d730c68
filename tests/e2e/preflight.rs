//! What would fail at the swap is refused before the first event is replayed, by `plan`,
//! `rebuild --dry-run` and `rebuild` alike (one code path: src/preflight.rs), and nothing is
//! written; and who ran a rebuild is recorded even without `$USER`.

use crate::config::Projection;
use crate::harness::{command, Out, Project, TestDb};
use crate::tally;

/// A connection string for `db` as `role` (the test server trusts every local role).
fn as_role(db: &TestDb, role: &str) -> String {
    let url = db.url.replace("user='postgres'", &format!("user='{role}'"));
    if url == db.url {
        format!("{} user='{role}'", db.url)
    } else {
        url
    }
}

async fn run_as(db: &TestDb, p: &Project, url: &str, args: &[&str]) -> Out {
    let out = command(db, &p.config(), args)
        .env("DATABASE_URL", url)
        .output()
        .await
        .expect("cannot run reproject");
    Out::from(out)
}

/// The error as printed, from `error:` on (a rebuild may print warnings before it).
fn error_text(out: &Out) -> String {
    match out.stderr.find("error:") {
        Some(at) => out.stderr[at..].to_string(),
        None => panic!("no error in:\n{}", out.stderr),
    }
}

/// `plan` (unless `plan_too` is false: it has no such option), `rebuild --dry-run` and
/// `rebuild --yes`, each with `extra`, as `url`: each exits 2 with the same error, which has
/// every one of `needles`; and none of them wrote anything (no state schema, no `_rebuild`
/// table besides those that were there before).
async fn refused_by_all(
    db: &TestDb,
    p: &Project,
    url: &str,
    extra: &[&str],
    needles: &[&str],
    plan_too: bool,
) {
    let had_state = db
        .text("SELECT to_regnamespace('reproject')::text")
        .await
        .is_some();
    let rebuild_tables =
        "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_rebuild' AND relkind = 'r'";
    let before = db.int(rebuild_tables).await;
    let state_now = "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace('reproject')) \
        + coalesce((xpath('/row/n/text()', query_to_xml('SELECT count(*) AS n FROM reproject.runs', false, true, '')))[1]::text::bigint, 0) * 1000 \
        WHERE to_regclass('reproject.runs') IS NOT NULL \
        UNION ALL SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace('reproject')) \
        WHERE to_regclass('reproject.runs') IS NULL";
    let state_before = db.int(state_now).await;
    let mut commands: Vec<Vec<&str>> = vec![
        [&["rebuild", "--dry-run"][..], extra].concat(),
        [&["rebuild", "--yes"][..], extra].concat(),
    ];
    if plan_too {
        commands.insert(0, [&["plan"][..], extra].concat());
    }
    let mut first: Option<String> = None;
    for args in &commands {
        let out = run_as(db, p, url, args).await;
        out.code(2);
        for needle in needles {
            out.stderr_has(needle);
        }
        out.stderr_has("hint:");
        assert!(
            !out.stderr.contains("-> run") && !out.stderr.contains("replaying"),
            "{args:?} started a run before refusing:\n{}",
            out.stderr
        );
        let text = error_text(&out);
        match &first {
            None => first = Some(text),
            Some(f) => assert_eq!(f, &text, "{args:?} refused differently"),
        }
    }
    if !had_state {
        assert_eq!(
            db.text("SELECT to_regnamespace('reproject')::text").await,
            None,
            "the state schema was created"
        );
    } else {
        db.assert_int_because(state_now, state_before, "the state schema was written")
            .await;
    }
    db.assert_int_because(rebuild_tables, before, "a _rebuild table was created")
        .await;
}

/// Creates the roles (cluster-wide, so named after the database) and returns their names.
async fn roles(db: &TestDb, names: &[&str], login: bool) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        let role = format!("{n}_{}", db.name);
        db.exec(&format!(
            "DO $$ BEGIN CREATE ROLE {role}{}; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            if login { " LOGIN" } else { "" }
        ))
        .await;
        out.push(role);
    }
    out
}

async fn drop_roles(db: TestDb, roles: &[String]) {
    let list = roles.join(", ");
    db.exec(&format!(
        "DROP SCHEMA IF EXISTS reproject CASCADE; REASSIGN OWNED BY {list} TO postgres; DROP OWNED BY {list}; DROP ROLE {list}"
    ))
    .await;
    db.drop().await;
}

/// A role that does not own the table (nor belongs to its owner) is refused by all three
/// before any event, naming the table and the owner; a member of the owner passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_cannot_act_as_the_owner_is_refused_before_any_event() {
    let db = tally::db(100).await;
    let r = roles(&db, &["app", "ops"], false).await;
    let (app, ops) = (&r[0], &r[1]);
    db.exec(&format!(
        "ALTER ROLE {ops} LOGIN;
         ALTER TABLE tally OWNER TO {app};
         GRANT CREATE ON SCHEMA public TO {app}, {ops};
         GRANT CREATE ON DATABASE \"{}\" TO {ops};
         GRANT SELECT ON events TO {ops};
         GRANT SELECT, INSERT, UPDATE, DELETE ON tally TO {ops};",
        db.name
    ))
    .await;
    let p = tally::project();
    let url = as_role(&db, ops);
    refused_by_all(
        &db,
        &p,
        &url,
        &[],
        &[
            &format!("table `tally` is owned by role `{app}`, and role `{ops}` is neither"),
            &format!("hint: run reproject as `{app}` (or a role that is a member of it: `GRANT \"{app}\" TO \"{ops}\"`)"),
        ],
        true,
    )
    .await;
    // The hint is one the user can follow: as a member of the owner, the rebuild goes through.
    db.exec(&format!("GRANT {app} TO {ops}")).await;
    run_as(&db, &p, &url, &["plan"]).await.ok();
    run_as(&db, &p, &url, &["rebuild", "--yes"])
        .await
        .ok()
        .stdout_has("swapped");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(
        db.text("SELECT tableowner::text FROM pg_tables WHERE tablename = 'tally'")
            .await
            .as_deref(),
        Some(app.as_str())
    );
    drop_roles(db, &r).await;
}

/// The swap alters what depends on the table: a view and another table's foreign key owned
/// by someone else are refused up front, both named.
#[tokio::test(flavor = "multi_thread")]
async fn dependents_owned_by_another_role_are_refused_up_front() {
    let db = tally::db(50).await;
    let r = roles(&db, &["builder", "reporting"], false).await;
    let (builder, reporting) = (&r[0], &r[1]);
    db.exec(&format!(
        "ALTER ROLE {builder} LOGIN;
         ALTER TABLE tally OWNER TO {builder};
         GRANT CREATE ON SCHEMA public TO {builder};
         GRANT CREATE ON DATABASE \"{}\" TO {builder};
         GRANT SELECT ON events TO {builder};
         CREATE VIEW tally_report AS SELECT stream, total FROM tally;
         ALTER VIEW tally_report OWNER TO {reporting};
         CREATE TABLE notes (stream text REFERENCES tally (stream), note text);
         ALTER TABLE notes OWNER TO {reporting};",
        db.name
    ))
    .await;
    let p = tally::project();
    let url = as_role(&db, builder);
    refused_by_all(
        &db,
        &p,
        &url,
        &[],
        &[
            "3 problems, found before anything was written",
            &format!("view `tally_report` is owned by role `{reporting}`"),
            &format!("locks view `tally_report`, which PostgreSQL does with the privileges of role `{reporting}`"),
            "re-points it at the new table",
            &format!("table `notes` is owned by role `{reporting}`"),
            "its foreign key notes_stream_fkey references tally",
        ],
        true,
    )
    .await;
    drop_roles(db, &r).await;
}

/// The swap locks the views that read a live table, and PostgreSQL locks what a view reads
/// with its owner's privileges: an owner with SELECT alone would make every lock attempt fail
/// after the replay. plan, the dry run and the rebuild refuse it up front, naming the view,
/// the role and the table (also through a view of the view); with UPDATE granted, the rebuild
/// swaps and the views read the new table.
#[tokio::test(flavor = "multi_thread")]
async fn a_view_whose_owner_cannot_lock_what_it_reads_is_refused_up_front() {
    let db = tally::db(50).await;
    let r = roles(&db, &["reporting"], false).await;
    let reporting = &r[0];
    db.exec(&format!(
        "CREATE VIEW tally_report AS SELECT stream, total FROM tally;
         CREATE VIEW tally_top AS SELECT stream FROM tally_report WHERE total > 0;
         GRANT SELECT ON tally TO {reporting};
         ALTER VIEW tally_report OWNER TO {reporting};"
    ))
    .await;
    let p = tally::project();
    refused_by_all(
        &db,
        &p,
        &db.url,
        &[],
        &[
            &format!("the swap of `tally` locks view `tally_report`, which PostgreSQL does with the privileges of role `{reporting}` on what the view reads, and `{reporting}` has no UPDATE, DELETE or TRUNCATE privilege on `tally`"),
            &format!("GRANT UPDATE ON tally TO \"{reporting}\""),
        ],
        true,
    )
    .await;
    db.exec(&format!("GRANT UPDATE ON tally TO {reporting}"))
        .await;
    p.reproject(&db, "rebuild --yes").await.ok();
    db.assert_int(
        "SELECT count(*) FROM tally_top t JOIN tally USING (stream)",
        db.int("SELECT count(*) FROM tally WHERE total > 0").await,
    )
    .await;
    db.assert_int(
        "SELECT (count(*) FILTER (WHERE d.refobjid = 'tally'::regclass) > 0 \
                 AND count(*) FILTER (WHERE d.refobjid = 'tally_old'::regclass) = 0)::int::bigint \
           FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid \
          WHERE w.ev_class = 'tally_report'::regclass",
        1,
    )
    .await;
    drop_roles(db, &r).await;
}

/// A user's own table with the helper's name is never replaced, and plan and the dry run say
/// so too, before the state schema exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_own_table_with_the_helper_name_is_refused_by_all() {
    let db = tally::db(20).await;
    db.exec("CREATE TABLE tally_rebuild (mine text); INSERT INTO tally_rebuild VALUES ('keep me')")
        .await;
    let p = tally::project();
    refused_by_all(
        &db,
        &p,
        &db.url,
        &[],
        &[
            "table `tally_rebuild` exists and was not created by reproject",
            "hint: rename or drop `tally_rebuild` yourself",
        ],
        true,
    )
    .await;
    db.assert_text("SELECT mine FROM tally_rebuild", Some("keep me"))
        .await;
    db.drop().await;
}

/// A projection with neither `handlers` nor `command` is one the binary cannot run: all
/// three say so, naming the file and line.
#[tokio::test(flavor = "multi_thread")]
async fn a_projection_without_handlers_or_command_is_refused_by_all() {
    let db = tally::db(20).await;
    let p = tally::with(Projection::new("tally").handlers(None)).write();
    refused_by_all(
        &db,
        &p,
        &db.url,
        &[],
        &["reproject.toml:12: projection `tally` has neither `handlers` nor `command`"],
        true,
    )
    .await;
    db.drop().await;
}

/// `--jobs` asks for stream lanes; a projection without `stream_key` cannot have them: the
/// dry run refuses it like the rebuild.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_without_stream_key_is_refused_by_the_dry_run_and_the_rebuild() {
    let (db, p) = tally::fixture(20).await;
    refused_by_all(
        &db,
        &p,
        &db.url,
        &["--jobs", "2"],
        &[
            "--jobs 2 needs stream lanes, and projection `tally`",
            "declares no `stream_key`",
            "hint: leave out --jobs, or declare `stream_key = \"COLUMN\"` on `tally`",
        ],
        false,
    )
    .await;
    db.drop().await;
}

/// The state schema: a role that can neither create it nor use the one there is refused by
/// all three, before anything is replayed.
#[tokio::test(flavor = "multi_thread")]
async fn no_privilege_on_the_state_schema_is_refused_up_front() {
    let db = tally::db(20).await;
    let r = roles(&db, &["nostate"], true).await;
    let role = &r[0];
    db.exec(&format!(
        "ALTER TABLE tally OWNER TO {role};
         GRANT CREATE ON SCHEMA public TO {role};
         GRANT SELECT ON events TO {role};"
    ))
    .await;
    let p = tally::project();
    let url = as_role(&db, role);
    // No schema, and no CREATE on the database to make it.
    refused_by_all(
        &db,
        &p,
        &url,
        &[],
        &[
            &format!("role `{role}` cannot create reproject's state schema `reproject`: it has no CREATE privilege on database `{}`", db.name),
            &format!("CREATE SCHEMA reproject AUTHORIZATION \"{role}\""),
        ],
        true,
    )
    .await;
    // A schema made by someone else, with no privileges on it.
    db.exec("CREATE SCHEMA reproject").await;
    refused_by_all(
        &db,
        &p,
        &url,
        &[],
        &[
            &format!(
                "role `{role}` has no USAGE and CREATE privilege on reproject's state schema `reproject`"
            ),
            &format!("GRANT USAGE, CREATE ON SCHEMA reproject TO \"{role}\""),
        ],
        true,
    )
    .await;
    // The hint can be followed: with those privileges the rebuild goes through.
    db.exec(&format!(
        "GRANT USAGE, CREATE ON SCHEMA reproject TO \"{role}\""
    ))
    .await;
    run_as(&db, &p, &url, &["rebuild", "--yes"]).await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    drop_roles(db, &r).await;
}

/// `swap` of a run awaiting its swap checks what the swap alters before it locks anything.
#[tokio::test(flavor = "multi_thread")]
async fn swap_by_a_role_that_cannot_act_as_the_owner_is_refused_before_locking() {
    let (db, p) = tally::fixture(50).await;
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    let r = roles(&db, &["swapper"], true).await;
    let role = &r[0];
    // A swap writes the state schema's rows but creates nothing in it: USAGE is enough.
    db.exec(&format!(
        "GRANT USAGE ON SCHEMA reproject TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA reproject TO {role};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA reproject TO {role};
         GRANT SELECT ON events TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON tally, tally_rebuild TO {role};"
    ))
    .await;
    run_as(&db, &p, &as_role(&db, role), &["swap", "--yes"])
        .await
        .code(2)
        .stderr_has("refusing to continue run 1")
        .stderr_has("table `tally` is owned by role `postgres`");
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("awaiting_swap"),
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.runs WHERE jsonb_array_length(lock_attempts) > 0",
        0,
        "no lock was attempted",
    )
    .await;
    drop_roles(db, &r).await;
}

/// Without `$USER` and `$LOGNAME` (containers, systemd units), the run records the operating
/// system account, and the database roles it ran as; `history` and `status` show them.
#[tokio::test(flavor = "multi_thread")]
async fn initiated_by_falls_back_to_the_os_account_and_the_role_is_recorded() {
    let (db, p) = tally::fixture(20).await;
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::geteuid() }));
    let out = command(&db, &p.config(), &["rebuild", "--yes"])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("USERNAME")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        db.text("SELECT initiated_by FROM reproject.runs WHERE id = 1")
            .await,
        Some(account.clone()),
        "not the OS account"
    );
    assert_eq!(
        db.text("SELECT initiated_by || ' / ' || db_session_user || ' / ' || db_current_user FROM reproject.runs WHERE id = 1")
            .await,
        Some(format!("{account} / postgres / postgres"))
    );
    let history = p.reproject(&db, "history --json").await;
    let runs = history.ok().json()["runs"].clone();
    assert_eq!(runs[0]["db_session_user"], "postgres");
    assert_eq!(runs[0]["initiated_by"], account.as_str());
    p.reproject(&db, "history")
        .await
        .ok()
        .stdout_has(&format!("by {account} (role postgres)"));
    let status = p.reproject(&db, "status --json").await;
    assert_eq!(
        status.ok().json()["projections"][0]["db_current_user"],
        "postgres"
    );
    db.drop().await;
}

/// `rollback` checks what it alters before it locks: a role that cannot act as the owner is
/// refused (exit 2) and the swap stays in place.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_by_a_role_that_cannot_act_as_the_owner_is_refused_before_locking() {
    let (db, p) = tally::fixture(50).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    let r = roles(&db, &["undoer"], true).await;
    let role = &r[0];
    db.exec(&format!(
        "GRANT USAGE, CREATE ON SCHEMA reproject TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA reproject TO {role};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA reproject TO {role};
         GRANT SELECT ON events TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON tally, tally_old TO {role};"
    ))
    .await;
    run_as(&db, &p, &as_role(&db, role), &["rollback", "--yes"])
        .await
        .code(2)
        .stderr_has("refusing to roll back run 1")
        .stderr_has("table `tally` is owned by role `postgres`")
        .stderr_has("hint: run reproject as `postgres`");
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("swapped"),
    )
    .await;
    db.assert_int_because(
        "SELECT jsonb_array_length(lock_attempts)::bigint FROM reproject.runs WHERE id = 1",
        1,
        "only the swap's lock attempt",
    )
    .await;
    drop_roles(db, &r).await;
}

/// A database error reaches the user with the server's words under the step that failed,
/// not under an empty "database error" layer: here the owner revoked its own UPDATE, DELETE
/// and TRUNCATE, so the swap's ACCESS EXCLUSIVE lock is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_error_shows_the_servers_message_under_the_step() {
    let db = tally::db(30).await;
    let r = roles(&db, &["selfrevoked"], true).await;
    let role = &r[0];
    // ACCESS EXCLUSIVE needs UPDATE, DELETE or TRUNCATE, and from PostgreSQL 17 on MAINTAIN
    // also grants it.
    let maintain = if db
        .int("SELECT current_setting('server_version_num')::bigint")
        .await
        >= 170000
    {
        ", MAINTAIN"
    } else {
        ""
    };
    db.exec(&format!(
        "ALTER TABLE tally OWNER TO {role};
         GRANT CREATE ON SCHEMA public TO {role};
         GRANT CREATE ON DATABASE \"{}\" TO {role};
         GRANT SELECT ON events TO {role};
         SET ROLE {role}; REVOKE UPDATE, DELETE, TRUNCATE{maintain} ON tally FROM {role}; RESET ROLE;",
        db.name
    ))
    .await;
    let p = tally::project();
    let out = run_as(&db, &p, &as_role(&db, role), &["rebuild", "--yes"]).await;
    out.code(1)
        .stderr_has("error: cannot lock `tally`")
        .stderr_has("caused by: ERROR: permission denied for table tally [SQLSTATE 42501]");
    assert!(
        !out.stderr.contains("caused by: database error"),
        "{}",
        out.stderr
    );
    drop_roles(db, &r).await;
}

/// A state schema from an older reproject needs migrating, which alters its tables: a role
/// that cannot act as their owner is refused up front, not halfway into the migration.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_schema_to_migrate_owned_by_another_role_is_refused_up_front() {
    let (db, p) = tally::fixture(20).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    p.reproject(&db, "cleanup --yes").await.ok();
    let r = roles(&db, &["migrator"], true).await;
    let role = &r[0];
    // The schema as an older reproject left it: without the newest migration.
    db.exec(&format!(
        "ALTER TABLE reproject.runs DROP COLUMN db_session_user, DROP COLUMN db_current_user;
         DELETE FROM reproject.schema_migrations WHERE version = 14;
         ALTER TABLE tally OWNER TO {role};
         GRANT CREATE ON SCHEMA public TO {role};
         GRANT SELECT ON events TO {role};
         GRANT USAGE, CREATE ON SCHEMA reproject TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA reproject TO {role};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA reproject TO {role};"
    ))
    .await;
    refused_by_all(
        &db,
        &p,
        &as_role(&db, role),
        &[],
        &[
            "the state schema needs migrating, which alters its tables owned by role `postgres` (",
            "reproject.runs",
            "hint: run this rebuild once as `postgres` (it migrates the schema)",
        ],
        true,
    )
    .await;
    db.assert_int(
        "SELECT count(*) FROM reproject.schema_migrations WHERE version = 14",
        0,
    )
    .await;
    drop_roles(db, &r).await;
}

/// The name a rollback keeps the replaced table under is checked before it locks: taken by
/// a table of the user's, the rollback is refused (exit 2) and that table is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_taken_rolled_back_name_is_refused_before_the_rollback_locks() {
    let (db, p) = tally::fixture(30).await;
    p.reproject(&db, "rebuild --yes").await.ok();
    db.exec("CREATE TABLE tally_rolled_back_1 (mine text)")
        .await;
    p.reproject(&db, "rollback --yes")
        .await
        .code(2)
        .stderr_has("refusing to roll back run 1: table `tally_rolled_back_1` exists")
        .stderr_has("hint: rename or drop `tally_rolled_back_1`");
    db.assert_text(
        "SELECT status FROM reproject.runs WHERE id = 1",
        Some("swapped"),
    )
    .await;
    db.exec("DROP TABLE tally_rolled_back_1").await;
    p.reproject(&db, "rollback --yes").await.ok();
    db.drop().await;
}
