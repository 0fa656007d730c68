//! Before a rollback: bringing the tables a swap replaced (`x_old`) up to date with the events
//! that arrived since the swap, so that rolling back loses none of them.
//!
//! Who can apply those events to `x_old` ([`Keeper`]):
//! - the handlers that built that generation, as recorded by the run that swapped it in (the
//!   newest earlier swap still in effect): the rollback applies them itself, in committed
//!   batches outside the lock and the final tail under it, as a swap does;
//! - else, when `reproject run` keeps these projections live right now, the runner: the
//!   rollback hands its checkpoint back to where `x_old` stood and it re-applies the rest;
//! - else nobody: a rollback is refused as soon as any event arrived since the swap, rather
//!   than restoring a stale table.
//!
//! Where `x_old` stands: where a previous rollback attempt left it (`runs.old_position`), else
//! the live checkpoint that the swap replaced (set by the runner that kept it, or by the swap
//! that put it in), else the swap position (the projector that kept it was held by the swap's
//! lock with everything up to the swap applied; an assumption for projectors reproject does
//! not run).

use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::handlers;
use crate::ordering::Cut;
use crate::progress::{Cancel, Reporter};
use crate::replay::Projector;
use crate::shadow;
use crate::source::{Bound, Cursor, EventSource};
use crate::state::fence;
use crate::state::locks::LockClass;
use crate::state::runs::{self, Run, RunTable};
use crate::validate::Resolved;
use tokio_postgres::Client;

/// How many catch-up rounds before the rollback takes its locks.
const CATCH_UP_ROUNDS: usize = 10;

pub(super) enum Keeper {
    /// The recorded handlers of that generation, prepared against the `_old` tables; the runs
    /// they were recorded by, for messages.
    Handlers(Projector, Vec<i64>),
    /// The live runner re-applies what `x_old` missed (why the handlers could not be used).
    Runner(String),
    /// Nobody can: why.
    Nobody(String),
}

pub(super) struct OldGeneration<'a> {
    conn: &'a Client,
    run_id: i64,
    source: &'a EventSource,
    cut: Cut<'a>,
    /// The run's projections, whose guard every batch proves (state/fence.rs).
    projections: Vec<String>,
    /// Where `x_old` stands.
    pub at: Cursor,
    pub keeper: Keeper,
    batch_size: i64,
}

impl<'a> OldGeneration<'a> {
    pub async fn prepare(
        conn: &'a Client,
        config: &Config,
        resolved: &Resolved,
        source: &'a EventSource,
        run: &Run,
        tables: &[RunTable],
        batch_size: i64,
    ) -> Result<OldGeneration<'a>> {
        let runner = crate::state::live::replaced_position(conn, run.id, &run.projections).await?;
        let swap_cursor = runs::cursor(conn, run.id).await?;
        let recorded = runs::old_cursor(conn, run.id).await?;
        let at = match (recorded, runner) {
            (Some(c), _) => Some(c),
            (None, None) => Some(swap_cursor),
            // The runner's checkpoint has no transaction id: in xid8 mode it is only usable
            // where it is the swap position.
            (None, Some(p)) if swap_cursor.tx.is_none() || p == swap_cursor.position => {
                Some(Cursor {
                    tx: swap_cursor.tx.filter(|_| p == swap_cursor.position),
                    position: p,
                })
            }
            (None, Some(_)) => None,
        };
        let handlers = match &at {
            Some(_) => recorded_handlers(conn, config, resolved, run, tables).await?,
            None => Err("the live runner's checkpoint carries no transaction id to resume the `xid8` order from".to_string()),
        };
        // Handlers that no longer prepare against the tables (a column gone) cannot be used
        // either; that only matters if there are events to apply.
        let handlers = match handlers {
            Ok((list, from)) => match prepare_old(conn, config, resolved, tables, &list).await {
                Ok(projector) => Ok((projector, from)),
                Err(e) => Err(e.plain().replace('\n', " ")),
            },
            Err(why) => Err(why),
        };
        let keeper = match handlers {
            Ok((projector, from)) => Keeper::Handlers(projector, from),
            // The swap's hand-over left the position the old tables had in the live
            // checkpoint; a runner that is up re-applies from there once it is handed back.
            Err(why) if runner.is_some() && runners_up(conn, &run.projections).await? => {
                Keeper::Runner(why)
            }
            Err(why) => Keeper::Nobody(why),
        };
        Ok(OldGeneration {
            conn,
            run_id: run.id,
            source,
            cut: Cut::new(source, run.id),
            projections: run.projections.clone(),
            at: at.unwrap_or(swap_cursor),
            keeper,
            batch_size,
        })
    }

    /// The bound right now and how many events after `at` are below it.
    pub async fn pending(&mut self) -> Result<(Option<Bound>, i64)> {
        let bound = self
            .cut
            .bound(self.conn, &self.at)
            .await?
            .filter(|b| !b.reached_by(&self.at));
        let n = match &bound {
            Some(b) => self.source.count(self.conn, &self.at, b).await?.events,
            None => 0,
        };
        Ok((bound, n))
    }

    /// Outside the lock: catch up in committed batches (only with the recorded handlers).
    pub async fn catch_up(&mut self, cancel: &Cancel, reporter: &dyn Reporter) -> Result<i64> {
        if !matches!(self.keeper, Keeper::Handlers(..)) {
            return Ok(0);
        }
        let mut applied = 0;
        for _ in 0..CATCH_UP_ROUNDS {
            let (bound, n) = self.pending().await?;
            let Some(bound) = bound.filter(|_| n > 0) else {
                break;
            };
            reporter.step(&format!(
                "catching the previous tables up with {n} event(s) since the swap"
            ));
            applied += self.apply(bound, true, Some(cancel)).await?;
        }
        Ok(applied)
    }

    /// Applies the events after `at` up to `upto` to the `_old` tables with the recorded
    /// handlers; with `commit_each` every batch commits with its position, else the caller's
    /// transaction holds everything.
    pub async fn apply(
        &mut self,
        upto: Bound,
        commit_each: bool,
        cancel: Option<&Cancel>,
    ) -> Result<i64> {
        let Keeper::Handlers(projector, _) = &self.keeper else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            if cancel.is_some_and(|c| c.is_cancelled()) {
                return Err(Error::interrupted(format!(
                    "run {}: cancelled while catching the previous tables up, at {}; nothing was rolled back",
                    self.run_id,
                    self.at.describe()
                )));
            }
            if upto.reached_by(&self.at) {
                return Ok(total);
            }
            if commit_each {
                self.conn
                    .batch_execute("BEGIN")
                    .await
                    .context("cannot begin a batch")?;
            }
            let recorded = runs::old_cursor(self.conn, self.run_id).await?;
            let batch = async {
                let step = projector
                    .apply_next(
                        self.conn,
                        self.source,
                        &self.at,
                        &upto,
                        self.batch_size,
                        None,
                    )
                    .await?;
                fence::prove(self.conn, LockClass::Projection, &self.projections).await?;
                runs::advance_old_cursor(self.conn, self.run_id, recorded.as_ref(), &step.to)
                    .await?;
                Ok((step.to, step.events, step.exhausted))
            }
            .await;
            let (new, n, exhausted) = if commit_each {
                shadow::finish(self.conn, batch).await?
            } else {
                batch?
            };
            self.at = new;
            total += n;
            if exhausted {
                return Ok(total);
            }
        }
    }
}

