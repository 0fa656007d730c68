//! Runs, their checkpoints and their tables: the audit trail and the resume point.

use crate::error::{Context, Error, Result};
use crate::model::fingerprint::Fingerprint;
use crate::model::ident::TableName;
use crate::read::source::Cursor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use tokio_postgres::{GenericClient, Row};

/// Where a run stands, stored in `reproject.runs.status` and shown in JSON output as the same
/// lowercase words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Being rebuilt (or its process died: `status` tells by the run's guard).
    Running,
    /// Stopped by `--max-events`; `rebuild --resume` continues it.
    Paused,
    /// Rebuilt and caught up; `reproject swap` swaps it in.
    AwaitingSwap,
    /// The health checks refused the swap; the rebuilt tables are kept.
    ChecksFailed,
    /// Failed; `rebuild --resume` may continue it.
    Failed,
    /// Stopped on request (Ctrl-C, SIGTERM, `reproject cancel`).
    Cancelled,
    /// Swapped in.
    Swapped,
    /// Swapped in, then rolled back.
    RolledBack,
    /// Replaced by a later run of the same projections.
    Superseded,
    /// A status this version does not know (written by a newer reproject): kept as read, so
    /// `status` and `history` still show it.
    Other(String),
}

/// Statuses after which a run is finished with for good.
pub const FINAL_STATUSES: &[RunStatus] = &[
    RunStatus::Swapped,
    RunStatus::RolledBack,
    RunStatus::Superseded,
];
/// Statuses of a run whose rebuild tables wait for `reproject swap`.
pub const SWAPPABLE_STATUSES: &[RunStatus] = &[
    RunStatus::Paused,
    RunStatus::AwaitingSwap,
    RunStatus::ChecksFailed,
];

impl RunStatus {
    /// The word stored in the state schema and shown in JSON output.
    pub fn as_str(&self) -> &str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::AwaitingSwap => "awaiting_swap",
            RunStatus::ChecksFailed => "checks_failed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Swapped => "swapped",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::Superseded => "superseded",
            RunStatus::Other(s) => s,
        }
    }

    /// Whether the run is finished with for good.
    pub fn is_final(&self) -> bool {
        FINAL_STATUSES.contains(self)
    }

    /// Whether the run's rebuild tables wait for `reproject swap`.
    pub fn is_swappable(&self) -> bool {
        SWAPPABLE_STATUSES.contains(self)
    }
}

/// The stored words of `statuses`, for a query parameter.
fn words(statuses: &[RunStatus]) -> Vec<&str> {
    statuses.iter().map(RunStatus::as_str).collect()
}

impl std::str::FromStr for RunStatus {
    type Err = std::convert::Infallible;

    /// Never fails: an unknown word becomes [`RunStatus::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => RunStatus::Running,
            "paused" => RunStatus::Paused,
            "awaiting_swap" => RunStatus::AwaitingSwap,
            "checks_failed" => RunStatus::ChecksFailed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            "swapped" => RunStatus::Swapped,
            "rolled_back" => RunStatus::RolledBack,
            "superseded" => RunStatus::Superseded,
            other => RunStatus::Other(other.to_string()),
        })
    }
}

/// Where a run is or stopped, stored in `reproject.runs.phase`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Creating the `_rebuild` tables.
    Clone,
    /// Replaying the events up to the target.
    Replay,
    /// Catching up with the events written since.
    CatchUp,
    /// Waiting (`--no-swap`, `--swap-at`) before the swap.
    Waiting,
    /// Running the health checks.
    Checks,
    /// Swapping.
    Swap,
    /// Swapped.
    Done,
    /// A phase this version does not know (written by a newer reproject), kept as read.
    Other(String),
}

impl Phase {
    /// The word stored in the state schema and shown in JSON output.
    pub fn as_str(&self) -> &str {
        match self {
            Phase::Clone => "clone",
            Phase::Replay => "replay",
            Phase::CatchUp => "catch_up",
            Phase::Waiting => "waiting",
            Phase::Checks => "checks",
            Phase::Swap => "swap",
            Phase::Done => "done",
            Phase::Other(s) => s,
        }
    }
}

impl std::str::FromStr for Phase {
    type Err = std::convert::Infallible;

    /// Never fails: an unknown word becomes [`Phase::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "clone" => Phase::Clone,
            "replay" => Phase::Replay,
            "catch_up" => Phase::CatchUp,
            "waiting" => Phase::Waiting,
            "checks" => Phase::Checks,
            "swap" => Phase::Swap,
            "done" => Phase::Done,
            other => Phase::Other(other.to_string()),
        })
    }
}

/// Both serialize as their stored word, so JSON output reads as it always did.
macro_rules! as_word {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        /// Compares with the stored word.
        impl PartialEq<&str> for $t {
            fn eq(&self, word: &&str) -> bool {
                self.as_str() == *word
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = String::deserialize(d)?;
                Ok(word.parse().unwrap_or_else(|never| match never {}))
            }
        }
    };
}
as_word!(RunStatus);
as_word!(Phase);

