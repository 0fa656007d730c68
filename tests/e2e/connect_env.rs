//! Connecting the way libpq users are used to when no URL is given: PGHOST, PGPORT, PGUSER,
//! PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT and ~/.pgpass (PGPASSFILE), against a
//! server of the test's own with password authentication and TLS.

use crate::harness::{command, TestDb};
use crate::pgserver::{make_certs, PgServer, ALICE_PASSWORD};
use crate::tally;

async fn run(cmd: &mut tokio::process::Command) -> (i32, String, String) {
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_environment_variables_and_pgpass_connect_without_a_url() {
    let certs = make_certs("env test CA", &["localhost"]);
    let Some(server) = PgServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem) else {
        eprintln!("SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) on this machine");
        return;
    };
    server.create_alice().await;
    let db = TestDb::new_on(server.admin()).await;
    tally::setup(&db, 50).await;
    let p = tally::project();
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("root.crt");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let port = server.port.to_string();

    // No URL: everything from PG* variables, verified TLS included.
    let env_command = |password: Option<&str>| {
        let mut cmd = command(&db, &p.config(), &["status", "--json"]);
        cmd.env_remove("DATABASE_URL")
            .env("PGHOST", "localhost")
            .env("PGPORT", &port)
            .env("PGUSER", "alice")
            .env("PGDATABASE", &db.name)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &ca)
            .env("PGAPPNAME", "nightly-rebuild")
            .env("HOME", files.path())
            .env("RUST_LOG", "trace");
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd
    };
    let (code, stdout, stderr) = run(&mut env_command(Some(ALICE_PASSWORD))).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"tally\""), "{stdout}");
    assert!(
        !stderr.contains(ALICE_PASSWORD),
        "the password was logged:\n{stderr}"
    );

    // A wrong PGPASSWORD: the server's refusal, and neither password anywhere.
    let (code, stdout, stderr) = run(&mut env_command(Some("wrong-Pw-5512"))).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at alice@localhost:{port}/{}",
            db.name
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("password authentication failed for user \"alice\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: check the user and password"),
        "{stderr}"
    );
    for secret in ["wrong-Pw-5512", ALICE_PASSWORD] {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{stderr}"
        );
    }

    // No PGPASSWORD: ~/.pgpass supplies it, but only when private (0600), as libpq insists.
    let pgpass = files.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("# host:port:db:user:password\nlocalhost:{port}:*:alice:{ALICE_PASSWORD}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = run(&mut env_command(None)).await;
    assert_eq!(
        code, 1,
        "a world-readable .pgpass must be ignored: {stderr}"
    );
    assert!(stderr.contains("has group or world access"), "{stderr}");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stdout, stderr) = run(&mut env_command(None)).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains(ALICE_PASSWORD), "{stderr}");

    // A URL wins over the variables: here it names a database that does not exist.
    let (code, _, stderr) = run(env_command(Some(ALICE_PASSWORD)).env(
        "DATABASE_URL",
        format!(
            "postgres://alice@localhost:{port}/no_such_db?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("database \"no_such_db\" does not exist"),
        "{stderr}"
    );

    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_url_or_pg_variables_there_is_nothing_to_connect_to() {
    let p = tally::project();
    let mut cmd = tokio::process::Command::new(crate::harness::binary());
    cmd.arg("--config").arg(p.config()).arg("status");
    cmd.env_remove("DATABASE_URL");
    for var in crate::harness::PG_VARS {
        cmd.env_remove(var);
    }
    let (code, _, stderr) = run(&mut cmd).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no database to connect to"), "{stderr}");
    assert!(stderr.contains("PGHOST"), "{stderr}");
}
