//! The state of `reproject run`: one live checkpoint per projection (`reproject.live_checkpoints`,
//! sql/003_live.sql) and the runner lock.
//!
//! The checkpoint is the position of the last event applied to the live tables. Three writers
//! move it, always in the transaction that changes the tables to match: a runner's batch
//! (compare-and-swap on the old value), a rebuild's swap ([`hand_over`]: the new tables hold the
//! events up to the swap position) and a rollback ([`hand_back`]: the restored tables hold what
//! they held before the swap). So whatever the runner does next, it starts from where the tables
//! really are.

use crate::db::Db;
use crate::error::{Context, Error, Result};
use crate::state::locks::{self, LockClass};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, GenericClient, Row};

/// A projection's live checkpoint, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct LiveCheckpoint {
    /// The projection.
    pub projection: String,
    /// Last event applied to the live tables; None: none yet.
    pub position: Option<i64>,
    /// Events the runners applied to the live tables (a counter).
    pub events: i64,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
    /// Who set it last: `run`, `swap`, `rollback`, `start`.
    pub set_by: String,
    /// The run that set it (a swap or rollback).
    pub set_by_run: Option<i64>,
    /// Host of the runner that holds (or held last) the projection.
    pub runner_host: Option<String>,
    /// Its process id.
    pub runner_pid: Option<i32>,
    /// When it started.
    pub runner_started_at: Option<DateTime<Utc>>,
    /// A handler error stopped the runner for this projection.
    pub stopped: bool,
    /// That error.
    pub last_error: Option<String>,
    /// Position of the event that failed.
    pub last_error_position: Option<i64>,
    /// When it failed.
    pub last_error_at: Option<DateTime<Utc>>,
    /// The handlers the runner applies when they are not its config's (after a hand-over).
    pub handlers: Option<String>,
}

/// `handlers` through `to_jsonb`: read-only commands (`status`) read a state schema that may
/// predate that column (they never migrate).
const COLUMNS: &str = "projection, position, events, updated_at, set_by, set_by_run, runner_host, \
    runner_pid, runner_started_at, stopped, last_error, last_error_position, last_error_at, \
    to_jsonb(c) ->> 'handlers'";

fn from_row(r: &Row) -> LiveCheckpoint {
    LiveCheckpoint {
        projection: r.get(0),
        position: r.get(1),
        events: r.get(2),
        updated_at: r.get(3),
        set_by: r.get(4),
        set_by_run: r.get(5),
        runner_host: r.get(6),
        runner_pid: r.get(7),
        runner_started_at: r.get(8),
        stopped: r.get(9),
        last_error: r.get(10),
        last_error_position: r.get(11),
        last_error_at: r.get(12),
        handlers: r.get(13),
    }
}

/// Whether the live checkpoint table exists (read-only commands never migrate).
pub async fn exists(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('reproject.live_checkpoints') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot check for reproject's live checkpoints")?;
    Ok(row.get(0))
}

/// The live checkpoints of these projections (those that have one).
pub async fn read(
    client: &impl GenericClient,
    projections: &[String],
) -> Result<Vec<LiveCheckpoint>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reproject.live_checkpoints c WHERE projection = ANY ($1) ORDER BY projection"
            ),
            &[&projections],
        )
        .await
        .context("cannot read the live checkpoints")?;
    Ok(rows.iter().map(from_row).collect())
}

/// Creates the checkpoint of a projection that has none (`set_by`: `start` or `swap`).
pub async fn init(
    client: &impl GenericClient,
    projection: &str,
    position: Option<i64>,
    set_by: &str,
    run: Option<i64>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO reproject.live_checkpoints (projection, position, set_by, set_by_run) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (projection) DO NOTHING",
            &[&projection, &position, &set_by, &run],
        )
        .await
        .with_context(|| format!("cannot create the live checkpoint of `{projection}`"))?;
    Ok(())
}

