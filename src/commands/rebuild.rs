//! `rebuild` and `swap`: clone, replay, catch up, check, swap.

use crate::apply::sql::{session_setup, Projector, Target};
use crate::commands::inspect::{plan_report, PlanReport};
use crate::commands::{handler_digest, run_tables, Engine};
use crate::db::catalog::fingerprint;
use crate::db::tx;
use crate::error::{Context, Error, ErrorKind, Reason, Result};
use crate::pipeline::checks::{self, CheckResult};
use crate::pipeline::clone;
use crate::pipeline::partial::PartialRequest;
use crate::pipeline::plan::Plan;
use crate::pipeline::preview::Preview;
use crate::pipeline::rebuild_scope::Scope;
use crate::pipeline::replay::{Applier, Replay};
use crate::pipeline::swap::window::SwapWindow;
use crate::pipeline::swap::{self, LockPolicy};
use crate::progress::{self, FoundBy, Operation, Reporter, Warning};
use crate::read::ordering::{Cut, SETTLE_WAIT};
use crate::read::source::{Bound, Cursor, EventSource};
use crate::state::fence;
use crate::state::helpers::{self, Ownership};
use crate::state::lanes;
use crate::state::locks::{lock_projections, LockClass};
use crate::state::migrate::migrate;
use crate::state::runs::{self, JsonColumn, Phase, RunStatus, RunTable};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeSet;
use tokio_postgres::Client;

/// How to [`rebuild`]; `Default` is what `reproject rebuild --yes` does.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Projections to rebuild; empty means all.
    pub projections: Vec<String>,
    /// Events per transaction (with their checkpoint); default 1000.
    pub batch_size: i64,
    /// Events per batch of a run with set-based (`-- per batch`) projections.
    pub set_batch_size: i64,
    /// Stream lanes applied at once by the bulk replay of projections that declare
    /// `stream_key` (pipeline/lanes.rs), each on its own connection; default 1.
    pub jobs: usize,
    /// Stop before the swap (status `awaiting_swap`); `swap` finishes it.
    pub no_swap: bool,
    /// Only report the plan and the steps; write nothing.
    pub dry_run: bool,
    /// Why, recorded with the run.
    pub reason: Option<String>,
    /// Who, recorded with the run (default: the OS user).
    pub initiated_by: String,
    /// Stop after this many events and leave the run unswapped.
    pub max_events: Option<i64>,
    /// Continue the newest unfinished run of these projections instead of starting anew.
    pub resume: bool,
    /// Swap only inside this window; the rebuild waits for it, catching up meanwhile.
    pub window: Option<SwapWindow>,
    /// How the swap asks for and holds its locks.
    pub lock: LockPolicy,
    /// `--streams`, `--streams-where`, `--from-position`, `--from-time` (pipeline/partial.rs).
    pub partial: Option<PartialRequest>,
    /// `--preview-schema NAME`: once the tables are complete and checked, while the run waits
    /// for its swap (`no_swap` or `window` required), views in schema NAME named like the live
    /// tables read them (pipeline/preview.rs).
    pub preview_schema: Option<String>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            projections: Vec::new(),
            batch_size: 1000,
            set_batch_size: crate::apply::sql::DEFAULT_SET_BATCH_SIZE,
            jobs: 1,
            no_swap: false,
            dry_run: false,
            reason: None,
            initiated_by: crate::commands::os_user(),
            max_events: None,
            resume: false,
            window: None,
            lock: LockPolicy::default(),
            partial: None,
            preview_schema: None,
        }
    }
}

/// How to [`swap()`] a rebuild that is awaiting its swap.
#[derive(Debug, Clone)]
pub struct SwapOptions {
    /// Projections whose pending run to swap; empty means the only pending run.
    pub projections: Vec<String>,
    /// Events per transaction while catching up.
    pub batch_size: i64,
    /// Events per batch while catching up set-based (`-- per batch`) projections.
    pub set_batch_size: i64,
    /// Swap even if checks fail (recorded in the run's options).
    pub skip_checks: bool,
    /// Refuse (exit 75) outside this window.
    pub window: Option<SwapWindow>,
    /// How the swap asks for and holds its locks.
    pub lock: LockPolicy,
}

/// How a rebuild or swap call ended: a dry run, or the status it left its run in. Shown (and
/// serialized) as the same words as the run's status, or `dry_run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// `--dry-run`: nothing was written.
    DryRun,
    /// The status the run was left in: `swapped`, `awaiting_swap` or `paused`.
    Run(RunStatus),
}

impl OutcomeStatus {
    /// The word shown for it.
    pub fn as_str(&self) -> &str {
        match self {
            OutcomeStatus::DryRun => "dry_run",
            OutcomeStatus::Run(status) => status.as_str(),
        }
    }
}