/// A run's `options` column: what it was started with and what it recorded on the way. Every
/// field is optional, so a run recorded by an older version reads, and a value with only some
/// fields set is the patch [`merge_options`] applies; keys this version does not know are
/// kept as read (`other`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// `--batch-size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    /// The projections built UNLOGGED (`build_unlogged`), when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_unlogged: Option<BTreeSet<String>>,
    /// The external projector's range in flight: set (`Some(Some)`) before its command
    /// starts, cleared (`Some(None)`, recorded as null) with the range's checkpoint
    /// (external.rs).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_in_flight: Option<Option<InFlight>>,
    /// `--jobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// The swap's lock budget, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_budget_ms: Option<u64>,
    /// `--max-events` (`Some(None)`, recorded as null, when not given).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_events: Option<Option<i64>>,
    /// `--no-swap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_swap: Option<bool>,
    /// The partial rebuild (`--streams`, `--from-position`), as `engine::Partial` records it
    /// (read with `Partial::of_run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Value>,
    /// Set in the transaction that copied the rows a partial rebuild keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_seeded: Option<bool>,
    /// What the swap of a `--streams` rebuild did with the rows of the other streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_swap: Option<PartialSwap>,
    /// `--preview-schema`: the schema of views reading the run's tables (pipeline/preview.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_schema: Option<String>,
    /// `--set-batch-size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_batch_size: Option<i64>,
    /// Set when a swap went ahead although checks failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_checks: Option<bool>,
    /// `pg_postmaster_start_time()` when the run created UNLOGGED rebuild tables: a resume
    /// refuses them after a server restart (clone.rs).
    #[serde(
        rename = "unlogged_build_server_start",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unlogged_since: Option<String>,
    /// Keys this version does not know, kept as read.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An external projector's range that started and has not been recorded yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// The projection whose command runs.
    pub projection: String,
    /// The range's start (exclusive).
    pub from: i64,
    /// The range's end (inclusive).
    pub to: i64,
}

/// How the swap of a `--streams` rebuild brought the other streams' rows up to date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialSwap {
    /// Rows of the other streams kept from the live tables.
    pub rows_kept: i64,
    /// Rows removed since the early copy.
    pub rows_deleted: i64,
    /// Rows added since the early copy.
    pub rows_inserted: i64,
    /// How long the comparison under the lock took.
    pub copy_ms: i64,
    /// Events of the other streams applied under the lock.
    pub other_stream_events: i64,
}

/// A key that is present (even as null) is `Some`, so a patch can clear a field.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl RunOptions {
    /// Reads the column; a value whose known keys do not have the expected types is kept
    /// whole in `other` (shown by `history`, used by nothing).
    pub fn from_json(value: Value) -> RunOptions {
        serde_json::from_value(value.clone()).unwrap_or_else(|_| RunOptions {
            other: match value {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            ..RunOptions::default()
        })
    }

    /// The column's JSON (only the fields that are set).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("run options serialize")
    }
}

/// One run, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The run's id.
    pub id: i64,
    /// What kind of run (`rebuild`).
    pub kind: String,
    /// The projections it rebuilds, in application order.
    pub projections: Vec<String>,
    /// Why (`--reason`).
    pub reason: Option<String>,
    /// Who (`--initiated-by`, else the OS user).
    pub initiated_by: String,
    /// The database role it logged in as (`session_user`; None for runs recorded before
    /// reproject recorded it).
    pub db_session_user: Option<String>,
    /// The database role its statements ran as (`current_user`: differs after `SET ROLE`).
    pub db_current_user: Option<String>,
    /// Host of the process that ran it.
    pub host: Option<String>,
    /// Its process id.
    pub pid: Option<i32>,
    /// `running`, `paused`, `awaiting_swap`, `checks_failed`, `failed`, `cancelled`, `swapped`, `rolled_back`, `superseded`.
    pub status: RunStatus,
    /// Where it is or stopped: `replay`, `catch_up`, `waiting`, `checks`, `swap`.
    pub phase: Phase,
    /// The options it was started with (batch size, `--no-swap`, …) and what it recorded on
    /// the way.
    pub options: RunOptions,
    /// Per projection, the digest of the handlers that built its tables.
    pub handler_digests: Value,
    /// Where the replay started.
    pub start_position: Option<i64>,
    /// The head the replay aimed for.
    pub target_position: Option<i64>,
    /// The position the swapped tables hold every event up to.
    pub swap_position: Option<i64>,
    /// Events applied.
    pub events_applied: i64,
    /// Per live table, its row count before the rebuild.
    pub rows_before: Value,
    /// Per live table, the rebuilt row count.
    pub rows_after: Value,
    /// The health checks and their results.
    pub checks: Value,
    /// How long the swap waited for its locks.
    pub lock_wait_ms: Option<i64>,
    /// How long it held them.
    pub lock_hold_ms: Option<i64>,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it swapped.
    pub swapped_at: Option<DateTime<Utc>>,
    /// When its swap was rolled back.
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Foreign keys the swap re-created `NOT VALID` and could not validate afterwards.
    pub unvalidated_foreign_keys: Vec<String>,
    /// The faults the run survived (lost connections it resumed after, batches retried after
    /// a transient error): JSON objects with `kind`, `at` and `detail`; empty for runs
    /// recorded before reproject recorded them.
    pub faults: Value,
}

