//! Connections: one pool for short queries, dedicated connections for long-lived work
//! (the replay session, advisory locks), because session state must not leak between pool
//! checkouts (see shared notes on deadpool).
//!
//! Connection settings are read as libpq reads them (`conninfo`), including the TLS modes
//! tokio-postgres does not know, which `tls` implements with rustls.

pub mod catalog;
pub(crate) mod connect;
pub(crate) mod conninfo;
pub(crate) mod params;
pub(crate) mod tls;
pub(crate) mod tx;

pub use conninfo::SslMode;

use crate::error::{Error, Result};
use connect::{Attempt, Failure};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long one connection attempt to one server address may take as a whole (TCP connect,
/// TLS handshake, authentication) before the next address is tried, unless `connect_timeout`
/// says otherwise. A server that accepts the connection but never answers must not hang a
/// cron job forever; twenty seconds is what the TCP connect and the start-up had before
/// `connect_timeout` bounded both together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Pool size. The pool serves short statements only (validation, run bookkeeping, status);
/// the engine holds at most two pooled connections at once, and the long work (replay, locks)
/// runs on dedicated connections. Four leaves headroom without taking server slots from the
/// application whose tables are being rebuilt (`max_connections` is shared with it).
const POOL_SIZE: usize = 4;

/// How long `get()` waits for a free pooled connection. With the usage above a wait this long
/// means a leaked checkout, which should fail loudly rather than hang.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Recycling is `Fast` (no round trip): it still drops connections that closed. Pooled
/// connections never change session state (only `SET LOCAL`), so nothing needs resetting.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A database to work on: its parsed connection settings and a small pool.
#[derive(Clone)]
pub struct Db {
    config: Config,
    tls: MakeRustlsConnect,
    sslmode: SslMode,
    /// The TLS files as libpq names them, for [`Db::libpq_env`].
    tls_settings: conninfo::TlsSettings,
    /// Per address, the whole attempt; `None`: `connect_timeout=0`, wait indefinitely.
    connect_timeout: Option<Duration>,
    /// Why the pool's last connection attempt failed, in full: the pool can only pass on a
    /// `tokio_postgres::Error`, which cannot say "timed out at this address".
    pool_failure: Arc<Mutex<Option<Error>>>,
    pool: Pool,
}

/// The pool's way of connecting: the same as [`Db::dedicated`] (`connect::establish`).
struct PoolConnect {
    tls: MakeRustlsConnect,
    connect_timeout: Option<Duration>,
    describe: String,
    sslmode: SslMode,
    failure: Arc<Mutex<Option<Error>>>,
}

impl deadpool_postgres::Connect for PoolConnect {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        std::result::Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let pg_config = pg_config.clone();
        Box::pin(async move {
            match connect::establish(&pg_config, &self.tls, self.connect_timeout).await {
                Ok((client, connection)) => {
                    let task = tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("pooled connection closed: {e}");
                        }
                    });
                    Ok((client, task))
                }
                Err(failure) => {
                    let err = connect_error(&self.describe, self.sslmode, &failure);
                    *self.failure.lock().unwrap() = Some(err);
                    // The pool needs a tokio_postgres::Error; `Db::get` reports the one above.
                    // tokio-postgres has no public constructor for a timeout other than this
                    // one (which its own blocking client uses).
                    Err(failure
                        .into_pg_error()
                        .unwrap_or_else(tokio_postgres::Error::__private_api_timeout))
                }
            }
        })
    }
}

impl Db {
    /// Parses a `postgres://` URL or a `key=value` connection string, libpq's TLS parameters
    /// included (`sslmode` up to `verify-full`, `sslrootcert`, `sslcert`, `sslkey`). Only the
    /// string is used; [`Db::from_url_or_env`] also reads the environment as libpq does. The
    /// string itself is never echoed back, because it may hold a password.
    pub fn new(url: &str) -> Result<Db> {
        Db::build(conninfo::parse(url, &|_| None)?)
    }

