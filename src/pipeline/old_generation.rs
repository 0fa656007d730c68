//! Before a rollback: bringing the tables a swap replaced (`x_old`) up to date with the events
//! that arrived since the swap, so that rolling back loses none of them.
//!
//! Who can apply those events to `x_old` ([`Keeper`]):
//! - the handlers that built that generation, as recorded by the run that swapped it in (the
//!   newest earlier swap still in effect): the rollback applies them itself, in committed
//!   batches outside the lock and the final tail under it, as a swap does;
//! - else, with the user's consent (`rollback --with-current-handlers`), the handlers of the
//!   config now: the only way after the first rebuild of tables the application built, whose
//!   handlers reproject never saw; they may differ from whatever built `x_old`, hence the flag;
//! - else, when `reproject run` keeps these projections live right now, the runner: the
//!   rollback hands its checkpoint back to where `x_old` stood and it re-applies the rest;
//! - else nobody: a rollback is refused as soon as any event arrived since the swap, rather
//!   than restoring a stale table; the refusal says whether the flag would do.
//!
//! Where `x_old` stands: where a previous rollback attempt left it (`runs.old_position`), else
//! the live checkpoint that the swap replaced (set by the runner that kept it, or by the swap
//! that put it in), else the swap position (the projector that kept it was held by the swap's
//! lock with everything up to the swap applied; an assumption for projectors reproject does
//! not run).

use crate::apply::sql::{Projector, Step};
use crate::apply::write_guard;
use crate::db::tx;
use crate::error::{Error, Result};
use crate::model::config::{Config, ProjectionKind};
use crate::model::handlers;
use crate::model::Resolved;
use crate::pipeline::batches::{Batches, CatchUp, Ended, Policy};
use crate::progress::{Cancel, Reporter};
use crate::read::ordering::Cut;
use crate::read::source::{Bound, Cursor, EventSource};
use crate::state::fence;
use crate::state::helpers::HelperTable;
use crate::state::locks::LockClass;
use crate::state::runs::{self, Run, RunTable};
use tokio_postgres::Client;

pub(crate) enum Keeper {
    /// Handlers prepared against the `_old` tables, and where they come from.
    Handlers(Projector, Origin),
    /// The live runner re-applies what `x_old` missed (why the handlers could not be used).
    Runner(String),
    /// Nobody can.
    Nobody(Unkept),
}

/// Where the handlers that catch `x_old` up come from.
pub(crate) enum Origin {
    /// Recorded by these runs: the ones that built that generation.
    Recorded(Vec<i64>),
    /// The config's (`--with-current-handlers`): their files, and why the recorded ones could
    /// not be used.
    Current { files: String, why: String },
}

/// Why nobody can catch `x_old` up.
#[derive(Clone)]
pub(crate) struct Unkept {
    /// Why the recorded handlers cannot.
    pub why: String,
    /// Whether the config's handlers could (`--with-current-handlers`): their files, or why not.
    pub current: std::result::Result<String, String>,
}

