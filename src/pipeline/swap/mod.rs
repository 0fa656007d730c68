//! Swapping generations of tables by renaming them, and undoing it.
//!
//! The renames take ACCESS EXCLUSIVE locks. A waiting ACCESS EXCLUSIVE request blocks every
//! reader that comes after it, so locks are requested with a short `lock_timeout` that grows
//! from attempt to attempt, with pauses in between, within a total budget: the application
//! never queues behind us for longer than one short slice.

pub mod exchange;
pub mod handover;
pub mod laps;
pub mod standby;
pub mod window;

use crate::error::{sqlstate, Context, Error, Result};
use crate::model::ident::TableName;
use crate::progress::{Cancel, Reporter, Signal, Step, Warning};
use crate::state::helpers::{self, Ownership};
use crate::state::runs::RunTable;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How to ask for the swap's locks.
#[derive(Debug, Clone, Copy)]
pub struct LockPolicy {
    /// `lock_timeout` of the first attempt.
    pub first_timeout: Duration,
    /// The largest `lock_timeout` of an attempt.
    pub max_timeout: Duration,
    /// Give up (exit 75) after this much time in total.
    pub budget: Duration,
    /// Once the locks are held: the `statement_timeout` of every statement of the swap
    /// transaction, the `idle_in_transaction_session_timeout` of its session (a frozen
    /// reproject process loses its locks after this long) and the limit of the whole hold,
    /// checked between the steps. Exceeding it rolls the swap back: nothing is swapped.
    pub hold_max: Duration,
    /// With more events than this pending once the locks are held, the swap releases them,
    /// catches up outside the lock and tries again (at most 5 times, `TAIL_RETRIES`).
    pub max_tail_events: i64,
    /// Opt-in: once locking has taken this long, `pg_cancel_backend` the sessions that hold
    /// locks on the tables (ends their running statement; an idle transaction keeps its locks).
    pub cancel_blockers_after: Option<Duration>,
    /// Opt-in: once locking has taken this long, `pg_terminate_backend` them.
    pub terminate_blockers_after: Option<Duration>,
    /// Before locking, wait at most this long (in all) for the streaming standbys to replay
    /// the primary's WAL, and after the commit as long for them to replay it (src/standby.rs).
    /// Zero: do not wait for or measure standbys. Not part of `budget`.
    pub standby_wait: Duration,
}

/// How many times a swap releases its locks because the final tail was too long, catches up
/// and tries again, before it gives up (exit 75).
pub const TAIL_RETRIES: u32 = 5;

impl Default for LockPolicy {
    fn default() -> Self {
        LockPolicy {
            first_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_secs(1),
            budget: Duration::from_secs(60),
            hold_max: Duration::from_secs(10),
            max_tail_events: 10_000,
            cancel_blockers_after: None,
            terminate_blockers_after: None,
            standby_wait: Duration::from_secs(30),
        }
    }
}

/// Begins a transaction on `client` and takes ACCESS EXCLUSIVE locks on `tables`, retrying as
/// [`LockPolicy`] says. On success the transaction is open and the locks are held; returns how
/// long it took. On failure (budget spent, or `cancel` set between attempts) nothing is held.
/// Blockers cancelled or terminated (opt-in, see [`LockPolicy`]) are appended to `actions`.
///
/// The failed attempts are reported as one repeated wait ([`Reporter::waiting`]) and, once
/// it is over, a summary naming every session that blocked it ([`Reporter::wait_over`]), so
/// a terminal shows one updating line and a log one line and the summary, not one per attempt.
pub async fn lock_tables(
    client: &Client,
    tables: &[TableName],
    policy: LockPolicy,
    reporter: &dyn Reporter,
    cancel: Option<&Cancel>,
    actions: &mut Vec<serde_json::Value>,
) -> Result<Duration> {
    let mut wait = LockWait {
        key: format!("lock {}", names(tables)),
        rounds: 0,
        blockers: Vec::new(),
    };
    let started = Instant::now();
    let locked = lock_attempts(client, tables, policy, reporter, cancel, actions, &mut wait).await;
    if wait.rounds > 0 {
        let summary = locked.as_ref().ok().map(|took| wait.summary(tables, *took));
        reporter.wait_over(&wait.key, summary.as_ref());
    }
    tracing::info!(
        "lock of {}: {} after {} attempt(s) in {} ms",
        names(tables),
        if locked.is_ok() { "taken" } else { "not taken" },
        wait.rounds + u32::from(locked.is_ok()),
        started.elapsed().as_millis()
    );
    locked
}

/// The failed attempts of one [`lock_tables`], for its collapsed report.
struct LockWait {
    key: String,
    /// Failed attempts so far.
    rounds: u32,
    /// Every session seen holding a lock in the way (pid, who), the newest description kept.
    blockers: Vec<(i32, String)>,
}

impl LockWait {
    fn round(
        &mut self,
        reporter: &dyn Reporter,
        elapsed: Duration,
        reason: &Warning,
        blockers: &[(i32, String)],
    ) {
        self.rounds += 1;
        self.seen(blockers);
        reporter.waiting(&crate::progress::Waiting {
            key: &self.key,
            attempt: self.rounds,
            elapsed,
            reason,
        });
    }

    fn seen(&mut self, blockers: &[(i32, String)]) {
        for (pid, who) in blockers {
            match self.blockers.iter_mut().find(|(p, _)| p == pid) {
                Some(seen) => seen.1 = who.clone(),
                None => self.blockers.push((*pid, who.clone())),
            }
        }
    }

