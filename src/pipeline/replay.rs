//! Replaying a run's events into its rebuild tables: the bulk replay's ranges, the catch-up
//! rounds and the final tail under the swap's locks (commands/rebuild.rs), each through the
//! one batch driver (batches.rs), by the run's [`Applier`]: the projections' handlers in this
//! process, or the user's external projector commands (apply/external.rs). The rebuild's
//! steps call the same methods for both; what differs is written here, once.

use crate::apply::external::External;
use crate::apply::sql::{Projector, Step};
use crate::apply::write_guard;
use crate::db::{tx, Db};
use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::pipeline::batches::{Batches, CatchUp, Ended, Policy};
use crate::pipeline::swap::{self, LockPolicy};
use crate::progress::{Cancel, Reporter, Warning};
use crate::read::one_pass::OnePass;
use crate::read::ordering::Cut;
use crate::read::source::{Bound, Cursor, EventSource};
use crate::state::fence;
use crate::state::locks::LockClass;
use crate::state::runs::{self, RunTable};
use std::sync::atomic::Ordering::Relaxed;
use tokio_postgres::Client;

/// Who applies a run's events (a run is one or the other: `external::check_selection`).
pub(crate) enum Applier<'a> {
    /// The projections' handlers (SQL, Rust), batch by batch in this process, each batch
    /// with its checkpoint; they also apply the final tail under the swap's locks.
    Handlers(&'a Projector),
    /// The projections' commands, range by range (external.rs). No command runs under the
    /// swap's locks: the swap position is the last range applied.
    External(External<'a>),
}

impl<'a> Applier<'a> {
    /// The run's applier: its external projectors when its projections have commands, else
    /// `projector`, the handlers prepared on the run's connection.
    pub fn for_run(
        config: &'a Config,
        order: &[usize],
        projector: &'a Projector,
        db: &Db,
        source: &EventSource,
        tables: &'a [RunTable],
        run_id: i64,
    ) -> Applier<'a> {
        match External::for_run(config, order, db, source, tables, run_id) {
            Some(external) => Applier::External(external),
            None => Applier::Handlers(projector),
        }
    }

    /// How many events may be pending under the swap's locks: handlers apply up to
    /// `--max-tail-events` there; an external projection's swap position is its last applied
    /// range, so the tail is left to its hand-over, or must be empty.
    pub fn tail_limit(&self, lock: &LockPolicy) -> i64 {
        match self {
            Applier::Handlers(_) => lock.max_tail_events,
            Applier::External(external) => external.tail_limit(),
        }
    }

    /// The swap released its locks because `pending` events were more than
    /// [`Applier::tail_limit`] (attempt `retries`): the warning before it catches up and tries
    /// again, or, after [`swap::TAIL_RETRIES`], the error that ends the swap.
    pub fn tail_released(
        &self,
        run_id: i64,
        pending: i64,
        retries: u32,
        hold_ms: i64,
        lock: &LockPolicy,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        match self {
            Applier::External(_) if retries > swap::TAIL_RETRIES => Err(
                crate::apply::external::tail_refused(run_id, pending, retries),
            ),
            Applier::Handlers(_) if retries > swap::TAIL_RETRIES => Err(Error::busy(format!(
                "run {run_id}: {pending} event(s) were pending each time the locks were taken ({retries} attempts), more than --max-tail-events {}; nothing was swapped",
                lock.max_tail_events
            ))
            .with_hint("events arrive faster than the rebuild catches up between attempts: run `reproject swap` when the rate is lower, or raise --max-tail-events")),
            Applier::External(_) => {
                reporter.warn(&Warning::ExternalTailRetry {
                    pending,
                    held: std::time::Duration::from_millis(hold_ms as u64),
                    retry: retries,
                    retries: swap::TAIL_RETRIES,
                });
                Ok(())
            }
            Applier::Handlers(_) => {
                reporter.warn(&Warning::TailRetry {
                    pending,
                    max_tail_events: lock.max_tail_events,
                    held: std::time::Duration::from_millis(hold_ms as u64),
                    retry: retries,
                    retries: swap::TAIL_RETRIES,
                });
                Ok(())
            }
        }
    }
}