/// Compares with the word, as code written when the status was a string does.
impl PartialEq<&str> for OutcomeStatus {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl std::fmt::Display for OutcomeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OutcomeStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a rebuild or swap did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildOutcome {
    /// Set for a dry run: the plan and the steps a rebuild would take.
    pub dry_run: Option<PlanReport>,
    /// The run's id in `reproject.runs` (None for a dry run).
    pub run_id: Option<i64>,
    /// `swapped`, `awaiting_swap`, `paused` (`--max-events`) or `dry_run`.
    pub status: OutcomeStatus,
    /// Events applied by this call (replay, catch-up and final tail).
    pub events_applied: i64,
    /// The health checks and their results.
    pub checks: Vec<CheckResult>,
    /// The position the swapped tables hold every event up to.
    pub swap_position: Option<i64>,
    /// How long the swap waited for its locks.
    pub lock_wait_ms: Option<i64>,
    /// How long the swap held them.
    pub lock_hold_ms: Option<i64>,
    /// The run's tables and their helper names.
    pub tables: Vec<RunTable>,
    /// After a swap whose replaced tables were not built by reproject from recorded SQL
    /// handlers (the application built them): until when, and how, `rollback` stays possible.
    pub rollback_caveat: Option<String>,
    /// `--preview-schema`: the views created (or, for a dry run, in `dry_run`'s plan).
    pub preview: Option<Preview>,
}

#[derive(Clone)]
struct Finish {
    batch_size: i64,
    set_batch_size: i64,
    jobs: usize,
    max_events: Option<i64>,
    no_swap: bool,
    skip_checks: bool,
    lock: LockPolicy,
    window: Option<SwapWindow>,
    /// Wait (catching up) for the window to open; without, refuse to swap outside it.
    wait_for_window: bool,
    /// What the run rebuilds: all rows, or some (pipeline/partial.rs).
    scope: Scope,
    /// Create the preview schema of this name once the tables are checked (preview.rs).
    preview: Option<String>,
}

impl Finish {
    /// How `rebuild` (and `--resume`) finishes a run: waiting for its window; a full scope
    /// (a new run sets its own, a resumed one reads what it recorded).
    fn rebuild(opts: &RebuildOptions) -> Finish {
        Finish {
            batch_size: opts.batch_size,
            set_batch_size: opts.set_batch_size,
            jobs: opts.jobs,
            max_events: opts.max_events,
            no_swap: opts.no_swap,
            skip_checks: false,
            lock: opts.lock,
            window: opts.window.clone(),
            wait_for_window: true,
            scope: Scope::Full,
            preview: opts.preview_schema.clone(),
        }
    }
}

/// How often a rebuild that lost its connection resumes by itself before it gives up.
const RECONNECTS: u32 = 5;

/// Rebuilds the selected projections into `_rebuild` tables and (unless told otherwise)
/// swaps them in. A lost connection (a restart, a failover, a terminated session) does not end
/// the run: it resumes from its last committed batch on a new connection, like `--resume`,
/// after a pause that grows with each attempt, up to 5 times.
pub async fn rebuild(engine: &Engine<'_>, opts: &RebuildOptions) -> Result<RebuildOutcome> {
    let began = chrono::Utc::now();
    let mut result = rebuild_once(engine, opts, &[]).await;
    let mut attempt = 0;
    // The lost connections resumed after, recorded with the run they resumed (`history`).
    let mut survived: Vec<Survived> = Vec::new();
    loop {
        let lost = match &result {
            Err(e) if e.is_connection_loss() && !opts.dry_run => e.clone(),
            _ => return result,
        };
        if attempt == RECONNECTS || engine.cancel.is_cancelled() {
            return Err(gave_up(lost, attempt));
        }
        attempt += 1;
        let pause = std::time::Duration::from_millis(
            500 * (1 << attempt) + u64::from(std::process::id() % 250),
        );
        engine.reporter.warn(&Warning::ConnectionLost {
            cause: lost.causes.last().unwrap_or(&lost.message).clone(),
            retry_in: pause,
            attempt,
            attempts: RECONNECTS,
        });
        survived.push(Survived {
            id: format!(
                "reconnect:{}:{}:{attempt}",
                std::process::id(),
                began.timestamp_millis()
            ),
            detail: format!(
                "lost the connection ({}); resumed from the last committed batch (attempt {attempt} of {RECONNECTS})",
                lost.causes.last().unwrap_or(&lost.message)
            ),
        });
        tokio::select! {
            biased;
            _ = engine.cancel.cancelled() => {
                return Err(Error::interrupted(
                    "interrupted while waiting to reconnect; the run stays resumable",
                )
                .with_hint("`reproject rebuild --resume` continues it"));
            }
            _ = tokio::time::sleep(pause) => {}
        }
        // A resumed run continues with the partial-rebuild selection it recorded.
        let again = RebuildOptions {
            resume: true,
            partial: None,
            ..opts.clone()
        };
        result = match rebuild_once(engine, &again, &survived).await {
            // Nothing was recorded before the connection went: report the loss itself.
            Err(e) if e.reason == Some(Reason::NothingToResume) => {
                // The run may have been swapped by the attempt that lost its connection.
                return match swapped_since(engine, opts, began).await {
                    Some(outcome) => Ok(outcome),
                    None => Err(gave_up(lost, attempt)),
                };
            }
            // The attempt that lost its connection never committed its clone: start over.
            Err(e) if e.reason == Some(Reason::CloneNotCommitted) => {
                engine.reporter.warn(&Warning::CloneNotCommitted {
                    why: e.message.clone(),
                });
                let fresh = RebuildOptions {
                    resume: false,
                    ..opts.clone()
                };
                rebuild_once(engine, &fresh, &survived).await
            }
            // The run cannot be continued (e.g. an external projector's range was cut off):
            // report the loss, with why it was not resumed.
            Err(e) if e.kind == ErrorKind::Config => {
                return Err(lost.caused_by(format!("resuming was refused: {}", e.message)))
            }
            other => other,
        };
    }
}

/// The error of a rebuild that lost its connection and could not go on: what happened and
/// what to run next.
fn gave_up(lost: Error, attempt: u32) -> Error {
    let how = if attempt == 0 {
        "lost the connection to PostgreSQL".to_string()
    } else {
        format!(
            "lost the connection to PostgreSQL and could not continue after {attempt} reconnect(s)"
        )
    };
    lost.context(format!("{how}; the run keeps everything up to its last committed batch"))
        .with_hint("`reproject rebuild --resume` continues it once the server is reachable; `reproject status` shows where it stands")
}

/// After a connection loss, when no run is left to resume: the run of these projections
/// swapped since this command began, as this command's outcome (its swap committed as the
/// connection went).
async fn swapped_since(
    engine: &Engine<'_>,
    opts: &RebuildOptions,
    began: chrono::DateTime<chrono::Utc>,
) -> Option<RebuildOutcome> {
    let plan = crate::pipeline::plan::plan(engine.config, &opts.projections).ok()?;
    let names = names(engine, &plan);
    let client = engine.db.get().await.ok()?;
    let run = runs::latest_swapped_for(&**client, names.first()?)
        .await
        .ok()
        .flatten()?;
    let mut have = run.projections.clone();
    have.sort();
    let mut wanted = names.clone();
    wanted.sort();
    if have != wanted || run.swapped_at.is_none_or(|at| at < began) {
        return None;
    }
    engine
        .reporter
        .warn(&Warning::SwappedBeforeConnectionLoss { run_id: run.id });
    Some(RebuildOutcome {
        dry_run: None,
        run_id: Some(run.id),
        status: OutcomeStatus::Run(RunStatus::Swapped),
        events_applied: 0,
        checks: Vec::new(),
        swap_position: run.swap_position,
        lock_wait_ms: run.lock_wait_ms,
        lock_hold_ms: run.lock_hold_ms,
        tables: runs::tables(&**client, run.id).await.unwrap_or_default(),
        rollback_caveat: None,
        preview: None,
    })
}

/// After the swap's COMMIT failed with a lost connection: whether it committed, from the
/// run's recorded status read on a new connection (waiting a little for a restarting server).
/// None when the server could not be reached.
async fn committed_despite_loss(engine: &Engine<'_>, run_id: i64) -> Option<bool> {
    for attempt in 1..=RECONNECTS {
        if let Ok(client) = engine.db.dedicated().await {
            if let Ok(Some(run)) = runs::get(&client, run_id).await {
                return Some(run.status == RunStatus::Swapped);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500 * (1 << attempt))).await;
    }
    None
}

/// A lost connection a rebuild resumed after, to record with the run it resumed.
struct Survived {
    /// Unique within the process: a later attempt records it again without a duplicate.
    id: String,
    detail: String,
}

async fn rebuild_once(
    engine: &Engine<'_>,
    opts: &RebuildOptions,
    survived: &[Survived],
) -> Result<RebuildOutcome> {
    let config = engine.config;
    if opts.batch_size < 1 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    let plan = crate::pipeline::plan::plan(config, &opts.projections)?;
    for w in &plan.warnings {
        engine.reporter.warn(w);
    }
    crate::apply::external::check_selection(config, &plan.order, opts.max_events)?;
    if opts.preview_schema.is_some() && !opts.no_swap && opts.window.is_none() {
        return Err(crate::pipeline::preview::mode_error());
    }
    let scope = Scope::requested(engine, &plan, opts.partial.as_ref(), opts.resume).await?;
    if opts.dry_run {
        let mut report = plan_report(
            engine,
            &plan,
            true,
            opts.jobs,
            opts.preview_schema.as_deref(),
        )
        .await?;
        let steps = scope.dry_run_steps(engine, &plan).await?;
        report.steps.splice(0..0, steps);
        return Ok(RebuildOutcome {
            dry_run: Some(report),
            run_id: None,
            status: OutcomeStatus::DryRun,
            events_applied: 0,
            checks: Vec::new(),
            swap_position: None,
            lock_wait_ms: None,
            lock_hold_ms: None,
            tables: Vec::new(),
            rollback_caveat: None,
            preview: None,
        });
    }
    if opts.resume {
        return resume(engine, &plan, opts, survived).await;
    }
    let resolved = engine.validate().await?;
    let names = names(engine, &plan);
    let tables = run_tables(config, &resolved, &plan.order);
    let reshaped_already = crate::pipeline::shape::already_applied(config, &resolved, &plan.order);
    for (projection, run) in &reshaped_already {
        engine.reporter.warn(&Warning::ReshapeAlreadyApplied {
            projection: projection.clone(),
            run_id: *run,
        });
    }
    let reshaped_already: BTreeSet<String> = reshaped_already.into_keys().collect();
    for note in &resolved.notes {
        engine.reporter.warn(note);
    }
    // Everything the run will need, before anything is written: the same checks as `plan`
    // and the dry run (preflight.rs).
    {
        let pooled = engine.db.get().await?;
        let shape_changes =
            &crate::pipeline::shape::planned_changes(config, &resolved, &plan.order);
        let request = crate::pipeline::preflight::Request {
            config,
            order: &plan.order,
            tables: &tables,
            jobs: opts.jobs,
            changes: shape_changes,
        };
        let mut refusals = crate::pipeline::preflight::check(&**pooled, &request).await?;
        if let Some(schema) = &opts.preview_schema {
            refusals.extend(crate::pipeline::preview::refusals(&**pooled, schema, &tables).await?);
        }
        crate::pipeline::preflight::refuse("rebuild", refusals)?;
        // Not in `check`, which `plan` runs read-only: the trial creates (and drops) tables.
        crate::pipeline::preflight::refuse(
            "rebuild",
            crate::pipeline::shape::stand_in::try_redefinitions(
                &**pooled,
                config,
                &resolved,
                shape_changes,
            )
            .await?,
        )?;
    }
    let _locks = lock_projections(&engine.db, &names).await?;
    let mut conn = engine.db.dedicated().await?;
    migrate(&mut conn).await?;
    // Again under the projections' lock: a run that finished meanwhile may have left helpers.
    clone::preflight(&conn, &tables).await?;
    let mut fingerprints = Vec::new();
    for t in &tables {
        // A table the run adds has no live table to fingerprint (its swap checks that the name
        // is still free instead).
        fingerprints.push(if t.added {
            None
        } else {
            Some(fingerprint::fingerprint(&conn, &t.live).await?)
        });
    }

    let digests: serde_json::Map<String, serde_json::Value> = plan
        .order
        .iter()
        .map(|&i| {
            (
                config.projections[i].name.clone(),
                json!(handler_digest(config, i)),
            )
        })
        .collect();
    let sources: serde_json::Map<String, serde_json::Value> = plan
        .order
        .iter()
        .map(|&i| {
            (
                config.projections[i].name.clone(),
                crate::commands::handler_source(config, i),
            )
        })
        .collect();
    let unlogged: BTreeSet<String> = plan
        .order
        .iter()
        .map(|&i| &config.projections[i])
        .filter(|p| p.build_unlogged)
        .map(|p| p.name.clone())
        .collect();
    let mut options = runs::RunOptions {
        batch_size: Some(opts.batch_size),
        set_batch_size: Some(opts.set_batch_size),
        jobs: Some(opts.jobs),
        no_swap: Some(opts.no_swap),
        max_events: Some(opts.max_events),
        lock_budget_ms: Some(opts.lock.budget.as_millis() as u64),
        partial: scope.recorded(),
        preview_schema: opts.preview_schema.clone(),
        ..runs::RunOptions::default()
    };
    if !unlogged.is_empty() {
        // A resume must know whether the server restarted under the unlogged tables (clone.rs).
        options.build_unlogged = Some(unlogged.clone());
        options.unlogged_since = Some(clone::server_start(&conn).await?);
    }
    let run_id = tx::run(&conn, "cannot begin", None, || async {
        let run_id = runs::insert(
            &conn,
            &runs::NewRun {
                projections: &names,
                reason: opts.reason.as_deref(),
                initiated_by: &opts.initiated_by,
                options,
                handler_digests: digests.into(),
                handler_sources: sources.into(),
            },
        )
        .await?;
        let superseded = runs::supersede(&conn, &names, run_id).await?;
        if superseded > 0 {
            engine.reporter.warn(&Warning::RunsSuperseded {
                count: superseded as i64,
                run_id,
            });
        }
        for (t, fp) in tables.iter().zip(&fingerprints) {
            runs::add_table(&conn, run_id, t, fp.as_ref()).await?;
        }
        runs::init_checkpoints(&conn, run_id, &names, scope.start_position()).await?;
        Ok(run_id)
    })
    .await?;

    let result = async {
        engine.reporter.step(&progress::Step::Cloning {
            run_id,
            tables: tables.len(),
            projections: names.to_vec(),
        });
        let replay_triggers = plan
            .order
            .iter()
            .map(|&i| &config.projections[i])
            .filter(|p| p.replay_triggers)
            .map(|p| p.name.clone())
            .collect();
        // The live tables' row counts (for the history) on a pooled connection while the
        // clone is made: a count reads the whole table, seconds for a big projection.
        let count_before = async {
            let pooled = engine.db.get().await?;
            let mut before = serde_json::Map::new();
            // A table the run adds has no rows before: it does not exist.
            for t in tables.iter().filter(|t| !t.added) {
                before.insert(
                    t.live.to_string(),
                    json!(crate::db::catalog::count_rows(&**pooled, &t.live).await?),
                );
            }
            Ok::<_, Error>(before)
        };
        let clone = async {
            clone::create_rebuild_tables(
                &conn,
                run_id,
                &tables,
                &replay_triggers,
                &unlogged,
                Some((config, &reshaped_already)),
            )
            .await?;
            scope
                .seed(&conn, config, run_id, &tables, engine.reporter)
                .await
        };
        let (scope, before) = futures_util::future::join(clone, count_before).await;
        let (scope, before) = (scope?, before?);
        runs::set_json(&conn, run_id, JsonColumn::RowsBefore, &before.into()).await?;
        let finish = Finish {
            scope,
            ..Finish::rebuild(opts)
        };
        let run = ReadyRun {
            conn: &conn,
            run_id,
            names: &names,
            resolved: &resolved,
            order: &plan.order,
            tables: &tables,
        };
        run.finish(engine, &finish).await
    }
    .await;
    record_outcome(engine, run_id, result).await
}

/// Swaps the tables of a pending run (after `--no-swap`, `--max-events` or refused checks),
/// catching up with the events that arrived since and checking again first.
pub async fn swap(engine: &Engine<'_>, opts: &SwapOptions) -> Result<RebuildOutcome> {
    let pooled = engine.db.get().await?;
    if !crate::state::exists(&**pooled).await? {
        return Err(Error::config(
            "nothing to swap: no rebuild has been recorded in this database",
        )
        .with_hint("run `reproject rebuild --no-swap` first"));
    }
    let pending = runs::swappable(&**pooled).await?;
    drop(pooled);
    let candidates: Vec<_> = pending
        .into_iter()
        .filter(|r| opts.projections.iter().all(|p| r.projections.contains(p)))
        .collect();
    let run = match candidates.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::config(if opts.projections.is_empty() {
                "nothing to swap: no rebuild is awaiting a swap".to_string()
            } else {
                format!(
                    "nothing to swap: no rebuild of {} is awaiting a swap",
                    opts.projections.join(", ")
                )
            })
            .with_hint("see `reproject status`"))
        }
        many => {
            return Err(Error::config(format!(
                "several rebuilds await a swap: {}",
                crate::commands::run_list(many)
            ))
            .with_hint("name the projections of the run to swap: `reproject swap PROJECTION...`"));
        }
    };
    let finish = Finish {
        batch_size: opts.batch_size,
        set_batch_size: opts.set_batch_size,
        jobs: 1,
        max_events: None,
        no_swap: false,
        skip_checks: opts.skip_checks,
        lock: opts.lock,
        window: opts.window.clone(),
        wait_for_window: false,
        scope: Scope::Full,
        // Made by the rebuild that waited; its views stay with the tables through the swap.
        preview: None,
    };
    continue_run(engine, &run, &finish).await
}

