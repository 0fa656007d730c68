//! One ordered pass over the bulk replay's range.
//!
//! Why: a per-batch read ([`EventSource::read_batch`], `ORDER BY … LIMIT n` past the
//! checkpoint) costs a scan and a sort of everything left in the range whenever no index
//! serves the reading order (Emmett's and Sequent's tables, read in (transaction id, position)
//! order, have none), so a replay took batches × events. The bulk replay's range (checkpoint,
//! bound] is fixed and final, so it is read once instead: a holdable cursor
//! (`DECLARE … WITH HOLD`) over the ordered query, on a connection of its own, fetched batch by
//! batch. Its transaction commits right after the `DECLARE`: the commit runs the query once
//! (the scan, and the sort if the plan needs one) and keeps the rows in the server's temporary
//! storage, then the transaction and its snapshot are gone.
//!
//! Why not a cursor in an open transaction: its snapshot would be held for the whole replay,
//! and no row version that dies while a snapshot is held can be pruned, in any table:
//! per-event upserts into the rebuild tables then leave ever longer update chains behind, so
//! the replay slows down as it goes (measured: twice as long for 200k events with one snapshot
//! for the whole replay; with the snapshot renewed every few seconds, 4× the events still took
//! 6.3× the time). The holdable cursor holds no snapshot between fetches.
//!
//! Cost: one more connection, and temporary space on the server for the rows of the range
//! (about what a sort of them takes; `temp_file_limit` applies). When the server refuses that
//! space (SQLSTATE 53400, or `temp_file_limit` reached), the pass falls back to reading batch by
//! batch (one indexed or sorted read per batch), with a warning.
//!
//! Exactly once is unchanged: events are only read here. Each batch is applied and its
//! checkpoint moved in the write transaction on the run's connection, as before. The chunk
//! handed to a batch is kept until a batch at another start asks, so a batch rolled back and
//! retried (a transient error) gets the same events. A cursor not standing at the batch's
//! start (a process resuming the run, a read session that ended) is opened again there: every
//! position up to the bound is final, so any snapshot taken now sees the same events.

use crate::db::Db;
use crate::error::{Context, Result};
use crate::read::source::{refs, Bound, Cursor, Event, EventSource};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// The cursor's name in the read session.
const CURSOR: &str = "reproject_replay";

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
    /// The server refused the cursor's temporary space: read batch by batch on this session.
    per_batch: Option<Client>,
}

/// What opening a read session gave.
enum Opened {
    /// The cursor, its rows kept by the server.
    Cursor(Open),
    /// The server had no room for the rows; the session, for reads batch by batch.
    NoRoom(Client),
}

/// An open read session, its cursor standing right after `at`.
struct Open {
    client: Client,
    at: Cursor,
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
        let reusing = st.open.as_ref().is_some_and(|o| o.at == *from);
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
        if let Some(client) = &st.per_batch {
            return self
                .source
                .read_batch(client, from, &self.upto, limit)
                .await;
        }
        if st.open.is_none() {
            match self.open(from).await? {
                Opened::Cursor(open) => st.open = Some(open),
                Opened::NoRoom(client) => {
                    let events = self
                        .source
                        .read_batch(&client, from, &self.upto, limit)
                        .await;
                    st.per_batch = Some(client);
                    return events;
                }
            }
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

    /// A read session with the cursor over the events after `from` up to the bound, its rows
    /// materialized and no transaction left open (see the module's comment).
    async fn open(&self, from: &Cursor) -> Result<Opened> {
        let client = self.db.dedicated().await?;
        let (sql, params) = self.source.ordered(from, &self.upto);
        let opened = Instant::now();
        client
            .batch_execute("BEGIN READ ONLY")
            .await
            .context("cannot start the read transaction of the replay")?;
        let declared = client
            .execute(
                &format!("DECLARE {CURSOR} NO SCROLL CURSOR WITH HOLD FOR {sql}"),
                &refs(&params),
            )
            .await;
        // The COMMIT runs the query and keeps its rows: this is where the pass costs its one scan.
        let committed = match declared {
            Ok(_) => client.batch_execute("COMMIT").await,
            Err(e) => Err(e),
        };
        if let Err(e) = &committed {
            // 53400: temp_file_limit; 53100: disk full. The rows do not fit: read per batch.
            let code = e.code().map(|c| c.code());
            if matches!(code, Some("53400" | "53100")) && !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK").await;
                tracing::warn!(
                    "the server has no room to keep the ordered read of `{}` after {} ({}); reading it batch by batch instead (one scan per batch where no index serves the order)",
                    self.source.table,
                    from.describe(),
                    crate::error::describe_pg(e)
                );
                return Ok(Opened::NoRoom(client));
            }
        }
        committed.with_context(|| {
            format!(
                "cannot open the ordered read of `{}` after {}",
                self.source.table,
                from.describe()
            )
        })?;
        tracing::debug!(
            "ordered read of `{}` after {} materialized in {} ms",
            self.source.table,
            from.describe(),
            opened.elapsed().as_millis()
        );
        Ok(Opened::Cursor(Open { client, at: *from }))
    }

    /// Ends the read session (the bulk replay is over); returns how many cursors were opened.
    pub async fn close(&self) -> u32 {
        let mut st = self.state.lock().await;
        st.held = None;
        st.per_batch = None;
        if let Some(open) = st.open.take() {
            end(open).await;
        }
        st.opened
    }
}

/// Ends a read session: closing the cursor frees its rows now rather than when the
/// connection is dropped; a failure only means the session is gone already.
async fn end(open: Open) {
    let _ = open.client.batch_execute(&format!("CLOSE {CURSOR}")).await;
}
