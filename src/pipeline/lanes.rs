//! Stream lanes: the bulk replay of stream-scoped projections, split by stream.
//!
//! When every row of a projection is written only by the events of one stream (it declares
//! `stream_key`), the events of different streams can be applied in any interleaving: only
//! each stream's own order matters. A *lane* takes every event up to the bound whose stream
//! hashes to it; lanes never touch each other's rows, so `--jobs N` applies N of them at once,
//! each on its own connection, and the tables end up exactly as one replay in global order
//! would leave them.
//!
//! For set-based (`-- per batch`) projections it also writes each row once: batches cut by
//! position write a row once per batch its stream's events fall into, and when streams
//! interleave over the whole history (W1: every posting's first event, then every posting's
//! second, …) that is every batch. A set-based lane is one transaction over all of its
//! streams' events. A per-event lane goes in batches of `--batch-size`, like the replay, each
//! moving the lane's own cursor.
//!
//! When (see [`why_not`]): every projection of the run has SQL handlers of one kind (all
//! set-based or all per event), declares `stream_key`, and reads no other projection of the
//! run; no partial rebuild, no `--max-events`; and the range is worth splitting (more than one
//! set batch, or `--jobs` above 1).
//!
//! Events read in (transaction id, position) order (`xid8`): a plan covers the events below
//! the cut the bulk replay settled, where every row is final (every transaction below it has
//! ended), and ends at the last of them in that order; its start, its end and each per-event
//! lane's cursor are (transaction id, position) pairs, as the run's checkpoint is. Each lane
//! reads its streams' events in (transaction id, position) order within the plan. A
//! per-event lane reads them in one ordered pass (read/one_pass.rs): the stores that use
//! `xid8` have no index in that order, so a batch read past the lane's cursor would scan and
//! sort the whole range again for every batch. What commits after the cut is caught up after
//! the plan, on the run's connection, as for the position modes.
//!
//! Exactly once: the lanes of a plan partition its events (state/lanes.rs records the plan
//! before any lane runs); each lane's work commits with its cursor or done mark
//! (compare-and-set), and the run's checkpoint moves past the plan only in the transaction
//! that finds every lane done. Until then the checkpoint stays where the plan starts, and a
//! resumed run continues the same plan, each lane from its own cursor.

use crate::apply::sql::Step;
use crate::apply::sql::{Projector, Target};
use crate::apply::write_guard;
use crate::db::tx;
use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::pipeline::batches::{Batches, Policy};
use crate::pipeline::Engine;
use crate::read::one_pass::OnePass;
use crate::read::source::{next_cursor, Bound, Cursor, EventSource};
use crate::state::lanes::{self, LanePlan, PendingLane};
use crate::state::locks::LockClass;
use crate::state::runs;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio_postgres::Client;

/// At most this many lanes in one plan: each lane reads the plan's whole range of events
/// (and keeps only its streams), so a plan of more lanes reads the events more often. Above
/// it, lanes hold more than one set batch of events each.
pub const MAX_LANES: i64 = 64;

/// Why the run's projections cannot replay in stream lanes, or None when they can.
pub(crate) fn why_not(
    config: &Config,
    order: &[usize],
    projector: &Projector,
    source: &EventSource,
) -> Option<String> {
    if !projector.set_based_only() && !projector.per_event_only() {
        return Some(
            "its projections are not all SQL handlers of one kind (all set-based, or all per event)"
                .into(),
        );
    }
    why_not_configured(config, order, source)
}

/// Why the run's projections cannot replay in stream lanes, from the config alone (what
/// `plan` knows; a run also checks the handlers it prepared), or None when they can.
pub(crate) fn why_not_configured(
    config: &Config,
    order: &[usize],
    source: &EventSource,
) -> Option<String> {
    let projections: Vec<_> = order.iter().map(|&i| &config.projections[i]).collect();
    if let Some(p) = projections.iter().find(|p| p.handlers().is_none()) {
        return Some(format!(
            "projection `{}` has no SQL handlers (Rust or external projections replay on one connection)",
            p.name
        ));
    }
    let set_based = projections.iter().filter(|p| p.per_batch()).count();
    if set_based > 0 && set_based < projections.len() {
        return Some(
            "its projections are not all SQL handlers of one kind (all set-based, or all per event)"
                .into(),
        );
    }
    if let Some(p) = projections.iter().find(|p| p.stream_key.is_none()) {
        return Some(format!(
            "projection `{}` declares no `stream_key` (that its rows are written only by the events of one stream)",
            p.name
        ));
    }
    for p in &projections {
        if let Some(other) = projections
            .iter()
            .find(|o| o.name != p.name && p.depends_on.contains(&o.name))
        {
            return Some(format!(
                "projection `{}` reads projection `{}`, rebuilt in the same run (a lane could read rows another lane is writing)",
                p.name, other.name
            ));
        }
    }
    if !source.lanes_possible() {
        return Some("a partial rebuild (`--streams`) reads only some streams' events".into());
    }
    None
}

