//! External projectors (docs/guide/external-projectors.md): a shell script using psql rebuilds the
//! tally projection from the range and tables reproject names in its environment.

use crate::config::{Config, Projection};
use crate::harness::{command, psql_bin, Out, Project, TestDb};
use crate::live::{finish, signal};
use crate::tally;
use std::path::Path;
use std::time::Duration;

const PASSWORD: &str = "s3cret-ext-pw";

/// The projector: records its range and environment, waits while a `pause` file exists (so a
/// test can append events or cancel meanwhile), fails with status 3 while a `fail` file exists,
/// appends an event of its own while an `append` file exists, and applies the events in (FROM, TO] to the rebuild table named by `REPROJECT_TABLE_TALLY`.
const PROJECTOR: &str = r#"#!/bin/sh
set -eu
echo "$REPROJECT_FROM_POSITION $REPROJECT_TO_POSITION $REPROJECT_EVENT_COUNT" >> ranges.log
env | grep -E '^(REPROJECT_|PG|DATABASE_URL=)' | sort > "env-$(wc -l < ranges.log | tr -d ' ').txt"
echo $$ > projector.pid
if [ -f fail ]; then
    echo "cannot apply the range (connected with $PGPASSWORD)" >&2
    exit 3
fi
if [ -f append ]; then
    # An application still writing: every run of the projector sees one more event arrive.
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO events (stream, type, data) VALUES ('s0', 'added', '{\"amount\": 1}')"
fi
if [ -f pause ]; then
    touch paused
    while [ -f pause ]; do sleep 0.05; done
    rm -f paused
fi
"$PSQL" -X -q -v ON_ERROR_STOP=1 -v from="$REPROJECT_FROM_POSITION" -v to="$REPROJECT_TO_POSITION" <<SQL
INSERT INTO $REPROJECT_TABLE_TALLY AS t (stream, n, total)
SELECT stream, count(*), sum((data->>'amount')::bigint) FROM events
 WHERE id > :from AND id <= :to AND NOT bad GROUP BY stream
ON CONFLICT (stream) DO UPDATE SET n = t.n + EXCLUDED.n, total = t.total + EXCLUDED.total;
SQL
echo "applied $REPROJECT_EVENT_COUNT event(s)"
"#;

/// Projection `tally` rebuilt by `command` (no handlers).
fn external(command: &str) -> Projection {
    Projection::new("tally")
        .handlers(None)
        .option_toml("command", command)
}

/// The tally events and `projection`, with the projector script beside them.
fn with_projector(projection: Projection) -> Config {
    Config::tally_events()
        .projection(projection)
        .file("projector.sh", PROJECTOR)
}

/// `tally` rebuilt by projector.sh, with one more option (`KEY = VALUE`) if given.
fn project(option: Option<(&str, &str)>) -> Project {
    let mut tally = external(SH);
    if let Some((key, value)) = option {
        tally = tally.option_toml(key, value);
    }
    with_projector(tally).write()
}

const SH: &str = r#"["sh", "projector.sh"]"#;

/// The projector's own checkpoint, which the swap hands over.
const HANDOVER: &str = r#"{ table = "projector_checkpoints", key_column = "name", key = "tally", position_column = "position" }"#;

/// Starts `reproject ARGS` (with a password) and waits until its projector has paused on the
/// `pause` file, which the test removes to let it go on.
async fn paused(db: &TestDb, p: &Project, args: &[&str]) -> tokio::process::Child {
    p.write("pause", "");
    let child = with_password(db, p, args).spawn().unwrap();
    wait_for_file(&p.dir.path().join("paused")).await;
    child
}

/// `reproject ARGS` connecting with a password (the test server trusts, so any password
/// connects; reproject must still hand it to the projector and show it nowhere else).
fn with_password(db: &TestDb, p: &Project, args: &[&str]) -> tokio::process::Command {
    let mut cmd = command(db, &p.config(), args);
    cmd.env("DATABASE_URL", format!("{} password={PASSWORD}", db.url))
        .env("PSQL", psql_bin());
    cmd
}

async fn run(db: &TestDb, p: &Project, args: &[&str]) -> Out {
    let out = with_password(db, p, args).output().await.unwrap();
    Out::from(out)
}

async fn wait_for_file(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not appear within 30 s", path.display());
}

fn read(p: &Project, name: &str) -> String {
    std::fs::read_to_string(p.dir.path().join(name)).unwrap_or_default()
}

/// `KEY=value` of a recorded environment.
fn var(env: &str, key: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from))
}

/// Everything reproject recorded about its runs, as text.
async fn history_text(db: &TestDb) -> String {
    db.text("SELECT string_agg(r::text, ' ') FROM reproject.runs r")
        .await
        .unwrap_or_default()
}

