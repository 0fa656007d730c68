//! A PostgreSQL cluster of a test's own, for what the shared server on `DATABASE_URL` cannot
//! show: TLS with a certificate the test made, password authentication, a server restart.
//! Started from the
//! local server binaries like scripts/lib/pg.sh does (`PG_BIN`, else the newest
//! /usr/lib/postgresql/*/bin), as the `postgres` user when running as root; stopped and deleted
//! on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// A password the tests give the role `alice`; it must never show up in any output.
pub const ALICE_PASSWORD: &str = "pw-Zq8r-never-print";

pub struct PgServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    run_as: Option<String>,
}

/// The directory with initdb, pg_ctl and postgres, or None (the caller skips, saying why).
pub fn server_bin() -> Option<PathBuf> {
    let usable = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return usable(&dir).then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            usable(&bin).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A port free now (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// Starts a cluster listening on 127.0.0.1 with `server.crt`/`server.key` (PEM) and
    /// ssl=on; `postgres` may connect without a password, `alice` needs [`ALICE_PASSWORD`].
    /// None if there are no server binaries on this machine.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<PgServer> {
        let server = PgServer::init("reproject-tls-")?;
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = server.data().join(name);
            std::fs::write(&path, text).unwrap();
            // PostgreSQL refuses a key that others can read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            server.chown(&path);
        }
        server.configure(
            "host all postgres 127.0.0.1/32 trust\n\
             host all alice 127.0.0.1/32 scram-sha-256\n",
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        );
        Some(server.launch())
    }

    /// Starts a plain cluster on 127.0.0.1 (no TLS; `postgres` connects without a password),
    /// for tests that stop and start the server. None if there are no server binaries.
    pub fn start_plain() -> Option<PgServer> {
        Self::start_plain_with("")
    }

    /// [`PgServer::start_plain`] with more postgresql.conf lines.
    pub fn start_plain_with(conf: &str) -> Option<PgServer> {
        let server = PgServer::init("reproject-pg-")?;
        // Prepared transactions: a writer that can outlive its session (and a restart).
        server.configure(
            "host all postgres 127.0.0.1/32 trust\n",
            &format!("max_prepared_transactions = 10\n{conf}"),
        );
        Some(server.launch())
    }

    /// A plain cluster (as [`PgServer::start_plain_with`]) that streaming standbys may
    /// replicate from ([`PgServer::start_standby`]). None if there are no server binaries.
    pub fn start_primary(conf: &str) -> Option<PgServer> {
        let server = PgServer::init("reproject-primary-")?;
        if !server.bin.join("pg_basebackup").is_file() {
            return None;
        }
        server.configure(
            "host all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\n",
            &format!("wal_level = replica\nmax_wal_senders = 5\n{conf}"),
        );
        Some(server.launch())
    }

    /// A hot standby of `primary` (started with [`PgServer::start_primary`]), streaming from it:
    /// `pg_basebackup -R -X stream`, `hot_standby = on`, `cluster_name` `name` (the
    /// `application_name` the primary shows in `pg_stat_replication`), and `conf`.
    pub fn start_standby(primary: &PgServer, name: &str, conf: &str) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("reproject-standby-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let server = PgServer {
            dir,
            port: 0,
            bin: primary.bin.clone(),
            run_as: primary.run_as.clone(),
        };
        server.chown(server.dir.path());
        server.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &server.data().display().to_string(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        // The copied postgresql.conf names the primary's socket directory: later lines win.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(server.data().join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            file,
            "hot_standby = on\ncluster_name = '{name}'\nunix_socket_directories = '{}'\n{conf}",
            server.dir.path().display()
        )
        .unwrap();
        server.launch()
    }

    /// A new, initialised (not yet started) cluster in a temporary directory.
    fn init(prefix: &str) -> Option<PgServer> {
        let bin = server_bin()?;
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let server = PgServer {
            dir,
            port: 0,
            bin,
            run_as,
        };
        server.chown(server.dir.path());
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        Some(server)
    }

    /// pg_hba.conf lines for TCP (local sockets are trusted) and postgresql.conf lines.
    fn configure(&self, hba_host_lines: &str, conf: &str) {
        std::fs::write(
            self.data().join("pg_hba.conf"),
            format!("local all all trust\n{hba_host_lines}"),
        )
        .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            file,
            "{conf}listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 40",
            self.dir.path().display()
        )
        .unwrap();
    }

    /// Starts the configured cluster on a free port.
    fn launch(mut self) -> PgServer {
        // Another process may take the port between the probe and the bind: retry.
        for attempt in 0.. {
            self.port = free_port();
            if self.pg_ctl_start() {
                break;
            }
            assert!(
                attempt < 3,
                "the test's PostgreSQL did not start; log:\n{}",
                self.log()
            );
        }
        self
    }

    /// The lines of the server's log that contain any of `words` (for a failure message).
    pub fn log_lines(&self, words: &[&str]) -> String {
        // With the DETAIL/STATEMENT/CONTEXT lines that follow a line found.
        let log = self.log();
        let mut out = Vec::new();
        let mut follow = false;
        for l in log.lines() {
            if words.iter().any(|w| l.contains(w)) {
                out.push(l);
                follow = true;
            } else if follow && (l.contains("DETAIL:") || l.contains("STATEMENT:")) {
                out.push(l);
            } else {
                follow = false;
            }
        }
        out.join("\n")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn pg_ctl_start(&self) -> bool {
        let log = self.dir.path().join("postgres.log");
        self.try_run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "30",
                "-o",
                &format!("-p {}", self.port),
                "start",
            ],
        )
    }

    /// Stops the server (`-m fast`: open sessions are terminated, open transactions roll back),
    /// keeping its data and port for [`PgServer::start_again`].
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Crashes the server (`-m immediate`: no shutdown checkpoint, crash recovery at the next
    /// start), keeping its data and port for [`PgServer::start_again`].
    pub fn crash(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        assert!(
            self.pg_ctl_start(),
            "the test's PostgreSQL did not start again on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = &self.run_as {
            let ok = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(path)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {user} {}", path.display());
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        // The caller's cwd may be closed to the postgres user.
        cmd.args(args).current_dir(self.dir.path());
        cmd
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        let out = self.command(program, args).output().unwrap();
        out.status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program, args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The superuser's connection over TCP without TLS (trust), for setup.
    pub fn admin(&self) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(&format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
            self.port
        ))
        .unwrap()
    }

    /// Creates the password-protected superuser `alice` (a rebuild creates and renames tables).
    pub async fn create_alice(&self) {
        let (client, conn) = self
            .admin()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("cannot connect to the test's own server");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE ROLE alice LOGIN SUPERUSER PASSWORD '{ALICE_PASSWORD}'"
            ))
            .await
            .unwrap();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.data().display().to_string();
            let _ = self
                .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A CA and a server certificate it signed, for the names given, all PEM.
pub struct Certs {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

pub fn make_certs(ca_name: &str, server_names: &[&str]) -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(
        server_names
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, server_names[0]);
    server.use_authority_key_identifier_extension = true;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    Certs {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// A self-signed server certificate (its own CA), as `make-ssl-cert` and many guides produce.
pub fn make_self_signed(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}