/// How many lanes a range of `events` is split into: one per set batch for set-based
/// projections (at most [`MAX_LANES`]), and at least one per job. Below 2, the range is not
/// split.
pub(crate) fn lane_count(events: i64, set_batch_size: Option<i64>, jobs: usize) -> i32 {
    if events < 2 {
        return 1;
    }
    let by_size = set_batch_size.map_or(1, |size| (events + size.max(1) - 1) / size.max(1));
    by_size.max(jobs as i64).min(MAX_LANES).min(events).max(1) as i32
}

/// Applies the lanes of one run.
pub(crate) struct Lanes<'a> {
    pub engine: &'a Engine<'a>,
    /// The run's own connection: plans, cancel requests and the final checkpoint.
    pub conn: &'a Client,
    pub run_id: i64,
    pub names: &'a [String],
    /// The run's projector, prepared on `conn`: it tells the kind of lanes, and applies
    /// set-based lanes (plain statements, valid on any connection).
    pub projector: &'a Projector,
    /// For per-event lanes: each lane connection prepares the handlers of `order` again.
    pub target: &'a Target<'a>,
    pub order: &'a [usize],
    pub source: &'a EventSource,
    /// Events per transaction of a per-event lane.
    pub batch_size: i64,
    /// Lanes applied at once, each on a connection of its own.
    pub jobs: usize,
}

