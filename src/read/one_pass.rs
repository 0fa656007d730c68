//! One ordered pass over the bulk replay's range.
//!
//! Why: a per-batch read ([`EventSource::read_batch`], `ORDER BY … LIMIT n` past the
//! checkpoint) costs a scan and a sort of everything left in the range whenever no index
//! serves the reading order (Emmett's and Sequent's tables, read in (transaction id, position)
//! order, have none), so a replay took batches × events. The bulk replay's range (checkpoint,
//! bound] is fixed and final, so it is read once instead: a cursor over the ordered query, in a
//! read-only REPEATABLE READ transaction on a connection of its own, fetched batch by batch.
//! A sort, if the plan needs one, runs once, at the first fetch.
//!
//! Exactly once is unchanged: events are only read here. Each batch is applied and its
//! checkpoint moved in the write transaction on the run's connection, as before. The chunk
//! handed to a batch is kept until a batch at another start asks, so a batch rolled back and
//! retried (a transient error) gets the same events. A cursor not standing at the batch's
//! start (a process resuming the run, a read session that ended) is opened again there: every
//! position up to the bound is final, so any snapshot taken now sees the same events.
//!
//! Cost: one more connection, and a snapshot held while a cursor is open. No writer waits for
//! it, and it has no transaction id, so it holds no `xid8` cut back; but no row version that
//! dies while it is held can be pruned, in any table: per-event upserts into the rebuild
//! tables then leave ever longer update chains behind (measured: a 200k-event replay took
//! twice as long with one snapshot for the whole replay). So a cursor is held only for
//! [`HOLD_FACTOR`] times what opening it cost (the scan and sort at its first fetch), at least
//! [`MIN_HOLD`], then opened again at the next batch: the sorts cost at most about a tenth of
//! the replay, and dead row versions are pruned between windows. An
//! `idle_in_transaction_session_timeout` that ends the read session between batches costs one
//! reopen.

use crate::db::Db;
use crate::error::{Context, Result};
use crate::read::source::{refs, Bound, Cursor, Event, EventSource};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// The cursor's name in the read session.
const CURSOR: &str = "reproject_replay";

/// How many times its opening cost a cursor is kept (see the module's comment).
const HOLD_FACTOR: u32 = 10;

/// The least time a cursor is kept, however cheap it was to open.
const MIN_HOLD: Duration = Duration::from_secs(5);

/// The events after a checkpoint up to a fixed, final bound, read in one ordered pass.
pub struct OnePass<'a> {
    db: &'a Db,
    source: &'a EventSource,
    upto: Bound,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Option<Open>,
    /// The last chunk handed out: where it starts, how many were asked for, the events.
    held: Option<(Cursor, i64, Arc<Vec<Event>>)>,
    /// How many times a cursor was opened (one, unless a session ended or a run resumed).
    opened: u32,
}

/// An open read session, its cursor standing right after `at`.
struct Open {
    client: Client,
    at: Cursor,
    opened_at: Instant,
    /// How long opening it and its first fetch took; None before that fetch.
    cost: Option<Duration>,
}

impl Open {
    /// Whether its snapshot has been held long enough (see the module's comment).
    fn expired(&self) -> bool {
        self.cost
            .is_some_and(|cost| self.opened_at.elapsed() > (cost * HOLD_FACTOR).max(MIN_HOLD))
    }
}

impl<'a> OnePass<'a> {
    /// A pass over `source` up to `upto`; nothing is opened before the first batch.
    pub fn new(db: &'a Db, source: &'a EventSource, upto: Bound) -> OnePass<'a> {
        OnePass {
            db,
            source,
            upto,
            state: Mutex::default(),
        }
    }

    /// The bound this pass reads up to.
    pub fn upto(&self) -> &Bound {
        &self.upto
    }

    /// The next at most `limit` events after `from`, in reading order. Asked again for the
    /// same start and limit (the batch was retried), the same events.
    pub async fn next(&self, from: &Cursor, limit: i64) -> Result<Arc<Vec<Event>>> {
        let mut st = self.state.lock().await;
        if let Some((at, n, events)) = &st.held {
            if at == from && *n == limit {
                return Ok(events.clone());
            }
        }
        st.held = None;
        let reusing = st
            .open
            .as_ref()
            .is_some_and(|o| o.at == *from && !o.expired());
        if !reusing {
            if let Some(old) = st.open.take() {
                end(old).await;
            }
        }
        let events = match self.fetch(&mut st, from, limit).await {
            Ok(events) => events,
            // The read session may have ended between batches (an idle-in-transaction timeout,
            // a terminated backend): the range is final, so a new cursor at `from` reads the
            // same events. A second failure is real.
            Err(e) if reusing => {
                tracing::warn!(
                    "the one-pass read of `{}` failed ({e}); opening it again after {}",
                    self.source.table,
                    from.describe()
                );
                self.fetch(&mut st, from, limit).await?
            }
            Err(e) => return Err(e),
        };
        let events = Arc::new(events);
        st.held = Some((*from, limit, events.clone()));
        Ok(events)
    }

    /// Fetches from the open cursor (opening one at `from` first if none is open). On any
    /// failure the session is dropped: its cursor no longer stands at a known event.
    async fn fetch(&self, st: &mut State, from: &Cursor, limit: i64) -> Result<Vec<Event>> {
        if st.open.is_none() {
            st.open = Some(self.open(from).await?);
            st.opened += 1;
        }
        let open = st.open.as_mut().expect("opened above");
        let read = async {
            let rows = open
                .client
                .query(&format!("FETCH FORWARD {limit} FROM {CURSOR}"), &[])
                .await
                .with_context(|| {
                    format!(
                        "cannot read events of `{}` after {}",
                        self.source.table,
                        from.describe()
                    )
                })?;
            self.source.decode(&rows)
        }
        .await;
        match read {
            Ok(events) => {
                if open.cost.is_none() {
                    open.cost = Some(open.opened_at.elapsed());
                }
                if let Some(last) = events.last() {
                    open.at = Cursor {
                        tx: last.tx,
                        position: Some(last.position),
                    };
                }
                Ok(events)
            }
            Err(e) => {
                st.open = None;
                Err(e)
            }
        }
    }

    /// A read session with the cursor over the events after `from` up to the bound.
    async fn open(&self, from: &Cursor) -> Result<Open> {
        let opened_at = Instant::now();
        let client = self.db.dedicated().await?;
        let (sql, params) = self.source.ordered(from, &self.upto);
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .context("cannot start the read transaction of the replay")?;
        client
            .execute(
                &format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {sql}"),
                &refs(&params),
            )
            .await
            .with_context(|| {
                format!(
                    "cannot open the ordered read of `{}` after {}",
                    self.source.table,
                    from.describe()
                )
            })?;
        Ok(Open {
            client,
            at: *from,
            opened_at,
            cost: None,
        })
    }

    /// Ends the read session (the bulk replay is over); returns how many cursors were opened.
    pub async fn close(&self) -> u32 {
        let mut st = self.state.lock().await;
        st.held = None;
        if let Some(open) = st.open.take() {
            end(open).await;
        }
        st.opened
    }
}

/// Ends a read session: nothing was written, so a failed ROLLBACK only means it is gone.
async fn end(open: Open) {
    let _ = open.client.batch_execute("ROLLBACK").await;
}