const COLUMNS: &str = "id, kind, projections, reason, initiated_by, host, pid, status, phase, options, \
    handler_digests, start_position, target_position, swap_position, events_applied, rows_before, \
    rows_after, checks, lock_wait_ms, lock_hold_ms, error, started_at, swapped_at, rolled_back_at, finished_at, unvalidated_foreign_keys, \
    to_jsonb(runs) ->> 'db_session_user', to_jsonb(runs) ->> 'db_current_user', \
    COALESCE(to_jsonb(runs) -> 'faults', '[]'::jsonb)";
// The roles (migration 014) and faults (017) are read through the row's JSON so that `status` and `history`,
// which never migrate, still read a state schema from before it.

/// A status or phase column: an unknown word is kept as read, never a panic.
fn word<T: std::str::FromStr<Err = std::convert::Infallible>>(r: &Row, i: usize) -> T {
    let text: String = r.get(i);
    text.parse().unwrap_or_else(|never| match never {})
}

fn from_row(r: &Row) -> Run {
    Run {
        id: r.get(0),
        kind: r.get(1),
        projections: r.get(2),
        reason: r.get(3),
        initiated_by: r.get(4),
        host: r.get(5),
        pid: r.get(6),
        status: word(r, 7),
        phase: word(r, 8),
        options: RunOptions::from_json(r.get(9)),
        handler_digests: r.get(10),
        start_position: r.get(11),
        target_position: r.get(12),
        swap_position: r.get(13),
        events_applied: r.get(14),
        rows_before: r.get(15),
        rows_after: r.get(16),
        checks: r.get(17),
        lock_wait_ms: r.get(18),
        lock_hold_ms: r.get(19),
        error: r.get(20),
        started_at: r.get(21),
        swapped_at: r.get(22),
        rolled_back_at: r.get(23),
        finished_at: r.get(24),
        unvalidated_foreign_keys: r.get(25),
        db_session_user: r.get(26),
        db_current_user: r.get(27),
        faults: r.get(28),
    }
}

/// What a new run records up front.
pub struct NewRun<'a> {
    /// The projections, in application order.
    pub projections: &'a [String],
    /// Why.
    pub reason: Option<&'a str>,
    /// Who.
    pub initiated_by: &'a str,
    /// The options it is started with.
    pub options: RunOptions,
    /// Per projection, the digest of its handlers (or Rust projection version).
    pub handler_digests: Value,
    /// Per projection, the handler file's text (null for a Rust projection).
    pub handler_sources: Value,
}

/// Records a new run; returns its id.
pub async fn insert(client: &impl GenericClient, new: &NewRun<'_>) -> Result<i64> {
    let host = hostname();
    let pid = std::process::id() as i32;
    let row = client
        .query_one(
            "INSERT INTO reproject.runs (projections, reason, initiated_by, host, pid, status, phase, \
                 options, handler_digests, handler_sources, db_session_user, db_current_user) \
             VALUES ($1, $2, $3, $4, $5, 'running', 'clone', $6, $7, $8, session_user, current_user) RETURNING id",
            &[
                &new.projections,
                &new.reason,
                &new.initiated_by,
                &host,
                &pid,
                &new.options.to_json(),
                &new.handler_digests,
                &new.handler_sources,
            ],
        )
        .await
        .context("cannot record the run")?;
    let id = row.get(0);
    log_phase(id, Phase::Clone.as_str());
    Ok(id)
}

pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The run `id`, if recorded.
pub async fn get(client: &impl GenericClient, id: i64) -> Result<Option<Run>> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM reproject.runs WHERE id = $1"),
            &[&id],
        )
        .await
        .context("cannot read the run")?;
    Ok(row.as_ref().map(from_row))
}

/// Runs, newest first.
pub async fn list(client: &impl GenericClient, limit: i64) -> Result<Vec<Run>> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM reproject.runs ORDER BY id DESC LIMIT $1"),
            &[&limit],
        )
        .await
        .context("cannot read the run history")?;
    Ok(rows.iter().map(from_row).collect())
}

/// Runs that touch any of `projections` (every run with None), newest first.
pub async fn list_touching(
    client: &impl GenericClient,
    projections: Option<&[String]>,
    limit: i64,
) -> Result<Vec<Run>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reproject.runs \
                 WHERE $1::text[] IS NULL OR projections && $1::text[] ORDER BY id DESC LIMIT $2"
            ),
            &[&projections, &limit],
        )
        .await
        .context("cannot read the run history")?;
    Ok(rows.iter().map(from_row).collect())
}

/// The newest run that includes a projection.
pub async fn latest_for(client: &impl GenericClient, projection: &str) -> Result<Option<Run>> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM reproject.runs WHERE $1 = ANY (projections) ORDER BY id DESC LIMIT 1"),
            &[&projection],
        )
        .await
        .context("cannot read the runs")?;
    Ok(row.as_ref().map(from_row))
}

/// Runs that could still be swapped, newest first.
pub async fn swappable(client: &impl GenericClient) -> Result<Vec<Run>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reproject.runs WHERE status = ANY ($1) ORDER BY id DESC"
            ),
            &[&words(SWAPPABLE_STATUSES)],
        )
        .await
        .context("cannot read the runs")?;
    Ok(rows.iter().map(from_row).collect())
}

