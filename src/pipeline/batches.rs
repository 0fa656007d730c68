//! The one loop that applies a range of events in batches, and the one catch-up built on it.
//!
//! Every replay of reproject goes through [`drive`]: the rebuild's bulk replay, catch-up
//! rounds and final tail (replay.rs), a rollback's catch-up of the swapped-out tables
//! (old_generation.rs), each per-event stream lane (lanes.rs) and each batch of the live
//! runner (live.rs, one per group and round). What differs between them is what one batch
//! does (the [`Batches`] they implement: which tables, which checkpoint, whether to keep it)
//! and when to stop ([`Policy`]); the loop itself (transaction, apply, prove, checkpoint,
//! guard, commit, retry after a transient error, progress, cancellation between batches) is
//! written once. Not on it: a set-based lane (one transaction, no batches), an external
//! projector's range (a command, then one transaction) and the live runner's careful pass
//! after a handler error (event by event under savepoints, in one transaction).
//!
//! Exactly once: a batch and its checkpoint share one transaction ([`tx::batch`]); a batch
//! rolled back (an error, a retried transient error) moved no checkpoint either.

use crate::apply::sql::Step;
use crate::db::tx;
use crate::error::{Error, Reason, Result};
use crate::progress::{Cancel, Reporter};
use crate::read::source::{Bound, Cursor};
use std::sync::atomic::{AtomicBool, Ordering};

/// What one batch does, inside its transaction: apply the events after `from` (up to `upto`,
/// at most `budget`), prove the guard, move the checkpoint from `from` to where the batch
/// ended and run the write guard before the commit. Returns the [`Step`], to commit, or to
/// roll back when the batch decided to keep nothing (the live runner's batch that found its
/// checkpoint moved, or nothing to do, or a handler failing): that ends the drive.
pub(crate) trait Batches {
    async fn batch(
        &self,
        from: &Cursor,
        upto: &Bound,
        budget: Option<i64>,
    ) -> Result<tx::End<Step>>;

    /// Names the batch in the warning of a transient retry.
    fn what(&self, from: &Cursor) -> String {
        format!("batch after {}", from.describe())
    }

    /// Whether nothing is left after `from`: then no batch runs. A lane instead ends only
    /// with the batch that marks it done.
    fn reached(&self, from: &Cursor, upto: &Bound) -> bool {
        upto.reached_by(from)
    }

    /// After each committed batch (progress, state kept between batches).
    fn committed(&self, _step: &Step) {}
}

/// When to stop and how batches commit.
pub(crate) struct Policy<'a> {
    /// Each batch in its own transaction with its checkpoint; without, in the caller's
    /// transaction (the final tail under the swap's locks), which commits all at once.
    pub own_transaction: bool,
    /// Who hears of a transient retry; None: not retried (the caller stops and continues
    /// from the last committed batch when run again).
    pub retry: Option<(crate::state::runs::RunFaults<'a>, &'a dyn Reporter)>,
    /// Stop between batches once set.
    pub cancel: Option<&'a Cancel>,
    /// Stop between batches once set (another lane failed).
    pub stop: Option<&'a AtomicBool>,
    /// At most this many events in all.
    pub budget: Option<i64>,
    /// At most this many batches (the live runner: one per group and round, so independent
    /// groups take turns).
    pub batches: Option<u32>,
}

impl<'a> Policy<'a> {
    /// Batches in their own transactions, retried after transient errors, stopping on cancel.
    pub fn committed(
        client: &'a tokio_postgres::Client,
        run_id: i64,
        reporter: &'a dyn Reporter,
        cancel: Option<&'a Cancel>,
    ) -> Self {
        Policy {
            own_transaction: true,
            retry: Some((crate::state::runs::RunFaults { client, run_id }, reporter)),
            cancel,
            stop: None,
            budget: None,
            batches: None,
        }
    }

    /// All batches in the caller's transaction (under the swap's or rollback's locks).
    pub fn in_caller_transaction() -> Self {
        Policy {
            own_transaction: false,
            retry: None,
            cancel: None,
            stop: None,
            budget: None,
            batches: None,
        }
    }
}

/// Why [`drive`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Nothing left up to the bound.
    Reached,
    /// The budget (of events or batches) is spent.
    Budget,
    /// The batch decided to roll back (it wrote nothing, moved no checkpoint).
    RolledBack,
    /// Cancelled or stopped between batches.
    Stopped,
}

/// Where [`drive`] left the range.
pub(crate) struct Driven {
    /// The last committed checkpoint.
    pub to: Cursor,
    /// Events applied.
    pub events: i64,
    pub ended: Ended,
}