impl Lanes<'_> {
    /// Applies the lanes of `plan` that are not done yet, then moves the checkpoint from the
    /// plan's start to its end. `progress_base` is what the progress bar showed before; a
    /// set-based lane advances it by its share of the plan's events (its own count is not
    /// known), a per-event lane by the events of each batch. Returns the new checkpoint and
    /// the events this call applied (less than the plan's when it continued a plan).
    pub async fn apply(&self, plan: &LanePlan, progress_base: u64) -> Result<(Cursor, i64)> {
        let reporter = self.engine.reporter;
        let cancel = &self.engine.cancel;
        let after = plan.after_cursor();
        let to = plan.upto_cursor();
        let set_based = self.projector.set_based_only();
        let queue = Mutex::new(plan.pending.iter().copied().collect::<VecDeque<_>>());
        let stop = AtomicBool::new(false);
        // Events the per-event lanes of this call applied.
        let applied_now = AtomicU64::new(0);
        let per_lane = plan.events.max(0) as u64 / plan.lanes.max(1) as u64;
        let done_lanes = (plan.lanes as usize - plan.pending.len()) as u64;
        let shown = AtomicU64::new(
            progress_base
                + done_lanes * per_lane
                + plan
                    .pending
                    .iter()
                    .map(|l| l.events.max(0) as u64)
                    .sum::<u64>(),
        );
        let workers = self.jobs.clamp(1, plan.pending.len().max(1));
        reporter.step(&crate::progress::Step::ReplayingInLanes {
            lanes: plan.lanes,
            plan: plan.plan,
            // A plan continued (after a failure, Ctrl-C or a lost connection): some lanes are
            // done, or a per-event lane is part-way.
            left: ((plan.pending.len() as i32) < plan.lanes
                || plan.pending.iter().any(|l| l.position.is_some()))
            .then_some(plan.pending.len()),
            at_once: workers,
            up_to: to.into(),
        });
        reporter.replay_progress(shown.load(Ordering::Relaxed));
        let worker = || async {
            let result = async {
                if stop.load(Ordering::Relaxed) || queue.lock().unwrap().is_empty() {
                    return Ok(());
                }
                let conn = self.engine.db.dedicated().await?;
                // Per-event handlers are prepared statements (and the server loop's temporary
                // functions): valid on the connection that prepared them only.
                let own = if set_based {
                    None
                } else {
                    Some(Projector::prepare(&conn, self.target, self.order).await?)
                };
                crate::apply::sql::session_setup(&conn).await?;
                loop {
                    if stop.load(Ordering::Relaxed) || cancel.is_cancelled() {
                        return Ok(());
                    }
                    let Some(lane) = queue.lock().unwrap().pop_front() else {
                        return Ok(());
                    };
                    match &own {
                        None => {
                            self.set_based_lane(&conn, plan, lane.lane, &after, &to)
                                .await?;
                            let n = shown.fetch_add(per_lane, Ordering::Relaxed) + per_lane;
                            reporter.replay_progress(n);
                        }
                        Some(projector) => {
                            self.per_event_lane(
                                &conn,
                                projector,
                                plan,
                                lane,
                                (&shown, &applied_now),
                                &stop,
                            )
                            .await?;
                        }
                    }
                }
            }
            .await;
            if result.is_err() {
                // The other workers finish the lane (or batch) they are in, which commits with
                // its mark, and take no new one.
                stop.store(true, Ordering::Relaxed);
            }
            result
        };
        // A `reproject cancel` request sets the engine's token (pipeline/cancel_requests.rs):
        // each lane stops between its batches.
        let results = futures_util::future::join_all((0..workers).map(|_| worker())).await;
        if let Some(err) = results.into_iter().find_map(|r| r.err()) {
            return Err(err);
        }
        // Every lane done: the checkpoint moves past the plan, in one transaction with the
        // proof that none is left.
        let moved = tx::run(
            self.conn,
            "cannot begin",
            Some(tx::Fence::projections(self.names)),
            || async {
                let left = lanes::pending(self.conn, self.run_id, plan.plan).await?;
                if left > 0 {
                    return Ok(Some(left));
                }
                runs::advance_cursor(self.conn, self.run_id, self.names, &after, &to, plan.events)
                    .await?;
                // The per-event lanes already counted their events in the run's total.
                let counted = lanes::counted(self.conn, self.run_id, plan.plan).await?;
                runs::add_events(self.conn, self.run_id, -counted).await?;
                Ok(None)
            },
        )
        .await?;
        if let Some(left) = moved {
            let message = format!(
                "run {}: {left} of {} stream lane(s) not done; checkpoint at {}",
                self.run_id,
                plan.lanes,
                after.describe()
            );
            return Err(if cancel.is_cancelled() {
                Error::interrupted(format!("{message} (cancelled)"))
                    .with_hint("`reproject rebuild --resume` continues with the lanes left")
            } else {
                Error::runtime(message)
            });
        }
        reporter.replay_progress(progress_base + plan.events.max(0) as u64);
        // What this call applied: a fresh plan is all of it. A continued one: the per-event
        // lanes' batches of this call, or the set-based lanes it ran, counted (one scan each).
        let resumed = (plan.pending.len() as i32) < plan.lanes
            || plan.pending.iter().any(|l| l.position.is_some());
        let applied = if !resumed {
            plan.events
        } else if set_based {
            let mut n = 0;
            for l in &plan.pending {
                let lane = self.source.in_lane(l.lane, plan.lanes);
                n += lane.count(self.conn, &after, &plan.bound()).await?.events;
            }
            n
        } else {
            applied_now.load(Ordering::Relaxed) as i64
        };
        Ok((to, applied))
    }

    /// A set-based lane: one transaction over all of its events, with its done mark.
    async fn set_based_lane(
        &self,
        conn: &Client,
        plan: &LanePlan,
        lane: i32,
        after: &Cursor,
        to: &Cursor,
    ) -> Result<()> {
        self.retrying(conn, plan, lane, || async {
            self.projector
                .apply_lane(conn, self.source, after, to, lane, plan.lanes)
                .await?;
            write_guard::check(conn, self.projector.writes(), after, to, true).await?;
            lanes::mark_done(conn, self.run_id, plan.plan, lane).await
        })
        .await
    }

    /// A per-event lane: batches of about `batch_size` of its events in order, each in one
    /// transaction that moves the lane's cursor; the last one marks the lane done. Stops
    /// between batches when cancelled or when another lane failed (`stop`).
    async fn per_event_lane(
        &self,
        conn: &Client,
        projector: &Projector,
        plan: &LanePlan,
        lane: PendingLane,
        (shown, applied_now): (&AtomicU64, &AtomicU64),
        stop: &AtomicBool,
    ) -> Result<()> {
        let source = self.source.in_lane(lane.lane, plan.lanes);
        let (start, pass) = match plan.upto_tx {
            // Position modes: windows of positions (see [`LaneBatches`]).
            None => {
                let start = match lane.position.or(plan.after) {
                    Some(p) => p,
                    // Before the first event: the window starts just below it.
                    None => match self.source.first(conn).await? {
                        Some(first) => first.saturating_sub(1),
                        None => plan.upto,
                    },
                };
                (Cursor::at(Some(start)), None)
            }
            // `xid8`: one ordered pass over the lane's events of the plan.
            Some(_) => (
                lane.cursor(plan),
                Some(OnePass::new(&self.engine.db, &source, plan.bound())),
            ),
        };
        let batches = LaneBatches {
            lanes: self,
            conn,
            projector,
            plan,
            lane: lane.lane,
            source: &source,
            pass: pass.as_ref(),
            // As recorded: none yet (NULL) until the lane's first batch.
            recorded: Mutex::new(Cursor {
                tx: lane.tx,
                position: lane.position,
            }),
            width: AtomicI64::new(self.batch_size.saturating_mul(i64::from(plan.lanes)).max(1)),
            shown,
            applied_now,
        };
        let mut policy = Policy::committed(
            conn,
            self.run_id,
            self.engine.reporter,
            Some(&self.engine.cancel),
        );
        policy.stop = Some(stop);
        let driven =
            crate::pipeline::batches::drive(conn, &batches, start, plan.bound(), &policy).await;
        if let Some(pass) = &pass {
            pass.close().await;
        }
        driven?;
        Ok(())
    }

    /// Runs `work` in a transaction on `conn`, again after a transient error (serialization
    /// failure, deadlock, lock timeout), up to [`tx::TRANSIENT_RETRIES`] times.
    async fn retrying<T, F, Fut>(
        &self,
        conn: &Client,
        plan: &LanePlan,
        lane: i32,
        work: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let faults = runs::RunFaults {
            client: conn,
            run_id: self.run_id,
        };
        let retry = tx::Retry {
            faults: &faults,
            reporter: self.engine.reporter,
        };
        retry
            .transient(
                || format!("stream lane {} of {}", lane + 1, plan.lanes),
                || {
                    tx::run(
                        conn,
                        "cannot begin a stream lane's transaction",
                        Some(tx::Fence::projections(self.names)),
                        &work,
                    )
                },
            )
            .await
    }
}