/// Asks a running run to stop after its current batch (`reproject cancel`).
pub async fn request_cancel(client: &impl GenericClient, id: i64, by: &str) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET cancel_requested_at = now(), cancel_requested_by = $2 WHERE id = $1",
            &[&id, &by],
        )
        .await
        .context("cannot record the cancellation request")?;
    Ok(())
}

/// Whether someone asked this run to stop; the request is consumed (a resumed run starts clean).
/// It never waits for the run's row: a stream lane of this same process may hold it in an open
/// transaction that only commits once the caller, polling here, lets the lanes go on (the two
/// would wait for each other forever); a locked row is looked at again at the next poll.
pub async fn take_cancel_request(client: &impl GenericClient, id: i64) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "UPDATE reproject.runs SET cancel_requested_at = NULL \
             WHERE id = (SELECT id FROM reproject.runs \
                          WHERE id = $1 AND cancel_requested_at IS NOT NULL \
                          FOR UPDATE SKIP LOCKED) \
             RETURNING coalesce(cancel_requested_by, '?')",
            &[&id],
        )
        .await
        .context("cannot read cancellation requests")?;
    Ok(row.map(|r| r.get(0)))
}

/// Runs that `rebuild --resume` may continue (anything not finished for good), newest first.
pub async fn resumable(client: &impl GenericClient) -> Result<Vec<Run>> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM reproject.runs WHERE NOT (status = ANY ($1)) ORDER BY id DESC"),
            &[&words(FINAL_STATUSES)],
        )
        .await
        .context("cannot read the runs")?;
    Ok(rows.iter().map(from_row).collect())
}

/// The newest swapped run that includes a projection.
pub async fn latest_swapped_for(
    client: &impl GenericClient,
    projection: &str,
) -> Result<Option<Run>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM reproject.runs WHERE $1 = ANY (projections) AND status IN ('swapped', 'rolled_back') \
                 ORDER BY coalesce(swapped_at, started_at) DESC, id DESC LIMIT 1"
            ),
            &[&projection],
        )
        .await
        .context("cannot read the runs")?;
    Ok(row.as_ref().map(from_row))
}

/// The newest swapped (or rolled back) run of any projection.
pub async fn latest_swapped(client: &impl GenericClient) -> Result<Option<Run>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM reproject.runs WHERE status IN ('swapped', 'rolled_back') \
                 ORDER BY coalesce(swapped_at, started_at) DESC, id DESC LIMIT 1"
            ),
            &[],
        )
        .await
        .context("cannot read the runs")?;
    Ok(row.as_ref().map(from_row))
}

/// Marks earlier unfinished runs that touch any of these projections as superseded: their
/// rebuild tables are about to be replaced. Only called while holding the projections' locks,
/// so a `running` run found here is one whose process died.
pub async fn supersede(
    client: &impl GenericClient,
    projections: &[String],
    by: i64,
) -> Result<u64> {
    client
        .execute(
            "UPDATE reproject.runs SET status = 'superseded', finished_at = coalesce(finished_at, now()), \
                 error = coalesce(error || '; ', '') || 'superseded by run ' || $2 \
             WHERE id <> $2 AND projections && $1 AND NOT (status = ANY ($3))",
            &[&projections, &by, &words(FINAL_STATUSES)],
        )
        .await
        .context("cannot update earlier runs")
}

/// Records the phase a run is in. With `-v`, logs it with how long the phase before took.
pub async fn set_phase(client: &impl GenericClient, id: i64, phase: Phase) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET phase = $2 WHERE id = $1",
            &[&id, &phase.as_str()],
        )
        .await
        .context("cannot record the run's phase")?;
    log_phase(id, phase.as_str());
    Ok(())
}

/// The phase each run of this process is in and since when: the one place every phase
/// change passes, so `-v` gets each phase's duration without timers in every command.
fn log_phase(id: i64, phase: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static SINCE: Mutex<Option<HashMap<i64, (String, Instant)>>> = Mutex::new(None);
    let mut since = SINCE.lock().unwrap_or_else(|e| e.into_inner());
    let previous = since
        .get_or_insert_with(HashMap::new)
        .insert(id, (phase.to_string(), Instant::now()));
    match previous {
        Some((before, at)) => tracing::info!(
            run = id,
            phase,
            previous = before.as_str(),
            previous_ms = at.elapsed().as_millis() as u64,
            "run {id}: phase {phase} (phase {before} took {} ms)",
            at.elapsed().as_millis()
        ),
        None => tracing::info!(run = id, phase, "run {id}: phase {phase}"),
    }
}

/// Records a status; statuses other than `running` stamp `finished_at`. Fenced: only the
/// process that holds the run's guard may change its status (state/fence.rs), so a stale
/// process can never set a run another process went on with (e.g. swapped) back.
pub async fn set_status(
    client: &tokio_postgres::Client,
    id: i64,
    status: RunStatus,
    error: Option<&str>,
) -> Result<()> {
    crate::db::tx::run(client, "cannot record the run's status", None, || async {
        let projections: Vec<String> = client
            .query_opt(
                "SELECT projections FROM reproject.runs WHERE id = $1",
                &[&id],
            )
            .await
            .context("cannot read the run")?
            .map(|r| r.get(0))
            .unwrap_or_default();
        crate::state::fence::prove(
            client,
            crate::state::locks::LockClass::Projection,
            &projections,
        )
        .await?;
        client
            .execute(
                "UPDATE reproject.runs SET status = $2, error = coalesce($3, error), \
                     finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE now() END WHERE id = $1",
                &[&id, &status.as_str(), &error],
            )
            .await
            .context("cannot record the run's status")?;
        Ok(())
    })
    .await
}

