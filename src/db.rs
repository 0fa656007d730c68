//! Connections: one pool for short queries, dedicated connections for long-lived work
//! (the replay session, advisory locks), because session state must not leak between pool
//! checkouts (see shared notes on deadpool).

use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls};

/// How long to wait for a connection before saying the database is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database to work on: its parsed connection settings and a small pool.
#[derive(Clone)]
pub struct Db {
    config: Config,
    pool: Pool,
}

impl Db {
    /// Parses a `postgres://` URL or a `key=value` connection string. The URL itself is never
    /// echoed back, because it may hold a password.
    pub fn new(url: &str) -> Result<Db> {
        let mut config = Config::from_str(url).map_err(|e| {
            Error::config("invalid database URL")
                .caused_by(e)
                .with_hint("expected `postgres://user@host:port/database` or `host=... dbname=...`")
        })?;
        if config.get_application_name().is_none() {
            // So that a DBA looking at pg_stat_activity (or at who blocks a swap) sees us.
            config.application_name("reproject");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::runtime("cannot create the connection pool").caused_by(e))?;
        Ok(Db { config, pool })
    }

    /// `user@host:port/dbname`, without the password, for messages.
    pub fn describe(&self) -> String {
        describe(&self.config)
    }

    /// A pooled connection for short work.
    pub async fn get(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let err = Error::runtime(format!(
                "cannot connect to PostgreSQL at {}",
                self.describe()
            ));
            let err = match e {
                deadpool_postgres::PoolError::Backend(pg) => {
                    err.caused_by(crate::error::describe_pg(&pg))
                }
                other => err.caused_by(other),
            };
            err.with_hint("check `--database-url` / `DATABASE_URL` and that the server is running")
        })
    }

    /// A connection of its own, for a replay session or an advisory lock that must live as long
    /// as the command.
    pub async fn dedicated(&self) -> Result<Client> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            Error::runtime(format!(
                "cannot connect to PostgreSQL at {}",
                self.describe()
            ))
            .caused_by(crate::error::describe_pg(&e))
            .with_hint("check `--database-url` / `DATABASE_URL` and that the server is running")
        })?;
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
        let (client, mut connection) = self.config.connect(NoTls).await.map_err(|e| {
            Error::runtime(format!(
                "cannot connect to PostgreSQL at {}",
                self.describe()
            ))
            .caused_by(crate::error::describe_pg(&e))
        })?;
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