/// `rebuild --resume`: continues the newest unfinished run of exactly these projections from
/// its last committed batch (after a crash, SIGKILL, Ctrl-C or a lost connection), with the
/// same result as an uninterrupted run.
async fn resume(
    engine: &Engine<'_>,
    plan: &Plan,
    opts: &RebuildOptions,
    survived: &[Survived],
) -> Result<RebuildOutcome> {
    let mut wanted = names(engine, plan);
    wanted.sort();
    let pooled = engine.db.get().await?;
    let run = if crate::state::exists(&**pooled).await? {
        runs::resumable(&**pooled).await?.into_iter().find(|r| {
            let mut have = r.projections.clone();
            have.sort();
            have == wanted
        })
    } else {
        None
    };
    if let Some(run) = &run {
        for s in survived {
            runs::add_fault(&**pooled, run.id, &s.id, "reconnect", &s.detail).await?;
        }
    }
    drop(pooled);
    let Some(run) = run else {
        return Err(Error::config(format!(
            "nothing to resume: no unfinished rebuild of exactly {}",
            wanted.join(", ")
        ))
        .with_reason(Reason::NothingToResume)
        .with_hint("see `reproject history`; without --resume, `rebuild` starts a new run"));
    };
    engine.reporter.step(&progress::Step::Resuming {
        run_id: run.id,
        status: run.status.to_string(),
    });
    // A run recorded with a preview schema makes it when it waits for its swap again.
    let waits = opts.no_swap || opts.window.is_some();
    let finish = Finish {
        preview: opts
            .preview_schema
            .clone()
            .or_else(|| run.options.preview_schema.clone().filter(|_| waits)),
        ..Finish::rebuild(opts)
    };
    continue_run(engine, &run, &finish).await
}