/// Sets one of the JSON figure columns (`rows_before`, `rows_after`, `checks`).
pub async fn set_json(
    client: &impl GenericClient,
    id: i64,
    column: JsonColumn,
    value: &Value,
) -> Result<()> {
    let column = match column {
        JsonColumn::RowsBefore => "rows_before",
        JsonColumn::RowsAfter => "rows_after",
        JsonColumn::Checks => "checks",
    };
    client
        .execute(
            &format!("UPDATE reproject.runs SET {column} = $2 WHERE id = $1"),
            &[&id, value],
        )
        .await
        .with_context(|| format!("cannot record the run's {column}"))?;
    Ok(())
}

/// The JSON columns of a run written as a whole.
#[derive(Debug, Clone, Copy)]
pub enum JsonColumn {
    /// `rows_before`.
    RowsBefore,
    /// `rows_after`.
    RowsAfter,
    /// `checks`.
    Checks,
}

/// Records the position the replay runs up to (the head when it started or resumed).
pub async fn set_target(client: &impl GenericClient, id: i64, target: Option<i64>) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET target_position = $2 WHERE id = $1",
            &[&id, &target],
        )
        .await
        .context("cannot record the run's target position")?;
    Ok(())
}

/// Sets the fields `patch` has (the others are kept) in the run's recorded options, e.g.
/// `skip_checks` when a swap overrides checks.
pub async fn merge_options(client: &impl GenericClient, id: i64, patch: &RunOptions) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET options = options || $2 WHERE id = $1",
            &[&id, &patch.to_json()],
        )
        .await
        .context("cannot record the run's options")?;
    Ok(())
}

/// Records a completed swap (called inside the swap transaction).
pub async fn set_swapped(
    client: &impl GenericClient,
    id: i64,
    swap_position: Option<i64>,
    lock_wait_ms: i64,
    lock_hold_ms: i64,
) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET status = 'swapped', phase = 'done', swap_position = $2, error = NULL, \
                 lock_wait_ms = $3, lock_hold_ms = $4, swapped_at = now(), finished_at = now() WHERE id = $1",
            &[&id, &swap_position, &lock_wait_ms, &lock_hold_ms],
        )
        .await
        .context("cannot record the swap")?;
    Ok(())
}

/// Appends one lock attempt of a swap or rollback to the run's `lock_attempts` (sql/006).
pub async fn add_lock_attempt(client: &impl GenericClient, id: i64, attempt: &Value) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET lock_attempts = lock_attempts || jsonb_build_array($2::jsonb || \
                 jsonb_build_object('at', clock_timestamp())) WHERE id = $1",
            &[&id, attempt],
        )
        .await
        .context("cannot record the lock attempt")?;
    Ok(())
}

/// Records that the run's swap was rolled back.
pub async fn set_rolled_back(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET status = 'rolled_back', rolled_back_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .context("cannot record the rollback")?;
    Ok(())
}

/// Adds to the run's event count (in the batch transaction, so it stays exact).
pub async fn add_events(client: &impl GenericClient, id: i64, events: i64) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs SET events_applied = events_applied + $2 WHERE id = $1",
            &[&id, &events],
        )
        .await
        .context("cannot record the run's progress")?;
    Ok(())
}

// ---- checkpoints ----

/// Creates the checkpoints of a new run's projections at `position`.
pub async fn init_checkpoints(
    client: &impl GenericClient,
    run: i64,
    projections: &[String],
    position: Option<i64>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO reproject.checkpoints (run_id, projection, position) SELECT $1, p, $3 FROM unnest($2::text[]) p",
            &[&run, &projections, &position],
        )
        .await
        .context("cannot create the run's checkpoints")?;
    Ok(())
}

/// The run's checkpoint: all projections of a run advance together, so they share a position.
pub async fn checkpoint(client: &impl GenericClient, run: i64) -> Result<Option<i64>> {
    let rows = client
        .query(
            "SELECT DISTINCT position FROM reproject.checkpoints WHERE run_id = $1",
            &[&run],
        )
        .await
        .context("cannot read the run's checkpoint")?;
    match rows.as_slice() {
        [one] => Ok(one.get(0)),
        [] => Ok(None),
        _ => Err(Error::runtime(format!(
            "run {run}: its projections' checkpoints disagree; the state schema was changed by hand"
        ))),
    }
}

/// The run's checkpoint with its transaction id (`xid8` mode), shared by its projections.
pub async fn cursor(client: &impl GenericClient, run: i64) -> Result<Cursor> {
    let rows = client
        .query(
            "SELECT DISTINCT position, transaction_id::text FROM reproject.checkpoints WHERE run_id = $1",
            &[&run],
        )
        .await
        .context("cannot read the run's checkpoint")?;
    match rows.as_slice() {
        [one] => {
            let tx: Option<String> = one.get(1);
            let tx = tx.map(|t| t.parse::<u64>()).transpose().map_err(|_| {
                Error::runtime(format!("run {run}: unreadable checkpoint transaction id"))
            })?;
            Ok(Cursor {
                tx,
                position: one.get(0),
            })
        }
        [] => Ok(Cursor::default()),
        _ => Err(Error::runtime(format!(
            "run {run}: its projections' checkpoints disagree; the state schema was changed by hand"
        ))),
    }
}