    /// "took the locks on `t` after 7 attempts over 12.3 s; blocked by pid 4242 (...)".
    fn summary(&self, tables: &[TableName], took: Duration) -> Warning {
        Warning::LocksTaken {
            tables: tables.iter().map(|t| t.to_string()).collect(),
            attempts: self.rounds + 1,
            took,
            blockers: self.blockers.iter().map(|(_, who)| who.clone()).collect(),
        }
    }
}

/// The blockers in words: at most three spelled out, the rest counted.
fn join_blockers(blockers: &[(i32, String)]) -> String {
    let mut text = blockers
        .iter()
        .take(3)
        .map(|(_, who)| who.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if blockers.len() > 3 {
        text.push_str(&format!(" and {} more", blockers.len() - 3));
    }
    text
}

#[allow(clippy::too_many_arguments)]
async fn lock_attempts(
    client: &Client,
    tables: &[TableName],
    policy: LockPolicy,
    reporter: &dyn Reporter,
    cancel: Option<&Cancel>,
    actions: &mut Vec<serde_json::Value>,
    wait: &mut LockWait,
) -> Result<Duration> {
    let mut started = Instant::now();
    let mut standby_left = policy.standby_wait;
    let list: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let lock_sql = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", list.join(", "));
    let mut next_slice = policy.first_timeout;
    let mut attempt = 0u32;
    loop {
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::interrupted(format!(
                "cancelled while waiting to lock {} after {attempt} attempt(s); nothing was swapped",
                names(tables)
            )));
        }
        if attempt == 0 {
            // An autovacuum worker on these tables (after a rebuild it vacuums the new and the
            // old ones) would make the first attempt wait a whole slice: cancel it up front, or
            // where we may not, let the first attempt wait long enough for the server to.
            if let Some(wait) =
                cancel_autovacuum(client, tables, reporter, actions, Duration::ZERO).await
            {
                next_slice = next_slice.max(wait + Duration::from_millis(250));
            }
        }
        // Hot standbys replay the lock: let it reach them while they are caught up, so they
        // wait for their readers instead of cancelling them (src/standby.rs). Not counted in
        // the lock budget: nothing is locked while waiting.
        if !standby_left.is_zero() {
            let t = Instant::now();
            let waited = crate::pipeline::swap::standby::before_lock(
                client,
                standby_left,
                reporter,
                cancel,
                attempt == 0,
            )
            .await;
            let spent = t.elapsed();
            standby_left = standby_left.saturating_sub(spent);
            started += spent;
            if let Some(entry) = waited {
                if attempt == 0 || entry["waited_ms"].as_i64().unwrap_or(0) >= 10 {
                    actions.push(entry);
                }
            }
        }
        attempt += 1;
        // Never let one attempt run past the budget.
        let remaining = policy.budget.saturating_sub(started.elapsed());
        let slice = next_slice.min(remaining).max(Duration::from_millis(1));
        client
            .batch_execute("BEGIN")
            .await
            .context("cannot begin the swap transaction")?;
        // The commit must not wait for its WAL flush while it holds the locks: with a busy
        // disk that wait was most of the hold's p99 (75 of 122 ms, docs/internals/benchmark-log.md). A
        // synchronous commit releases its locks only after the flush; an asynchronous one
        // right after writing its commit record. Losing it in a crash loses the whole swap
        // (rename, registry, hand-over: one transaction), never half of it, and anything
        // durable written later on the new tables flushes the WAL past it first. Before
        // anyone is told the swap succeeded, `confirm_durable` waits for the flush.
        let set = format!(
            "SET LOCAL synchronous_commit = off; SET LOCAL lock_timeout = '{}ms'",
            slice.as_millis().max(1)
        );
        client
            .batch_execute(&set)
            .await
            .context("cannot set lock_timeout")?;
        let asked = Instant::now();
        let result = client.batch_execute(&lock_sql).await;
        tracing::debug!(
            "{lock_sql} (lock_timeout {} ms): {} in {} ms",
            slice.as_millis(),
            if result.is_ok() {
                "granted"
            } else {
                "not granted"
            },
            asked.elapsed().as_millis()
        );
        match result {
            Ok(()) => {
                // Once held, a lock must never wait on anything else without a limit, no
                // statement may run past the hold budget, and if this process freezes (stopped,
                // swapped out, stuck on its side of the network) the server ends the session
                // and with it the locks, instead of stalling every reader behind them.
                let hold = policy.hold_max.as_millis().max(1);
                let limits = format!(
                    "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{hold}ms'; \
                     SET LOCAL idle_in_transaction_session_timeout = '{hold}ms'",
                    hold.min(5000)
                );
                if let Err(e) = client.batch_execute(&limits).await {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(Error::from(e).context("cannot limit the swap transaction"));
                }
                return Ok(started.elapsed());
            }
            // 40P01: the lock order (dependents_to_lock) rules out deadlocks with readers of
            // the tables and their views; one with anything else (a refresh of a materialized
            // view that reads the table, say) makes our request the victim, holding nothing:
            // it is retried like a timed-out slice.
            Err(e) if matches!(sqlstate(&e), Some("55P03" | "40P01")) => {
                let _ = client.batch_execute("ROLLBACK").await;
                let found = describe_blockers(client, tables).await.unwrap_or_default();
                let elapsed = started.elapsed();
                if elapsed >= policy.budget {
                    wait.seen(&found);
                    let seen = if wait.blockers.is_empty() {
                        "no blocker could be identified".to_string()
                    } else {
                        join_blockers(&wait.blockers)
                    };
                    return Err(Error::busy(format!(
                        "could not lock {} within {:.1}s ({attempt} attempts)",
                        names(tables),
                        elapsed.as_secs_f64()
                    ))
                    .caused_by(seen)
                    .with_hint("nothing was swapped and the rebuilt tables are kept: run `reproject swap` when the blocking sessions are gone, or raise --lock-budget"));
                }
                wait.round(
                    reporter,
                    elapsed,
                    &Warning::LockTimedOut {
                        tables: tables.iter().map(|t| t.to_string()).collect(),
                        attempt,
                        timeout: slice,
                        blockers: found.iter().map(|(_, who)| who.clone()).collect(),
                    },
                    &found,
                );
                // Autovacuum gives way to a lock request only after the request has waited
                // `deadlock_timeout` (1 s by default), longer than our early attempts: after a big
                // rebuild it vacuums the new and old tables and would hold the swap off for
                // minutes. Cancel it (what the server itself would do; it runs again later), or
                // where we may not, wait long enough once for the server to.
                let outwait_autovacuum =
                    cancel_autovacuum(client, tables, reporter, actions, elapsed).await;
                for (after, function, signal) in [
                    (
                        policy.terminate_blockers_after,
                        "pg_terminate_backend",
                        Signal::Terminated,
                    ),
                    (
                        policy.cancel_blockers_after,
                        "pg_cancel_backend",
                        Signal::Cancelled,
                    ),
                ] {
                    if after.is_some_and(|d| elapsed >= d) {
                        let done = signal_blockers(client, tables, function).await?;
                        for (pid, who) in &done {
                            reporter.warn(&Warning::BlockerSignalled {
                                signal,
                                pid: *pid,
                                session: who.clone(),
                                after: elapsed,
                            });
                            actions.push(serde_json::json!({
                                "action": signal.to_string(), "pid": pid, "session": who,
                                "after_ms": elapsed.as_millis() as i64,
                            }));
                        }
                        if !done.is_empty() {
                            // Terminating makes cancelling moot.
                            break;
                        }
                    }
                }
                // Back off with jitter so we do not retry in lockstep with another tool.
                let jitter =
                    Duration::from_millis(u64::from(std::process::id() % 7 + attempt % 5) * 10);
                let pause = (slice + jitter).min(policy.budget.saturating_sub(elapsed));
                Cancel::sleep(cancel, pause).await;
                next_slice = (next_slice * 2).min(policy.max_timeout);
                if let Some(wait) = outwait_autovacuum {
                    next_slice = next_slice.max(wait + Duration::from_millis(250));
                }
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(Error::from(e).context(format!("cannot lock {}", names(tables))));
            }
        }
    }
}

