//! `rollback` (put the previous tables back) and `cancel` (ask a running rebuild to stop).

use crate::commands::Engine;
use crate::error::{Error, Result};
use crate::model::ident::quote;
use crate::pipeline::old_generation::{Keeper, OldGeneration, Origin, Unkept};
use crate::pipeline::swap::{self, LockPolicy};
use crate::progress::{Operation, Step, Warning};
use crate::read::source::EventSource;
use crate::state::fence;
use crate::state::helpers::{self, Ownership};
use crate::state::locks::{lock_projections, LockClass};
use crate::state::runs::{self, RunStatus, RunTable};
use serde::Serialize;
use serde_json::json;

/// What a [`rollback`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The run whose swap was undone.
    pub run_id: i64,
    /// Its projections.
    pub projections: Vec<String>,
    /// (live table, where the replaced table is kept now)
    pub kept: Vec<(String, String)>,
    /// How long the rollback waited for its locks.
    pub lock_wait_ms: i64,
    /// How long it held them.
    pub lock_hold_ms: i64,
    /// Events applied to the restored tables since the swap, before they went back in.
    pub events_applied: i64,
    /// The position the restored tables hold, when the rollback caught them up.
    pub position: Option<i64>,
    /// The run's preview views (`rebuild --preview-schema`), dropped with the rollback: they
    /// would show the table it parks.
    pub preview_dropped: Vec<String>,
}

/// How to [`rollback`].
#[derive(Debug, Clone, Copy)]
pub struct RollbackOptions {
    /// How to ask for and hold the locks, as for a swap.
    pub lock: LockPolicy,
    /// Events per transaction while catching the previous tables up.
    pub batch_size: i64,
    /// Consent to catch the previous tables up with the config's handlers when the handlers
    /// that built them are not recorded or no longer apply (`--with-current-handlers`).
    pub with_current_handlers: bool,
    /// Consider the swaps of every projection recorded in the database, not only the config's
    /// (`--all-projections`): named projections may then be any recorded one.
    pub all_projections: bool,
}

/// Refuses (before locking) when events arrived since the swap and nobody can apply them.
async fn refuse_if_stale(
    old: &mut OldGeneration<'_>,
    run: &runs::Run,
    unkept: &Unkept,
) -> Result<()> {
    let (_, pending) = old.pending().await?;
    if pending > 0 {
        return Err(stale(run, pending, unkept));
    }
    Ok(())
}

fn stale(run: &runs::Run, pending: i64, unkept: &Unkept) -> Error {
    let names = run.projections.join(" ");
    let hint = match &unkept.current {
        Ok(files) => format!(
            "nothing was changed; `reproject rollback --with-current-handlers {names}` applies those events to the previous tables with this config's handlers ({files}) first, then puts them back (they may differ from whatever built those tables); or keep the current tables"
        ),
        Err(why) => format!(
            "nothing was changed; this config's handlers cannot be applied to them either ({why}); keep the current tables (to change them, fix the projection and run `reproject rebuild {names}`)"
        ),
    };
    Error::config(format!(
        "refusing to roll back run {}: {pending} event(s) arrived since the swap and cannot be applied to the previous tables; they would come back stale",
        run.id
    ))
    .caused_by(&unkept.why)
    .with_hint(hint)
}