/// Applies the events after `from` up to `upto` in batches of `batches`, as `policy` says.
pub(crate) async fn drive(
    conn: &tokio_postgres::Client,
    batches: &impl Batches,
    mut from: Cursor,
    upto: Bound,
    policy: &Policy<'_>,
) -> Result<Driven> {
    let mut events = 0i64;
    let mut budget = policy.budget;
    let mut batches_left = policy.batches;
    let ended = loop {
        if policy.cancel.is_some_and(|c| c.is_cancelled())
            || policy.stop.is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break Ended::Stopped;
        }
        if budget == Some(0) || batches_left == Some(0) {
            break Ended::Budget;
        }
        if batches.reached(&from, &upto) {
            break Ended::Reached;
        }
        batches_left = batches_left.map(|n| n - 1);
        let started = std::time::Instant::now();
        // A serialization failure, deadlock or lock timeout rolls the batch back; the same
        // batch is tried again (with its checkpoint, so still exactly once).
        let retry = policy.retry.as_ref().map(|(faults, reporter)| tx::Retry {
            faults,
            reporter: *reporter,
        });
        let batch = tx::batch(
            conn,
            policy.own_transaction,
            retry.as_ref(),
            || batches.what(&from),
            || async {
                Ok(match batches.batch(&from, &upto, budget).await? {
                    tx::End::Commit(step) => tx::End::Commit((true, step)),
                    tx::End::RollBack(step) => tx::End::RollBack((false, step)),
                })
            },
        )
        .await;
        let (committed, step) = match batch {
            Ok(done) => done,
            // Rolled back, so the connection can still read (in the caller's transaction it
            // cannot: the error stays as it is there).
            Err(e) if policy.own_transaction => return Err(note_skipped_event(conn, e).await),
            Err(e) => return Err(e),
        };
        if !committed {
            tracing::info!(
                "batch after {}: rolled back, nothing kept ({} ms)",
                from.describe(),
                started.elapsed().as_millis()
            );
            break Ended::RolledBack;
        }
        // `-v`: every batch, where it went and how long it took (commit included).
        tracing::info!(
            from = from.position,
            to = step.to.position,
            events = step.events,
            ms = started.elapsed().as_millis() as u64,
            "batch after {}: {} event(s) up to {} in {} ms",
            from.describe(),
            step.events,
            step.to.describe(),
            started.elapsed().as_millis()
        );
        from = step.to;
        events += step.events;
        if let Some(b) = budget.as_mut() {
            *b -= step.events;
        }
        batches.committed(&step);
        if step.exhausted {
            break Ended::Reached;
        }
    };
    Ok(Driven {
        to: from,
        events,
        ended,
    })
}

/// A handler failed on an event that the live runner was told to skip (`reproject skip`):
/// the hint says so, since the replay applies every event and the same fix is needed again.
/// Looked up only here, after a failure; a failed look-up leaves the error as it was.
async fn note_skipped_event(conn: &tokio_postgres::Client, mut err: Error) -> Error {
    let Some(Reason::HandlerFailed { position }) = err.reason else {
        return err;
    };
    match crate::state::parked_events::skipped(conn, position).await {
        Ok(Some(skipped)) => {
            err.hint = Some(format!(
                "{}; a replay applies every event, skipped ones too: fix the handler or the event \
                 (or leave the event out with the `[events]` filter), then run it again; nothing \
                 of the failed batch was kept",
                skipped.skip_note()
            ));
        }
        Ok(None) => {}
        Err(e) => tracing::debug!("cannot look up a skip of the event at {position}: {e}"),
    }
    err
}

/// How many catch-up rounds run before the final, locked one. Each round applies what
/// arrived during the one before, so when events arrive slower than they are applied the
/// rounds shrink to nothing within a few; when they do not, more rounds would not converge
/// either, and the swap's tail limit (`--max-tail-events`) decides instead of an endless loop.
pub(crate) const CATCH_UP_ROUNDS: usize = 10;

/// A generation of tables being caught up with new events before the locked round.
pub(crate) trait CatchUp {
    /// The bound now, if it is past where the tables stand, and how many events are below it.
    async fn pending(&mut self) -> Result<(Option<Bound>, i64)>;
    /// Applies the `pending` events up to `bound` in committed batches; returns how many.
    async fn apply(&mut self, bound: Bound, pending: i64) -> Result<i64>;
    /// What the step says before a round of `pending` events.
    fn announce(&self, pending: i64) -> crate::progress::Step;
}

/// Catch-up rounds until nothing is pending (at most [`CATCH_UP_ROUNDS`]), outside any lock.
/// Returns the events applied.
pub(crate) async fn catch_up(tables: &mut impl CatchUp, reporter: &dyn Reporter) -> Result<i64> {
    let mut applied = 0;
    for _ in 0..CATCH_UP_ROUNDS {
        let (bound, pending) = tables.pending().await?;
        let Some(bound) = bound.filter(|_| pending > 0) else {
            break;
        };
        reporter.step(&tables.announce(pending));
        applied += tables.apply(bound, pending).await?;
    }
    Ok(applied)
}
