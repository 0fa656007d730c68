//! `rollback` (put the previous tables back) and `cleanup` (drop helper tables).

use super::old_generation::{Keeper, OldGeneration};
use super::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::source::EventSource;
use crate::state::helpers::{self, HelperTable, Ownership};
use crate::state::locks::lock_projections;
use crate::state::runs::{self, RunTable};
use crate::swap::{self, LockPolicy};
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};

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
}

/// How to [`rollback`].
#[derive(Debug, Clone, Copy)]
pub struct RollbackOptions {
    /// How to ask for and hold the locks, as for a swap.
    pub lock: LockPolicy,
    /// Events per transaction while catching the previous tables up.
    pub batch_size: i64,
}

/// Refuses (before locking) when events arrived since the swap and nobody can apply them.
async fn refuse_if_stale(old: &mut OldGeneration<'_>, run_id: i64, why: &str) -> Result<()> {
    let (_, pending) = old.pending().await?;
    if pending > 0 {
        return Err(stale(run_id, pending, why));
    }
    Ok(())
}

fn stale(run_id: i64, pending: i64, why: &str) -> Error {
    Error::config(format!(
        "refusing to roll back run {run_id}: {pending} event(s) arrived since the swap and cannot be applied to the previous tables; they would come back stale"
    ))
    .caused_by(why)
    .with_hint("nothing was changed; rebuild with the previous handlers instead (`reproject rebuild`), or keep the current tables")
}

