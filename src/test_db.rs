//! A throwaway database for the crate's own tests that must call an inner step on a real
//! server (what no command of the binary can reach: a claim on a session that already holds
//! the lock, the swap's commit before its WAL flush). Made on the server in `DATABASE_URL`,
//! as the end-to-end tests' databases are: `scripts/test.sh` starts a throwaway server and
//! sets it. Without it these tests fail, saying so.

use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::{Client, Config, NoTls};

/// One database of its own per test.
pub(crate) struct TestDb {
    admin: Config,
    name: String,
}

impl TestDb {
    /// Creates a fresh database on the server of `DATABASE_URL`.
    pub async fn new() -> TestDb {
        let url = std::env::var("DATABASE_URL").expect(
            "this test needs a PostgreSQL server in DATABASE_URL: run it with scripts/test.sh, which starts one",
        );
        let admin: Config = url.parse().expect("DATABASE_URL is a connection string");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "reproject_unit_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        TestDb { admin, name }
    }

    /// A new session on the test's database.
    pub async fn client(&self) -> Client {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        connect(&config).await
    }

    /// Drops the database (and ends its sessions).
    pub async fn drop(self) {
        let _ = connect(&self.admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(connection);
    client
}