/// Replays a run's events into its rebuild tables, by its [`Applier`].
pub(crate) struct Replay<'a> {
    pub conn: &'a Client,
    pub applier: Applier<'a>,
    pub source: &'a EventSource,
    pub run_id: i64,
    pub names: &'a [String],
    pub batch_size: i64,
    pub reporter: &'a dyn Reporter,
    /// What the progress bar showed before this range (the stream lanes of the bulk replay).
    pub progress_base: std::sync::atomic::AtomicU64,
}

impl Replay<'_> {
    /// The one ordered read of the bulk replay's range up to `upto`, when every batch takes
    /// its events from reproject (read/one_pass.rs): handlers that read each event. A command
    /// reads the events itself, and set-based statements read a batch by its bounds.
    pub fn one_pass<'s>(&'s self, db: &'s Db, upto: Bound) -> Option<OnePass<'s>> {
        match &self.applier {
            Applier::Handlers(projector) if projector.reads_each_event() => {
                Some(OnePass::new(db, self.source, upto))
            }
            _ => None,
        }
    }

    /// Under the swap's locks: applies the `pending` events after `at` up to `upto` in the
    /// swap's transaction. Returns the events applied: none by external projectors, whose
    /// tail is left to their hand-over ([`Applier::tail_limit`]).
    pub async fn final_tail(&self, at: Cursor, upto: Bound, pending: i64) -> Result<i64> {
        match &self.applier {
            Applier::Handlers(_) => {
                self.range(at, upto, &mut None, None, false, Some(pending), None)
                    .await
            }
            Applier::External(_) => Ok(0),
        }
    }

    /// Catches up until nothing new can be read (batches.rs: [`crate::pipeline::batches::catch_up`]),
    /// outside any swap lock; every window ends at a bound from `cut`. Returns the events
    /// applied.
    pub async fn catch_up(&self, cut: &mut Cut<'_>, cancel: &Cancel) -> Result<i64> {
        let mut rounds = RunCatchUp {
            replay: self,
            cut,
            cancel,
            at: None,
        };
        crate::pipeline::batches::catch_up(&mut rounds, self.reporter).await
    }

    /// Applies the events after `from` up to `upto`. With `commit_each`, every batch is its own
    /// transaction together with its checkpoint; without, the caller's transaction holds all.
    /// `budget` caps the number of events and is decreased by what was applied. With `pass`
    /// (the bulk replay up to `upto`), batches take their events from its one ordered read.
    #[allow(clippy::too_many_arguments)]
    pub async fn range(
        &self,
        from: Cursor,
        upto: Bound,
        budget: &mut Option<i64>,
        cancel: Option<&Cancel>,
        commit_each: bool,
        known: Option<i64>,
        pass: Option<&OnePass<'_>>,
    ) -> Result<i64> {
        let projector = match &self.applier {
            Applier::Handlers(projector) => projector,
            Applier::External(external) => {
                return external
                    .apply(self.conn, self.source, from, upto, cancel, self.reporter)
                    .await
            }
        };
        let mut policy = if commit_each {
            Policy::committed(self.conn, self.run_id, self.reporter, cancel)
        } else {
            Policy::in_caller_transaction()
        };
        policy.cancel = cancel;
        policy.budget = *budget;
        let batches = RunBatches {
            replay: self,
            projector,
            known: std::sync::Mutex::new(known),
            total: std::sync::atomic::AtomicI64::new(0),
            own_transaction: commit_each,
            pass,
        };
        let driven =
            crate::pipeline::batches::drive(self.conn, &batches, from, upto, &policy).await?;
        if let Some(b) = budget.as_mut() {
            *b -= driven.events;
        }
        if driven.ended == Ended::Stopped {
            return Err(Error::interrupted(format!(
                "run {}: cancelled after {} event(s); checkpoint at {}",
                self.run_id,
                driven.events,
                driven.to.describe()
            ))
            .with_hint("`reproject rebuild --resume` continues it"));
        }
        Ok(driven.events)
    }
}

