//! `cleanup`: list, and with `--yes` drop, the helper tables of the projections in scope that
//! reproject no longer needs, each with what dropping it ends.

use crate::commands::Engine;
use crate::error::Result;
use crate::model::ident::quote;
use crate::pipeline::swap;
use crate::progress::Step;
use crate::state::helpers::{self, HelperTable, Ownership};
use crate::state::locks::{lock_projections, LockClass};
use crate::state::runs::{self, RunStatus};
use serde::Serialize;
use std::time::Duration;

/// Which helper tables [`cleanup`] considers, and whether it drops them.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Only tables created longer ago than this.
    pub older_than: Option<Duration>,
    /// Drop them; without it, only list.
    pub drop: bool,
    /// Only the helper tables of these projections (default: the config's).
    pub projections: Vec<String>,
    /// The helper tables of every projection recorded in the database, not only the config's
    /// (`--all-projections`): named projections may then be any recorded one.
    pub all_projections: bool,
}

/// A helper table [`cleanup`] drops (or would drop), and what dropping it ends.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupEntry {
    /// The table.
    #[serde(flatten)]
    pub table: HelperTable,
    /// What dropping it ends ("ends the rollback of run 12 …", "nothing depends on it").
    pub ends: String,
}

/// A helper table [`cleanup`] keeps, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KeptEntry {
    /// The table.
    #[serde(flatten)]
    pub table: HelperTable,
    /// Why it is kept.
    pub reason: String,
}

/// What [`cleanup`] found (and did).
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    /// Tables that are (or, without `--yes`, would be) dropped.
    pub candidates: Vec<CleanupEntry>,
    /// Helper tables kept, with the reason.
    pub kept: Vec<KeptEntry>,
    /// True when the candidates were dropped.
    pub dropped: bool,
    /// Projections outside the scope (not in the config, or not named) that have helper
    /// tables, which were not considered; `--all-projections` includes them.
    pub other_projections: Vec<String>,
    /// How many helper tables those have.
    pub other_tables: usize,
    /// True when projections were named (the scope is those, not the config's).
    pub named: bool,
}