/// The whole contract: the first range from the start to the safe bound, a second range for
/// the events appended while the first ran (catch-up), the rebuilt table equal to a computation
/// from scratch, the swap at the last applied position with the hand-over checkpoint set
/// there, the environment as documented, and the password nowhere but in the projector's
/// environment.
#[tokio::test]
async fn a_script_rebuilds_the_projection_catches_up_and_hands_over() {
    let db = tally::db(100).await;
    // A wrong live row the rebuild must fix.
    db.exec("UPDATE tally SET total = 0 WHERE stream = 's1'")
        .await;
    db.exec(
        "CREATE TABLE projector_checkpoints (name text PRIMARY KEY, position bigint NOT NULL);
         INSERT INTO projector_checkpoints VALUES ('tally', 100);",
    )
    .await;
    let p = project(Some(("handover", HANDOVER)));
    let plan = run(&db, &p, &["plan"]).await;
    plan.ok()
        .stdout_has("rebuilt by the external projector `sh projector.sh`")
        .stdout_has("hand-over in `projector_checkpoints`");

    let child = paused(&db, &p, &["rebuild", "--yes", "--json"]).await;
    // Arrive while the first range is being applied: the catch-up round must bring them.
    tally::append(&db, 50).await;
    std::fs::remove_file(p.dir.path().join("pause")).unwrap();
    let out = finish(child).await;
    let o = out.ok().json();

    assert_eq!(o["status"], "swapped", "{o}");
    assert_eq!(o["swap_position"], 150, "{o}");
    assert_eq!(o["events_applied"], 150, "{o}");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert_eq!(
        read(&p, "ranges.log"),
        "-9223372036854775808 100 100\n100 150 50\n",
        "one range from the start to the bound, one for the catch-up"
    );
    db.assert_int_because(
        "SELECT position FROM projector_checkpoints WHERE name = 'tally'",
        150,
        "the live projector continues after the swap position",
    )
    .await;
    assert!(
        out.stderr.contains("tally: applied 100 event(s)"),
        "the projector's output is passed on:\n{}",
        out.stderr
    );

    let env = read(&p, "env-1.txt");
    let run_id = o["run_id"].as_i64().unwrap();
    assert_eq!(var(&env, "REPROJECT_RUN_ID"), Some(run_id.to_string()));
    assert_eq!(var(&env, "REPROJECT_PROJECTION").as_deref(), Some("tally"));
    assert_eq!(
        var(&env, "REPROJECT_FROM_POSITION").as_deref(),
        Some("-9223372036854775808")
    );
    assert_eq!(var(&env, "REPROJECT_TO_POSITION").as_deref(), Some("100"));
    assert_eq!(var(&env, "REPROJECT_EVENT_COUNT").as_deref(), Some("100"));
    assert_eq!(
        var(&env, "REPROJECT_TABLE_TALLY").as_deref(),
        Some(r#""public"."tally_rebuild""#)
    );
    assert_eq!(
        var(&env, "REPROJECT_LIVE_TABLE_0").as_deref(),
        Some(r#""public"."tally""#)
    );
    assert_eq!(
        var(&env, "REPROJECT_REBUILD_TABLE_0").as_deref(),
        Some(r#""public"."tally_rebuild""#)
    );
    let tables: serde_json::Value =
        serde_json::from_str(&var(&env, "REPROJECT_TABLES").unwrap()).unwrap();
    assert_eq!(
        tables,
        serde_json::json!({ "public.tally": { "schema": "public", "name": "tally_rebuild", "sql": "\"public\".\"tally_rebuild\"" } })
    );
    assert_eq!(
        var(&env, "REPROJECT_EVENTS_TABLE").as_deref(),
        Some(r#""public"."events""#)
    );
    assert_eq!(var(&env, "PGDATABASE"), Some(db.name.clone()));
    assert_eq!(var(&env, "PGPASSWORD").as_deref(), Some(PASSWORD));
    let url = var(&env, "DATABASE_URL").unwrap();
    assert!(
        url.contains(&format!(":{PASSWORD}@")) && url.contains(&format!("/{}?", db.name)),
        "{url}"
    );
    assert_eq!(
        read(&p, "env-2.txt").lines().count(),
        env.lines().count(),
        "every range gets the whole contract"
    );

    // The password is in the projector's environment only.
    let status = run(&db, &p, &["status"]).await;
    let history = run(&db, &p, &["history"]).await;
    for text in [
        &out.stdout,
        &out.stderr,
        &status.stdout,
        &history.stdout,
        &history_text(&db).await,
    ] {
        assert!(!text.contains(PASSWORD), "password leaked:\n{text}");
    }
    db.drop().await;
}

/// A projector that exits 3: the run fails naming the command, its status and the range, the
/// live table is untouched, the projector's stderr is quoted with the password masked, the run
/// cannot be resumed (its tables hold an unknown part of the range), and a new run succeeds.
#[tokio::test]
async fn a_failing_projector_fails_the_run_and_leaves_the_live_table_alone() {
    let db = tally::db(100).await;
    db.exec("UPDATE tally SET total = 0 WHERE stream = 's1'")
        .await;
    let wrong = tally::expected_differences(&db, "tally").await;
    assert!(wrong > 0);
    let p = project(None);
    p.write("fail", "");

    let out = run(&db, &p, &["rebuild", "--yes"]).await;
    out.code(1)
        .stderr_has("the external projector `sh projector.sh` exited with status 3 while applying events from the start up to position 100")
        .stderr_has("cannot apply the range (connected with ********)");
    assert!(!out.stderr.contains(PASSWORD), "{}", out.stderr);
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        wrong,
        "the live table is untouched"
    );
    db.assert_text(
        "SELECT status FROM reproject.runs ORDER BY id DESC LIMIT 1",
        Some("failed"),
    )
    .await;
    let history = history_text(&db).await;
    assert!(history.contains("exited with status 3"), "{history}");
    assert!(!history.contains(PASSWORD), "{history}");

    std::fs::remove_file(p.dir.path().join("fail")).unwrap();
    run(&db, &p, &["rebuild", "--yes", "--resume"])
        .await
        .code(2)
        .stderr_has("stopped while applying events from the start up to position 100")
        .stderr_has("start over with `reproject rebuild`");

    run(&db, &p, &["rebuild", "--yes"]).await.ok();
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// Ctrl-C while the projector runs: it is stopped (with what it started), the run is recorded
/// as cancelled, exit 130, and the live table is untouched.
#[tokio::test]
async fn cancelling_stops_the_projector() {
    let db = tally::db(20).await;
    let p = project(None);
    let child = paused(&db, &p, &["rebuild", "--yes"]).await;
    let pid = read(&p, "projector.pid").trim().to_string();
    signal(&child, "INT");
    let out = finish(child).await;
    out.code(130)
        .stderr_has("cancelled while the external projector `sh projector.sh` of `tally` was applying events from the start up to position 20");
    db.assert_text(
        "SELECT status FROM reproject.runs ORDER BY id DESC LIMIT 1",
        Some("cancelled"),
    )
    .await;
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "the projector (pid {pid}) still runs");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    assert!(!db.exists("tally_old").await, "nothing was swapped");
    db.drop().await;
}

/// `command_timeout`: a projector that takes longer is stopped and the run fails.
#[tokio::test]
async fn a_projector_over_its_timeout_is_stopped() {
    let db = tally::db(20).await;
    let p = project(Some(("command_timeout", "1")));
    p.write("pause", "");
    let out = run(&db, &p, &["rebuild", "--yes"]).await;
    out.code(1).stderr_has(
        "the external projector `sh projector.sh` did not finish within command_timeout = 1 s and was stopped while applying events from the start up to position 20",
    );
    assert!(!db.exists("tally_old").await);
    db.drop().await;
}

/// Config mistakes are refused before anything is written, naming the file and line.
#[tokio::test]
async fn config_mistakes_name_the_line() {
    let db = tally::db(5).await;
    let both = with_projector(Projection::new("tally").option_toml("command", SH))
        .file("tally.sql", tally::HANDLERS)
        .write();
    let config = both.config().display().to_string();
    both.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has(&format!(
            "{config}:14: projection `tally` has both `handlers` and `command`"
        ));
    let neither = Config::tally_events()
        .projection(Projection::new("tally").handlers(None))
        .write();
    // Without either it is a Rust projection, which only a program of the user's can run.
    neither.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has(&format!(
            "{}:12: projection `tally` has neither `handlers` nor `command`, and no Rust projection is registered",
            neither.config().display()
        ));
    let copy = Projection::new("copy")
        .tables(&["tally_copy"])
        .handlers(Some("tally.sql"));
    let mixed = with_projector(external(SH))
        .projection(copy)
        .file(
            "tally.sql",
            &tally::HANDLERS.replace("{{tally}}", "{{tally_copy}}"),
        )
        .write();
    db.exec("CREATE TABLE tally_copy (LIKE tally INCLUDING ALL)")
        .await;
    mixed.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("one run cannot rebuild external projections (`tally`) together with handler projections (`copy`)");
    assert!(!db.exists("reproject.runs").await, "nothing was written");
    let missing = Config::tally_events()
        .projection(external(r#"["./nope.sh"]"#))
        .write();
    missing
        .reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("14: projection `tally`: the command's program")
        .stderr_has("nope.sh` does not exist");
    db.drop().await;
}

/// `--no-swap`, then events, then `swap`: the swap runs the projector for the new range first.
#[tokio::test]
async fn swap_after_no_swap_runs_the_projector_for_the_new_events() {
    let db = tally::db(30).await;
    let p = project(None);
    run(&db, &p, &["rebuild", "--yes", "--no-swap"]).await.ok();
    assert!(!db.exists("tally_old").await);
    tally::append(&db, 12).await;
    let o = run(&db, &p, &["swap", "--yes", "--json"]).await.ok().json();
    assert_eq!(o["swap_position"], 42, "{o}");
    assert_eq!(
        read(&p, "ranges.log"),
        "-9223372036854775808 30 30\n30 42 12\n"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    // reproject cannot replay the events since the swap into the generation an external
    // projector built: a rollback that would need to is refused rather than losing them.
    run(&db, &p, &["rebuild", "--yes"]).await.ok();
    tally::append(&db, 3).await;
    let out = run(&db, &p, &["rollback", "--yes"]).await;
    out.code(2)
        .stderr_has("refusing to roll back run 2: 3 event(s) arrived since the swap")
        .stderr_has("were built by an external projector (run 1), which a rollback cannot run");
    assert!(db.exists("tally_old").await, "nothing was rolled back");
    db.drop().await;
}

/// `reproject cancel` from another terminal stops the projector too, and the cancelled run,
/// whose range was in flight, cannot be resumed.
#[tokio::test]
async fn reproject_cancel_stops_the_projector_and_the_run_cannot_be_resumed() {
    let db = tally::db(20).await;
    let p = project(None);
    let child = paused(&db, &p, &["rebuild", "--yes"]).await;
    run(&db, &p, &["cancel", "--initiated-by", "ops"])
        .await
        .ok();
    let out = finish(child).await;
    out.code(130)
        .stderr_has("cancellation requested by ops")
        .stderr_has(
            "cancelled while the external projector `sh projector.sh` of `tally` was applying",
        );
    std::fs::remove_file(p.dir.path().join("pause")).unwrap();
    run(&db, &p, &["rebuild", "--yes", "--resume"])
        .await
        .code(2)
        .stderr_has("stopped while applying events from the start up to position 20");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// Events keep arriving after every range. Without a hand-over nothing would apply those after
/// the last range to the new table, so the swap is refused (exit 75, the run awaiting its
/// swap, the live table untouched); with one, the swap goes ahead at the last applied range
/// and the hand-over checkpoint says where the live projector continues.
#[tokio::test]
async fn events_after_the_last_range_need_a_handover() {
    let db = tally::db(10).await;
    db.exec("UPDATE tally SET total = 0 WHERE stream = 's1'")
        .await;
    let snapshot =
        "SELECT string_agg(format('%s %s %s', stream, n, total), ',' ORDER BY stream) FROM tally";
    let before = db.text(snapshot).await;
    let p = project(None);
    p.write("append", "");
    let out = run(&db, &p, &["rebuild", "--yes"]).await;
    out.code(75)
        .stderr_has("event(s) arrived after the external projector's last range and no `handover` would apply them")
        .stderr_has("had arrived after the external projector's last range each time the locks were taken")
        .stderr_has("add the `handover` of your live projector");
    db.assert_text(
        "SELECT status FROM reproject.runs ORDER BY id DESC LIMIT 1",
        Some("awaiting_swap"),
    )
    .await;
    assert_eq!(
        db.text(snapshot).await,
        before,
        "the live table is untouched"
    );
    assert!(!db.exists("tally_old").await, "nothing was swapped");

    db.exec(
        "CREATE TABLE projector_checkpoints (name text PRIMARY KEY, position bigint NOT NULL);
         INSERT INTO projector_checkpoints VALUES ('tally', 0);",
    )
    .await;
    let p = project(Some(("handover", HANDOVER)));
    p.write("append", "");
    let o = run(&db, &p, &["rebuild", "--yes", "--json"])
        .await
        .ok()
        .json();
    let swapped = o["swap_position"].as_i64().unwrap();
    let last_to: i64 = read(&p, "ranges.log")
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(swapped, last_to, "the swap is at the last applied range");
    assert!(
        db.int("SELECT max(id) FROM events").await > swapped,
        "an event arrived after it"
    );
    db.assert_int("SELECT position FROM projector_checkpoints", swapped)
        .await;
    db.assert_int_because(&format!(
            "SELECT count(*) FROM (SELECT stream, count(*)::int n, sum((data->>'amount')::bigint) t FROM events WHERE id <= {swapped} GROUP BY stream \
             EXCEPT SELECT stream, n, total FROM tally) x"
        ), 0, "the new table holds every event up to the swap position").await;
    db.drop().await;
}