/// The catch-up rounds of a run: the run's checkpoint, bounds from its cut.
struct RunCatchUp<'r, 'a, 'c> {
    replay: &'r Replay<'a>,
    cut: &'r mut Cut<'c>,
    cancel: &'r Cancel,
    /// The checkpoint the last `pending` counted from.
    at: Option<Cursor>,
}

impl CatchUp for RunCatchUp<'_, '_, '_> {
    async fn pending(&mut self) -> Result<(Option<Bound>, i64)> {
        let r = self.replay;
        let at = runs::cursor(r.conn, r.run_id).await?;
        self.at = Some(at);
        let bound = self
            .cut
            .bound(r.conn, &at)
            .await?
            .filter(|b| !b.reached_by(&at));
        let n = match &bound {
            Some(b) => r.source.count(r.conn, &at, b).await?.events,
            None => 0,
        };
        Ok((bound, n))
    }

    async fn apply(&mut self, bound: Bound, pending: i64) -> Result<i64> {
        let r = self.replay;
        let at = match self.at {
            Some(at) => at,
            None => runs::cursor(r.conn, r.run_id).await?,
        };
        r.range(
            at,
            bound,
            &mut None,
            Some(self.cancel),
            true,
            Some(pending),
            None,
        )
        .await
    }

    fn announce(&self, pending: i64) -> crate::progress::Step {
        crate::progress::Step::CatchingUp { events: pending }
    }
}

/// The batches of a run's range: into its rebuild tables, with the run's checkpoint.
struct RunBatches<'r, 'a> {
    replay: &'r Replay<'a>,
    projector: &'r Projector,
    /// How many events are left up to the bound, when the caller counted them (the bound is
    /// final, so applying n of them leaves exactly known - n).
    known: std::sync::Mutex<Option<i64>>,
    /// Events applied so far, for the progress bar.
    total: std::sync::atomic::AtomicI64,
    own_transaction: bool,
    /// The bulk replay's one ordered read, when its batches take their events from it.
    pass: Option<&'r OnePass<'r>>,
}

impl Batches for RunBatches<'_, '_> {
    /// One batch: the events after `from` (at most `batch_size`, within `budget`), the proof of
    /// the guard, the checkpoint moved from `from` to where the batch ended, and the write
    /// guard; in the caller's transaction.
    async fn batch(
        &self,
        from: &Cursor,
        upto: &Bound,
        budget: Option<i64>,
    ) -> Result<tx::End<Step>> {
        let (r, projector) = (self.replay, self.projector);
        let known = *self.known.lock().unwrap();
        let step = match self.pass {
            Some(pass) => {
                projector
                    .apply_from_pass(r.conn, pass, from, r.batch_size, budget)
                    .await?
            }
            None => {
                projector
                    .apply_next_counted(r.conn, r.source, from, upto, r.batch_size, budget, known)
                    .await?
            }
        };
        fence::prove(r.conn, LockClass::Projection, r.names).await?;
        runs::advance_cursor(r.conn, r.run_id, r.names, from, &step.to, step.events).await?;
        write_guard::check(
            r.conn,
            projector.writes(),
            from,
            &step.to,
            self.own_transaction,
        )
        .await?;
        Ok(tx::End::Commit(step))
    }

    fn committed(&self, step: &Step) {
        if let Some(k) = self.known.lock().unwrap().as_mut() {
            *k -= step.events;
        }
        let total = self.total.fetch_add(step.events, Relaxed) + step.events;
        let base = self.replay.progress_base.load(Relaxed);
        self.replay.reporter.replay_progress(base + total as u64);
    }
}