pub(crate) struct OldGeneration<'a> {
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
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare(
        conn: &'a Client,
        config: &Config,
        resolved: &Resolved,
        source: &'a EventSource,
        run: &Run,
        tables: &[RunTable],
        retired: &[HelperTable],
        batch_size: i64,
        with_current: bool,
    ) -> Result<OldGeneration<'a>> {
        let runner =
            crate::state::live_checkpoints::replaced_position(conn, run.id, &run.projections)
                .await?;
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
        let no_tx = "the live runner's checkpoint carries no transaction id to resume the `xid8` order from";
        let handlers = match &at {
            Some(_) => recorded_handlers(conn, config, resolved, run, tables, retired).await?,
            None => Err(no_tx.to_string()),
        };
        // Handlers that no longer prepare against the tables (a column gone) cannot be used
        // either; that only matters if there are events to apply.
        let handlers = match handlers {
            Ok((list, from)) => prepared(conn, config, resolved, tables, retired, &list)
                .await
                .map(|p| (p, from)),
            Err(why) => Err(why),
        };
        let keeper = match handlers {
            Ok((projector, from)) => Keeper::Handlers(projector, Origin::Recorded(from)),
            Err(why) => {
                let current = match &at {
                    Some(_) => match current_handlers(config, resolved, run, tables, retired) {
                        Ok((list, files)) => {
                            prepared(conn, config, resolved, tables, retired, &list)
                                .await
                                .map(|p| (p, files))
                        }
                        Err(why) => Err(why),
                    },
                    None => Err(no_tx.to_string()),
                };
                match current {
                    Ok((projector, files)) if with_current => {
                        Keeper::Handlers(projector, Origin::Current { files, why })
                    }
                    // The swap's hand-over left the position the old tables had in the live
                    // checkpoint; a runner that is up re-applies from there once handed back.
                    _ if runner.is_some() && runners_up(conn, &run.projections).await? => {
                        Keeper::Runner(why)
                    }
                    current => Keeper::Nobody(Unkept {
                        why,
                        current: current.map(|(_, files)| files),
                    }),
                }
            }
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

    /// Outside the lock: catch up in committed batches (only with the recorded handlers),
    /// in the rounds of [`crate::pipeline::batches::catch_up`].
    pub async fn catch_up(&mut self, cancel: &Cancel, reporter: &dyn Reporter) -> Result<i64> {
        if !matches!(self.keeper, Keeper::Handlers(..)) {
            return Ok(0);
        }
        let mut rounds = OldCatchUp {
            old: self,
            cancel,
            reporter,
        };
        crate::pipeline::batches::catch_up(&mut rounds, reporter).await
    }

    /// Applies the events after `at` up to `upto` to the `_old` tables with the recorded
    /// handlers; with `commit_each` every batch commits with its position, else the caller's
    /// transaction holds everything.
    pub async fn apply(
        &mut self,
        upto: Bound,
        commit_each: bool,
        cancel: Option<&Cancel>,
        reporter: &dyn Reporter,
    ) -> Result<i64> {
        let Keeper::Handlers(projector, _) = &self.keeper else {
            return Ok(0);
        };
        // Not retried after a transient error: the rollback then stops before exchanging
        // any table and, run again, continues from the position of the last batch.
        let mut policy = Policy::committed(self.conn, self.run_id, reporter, cancel);
        policy.retry = None;
        policy.own_transaction = commit_each;
        let batches = OldBatches {
            old: self,
            projector,
            own_transaction: commit_each,
        };
        let driven =
            crate::pipeline::batches::drive(self.conn, &batches, self.at, upto, &policy).await?;
        self.at = driven.to;
        if driven.ended == Ended::Stopped {
            return Err(Error::interrupted(format!(
                "run {}: cancelled while catching the previous tables up, at {}; nothing was rolled back",
                self.run_id,
                self.at.describe()
            )));
        }
        Ok(driven.events)
    }
}

/// The catch-up rounds of the `_old` tables.
struct OldCatchUp<'r, 'a> {
    old: &'r mut OldGeneration<'a>,
    cancel: &'r Cancel,
    reporter: &'r dyn Reporter,
}

impl CatchUp for OldCatchUp<'_, '_> {
    async fn pending(&mut self) -> Result<(Option<Bound>, i64)> {
        self.old.pending().await
    }

    async fn apply(&mut self, bound: Bound, _pending: i64) -> Result<i64> {
        self.old
            .apply(bound, true, Some(self.cancel), self.reporter)
            .await
    }

    fn announce(&self, pending: i64) -> crate::progress::Step {
        crate::progress::Step::CatchingUpPreviousTables { events: pending }
    }
}

/// The batches of the `_old` tables, with the position recorded in `runs.old_position`.
struct OldBatches<'r, 'a> {
    old: &'r OldGeneration<'a>,
    projector: &'r Projector,
    own_transaction: bool,
}