/// The run `rollback` undoes: the newest swap of the selected projections, refused when
/// rolling it back would change projections the selection or the config does not cover.
async fn swap_to_roll_back(
    engine: &Engine<'_>,
    selection: &[String],
    opts: RollbackOptions,
) -> Result<runs::Run> {
    let pooled = engine.db.get().await?;
    if !crate::state::exists(&**pooled).await? {
        return Err(Error::config(
            "nothing to roll back: no swap has been recorded in this database",
        ));
    }
    crate::commands::scope::check(engine, selection, opts.all_projections)?;
    // The newest swap that touched any selected projection (any of the config's, if none
    // selected; any at all with --all-projections).
    let newest: Option<runs::Run> = if selection.is_empty() && opts.all_projections {
        runs::latest_swapped(&**pooled).await?
    } else {
        let names: Vec<String> = if selection.is_empty() {
            engine
                .config
                .projections
                .iter()
                .map(|p| p.name.clone())
                .collect()
        } else {
            selection.to_vec()
        };
        let mut newest: Option<runs::Run> = None;
        for name in &names {
            if let Some(r) = runs::latest_swapped_for(&**pooled, name).await? {
                if newest.as_ref().is_none_or(|n| r.swapped_at > n.swapped_at) {
                    newest = Some(r);
                }
            }
        }
        newest
    };
    drop(pooled);
    let Some(run) = newest.filter(|r| r.status == RunStatus::Swapped) else {
        return Err(Error::config("nothing to roll back: the newest swap of these projections was already rolled back (or there was none)")
            .with_hint("see `reproject history`"));
    };
    // A run that also swapped projections other configs own: rolling it back from this one
    // would change their tables behind their back, so only with the explicit flag.
    let foreign: Vec<&String> = run
        .projections
        .iter()
        .filter(|p| engine.config.projection_index(p).is_none())
        .collect();
    if !foreign.is_empty() && !opts.all_projections {
        return Err(Error::config(format!(
            "run {} swapped {} together, and {} {} not in this config; rolling it back would change tables this config does not own, and rolling back only some would mix generations",
            run.id,
            run.projections.join(", "),
            foreign.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "),
            if foreign.len() == 1 { "is" } else { "are" }
        ))
        .with_hint(format!(
            "nothing was changed; use the config that has all of them, or run `reproject rollback --all-projections {}` to roll the whole run back from this one",
            run.projections.join(" ")
        )));
    }
    if !selection.is_empty() {
        if let Some(extra) = run.projections.iter().find(|p| !selection.contains(p)) {
            return Err(Error::config(format!(
                "run {} swapped {} together; rolling back only some of them would mix generations (`{extra}` is not named)",
                run.id,
                run.projections.join(", ")
            ))
            .with_hint(format!(
                "run `reproject rollback{} {}`",
                if opts.all_projections || !foreign.is_empty() {
                    " --all-projections"
                } else {
                    ""
                },
                run.projections.join(" ")
            )));
        }
    }
    Ok(run)
}