/// Moves the checkpoint of every projection of the run from `old` to `new`, or fails if any of
/// them is not at `old` any more (someone else moved it: never apply a batch twice). The
/// compare-and-swap covers the transaction id too, so in `xid8` mode two runs can never both apply the events after the same pair.
pub async fn advance_cursor(
    client: &impl GenericClient,
    run: i64,
    projections: &[String],
    old: &Cursor,
    new: &Cursor,
    events: i64,
) -> Result<()> {
    let old_tx = old.tx.map(|t| t.to_string());
    let new_tx = new.tx.map(|t| t.to_string());
    let n = client
        .execute(
            "UPDATE reproject.checkpoints SET position = $4, transaction_id = $6::text::xid8, \
                 events = events + $5, updated_at = now() \
             WHERE run_id = $1 AND projection = ANY ($2) AND position IS NOT DISTINCT FROM $3 \
               AND transaction_id IS NOT DISTINCT FROM $7::text::xid8",
            &[
                &run,
                &projections,
                &old.position,
                &new.position,
                &events,
                &new_tx,
                &old_tx,
            ],
        )
        .await
        .context("cannot advance the checkpoint")?;
    if n as usize != projections.len() {
        return Err(Error::runtime(format!(
            "run {run}: the checkpoint moved under us (expected {}); another process is applying events to the same tables",
            old.describe()
        )));
    }
    add_events(client, run, events).await
}

// ---- run tables ----

/// A live table of a run and the helper names derived for it.
#[derive(Debug, Clone, Serialize)]
pub struct RunTable {
    /// The projection that owns it.
    pub projection: String,
    /// The live table.
    pub live: TableName,
    /// Its rebuild clone (`x_rebuild`).
    pub rebuild: TableName,
    /// Where the swap keeps the replaced table (`x_old`).
    pub old: TableName,
    /// The table does not exist live: the run creates it from its `create` definition, and
    /// its swap has nothing to replace (pipeline/added.rs).
    pub added: bool,
}

/// Records a table of the run with its fingerprint at the clone (none for a table the run
/// adds: there is no live table; its fingerprint column stays NULL).
pub async fn add_table(
    client: &impl GenericClient,
    run: i64,
    t: &RunTable,
    fingerprint: Option<&Fingerprint>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO reproject.run_tables (run_id, projection, table_schema, live_name, rebuild_name, old_name, fingerprint, added) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&run, &t.projection, &t.live.schema, &t.live.name, &t.rebuild.name, &t.old.name, &fingerprint.map(tokio_postgres::types::Json), &t.added],
        )
        .await
        .context("cannot record the run's tables")?;
    Ok(())
}

/// The fingerprint of a live table recorded when the run started.
pub async fn table_fingerprint(
    client: &impl GenericClient,
    run: i64,
    live: &TableName,
) -> Result<Option<Fingerprint>> {
    let row = client
        .query_opt(
            "SELECT fingerprint FROM reproject.run_tables WHERE run_id = $1 AND table_schema = $2 AND live_name = $3",
            &[&run, &live.schema, &live.name],
        )
        .await
        .context("cannot read the run's tables")?;
    // A run recorded before fingerprints were (sql/004_fingerprints.sql) has NULL.
    let Some(stored) = row.and_then(|r| r.get::<_, Option<Value>>(0)) else {
        return Ok(None);
    };
    serde_json::from_value(stored).map(Some).map_err(|e| {
        Error::runtime(format!(
            "reproject.run_tables: the fingerprint run {run} recorded of `{live}` cannot be read: {e}"
        ))
    })
}

/// The tables of run `run`.
pub async fn tables(client: &impl GenericClient, run: i64) -> Result<Vec<RunTable>> {
    let rows = client
        .query(
            // `added` through to_jsonb: `status` and `history` never migrate, and read an older
            // schema without the column (sql/023).
            "SELECT projection, table_schema, live_name, rebuild_name, old_name, \
                    coalesce((to_jsonb(t) ->> 'added')::boolean, false) \
             FROM reproject.run_tables t \
             WHERE run_id = $1 ORDER BY projection, table_schema, live_name",
            &[&run],
        )
        .await
        .context("cannot read the run's tables")?;
    Ok(rows
        .iter()
        .map(|r| {
            let schema: String = r.get(1);
            RunTable {
                projection: r.get(0),
                live: TableName::new(schema.clone(), r.get::<_, String>(2)),
                rebuild: TableName::new(schema.clone(), r.get::<_, String>(3)),
                old: TableName::new(schema, r.get::<_, String>(4)),
                added: r.get(5),
            }
        })
        .collect())
}

// ---- the swapped-out generation (rollback) ----

