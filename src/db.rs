//! Connections: one pool for short queries, dedicated connections for long-lived work
//! (the replay session, advisory locks), because session state must not leak between pool
//! checkouts (see shared notes on deadpool).
//!
//! Connection settings are read as libpq reads them (`conninfo`), including the TLS modes
//! tokio-postgres does not know, which `tls` implements with rustls.

mod conninfo;
mod tls;

pub use conninfo::SslMode;

use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long to wait for the TCP connection to one server address before trying the next (or
/// saying the database is unreachable), unless the connection string sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// On top of the TCP connect: the TLS handshake and authentication. A server that accepts the
/// connection but never answers must not hang a cron job forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    establish_timeout: Duration,
    pool: Pool,
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
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // tokio-postgres applies connect_timeout per address and tries each host in turn.
        let addresses = config
            .get_hosts()
            .len()
            .max(config.get_hostaddrs().len())
            .max(1) as u32;
        let establish_timeout = *config.get_connect_timeout().unwrap_or(&CONNECT_TIMEOUT)
            * addresses
            + HANDSHAKE_TIMEOUT;
        let tls = tls::connector(&info.tls)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // deadpool has no timeouts by default: `get()` would wait forever.
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(establish_timeout))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| Error::runtime("cannot create the connection pool").caused_by(e))?;
        Ok(Db {
            config,
            tls,
            sslmode: info.tls.mode,
            establish_timeout,
            pool,
        })
    }

    /// `user@host:port/dbname`, without the password, for messages.
    pub fn describe(&self) -> String {
        describe(&self.config)
    }

    /// The TLS mode in effect (libpq's `sslmode`).
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// A pooled connection for short work.
    pub async fn get(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let cause = match e {
                deadpool_postgres::PoolError::Backend(pg) => crate::error::describe_pg(&pg),
                deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                    format!(
                        "all {POOL_SIZE} pooled connections stayed busy for {}s",
                        POOL_WAIT_TIMEOUT.as_secs()
                    )
                }
                deadpool_postgres::PoolError::Timeout(_) => self.timed_out(),
                other => other.to_string(),
            };
            self.connect_error(cause)
        })
    }

    /// A connection of its own, for a replay session or an advisory lock that must live as long
    /// as the command.
    pub async fn dedicated(&self) -> Result<Client> {
        let connect = self.config.connect(self.tls.clone());
        let (client, connection) = match tokio::time::timeout(self.establish_timeout, connect).await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.connect_error(crate::error::describe_pg(&e))),
            Err(_) => return Err(self.connect_error(self.timed_out())),
        };
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
        let connect = self.config.connect(self.tls.clone());
        let (client, mut connection) =
            match tokio::time::timeout(self.establish_timeout, connect).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(self.connect_error(crate::error::describe_pg(&e))),
                Err(_) => return Err(self.connect_error(self.timed_out())),
            };
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

    fn timed_out(&self) -> String {
        format!(
            "no connection within {}s (connect, TLS handshake and authentication)",
            self.establish_timeout.as_secs()
        )
    }

    /// The error for a failed connection, with a hint that fits the cause.
    fn connect_error(&self, cause: String) -> Error {
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
            "turn ssl on in the server, or connect with sslmode=prefer (or disable)"
        } else if cause.contains("certificate") || cause.contains("TLS") {
            match self.sslmode {
                SslMode::VerifyFull => "the server's certificate must be signed by a CA in sslrootcert and name the host you connect to \
                     (sslmode=verify-ca skips the name check)",
                _ => "check sslmode and that sslrootcert is the CA that signed the server's certificate",
            }
        } else if cause.contains("password") || cause.contains("authentication") {
            "check the user and password (URL, PGPASSWORD or ~/.pgpass)"
        } else {
            "check `--database-url` / `DATABASE_URL` (or the PG* variables) and that the server is running"
        };
        let err = Error::runtime(format!(
            "cannot connect to PostgreSQL at {} (sslmode={})",
            self.describe(),
            self.sslmode.as_str()
        ))
        .caused_by(cause);
        match explained {
            Some(words) => err.caused_by(words),
            None => err,
        }
        .with_hint(hint)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