/// Swaps the `_old` tables of the newest swap of the selected projections back in, in one
/// transaction; the tables they replace are kept as `x_rolled_back_<run>`. Nothing is dropped.
pub async fn rollback(
    engine: &Engine<'_>,
    selection: &[String],
    opts: RollbackOptions,
) -> Result<RollbackReport> {
    let run = swap_to_roll_back(engine, selection, opts).await?;
    // What the rollback will alter, before any lock is taken (preflight.rs).
    {
        let pooled = engine.db.get().await?;
        let tables = runs::tables(&**pooled, run.id).await?;
        let mut refusals = crate::pipeline::preflight::state_schema(&**pooled, false).await?;
        refusals.extend(
            crate::pipeline::preflight::exchange(
                &**pooled,
                &tables,
                |t| &t.old,
                "the rollback puts it back in place of the live table",
            )
            .await?,
        );
        refusals
            .extend(crate::pipeline::preflight::parked_names(&**pooled, &tables, run.id).await?);
        crate::pipeline::preflight::refuse(&format!("roll back run {}", run.id), refusals)?;
    }
    let _locks = lock_projections(&engine.db, &run.projections).await?;
    let conn = engine.db.dedicated().await?;
    let tables: Vec<RunTable> = runs::tables(&conn, run.id).await?;
    // The tables the swap retired (`retire`) come back under their names.
    let olds: Vec<_> = tables.iter().map(|t| t.old.clone()).collect();
    let retired = crate::pipeline::retire::parked_by(&conn, run.id, &olds).await?;
    crate::pipeline::retire::check_restorable(&conn, run.id, &retired).await?;
    for t in &tables {
        if t.added {
            // Nothing to bring back: the swap created it; it is parked like a replaced table.
            let parked = crate::model::ident::rolled_back_table(&t.live, run.id);
            if !matches!(helpers::ownership(&conn, &parked).await?, Ownership::Absent) {
                return Err(Error::runtime(format!(
                    "cannot roll back run {}: `{parked}` already exists",
                    run.id
                )));
            }
            continue;
        }
        match helpers::ownership(&conn, &t.old).await? {
            Ownership::Ours(h) if h.kind == "old" && h.run_id == Some(run.id) => {}
            Ownership::Ours(h) if h.kind == "old" => {
                return Err(Error::runtime(format!(
                    "cannot roll back run {}: `{}` is no longer the table its swap replaced, but the rollback point of a later swap (run {})",
                    run.id,
                    t.old,
                    h.run_id.map_or_else(|| "?".to_string(), |r| r.to_string())
                ))
                .with_hint("nothing was changed; there is one level of rollback: see `reproject history`"))
            }
            _ => {
                return Err(Error::runtime(format!(
                    "cannot roll back run {}: the previous table `{}` is gone (dropped by `cleanup`, or replaced)",
                    run.id, t.old
                ))
                .with_hint("rebuild instead"))
            }
        }
        let parked = crate::model::ident::rolled_back_table(&t.live, run.id);
        if !matches!(helpers::ownership(&conn, &parked).await?, Ownership::Absent) {
            return Err(Error::runtime(format!(
                "cannot roll back run {}: `{parked}` already exists",
                run.id
            )));
        }
    }
    engine.reporter.step(&Step::RollingBack {
        run_id: run.id,
        projections: run.projections.clone(),
    });
    // Retired tables an earlier swap could not drop: nothing depends on them.
    swap::drop_retired(&conn, &run.projections, engine.reporter).await?;
    // The previous tables first get the events that arrived since the swap (old_generation.rs).
    let resolved = engine.validate().await?;
    let source = EventSource::new(&engine.config.events, &resolved);
    crate::apply::sql::session_setup(&conn).await?;
    let mut old = OldGeneration::prepare(
        &conn,
        engine.config,
        &resolved,
        &source,
        &run,
        &tables,
        &retired,
        opts.batch_size,
        opts.with_current_handlers,
    )
    .await?;
    match &old.keeper {
        Keeper::Handlers(_, Origin::Recorded(from)) => {
            engine
                .reporter
                .step(&Step::PreviousTablesWithRecordedHandlers {
                    runs: from.to_vec(),
                })
        }
        Keeper::Handlers(_, Origin::Current { files, why }) => {
            engine
                .reporter
                .warn(&Warning::PreviousTablesWithCurrentHandlers {
                    why: why.clone(),
                    files: files.clone(),
                    from: old.at.into(),
                })
        }
        Keeper::Runner(why) => engine
            .reporter
            .warn(&Warning::RunnerCatchesUpPreviousTables { why: why.clone() }),
        Keeper::Nobody(_) => {}
    }
    let mut events_applied = old.catch_up(&engine.cancel, engine.reporter).await?;
    // Dependents first, in the order readers lock them (see swap::dependents_to_lock).
    let lock_list = swap::lock_order(
        swap::dependents_to_lock(&conn, &tables).await?,
        tables.iter().map(|t| t.live.clone()),
        (tables.iter().filter(|t| !t.added).map(|t| t.old.clone()))
            .chain(retired.iter().map(|h| h.table.clone())),
    );
    let live: Vec<_> = tables.iter().map(|t| t.live.clone()).collect();
    let prepared = crate::pipeline::swap::exchange::Prepared::prepare(&conn, &live).await?;
    let redefinitions = swap::recorded_redefinitions(&conn, run.id, &tables).await?;
    let previews: Vec<String> = crate::state::previews::views_of_run(&conn, run.id)
        .await?
        .iter()
        .map(|v| format!("{}.{}", quote(&v.schema), quote(&v.name)))
        .collect();
    let (wait, held_ms, validations, applied) = put_back(
        engine,
        &conn,
        &run,
        &tables,
        &mut old,
        &lock_list,
        &prepared,
        &redefinitions,
        &retired,
        opts,
    )
    .await?;
    events_applied += applied;
    // The rollback has committed: what fails from here is a warning, never a failure.
    if let Err(e) = swap::confirm_durable(&conn, run.id, None).await {
        engine.reporter.warn(&Warning::DurabilityUnconfirmed {
            after: Operation::Rollback,
            error: e.plain(),
        });
    }
    crate::pipeline::swap::standby::after_commit(
        &conn,
        run.id,
        Operation::Rollback,
        std::time::Duration::from_millis(held_ms.max(0) as u64),
        opts.lock.standby_wait,
        engine.reporter,
    )
    .await;
    if let Err(e) = crate::commands::rebuild::validate_foreign_keys(
        &conn,
        run.id,
        &validations,
        engine.reporter,
    )
    .await
    {
        engine.reporter.warn(&Warning::ForeignKeysUnvalidated {
            after: Operation::Rollback,
            error: e.plain(),
        });
    }
    Ok(RollbackReport {
        run_id: run.id,
        projections: run.projections.clone(),
        kept: tables
            .iter()
            .map(|t| {
                (
                    t.live.to_string(),
                    crate::model::ident::rolled_back_table(&t.live, run.id).to_string(),
                )
            })
            .collect(),
        lock_wait_ms: wait.as_millis() as i64,
        lock_hold_ms: held_ms,
        events_applied,
        position: old
            .at
            .position
            .filter(|_| matches!(old.keeper, Keeper::Handlers(..))),
        preview_dropped: previews,
    })
}

