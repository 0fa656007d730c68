//! Bad configuration is refused before anything is written, with exit 2 and a message that
//! names the file, line, projection and table.

use crate::config::Projection;
use crate::harness::{refused, reproject, Project, TestDb};
use crate::tally;

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_what_is_wrong() {
    let db = tally::db(10).await;

    // A misspelt key, with its line.
    let p = tally::replaced("handlers =", "handler =");
    refused(
        &db,
        &p,
        &["reproject.toml", "line 14", "unknown field `handler`"],
    )
    .await;

    // A table that does not exist.
    let p = Project::new(
        &tally::CONFIG.replace("[\"tally\"]", "[\"talley\"]"),
        &[(
            "tally.sql",
            &tally::HANDLERS.replace("{{tally}}", "{{talley}}"),
        )],
    );
    refused(
        &db,
        &p,
        &["reproject.toml:13: projection `tally`: table `talley` does not exist"],
    )
    .await;

    // An event column that does not exist.
    let p = tally::replaced("position = \"id\"", "position = \"event_id\"");
    refused(
        &db,
        &p,
        &[
            "reproject.toml:4: `events.position = \"event_id\"`",
            "column \"event_id\" does not exist",
        ],
    )
    .await;

    // A position that is not an integer would sort as text.
    let p = tally::replaced("position = \"id\"", "position = \"id::text\"");
    refused(
        &db,
        &p,
        &["`events.position = \"id::text\"` is of type text; it must be an integer"],
    )
    .await;
    let p = tally::replaced("filter = \"NOT bad\"", "filter = \"stream\"");
    refused(
        &db,
        &p,
        &["`events.filter = \"stream\"` is of type text; it must be a boolean"],
    )
    .await;

    // The event table itself.
    let p = tally::replaced("table = \"events\"", "table = \"evnts\"");
    refused(
        &db,
        &p,
        &["reproject.toml:3: event table `evnts` does not exist"],
    )
    .await;

    // A handler statement that does not prepare: file, line, projection, section.
    let bad = format!(
        "{}\n-- on removed\nDELETE FROM {{{{tally}}}} WHERE strem = :stream;\n",
        tally::HANDLERS
    );
    let p = tally::handlers(&bad);
    refused(
        &db,
        &p,
        &[
            "tally.sql:6: projection `tally`, section `-- on removed`",
            "column \"strem\" does not exist",
        ],
    )
    .await;

    // An unknown parameter.
    let p = tally::handlers("-- on added\nSELECT :amount;\n");
    refused(&db, &p, &["tally.sql:2", "unknown parameter `:amount`"]).await;

    // A handler file that is missing.
    let p = Project::new(tally::CONFIG, &[]);
    refused(&db, &p, &["cannot read handler file", "tally.sql"]).await;

    // A check that returns no boolean.
    let p = tally::with(Projection::new("tally").check("count", "SELECT count(*) FROM {{tally}}"))
        .write();
    refused(&db, &p, &["check `count`", "exactly one boolean column"]).await;

    // An unknown projection on the command line.
    let p = tally::project();
    p.reproject(&db, "rebuild --yes tallly")
        .await
        .code(2)
        .stderr_has("unknown projection `tallly`")
        .stderr_has("hint: projections in");

    // A missing config file.
    let out = reproject(&db, &p.dir.path().join("nope.toml"), &["plan"]).await;
    out.code(2)
        .stderr_has("cannot read config file")
        .stderr_has("nope.toml");
    db.drop().await;
}

/// A dependency cycle is refused with every projection on it named, in order.
#[tokio::test(flavor = "multi_thread")]
async fn dependency_cycle_names_every_projection() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE events (id bigserial PRIMARY KEY, s text, t text, d jsonb); CREATE TABLE a (x int); CREATE TABLE b (x int); CREATE TABLE c (x int);").await;
    let config = r#"
[events]
table = "events"
position = "id"
stream = "s"
type = "t"
data = "d"

[[projection]]
name = "alpha"
tables = ["a"]
handlers = "a.sql"

[[projection]]
name = "beta"
tables = ["b"]
handlers = "b.sql"
depends_on = ["alpha"]

[[projection]]
name = "gamma"
tables = ["c"]
handlers = "c.sql"
"#;
    let p = Project::new(
        config,
        &[
            ("a.sql", "-- on e\nINSERT INTO {{a}} SELECT x FROM {{c}};\n"),
            ("b.sql", "-- on e\nINSERT INTO {{b}} VALUES (1);\n"),
            ("c.sql", "-- on e\nINSERT INTO {{c}} SELECT x FROM {{b}};\n"),
        ],
    );
    for cmd in [&["plan"][..], &["rebuild", "--yes"][..]] {
        p.reproject(&db, cmd)
            .await
            .code(2)
            .stderr_has("dependency cycle between projections: alpha → beta → gamma → alpha");
    }
    // Writing another projection's table is refused too.
    p.write("b.sql", "-- on e\nINSERT INTO {{a}} VALUES (1);\n");
    p.reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("projection `beta` writes to `a`, which belongs to projection `alpha`");
    db.drop().await;
}