/// Continues a recorded run from its checkpoint: the handlers must be the ones that built its
/// tables, and its rebuild tables must still be reproject's.
async fn continue_run(
    engine: &Engine<'_>,
    run: &runs::Run,
    finish: &Finish,
) -> Result<RebuildOutcome> {
    let config = engine.config;
    let names = run.projections.clone();
    // Before the digests: missing code is not changed code.
    let known: Vec<usize> = names
        .iter()
        .filter_map(|n| config.projection_index(n))
        .collect();
    crate::model::projection::require_registered(config, &known)?;
    for name in &names {
        let Some(i) = config.projection_index(name) else {
            return Err(Error::config(format!(
                "run {} rebuilt projection `{name}`, which is no longer in {}",
                run.id,
                config.path.display()
            )));
        };
        let recorded = run
            .handler_digests
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if recorded != handler_digest(config, i) {
            return Err(Error::config(format!(
                "the handlers of projection `{name}` changed since run {} built its tables; catching up with different handlers would mix two versions",
                run.id
            ))
            .with_hint("run `reproject rebuild` again"));
        }
    }
    let plan = crate::pipeline::plan::plan(config, &names)?;
    crate::apply::external::check_selection(config, &plan.order, None)?;
    crate::apply::external::check_continuable(run)?;
    let resolved = engine.validate().await?;
    // What the swap will alter, before any lock is taken and any event applied (preflight.rs).
    {
        let pooled = engine.db.get().await?;
        crate::pipeline::shape::check_resume(&**pooled, config, &resolved, run.id, &names).await?;
        let tables = runs::tables(&**pooled, run.id).await?;
        let mut refusals = crate::pipeline::preflight::jobs(config, &plan.order, finish.jobs);
        refusals.extend(crate::pipeline::preflight::state_schema(&**pooled, false).await?);
        refusals.extend(
            crate::pipeline::preflight::exchange(
                &**pooled,
                &tables,
                |t| &t.rebuild,
                "the swap puts it in place of the live table",
            )
            .await?,
        );
        refusals.extend(crate::pipeline::preflight::helper_names(&**pooled, &tables).await?);
        if let Some(schema) = &finish.preview {
            refusals.extend(crate::pipeline::preview::refusals(&**pooled, schema, &tables).await?);
        }
        crate::pipeline::preflight::refuse(&format!("continue run {}", run.id), refusals)?;
    }
    let _locks = lock_projections(&engine.db, &names).await?;
    let conn = engine.db.dedicated().await?;
    let tables = runs::tables(&conn, run.id).await?;
    let mut missing = 0;
    for t in &tables {
        if !matches!(
            helpers::ownership(&conn, &t.rebuild).await?,
            Ownership::Ours(_)
        ) {
            missing += 1;
        }
    }
    // Interrupted while cloning: the clone's transaction rolled back, so the run has no
    // tables and applied nothing. It is ended as failed; a new run starts over.
    if missing == tables.len() && run.phase == Phase::Clone {
        let note = "interrupted before its clone committed; nothing to continue";
        runs::set_status(&conn, run.id, RunStatus::Failed, Some(note)).await?;
        return Err(Error::runtime(format!("run {}: {note}", run.id))
            .with_reason(Reason::CloneNotCommitted)
            .with_hint("`reproject rebuild` starts a new run"));
    }
    for t in &tables {
        if !matches!(
            helpers::ownership(&conn, &t.rebuild).await?,
            Ownership::Ours(_)
        ) {
            return Err(Error::runtime(format!(
                "run {}: its rebuild table `{}` is gone or was replaced",
                run.id, t.rebuild
            ))
            .with_hint("run `reproject rebuild` again"));
        }
    }
    clone::check_unlogged_intact(
        &conn,
        run.id,
        run.options.unlogged_since.as_deref(),
        &tables,
    )
    .await?;
    // A partial run continues with the selection it recorded.
    let finish = &Finish {
        scope: Scope::continued(&conn, config, run, &tables, engine.reporter).await?,
        ..finish.clone()
    };
    runs::set_status(&conn, run.id, RunStatus::Running, None).await?;
    if finish.skip_checks {
        let skip = runs::RunOptions {
            skip_checks: Some(true),
            ..runs::RunOptions::default()
        };
        runs::merge_options(&conn, run.id, &skip).await?;
    }
    let run_id = run.id;
    let run = ReadyRun {
        conn: &conn,
        run_id,
        names: &names,
        resolved: &resolved,
        order: &plan.order,
        tables: &tables,
    };
    let result = run.finish(engine, finish).await;
    record_outcome(engine, run_id, result).await
}

/// A recorded run ready to replay into its rebuild tables, on its own connection.
struct ReadyRun<'a> {
    conn: &'a Client,
    run_id: i64,
    names: &'a [String],
    resolved: &'a crate::model::Resolved,
    order: &'a [usize],
    tables: &'a [RunTable],
}

impl ReadyRun<'_> {
    /// Prepares the handlers on the run's connection and finishes the run ([`finish_run`]),
    /// with its `reproject cancel` requests watched meanwhile.
    async fn finish(&self, engine: &Engine<'_>, finish: &Finish) -> Result<RebuildOutcome> {
        let rebuilding: BTreeSet<usize> = self.order.iter().copied().collect();
        let target = Target {
            config: engine.config,
            resolved: self.resolved,
            rebuilding: &rebuilding,
        };
        let projector = Projector::prepare(self.conn, &target, self.order)
            .await?
            .with_set_batch_size(finish.set_batch_size);
        session_setup(self.conn).await?;
        let run = finish_run(
            engine,
            self.conn,
            self.run_id,
            self.names,
            &target,
            self.order,
            &projector,
            self.tables,
            finish,
        );
        crate::pipeline::cancel_requests::watching(engine, self.run_id, run).await
    }
}

fn names(engine: &Engine<'_>, plan: &Plan) -> Vec<String> {
    plan.order
        .iter()
        .map(|&i| engine.config.projections[i].name.clone())
        .collect()
}