/// Lists (and with `drop`, drops) the helper tables of the config's projections (or the named
/// ones, or all with `all_projections`) that reproject created and no longer needs, each with
/// what dropping it ends. Rebuild tables of a run that is running, paused, awaiting its swap or
/// refused by checks are kept.
pub async fn cleanup(engine: &Engine<'_>, opts: &CleanupOptions) -> Result<CleanupReport> {
    crate::commands::scope::check(engine, &opts.projections, opts.all_projections)?;
    let mut report = CleanupReport {
        candidates: Vec::new(),
        kept: Vec::new(),
        dropped: opts.drop,
        other_projections: Vec::new(),
        other_tables: 0,
        named: !opts.projections.is_empty(),
    };
    let pooled = engine.db.get().await?;
    if !crate::state::exists(&**pooled).await? {
        return Ok(report);
    }
    drop(pooled);
    let mut conn = engine.db.dedicated().await?;
    // The registry's `retired` kind and who retired a table (sql/013) are needed to say what
    // each table is; cleanup writes the registry anyway (pruning rows of dropped tables).
    crate::state::migrate::migrate(&mut conn).await?;
    let all = helpers::list(&conn).await?;
    let now = chrono::Utc::now();
    for h in all {
        if !crate::commands::scope::contains(
            engine,
            &opts.projections,
            opts.all_projections,
            &h.projection,
        ) {
            if !report.other_projections.contains(&h.projection) {
                report.other_projections.push(h.projection.clone());
            }
            report.other_tables += 1;
            continue;
        }
        if let Some(age) = opts.older_than {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            if now - h.created_at < age {
                report.kept.push(KeptEntry {
                    table: h,
                    reason: "newer than --older-than".to_string(),
                });
                continue;
            }
        }
        match what_it_is(&conn, &h).await? {
            Meaning::Drop(mut ends) => {
                // swap::drop_helper drops them with the table (pipeline/preview.rs).
                let views = crate::pipeline::preview::reading(&conn, &h.table).await?;
                if !views.is_empty() {
                    ends.push_str(&format!(
                        "; the preview views that read it go with it: {}",
                        views
                            .iter()
                            .map(|v| format!("{}.{}", quote(&v.schema), quote(&v.name)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                report.candidates.push(CleanupEntry { table: h, ends })
            }
            Meaning::Keep(reason) => report.kept.push(KeptEntry { table: h, reason }),
        }
    }
    report.other_projections.sort();
    if opts.drop && !report.candidates.is_empty() {
        // Never drop a table under a run that is working on its projection right now.
        let mut projections: Vec<String> = report
            .candidates
            .iter()
            .map(|e| e.table.projection.clone())
            .collect();
        projections.sort();
        projections.dedup();
        let _locks = lock_projections(&engine.db, &projections).await?;
        for e in &report.candidates {
            let h = &e.table;
            engine.reporter.step(&Step::DroppingHelper {
                table: h.table.to_string(),
                kind: h.kind.to_string(),
            });
            // Check again under the lock: the registry is the proof of ownership.
            if let Ownership::Ours(_) = helpers::ownership(&conn, &h.table).await? {
                swap::drop_helper(&conn, &h.table).await?;
            }
        }
    }
    Ok(report)
}

/// Whether cleanup drops a helper table, with what that ends, or keeps it, with why.
enum Meaning {
    Drop(String),
    Keep(String),
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "at an unknown time".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

async fn what_it_is(conn: &tokio_postgres::Client, h: &HelperTable) -> Result<Meaning> {
    let run = match h.run_id {
        Some(id) => runs::get(conn, id).await?,
        None => None,
    };
    let Some(run) = run else {
        return Ok(Meaning::Drop(
            "leftover of a run that is no longer recorded: nothing depends on it".to_string(),
        ));
    };
    let id = run.id;
    let status = &run.status;
    Ok(match h.kind.as_str() {
        "rebuild" => match status {
            RunStatus::Running => {
                if crate::state::locks::is_locked(conn, LockClass::Projection, &h.projection)
                    .await?
                {
                    Meaning::Keep(format!(
                        "run {id} is building it right now (dropping it would end that run)"
                    ))
                } else {
                    Meaning::Drop(format!(
                        "ends the resume of run {id} (interrupted in phase {}: recorded as running, but no process holds it; `reproject rebuild --resume` would continue it)",
                        run.phase
                    ))
                }
            }
            s if s.is_swappable() => Meaning::Keep(format!(
                "run {id} is {s}: this is what `reproject swap` would swap in"
            )),
            RunStatus::Failed | RunStatus::Cancelled => Meaning::Drop(format!(
                "ends the resume of run {id} ({status}{}; `reproject rebuild --resume` would continue it)",
                run.error
                    .as_deref()
                    .and_then(|e| e.lines().next())
                    .map_or_else(String::new, |e| format!(": {e}"))
            )),
            _ => Meaning::Drop(format!(
                "leftover of run {id} ({status}): nothing depends on it"
            )),
        },
        "old" if *status == RunStatus::Swapped => {
            // The rollback needs the `_old` table of every table of the run.
            let mut broken = None;
            // (A table the run added has none: the rollback parks it instead.)
            for t in runs::tables(conn, id).await?.into_iter().filter(|t| !t.added) {
                match helpers::ownership(conn, &t.old).await? {
                    Ownership::Ours(o) if o.kind == "old" && o.run_id == Some(id) => {}
                    Ownership::Ours(o) if o.kind == "old" => {
                        broken = Some(format!(
                            "`{}` is now the rollback point of run {}",
                            t.old,
                            o.run_id.map_or_else(|| "?".to_string(), |r| r.to_string())
                        ))
                    }
                    _ => broken = Some(format!("`{}` is gone", t.old)),
                }
            }
            match broken {
                None => Meaning::Drop(format!(
                    "ends the rollback of run {id} (swapped {})",
                    when(run.swapped_at)
                )),
                Some(why) => Meaning::Drop(format!(
                    "run {id} (swapped {}) can no longer be rolled back ({why}): nothing depends on it",
                    when(run.swapped_at)
                )),
            }
        }
        "old" => Meaning::Drop(format!(
            "replaced by run {id}, which is now {status}: nothing depends on it"
        )),
        "rolled_back" => Meaning::Drop(format!(
            "the table run {id} swapped in, taken out by its rollback ({}): nothing depends on it (reproject never swaps it back in)",
            when(run.rolled_back_at)
        )),
        "retired" => Meaning::Drop(format!(
            "the former rollback point of run {id}, retired by {}, whose drop right after that swap did not happen (interrupted or failed): nothing depends on it",
            h.retired_by.map_or_else(
                || "a later swap".to_string(),
                |r| format!("the swap of run {r}")
            )
        )),
        other => Meaning::Drop(format!(
            "a helper table of kind `{other}` left by run {id}: nothing depends on it"
        )),
    })
}
