//! TLS as libpq users configure it (`sslmode`, `sslrootcert`), against a server of the test's
//! own whose certificate, for "localhost" only, is signed by a CA the test made.

use crate::harness::{Out, TestDb};
use crate::pgserver::{make_certs, make_self_signed, PgServer, ALICE_PASSWORD};
use crate::tally;
use reproject::Db;
use std::path::PathBuf;

struct Tls {
    server: PgServer,
    files: tempfile::TempDir,
}

impl Tls {
    /// None (with a message) only when this machine has no PostgreSQL server binaries.
    fn start() -> Option<Tls> {
        let certs = make_certs("reproject test CA", &["localhost"]);
        let other = make_certs("some other CA", &["localhost"]);
        let Some(server) = PgServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem)
        else {
            eprintln!("SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl) on this machine");
            return None;
        };
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("ca.pem"), &certs.ca_pem).unwrap();
        std::fs::write(files.path().join("wrong-ca.pem"), &other.ca_pem).unwrap();
        Some(Tls { server, files })
    }

    fn ca(&self) -> PathBuf {
        self.files.path().join("ca.pem")
    }

    fn wrong_ca(&self) -> PathBuf {
        self.files.path().join("wrong-ca.pem")
    }

    /// A key=value string for user postgres; `host` is the name TLS checks, the TCP connection
    /// always goes to 127.0.0.1.
    fn conninfo(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres {extra}",
            self.server.port
        )
    }
}

/// Whether the connection `db` hands out is encrypted, asked of the server; both the pool and
/// a dedicated connection.
async fn encrypted(db: &Db) -> bool {
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let pooled: bool = db
        .get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0);
    let dedicated: bool = db
        .dedicated()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pooled, dedicated, "pool and dedicated connections differ");
    pooled
}