/// Replay → catch-up → checks → swap, from wherever the run's checkpoint is.
#[allow(clippy::too_many_arguments)]
async fn finish_run(
    engine: &Engine<'_>,
    conn: &Client,
    run_id: i64,
    names: &[String],
    target: &Target<'_>,
    order: &[usize],
    projector: &Projector,
    tables: &[RunTable],
    opts: &Finish,
) -> Result<RebuildOutcome> {
    let reporter = engine.reporter;
    let source = opts
        .scope
        .source(EventSource::new(&engine.config.events, target.resolved));
    // Every window read below ends at a bound from the cut: never past an event that an open
    // transaction can still commit (see ordering.rs).
    let mut cut = Cut::new(&source, run_id);
    let mut outcome = RebuildOutcome {
        dry_run: None,
        run_id: Some(run_id),
        // Set on each way out below.
        status: OutcomeStatus::Run(RunStatus::Running),
        events_applied: 0,
        checks: Vec::new(),
        swap_position: None,
        lock_wait_ms: None,
        lock_hold_ms: None,
        tables: tables.to_vec(),
        rollback_caveat: None,
        preview: None,
    };
    let steps = Steps {
        engine,
        conn,
        run_id,
        names,
        target,
        order,
        projector,
        tables,
        opts,
    };
    let replay = Replay {
        conn,
        applier: Applier::for_run(
            engine.config,
            order,
            projector,
            &engine.db,
            &source,
            tables,
            run_id,
        ),
        source: &source,
        run_id,
        names,
        batch_size: opts.batch_size,
        reporter,
        progress_base: std::sync::atomic::AtomicU64::new(0),
    };

    let mut budget = opts.max_events;
    outcome.events_applied += steps.bulk_replay(&replay, &mut cut, &mut budget).await?;
    if budget == Some(0) {
        runs::set_status(conn, run_id, RunStatus::Paused, None).await?;
        outcome.status = OutcomeStatus::Run(RunStatus::Paused);
        return Ok(outcome);
    }

    runs::set_phase(conn, run_id, Phase::CatchUp).await?;
    outcome.events_applied += replay.catch_up(&mut cut, &engine.cancel).await?;
    // The gaps passed so far (this run's, and those the live tables stand on) may have been
    // filled since: say so loudly and record it (state/late_events.rs).
    let found = crate::state::late_events::recheck(
        conn,
        engine.config,
        &EventSource::new(&engine.config.events, target.resolved),
        Some(run_id),
        &format!("run {run_id} (catch-up)"),
    )
    .await?;
    for e in found {
        reporter.warn(&e.warning(FoundBy::Rebuild));
    }

    // A preview is made once the tables are complete and checked: before a window is waited
    // for (the run keeps catching up meanwhile, so the views stay current), after which the
    // checks run again on what the swap takes.
    if let (Some(schema), false, Some(_)) = (&opts.preview, opts.no_swap, &opts.window) {
        outcome.checks = steps.checks().await?;
        steps.make_logged().await?;
        outcome.preview = Some(steps.preview(schema, true).await?);
    }

    outcome.events_applied += steps.wait_for_window(&replay, &mut cut).await?;

    outcome.checks = steps.checks().await?;

    // After the checks, so a failed rebuild never pays for the rewrite; before `--no-swap`
    // returns, so a run that waits for its swap does not wait unlogged.
    steps.make_logged().await?;

    if opts.no_swap {
        if let Some(schema) = &opts.preview {
            outcome.preview = Some(steps.preview(schema, false).await?);
        }
        runs::set_status(conn, run_id, RunStatus::AwaitingSwap, None).await?;
        outcome.status = OutcomeStatus::Run(RunStatus::AwaitingSwap);
        return Ok(outcome);
    }
    if engine.cancel.is_cancelled() {
        return Err(Error::interrupted(format!(
            "run {run_id}: cancelled before the swap"
        )));
    }

    steps.swap(&replay, &mut cut, outcome).await
}

/// What the swap's exchange needs, prepared before the locks are taken.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    prepared: &'a crate::pipeline::swap::exchange::Prepared,
    /// Old tables of earlier runs, retired (renamed) in the swap transaction.
    retire: &'a [(
        crate::model::ident::TableName,
        crate::model::ident::TableName,
    )],
    /// Dependents broken by the run's shape changes, with the user's definitions.
    redefinitions: &'a swap::Redefinitions,
    /// Tables the projections no longer have (`retire`), parked as `_old` in the transaction.
    retiring: &'a [crate::pipeline::retire::Retiring],
}

/// What every step of [`finish_run`] works on.
#[derive(Clone, Copy)]
struct Steps<'a> {
    engine: &'a Engine<'a>,
    conn: &'a Client,
    run_id: i64,
    names: &'a [String],
    target: &'a Target<'a>,
    order: &'a [usize],
    projector: &'a Projector,
    tables: &'a [RunTable],
    opts: &'a Finish,
}