/// Records which runner now works on these projections, and clears `stopped`: a new runner
/// retries projections an earlier one stopped (after the handler or the event was fixed).
/// Returns the server's clock at that moment: hand-overs after it happened while this runner ran.
pub async fn claim(client: &impl GenericClient, projections: &[String]) -> Result<DateTime<Utc>> {
    client
        .execute(
            "UPDATE reproject.live_checkpoints SET runner_host = $2, runner_pid = $3, \
                 runner_started_at = now(), stopped = false, handlers = NULL WHERE projection = ANY ($1)",
            &[
                &projections,
                &crate::state::runs::hostname(),
                &(std::process::id() as i32),
            ],
        )
        .await
        .context("cannot record the runner")?;
    let row = client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .context("cannot read the server's clock")?;
    Ok(row.get(0))
}

/// Moves the checkpoints of `projections` from `old` to `new`, inside the batch's transaction.
/// Returns false, changing nothing, if any of them is not at `old` any more (a swap handed over
/// new tables, or another process moved it): the caller rolls the batch back and re-reads.
pub async fn advance(
    client: &impl GenericClient,
    projections: &[String],
    old: Option<i64>,
    new: i64,
    events: i64,
) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE reproject.live_checkpoints SET position = $3, events = events + $4, updated_at = now(), \
                 set_by = 'run', \
                 last_error = CASE WHEN last_error_position <= $3 THEN NULL ELSE last_error END, \
                 last_error_position = CASE WHEN last_error_position <= $3 THEN NULL ELSE last_error_position END \
             WHERE projection = ANY ($1) AND position IS NOT DISTINCT FROM $2 AND NOT stopped",
            &[&projections, &old, &new, &events],
        )
        .await
        .context("cannot advance the live checkpoint")?;
    Ok(n as usize == projections.len())
}

/// Records which handlers the runner applies to `projection` (None: its config's), for `status`.
pub async fn set_handlers(
    client: &impl GenericClient,
    projection: &str,
    handlers: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.live_checkpoints SET handlers = $2 WHERE projection = $1",
            &[&projection, &handlers],
        )
        .await
        .with_context(|| format!("cannot record the handlers applied to `{projection}`"))?;
    Ok(())
}

/// Records a handler error at `position`, the message `status` shows; with `stop`, stops the
/// projections too (a parked group is not stopped: its checkpoint moves again once an operator
/// decides, and a batch that moves it clears the error).
pub async fn record_error(
    client: &impl GenericClient,
    projections: &[String],
    position: i64,
    message: &str,
    stop: bool,
) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.live_checkpoints SET stopped = stopped OR $4, last_error = $3, \
                 last_error_position = $2, last_error_at = now() WHERE projection = ANY ($1)",
            &[&projections, &position, &message, &stop],
        )
        .await
        .context("cannot record the handler error")?;
    Ok(())
}

/// The swap's half of the hand-over, called inside the swap transaction after the renames: the
/// live tables of `projections` now hold every event up to `position`. A runner's next batch
/// waits for this transaction (it needs the tables), then finds its compare-and-swap failing,
/// re-reads the checkpoint and continues on the new tables from here.
pub async fn hand_over(
    client: &impl GenericClient,
    run_id: i64,
    projections: &[String],
    position: Option<i64>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO reproject.live_checkpoints AS c (projection, position, set_by, set_by_run) \
             SELECT p, $3, 'swap', $1 FROM unnest($2::text[]) p \
             ON CONFLICT (projection) DO UPDATE SET replaced_position = c.position, replaced_known = true, \
                 position = EXCLUDED.position, set_by = 'swap', set_by_run = $1, updated_at = clock_timestamp(), \
                 stopped = false",
            &[&run_id, &projections, &position],
        )
        .await
        .context("cannot hand the swap position over to the live checkpoints")?;
    Ok(())
}