/// The error text of a connection attempt that must fail.
async fn refused(conn: &str) -> String {
    let db = Db::new(conn).unwrap_or_else(|e| panic!("{conn}: does not parse: {e}"));
    let pooled = db
        .get()
        .await
        .err()
        .unwrap_or_else(|| panic!("{conn}: pool connected"))
        .to_string();
    let dedicated = db
        .dedicated()
        .await
        .err()
        .unwrap_or_else(|| panic!("{conn}: dedicated connection connected"))
        .to_string();
    assert_eq!(pooled, dedicated);
    pooled
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let Some(t) = Tls::start() else { return };
    let ca = t.ca().display().to_string();

    let db = Db::new(&t.conninfo(
        "localhost",
        &format!("sslmode=verify-full sslrootcert='{ca}'"),
    ))
    .unwrap();
    // That this string means verify-full is a unit test of src/db/conninfo.rs; here, that
    // the server's certificate is then checked (below: wrong CA and wrong name refused).
    assert!(encrypted(&db).await);

    // The URL form, the way it is pasted from a cloud console (path percent-encoded).
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        t.server.port,
        ca.replace('/', "%2F")
    );
    assert!(encrypted(&Db::new(&url).unwrap()).await);

    let wrong = refused(&t.conninfo(
        "localhost",
        &format!(
            "sslmode=verify-full sslrootcert='{}'",
            t.wrong_ca().display()
        ),
    ))
    .await;
    assert!(
        wrong.contains("cannot connect to PostgreSQL at postgres@localhost"),
        "{wrong}"
    );
    assert!(wrong.contains("sslmode=verify-full"), "{wrong}");
    assert!(
        wrong.contains("invalid peer certificate")
            && wrong.contains("the server's certificate is not signed by a CA in sslrootcert"),
        "the error must say the certificate was not issued by a trusted CA: {wrong}"
    );
    assert!(
        wrong.contains("hint: the server's certificate must be signed by a CA in sslrootcert"),
        "{wrong}"
    );

    let mismatch = refused(&t.conninfo(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert='{ca}'"),
    ))
    .await;
    assert!(
        mismatch.contains("not valid for name \"127.0.0.1\"")
            && mismatch.contains("does not name the host connected to"),
        "the error must say the certificate does not name the host: {mismatch}"
    );

    // Without a CA, verify-full cannot verify anything: refused before connecting.
    let err = Db::new(&t.conninfo("localhost", "sslmode=verify-full"))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("needs the CA certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let Some(t) = Tls::start() else { return };
    let db = Db::new(&t.conninfo(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert='{}'", t.ca().display()),
    ))
    .unwrap();
    assert!(encrypted(&db).await, "verify-ca ignores the host name");
    let wrong = refused(&t.conninfo(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert='{}'", t.wrong_ca().display()),
    ))
    .await;
    assert!(wrong.contains("UnknownIssuer"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_prefer_and_disable_behave_like_libpq() {
    let Some(t) = Tls::start() else { return };
    // require: encrypted, nothing verified.
    assert!(encrypted(&Db::new(&t.conninfo("127.0.0.1", "sslmode=require")).unwrap()).await);
    // prefer (also the default): encrypted when the server offers it.
    assert!(encrypted(&Db::new(&t.conninfo("127.0.0.1", "sslmode=prefer")).unwrap()).await);
    assert!(encrypted(&Db::new(&t.conninfo("127.0.0.1", "")).unwrap()).await);
    // disable: plaintext.
    assert!(!encrypted(&Db::new(&t.conninfo("127.0.0.1", "sslmode=disable")).unwrap()).await);
    // libpq: "if a root CA file exists, require behaves like verify-ca".
    assert!(
        encrypted(
            &Db::new(&t.conninfo(
                "127.0.0.1",
                &format!("sslmode=require sslrootcert='{}'", t.ca().display())
            ))
            .unwrap()
        )
        .await
    );
    let wrong = refused(&t.conninfo(
        "127.0.0.1",
        &format!("sslmode=require sslrootcert='{}'", t.wrong_ca().display()),
    ))
    .await;
    assert!(wrong.contains("UnknownIssuer"), "{wrong}");
}

/// Self-signed server certificates are common with PostgreSQL (Debian's snakeoil, most
/// guides): naming the certificate itself as sslrootcert trusts it, as with libpq.
#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_server_certificate_can_be_trusted_directly() {
    let (cert, key) = make_self_signed(&["localhost"]);
    let Some(server) = PgServer::start_tls(&cert, &key) else {
        eprintln!("SKIPPED: no PostgreSQL server binaries on this machine");
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let pinned = files.path().join("server.crt");
    std::fs::write(&pinned, &cert).unwrap();
    let conn = |host: &str| {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{}'",
            server.port,
            pinned.display()
        )
    };
    assert!(encrypted(&Db::new(&conn("localhost")).unwrap()).await);
    let mismatch = refused(&conn("127.0.0.1")).await;
    assert!(mismatch.contains("not valid for name"), "{mismatch}");
}

/// The whole tool over verify-full TLS with password (SCRAM) authentication: a rebuild and its
/// history, with the password nowhere in the output, the logs or the recorded runs.
#[tokio::test(flavor = "multi_thread")]
async fn rebuild_over_verified_tls_keeps_the_password_out_of_output_and_history() {
    let Some(t) = Tls::start() else { return };
    t.server.create_alice().await;
    let db = TestDb::new_on(t.server.admin()).await;
    tally::setup(&db, 300).await;
    let p = tally::project();
    let url = format!(
        "postgres://alice:{ALICE_PASSWORD}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        t.server.port,
        db.name,
        t.ca().display()
    );
    let run = |args: &'static [&'static str]| {
        let mut cmd = crate::harness::command(&db, &p.config(), args);
        cmd.env("DATABASE_URL", &url).env("RUST_LOG", "trace");
        cmd
    };
    for args in [
        &["rebuild", "--yes", "--reason", "tls"][..],
        &["history", "--json"],
        &["status"],
    ] {
        let out = run(args).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
        assert!(
            !stdout.contains(ALICE_PASSWORD),
            "{args:?} printed the password:\n{stdout}"
        );
        assert!(
            !stderr.contains(ALICE_PASSWORD),
            "{args:?} logged the password:\n{stderr}"
        );
        assert!(
            stderr.len() > 1000,
            "RUST_LOG=trace should log plenty: {stderr}"
        );
    }
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    let leaks = db
        .int(&format!(
            "SELECT count(*) FROM reproject.runs r WHERE r::text LIKE '%{ALICE_PASSWORD}%'"
        ))
        .await;
    assert_eq!(leaks, 0, "the password was recorded in reproject.runs");
    db.assert_int("SELECT count(*) FROM reproject.runs", 1)
        .await;

    // A wrong password: an authentication error naming the user, no password of either kind.
    let wrong_url = url.replace(ALICE_PASSWORD, "wrong-Pw-7731");
    let out = run(&["status"])
        .env("DATABASE_URL", &wrong_url)
        .output()
        .await
        .unwrap();
    let out = Out::from(out);
    out.code(1);
    let stderr = &out.stderr;
    out.stderr_has("password authentication failed for user \"alice\"");
    assert!(
        !stderr.contains("wrong-Pw-7731") && !stderr.contains(ALICE_PASSWORD),
        "{stderr}"
    );
    db.drop().await;
}

/// `require` against a server without TLS says so instead of falling back to plaintext.
#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_a_server_without_tls() {
    let db = TestDb::new().await;
    if db.text("SHOW ssl").await.as_deref() != Some("off") {
        eprintln!("SKIPPED: the server on DATABASE_URL has TLS on");
        return;
    }
    let err = refused(&format!("{} sslmode=require", db.url)).await;
    assert!(
        err.contains("the server does not accept TLS connections (ssl = off)"),
        "{err}"
    );
    assert!(err.contains("hint: turn ssl on in the server"), "{err}");
    // prefer falls back to plaintext, as libpq does.
    let plain = Db::new(&format!("{} sslmode=prefer", db.url)).unwrap();
    assert!(!encrypted(&plain).await);
    db.drop().await;
}