impl Steps<'_> {
    /// `build_unlogged` tables become logged (once: a logged table is left as it is).
    async fn make_logged(&self) -> Result<()> {
        let made_logged = clone::make_logged(self.conn, self.tables).await?;
        if !made_logged.is_empty() {
            self.engine.reporter.step(&progress::Step::MadeLogged {
                tables: made_logged.iter().map(|t| t.to_string()).collect(),
            });
        }
        Ok(())
    }

    /// Creates the preview schema (pipeline/preview.rs) and says how current it stays:
    /// `caught_up` when the run keeps catching up while it waits (a window), else the views
    /// show the tables as of the run's checkpoint until `swap` catches them up.
    async fn preview(&self, schema: &str, caught_up: bool) -> Result<Preview> {
        let Steps {
            engine,
            conn,
            run_id,
            tables,
            ..
        } = *self;
        let preview = crate::pipeline::preview::create(conn, run_id, schema, tables).await?;
        engine.reporter.step(&progress::Step::PreviewCreated {
            schema: schema.to_string(),
            views: preview
                .preview
                .views
                .iter()
                .map(|v| v.view.clone())
                .collect(),
            replaces_run: preview.preview.replaces_run,
        });
        if caught_up {
            engine.reporter.step(&progress::Step::PreviewKeptCurrent {
                schema: schema.to_string(),
            });
        } else {
            let at = runs::cursor(conn, run_id).await?;
            engine.reporter.warn(&Warning::PreviewCurrentTo {
                schema: schema.to_string(),
                position: at.position,
            });
        }
        Ok(preview)
    }

    /// The bulk replay up to the bound settled now, in stream lanes where they apply, within
    /// `budget` (`--max-events`). Returns the events applied.
    async fn bulk_replay(
        &self,
        replay: &Replay<'_>,
        cut: &mut Cut<'_>,
        budget: &mut Option<i64>,
    ) -> Result<i64> {
        let Steps {
            engine,
            conn,
            run_id,
            names,
            target,
            order,
            projector,
            tables,
            opts,
            ..
        } = *self;
        let reporter = engine.reporter;
        let source = replay.source;
        runs::set_phase(conn, run_id, Phase::Replay).await?;
        source.check_transaction_ids(conn).await?;
        let start = runs::cursor(conn, run_id).await?;
        let bound = cut
            .settle(conn, &start, &engine.cancel, reporter, SETTLE_WAIT)
            .await?;
        let target_position = match bound {
            Some(Bound::UpTo(p)) => Some(p),
            _ => source.head(conn).await?,
        };
        runs::set_target(conn, run_id, target_position).await?;
        if let Some(bound) = bound {
            let counts = source.count(conn, &start, &bound).await?;
            reporter.step(&progress::Step::Replaying {
                events: counts.events,
                up_to: bound.into(),
                tables: tables.iter().map(|t| t.rebuild.to_string()).collect(),
            });
            reporter.replay_started("replay", counts.events.max(0) as u64);
            let lanes = crate::pipeline::lanes::Lanes {
                engine,
                conn,
                run_id,
                names,
                projector,
                target,
                order,
                source,
                batch_size: opts.batch_size,
                jobs: opts.jobs,
            };
            let applied = async {
                // An unfinished plan of stream lanes at the checkpoint is continued whatever the
                // options now say: the tables hold its applied lanes, which the checkpoint does not.
                let mut plan = lanes::at_checkpoint(conn, run_id, &start).await?;
                let why_not =
                    crate::pipeline::lanes::why_not(engine.config, order, projector, source);
                if plan.is_none() && budget.is_some() && opts.jobs > 1 {
                    reporter.warn(&Warning::JobsWithMaxEvents { jobs: opts.jobs });
                }
                if plan.is_none() && budget.is_none() {
                    // Set-based lanes also bound their transactions (one set batch each);
                    // per-event lanes commit every batch, so they need only one per job.
                    let per_lane = projector.set_based_only().then_some(opts.set_batch_size);
                    let n = crate::pipeline::lanes::lane_count(counts.events, per_lane, opts.jobs);
                    match (&why_not, bound) {
                        (None, Bound::UpTo(upto)) if n > 1 => {
                            let upto = Cursor::at(Some(upto));
                            plan = Some(
                                lanes::create(conn, run_id, &start, &upto, n, counts.events)
                                    .await?,
                            );
                        }
                        // `xid8`: the plan ends at the last event below the cut, in reading
                        // order; every row up to there is final.
                        (None, Bound::BelowTx(_)) if n > 1 => {
                            if let Some(upto) = source.last_cursor(conn, &start, &bound).await? {
                                plan = Some(
                                    lanes::create(conn, run_id, &start, &upto, n, counts.events)
                                        .await?,
                                );
                            }
                        }
                        (Some(why), _) if opts.jobs > 1 => reporter.warn(&Warning::NoStreamLanes {
                            jobs: opts.jobs,
                            why: why.to_string(),
                        }),
                        _ => {}
                    }
                }
                // `done`: the plan's events, which the checkpoint moved past; `applied`: those this
                // call applied (all of them, unless it continued a plan).
                let (from, done, applied) = match plan {
                    Some(plan) => {
                        let (to, applied) = lanes.apply(&plan, 0).await?;
                        (to, plan.events, applied)
                    }
                    None => (start, 0, 0),
                };
                replay
                    .progress_base
                    .store(done.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
                // The rest of the fixed range in one ordered pass, when every batch takes its
                // events from reproject: no batch repeats the read's scan or sort (read/one_pass.rs).
                let pass = replay.one_pass(&engine.db, bound);
                let rest = replay
                    .range(
                        from,
                        bound,
                        budget,
                        Some(&engine.cancel),
                        true,
                        Some((counts.events - done).max(0)),
                        pass.as_ref(),
                    )
                    .await;
                if let Some(pass) = &pass {
                    let opened = pass.close().await;
                    tracing::debug!("the bulk replay read its range with {opened} cursor(s)");
                }
                replay
                    .progress_base
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, Error>(applied + rest?)
            }
            .await;
            reporter.replay_finished();
            return applied;
        }
        Ok(0)
    }

    /// A maintenance window: keep catching up until it opens (or refuse outside it, for
    /// `swap`). Returns the events applied meanwhile.
    async fn wait_for_window(&self, replay: &Replay<'_>, cut: &mut Cut<'_>) -> Result<i64> {
        let Steps {
            engine,
            conn,
            run_id,
            opts,
            ..
        } = *self;
        let reporter = engine.reporter;
        let mut applied = 0;
        // A maintenance window: keep catching up until it opens, then check and swap inside it.
        if let (false, Some(window)) = (opts.no_swap, &opts.window) {
            let mut announced = false;
            while let Some(opens) = window.next_open(chrono::Local::now()) {
                if !opts.wait_for_window {
                    runs::set_status(conn, run_id, RunStatus::AwaitingSwap, None).await?;
                    return Err(Error::busy(format!(
                        "run {run_id}: outside the swap window ({window}); it next opens at {}",
                        opens.format("%Y-%m-%d %H:%M:%S %Z")
                    ))
                    .with_hint("nothing was swapped; run `reproject swap` inside the window"));
                }
                if !announced {
                    runs::set_phase(conn, run_id, Phase::Waiting).await?;
                    reporter.step(&progress::Step::WaitingForWindow {
                        window: window.to_string(),
                        opens,
                    });
                    announced = true;
                }
                let until = (opens - chrono::Local::now()).to_std().unwrap_or_default();
                tokio::select! {
                    biased;
                    _ = engine.cancel.cancelled() => {
                        runs::set_status(conn, run_id, RunStatus::AwaitingSwap, None).await?;
                        return Err(Error::interrupted(format!(
                            "run {run_id}: cancelled while waiting for the swap window"
                        ))
                        .with_hint("`reproject swap` swaps it later"));
                    }
                    _ = tokio::time::sleep(until.min(WINDOW_CATCH_UP_EVERY)) => {}
                }
                applied += replay.catch_up(cut, &engine.cancel).await?;
            }
        }
        Ok(applied)
    }

    /// The health checks and the row counts after; a failed check ends the run here (status
    /// `checks_failed`) unless `--skip-checks`.
    async fn checks(&self) -> Result<Vec<CheckResult>> {
        let Steps {
            engine,
            conn,
            run_id,
            target,
            order,
            tables,
            opts,
            ..
        } = *self;
        let reporter = engine.reporter;
        runs::set_phase(conn, run_id, Phase::Checks).await?;
        reporter.step(&progress::Step::RunningChecks);
        let results = checks::run(conn, target, order).await?;
        runs::set_json(
            conn,
            run_id,
            JsonColumn::Checks,
            &serde_json::to_value(&results).unwrap_or_default(),
        )
        .await?;
        let mut after = serde_json::Map::new();
        for t in tables {
            let live = t.live.to_string();
            // The row-count checks just counted them.
            let counted = results
                .iter()
                .find_map(|c| c.rebuilt_rows.as_ref().filter(|(l, _)| *l == live));
            let rows = match counted {
                Some((_, n)) => *n,
                None => crate::db::catalog::count_rows(conn, &t.rebuild).await?,
            };
            after.insert(live, json!(rows));
        }
        runs::set_json(conn, run_id, JsonColumn::RowsAfter, &after.into()).await?;
        let failed: Vec<&CheckResult> = results.iter().filter(|c| !c.passed).collect();
        if !failed.is_empty() {
            if opts.skip_checks {
                reporter.warn(&Warning::ChecksFailedSwappingAnyway {
                    failed: failed.len(),
                });
            } else {
                runs::set_status(
                    conn,
                    run_id,
                    RunStatus::ChecksFailed,
                    Some("health checks failed"),
                )
                .await?;
                let mut err = Error::health_check(format!(
                    "run {run_id}: {} health check(s) failed; nothing was swapped",
                    failed.len()
                ));
                for c in failed {
                    err = err.caused_by(format!(
                        "projection `{}`: {}: {}",
                        c.projection, c.name, c.detail
                    ));
                }
                return Err(err.with_hint(
                    "the rebuilt tables are kept for inspection; fix the cause and rebuild, or `reproject swap --skip-checks` if the difference is expected",
                ));
            }
        }
        Ok(results)
    }

    /// Under the swap's locks: the final tail (or the release when it is too long), the
    /// partial copy, the exchange of the tables, the hand-overs and the record of the swap.
    async fn under_locks(
        &self,
        replay: &Replay<'_>,
        cut: &mut Cut<'_>,
        exchange: Exchange<'_>,
        held: swap::Held,
    ) -> Result<
        swap::Under<(
            i64,
            Option<i64>,
            Vec<crate::pipeline::swap::exchange::Validation>,
        )>,
    > {
        let Exchange {
            prepared,
            retire,
            redefinitions,
            retiring,
        } = exchange;
        let Steps {
            engine,
            conn,
            run_id,
            names,
            projector,
            tables,
            opts,
            ..
        } = *self;
        let (reporter, source) = (engine.reporter, replay.source);
        let laps = &prepared.laps;
        laps.start();
        // The final tail: events committed since the last catch-up, applied while
        // the live tables are locked, so the new tables hold every event up to the
        // swap. Too long a tail would keep readers waiting: then release, catch up
        // outside, try again.
        let at = runs::cursor(conn, run_id).await?;
        let bound = cut.bound(conn, &at).await?.filter(|b| !b.reached_by(&at));
        let pending = match &bound {
            Some(b) => source.count(conn, &at, b).await?.events,
            None => 0,
        };
        if pending > replay.applier.tail_limit(&opts.lock) {
            return Ok(swap::Under::Release(pending));
        }
        laps.lap("tail bound");
        let tail = match bound {
            Some(bound) => replay.final_tail(at, bound, pending).await?,
            None => 0,
        };
        laps.lap("tail");
        swap::check_hold(held.since, &opts.lock, "the final tail was applied")?;
        let swapped_at = runs::cursor(conn, run_id).await?;
        opts.scope
            .at_swap(
                conn,
                engine.config,
                run_id,
                tables,
                source,
                projector,
                &swapped_at,
                opts.lock.max_tail_events,
                reporter,
            )
            .await?;
        let position = swapped_at.position;
        swap::retire_old_tables(conn, run_id, retire).await?;
        laps.lap("retire old tables");
        let validations =
            swap::swap_generation(conn, prepared, run_id, tables, redefinitions).await?;
        crate::pipeline::retire::park(conn, run_id, retiring).await?;
        laps.lap("registry");
        crate::pipeline::swap::handover::apply(conn, engine.config, names, &swapped_at, reporter)
            .await?;
        // `reproject run` continues on the new tables from exactly here
        // (commands/run.rs).
        crate::state::live_checkpoints::hand_over(conn, run_id, names, position).await?;
        laps.lap("hand-over");
        swap::check_hold(held.since, &opts.lock, "the tables were exchanged")?;
        let hold_ms = held.since.elapsed().as_millis() as i64;
        runs::add_lock_attempt(
            conn,
            run_id,
            &json!({ "outcome": "swapped", "blockers": held.blockers, "lock_wait_ms": held.wait.as_millis() as i64,
                     "lock_hold_ms": hold_ms, "tail_events": tail, "steps": laps.to_json() }),
        )
        .await?;
        fence::prove(conn, LockClass::Projection, names).await?;
        runs::set_swapped(
            conn,
            run_id,
            position,
            held.wait.as_millis() as i64,
            hold_ms,
        )
        .await?;
        Ok(swap::Under::Commit((tail, position, validations)))
    }

    /// Analyze, then the locked section (final tail, exchange, hand-over) until it commits,
    /// then what follows a committed swap (durability, standbys, foreign keys, retired tables).
    async fn swap(
        &self,
        replay: &Replay<'_>,
        cut: &mut Cut<'_>,
        mut outcome: RebuildOutcome,
    ) -> Result<RebuildOutcome> {
        let Steps {
            engine,
            conn,
            run_id,
            names,
            target,
            tables,
            opts,
            ..
        } = *self;
        let reporter = engine.reporter;
        runs::set_phase(conn, run_id, Phase::Swap).await?;
        // VACUUM as well as ANALYZE: handlers that update rows leave dead row versions, and
        // the first reads of the table once live would prune them, writing WAL that a hot
        // standby can replay only once no reader pins the page: a standby that is behind then
        // cancels its readers of the live table ("buffer pin" conflicts). Vacuumed now, while
        // nobody reads it, the table goes live clean (and with its visibility map set).
        reporter.step(&progress::Step::Vacuuming);
        for t in tables {
            conn.batch_execute(&format!("VACUUM (ANALYZE) {}", t.rebuild.quoted()))
                .await
                .with_context(|| format!("cannot vacuum and analyze `{}`", t.rebuild))?;
        }
        // Retired tables an earlier swap could not drop go first: nothing depends on them.
        swap::drop_retired(conn, names, reporter).await?;
        let mut retire = swap::old_tables_to_retire(conn, tables).await?;
        // The tables the projections retire (checked again: a view may have appeared on one
        // since the rebuild started), locked with the live tables.
        let retiring = retiring_at_swap(conn, engine, names).await?;
        for r in &retiring {
            retire.extend(swap::earlier_old_table(conn, &r.live, &r.parked).await?);
        }
        // Tables whose foreign keys point at ours, and views reading them, are altered too; they
        // are locked first, in the order readers lock them (no deadlock with a reader of a view).
        let lock_list = swap::lock_order(
            swap::dependents_to_lock(conn, tables).await?,
            // A table the run adds does not exist yet: nothing to lock (its swap checks, under
            // the locks, that the name is still free).
            (tables.iter().filter(|t| !t.added).map(|t| t.live.clone()))
                .chain(retiring.iter().map(|r| r.live.clone())),
            (tables.iter().map(|t| t.rebuild.clone()))
                .chain(retire.iter().map(|(old, _)| old.clone())),
        );
        let live: Vec<_> = tables
            .iter()
            .filter(|t| !t.added)
            .map(|t| t.live.clone())
            .collect();
        // A preview schema's views read the rebuild tables and stay with them (preview.rs).
        let prepared = crate::pipeline::swap::exchange::Prepared::prepare(conn, &live)
            .await?
            .followed_by(crate::pipeline::preview::followers(conn, run_id).await?);
        // The dependents the run's recorded shape changes break, with the user's definitions
        // (checked up front by preflight; read from the run's record, so `swap` and `--resume`
        // redefine exactly what the clone was shaped for).
        let changes: Vec<_> = crate::state::shapes::of_run(conn, run_id)
            .await?
            .iter()
            .map(|r| r.shape_change())
            .collect();
        let redefinitions = crate::pipeline::shape::dependents::for_swap(
            conn,
            engine.config,
            target.resolved,
            &changes,
        )
        .await?;
        opts.scope.before_lock(conn, tables, reporter).await?;
        reporter.step(&progress::Step::Swapping {
            tables: tables.len(),
        });
        let exchange = Exchange {
            prepared: &prepared,
            retire: &retire,
            redefinitions: &redefinitions,
            retiring: &retiring,
        };
        let mut retries = 0u32;
        // The connection went as the swap committed, and the swap did commit (read back).
        let mut lost_at_commit = false;
        let (wait, hold, tail, position, validations) = loop {
            // What the locks looked like, for the record of an attempt that failed under them.
            let mut under: Option<swap::Held> = None;
            let section = swap::locked(
                conn,
                &lock_list,
                opts.lock,
                reporter,
                &engine.cancel,
                |held| {
                    under = Some(held.clone());
                    self.under_locks(replay, &mut *cut, exchange, held)
                },
            )
            .await;
            match section {
                Ok(swap::Section::Committed(held, hold, (tail, position, validations))) => {
                    break (held.wait, hold, tail, position, validations)
                }
                // The COMMIT was sent, its answer lost: the run's status says whether it took.
                Ok(swap::Section::CommitLost(held, (tail, position, validations), e)) => {
                    match committed_despite_loss(engine, run_id).await {
                        Some(true) => {
                            lost_at_commit = true;
                            break (held.wait, held.since.elapsed(), tail, position, validations);
                        }
                        Some(false) => return Err(e.context(format!(
                            "run {run_id}: the connection was lost before the swap committed; nothing was swapped"
                        ))),
                        None => return Err(e
                            .context(format!(
                                "run {run_id}: the connection was lost as the swap committed, and the server could not be reached to learn whether it did"
                            ))
                            .with_hint("`reproject status` shows whether the run is swapped; if it is not, `reproject rebuild --resume` finishes it")),
                    }
                }
                Ok(swap::Section::NotLocked(e, blockers)) => {
                    // The rebuild itself is complete and checked: it can be swapped later.
                    runs::add_lock_attempt(
                        conn,
                        run_id,
                        &json!({ "outcome": "not_locked", "error": e.plain(), "blockers": blockers }),
                    )
                    .await?;
                    runs::set_status(conn, run_id, RunStatus::AwaitingSwap, Some(&e.plain())).await?;
                    return Err(e);
                }
                Ok(swap::Section::Released(held, hold, pending)) => {
                    let hold_ms = hold.as_millis() as i64;
                    runs::add_lock_attempt(
                        conn,
                        run_id,
                        &json!({ "outcome": "tail_too_long", "blockers": held.blockers, "lock_wait_ms": held.wait.as_millis() as i64,
                                 "lock_hold_ms": hold_ms, "tail_events": pending }),
                    )
                    .await?;
                    retries += 1;
                    // Past the retries, the error that ends the swap; else a warning.
                    let released = replay.applier.tail_released(
                        run_id, pending, retries, hold_ms, &opts.lock, reporter,
                    );
                    if let Err(e) = released {
                        runs::set_status(conn, run_id, RunStatus::AwaitingSwap, Some(&e.plain()))
                            .await?;
                        return Err(e);
                    }
                    outcome.events_applied += replay.catch_up(cut, &engine.cancel).await?;
                }
                Err(e) => {
                    if let (ErrorKind::Busy, Some(held)) = (e.kind, &under) {
                        runs::add_lock_attempt(
                            conn,
                            run_id,
                            &json!({ "outcome": "hold_exceeded", "lock_wait_ms": held.wait.as_millis() as i64,
                                     "lock_hold_ms": held.since.elapsed().as_millis() as i64 }),
                        )
                        .await?;
                        runs::set_status(conn, run_id, RunStatus::AwaitingSwap, Some(&e.plain()))
                            .await?;
                    }
                    return Err(e);
                }
            }
        };
        let outcome = swapped(outcome, wait, hold, tail, position);
        Ok(self
            .after_commit(outcome, lost_at_commit, hold, &validations, &retire)
            .await)
    }

    /// After the swap committed (also when only the run's status shows it did, the connection
    /// lost at the commit): its durability, the standbys, the foreign keys, the retired tables,
    /// the rollback caveat. What fails here is a warning, never a failure.
    async fn after_commit(
        &self,
        mut outcome: RebuildOutcome,
        lost_at_commit: bool,
        hold: std::time::Duration,
        validations: &[crate::pipeline::swap::exchange::Validation],
        retire: &[(
            crate::model::ident::TableName,
            crate::model::ident::TableName,
        )],
    ) -> RebuildOutcome {
        let Steps {
            engine,
            conn,
            run_id,
            names,
            opts,
            ..
        } = *self;
        let reporter = engine.reporter;
        // From here the swap has committed: whatever fails is a warning, never a failure.
        let fresh;
        let conn = if lost_at_commit {
            reporter.warn(&Warning::ConnectionLostAtSwapCommit { run_id });
            match engine.db.dedicated().await {
                Ok(c) => {
                    fresh = c;
                    &fresh
                }
                Err(e) => {
                    reporter.warn(&Warning::CannotReconnectAfterSwap { error: e.plain() });
                    return outcome;
                }
            }
        } else {
            conn
        };
        if let Err(e) = swap::confirm_durable(conn, run_id, Some(hold.as_millis() as i64)).await {
            reporter.warn(&Warning::DurabilityUnconfirmed {
                after: Operation::Swap,
                error: e.plain(),
            });
        }
        crate::pipeline::swap::standby::after_commit(
            conn,
            run_id,
            Operation::Swap,
            hold,
            opts.lock.standby_wait,
            reporter,
        )
        .await;
        if let Err(e) = validate_foreign_keys(conn, run_id, validations, reporter).await {
            reporter.warn(&Warning::ForeignKeysUnvalidated {
                after: Operation::Swap,
                error: e.plain(),
            });
        }
        // The retired tables were the rollback point until the commit; now they can go.
        for (_, retired) in retire {
            if let Err(e) = swap::drop_helper(conn, retired).await {
                reporter.warn(&Warning::DropFailed {
                    table: retired.to_string(),
                    error: e.plain(),
                });
            }
        }
        // Whether a rollback will need consent; a failure to tell is a warning: the swap committed.
        match crate::pipeline::old_generation::rollback_caveat(conn, engine.config, run_id, names)
            .await
        {
            Ok(caveat) => outcome.rollback_caveat = caveat,
            Err(e) => reporter.warn(&Warning::RollbackCaveatUnknown { error: e.plain() }),
        }
        outcome
    }
}