/// The rollback's half, inside the rollback transaction. With `caught_up`, the rollback brought
/// the restored tables up to that position itself: the checkpoints the swap set are moved
/// there, so a runner continues exactly after it. Without, the restored tables hold what they
/// held when run `run_id` swapped them out: the checkpoint goes back to where it was then, so a
/// runner re-applies what they missed; if no live checkpoint existed then, where they stand is
/// unknown: the checkpoint is removed, so a runner stops and asks for `--from-position`.
/// `set_by_run` keeps naming the rolled-back run: a runner looks up which handlers built the
/// restored tables from it (commands/live_handlers.rs).
pub async fn hand_back(
    client: &impl GenericClient,
    run_id: i64,
    projections: &[String],
    caught_up: Option<i64>,
) -> Result<()> {
    // A state schema from before `run` existed has no live checkpoints to hand back.
    if !exists(client).await? {
        return Ok(());
    }
    let context = "cannot hand the rolled-back tables' position to the live checkpoints";
    if let Some(position) = caught_up {
        client
            .execute(
                "UPDATE reproject.live_checkpoints SET position = $3, replaced_known = false, \
                     replaced_position = NULL, set_by = 'rollback', updated_at = clock_timestamp() \
                 WHERE projection = ANY ($1) AND set_by_run = $2",
                &[&projections, &run_id, &position],
            )
            .await
            .context(context)?;
        return Ok(());
    }
    client
        .execute(
            "DELETE FROM reproject.live_checkpoints WHERE projection = ANY ($1) AND set_by_run = $2 \
                 AND NOT replaced_known",
            &[&projections, &run_id],
        )
        .await
        .context(context)?;
    client
        .execute(
            "UPDATE reproject.live_checkpoints SET position = replaced_position, replaced_known = false, \
                 replaced_position = NULL, set_by = 'rollback', updated_at = now() \
             WHERE projection = ANY ($1) AND set_by_run = $2 AND replaced_known",
            &[&projections, &run_id],
        )
        .await
        .context(context)?;
    Ok(())
}

/// Where the tables run `run_id` swapped out stood at the swap, as the live runner knew it:
/// Some(position) when a runner's checkpoint was replaced by that swap (and not moved since).
pub async fn replaced_position(
    client: &impl GenericClient,
    run_id: i64,
    projections: &[String],
) -> Result<Option<Option<i64>>> {
    if !exists(client).await? {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT DISTINCT replaced_position FROM reproject.live_checkpoints \
             WHERE projection = ANY ($1) AND set_by_run = $2 AND replaced_known",
            &[&projections, &run_id],
        )
        .await
        .context("cannot read the live checkpoints")?;
    match rows.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.get(0))),
        _ => Err(Error::runtime(format!(
            "the live checkpoints that run {run_id} replaced disagree; the restored tables do not stand at one position"
        ))),
    }
}

/// The held runner locks; dropping this closes the session and releases them.
pub type RunnerLocks = crate::state::locks::ProjectionLocks;

/// Takes the runner lock of every projection on a connection of its own, or fails with a Busy
/// error naming the session (and the runner's host and pid) that holds one.
pub async fn lock_runners(db: &Db, projections: &[String]) -> Result<RunnerLocks> {
    match locks::try_lock(db, LockClass::Runner, projections).await? {
        Ok(held) => Ok(held),
        Err((name, holder)) => {
            let mut holder = holder;
            // The runner records its host and OS pid in its checkpoint row when it starts.
            if let Ok(client) = db.dedicated().await {
                if let Some(process) = runner_process(&client, &name).await {
                    holder = format!("{}; {process})", holder.trim_end_matches(')'));
                }
            }
            Err(Error::busy(format!(
                "projection `{name}` is already kept live by another `reproject run`{holder}"
            ))
            .with_hint("only one runner per projection; stop the other one first (SIGTERM), or run this one for other projections"))
        }
    }
}

/// Whether a runner holds the lock of a projection right now.
pub async fn runner_up(client: &impl GenericClient, projection: &str) -> Result<bool> {
    locks::is_locked(client, LockClass::Runner, projection).await
}

/// "reproject process PID on HOST", from the runner's checkpoint row, if recorded.
async fn runner_process(client: &Client, name: &str) -> Option<String> {
    if !exists(client).await.unwrap_or(false) {
        return None;
    }
    let r = client
        .query_opt(
            "SELECT runner_host, runner_pid FROM reproject.live_checkpoints WHERE projection = $1",
            &[&name],
        )
        .await
        .ok()??;
    let host: Option<String> = r.get(0);
    let os_pid: Option<i32> = r.get(1);
    os_pid.map(|pid| {
        format!(
            "reproject process {pid} on {}",
            host.as_deref().unwrap_or("an unknown host")
        )
    })
}