impl Batches for OldBatches<'_, '_> {
    /// One batch to the `_old` tables: the events after `from`, the proof of the guard, the
    /// position moved (compared and set) and the write guard; in the caller's transaction.
    async fn batch(
        &self,
        from: &Cursor,
        upto: &Bound,
        _budget: Option<i64>,
    ) -> Result<tx::End<Step>> {
        let old = self.old;
        let recorded = runs::old_cursor(old.conn, old.run_id).await?;
        let step = self
            .projector
            .apply_next(old.conn, old.source, from, upto, old.batch_size, None)
            .await?;
        fence::prove(old.conn, LockClass::Projection, &old.projections).await?;
        runs::advance_old_cursor(old.conn, old.run_id, recorded.as_ref(), &step.to).await?;
        write_guard::check(
            old.conn,
            self.projector.writes(),
            from,
            &step.to,
            self.own_transaction,
        )
        .await?;
        Ok(tx::End::Commit(step))
    }

    fn what(&self, _from: &Cursor) -> String {
        String::new()
    }
}

async fn runners_up(conn: &Client, projections: &[String]) -> Result<bool> {
    for p in projections {
        if !crate::state::live_checkpoints::runner_up(conn, p).await? {
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
    retired: &[HelperTable],
) -> Result<std::result::Result<(Vec<Sections>, Vec<i64>), String>> {
    let order = match crate::pipeline::plan::plan(config, &run.projections) {
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
                "the previous tables of projection `{name}` were not built by reproject from SQL handlers (the application, another projector or a Rust projection built them), so no handlers that built them are recorded"
            )));
        };
        if text.starts_with(crate::model::config::EXTERNAL_SOURCE_PREFIX) {
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
                if let Err(why) = old_table(config, resolved, tables, retired, &r.written) {
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
/// a table of the run, the kept table of one its swap retired (`retire`), the live table of any
/// other projection.
fn old_table(
    config: &Config,
    resolved: &Resolved,
    tables: &[RunTable],
    retired: &[HelperTable],
    written: &str,
) -> std::result::Result<String, String> {
    if let Ok(wanted) = crate::model::ident::parse_table_ref(written) {
        if let Some(h) = retired.iter().find(|h| {
            h.live_name == wanted.name
                && wanted.schema.as_ref().is_none_or(|s| s == &h.table.schema)
        }) {
            return Ok(h.table.quoted());
        }
    }
    let owner = config.owner_of(written).map_err(|why| {
        format!("`{{{{{written}}}}}` is no longer a table of a projection in the config ({why})")
    })?;
    let live = resolved.live(owner);
    let name = &config.projections[owner.projection].name;
    match tables.iter().find(|t| &t.live == live) {
        Some(t) if t.added => Err(format!(
            "`{live}` was added to projection `{name}` by the swap; the previous tables do not include it"
        )),
        Some(t) => Ok(t.old.quoted()),
        None if tables.iter().any(|t| &t.projection == name) => Err(format!(
            "`{live}` was not a table of projection `{name}` when it was swapped"
        )),
        None => Ok(live.quoted()),
    }
}

/// The handler files of the config for every projection of the run, in application order,
/// and their names for messages (`--with-current-handlers`); Err(why) when a projection has
/// none that a rollback can apply.
fn current_handlers(
    config: &Config,
    resolved: &Resolved,
    run: &Run,
    tables: &[RunTable],
    retired: &[HelperTable],
) -> std::result::Result<(Vec<Sections>, String), String> {
    let order = crate::pipeline::plan::plan(config, &run.projections)
        .map_err(|e| e.plain())?
        .order;
    let mut list = Vec::new();
    let mut files = Vec::new();
    for i in order {
        let p = &config.projections[i];
        let handlers = match &p.kind {
            ProjectionKind::Sql(handlers) => handlers,
            ProjectionKind::Rust => {
                return Err(format!(
                    "projection `{}` is a Rust projection, which a rollback cannot apply to other tables",
                    p.name
                ))
            }
            ProjectionKind::External(_) => {
                return Err(format!(
                    "projection `{}` is rebuilt by an external command, which a rollback cannot run",
                    p.name
                ))
            }
        };
        let label = handlers.path.display().to_string();
        for st in handlers.sections.iter().flat_map(|s| &s.statements) {
            for r in &st.tables {
                old_table(config, resolved, tables, retired, &r.written)
                    .map_err(|why| format!("{label}:{}: {why}", r.line))?;
            }
        }
        files.push(format!("`{label}`"));
        list.push((p.name.clone(), label, handlers.sections.clone()));
    }
    Ok((list, files.join(", ")))
}

/// After the swap of run `run_id`: when the tables it replaced have no recorded handlers
/// (the application built them, or an external projector, or a Rust projection), what a
/// rollback will need once events arrive, for the final message of the rebuild.
pub(crate) async fn rollback_caveat(
    conn: &Client,
    config: &Config,
    run_id: i64,
    projections: &[String],
) -> Result<Option<String>> {
    let mut unrecorded = Vec::new();
    for name in projections {
        match runs::previous_handler_source(conn, run_id, name).await? {
            Some((_, text)) if !text.starts_with(crate::model::config::EXTERNAL_SOURCE_PREFIX) => {}
            _ => unrecorded.push(name.clone()),
        }
    }
    if unrecorded.is_empty() {
        return Ok(None);
    }
    let list = unrecorded
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    // The config's handlers can be applied to the replaced tables only when every projection
    // of the run has SQL handlers.
    let sql_only = projections.iter().all(|n| {
        config
            .projection_index(n)
            .is_some_and(|i| config.projections[i].handlers().is_some())
    });
    let runner = crate::state::live_checkpoints::replaced_position(conn, run_id, projections)
        .await?
        .is_some();
    let after = if sql_only {
        format!(
            "once an event arrives, `reproject rollback --with-current-handlers` first applies the events since the swap to them with this config's handlers (which may differ from whatever built them){}",
            if runner {
                ", or a plain rollback while `reproject run` keeps them live"
            } else {
                ""
            }
        )
    } else if runner {
        "once an event arrives, a rollback is possible only while `reproject run` keeps them live (it re-applies the events since the swap)".to_string()
    } else {
        "once an event arrives, nothing can apply the events since the swap to them, and a rollback is refused".to_string()
    };
    Ok(Some(format!(
        "note: the tables replaced for {list} were not built by reproject's handlers, so none are recorded to catch them up: `reproject rollback` restores them as they are as long as no event arrives after the swap position ({}); {after}",
        runs::cursor(conn, run_id)
            .await?
            .position
            .map_or_else(|| "none yet".to_string(), |p| p.to_string())
    )))
}

/// [`prepare_old`], with a failure as a one-line reason.
async fn prepared(
    conn: &Client,
    config: &Config,
    resolved: &Resolved,
    tables: &[RunTable],
    retired: &[HelperTable],
    list: &[Sections],
) -> std::result::Result<Projector, String> {
    prepare_old(conn, config, resolved, tables, retired, list)
        .await
        .map_err(|e| e.plain().replace('\n', " "))
}

async fn prepare_old(
    conn: &Client,
    config: &Config,
    resolved: &Resolved,
    tables: &[RunTable],
    retired: &[HelperTable],
    list: &[Sections],
) -> Result<Projector> {
    let borrowed: Vec<(String, String, &[handlers::Section])> = list
        .iter()
        .map(|(n, l, s)| (n.clone(), l.clone(), s.as_slice()))
        .collect();
    let writes = crate::apply::write_guard::Writes::new(
        // A table the swap added has no `_old`: the previous generation never had it.
        (tables.iter().filter(|t| !t.added).map(|t| t.old.clone()))
            .chain(retired.iter().map(|h| h.table.clone())),
        resolved.tables.iter().flatten().cloned(),
        list.iter().map(|(name, _, _)| name.clone()).collect(),
        "swapped-out tables",
    );
    Ok(Projector::prepare_sections(conn, &borrowed, |r| {
        old_table(config, resolved, tables, retired, &r.written).map_err(Error::config)
    })
    .await?
    .with_writes(writes))
}