fn swapped(
    mut outcome: RebuildOutcome,
    wait: std::time::Duration,
    hold: std::time::Duration,
    tail: i64,
    position: Option<i64>,
) -> RebuildOutcome {
    outcome.events_applied += tail;
    outcome.status = OutcomeStatus::Run(RunStatus::Swapped);
    outcome.swap_position = position;
    outcome.lock_wait_ms = Some(wait.as_millis() as i64);
    outcome.lock_hold_ms = Some(hold.as_millis() as i64);
    outcome
}

/// Validates the foreign keys the swap re-created `NOT VALID`; failures are reported and
/// recorded, not fatal: the swap has committed, and the constraint still guards new rows.
pub(crate) async fn validate_foreign_keys(
    conn: &Client,
    run_id: i64,
    validations: &[crate::pipeline::swap::exchange::Validation],
    reporter: &dyn Reporter,
) -> Result<()> {
    if validations.is_empty() {
        return Ok(());
    }
    reporter.step(&progress::Step::ValidatingForeignKeys {
        count: validations.len(),
    });
    let failed = crate::pipeline::swap::exchange::validate_foreign_keys(conn, validations).await;
    for f in &failed {
        reporter.warn(&Warning::ForeignKeyNotValid {
            constraint: f.to_string(),
        });
    }
    if !failed.is_empty() {
        conn.execute(
            "UPDATE reproject.runs SET unvalidated_foreign_keys = $2 WHERE id = $1",
            &[&run_id, &failed],
        )
        .await
        .context("cannot record the unvalidated foreign keys")?;
    }
    Ok(())
}

