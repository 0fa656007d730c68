//! Session advisory locks that keep commands apart, held on a connection of their own for as
//! long as the command runs; if the process dies, the server releases them.
//!
//! Two classes: one active rebuild/swap/rollback per projection ([`LockClass::Projection`]),
//! and one live runner per projection ([`LockClass::Runner`]). They are separate so that
//! `reproject run` keeps the live tables current while `rebuild` builds the next generation.

use crate::db::Db;
use crate::error::{Context, Error, Result};
use tokio_postgres::{Client, GenericClient};

/// Which kind of lock: the first key of the two-key advisory lock (the second is
/// `hashtext('reproject:' || projection)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockClass {
    /// Held by a rebuild, swap or rollback of the projection.
    Projection,
    /// Held by the live runner of the projection.
    Runner,
}

impl LockClass {
    fn key(self) -> i32 {
        match self {
            LockClass::Projection => 727_002,
            LockClass::Runner => 727_003,
        }
    }
}

fn name_key(projection: &str) -> String {
    format!("reproject:{projection}")
}

/// The held locks; dropping this closes the session and releases them.
pub struct ProjectionLocks {
    client: Client,
    /// The projections locked.
    pub projections: Vec<String>,
}

impl ProjectionLocks {
    /// False once the session holding the locks is gone (e.g. the server restarted): the locks
    /// are released then, and must be taken again.
    pub fn is_held(&self) -> bool {
        !self.client.is_closed()
    }
}

/// Takes the lock of `class` for every projection on a connection of its own. On failure,
/// returns the projection whose lock another session holds, and that session's description.
pub async fn try_lock(
    db: &Db,
    class: LockClass,
    projections: &[String],
) -> Result<std::result::Result<ProjectionLocks, (String, String)>> {
    let client = db.dedicated().await?;
    for name in projections {
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&class.key(), &name_key(name)],
            )
            .await
            .context("cannot take an advisory lock")?
            .get(0);
        if !got {
            let holder = describe_holder(&client, class, name)
                .await
                .unwrap_or_default();
            return Ok(Err((name.clone(), holder)));
        }
    }
    Ok(Ok(ProjectionLocks {
        client,
        projections: projections.to_vec(),
    }))
}

/// Takes the projection lock of every projection, or fails with a Busy error naming who holds one.
pub async fn lock_projections(db: &Db, projections: &[String]) -> Result<ProjectionLocks> {
    match try_lock(db, LockClass::Projection, projections).await? {
        Ok(locks) => Ok(locks),
        Err((name, holder)) => Err(Error::busy(format!(
            "projection `{name}` is busy: another reproject command is working on it{holder}"
        ))
        .with_hint("wait for it to finish (see `reproject status`), or stop it; rebuilds of other projections may run meanwhile")),
    }
}

/// Whether some session of this database holds the lock of `class` for a projection now.
pub async fn is_locked(client: &impl GenericClient, class: LockClass, name: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND classid = $1::int::oid AND objsubid = 2 \
               AND objid = (hashtext($2)::bigint & 4294967295)::oid \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            &[&class.key(), &name_key(name)],
        )
        .await
        .context("cannot read pg_locks")?;
    Ok(row.get(0))
}

/// ` (server pid …, application …, user …, from …, connected since …)` for the session of this
/// database holding the lock, or an empty string.
pub async fn describe_holder(client: &Client, class: LockClass, name: &str) -> Result<String> {
    let row = client
        .query_opt(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''), \
                    coalesce(a.client_addr::text, 'local'), to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND l.objsubid = 2 \
               AND l.objid = (hashtext($2)::bigint & 4294967295)::oid \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
            &[&class.key(), &name_key(name)],
        )
        .await
        .context("cannot read pg_locks")?;
    let Some(r) = row else {
        return Ok(String::new());
    };
    let (pid, app, user, addr, since): (i32, String, String, String, String) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    Ok(format!(
        " (server pid {pid}, application `{app}`, user `{user}`, from {addr}, connected since {since})"
    ))
}
