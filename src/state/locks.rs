//! Session advisory locks that keep commands apart, held on a connection of their own for as
//! long as the command runs; if the process dies, the server releases them.
//!
//! Beside each lock, a claim row (`reproject.claims`, sql/011_claims.sql) with a heartbeat:
//! behind a transaction-pooling pooler an advisory lock can outlive its client on a pooled
//! server connection and be taken again through it; a fresh claim of another process cannot.
//!
//! Every write of a holder proves in its transaction that it still holds both
//! (state/fence.rs).
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
    pub(crate) fn key(self) -> i32 {
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
    client: std::sync::Arc<Client>,
    token: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for ProjectionLocks {
    fn drop(&mut self) {
        self.heartbeat.abort();
        crate::state::fence::unregister(&self.token);
        // Best effort: a claim left behind is taken over once its session's lock is gone
        // (at once on a direct connection) or its heartbeat is 60 s old.
        let client = self.client.clone();
        let token = std::mem::take(&mut self.token);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = client
                    .execute("DELETE FROM reproject.claims WHERE token = $1", &[&token])
                    .await;
            });
        }
    }
}

/// How often a holder refreshes its claims, and how old a claim's heartbeat may be before
/// another process takes it over.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
const CLAIM_STALE_SECS: f64 = 60.0;
/// How often the heartbeat task looks whether the lock session is still open.
const SESSION_WATCH: std::time::Duration = std::time::Duration::from_millis(200);

/// A token that tells this process's claims from any other's.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{nanos:x}", std::process::id())
}

/// Claims `projection` for `class` with `token`, on the session that holds the advisory lock.
/// Returns None when claimed, or a description of the live claim of another process. A claim
/// is taken over when its heartbeat is older than 60 s or its server session no longer holds
/// the advisory lock (its process is gone).
pub async fn claim(
    client: &Client,
    class: LockClass,
    projection: &str,
    token: &str,
) -> Result<Option<String>> {
    let host = crate::state::runs::hostname().unwrap_or_default();
    let taken = client
        .query_opt(
            "INSERT INTO reproject.claims AS c (lock_class, projection, token, backend_pid, host, pid) \
             VALUES ($1, $2, $3, pg_backend_pid(), $4, $5) \
             ON CONFLICT (lock_class, projection) DO UPDATE \
                SET token = EXCLUDED.token, backend_pid = EXCLUDED.backend_pid, host = EXCLUDED.host, \
                    pid = EXCLUDED.pid, claimed_at = now(), heartbeat_at = now() \
              WHERE c.token = EXCLUDED.token \
                 OR c.heartbeat_at < now() - make_interval(secs => $7) \
                 OR NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                                   AND l.pid = c.backend_pid AND l.classid = $1::int::oid AND l.objsubid = 2 \
                                   AND l.objid = (hashtext($6)::bigint & 4294967295)::oid \
                                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
             RETURNING c.token",
            &[
                &class.key(),
                &projection,
                &token,
                &host,
                &(std::process::id() as i32),
                &name_key(projection),
                &CLAIM_STALE_SECS,
            ],
        )
        .await
        .context("cannot claim the projection in reproject.claims")?;
    if taken.is_some() {
        return Ok(None);
    }
    Ok(Some(describe_claim(client, class, projection).await?))
}

