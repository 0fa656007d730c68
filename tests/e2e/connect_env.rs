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

/// `reproject status` with only `--database-url URL` (and a config that needs no database to
/// load), stdin closed, no PG* variables, timed.
async fn status_at(url: &str, env: &[(&str, &str)]) -> (i32, String, String, std::time::Duration) {
    let p = tally::project();
    let mut cmd = tokio::process::Command::new(crate::harness::binary());
    cmd.arg("--config")
        .arg(p.config())
        .args(["status", "--database-url", url])
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null());
    for var in crate::harness::PG_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run(&mut cmd).await;
    (code, stdout, stderr, started.elapsed())
}

/// A server that accepts the TCP connection and never says a word (a stuck server, a pooler
/// whose backend is gone, another service on the port): `connect_timeout` bounds the whole
/// attempt, as in libpq, and the error says what happened instead of blaming TLS.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_accepts_and_never_answers_is_named_within_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and keep every connection open, reading nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://alice:s3cret@127.0.0.1:{port}/app?connect_timeout=2");
    let (code, stdout, stderr, took) = status_at(&url, &[]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "127.0.0.1:{port} accepted the connection but did not complete the PostgreSQL start-up within 2s"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("connect_timeout"), "{stderr}");
    assert!(
        !stderr.contains("sslrootcert") && !stderr.contains("TLS"),
        "no TLS hint for a silent server:\n{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // 2 s for the attempt and a probe; the old bound was 20 s.
    assert!(took < std::time::Duration::from_secs(12), "took {took:?}");

    // The same from PGCONNECT_TIMEOUT, with libpq's minimum of 2 s.
    let url = format!("postgres://alice@127.0.0.1:{port}/app");
    let (code, _, stderr, _) = status_at(&url, &[("PGCONNECT_TIMEOUT", "1")]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("did not complete the PostgreSQL start-up within 2s"),
        "{stderr}"
    );
}

/// A listener whose accept queue is full drops new connection requests, as a firewall or a
/// host that is down does: nobody answers at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_the_connection_is_named_as_that() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    // Backlog 0: one connection fills the queue, and nothing is ever accepted.
    let _listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let url = format!("postgres://alice@127.0.0.1:{port}/app?connect_timeout=2");
    let (code, stdout, stderr, took) = status_at(&url, &[]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("no server answered at 127.0.0.1:{port} within 2s")),
        "{stderr}"
    );
    assert!(!stderr.contains("TLS"), "{stderr}");
    assert!(took < std::time::Duration::from_secs(12), "took {took:?}");
}

/// A port nobody listens on is refused at once, and said so.
#[tokio::test(flavor = "multi_thread")]
async fn a_port_nobody_listens_on_is_named() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://alice@127.0.0.1:{port}/app");
    let (code, _, stderr, took) = status_at(&url, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at alice@127.0.0.1:{port}/app"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "nothing listens at 127.0.0.1:{port} (connection refused)"
        )),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

/// Another database's URL, or a parameter reproject would ignore, is refused by name (exit 2)
/// before anything connects; the password is never repeated.
#[tokio::test(flavor = "multi_thread")]
async fn other_schemes_and_unknown_parameters_are_refused_by_name() {
    for (url, needle) in [
        ("mysql://root:s3cret@127.0.0.1/app", "the scheme `mysql://`"),
        ("http://127.0.0.1:5432/app", "the scheme `http://`"),
        (
            "postgres://root:s3cret@127.0.0.1/app?conect_timeout=2",
            "unknown connection parameter `conect_timeout`",
        ),
        (
            "host=127.0.0.1 password=s3cret sslcrl=/etc/crl.pem",
            "the connection parameter `sslcrl` is not supported",
        ),
    ] {
        let (code, _, stderr, _) = status_at(url, &[]).await;
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stderr.contains(needle), "{url}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}