/// Where a rollback's catch-up left the tables run `run` swapped out (sql/006); None: it has
/// not applied anything to them yet.
pub async fn old_cursor(client: &impl GenericClient, run: i64) -> Result<Option<Cursor>> {
    let row = client
        .query_one(
            "SELECT old_position, old_transaction_id::text FROM reproject.runs WHERE id = $1",
            &[&run],
        )
        .await
        .context("cannot read where the swapped-out tables stand")?;
    let position: Option<i64> = row.get(0);
    let tx: Option<String> = row.get(1);
    let tx = tx
        .map(|t| t.parse::<u64>())
        .transpose()
        .map_err(|_| Error::runtime(format!("run {run}: unreadable old_transaction_id")))?;
    Ok((position.is_some() || tx.is_some()).then_some(Cursor { tx, position }))
}

/// Moves where the swapped-out tables stand from `old` to `new`, in the transaction of the
/// batch that got them there; fails if another process moved it (never apply a batch twice).
pub async fn advance_old_cursor(
    client: &impl GenericClient,
    run: i64,
    old: Option<&Cursor>,
    new: &Cursor,
) -> Result<()> {
    let old_position = old.and_then(|c| c.position);
    let old_tx = old.and_then(|c| c.tx).map(|t| t.to_string());
    let new_tx = new.tx.map(|t| t.to_string());
    let n = client
        .execute(
            "UPDATE reproject.runs SET old_position = $2, old_transaction_id = $3::text::xid8 \
             WHERE id = $1 AND old_position IS NOT DISTINCT FROM $4 \
               AND old_transaction_id IS NOT DISTINCT FROM $5::text::xid8",
            &[&run, &new.position, &new_tx, &old_position, &old_tx],
        )
        .await
        .context("cannot record where the swapped-out tables stand")?;
    if n != 1 {
        return Err(Error::runtime(format!(
            "run {run}: the position of its swapped-out tables moved under us; another rollback is running"
        )));
    }
    Ok(())
}

/// The handler file that built the generation run `run` swapped out for `projection`: the one
/// recorded by the newest earlier swap of it that is still in effect. None: that generation
/// was not built by reproject (or by a version that did not record handler files).
pub async fn previous_handler_source(
    client: &impl GenericClient,
    run: i64,
    projection: &str,
) -> Result<Option<(i64, String)>> {
    let row = client
        .query_opt(
            "SELECT p.id, p.handler_sources->>$2 FROM reproject.runs p, reproject.runs r \
             WHERE r.id = $1 AND p.id <> r.id AND p.status = 'swapped' AND $2 = ANY (p.projections) \
               AND p.swapped_at < r.swapped_at \
             ORDER BY p.swapped_at DESC, p.id DESC LIMIT 1",
            &[&run, &projection],
        )
        .await
        .context("cannot read the earlier runs")?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(1).map(|s| (r.get(0), s))))
}

/// The faults of run `run_id`, for [`crate::db::tx::Retry`]: each retry is recorded with an id
/// unique in the process.
pub(crate) struct RunFaults<'a> {
    pub client: &'a tokio_postgres::Client,
    pub run_id: i64,
}

impl crate::db::tx::Faults for RunFaults<'_> {
    fn record<'a>(&'a self, kind: &'a str, detail: &'a str) -> crate::model::BoxFuture<'a, ()> {
        Box::pin(async move {
            let id = format!(
                "transient:{}:{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            );
            // Best effort: the retry itself matters more than its record.
            if let Err(e) = add_fault(self.client, self.run_id, &id, kind, detail).await {
                tracing::debug!(
                    "could not record a transient retry of run {}: {}",
                    self.run_id,
                    e.plain()
                );
            }
        })
    }
}

/// Records a fault the run survived (see [`Run::faults`]). `id` names the fault within this
/// process, so a fault recorded again (by a later attempt of the same process) counts once.
pub async fn add_fault(
    client: &impl GenericClient,
    run: i64,
    id: &str,
    kind: &str,
    detail: &str,
) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.runs \
                SET faults = faults || jsonb_build_array(jsonb_build_object( \
                    'id', $2::text, 'kind', $3::text, 'at', now(), 'detail', $4::text)) \
              WHERE id = $1 AND NOT faults @> jsonb_build_array(jsonb_build_object('id', $2::text))",
            &[&run, &id, &kind, &detail],
        )
        .await
        .context("cannot record a fault the run survived in reproject.runs")?;
    Ok(())
}

/// The handlers run `run` recorded for `projection`: the handler file (None for a Rust
/// projection) and its digest (None when the run did not include the projection).
pub async fn recorded_handlers(
    client: &impl GenericClient,
    run: i64,
    projection: &str,
) -> Result<(Option<String>, Option<String>)> {
    let row = client
        .query_opt(
            "SELECT handler_sources->>$2, handler_digests->>$2 FROM reproject.runs WHERE id = $1",
            &[&run, &projection],
        )
        .await
        .with_context(|| format!("cannot read the handlers recorded by run {run}"))?;
    Ok(row.map_or((None, None), |r| (r.get(0), r.get(1))))
}

