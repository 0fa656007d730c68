//! Test harness: a fresh database per test on the server named by `DATABASE_URL` (scripts/test.sh
//! starts a throwaway one), the real `reproject` binary run as a process, and small helpers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_postgres::{Client, NoTls};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    /// libpq key=value connection string for this database.
    pub url: String,
    admin: tokio_postgres::Config,
}

fn server() -> tokio_postgres::Config {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with `scripts/test.sh`, which starts a throwaway PostgreSQL",
    );
    tokio_postgres::Config::from_str(&url).expect("DATABASE_URL does not parse")
}

/// A key=value connection string for `config` with another database name.
fn conninfo(config: &tokio_postgres::Config, dbname: &str) -> String {
    use tokio_postgres::config::Host;
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            Host::Tcp(h) => parts.push(format!("host={}", q(h))),
            Host::Unix(p) => parts.push(format!("host={}", q(&p.display().to_string()))),
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={}", q(user)));
    }
    if let Some(pw) = config.get_password() {
        parts.push(format!("password={}", q(&String::from_utf8_lossy(pw))));
    }
    parts.push(format!("dbname={}", q(dbname)));
    parts.join(" ")
}

async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, conn) = config
        .connect(NoTls)
        .await
        .expect("cannot connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl TestDb {
    pub async fn new() -> TestDb {
        TestDb::new_on(server()).await
    }

    /// A fresh database on another server (one a test started itself, say).
    pub async fn new_on(admin: tokio_postgres::Config) -> TestDb {
        let name = format!(
            "rp_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let client = connect(&admin).await;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .expect("cannot create the test database");
        }
        let url = conninfo(&admin, &name);
        TestDb { name, url, admin }
    }

    pub async fn client(&self) -> Client {
        connect(&tokio_postgres::Config::from_str(&self.url).unwrap()).await
    }

    pub async fn exec(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e:?}\n{sql}"));
    }

    /// The one row `sql` returns; anything else fails the test.
    async fn one_row(&self, sql: &str) -> tokio_postgres::Row {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{sql}"))
    }

    /// First column of the first row, as i64.
    pub async fn int(&self, sql: &str) -> i64 {
        self.one_row(sql).await.get::<_, i64>(0)
    }

    /// `int` of `sql` run as `role`; fails the test, saying `what`, if the role may not run it.
    pub async fn int_as(&self, role: &str, sql: &str, what: &str) -> i64 {
        let client = self.client().await;
        client
            .batch_execute(&format!("SET ROLE {role}"))
            .await
            .unwrap();
        client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
            .get(0)
    }

    pub async fn text(&self, sql: &str) -> Option<String> {
        self.one_row(sql).await.get::<_, Option<String>>(0)
    }

    /// Fails the test unless `sql` (one bigint) returns `want`.
    pub async fn assert_int(&self, sql: &str, want: i64) {
        self.assert_int_because(sql, want, "").await;
    }

    /// `assert_int`, saying why the value must be that.
    pub async fn assert_int_because(&self, sql: &str, want: i64, why: &str) {
        assert_eq!(self.int(sql).await, want, "{why}\n{sql}");
    }

    /// Fails the test unless `sql` (one text) returns `want`.
    pub async fn assert_text(&self, sql: &str, want: Option<&str>) {
        self.assert_text_because(sql, want, "").await;
    }

    /// `assert_text`, saying why the value must be that.
    pub async fn assert_text_because(&self, sql: &str, want: Option<&str>, why: &str) {
        assert_eq!(self.text(sql).await.as_deref(), want, "{why}\n{sql}");
    }

    /// Terminates every session of reproject in this database (as a server restart would);
    /// returns how many there were.
    pub async fn terminate_reproject_sessions(&self) -> i64 {
        self.int(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'reproject' AND pid <> pg_backend_pid()",
        )
        .await
    }

    /// The oid of `table` (0 when there is none): tells one table from another of the same name.
    pub async fn oid(&self, table: &str) -> i64 {
        self.int(&format!(
            "SELECT coalesce(to_regclass('{table}')::oid::bigint, 0)"
        ))
        .await
    }

    pub async fn exists(&self, table: &str) -> bool {
        self.text(&format!("SELECT to_regclass('{table}')::text"))
            .await
            .is_some()
    }

    /// Runs an SQL file with psql (the example scripts use psql variables and meta-commands).
    pub async fn psql(&self, file: &Path, vars: &[(&str, &str)]) -> String {
        let mut cmd = tokio::process::Command::new(psql_bin());
        cmd.arg("-X")
            .arg("-q")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-At");
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        cmd.arg("-f").arg(file).arg("-d").arg(&self.url);
        cmd.env_remove("PGTZ").env_remove("PGOPTIONS");
        let out = cmd.output().await.expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql -f {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Drops the database (call at the end of a passing test; failures keep it for a look).
    pub async fn drop(self) {
        let client = connect(&self.admin).await;
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// psql: `$PSQL`, else on PATH, else beside the server binaries.
pub fn psql_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PSQL") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("psql");
            if p.is_file() {
                return p;
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("psql not found: install the PostgreSQL client or set PSQL")
}

/// The result of one `reproject` invocation.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(out: std::process::Output) -> Out {
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

impl Out {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn stderr_has(&self, needle: &str) -> &Self {
        contains("stderr", &self.stderr, needle);
        self
    }
    pub fn stdout_has(&self, needle: &str) -> &Self {
        contains("stdout", &self.stdout, needle);
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Fails the test unless `text` (the process's `what`) contains `needle`.
fn contains(what: &str, text: &str, needle: &str) {
    assert!(text.contains(needle), "{what} lacks {needle:?}:\n{text}");
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_reproject")
}

/// A command for `reproject --config CONFIG ARGS` against `db`, stdin closed (no terminal).
pub fn command(db: &TestDb, config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("--config").arg(config).args(args);
    cmd.env("DATABASE_URL", &db.url)
        .env("USER", "tester")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // libpq's variables fill in what DATABASE_URL leaves out; the caller's must not leak in.
    for var in PG_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The libpq environment variables reproject reads.
pub const PG_VARS: [&str; 13] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
];

pub async fn reproject(db: &TestDb, config: &Path, args: &[&str]) -> Out {
    let out = command(db, config, args)
        .output()
        .await
        .expect("cannot run reproject");
    Out::from(out)
}

/// A directory with a config file and handler files, written by the test.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(config: &str, files: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reproject.toml"), config).unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Project { dir }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("reproject.toml")
    }
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
    /// `reproject --config THIS ARGS` against `db`, run to its end.
    pub async fn reproject(&self, db: &TestDb, args: impl Args) -> Out {
        reproject(db, &self.config(), &args.list()).await
    }
    /// `reproject --config THIS ARGS` against `db`, started in the background.
    pub fn spawn(&self, db: &TestDb, args: impl Args) -> Runner {
        Runner::spawn(command(db, &self.config(), &args.list()))
    }
}

/// Command-line arguments: a list, or one string of words split at white space (for the
/// arguments that hold no space: `"rebuild --yes --batch-size 20"`).
pub trait Args {
    fn list(&self) -> Vec<&str>;
}

impl Args for &str {
    fn list(&self) -> Vec<&str> {
        self.split_whitespace().collect()
    }
}

impl Args for &[&str] {
    fn list(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl<const N: usize> Args for &[&str; N] {
    fn list(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl Args for &Vec<&str> {
    fn list(&self) -> Vec<&str> {
        self.to_vec()
    }
}

/// A `reproject` process running in the background (a `run`, a long rebuild).
pub struct Runner {
    pub child: tokio::process::Child,
}

impl Runner {
    pub fn spawn(mut cmd: tokio::process::Command) -> Runner {
        Runner {
            child: cmd.spawn().expect("cannot start reproject"),
        }
    }
    /// Waits, without a time limit, for the process to end; what it printed, as bytes.
    pub async fn wait_with_output(self) -> std::io::Result<std::process::Output> {
        self.child.wait_with_output().await
    }
    /// Sends a signal (`TERM`, `KILL`, `INT`...).
    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }
    /// Waits, without a time limit, for the process to end by itself.
    pub async fn output(self) -> Out {
        Out::from(self.child.wait_with_output().await.unwrap())
    }
    /// Waits (60 s at most) for the process to end by itself.
    pub async fn finish(self) -> Out {
        finish(self.child).await
    }
    /// SIGTERM, then what it printed as it ended.
    pub async fn stop(self) -> Out {
        self.signal("TERM");
        self.finish().await
    }
}

/// The process's own methods (`id`, `kill`, `try_wait`...).
impl std::ops::Deref for Runner {
    type Target = tokio::process::Child;
    fn deref(&self) -> &tokio::process::Child {
        &self.child
    }
}

impl std::ops::DerefMut for Runner {
    fn deref_mut(&mut self) -> &mut tokio::process::Child {
        &mut self.child
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("child still running");
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// Waits (60 s at most) for a child process to end, and what it printed.
pub async fn finish(child: tokio::process::Child) -> Out {
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the process did not stop within 60 s")
        .unwrap();
    Out::from(out)
}

/// Tasks running in the background (appenders, writers, readers) until told to stop; each
/// returns how much it did.
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<i64>>,
}

impl Background {
    /// Tasks started by the caller that watch `stop`.
    pub fn of(
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        tasks: Vec<tokio::task::JoinHandle<i64>>,
    ) -> Background {
        Background { stop, tasks }
    }
    /// One task on its own connection to `db` running `sql(i)` for i = 1, 2, ... with `pause`
    /// between, until stopped; it counts the rounds. An error fails the test.
    pub async fn repeat<F>(db: &TestDb, pause: std::time::Duration, sql: F) -> Background
    where
        F: Fn(i64) -> String + Send + 'static,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = db.client().await;
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let sql = sql(i);
                client
                    .batch_execute(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("background SQL failed: {e:?}\n{sql}"));
                tokio::time::sleep(pause).await;
            }
            i
        });
        Background::of(stop, vec![task])
    }
    /// Stops every task and waits for it; the sum of what they returned.
    pub async fn stop(self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut done = 0;
        for t in self.tasks {
            done += t.await.unwrap();
        }
        done
    }
}

pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// Rows of `a` not in `b` plus rows of `b` not in `a`, over the given columns.
pub async fn differing_rows(db: &TestDb, a: &str, b: &str, columns: &str) -> i64 {
    db.int(&format!(
        "SELECT (SELECT count(*) FROM (SELECT {columns} FROM {a} EXCEPT ALL SELECT {columns} FROM {b}) x) \
              + (SELECT count(*) FROM (SELECT {columns} FROM {b} EXCEPT ALL SELECT {columns} FROM {a}) y)"
    ))
    .await
}

/// Fails the test unless `a` and `b` hold the same rows (as multisets) over `columns`.
pub async fn assert_same_rows(db: &TestDb, a: &str, b: &str, columns: &str, why: &str) {
    let n = differing_rows(db, a, b, columns).await;
    assert_eq!(n, 0, "{why}: {n} row(s) of {a} and {b} differ");
}

/// Polls `sql` (one boolean; an error, e.g. a table not created yet, counts as false) every
/// 50 ms until it is true; fails the test after 30 s.
pub async fn wait_until(db: &TestDb, sql: &str) {
    for _ in 0..600 {
        if let Ok(row) = db.client().await.query_one(sql, &[]).await {
            if row.get::<_, Option<bool>>(0) == Some(true) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {sql}");
}

/// Waits until a rebuild has committed batches up to at least `position`.
pub async fn wait_for_checkpoint(db: &TestDb, position: i64) {
    wait_until(
        db,
        &format!(
            "SELECT coalesce((SELECT max(position) FROM reproject.checkpoints), 0) >= {position}"
        ),
    )
    .await;
}

/// Fails the test unless `rebuild --yes` of `p` is refused as a config error (exit 2) with
/// every one of `needles` in its message, having written nothing.
pub async fn refused(db: &TestDb, p: &Project, needles: &[&str]) {
    let out = p.reproject(db, "rebuild --yes").await;
    out.code(2);
    for n in needles {
        out.stderr_has(n);
    }
    assert!(!db.exists("reproject.runs").await, "nothing may be written");
}

/// Fails the test unless running `action` adds exactly one to what `count` (one bigint)
/// returns: a trigger that fires once, say.
pub async fn assert_adds_one(db: &TestDb, count: &str, action: &str, why: &str) {
    let before = db.int(count).await;
    db.exec(action).await;
    assert_eq!(db.int(count).await, before + 1, "{why}");
}