/// After a swap or rollback transaction committed without waiting for its WAL flush (see
/// [`lock_tables`]): records the lock hold of `run` (a swap's; `None` for a rollback, which
/// keeps the swap's figure) in a transaction that does wait, which flushes the WAL up to and
/// past the swap's commit record. Call it before reporting success.
pub async fn confirm_durable(client: &Client, run: i64, lock_hold_ms: Option<i64>) -> Result<()> {
    let confirmed = async {
        client
            .batch_execute("BEGIN; SET LOCAL synchronous_commit = on")
            .await?;
        client
            .execute(
                "UPDATE reproject.runs SET lock_hold_ms = coalesce($2, lock_hold_ms) WHERE id = $1",
                &[&run, &lock_hold_ms],
            )
            .await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    confirmed.map_err(|e| {
        Error::from(e)
            .context(format!(
                "run {run}: the exchange committed, but waiting for it to reach the disk failed"
            ))
            .with_hint("unless the server crashed right now, it is durable: `reproject status` shows whether it took effect")
    })
}

/// Between the steps of a swap transaction: fails (Busy) once the locks have been held for
/// longer than the policy allows; the caller rolls back, so nothing is swapped.
pub fn check_hold(held: Instant, policy: &LockPolicy, step: &str) -> Result<()> {
    let elapsed = held.elapsed();
    if elapsed > policy.hold_max {
        return Err(hold_exceeded(policy).caused_by(format!(
            "the locks were held for {} ms by the time {step}",
            elapsed.as_millis()
        )));
    }
    Ok(())
}

/// The error of a swap that held its locks too long (by the clock, or by `statement_timeout`).
pub fn hold_exceeded(policy: &LockPolicy) -> Error {
    Error::busy(format!(
        "the swap would have held its locks for longer than --lock-hold-max ({} ms); it was rolled back and nothing was swapped",
        policy.hold_max.as_millis()
    ))
    .with_hint("the rebuilt tables are kept: run `reproject swap` again (when the event rate is lower), or raise --lock-hold-max / lower --max-tail-events")
}

/// What the work under the locks decided.
pub(crate) enum Under<T> {
    /// Done: commit.
    Commit(T),
    /// More events pending than the policy allows under the lock (the count): roll back,
    /// release the locks, catch up outside and try again.
    Release(i64),
}

/// The locks as the work under them sees them.
#[derive(Clone)]
pub(crate) struct Held {
    /// How long they took to get.
    pub wait: Duration,
    /// Since when they are held (for [`check_hold`]).
    pub since: Instant,
    /// Blockers cancelled or terminated and waits for standbys while locking, to record.
    pub blockers: Vec<serde_json::Value>,
}

/// How one locked section ended; errors (the work's, a lost COMMIT that is not a lost
/// connection, the hold exceeded) are the `Err` of [`locked`].
pub(crate) enum Section<T> {
    /// The locks could not be had (budget spent, cancelled): nothing is held; the blockers met.
    NotLocked(Error, Vec<serde_json::Value>),
    /// The work was committed; the hold includes the commit.
    Committed(Held, Duration, T),
    /// The work asked to release (the pending count): rolled back.
    Released(Held, Duration, i64),
    /// The work was done and COMMIT sent, but the connection went before its answer: whether
    /// it took is for the caller to find out.
    CommitLost(Held, T, Error),
}

/// The locked section of a swap or rollback: locks `tables` in one transaction as `policy`
/// says ([`lock_tables`]), runs `work` under the locks, and commits, or rolls back when the
/// work failed or asked to release. A statement cancelled by the hold's `statement_timeout`
/// (an interruption that is not the user's) is reported as [`hold_exceeded`].
pub(crate) async fn locked<T, Fut>(
    conn: &Client,
    tables: &[TableName],
    policy: LockPolicy,
    reporter: &dyn Reporter,
    cancel: &Cancel,
    work: impl FnOnce(Held) -> Fut,
) -> Result<Section<T>>
where
    Fut: std::future::Future<Output = Result<Under<T>>>,
{
    let mut blockers = Vec::new();
    let wait = match lock_tables(conn, tables, policy, reporter, Some(cancel), &mut blockers).await
    {
        Ok(wait) => wait,
        Err(e) => return Ok(Section::NotLocked(e, blockers)),
    };
    let held = Held {
        wait,
        since: Instant::now(),
        blockers,
    };
    let ended = match work(held.clone()).await {
        Ok(Under::Commit(value)) => match conn.batch_execute("COMMIT").await {
            Ok(()) => Ok({
                tracing::info!(
                    "committed under the locks on {}: held {} ms",
                    names(tables),
                    held.since.elapsed().as_millis()
                );
                Section::Committed(held.clone(), held.since.elapsed(), value)
            }),
            Err(e) => {
                let e = Error::from(e).context("cannot commit");
                if e.is_connection_loss() {
                    Ok(Section::CommitLost(held, value, e))
                } else {
                    Err(e)
                }
            }
        },
        Ok(Under::Release(pending)) => {
            let _ = conn.batch_execute("ROLLBACK").await;
            Ok(Section::Released(
                held.clone(),
                held.since.elapsed(),
                pending,
            ))
        }
        Err(e) => {
            let _ = conn.batch_execute("ROLLBACK").await;
            Err(e)
        }
    };
    match ended {
        // Not our Ctrl-C: the statement_timeout set under the lock.
        Err(e) if e.kind == crate::error::ErrorKind::Interrupted && !cancel.is_cancelled() => {
            Err(hold_exceeded(&policy).caused_by(e.plain()))
        }
        other => other,
    }
}

fn names(tables: &[TableName]) -> String {
    tables
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends `function` (`pg_cancel_backend` or `pg_terminate_backend`) to every other session that
/// holds a lock on these tables; returns (pid, description) of those it was sent to.
async fn signal_blockers(
    client: &Client,
    tables: &[TableName],
    function: &str,
) -> Result<Vec<(i32, String)>> {
    let quoted: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let rows = client
        .query(
            &format!(
                "SELECT b.pid, b.who, {function}(b.pid) FROM ( \
                   SELECT DISTINCT a.pid, format('application `%s`, %s, transaction open for %ss, query `%s`', \
                          coalesce(a.application_name, ''), coalesce(a.state, ''), \
                          coalesce(round(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::numeric, 1), 0), \
                          coalesce(left(a.query, 80), '')) AS who \
                   FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                   WHERE l.granted AND a.pid <> pg_backend_pid() \
                     AND l.relation IN (SELECT to_regclass(x)::oid FROM unnest($1::text[]) x)) b"
            ),
            &[&quoted],
        )
        .await
        .with_context(|| format!("cannot call {function} on the blocking sessions"))?;
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, Option<bool>>(2) == Some(true))
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Autovacuum workers holding locks on these tables that the server would cancel for a lock
/// request (not those preventing transaction id wraparound): (pid, what they do).
/// Cancels the autovacuum workers that hold locks on `tables` (what the server itself does
/// once a lock request has waited `deadlock_timeout`; they run again later), each one logged
/// and appended to `actions`. Returns `deadlock_timeout` when one could not be cancelled (no
/// permission): the next lock attempt should wait longer than that, for the server to.
async fn cancel_autovacuum(
    client: &Client,
    tables: &[TableName],
    reporter: &dyn Reporter,
    actions: &mut Vec<serde_json::Value>,
    elapsed: Duration,
) -> Option<Duration> {
    let mut outwait = None;
    for (pid, what) in autovacuum_blockers(client, tables)
        .await
        .unwrap_or_default()
    {
        let cancelled = client
            .query_one("SELECT pg_cancel_backend($1)", &[&pid])
            .await
            .is_ok_and(|r| r.get::<_, bool>(0));
        if cancelled {
            reporter.warn(&Warning::AutovacuumCancelled {
                pid,
                what: what.clone(),
            });
            actions.push(serde_json::json!({
                "action": "cancelled autovacuum", "pid": pid, "session": what,
                "after_ms": elapsed.as_millis() as i64,
            }));
        } else {
            outwait = Some(deadlock_timeout(client).await);
        }
    }
    outwait
}

async fn autovacuum_blockers(client: &Client, tables: &[TableName]) -> Result<Vec<(i32, String)>> {
    let quoted: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let rows = client
        .query(
            "SELECT DISTINCT a.pid, coalesce(left(a.query, 120), '') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.granted AND a.backend_type = 'autovacuum worker' \
               AND a.query NOT LIKE '%to prevent wraparound%' \
               AND l.relation IN (SELECT to_regclass(x)::oid FROM unnest($1::text[]) x)",
            &[&quoted],
        )
        .await
        .context("cannot look for autovacuum workers")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The server's `deadlock_timeout`: how long a lock request waits before the server cancels an
/// autovacuum worker in its way.
async fn deadlock_timeout(client: &Client) -> Duration {
    client
        .query_one(
            "SELECT (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000)::bigint",
            &[],
        )
        .await
        .map(|r| Duration::from_millis(r.get::<_, i64>(0).max(0) as u64))
        .unwrap_or(Duration::from_secs(1))
}

/// Who holds locks on these tables right now: pid, user@client, application, state, age of
/// the transaction, its query; one (pid, description) each.
async fn describe_blockers(client: &Client, tables: &[TableName]) -> Result<Vec<(i32, String)>> {
    let quoted: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let rows = client
        .query(
            "SELECT DISTINCT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), \
                    coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::float8, 0), \
                    coalesce(left(a.query, 80), ''), \
                    coalesce(a.usename::text, '?') || '@' || coalesce(host(a.client_addr), 'local') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.granted AND a.pid <> pg_backend_pid() \
               AND l.relation IN (SELECT to_regclass(x)::oid FROM unnest($1::text[]) x)",
            &[&quoted],
        )
        .await
        .context("cannot read pg_locks")?;
    Ok(rows
        .iter()
        .map(|r| {
            let pid = r.get::<_, i32>(0);
            let who = format!(
                "pid {pid} ({}, application `{}`, {}, transaction open for {:.1}s, query `{}`)",
                r.get::<_, String>(5),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, f64>(3),
                r.get::<_, String>(4)
            );
            (pid, who)
        })
        .collect())
}

/// The `_old` tables of an earlier swap that this swap will retire: checked before the swap
/// transaction, locked with the live tables (so no unbounded wait), renamed out of the way
/// inside it and dropped only after it commits. Until the new swap commits they remain the
/// rollback point: a swap that cannot get its locks leaves everything as it was.
pub async fn old_tables_to_retire(
    client: &Client,
    tables: &[RunTable],
) -> Result<Vec<(TableName, TableName)>> {
    let mut retire = Vec::new();
    for t in tables {
        retire.extend(earlier_old_table(client, &t.live, &t.old).await?);
    }
    Ok(retire)
}

/// The earlier `_old` table that occupies `old`, the name the swap gives `live`, with the name
/// it is moved to (see [`old_tables_to_retire`]); none if the name is free.
pub async fn earlier_old_table(
    client: &Client,
    live: &TableName,
    old: &TableName,
) -> Result<Option<(TableName, TableName)>> {
    match helpers::ownership(client, old).await? {
        Ownership::Absent => Ok(None),
        Ownership::Ours(h) => {
            let retired = live.sibling(crate::model::ident::helper_name(
                &live.name,
                &format!("retired_{}", h.run_id.unwrap_or(0)),
            ));
            if let Ownership::Foreign = helpers::ownership(client, &retired).await? {
                return Err(Error::config(format!(
                    "table `{retired}` exists and was not created by reproject; the swap needs that name to retire `{old}`"
                )));
            }
            Ok(Some((old.clone(), retired)))
        }
        Ownership::Foreign => Err(Error::config(format!(
            "table `{old}` exists and was not created by reproject; the swap needs that name for the old `{live}`"
        ))
        .with_hint(format!("rename or drop `{old}` yourself"))),
    }
}

/// Inside the swap transaction of run `run_id`, with the locks held: moves earlier `_old`
/// tables to their retired names, registered as `retired` by this run (a leftover of an earlier
/// failed drop under that name is dropped first).
pub async fn retire_old_tables(
    client: &Client,
    run_id: i64,
    retire: &[(TableName, TableName)],
) -> Result<()> {
    // Under the swap's locks: the statements of each table go out together (pipelined, run in
    // order), one round trip instead of one each.
    for (old, retired) in retire {
        let drop_sql = format!("DROP TABLE {}", retired.quoted());
        let drop_stale = async {
            if let Ownership::Ours(_) = helpers::ownership(client, retired).await? {
                client
                    .batch_execute(&drop_sql)
                    .await
                    .with_context(|| format!("cannot drop `{retired}`"))?;
                helpers::unregister(client, retired).await?;
            }
            Ok::<_, Error>(())
        };
        drop_stale.await?;
        let record = async {
            client
                .execute(
                    "UPDATE reproject.helper_tables SET table_name = $3, kind = 'retired', retired_by = $4 \
                     WHERE table_schema = $1 AND table_name = $2",
                    &[&old.schema, &old.name, &retired.name, &run_id],
                )
                .await
                .context("cannot update reproject's helper tables")
        };
        tokio::try_join!(rename(client, old, &retired.name), record)?;
        // Its partitions (of a partitioned table) free the `p_old` names too.
        crate::pipeline::partitions::move_aside(client, retired, &format!("retired_{run_id}"))
            .await?;
    }
    Ok(())
}

/// Drops the `retired` tables of these projections: `_old` tables that a swap replaced and
/// that its drop after the commit did not reach (the process died, or the drop failed). Nothing
/// depends on them: they are no rollback point (the `_old` table that replaced them is). Called
/// under the projections' advisory lock by the next swap and rollback; a failure is a warning.
pub async fn drop_retired(
    client: &Client,
    projections: &[String],
    reporter: &dyn Reporter,
) -> Result<()> {
    for h in helpers::list(client).await? {
        if h.kind != "retired" || !projections.contains(&h.projection) {
            continue;
        }
        reporter.step(&Step::DroppingRetired {
            table: h.table.to_string(),
            retired_by: h.retired_by,
        });
        if let Err(e) = drop_helper(client, &h.table).await {
            reporter.warn(&Warning::DropFailed {
                table: h.table.to_string(),
                error: e.plain(),
            });
        }
    }
    Ok(())
}

/// Drops a registered helper table and its registry row, in one short transaction.
pub async fn drop_helper(client: &Client, table: &TableName) -> Result<()> {
    crate::db::tx::run(client, "cannot begin", None, || async {
        client
            .batch_execute("SET LOCAL lock_timeout = '5s'")
            .await
            .context("cannot set lock_timeout")?;
        // A preview schema's views of a rebuild table go with it (pipeline/preview.rs).
        crate::pipeline::preview::drop_reading(client, table, false).await?;
        client
            .batch_execute(&format!("DROP TABLE {}", table.quoted()))
            .await
            .with_context(|| format!("cannot drop `{table}`"))?;
        helpers::unregister(client, table).await
    })
    .await
}

/// Per live table, the dependents its swap redefines (shape/dependents.rs).
pub type Redefinitions =
    std::collections::BTreeMap<TableName, Vec<crate::pipeline::shape::dependents::Redefined>>;

/// Inside the swap transaction, with the locks held: `x` → `x_old`, `x_rebuild` → `x`, with
/// everything the live table carries moved to the new one (swap/exchange.rs), and the registry
/// updated. Returns the foreign keys to validate after the commit.
pub async fn swap_generation(
    client: &Client,
    prepared: &crate::pipeline::swap::exchange::Prepared,
    run_id: i64,
    tables: &[RunTable],
    redefinitions: &Redefinitions,
) -> Result<Vec<crate::pipeline::swap::exchange::Validation>> {
    use crate::pipeline::shape::redefine;
    let mut validations = Vec::new();
    for t in tables {
        if t.added {
            let siblings: Vec<&RunTable> = tables
                .iter()
                .filter(|o| o.projection == t.projection && !o.added)
                .collect();
            crate::pipeline::added::swap_in(client, t, &siblings).await?;
            continue;
        }
        let cloned_from = crate::state::runs::table_fingerprint(client, run_id, &t.live)
            .await?
            .map(|fp| (run_id, fp));
        let redefined = redefinitions.get(&t.live).map_or(&[][..], Vec::as_slice);
        if !redefined.is_empty() {
            // What a rollback of this run re-creates, read before anything changes.
            let originals = redefine::originals(client, &t.live, redefined).await?;
            redefine::record(client, run_id, &t.live, &originals).await?;
        }
        // A partitioned table: its partitions paired with their clones before anything moves.
        let parts = partition_pairs(client, &t.live, &t.rebuild, "rebuild").await?;
        validations.extend(
            crate::pipeline::swap::exchange::exchange(
                client,
                prepared,
                &crate::pipeline::swap::exchange::Exchange {
                    live: &t.live,
                    incoming: &t.rebuild,
                    parked: &t.old,
                    suffix: format!("old{run_id}"),
                    cloned_from,
                    redefined,
                    shape: shaped(client, run_id, &t.live).await?,
                    partition: false,
                },
            )
            .await?,
        );
        validations.extend(
            exchange_partitions(
                client,
                prepared,
                &t.live,
                &parts,
                "old",
                &format!("old{run_id}"),
            )
            .await?,
        );
        tokio::try_join!(
            helpers::unregister(client, &t.rebuild),
            helpers::register(
                client,
                &t.old,
                "old",
                &t.live.name,
                &t.projection,
                Some(run_id),
            )
        )?;
    }
    Ok(validations)
}

/// The partitions of `live` (if partitioned) paired with those of `incoming`, named
/// `p_<role>` (partitions.rs): read under the locks before the parent is exchanged.
async fn partition_pairs(
    client: &Client,
    live: &TableName,
    incoming: &TableName,
    role: &str,
) -> Result<Vec<(crate::pipeline::partitions::Partition, TableName)>> {
    if crate::pipeline::partitions::key(client, live)
        .await?
        .is_none()
    {
        return Ok(Vec::new());
    }
    crate::pipeline::partitions::pairs(client, live, incoming, role).await
}

/// After the exchange of a partitioned parent `live`: each partition is exchanged with its
/// counterpart like a table of its own (its grants, policies, own indexes and triggers,
/// comment…), the outgoing one parked as `p_<parked_as>`; then the partitions of `live` are
/// proven to be the ones it had, by name and bound.
async fn exchange_partitions(
    client: &Client,
    prepared: &crate::pipeline::swap::exchange::Prepared,
    live: &TableName,
    parts: &[(crate::pipeline::partitions::Partition, TableName)],
    parked_as: &str,
    suffix: &str,
) -> Result<Vec<crate::pipeline::swap::exchange::Validation>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let parked: Vec<TableName> = parts
        .iter()
        .map(|(p, _)| crate::pipeline::partitions::helper(&p.name, parked_as))
        .collect();
    // All partitions at once: their catalog reads, statements and proofs share round trips.
    let exchanges: Vec<crate::pipeline::swap::exchange::Exchange> = parts
        .iter()
        .zip(&parked)
        .map(
            |((p, incoming), parked)| crate::pipeline::swap::exchange::Exchange {
                live: &p.name,
                incoming,
                parked,
                suffix: suffix.to_string(),
                cloned_from: None,
                redefined: &[],
                shape: None,
                partition: true,
            },
        )
        .collect();
    let validations =
        crate::pipeline::swap::exchange::exchange_all(client, prepared, &exchanges).await?;
    crate::pipeline::partitions::prove(client, live, parts).await?;
    Ok(validations)
}

/// What run `run_id`'s swap redefined, as it was before, per live table: the rollback's
/// redefinitions (read before the rollback takes its locks).
pub async fn recorded_redefinitions(
    client: &Client,
    run_id: i64,
    tables: &[RunTable],
) -> Result<Redefinitions> {
    let mut out = Redefinitions::new();
    for t in tables {
        let recorded = crate::pipeline::shape::redefine::recorded(client, run_id, &t.live).await?;
        if !recorded.is_empty() {
            out.insert(t.live.clone(), recorded);
        }
    }
    Ok(out)
}

/// The shape change run `run_id` applied to `live`'s clone, as the swap proves it.
async fn shaped(
    client: &Client,
    run_id: i64,
    live: &TableName,
) -> Result<Option<crate::pipeline::swap::exchange::ShapeProof>> {
    Ok(crate::state::shapes::of_table(client, run_id, live)
        .await?
        .map(|rec| crate::pipeline::swap::exchange::ShapeProof {
            structure: rec.shaped,
            map: rec.map,
        }))
}

/// The way back from run `run_id`'s shape change of `live`: the restored table must be the
/// table as it was swapped out (its structure as recorded when the run cloned it), with what
/// is carried mapped back through the reversed column map.
async fn unshaped(
    client: &Client,
    run_id: i64,
    live: &TableName,
) -> Result<Option<crate::pipeline::swap::exchange::ShapeProof>> {
    let Some(rec) = crate::state::shapes::of_table(client, run_id, live).await? else {
        return Ok(None);
    };
    let Some(fingerprint) = crate::state::runs::table_fingerprint(client, run_id, live).await?
    else {
        return Err(Error::runtime(format!(
            "run {run_id} changed the shape of `{live}` but recorded no fingerprint of the table it swapped out"
        )));
    };
    let structure = crate::model::fingerprint::Shaped {
        fingerprint,
        // What the DDL set on kept columns goes back to what the table had.
        set_by_reshape: crate::pipeline::shape::diff::set_by_ddl_reversed(
            &rec.shaped.set_by_reshape,
            &rec.map,
        ),
    };
    Ok(Some(crate::pipeline::swap::exchange::ShapeProof {
        structure,
        map: crate::pipeline::shape::diff::reversed(&rec.map),
    }))
}

/// Inside the rollback transaction: `x` → `x_rolled_back_N`, `x_old` → `x`, by the same
/// machinery as the swap, with `redefinitions` ([`recorded_redefinitions`]) put back. Returns
/// the foreign keys to validate after the commit.
pub async fn swap_back(
    client: &Client,
    prepared: &crate::pipeline::swap::exchange::Prepared,
    run_id: i64,
    tables: &[RunTable],
    redefinitions: &Redefinitions,
) -> Result<Vec<crate::pipeline::swap::exchange::Validation>> {
    let mut validations = Vec::new();
    for t in tables {
        if t.added {
            // The old generation never had it: it leaves, parked like a replaced table.
            crate::pipeline::added::park(client, run_id, t).await?;
            continue;
        }
        let parked = crate::model::ident::rolled_back_table(&t.live, run_id);
        // What the swap redefined comes back as it was.
        let redefined = redefinitions.get(&t.live).map_or(&[][..], Vec::as_slice);
        let parts = partition_pairs(client, &t.live, &t.old, "old").await?;
        validations.extend(
            crate::pipeline::swap::exchange::exchange(
                client,
                prepared,
                &crate::pipeline::swap::exchange::Exchange {
                    live: &t.live,
                    incoming: &t.old,
                    parked: &parked,
                    suffix: format!("rb{run_id}"),
                    cloned_from: None,
                    redefined,
                    shape: unshaped(client, run_id, &t.live).await?,
                    partition: false,
                },
            )
            .await?,
        );
        validations.extend(
            exchange_partitions(
                client,
                prepared,
                &t.live,
                &parts,
                &format!("rolled_back_{run_id}"),
                &format!("rb{run_id}"),
            )
            .await?,
        );
        helpers::unregister(client, &t.old).await?;
        helpers::register(
            client,
            &parked,
            "rolled_back",
            &t.live.name,
            &t.projection,
            Some(run_id),
        )
        .await?;
    }
    Ok(validations)
}

/// The relations to lock besides the tables of the swap, in the order to lock them, before
/// those tables: the tables whose foreign keys point at a live table (the exchange re-creates
/// those keys), and every view that reads a live table or one of those relations, directly or
/// through other views (the exchange re-points the views; the outer ones are locked so that a
/// reader of an outer view cannot hold it while the swap waits for it).
///
/// The order is the order readers take them: a query on a view locks the view, then what it
/// reads (a view of a view: the outer one first); a write to a referencing table locks that
/// table, then the referenced one for the key check. Requesting the locks the same way round,
/// every relation before the relations it reads (deepest first), means no reader can hold one
/// of them while waiting for one the swap already holds: taken the other way round, a reader
/// of a view deadlocked with the swap on the primary (as soon as a lock attempt waited
/// `deadlock_timeout` behind a long query) and on hot standbys, which replay the locks in
/// the order they were taken. Materialized views are not included: reading one never reads
/// the table (and `LOCK TABLE` cannot name them).
pub async fn dependents_to_lock(client: &Client, tables: &[RunTable]) -> Result<Vec<TableName>> {
    let live: Vec<String> = tables.iter().map(|t| t.live.quoted()).collect();
    let rows = client
        .query(
            "WITH RECURSIVE live AS (SELECT to_regclass(x)::oid AS oid FROM unnest($1::text[]) x),
             reads(reader, rel) AS (
                 SELECT DISTINCT r.ev_class, d.refobjid FROM pg_depend d
                   JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
                  WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                    AND v.relkind = 'v' AND r.ev_class <> d.refobjid),
             referencing(oid) AS (
                 SELECT conrelid FROM pg_constraint
                  WHERE contype = 'f' AND confrelid IN (SELECT oid FROM live)
                    AND conrelid NOT IN (SELECT oid FROM live)),
             walk(oid, depth, path) AS (
                 SELECT oid, 0, ARRAY[oid] FROM live
                 UNION ALL
                 SELECT oid, 1, ARRAY[oid] FROM referencing
                 UNION ALL
                 SELECT r.reader, w.depth + 1, w.path || r.reader
                   FROM walk w JOIN reads r ON r.rel = w.oid
                  WHERE r.reader <> ALL (w.path) AND w.depth < 50)
             SELECT n.nspname, c.relname, max(w.depth) AS depth
               FROM walk w JOIN pg_class c ON c.oid = w.oid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE w.oid NOT IN (SELECT oid FROM live) AND c.relkind IN ('r', 'p', 'v')
              GROUP BY 1, 2
              ORDER BY depth DESC, 1, 2",
            &[&live],
        )
        .await
        .context("cannot list the views and tables that depend on the swapped tables")?;
    Ok(rows
        .iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// The relations a swap or rollback locks, in the order it locks them: `dependents` (from
/// [`dependents_to_lock`], already in order) first, then the live tables, then the helper
/// tables only reproject reads. See [`dependents_to_lock`] for why this order.
pub fn lock_order(
    dependents: Vec<TableName>,
    live: impl IntoIterator<Item = TableName>,
    helpers: impl IntoIterator<Item = TableName>,
) -> Vec<TableName> {
    let mut list = dependents;
    for t in live.into_iter().chain(helpers) {
        if !list.contains(&t) {
            list.push(t);
        }
    }
    list
}

async fn rename(client: &Client, from: &TableName, to: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "ALTER TABLE {} RENAME TO {}",
            from.quoted(),
            crate::model::ident::quote(to)
        ))
        .await
        .with_context(|| format!("cannot rename `{from}` to `{to}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_are_locked_before_the_tables_each_once() {
        let t = |n: &str| TableName::new("public", n);
        let order = lock_order(
            vec![t("v_outer"), t("v"), t("lines")],
            [t("orders"), t("v")],
            [t("orders_rebuild"), t("orders_old")],
        );
        assert_eq!(
            order,
            vec![
                t("v_outer"),
                t("v"),
                t("lines"),
                t("orders"),
                t("orders_rebuild"),
                t("orders_old")
            ]
        );
    }
    /// The swap transaction commits without waiting for its WAL flush, so it releases its
    /// locks sooner; `confirm_durable` then waits for the flush before anyone is told it
    /// succeeded. On a real server: what the setting is under the locks and where the WAL is
    /// flushed to are not visible from outside the swap's session.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_swap_commits_without_the_flush_wait_and_confirms_it_after() {
        let db = crate::test_db::TestDb::new().await;
        let mut conn = db.client().await;
        crate::state::migrate::migrate(&mut conn).await.unwrap();
        conn.batch_execute("CREATE TABLE tally (stream text PRIMARY KEY)")
            .await
            .unwrap();
        // A run row for confirm_durable to write.
        let run: i64 = conn
            .query_one(
                "INSERT INTO reproject.runs (projections, initiated_by, status, phase) \
                 VALUES ('{tally}', 'test', 'swapped', 'done') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        conn.batch_execute("SET synchronous_commit = on")
            .await
            .unwrap();
        lock_tables(
            &conn,
            &[TableName::new("public", "tally")],
            LockPolicy::default(),
            &crate::progress::Silent,
            None,
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let setting: String = conn
            .query_one("SHOW synchronous_commit", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(setting, "off", "under the swap's locks");
        // A write under the locks, committed asynchronously: its commit record is at or before
        // the insert position read right after.
        conn.batch_execute("COMMENT ON TABLE tally IS 'swapped'; COMMIT")
            .await
            .unwrap();
        let committed: String = conn
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        confirm_durable(&conn, run, Some(7)).await.unwrap();
        let flushed: bool = conn
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&committed],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            flushed,
            "the WAL is flushed past the swap's commit ({committed})"
        );
        let hold: i64 = conn
            .query_one(
                "SELECT lock_hold_ms FROM reproject.runs WHERE id = $1",
                &[&run],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(hold, 7);
        drop(conn);
        db.drop().await;
    }
}