/// The batches of one per-event lane.
///
/// In `xid8` mode each batch takes the next events of the lane's ordered pass. In the
/// position modes each batch reads a window of positions, not "the next N events of the
/// lane": the planner cannot estimate the hash predicate, and for `ORDER BY position LIMIT N`
/// under it chose parallel sequential scans of the whole range for every batch (half the
/// lanes' time in the benchmark). A window of positions is an index range scan. It starts
/// `batch_size × lanes` positions wide and adapts to how many of its events are there.
struct LaneBatches<'r, 'a> {
    lanes: &'r Lanes<'a>,
    conn: &'r Client,
    projector: &'r Projector,
    plan: &'r LanePlan,
    lane: i32,
    /// The run's event source, narrowed to the lane's streams.
    source: &'r EventSource,
    /// `xid8` mode: the lane's events of the plan, in (transaction id, position) order.
    pass: Option<&'r OnePass<'r>>,
    /// The lane's recorded cursor, which each batch compares and sets.
    recorded: Mutex<Cursor>,
    /// The width of the next window, in positions.
    width: AtomicI64,
    /// The progress bar, and the events the lanes of this call applied.
    shown: &'r AtomicU64,
    applied_now: &'r AtomicU64,
}

impl LaneBatches<'_, '_> {
    /// An `xid8` batch: the next at most `batch_size` events of the lane's pass after `from`,
    /// applied, the lane's cursor moved to the last of them (compare-and-set). A batch short
    /// of `batch_size` has read the lane's events to the plan's end: it marks the lane done.
    async fn next_of_pass(&self, pass: &OnePass<'_>, from: &Cursor) -> Result<tx::End<Step>> {
        let (conn, plan, batch_size) = (self.conn, self.plan, self.lanes.batch_size);
        let events = pass.next(from, batch_size).await?;
        let n = events.len() as i64;
        let done = n < batch_size;
        let to = next_cursor(from, pass.upto(), events.last(), done);
        self.projector.apply(conn, &events).await?;
        let recorded = *self.recorded.lock().unwrap();
        let run_id = self.lanes.run_id;
        lanes::advance(conn, run_id, plan.plan, self.lane, &recorded, &to, n, done).await?;
        runs::add_events(conn, run_id, n).await?;
        write_guard::check(conn, self.projector.writes(), from, &to, true).await?;
        Ok(tx::End::Commit(Step {
            to,
            events: n,
            exhausted: done,
        }))
    }
}

