//! `reproject init` (a starter config from the catalog) and `reproject check` (plan's
//! validation as a verdict), on the store layouts of presets.rs and a table of one's own.

use crate::harness::{Project, TestDb};
use crate::presets::{MARTEN_LAYOUT, MESSAGE_DB_LAYOUT};

/// A table like the README's, with metadata and a `timestamp` without time zone, and the
/// projection it feeds.
const CUSTOM: &str = "CREATE TABLE account_events (seq bigserial PRIMARY KEY, \
    account_id text NOT NULL, kind text NOT NULL, body jsonb NOT NULL, meta jsonb, \
    at timestamp NOT NULL DEFAULT now());
    CREATE TABLE account_balances (account_id text PRIMARY KEY, balance bigint NOT NULL);
    INSERT INTO account_events (account_id, kind, body) VALUES
      ('a1', 'deposited', '{\"amount\": 10}'), ('a1', 'withdrawn', '{\"amount\": 4}'),
      ('a2', 'deposited', '{\"amount\": 7}');";

const PROJECTION: &str = "
[[projection]]
name = \"balances\"
tables = [\"account_balances\"]
handlers = \"balances.sql\"
";

const HANDLERS: &str = "-- on deposited
INSERT INTO {{account_balances}} AS b (account_id, balance) VALUES (:stream, (:data->>'amount')::bigint)
ON CONFLICT (account_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
-- on withdrawn
UPDATE {{account_balances}} SET balance = balance - (:data->>'amount')::bigint WHERE account_id = :stream;
";

/// A directory without a config yet: `init` writes `reproject.toml` into it.
fn empty_project() -> Project {
    let p = Project::new("", &[]);
    std::fs::remove_file(p.config()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn init_detects_the_marten_and_message_db_presets() {
    for (layout, preset) in [(MARTEN_LAYOUT, "marten"), (MESSAGE_DB_LAYOUT, "message-db")] {
        let db = TestDb::new().await;
        db.exec(layout).await;
        let p = empty_project();
        let out = p.reproject(&db, "init");
        let out = out.await;
        out.ok().stdout_has(&format!("preset = \"{preset}\""));
        assert!(
            !out.stdout.contains("\nposition ="),
            "a preset needs no column keys:\n{}",
            out.stdout
        );
        // --json: what was found, the config's text in `config`, versioned like every command.
        let v = p.reproject(&db, "init --json").await.ok().json();
        assert_eq!(v["format_version"], 1, "{v}");
        assert_eq!(v["preset"], preset, "{v}");
        assert_eq!(v["config"].as_str(), Some(out.stdout.as_str()), "{v}");
        db.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_guesses_every_role_of_a_custom_table_and_the_config_plans() {
    let db = TestDb::new().await;
    db.exec(CUSTOM).await;
    let p = empty_project();
    let config = p.config();
    let path = config.to_str().unwrap();
    p.reproject(
        &db,
        &["init", "--table", "public.account_events", "--output", path],
    )
    .await
    .ok()
    .stderr_has("wrote");
    let written = std::fs::read_to_string(&config).unwrap();
    for line in [
        "table = \"public.account_events\"",
        "position = \"seq\"",
        "stream = \"account_id\"",
        "type = \"kind\"",
        "data = \"body\"",
        "metadata = \"meta\"",
        "timestamp = \"at\"",
        "# [[projection]]",
        "read as UTC",
        "the primary key",
    ] {
        assert!(written.contains(line), "lacks {line:?}:\n{written}");
    }
    // The user fills in a projection; plan and check accept the config as written.
    std::fs::write(&config, format!("{written}{PROJECTION}")).unwrap();
    p.write("balances.sql", HANDLERS);
    p.reproject(&db, "plan").await.ok().stdout_has("balances");
    let out = p.reproject(&db, "check").await;
    out.ok()
        .stdout_has("ok  balances: ")
        .stdout_has("account_balances (0 rows)")
        .stdout_has("3 event(s) to replay");
    let json = p.reproject(&db, "check --json").await;
    let v = json.ok().json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["projections"][0]["name"], "balances");

    // A handler that names a column the table lacks: check fails as plan does, exit 2.
    p.write(
        "balances.sql",
        &HANDLERS.replace("SET balance = balance -", "SET saldo = balance -"),
    );
    p.reproject(&db, "plan").await.code(2);
    p.reproject(&db, "check").await.code(2).stderr_has("saldo");
    let v = p.reproject(&db, "check --json").await;
    let json = v.code(2).json();
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["error"]["exit_code"], 2);
    assert_eq!(json["error"]["kind"], "config");
    assert!(
        json.to_string().contains("saldo"),
        "the error names the column: {json}"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_to_guess_between_tables_or_overwrite_a_file() {
    let db = TestDb::new().await;
    db.exec(CUSTOM).await;
    db.exec(
        "CREATE TABLE audit_events (id bigserial PRIMARY KEY, stream_id text, event_type text, data jsonb)",
    )
    .await;
    let p = empty_project();
    p.reproject(&db, "init")
        .await
        .code(2)
        .stderr_has("public.account_events")
        .stderr_has("public.audit_events")
        .stderr_has("--table");
    // Named, it is written.
    p.reproject(&db, "init --table audit_events")
        .await
        .ok()
        .stdout_has("stream = \"stream_id\"");

    std::fs::write(p.config(), "# mine\n").unwrap();
    let path = p.config();
    let path = path.to_str().unwrap();
    p.reproject(&db, &["init", "--table", "audit_events", "--output", path])
        .await
        .code(2)
        .stderr_has(path)
        .stderr_has("--force");
    assert_eq!(std::fs::read_to_string(p.config()).unwrap(), "# mine\n");
    p.reproject(
        &db,
        &[
            "init",
            "--table",
            "audit_events",
            "--output",
            path,
            "--force",
        ],
    )
    .await
    .ok();
    assert!(std::fs::read_to_string(p.config())
        .unwrap()
        .contains("audit_events"));
    // A table that does not exist is named.
    p.reproject(&db, "init --table nowhere.nothing")
        .await
        .code(2)
        .stderr_has("nowhere.nothing");
    db.drop().await;
}