/// How often a rebuild waiting for its swap window catches up.
const WINDOW_CATCH_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Records how a run ended when it did not end well, then passes the error on.
async fn record_outcome(
    engine: &Engine<'_>,
    run_id: i64,
    result: Result<RebuildOutcome>,
) -> Result<RebuildOutcome> {
    let err = match result {
        Ok(outcome) => return Ok(outcome),
        Err(e) => e,
    };
    let status = match err.kind {
        ErrorKind::Interrupted => RunStatus::Cancelled,
        // The rebuild is complete; once the cause is fixed, `swap` can try again.
        ErrorKind::Fidelity => RunStatus::AwaitingSwap,
        _ => RunStatus::Failed,
    };
    // A fresh pooled connection: the run's own connection may be what failed.
    let client = match engine.db.get().await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!("could not record run {run_id} as {status}: {e}");
            return Err(err);
        }
    };
    // Refused checks and a swap that could not get its locks already recorded a status that
    // keeps the run swappable; keep it.
    let current = runs::get(&**client, run_id).await.ok().flatten();
    // A failure during the swap phase rolled the swap transaction back as a whole (e.g. the
    // server ended a frozen swap session): the rebuild is complete, a later swap can finish it.
    let status = match &current {
        Some(r) if r.phase == Phase::Swap && err.kind != ErrorKind::Interrupted => {
            RunStatus::AwaitingSwap
        }
        _ => status,
    };
    if let Some(run) = current.filter(|r| r.status == RunStatus::Running) {
        if runs::set_status(&client, run_id, status.clone(), Some(&err.plain()))
            .await
            .is_err()
        {
            // The guard went with the connection (status changes are fenced): take it again
            // to record the outcome, unless another process holds it now, and only while the
            // run is still as this process left it.
            let recorded = async {
                let _locks = lock_projections(&engine.db, &run.projections).await?;
                if runs::get(&**client, run_id).await?.map(|r| r.status) == Some(RunStatus::Running)
                {
                    runs::set_status(&client, run_id, status.clone(), Some(&err.plain())).await?;
                }
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = recorded {
                tracing::warn!("could not record run {run_id} as {status}: {e}");
            }
        }
    }
    Err(err)
}

/// The tables the swap of `names` retires (`retire`), with a note for each entry that names no
/// table any more; refused when something depends on one (retire.rs).
async fn retiring_at_swap(
    conn: &Client,
    engine: &Engine<'_>,
    names: &[String],
) -> Result<Vec<crate::pipeline::retire::Retiring>> {
    let (retiring, notes) = crate::pipeline::retire::resolve(conn, engine.config, names).await?;
    for note in &notes {
        engine.reporter.step(note);
    }
    crate::pipeline::preflight::refuse(
        "swap",
        crate::pipeline::retire::refusals(conn, &retiring).await?,
    )?;
    Ok(retiring)
}