/// The rollback's locked section, until it commits: the final tail to the `_old` tables (or
/// the release when it is too long, then a catch-up and another attempt), the exchange back,
/// the hand-overs and the record. Returns the lock wait, the hold, the foreign keys to
/// validate and the events applied to the `_old` tables meanwhile.
#[allow(clippy::too_many_arguments)]
async fn put_back(
    engine: &Engine<'_>,
    conn: &tokio_postgres::Client,
    run: &runs::Run,
    tables: &[RunTable],
    old: &mut OldGeneration<'_>,
    lock_list: &[crate::model::ident::TableName],
    prepared: &crate::pipeline::swap::exchange::Prepared,
    redefinitions: &swap::Redefinitions,
    retired: &[crate::state::helpers::HelperTable],
    opts: RollbackOptions,
) -> Result<(
    std::time::Duration,
    i64,
    Vec<crate::pipeline::swap::exchange::Validation>,
    i64,
)> {
    let mut retries = 0u32;
    let mut events_applied = 0;
    let (wait, held_ms, validations) = loop {
        if let Keeper::Nobody(unkept) = &old.keeper {
            let unkept = unkept.clone();
            refuse_if_stale(old, run, &unkept).await?;
        }
        let old_ref = &mut *old;
        let section = swap::locked(
            conn,
            lock_list,
            opts.lock,
            engine.reporter,
            &engine.cancel,
            |held| async move {
                let old = old_ref;
                // The final tail, under the lock, as in a swap.
                let (bound, pending) = old.pending().await?;
                let caught_up = match &old.keeper {
                    Keeper::Handlers(..) => {
                        if pending > opts.lock.max_tail_events {
                            return Ok(swap::Under::Release(pending));
                        }
                        if let Some(bound) = bound {
                            old.apply(bound, false, None, engine.reporter).await?;
                        }
                        Some(old.at)
                    }
                    Keeper::Runner(_) => None,
                    Keeper::Nobody(unkept) if pending > 0 => {
                        return Err(stale(run, pending, unkept))
                    }
                    Keeper::Nobody(_) => None,
                };
                swap::check_hold(held.since, &opts.lock, "the previous tables were caught up")?;
                // The run's preview views read the table that is parked now: they go, in the
                // same transaction (locked with the live tables' other dependents).
                crate::pipeline::preview::drop_for_run(conn, run.id).await?;
                let validations = swap::swap_back(conn, prepared, run.id, tables, redefinitions).await?;
                crate::pipeline::retire::restore(conn, retired).await?;
                let position = caught_up.as_ref().and_then(|c| c.position);
                if let Some(at) = &caught_up {
                    // External projectors continue on the restored tables from where they stand.
                    crate::pipeline::swap::handover::apply(conn, engine.config, &run.projections, at, engine.reporter)
                        .await?;
                }
                // With the tables caught up, `reproject run` continues right after them; else it
                // re-applies what the restored tables missed (commands/run.rs).
                crate::state::live_checkpoints::hand_back(conn, run.id, &run.projections, position).await?;
                fence::prove(conn, LockClass::Projection, &run.projections).await?;
                runs::set_rolled_back(conn, run.id).await?;
                runs::add_lock_attempt(
                    conn,
                    run.id,
                    &json!({ "rollback": true, "outcome": "rolled_back", "blockers": held.blockers, "lock_wait_ms": held.wait.as_millis() as i64,
                             "lock_hold_ms": held.since.elapsed().as_millis() as i64, "tail_events": pending,
                             "position": position }),
                )
                .await?;
                Ok(swap::Under::Commit((validations, pending)))
            },
        )
        .await?;
        match section {
            swap::Section::Committed(held, hold, (validations, tail)) => {
                if matches!(old.keeper, Keeper::Handlers(..)) {
                    events_applied += tail;
                }
                break (held.wait, hold.as_millis() as i64, validations);
            }
            swap::Section::CommitLost(_, _, e) => return Err(e),
            swap::Section::NotLocked(e, blockers) => {
                runs::add_lock_attempt(
                    conn,
                    run.id,
                    &json!({ "rollback": true, "outcome": "not_locked", "error": e.plain(), "blockers": blockers }),
                )
                .await?;
                return Err(e);
            }
            swap::Section::Released(_, _, pending) => {
                retries += 1;
                if retries > swap::TAIL_RETRIES {
                    return Err(Error::busy(format!(
                        "run {}: {pending} event(s) were pending each time the locks were taken, more than --max-tail-events {}; nothing was rolled back",
                        run.id, opts.lock.max_tail_events
                    ))
                    .with_hint("run `reproject rollback` again when the event rate is lower, or raise --max-tail-events"));
                }
                engine.reporter.warn(&Warning::RollbackTailRetry {
                    pending,
                    max_tail_events: opts.lock.max_tail_events,
                });
                events_applied += old.catch_up(&engine.cancel, engine.reporter).await?;
            }
        }
    };
    Ok((wait, held_ms, validations, events_applied))
}

