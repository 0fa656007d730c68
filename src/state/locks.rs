//! One active run per projection: a session advisory lock per projection, held on a connection
//! of its own for as long as the command runs. If the process dies, the server releases it.

use crate::db::Db;
use crate::error::{Context, Error, Result};
use tokio_postgres::Client;

/// First key of every projection lock (the second is `hashtext(projection)`).
const PROJECTION_LOCK_CLASS: i32 = 727_002;

/// The held locks; dropping this closes the session and releases them.
pub struct ProjectionLocks {
    _client: Client,
    pub projections: Vec<String>,
}

/// Takes the lock of every projection, or fails with a Busy error naming who holds one.
pub async fn lock_projections(db: &Db, projections: &[String]) -> Result<ProjectionLocks> {
    let client = db.dedicated().await?;
    for name in projections {
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&PROJECTION_LOCK_CLASS, &format!("reproject:{name}")],
            )
            .await
            .context("cannot take the projection lock")?
            .get(0);
        if !got {
            let holder = describe_holder(&client, name).await.unwrap_or_default();
            return Err(Error::busy(format!(
                "projection `{name}` is busy: another reproject command is working on it{holder}"
            ))
            .with_hint("wait for it to finish (see `reproject status`), or stop it; rebuilds of other projections may run meanwhile"));
        }
    }
    Ok(ProjectionLocks {
        _client: client,
        projections: projections.to_vec(),
    })
}

/// Whether some session holds the lock of a projection right now.
pub async fn is_locked(client: &impl tokio_postgres::GenericClient, name: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND classid = $1::int::oid AND objsubid = 2 \
               AND objid = (hashtext($2)::bigint & 4294967295)::oid \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            &[&PROJECTION_LOCK_CLASS, &format!("reproject:{name}")],
        )
        .await
        .context("cannot read pg_locks")?;
    Ok(row.get(0))
}

async fn describe_holder(client: &Client, name: &str) -> Result<String> {
    let row = client
        .query_opt(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''), \
                    coalesce(a.client_addr::text, 'local'), to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND l.objsubid = 2 \
               AND l.objid = (hashtext($2)::bigint & 4294967295)::oid \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
            &[&PROJECTION_LOCK_CLASS, &format!("reproject:{name}")],
        )
        .await
        .context("cannot read pg_locks")?;
    let Some(r) = row else {
        return Ok(String::new());
    };
    let pid: i32 = r.get(0);
    let app: String = r.get(1);
    let user: String = r.get(2);
    let addr: String = r.get(3);
    let since: String = r.get(4);
    Ok(format!(
        " (server pid {pid}, application `{app}`, user `{user}`, from {addr}, connected since {since})"
    ))
}