    /// Connection settings as libpq tools take them: the URL (`--database-url` /
    /// `DATABASE_URL`) if given, with `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
    /// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`, ... and `~/.pgpass` filling in
    /// only what it leaves out. Without a URL, at least one of `PGHOST`, `PGHOSTADDR`,
    /// `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD` must be set: unlike `psql`, a tool that
    /// swaps tables does not fall back to a default server silently.
    pub fn from_url_or_env(url: Option<&str>) -> Result<Db> {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let info = match url {
            Some(url) => conninfo::parse(url, &env)?,
            None => conninfo::from_env(&env)?.ok_or_else(|| {
                Error::config("no database to connect to").with_hint(
                    "pass `--database-url URL`, set `DATABASE_URL`, or set PGHOST/PGPORT/PGUSER/PGDATABASE as for psql",
                )
            })?,
        };
        Db::build(info)
    }

    fn build(info: conninfo::ConnInfo) -> Result<Db> {
        let mut config = info.config;
        if config.get_application_name().is_none() {
            // So that a DBA looking at pg_stat_activity (or at who blocks a swap) sees us.
            config.application_name("reproject");
        }
        let connect_timeout = match info.connect_timeout {
            None => Some(CONNECT_TIMEOUT),
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
        };
        let tls = tls::connector(&info.tls)?;
        let tls_settings = info.tls.clone();
        let pool_failure = Arc::new(Mutex::new(None));
        let manager = Manager::from_connect(
            config.clone(),
            PoolConnect {
                tls: tls.clone(),
                connect_timeout,
                describe: describe(&config),
                sslmode: info.tls.mode,
                failure: pool_failure.clone(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // deadpool has no timeouts by default: `get()` would wait forever. Creating a
        // connection bounds itself (per address, `connect::establish`).
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| Error::runtime("cannot create the connection pool").caused_by_error(e))?;
        Ok(Db {
            config,
            tls,
            sslmode: info.tls.mode,
            tls_settings,
            connect_timeout,
            pool_failure,
            pool,
        })
    }

    /// `user@host:port/dbname`, without the password, for messages.
    pub fn describe(&self) -> String {
        describe(&self.config)
    }

    /// This connection as libpq programs take it from the environment: `PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, ... and `DATABASE_URL`, for an
    /// external projector (external.rs). Holds the password: for a child's environment only,
    /// never for a message.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = libpq_env(&self.config, &self.tls_settings);
        // libpq's 0 is "wait indefinitely", as here.
        let secs = self.connect_timeout.map_or(0, |t| t.as_secs());
        env.push(("PGCONNECT_TIMEOUT", secs.to_string()));
        env
    }

    /// A pooled connection for short work.
    pub async fn get(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            if let deadpool_postgres::PoolError::Backend(_) = &e {
                if let Some(err) = self.pool_failure.lock().unwrap().clone() {
                    return err.with_source(e);
                }
            }
            let cause = match &e {
                deadpool_postgres::PoolError::Backend(pg) => crate::error::describe_pg(pg),
                deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                    format!(
                        "all {POOL_SIZE} pooled connections stayed busy for {}s",
                        POOL_WAIT_TIMEOUT.as_secs()
                    )
                }
                other => other.to_string(),
            };
            cannot_connect(&self.describe(), self.sslmode)
                .caused_by(cause)
                .with_hint("check `--database-url` / `DATABASE_URL` (or the PG* variables) and that the server is running")
                .with_source(e)
        })
    }

    async fn establish(&self) -> Result<(Client, connect::Conn)> {
        connect::establish(&self.config, &self.tls, self.connect_timeout)
            .await
            .map_err(|failure| connect_error(&self.describe(), self.sslmode, &failure))
    }

    /// A connection of its own, for a replay session or an advisory lock that must live as long
    /// as the command.
    pub async fn dedicated(&self) -> Result<Client> {
        let (client, connection) = self.establish().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// A connection of its own whose notifications (LISTEN) arrive on the returned channel;
    /// the channel closes when the connection does.
    pub async fn listener(&self) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        use futures_util::StreamExt;
        let (client, mut connection) = self.establish().await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    if tx.send(n.channel().to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Ok((client, rx))
    }
}

/// The error's first line: where we tried to connect.
fn cannot_connect(describe: &str, sslmode: SslMode) -> Error {
    Error::runtime(format!(
        "cannot connect to PostgreSQL at {describe} (sslmode={})",
        sslmode.as_str()
    ))
    .with_reason(crate::error::Reason::CannotConnect)
}