/// `reproject cancel [RUN]`: asks a running rebuild, from any terminal or machine, to stop
/// after its current batch. It then exits 130 and stays resumable (`rebuild --resume`).
/// Without a run id, the only running rebuild. Returns the run asked.
pub async fn cancel(engine: &Engine<'_>, run: Option<i64>, by: &str) -> Result<i64> {
    let client = engine.db.get().await?;
    if !crate::state::exists(&**client).await? {
        return Err(Error::config(
            "nothing to cancel: no rebuild has been recorded in this database",
        ));
    }
    let running: Vec<runs::Run> = runs::list(&**client, 1000)
        .await?
        .into_iter()
        .filter(|r| r.status == RunStatus::Running)
        .collect();
    let target = match run {
        Some(id) => running
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| {
                Error::config(format!("run {id} is not running"))
                    .with_hint("see `reproject history`")
            })?,
        None => match running.as_slice() {
            [one] => one.clone(),
            [] => return Err(Error::config("nothing to cancel: no rebuild is running")),
            many => {
                return Err(Error::config(format!(
                    "several rebuilds are running: {}",
                    crate::commands::run_list(many)
                ))
                .with_hint("name the run: `reproject cancel RUN`"));
            }
        },
    };
    runs::request_cancel(&**client, target.id, by).await?;
    Ok(target.id)
}
