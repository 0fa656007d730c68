//! `--json` on every command: each prints one JSON document on stdout that carries
//! `format_version`, and a failure prints its error as JSON on stdout too (the words stay on
//! stderr for the person reading the log).

use crate::harness::Out;
use crate::tally;

/// The document `out` printed, checked for its version.
fn versioned(out: &Out) -> serde_json::Value {
    let v = out.json();
    let docs: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    assert!(!docs.is_empty(), "no JSON object:\n{}", out.stdout);
    for doc in docs {
        assert_eq!(doc["format_version"], 1, "{doc}");
    }
    v
}

/// The error document of a failed `out`: kind and exit code as the process exited.
fn error_of(out: &Out, kind: &str, code: i32) -> serde_json::Value {
    out.code(code);
    let v = versioned(out);
    let e = &v["error"];
    assert_eq!(e["kind"], kind, "{v}");
    assert_eq!(e["exit_code"], code, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["causes"].is_array(), "{v}");
    assert!(
        e.get("hint").is_some() && e.get("sqlstate").is_some(),
        "{v}"
    );
    // The person reading the log still gets the words.
    let message = e["message"].as_str().unwrap();
    out.stderr_has(&format!("error: {message}"));
    e.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_prints_versioned_json_and_errors_as_json() {
    let (db, p) = tally::fixture(1200).await;
    let plan = versioned(p.reproject(&db, "plan --json").await.ok());
    assert_eq!(plan["events_to_replay"], 1200);
    // The text form: counts with thousands separators, the status table aligned.
    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("1,200 to replay");
    p.reproject(&db, "status")
        .await
        .ok()
        .stdout_has("projection  state  run  checkpoint  lag  tables\ntally       live");
    let dry = versioned(p.reproject(&db, "rebuild --dry-run --json").await.ok());
    assert!(dry["steps"].is_array(), "{dry}");
    versioned(p.reproject(&db, "status --json").await.ok());
    // Before any run: the error of `cancel` (nothing to cancel), as JSON.
    error_of(&p.reproject(&db, "cancel --json").await, "config", 2);

    let rebuilt = versioned(p.reproject(&db, "rebuild --yes --json").await.ok());
    assert_eq!(rebuilt["status"], "swapped", "{rebuilt}");
    // An object like every other command's: the runs, and the runs left out of scope.
    let history = versioned(p.reproject(&db, "--json history").await.ok());
    assert_eq!(
        history["runs"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    assert_eq!(history["runs"][0]["status"], "swapped", "{history}");
    assert_eq!(history["other_runs"], 0, "{history}");
    versioned(p.reproject(&db, "run --once --json").await.ok());
    let sql = versioned(p.reproject(&db, "run --print-notify-sql --json").await.ok());
    assert!(sql["sql"].as_str().unwrap().contains("CREATE"), "{sql}");
    versioned(p.reproject(&db, "rollback --yes --json").await.ok());
    versioned(p.reproject(&db, "cleanup --json").await.ok());
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    versioned(p.reproject(&db, "swap --yes --json").await.ok());

    // A usage error, a config error and a connection error: JSON on stdout, words on stderr.
    error_of(
        &p.reproject(&db, "rebuild --json --batch-size 0").await,
        "config",
        2,
    );
    error_of(&p.reproject(&db, "plan --json no_such").await, "config", 2);
    let out = tokio::process::Command::new(crate::harness::binary())
        .arg("--config")
        .arg(p.config())
        .args([
            "status",
            "--json",
            "--database-url",
            "postgres://u@127.0.0.1:1/x",
        ])
        .output()
        .await
        .unwrap();
    let e = error_of(&Out::from(out), "runtime", 1);
    assert!(
        e["message"].as_str().unwrap().contains("cannot connect"),
        "{e}"
    );
    // No JSON form for a shell script: refused, not ignored.
    error_of(
        &p.reproject(&db, "completions bash --json").await,
        "config",
        2,
    );
    db.drop().await;
}