/// The error for a failed connection: one cause per address tried, and a hint that fits what
/// happened at the last one.
fn connect_error(describe: &str, sslmode: SslMode, failure: &Failure) -> Error {
    let mut err = cannot_connect(describe, sslmode);
    let several = failure.attempts.len() > 1;
    let mut hint = "check `--database-url` / `DATABASE_URL` (or the PG* variables) and that the server is running";
    for (place, attempt) in &failure.attempts {
        let (cause, explained, this_hint) = explain(place, attempt, sslmode);
        err = err.caused_by(if several {
            format!("{place}: {cause}")
        } else {
            cause
        });
        if let Some(words) = explained {
            err = err.caused_by(words);
        }
        if let Some(h) = this_hint {
            hint = h;
        }
        if let Attempt::Failed(pg) = attempt {
            err = err.with_db_state(pg);
            // A connection that never opened is not one that was lost.
            err.reason = Some(crate::error::Reason::CannotConnect);
        }
    }
    err.with_hint(hint)
}

/// One address's failure in words: the cause, an explanation of a TLS library's terms, and the
/// hint that fits (`None`: the general one).
fn explain(
    place: &str,
    attempt: &Attempt,
    sslmode: SslMode,
) -> (String, Option<&'static str>, Option<&'static str>) {
    let pg = match attempt {
        Attempt::TimedOut {
            accepted: true,
            secs,
        } => {
            return (
                format!("{place} accepted the connection but did not complete the PostgreSQL start-up within {secs}s"),
                None,
                Some("something listens there but does not answer as PostgreSQL: check the port (is it PostgreSQL, or a pooler or proxy whose server is down?) and the server's load; connect_timeout (or PGCONNECT_TIMEOUT) sets how long to wait"),
            )
        }
        Attempt::TimedOut {
            accepted: false,
            secs,
        } => {
            return (
                format!("no server answered at {place} within {secs}s"),
                None,
                Some("check the host and port, that the server is running, and that no firewall drops the connection; connect_timeout (or PGCONNECT_TIMEOUT) sets how long to wait"),
            )
        }
        Attempt::Unresolved(e) => {
            return (
                format!("cannot resolve the host name of {place}: {e}"),
                None,
                Some("check the host name in `--database-url` / `DATABASE_URL` (or PGHOST)"),
            )
        }
        Attempt::Failed(pg) => pg,
    };
    let refused = std::error::Error::source(pg)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused {
        return (
            format!("nothing listens at {place} (connection refused)"),
            None,
            Some("check the host and port, and that the server is running"),
        );
    }
    let cause = crate::error::describe_pg(pg);
    // rustls names the reason in its own terms (`UnknownIssuer`); say it in the user's.
    let explained = [
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a CA in sslrootcert",
        ),
        (
            "not valid for name",
            "the server's certificate does not name the host connected to",
        ),
        (
            "Expired",
            "the server's certificate has expired (or this machine's clock is wrong)",
        ),
        (
            "server does not support TLS",
            "the server does not accept TLS connections (ssl = off)",
        ),
    ]
    .iter()
    .find(|(needle, _)| cause.contains(needle))
    .map(|(_, words)| *words);
    let hint = if cause.contains("server does not support TLS") {
        Some("turn ssl on in the server, or connect with sslmode=prefer (or disable)")
    } else if cause.contains("certificate") || cause.contains("TLS") {
        Some(match sslmode {
            SslMode::VerifyFull => "the server's certificate must be signed by a CA in sslrootcert and name the host you connect to \
                 (sslmode=verify-ca skips the name check)",
            _ => "check sslmode and that sslrootcert is the CA that signed the server's certificate",
        })
    } else if cause.contains("password") || cause.contains("authentication") {
        Some("check the user and password (URL, PGPASSWORD or ~/.pgpass)")
    } else {
        None
    };
    (cause, explained, hint)
}

fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// See [`Db::libpq_env`].
fn libpq_env(config: &Config, tls: &conninfo::TlsSettings) -> Vec<(&'static str, String)> {
    use tokio_postgres::config::Host;
    let mut env = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(|p| p.to_string()).collect();
    if !hosts.is_empty() {
        env.push(("PGHOST", hosts.join(",")));
    }
    if !config.get_hostaddrs().is_empty() {
        let addrs: Vec<String> = config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        env.push(("PGHOSTADDR", addrs.join(",")));
    }
    if !ports.is_empty() {
        env.push(("PGPORT", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    if let Some(p) = &password {
        env.push(("PGPASSWORD", p.clone()));
    }
    if let Some(db) = config.get_dbname() {
        env.push(("PGDATABASE", db.to_string()));
    }
    env.push(("PGSSLMODE", tls.mode.as_str().to_string()));
    let root = tls.root_cert.as_ref().map(|r| match r {
        conninfo::RootCert::File(f) => f.display().to_string(),
        conninfo::RootCert::System => "system".to_string(),
    });
    if let Some(root) = &root {
        env.push(("PGSSLROOTCERT", root.clone()));
    }
    if let Some((cert, key)) = &tls.client_cert {
        env.push(("PGSSLCERT", cert.display().to_string()));
        env.push(("PGSSLKEY", key.display().to_string()));
    }
    // PGCONNECT_TIMEOUT: added by `Db::libpq_env`, which knows the timeout (tokio-postgres'
    // config does not hold it).
    if let Some(o) = config.get_options() {
        env.push(("PGOPTIONS", o.to_string()));
    }
    // The same as one URL, for libraries that take `DATABASE_URL`: TCP hosts in the authority
    // (`h1:p1,h2:p2`), socket directories as `?host=` (libpq's URL form for them).
    let enc = percent_encode;
    let mut url = String::from("postgresql://");
    if let Some(user) = config.get_user() {
        url.push_str(&enc(user));
        if let Some(p) = &password {
            url.push(':');
            url.push_str(&enc(p));
        }
        url.push('@');
    }
    let mut query = Vec::new();
    let tcp: Vec<(usize, &String)> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(config.get_hosts()[*i], Host::Tcp(_)))
        .collect();
    if tcp.len() == hosts.len() {
        let parts: Vec<String> = tcp
            .iter()
            .map(|(i, h)| {
                let host = if h.contains(':') {
                    format!("[{h}]")
                } else {
                    enc(h)
                };
                match ports.get(*i).or(ports.first()) {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        url.push_str(&parts.join(","));
    } else {
        query.push(format!("host={}", enc(&hosts.join(","))));
        if !ports.is_empty() {
            query.push(format!("port={}", ports.join(",")));
        }
    }
    url.push('/');
    if let Some(db) = config.get_dbname() {
        url.push_str(&enc(db));
    }
    query.push(format!("sslmode={}", tls.mode.as_str()));
    if let Some(root) = &root {
        query.push(format!("sslrootcert={}", enc(root)));
    }
    if let Some((cert, key)) = &tls.client_cert {
        query.push(format!("sslcert={}", enc(&cert.display().to_string())));
        query.push(format!("sslkey={}", enc(&key.display().to_string())));
    }
    url.push('?');
    url.push_str(&query.join("&"));
    env.push(("DATABASE_URL", url));
    env
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_env_names_the_same_connection_and_encodes_the_url() {
        let info = conninfo::parse(
            "postgres://app%40x:p%20w%2Fd@db.example:6432/my%20db?sslmode=require",
            &|_| None,
        )
        .unwrap();
        let env = libpq_env(&info.config, &info.tls);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGHOST"), Some("db.example"));
        assert_eq!(get("PGPORT"), Some("6432"));
        assert_eq!(get("PGUSER"), Some("app@x"));
        assert_eq!(get("PGPASSWORD"), Some("p w/d"));
        assert_eq!(get("PGDATABASE"), Some("my db"));
        assert_eq!(get("PGSSLMODE"), Some("require"));
        assert_eq!(
            get("DATABASE_URL"),
            Some("postgresql://app%40x:p%20w%2Fd@db.example:6432/my%20db?sslmode=require")
        );
        let sockets = conninfo::parse("host=/run/pg port=5433 user=u dbname=d", &|_| None).unwrap();
        let env = libpq_env(&sockets.config, &sockets.tls);
        let url = env.iter().find(|(n, _)| *n == "DATABASE_URL").unwrap();
        assert_eq!(
            url.1,
            "postgresql://u@/d?host=%2Frun%2Fpg&port=5433&sslmode=prefer"
        );
    }

    #[tokio::test]
    async fn describe_hides_the_password() {
        let db = Db::new("postgres://alice:s3cret@db.example:6543/app").unwrap();
        assert_eq!(db.describe(), "alice@db.example:6543/app");
        let err = Db::new("postgres://alice:s3cret@host:notaport/app")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"));
    }
}