impl Batches for LaneBatches<'_, '_> {
    async fn batch(
        &self,
        from: &Cursor,
        _upto: &Bound,
        _budget: Option<i64>,
    ) -> Result<tx::End<Step>> {
        let (conn, plan, batch_size) = (self.conn, self.plan, self.lanes.batch_size);
        // Right after BEGIN, as every lane transaction (state/fence.rs).
        crate::state::fence::prove(conn, LockClass::Projection, self.lanes.names).await?;
        if let Some(pass) = self.pass {
            return self.next_of_pass(pass, from).await;
        }
        let at = from.position.unwrap_or(plan.upto);
        let window_end = at
            .saturating_add(self.width.load(Ordering::Relaxed))
            .min(plan.upto);
        let events = self
            .source
            .read_batch(conn, from, &Bound::UpTo(window_end), batch_size)
            .await?;
        let n = events.len() as i64;
        // A full batch may have left events in the window: continue after its last one; else
        // the window is read to its end.
        let new = match events.last() {
            Some(last) if n >= batch_size => last.position,
            _ => window_end,
        };
        let done = new >= plan.upto;
        self.projector.apply(conn, &events).await?;
        let recorded = *self.recorded.lock().unwrap();
        let run_id = self.lanes.run_id;
        let to = Cursor::at(Some(new));
        lanes::advance(conn, run_id, plan.plan, self.lane, &recorded, &to, n, done).await?;
        // For `reproject status`, while the checkpoint waits for the whole plan; last, so the
        // other lanes wait for this row only until the commit.
        runs::add_events(conn, run_id, n).await?;
        write_guard::check(conn, self.projector.writes(), from, &to, true).await?;
        Ok(tx::End::Commit(Step {
            to,
            events: n,
            exhausted: done,
        }))
    }

    fn what(&self, _from: &Cursor) -> String {
        format!("stream lane {} of {}", self.lane + 1, self.plan.lanes)
    }

    /// A lane ends with the batch that marks it done, even an empty one.
    fn reached(&self, _from: &Cursor, _upto: &Bound) -> bool {
        false
    }

    fn committed(&self, step: &Step) {
        *self.recorded.lock().unwrap() = step.to;
        let batch_size = self.lanes.batch_size;
        let width = self.width.load(Ordering::Relaxed);
        let width = if step.events >= batch_size {
            (width / 2).max(batch_size)
        } else if step.events < batch_size / 2 {
            width.saturating_mul(2)
        } else {
            width
        };
        self.width.store(width, Ordering::Relaxed);
        let n = step.events as u64;
        self.applied_now.fetch_add(n, Ordering::Relaxed);
        let shown = self.shown.fetch_add(n, Ordering::Relaxed) + n;
        self.lanes.engine.reporter.replay_progress(shown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lane_per_set_batch_and_at_least_one_per_job() {
        assert_eq!(lane_count(1_500_000, Some(1_000_000), 1), 2);
        assert_eq!(lane_count(1_000_000, Some(1_000_000), 1), 1);
        assert_eq!(lane_count(1_000_001, Some(1_000_000), 1), 2);
        assert_eq!(lane_count(500_000, Some(1_000_000), 2), 2);
        assert_eq!(lane_count(15_000_000, Some(1_000_000), 2), 15);
    }

    #[test]
    fn per_event_lanes_are_one_per_job() {
        assert_eq!(lane_count(1_500_000, None, 1), 1);
        assert_eq!(lane_count(1_500_000, None, 2), 2);
        assert_eq!(lane_count(1_500_000, None, 100), MAX_LANES as i32);
    }

    #[test]
    fn lanes_are_capped_and_never_more_than_the_events() {
        assert_eq!(lane_count(1_500_000, Some(1), 1), MAX_LANES as i32);
        assert_eq!(lane_count(3, Some(1), 8), 3);
        assert_eq!(lane_count(1, Some(1), 8), 1);
        assert_eq!(lane_count(0, Some(1000), 4), 1);
    }
}