async fn runners_up(conn: &Client, projections: &[String]) -> Result<bool> {
    for p in projections {
        if !crate::state::live::runner_up(conn, p).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

type Sections = (String, String, Vec<handlers::Section>);

/// The handler files that built the swapped-out generation of every projection of the run,
/// parsed, in application order; Err(why) when they are not all recorded or usable.
async fn recorded_handlers(
    conn: &Client,
    config: &Config,
    resolved: &Resolved,
    run: &Run,
    tables: &[RunTable],
) -> Result<std::result::Result<(Vec<Sections>, Vec<i64>), String>> {
    let order = match crate::plan::plan(config, &run.projections) {
        Ok(plan) => plan.order,
        Err(e) => return Ok(Err(e.plain())),
    };
    let mut list = Vec::new();
    let mut from = Vec::new();
    for i in order {
        let name = &config.projections[i].name;
        let Some((source_run, text)) = runs::previous_handler_source(conn, run.id, name).await?
        else {
            return Ok(Err(format!(
                "the previous tables of projection `{name}` were not built by reproject from SQL handlers (but by another projector, or by a Rust projection), so no handlers that built them are recorded"
            )));
        };
        if text.starts_with(crate::config::EXTERNAL_SOURCE_PREFIX) {
            return Ok(Err(format!(
                "the previous tables of projection `{name}` were built by an external projector (run {source_run}), which a rollback cannot run"
            )));
        }
        let label = format!("handlers of `{name}` recorded by run {source_run}");
        let sections = match handlers::parse(&text) {
            Ok(s) => s,
            Err((line, why)) => return Ok(Err(format!("{label}, line {line}: {why}"))),
        };
        // Every table they name must still be one reproject can resolve.
        for st in sections.iter().flat_map(|s| &s.statements) {
            for r in &st.tables {
                if let Err(why) = old_table(config, resolved, tables, &r.written) {
                    return Ok(Err(format!("{label}, line {}: {why}", r.line)));
                }
            }
        }
        from.push(source_run);
        list.push((name.clone(), label, sections));
    }
    Ok(Ok((list, from)))
}

/// The physical table a `{{written}}` reference of the old handlers means: the `_old` table of
/// a table of the run, the live table of any other projection.
fn old_table(
    config: &Config,
    resolved: &Resolved,
    tables: &[RunTable],
    written: &str,
) -> std::result::Result<String, String> {
    let owner = config.owner_of(written).map_err(|why| {
        format!("`{{{{{written}}}}}` is no longer a table of a projection in the config ({why})")
    })?;
    let live = resolved.live(owner);
    let name = &config.projections[owner.projection].name;
    match tables.iter().find(|t| &t.live == live) {
        Some(t) => Ok(t.old.quoted()),
        None if tables.iter().any(|t| &t.projection == name) => Err(format!(
            "`{live}` was not a table of projection `{name}` when it was swapped"
        )),
        None => Ok(live.quoted()),
    }
}

async fn prepare_old(
    conn: &Client,
    config: &Config,
    resolved: &Resolved,
    tables: &[RunTable],
    list: &[Sections],
) -> Result<Projector> {
    let borrowed: Vec<(String, String, &[handlers::Section])> = list
        .iter()
        .map(|(n, l, s)| (n.clone(), l.clone(), s.as_slice()))
        .collect();
    Projector::prepare_sections(conn, &borrowed, |r| {
        old_table(config, resolved, tables, &r.written).map_err(Error::config)
    })
    .await
}