/// Swaps the `_old` tables of the newest swap of the selected projections back in, in one
/// transaction; the tables they replace are kept as `x_rolled_back_<run>`. Nothing is dropped.
pub async fn rollback(
    engine: &Engine<'_>,
    selection: &[String],
    opts: RollbackOptions,
) -> Result<RollbackReport> {
    let pooled = engine.db.get().await?;
    if !crate::state::exists(&**pooled).await? {
        return Err(Error::config(
            "nothing to roll back: no swap has been recorded in this database",
        ));
    }
    for name in selection {
        if engine.config.projection_index(name).is_none() {
            return Err(Error::config(format!("unknown projection `{name}`")));
        }
    }
    // The newest swap that touched any selected projection (any at all, if none selected).
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
    drop(pooled);
    let Some(run) = newest.filter(|r| r.status == "swapped") else {
        return Err(Error::config("nothing to roll back: the newest swap of these projections was already rolled back (or there was none)")
            .with_hint("see `reproject history`"));
    };
    if !selection.is_empty() {
        if let Some(extra) = run.projections.iter().find(|p| !selection.contains(p)) {
            return Err(Error::config(format!(
                "run {} swapped {} together; rolling back only some of them would mix generations (`{extra}` is not named)",
                run.id,
                run.projections.join(", ")
            ))
            .with_hint(format!("run `reproject rollback {}`", run.projections.join(" "))));
        }
    }
    let _locks = lock_projections(&engine.db, &run.projections).await?;
    let conn = engine.db.dedicated().await?;
    let tables: Vec<RunTable> = runs::tables(&conn, run.id).await?;
    for t in &tables {
        match helpers::ownership(&conn, &t.old).await? {
            Ownership::Ours(h) if h.kind == "old" => {}
            _ => {
                return Err(Error::runtime(format!(
                    "cannot roll back run {}: the previous table `{}` is gone (dropped by `cleanup`, or replaced)",
                    run.id, t.old
                ))
                .with_hint("rebuild instead"))
            }
        }
        let parked = crate::ident::rolled_back_table(&t.live, run.id);
        if !matches!(helpers::ownership(&conn, &parked).await?, Ownership::Absent) {
            return Err(Error::runtime(format!(
                "cannot roll back run {}: `{parked}` already exists",
                run.id
            )));
        }
    }
    engine.reporter.step(&format!(
        "rolling back run {} ({})",
        run.id,
        run.projections.join(", ")
    ));
    // The previous tables first get the events that arrived since the swap (old_generation.rs).
    let resolved = engine.validate().await?;
    let source = EventSource::new(&engine.config.events, &resolved);
    crate::replay::session_setup(&conn).await?;
    let mut old = OldGeneration::prepare(
        &conn,
        engine.config,
        &resolved,
        &source,
        &run,
        &tables,
        opts.batch_size,
    )
    .await?;
    match &old.keeper {
        Keeper::Handlers(_, from) => engine.reporter.step(&format!(
            "the previous tables are caught up with the handlers recorded by run(s) {}",
            from.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Keeper::Runner(why) => engine.reporter.warn(&format!(
            "{why}: `reproject run` re-applies the events since the swap to the restored tables"
        )),
        Keeper::Nobody(_) => {}
    }
    let mut events_applied = old.catch_up(&engine.cancel, engine.reporter).await?;
    // Dependents first, in the order readers lock them (see swap::dependents_to_lock).
    let lock_list = swap::lock_order(
        swap::dependents_to_lock(&conn, &tables).await?,
        tables.iter().map(|t| t.live.clone()),
        tables.iter().map(|t| t.old.clone()),
    );
    let live: Vec<_> = tables.iter().map(|t| t.live.clone()).collect();
    let prepared = crate::carry::Prepared::prepare(&conn, &live).await?;
    let mut retries = 0u32;
    let (wait, held_ms, validations) = loop {
        if let Keeper::Nobody(why) = &old.keeper {
            let why = why.clone();
            refuse_if_stale(&mut old, run.id, &why).await?;
        }
        let mut blockers = Vec::new();
        let wait = match swap::lock_tables(
            &conn,
            &lock_list,
            opts.lock,
            engine.reporter,
            Some(&engine.cancel),
            &mut blockers,
        )
        .await
        {
            Ok(wait) => wait,
            Err(e) => {
                runs::add_lock_attempt(
                    &conn,
                    run.id,
                    &json!({ "rollback": true, "outcome": "not_locked", "error": e.plain(), "blockers": blockers }),
                )
                .await?;
                return Err(e);
            }
        };
        let held = Instant::now();
        let attempt = async {
            // The final tail, under the lock, as in a swap.
            let (bound, pending) = old.pending().await?;
            let nobody = match &old.keeper {
                Keeper::Nobody(why) => Some(why.clone()),
                _ => None,
            };
            let caught_up = match &old.keeper {
                Keeper::Handlers(..) => {
                    if pending > opts.lock.max_tail_events {
                        return Ok(Err(pending));
                    }
                    if let Some(bound) = bound {
                        old.apply(bound, false, None).await?;
                    }
                    Some(old.at)
                }
                Keeper::Runner(_) => None,
                Keeper::Nobody(_) => {
                    if pending > 0 {
                        return Err(stale(run.id, pending, nobody.as_deref().unwrap_or("")));
                    }
                    None
                }
            };
            swap::check_hold(held, &opts.lock, "the previous tables were caught up")?;
            let validations = swap::swap_back(&conn, &prepared, run.id, &tables).await?;
            let position = caught_up.as_ref().and_then(|c| c.position);
            if let Some(at) = &caught_up {
                // External projectors continue on the restored tables from where they stand.
                crate::handover::apply(&conn, engine.config, &run.projections, at, engine.reporter)
                    .await?;
            }
            // With the tables caught up, `reproject run` continues right after them; else it
            // re-applies what the restored tables missed (engine/live.rs).
            crate::state::live::hand_back(&conn, run.id, &run.projections, position).await?;
            runs::set_rolled_back(&conn, run.id).await?;
            runs::add_lock_attempt(
                &conn,
                run.id,
                &json!({ "rollback": true, "outcome": "rolled_back", "blockers": blockers, "lock_wait_ms": wait.as_millis() as i64,
                         "lock_hold_ms": held.elapsed().as_millis() as i64, "tail_events": pending,
                         "position": position }),
            )
            .await?;
            Ok(Ok((validations, pending)))
        }
        .await;
        let attempt = match attempt {
            Ok(Err(pending)) => {
                let _ = conn.batch_execute("ROLLBACK").await;
                Ok(Err(pending))
            }
            other => crate::shadow::finish(&conn, other).await,
        };
        let attempt = match attempt {
            Err(e) if e.kind == ErrorKind::Interrupted && !engine.cancel.is_cancelled() => {
                Err(swap::hold_exceeded(&opts.lock).caused_by(e.plain()))
            }
            other => other,
        };
        match attempt {
            Ok(Ok((validations, tail))) => {
                if matches!(old.keeper, Keeper::Handlers(..)) {
                    events_applied += tail;
                }
                break (wait, held.elapsed().as_millis() as i64, validations);
            }
            Ok(Err(pending)) => {
                retries += 1;
                if retries > swap::TAIL_RETRIES {
                    return Err(Error::busy(format!(
                        "run {}: {pending} event(s) were pending each time the locks were taken, more than --max-tail-events {}; nothing was rolled back",
                        run.id, opts.lock.max_tail_events
                    ))
                    .with_hint("run `reproject rollback` again when the event rate is lower, or raise --max-tail-events"));
                }
                engine.reporter.warn(&format!(
                    "{pending} event(s) pending under the lock, more than --max-tail-events {}: released the locks to catch up first",
                    opts.lock.max_tail_events
                ));
                events_applied += old.catch_up(&engine.cancel, engine.reporter).await?;
            }
            Err(e) => return Err(e),
        }
    };
    swap::confirm_durable(&conn, run.id, None).await?;
    crate::standby::after_commit(
        &conn,
        run.id,
        "rollback",
        Duration::from_millis(held_ms.max(0) as u64),
        opts.lock.standby_wait,
        engine.reporter,
    )
    .await;
    super::rebuild::validate_foreign_keys(&conn, run.id, &validations, engine.reporter).await?;
    Ok(RollbackReport {
        run_id: run.id,
        projections: run.projections.clone(),
        kept: tables
            .iter()
            .map(|t| {
                (
                    t.live.to_string(),
                    crate::ident::rolled_back_table(&t.live, run.id).to_string(),
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
    })
}

/// Which helper tables [`cleanup`] considers, and whether it drops them.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Only tables created longer ago than this.
    pub older_than: Option<Duration>,
    /// Drop them; without it, only list.
    pub drop: bool,
}

/// What [`cleanup`] found (and did).
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    /// Tables that are (or, without `--yes`, would be) dropped.
    pub candidates: Vec<HelperTable>,
    /// Helper tables kept, with the reason.
    pub kept: Vec<(HelperTable, String)>,
    /// True when the candidates were dropped.
    pub dropped: bool,
}

/// Lists (and with `drop`, drops) the helper tables reproject created and no longer needs:
/// old tables of swaps, rebuild tables of failed/cancelled/superseded runs, rolled-back tables.
/// Rebuild tables of a run that is running or awaiting its swap are kept.
pub async fn cleanup(engine: &Engine<'_>, opts: &CleanupOptions) -> Result<CleanupReport> {
    let pooled = engine.db.get().await?;
    if !crate::state::exists(&**pooled).await? {
        return Ok(CleanupReport {
            candidates: Vec::new(),
            kept: Vec::new(),
            dropped: opts.drop,
        });
    }
    drop(pooled);
    let conn = engine.db.dedicated().await?;
    let all = helpers::list(&conn).await?;
    let now = chrono::Utc::now();
    let mut candidates = Vec::new();
    let mut kept = Vec::new();
    for h in all {
        if let Some(age) = opts.older_than {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            if now - h.created_at < age {
                kept.push((h, "newer than --older-than".to_string()));
                continue;
            }
        }
        if h.kind == "rebuild" {
            let status = match h.run_id {
                Some(id) => runs::get(&conn, id).await?.map(|r| r.status),
                None => None,
            };
            if let Some(s) =
                status.filter(|s| s == "running" || runs::SWAPPABLE_STATUSES.contains(&s.as_str()))
            {
                kept.push((h, format!("its run is {s}")));
                continue;
            }
        }
        candidates.push(h);
    }
    if opts.drop && !candidates.is_empty() {
        // Never drop a table under a run that is working on its projection right now.
        let mut projections: Vec<String> =
            candidates.iter().map(|h| h.projection.clone()).collect();
        projections.sort();
        projections.dedup();
        let _locks = lock_projections(&engine.db, &projections).await?;
        for h in &candidates {
            engine
                .reporter
                .step(&format!("dropping `{}` ({})", h.table, h.kind));
            // Check again under the lock: the registry is the proof of ownership.
            if let Ownership::Ours(_) = helpers::ownership(&conn, &h.table).await? {
                swap::drop_helper(&conn, &h.table).await?;
            }
        }
    }
    Ok(CleanupReport {
        candidates,
        kept,
        dropped: opts.drop,
    })
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
        .filter(|r| r.status == "running")
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
                let list: Vec<String> = many
                    .iter()
                    .map(|r| format!("run {} ({})", r.id, r.projections.join(", ")))
                    .collect();
                return Err(Error::config(format!(
                    "several rebuilds are running: {}",
                    list.join("; ")
                ))
                .with_hint("name the run: `reproject cancel RUN`"));
            }
        },
    };
    runs::request_cancel(&**client, target.id, by).await?;
    Ok(target.id)
}