/// ` (claimed by reproject process … on … since …, server session …, last heartbeat …)` for
/// the claim row of `projection`, or an empty string.
async fn describe_claim(client: &Client, class: LockClass, projection: &str) -> Result<String> {
    let row = client
        .query_opt(
            "SELECT host, pid, backend_pid, to_char(claimed_at, 'YYYY-MM-DD HH24:MI:SS TZ'), \
                    extract(epoch FROM now() - heartbeat_at)::float8 \
             FROM reproject.claims WHERE lock_class = $1 AND projection = $2",
            &[&class.key(), &projection],
        )
        .await
        .context("cannot read reproject.claims")?;
    Ok(match row {
        None => String::new(),
        Some(r) => {
            let (host, pid, backend, since, age): (String, i32, i32, String, f64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            format!(
                " (claimed by reproject process {pid} on {host} since {since}, server session {backend}, last heartbeat {age:.0} s ago)"
            )
        }
    })
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
    let mut client = db.dedicated().await?;
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
            // The claim names the process (host, pid, since); the lock, the server session.
            let mut holder = String::new();
            if crate::state::exists(&client).await.unwrap_or(false) {
                holder = describe_claim(&client, class, name)
                    .await
                    .unwrap_or_default();
            }
            if holder.is_empty() {
                holder = describe_holder(&client, class, name)
                    .await
                    .unwrap_or_default();
            }
            return Ok(Err((name.clone(), holder)));
        }
    }
    // The claims live in the state schema; commands that lock also write state.
    crate::state::migrate::migrate(&mut client).await?;
    let token = new_token();
    for name in projections {
        if let Some(holder) = claim(&client, class, name, &token).await? {
            let _ = client
                .execute("DELETE FROM reproject.claims WHERE token = $1", &[&token])
                .await;
            return Ok(Err((name.clone(), holder)));
        }
    }
    let client = std::sync::Arc::new(client);
    crate::state::fence::register(class, projections, &token);
    let heartbeat = tokio::spawn({
        let client = client.clone();
        let token = token.clone();
        let claims = projections.len() as u64;
        async move {
            // Watches the lock session between beats, so that a process whose session ended
            // stops at its next write without a round trip (state/fence.rs), and a waiting
            // one notices within a fraction of a second.
            let mut last_beat = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(SESSION_WATCH).await;
                if client.is_closed() {
                    crate::state::fence::mark_lost(&token);
                    break;
                }
                if last_beat.elapsed() < HEARTBEAT {
                    continue;
                }
                last_beat = tokio::time::Instant::now();
                let beat = client
                    .execute(
                        "UPDATE reproject.claims SET heartbeat_at = now() WHERE token = $1",
                        &[&token],
                    )
                    .await;
                // A claim that is no longer ours was taken over (our heartbeat went stale).
                if !matches!(beat, Ok(n) if n == claims) {
                    crate::state::fence::mark_lost(&token);
                    break;
                }
            }
        }
    });
    Ok(Ok(ProjectionLocks {
        client,
        token,
        heartbeat,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_db::TestDb;

    /// The claim row guards where the advisory lock cannot: behind a transaction-pooling pooler
    /// a second client can reach the server session that already holds the lock and take it
    /// again (advisory locks are re-entrant per session). No command can be made to share a
    /// session, so two claims on one session stand for the two processes.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_live_claim_refuses_a_second_process_even_on_the_lock_holding_session() {
        let db = TestDb::new().await;
        let mut session = db.client().await;
        crate::state::migrate::migrate(&mut session).await.unwrap();
        let class = LockClass::Projection;
        let lock =
            |f: &'static str| format!("SELECT {f}({}, hashtext('reproject:tally'))", class.key());
        session
            .batch_execute(&lock("pg_advisory_lock"))
            .await
            .unwrap();
        assert_eq!(
            claim(&session, class, "tally", "first").await.unwrap(),
            None
        );
        // Another client through the same pooled session gets the advisory lock again...
        let again: bool = session
            .query_one(&lock("pg_try_advisory_lock"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(again, "advisory locks are re-entrant within a session");
        // ...but not the claim, which names its holder.
        let refused = claim(&session, class, "tally", "second")
            .await
            .unwrap()
            .expect("a live claim of another process refuses");
        assert!(
            refused.contains("claimed by reproject process"),
            "{refused}"
        );
        assert!(refused.contains("last heartbeat"), "{refused}");
        // A claim whose heartbeat is older than 60 s is taken over.
        session
            .batch_execute(
                "UPDATE reproject.claims SET heartbeat_at = now() - interval '61 seconds'",
            )
            .await
            .unwrap();
        assert_eq!(
            claim(&session, class, "tally", "second").await.unwrap(),
            None
        );
        // A claim whose session no longer holds the lock (its process died) is taken over at
        // once by whoever holds the lock now.
        session
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await
            .unwrap();
        let other = db.client().await;
        other
            .batch_execute(&lock("pg_advisory_lock"))
            .await
            .unwrap();
        assert_eq!(claim(&other, class, "tally", "third").await.unwrap(), None);
        let token: String = other
            .query_one(
                "SELECT token FROM reproject.claims WHERE projection = 'tally'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(token, "third");
        drop((session, other));
        db.drop().await;
    }
}