/// The run whose generation of `projection` run `run` swapped out (and a rollback of `run`
/// restores): the newest earlier swap of it still in effect. None: reproject did not build it.
pub async fn previous_swapped_run(
    client: &impl GenericClient,
    run: i64,
    projection: &str,
) -> Result<Option<i64>> {
    let row = client
        .query_opt(
            "SELECT p.id FROM reproject.runs p, reproject.runs r \
             WHERE r.id = $1 AND p.id <> r.id AND p.status = 'swapped' AND $2 = ANY (p.projections) \
               AND p.swapped_at < r.swapped_at \
             ORDER BY p.swapped_at DESC, p.id DESC LIMIT 1",
            &[&run, &projection],
        )
        .await
        .context("cannot read the earlier runs")?;
    Ok(row.map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A row as a rebuild records it, then as the run patches it: read back and written out
    /// with the same keys and values (nulls included), unknown keys kept.
    #[test]
    fn run_options_keep_the_stored_shape() {
        let stored = json!({
            "batch_size": 1000, "set_batch_size": 1000000, "jobs": 1, "no_swap": false,
            "max_events": null, "lock_budget_ms": 5000,
            "build_unlogged": ["p"], "unlogged_build_server_start": "2026-01-01 00:00:00+00",
            "partial": {"mode": "from_position", "position": 3, "from_time": null, "columns": {}},
            "partial_seeded": true, "skip_checks": true, "external_in_flight": null,
            "partial_swap": {"rows_kept": 1, "rows_deleted": 2, "rows_inserted": 3, "copy_ms": 4,
                             "other_stream_events": 5},
            "from_a_later_version": {"x": 1}
        });
        let read = RunOptions::from_json(stored.clone());
        assert_eq!(read.max_events, Some(None));
        assert_eq!(read.external_in_flight, Some(None));
        assert_eq!(
            read.unlogged_since.as_deref(),
            Some("2026-01-01 00:00:00+00")
        );
        assert_eq!(read.to_json(), stored);
        // An older row lacks keys: they stay absent.
        let old = json!({"batch_size": 10, "no_swap": true, "max_events": 5, "lock_budget_ms": 1});
        assert_eq!(RunOptions::from_json(old.clone()).to_json(), old);
        // A patch sets only its fields; clearing the flight writes null.
        let flight = InFlight {
            projection: "p".into(),
            from: 1,
            to: 2,
        };
        let set = RunOptions {
            external_in_flight: Some(Some(flight)),
            ..RunOptions::default()
        };
        assert_eq!(
            set.to_json(),
            json!({"external_in_flight": {"projection": "p", "from": 1, "to": 2}})
        );
        let clear = RunOptions {
            external_in_flight: Some(None),
            ..RunOptions::default()
        };
        assert_eq!(clear.to_json(), json!({"external_in_flight": null}));
        // Known keys of an unexpected type: kept whole rather than lost.
        let odd = json!({"jobs": "many"});
        assert_eq!(RunOptions::from_json(odd.clone()).to_json(), odd);
    }

    const STATUSES: &[&str] = &[
        "running",
        "paused",
        "awaiting_swap",
        "checks_failed",
        "failed",
        "cancelled",
        "swapped",
        "rolled_back",
        "superseded",
    ];

    #[test]
    fn statuses_read_and_write_the_stored_words() {
        for word in STATUSES {
            let status: RunStatus = word.parse().unwrap();
            assert!(!matches!(status, RunStatus::Other(_)), "{word}");
            assert_eq!(status.as_str(), *word);
            assert_eq!(status.to_string(), *word);
            assert_eq!(serde_json::to_value(&status).unwrap(), json_word(word));
            let back: RunStatus = serde_json::from_value(json_word(word)).unwrap();
            assert_eq!(back, status);
        }
        // The words the state schema allows (sql/001_init.sql) are exactly these.
        let init = include_str!("../../sql/001_init.sql");
        for word in STATUSES {
            assert!(init.contains(&format!("'{word}'")), "{word}");
        }
    }

    #[test]
    fn an_unknown_status_or_phase_is_kept_as_read() {
        let status: RunStatus = "archived".parse().unwrap();
        assert_eq!(status, RunStatus::Other("archived".into()));
        assert_eq!(status.as_str(), "archived");
        assert!(!status.is_final() && !status.is_swappable());
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json_word("archived")
        );
        let phase: Phase = "compact".parse().unwrap();
        assert_eq!(phase, Phase::Other("compact".into()));
        assert_eq!(phase.to_string(), "compact");
    }

    #[test]
    fn phases_read_and_write_the_stored_words() {
        for word in [
            "clone", "replay", "catch_up", "waiting", "checks", "swap", "done",
        ] {
            let phase: Phase = word.parse().unwrap();
            assert!(!matches!(phase, Phase::Other(_)), "{word}");
            assert_eq!(phase.as_str(), word);
            assert_eq!(serde_json::to_value(&phase).unwrap(), json_word(word));
        }
    }

    #[test]
    fn final_and_swappable_statuses() {
        let of = |w: &str| w.parse::<RunStatus>().unwrap();
        assert_eq!(
            words(FINAL_STATUSES),
            ["swapped", "rolled_back", "superseded"]
        );
        assert_eq!(
            words(SWAPPABLE_STATUSES),
            ["paused", "awaiting_swap", "checks_failed"]
        );
        assert!(of("rolled_back").is_final() && !of("running").is_final());
        assert!(of("checks_failed").is_swappable() && !of("failed").is_swappable());
        assert!(of("swapped") == "swapped" && of("swapped") != "paused");
    }

    fn json_word(word: &str) -> Value {
        Value::String(word.to_string())
    }
}
