//! Applying events to one generation of tables: the live tables (for `run`) or the `_rebuild`
//! clones. For each event, the handlers of every projection run in dependency order, so a
//! projection that reads another sees it exactly as it was at that event, as it would live.
//!
//! Two ways to run a batch, with the same result:
//!
//! * the server loop (when every handler statement is a plain INSERT, UPDATE, DELETE or MERGE):
//!   each statement becomes a temporary PL/pgSQL function of the six handler parameters, and one
//!   more temporary function loops over the batch's events (passed as six arrays in a single
//!   call) and calls, per event, the statements of its type in the same order as below. One
//!   statement and one answer per batch instead of one per handler statement: the profile of
//!   the per-statement way (scripts/bench.sh, docs/internals/benchmark-log.md) shows the server spending a
//!   fifth of its time sending answers and receiving parameters. A failing batch is rolled
//!   back to a savepoint and run again the per-statement way, which names the event and the
//!   statement that failed.
//! * per statement, pipelined: all are sent before the first answer is awaited. The server
//!   still runs them one after another, in order, in the batch's transaction, so the result is
//!   the same as sending them one by one, without a network round trip per statement.
//!
//! A projection whose handler file is a `-- per batch` section is set-based: its statements
//! run once per batch, reading the batch from `:events`, a subquery over the event source
//! bounded by the batch's first and last cursor ([`Projector::apply_next`]). The events never
//! travel to reproject, so batches can be large (`--set-batch-size`, default
//! [`DEFAULT_SET_BATCH_SIZE`]): the fewer batches, the fewer times each row is written, which
//! is what makes a rebuild as fast as hand-written set-based SQL (docs/internals/benchmark-log.md).

use crate::error::{describe_pg, Context, Error, Reason, Result};
use crate::model::config::Config;
use crate::model::handlers::{param_types, Section, TableRef};
use crate::model::ident::TableName;
use crate::model::Resolved;
use crate::read::source::{next_cursor, Bound, Cursor, Event, EventSource, RawJsonb};
use chrono::{DateTime, Utc};
use futures_util::future::maybe_done;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

/// How many statements are in flight at once; bounds memory for large batches.
const PIPELINE_DEPTH: usize = 1024;

/// Which physical table each `{{table}}` reference means for this generation.
pub struct Target<'a> {
    /// The config the references come from.
    pub config: &'a Config,
    /// The config's tables resolved against the database.
    pub resolved: &'a Resolved,
    /// Projections being rebuilt: their tables resolve to the rebuild clones.
    pub rebuilding: &'a BTreeSet<usize>,
}

impl Target<'_> {
    /// The table a `{{written}}` reference resolves to.
    pub fn physical(&self, written: &str) -> TableName {
        let owner = self
            .config
            .owner_of(written)
            .expect("references are checked at load");
        let live = self.resolved.live(owner);
        if self.rebuilding.contains(&owner.projection) {
            crate::model::ident::rebuild_table(live)
        } else {
            live.clone()
        }
    }

    /// What a batch of the projections `order` may write: their tables of this generation;
    /// never another table of the config.
    pub fn writes(&self, order: &[usize]) -> crate::apply::write_guard::Writes {
        let own = order.iter().flat_map(|&p| {
            self.resolved.tables[p].iter().map(move |live| {
                if self.rebuilding.contains(&p) {
                    crate::model::ident::rebuild_table(live)
                } else {
                    live.clone()
                }
            })
        });
        let generation = if order.iter().all(|p| self.rebuilding.contains(p)) {
            "rebuild tables"
        } else {
            "live tables"
        };
        crate::apply::write_guard::Writes::new(
            own.collect::<Vec<_>>(),
            self.resolved.tables.iter().flatten().cloned(),
            order
                .iter()
                .map(|&p| self.config.projections[p].name.clone())
                .collect(),
            generation,
        )
    }
}

struct PreparedStatement {
    statement: Statement,
    line: usize,
}

struct PreparedProjection {
    name: String,
    file: String,
    by_type: HashMap<String, Vec<PreparedStatement>>,
}

/// A `-- per batch` statement, split where `:events` goes.
struct BatchStatement {
    pieces: Vec<String>,
    line: usize,
}

/// A set-based projection: statements run once per batch.
struct BatchProjection {
    name: String,
    file: String,
    statements: Vec<BatchStatement>,
}

/// Events per batch (transaction) of a run with set-based projections, unless
/// `--set-batch-size` says otherwise. Large, because each batch writes each row it touches
/// once; nothing of the batch is held in reproject's memory.
pub const DEFAULT_SET_BATCH_SIZE: i64 = 1_000_000;

/// What one batch applied: the new checkpoint, the number of events, and whether the range
/// was exhausted (fewer events than asked for).
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Where the checkpoint goes: the batch's last event, or the bound once exhausted.
    pub to: Cursor,
    /// Events the batch applied.
    pub events: i64,
    /// Fewer events than asked for: nothing more up to the bound.
    pub exhausted: bool,
}

/// The handlers of a set of projections, prepared on one connection.
pub struct Projector {
    projections: Vec<PreparedProjection>,
    /// `SELECT pg_temp.<loop>($1..$6)` over the arrays of a batch, when every statement can run
    /// inside PL/pgSQL (see [`server_loop_eligible`]).
    server_loop: Option<Statement>,
    /// Set-based projections, in application order (they neither read nor are read by
    /// another projection: config/mod.rs refuses that, so their order among the per-event
    /// ones does not matter).
    per_batch: Vec<BatchProjection>,
    set_batch_size: i64,
    /// Set when the projections include Rust ones (projection.rs): it applies the batch
    /// instead, with a projector of its own for the SQL projections.
    rust: Option<crate::apply::rust::Steps>,
    /// The tables its batches may write (write_guard.rs checks before each commit).
    writes: crate::apply::write_guard::Writes,
}

impl Projector {
    /// Prepares the handlers of `order` (projection indexes, topological order) against the
    /// tables of `target`, on `client`. The statements are only valid on that connection.
    ///
    /// Also creates the temporary functions of the server loop when the handlers allow it; call
    /// it outside a transaction (a failed CREATE would abort the caller's).
    pub async fn prepare(
        client: &Client,
        target: &Target<'_>,
        order: &[usize],
    ) -> Result<Projector> {
        let set_based = order
            .iter()
            .map(|&i| &target.config.projections[i])
            .find(|p| p.per_batch());
        let rust = order
            .iter()
            .map(|&i| &target.config.projections[i])
            .find(|p| p.is_rust());
        if let (Some(set), Some(rust)) = (set_based, rust) {
            // A Rust projection's steps apply batches event list by event list; a set-based
            // projection needs the batch's bounds instead (apply_next), which they do not give.
            return Err(Error::config(format!(
                "projection `{}` is set-based (`-- per batch`) and `{}` is a Rust projection: they cannot be rebuilt in one run",
                set.name, rust.name
            ))
            .with_hint("rebuild them in separate runs (`reproject rebuild NAME`)"));
        }
        if let Some(steps) = crate::apply::rust::prepare(client, target, order).await? {
            return Ok(Projector {
                projections: Vec::new(),
                server_loop: None,
                per_batch: Vec::new(),
                set_batch_size: DEFAULT_SET_BATCH_SIZE,
                rust: Some(steps),
                writes: target.writes(order),
            });
        }
        let handlers: Vec<(String, String, &[Section])> = order
            .iter()
            .map(|&i| {
                let p = &target.config.projections[i];
                (
                    p.name.clone(),
                    p.handler_path().display().to_string(),
                    p.sections(),
                )
            })
            .collect();
        Ok(Projector::prepare_sections(client, &handlers, |r| {
            Ok(target.physical(&r.written).quoted())
        })
        .await?
        .with_writes(target.writes(order)))
    }

    /// Prepares handler sections that need not be the config's (e.g. the recorded handlers of
    /// an older generation): (projection, file label, sections), in application order, with
    /// `resolve` naming the physical table of each `{{table}}` reference.
    pub async fn prepare_sections(
        client: &Client,
        handlers: &[(String, String, &[Section])],
        resolve: impl Fn(&TableRef) -> Result<String>,
    ) -> Result<Projector> {
        let mut projections = Vec::new();
        let mut per_batch = Vec::new();
        // The rendered statements per event type, in application order, for the server loop.
        let mut loop_sql: Vec<String> = Vec::new();
        let mut loop_by_type: Vec<(String, Vec<usize>)> = Vec::new();
        for (name, file, sections) in handlers {
            if sections.iter().any(|s| s.per_batch) {
                let mut statements = Vec::new();
                for st in sections.iter().flat_map(|s| &s.statements) {
                    let pieces = render_pieces(st, &resolve)?;
                    statements.push(BatchStatement {
                        pieces,
                        line: st.line,
                    });
                }
                per_batch.push(BatchProjection {
                    name: name.clone(),
                    file: file.clone(),
                    statements,
                });
                continue;
            }
            let mut by_type: HashMap<String, Vec<PreparedStatement>> = HashMap::new();
            for section in sections.iter() {
                let mut prepared = Vec::new();
                let mut loop_ids = Vec::new();
                for st in &section.statements {
                    let sql =
                        render_pieces(st, &resolve)?.join(crate::model::handlers::EMPTY_EVENTS);
                    loop_ids.push(loop_sql.len());
                    loop_sql.push(sql.clone());
                    let statement = client
                        .prepare_typed(&sql, &param_types())
                        .await
                        .with_context(|| {
                            format!(
                                "{file}:{}: projection `{name}`: cannot prepare the handler",
                                st.line
                            )
                        })?;
                    prepared.push(PreparedStatement {
                        statement,
                        line: st.line,
                    });
                }
                for t in &section.event_types {
                    match loop_by_type.iter_mut().find(|(ty, _)| ty == t) {
                        Some((_, ids)) => ids.extend(&loop_ids),
                        None => loop_by_type.push((t.clone(), loop_ids.clone())),
                    }
                    let copies = prepared
                        .iter()
                        .map(|ps| PreparedStatement {
                            statement: ps.statement.clone(),
                            line: ps.line,
                        })
                        .collect();
                    by_type.insert(t.clone(), copies);
                }
            }
            projections.push(PreparedProjection {
                name: name.clone(),
                file: file.clone(),
                by_type,
            });
        }
        let server_loop = if loop_sql.is_empty() {
            None
        } else if loop_sql.iter().all(|sql| server_loop_eligible(sql)) {
            match create_server_loop(client, &loop_sql, &loop_by_type).await {
                Ok(statement) => statement,
                Err(e) => {
                    // Not fatal: the per-statement way gives the same result, only slower
                    // (e.g. no TEMP privilege on the database).
                    tracing::info!("replaying statement by statement: {e}");
                    None
                }
            }
        } else {
            tracing::debug!(
                "replaying statement by statement: a handler statement is not a plain INSERT/UPDATE/DELETE/MERGE"
            );
            None
        };
        Ok(Projector {
            projections,
            server_loop,
            per_batch,
            set_batch_size: DEFAULT_SET_BATCH_SIZE,
            rust: None,
            // Nothing may be written until the caller says which tables are the batch's own.
            writes: Default::default(),
        })
    }

    /// Sets the tables its batches may write (prepare_sections leaves none allowed).
    pub fn with_writes(mut self, writes: crate::apply::write_guard::Writes) -> Projector {
        self.writes = writes;
        self
    }

    /// The tables its batches may write, for [`crate::apply::write_guard::check`].
    pub fn writes(&self) -> &crate::apply::write_guard::Writes {
        &self.writes
    }

    /// Sets the events per batch of a run with set-based projections (`--set-batch-size`).
    pub fn with_set_batch_size(mut self, size: i64) -> Projector {
        self.set_batch_size = size.max(1);
        self
    }

    /// Applies the next batch after `from` (up to `upto`) inside the caller's transaction:
    /// at most `batch_size` events, or with set-based projections at most the set batch
    /// size; never more than `budget`. The caller moves the checkpoint to [`Step::to`] in
    /// the same transaction.
    ///
    /// With set-based projections the batch's end is found first (a count, no events read);
    /// their statements then read the batch in the server, and the per-event projections of
    /// the same run read it in chunks of `batch_size`, so memory stays bounded.
    pub async fn apply_next(
        &self,
        conn: &Client,
        source: &EventSource,
        from: &Cursor,
        upto: &Bound,
        batch_size: i64,
        budget: Option<i64>,
    ) -> Result<Step> {
        self.apply_next_counted(conn, source, from, upto, batch_size, budget, None)
            .await
    }

    /// [`Projector::apply_next`] when the caller knows how many events (`known`) the range
    /// after `from` up to `upto` holds: a set-based batch that takes them all then needs no
    /// count of its own (which would read every event of the range once more).
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_next_counted(
        &self,
        conn: &Client,
        source: &EventSource,
        from: &Cursor,
        upto: &Bound,
        batch_size: i64,
        budget: Option<i64>,
        known: Option<i64>,
    ) -> Result<Step> {
        let cap = |n: i64| budget.map_or(n, |b| b.min(n));
        if self.per_batch.is_empty() {
            let limit = cap(batch_size);
            let events = source.read_batch(conn, from, upto, limit).await?;
            // Fewer events than asked for means the range is exhausted.
            let exhausted = (events.len() as i64) < limit;
            let to = next_cursor(from, upto, events.last(), exhausted);
            self.apply(conn, &events).await?;
            return Ok(Step {
                to,
                events: events.len() as i64,
                exhausted,
            });
        }
        let limit = cap(self.set_batch_size);
        let (count, last, exhausted) = match (known, upto) {
            // The whole counted range fits in this batch: it ends at the bound (final: no
            // event can still appear up to it).
            (Some(n), Bound::UpTo(p)) if n <= limit => {
                (n, (n > 0).then(|| Cursor::at(Some(*p))), true)
            }
            _ => {
                let (count, last) = source.batch_end(conn, from, upto, limit).await?;
                (count, last, count < limit)
            }
        };
        let last_event = last.map(|c| Event {
            tx: c.tx,
            position: c.position.unwrap_or_default(),
            stream: None,
            event_type: None,
            data: None,
            metadata: None,
            timestamp: None,
        });
        let to = next_cursor(from, upto, last_event.as_ref(), exhausted);
        if let Some(last) = last {
            let events = source.events_between(from, &last);
            for p in &self.per_batch {
                for st in &p.statements {
                    let sql = st.pieces.join(&events);
                    if let Err(err) = conn.execute(sql.as_str(), &[]).await {
                        return Err(batch_error(p, st, from, &last, count, &err));
                    }
                }
            }
            if !self.projections.is_empty() {
                // The per-event projections of the run, over exactly the same events: the
                // range is final up to `upto`, so the next `count` events are the batch's.
                let mut at = *from;
                let mut left = count;
                while left > 0 {
                    let chunk = source
                        .read_batch(conn, &at, upto, left.min(batch_size))
                        .await?;
                    let Some(end) = chunk.last() else { break };
                    at = Cursor {
                        tx: end.tx,
                        position: Some(end.position),
                    };
                    left -= chunk.len() as i64;
                    self.apply(conn, &chunk).await?;
                }
            }
        }
        Ok(Step {
            to,
            events: count,
            exhausted,
        })
    }

    /// Whether every batch of this projector takes its events from reproject (per-event SQL
    /// and Rust projections; no set-based one, whose statements read `:events` in the server),
    /// so a batch can take them from a one-pass read ([`Projector::apply_from_pass`]).
    pub fn reads_each_event(&self) -> bool {
        self.per_batch.is_empty()
    }

    /// [`Projector::apply_next`] with the events taken from the one-pass read `pass` of the
    /// bulk replay instead of a query per batch. Only for a projector that
    /// [`Projector::reads_each_event`].
    pub async fn apply_from_pass(
        &self,
        conn: &Client,
        pass: &crate::read::one_pass::OnePass<'_>,
        from: &Cursor,
        batch_size: i64,
        budget: Option<i64>,
    ) -> Result<Step> {
        debug_assert!(self.reads_each_event());
        let limit = budget.map_or(batch_size, |b| b.min(batch_size));
        let events = pass.next(from, limit).await?;
        // Fewer events than asked for means the range is exhausted.
        let exhausted = (events.len() as i64) < limit;
        let to = next_cursor(from, pass.upto(), events.last(), exhausted);
        self.apply(conn, &events).await?;
        Ok(Step {
            to,
            events: events.len() as i64,
            exhausted,
        })
    }

    /// Whether this projector is set-based only: every projection runs `-- per batch`
    /// statements, none per event or in Rust.
    pub fn set_based_only(&self) -> bool {
        !self.per_batch.is_empty() && self.projections.is_empty() && self.rust.is_none()
    }

    /// Whether this projector is per-event only: every projection has SQL handlers run per
    /// event, none set-based or in Rust.
    pub fn per_event_only(&self) -> bool {
        self.per_batch.is_empty() && !self.projections.is_empty() && self.rust.is_none()
    }

    /// Runs the set-based statements once over one stream lane of the events after `after`
    /// up to `to` (pipeline/lanes.rs), inside the caller's transaction on `conn` (any
    /// connection: the statements are plain text). On failure, names the projection, the
    /// statement's line, the lane and the range.
    pub async fn apply_lane(
        &self,
        conn: &Client,
        source: &EventSource,
        after: &Cursor,
        to: &Cursor,
        lane: i32,
        lanes: i32,
    ) -> Result<()> {
        let events = source.in_lane(lane, lanes).events_between(after, to);
        for p in &self.per_batch {
            for st in &p.statements {
                let sql = st.pieces.join(&events);
                if let Err(err) = conn.execute(sql.as_str(), &[]).await {
                    let kind_err = Error::from(clone_pg(&err));
                    let out = Error::new(
                        kind_err.kind,
                        format!(
                            "projection `{}` failed on stream lane {} of {lanes} (the events after {} up to {} whose stream hashes to it)",
                            p.name,
                            lane + 1,
                            after.describe(),
                            to.describe()
                        ),
                    )
                    .caused_by(format!("{}:{}: {}", p.file, st.line, describe_pg(&err)))
                    .with_db_state(&err)
                    .with_source(err);
                    return Err(out.with_hint("nothing of the failed lane was kept (the lanes done before it are): after fixing the event, `reproject rebuild --resume` continues with the lanes left; after fixing the handler, run `reproject rebuild` again"));
                }
            }
        }
        Ok(())
    }

    /// Applies `events` in order, inside the caller's transaction on the preparing connection.
    /// On failure, names the projection, the event and the statement; the caller rolls back.
    pub async fn apply(&self, tx: &Client, events: &[Event]) -> Result<()> {
        if let Some(steps) = &self.rust {
            return steps.apply(tx, events).await;
        }
        if let (Some(statement), false) = (&self.server_loop, events.is_empty()) {
            if self.apply_in_server(tx, statement, events).await? {
                return Ok(());
            }
        }
        self.apply_statements(tx, events).await
    }

    /// Runs the batch as one call of the server loop, under a savepoint. Ok(false): a handler
    /// failed and the batch was rolled back to the savepoint, for the per-statement way to run
    /// it again and name the failing event (or to succeed, if the failure does not repeat:
    /// either way the batch is applied at most once).
    async fn apply_in_server(
        &self,
        tx: &Client,
        statement: &Statement,
        events: &[Event],
    ) -> Result<bool> {
        let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
        let streams: Vec<Option<&str>> = events.iter().map(|e| e.stream.as_deref()).collect();
        let types: Vec<Option<&str>> = events.iter().map(|e| e.event_type.as_deref()).collect();
        let data: Vec<Option<&RawJsonb>> = events.iter().map(|e| e.data.as_ref()).collect();
        let metadata: Vec<Option<&RawJsonb>> = events.iter().map(|e| e.metadata.as_ref()).collect();
        let timestamps: Vec<Option<DateTime<Utc>>> = events.iter().map(|e| e.timestamp).collect();
        tx.batch_execute("SAVEPOINT reproject_batch")
            .await
            .context("cannot start the batch")?;
        let result = tx
            .execute(
                statement,
                &[&positions, &streams, &types, &data, &metadata, &timestamps],
            )
            .await;
        match result {
            Ok(_) => {
                tx.batch_execute("RELEASE SAVEPOINT reproject_batch")
                    .await
                    .context("cannot finish the batch")?;
                Ok(true)
            }
            Err(err) => {
                let kind = clone_pg(&err);
                // A cancel (Ctrl-C) or a lost connection is not the handlers' fault: running
                // the batch again would only undo the cancel.
                if kind.closed || kind.code.is_none() || kind.code.as_deref() == Some("57014") {
                    let first = events[0].position;
                    let last = events[events.len() - 1].position;
                    return Err(Error::from(kind)
                        .caused_by(format!(
                            "while applying the events at positions {first}..{last}: {}",
                            describe_pg(&err)
                        ))
                        .with_hint("run the rebuild again; nothing of the failed batch was kept"));
                }
                tx.batch_execute(
                    "ROLLBACK TO SAVEPOINT reproject_batch; RELEASE SAVEPOINT reproject_batch",
                )
                .await
                .context("cannot roll the failed batch back")?;
                tracing::debug!(
                    "the server loop failed ({}); running the batch statement by statement",
                    describe_pg(&err)
                );
                Ok(false)
            }
        }
    }

    async fn apply_statements(&self, tx: &Client, events: &[Event]) -> Result<()> {
        // What runs, in order: (event, projection, statement).
        let mut work: Vec<(usize, usize, usize)> = Vec::new();
        let mut params: Vec<[&(dyn ToSql + Sync); 6]> = Vec::with_capacity(events.len());
        for (e, ev) in events.iter().enumerate() {
            params.push([
                &ev.position,
                &ev.stream,
                &ev.event_type,
                &ev.data,
                &ev.metadata,
                &ev.timestamp,
            ]);
            let Some(ty) = ev.event_type.as_deref() else {
                continue;
            };
            for (p, proj) in self.projections.iter().enumerate() {
                if let Some(sts) = proj.by_type.get(ty) {
                    for s in 0..sts.len() {
                        work.push((e, p, s));
                    }
                }
            }
        }
        for chunk in work.chunks(PIPELINE_DEPTH) {
            let mut futures: Vec<_> = chunk
                .iter()
                .map(|&(e, p, s)| {
                    let st =
                        &self.projections[p].by_type[events[e].event_type.as_deref().unwrap()][s];
                    Box::pin(maybe_done(tx.execute(&st.statement, &params[e][..])))
                })
                .collect();
            // Send every request before awaiting any answer, in order: the first poll of a
            // tokio-postgres future queues its request on the connection.
            for f in futures.iter_mut() {
                let _ = futures_util::poll!(f.as_mut());
            }
            for (k, f) in futures.iter_mut().enumerate() {
                f.as_mut().await;
                let result = match f.as_mut().take_output() {
                    Some(r) => r,
                    None => continue,
                };
                if let Err(err) = result {
                    let (e, p, s) = chunk[k];
                    return Err(self.handler_error(&events[e], p, s, &err));
                }
            }
        }
        Ok(())
    }

    fn handler_error(&self, ev: &Event, p: usize, s: usize, err: &tokio_postgres::Error) -> Error {
        let proj = &self.projections[p];
        let ty = ev.event_type.as_deref().unwrap_or("");
        let line = proj.by_type[ty][s].line;
        let kind_err = Error::from(clone_pg(err));
        let mut out = Error::new(
            kind_err.kind,
            format!(
                "projection `{}` failed on event at position {} (type `{ty}`, stream `{}`)",
                proj.name,
                ev.position,
                ev.stream.as_deref().unwrap_or("")
            ),
        )
        .caused_by(format!("{}:{line}: {}", proj.file, describe_pg(err)));
        if let Some(data) = &ev.data {
            let text = data.text();
            let preview: String = text.chars().take(300).collect();
            out = out.caused_by(format!(
                "event data: {preview}{}",
                if text.chars().count() > 300 {
                    "…"
                } else {
                    ""
                }
            ));
        }
        out = out.with_db_state(err).with_hint("fix the handler (or the event), then run the rebuild again; nothing of the failed batch was kept");
        // A lost connection stays one (the work continues on a new connection); anything else
        // names the event, so a replay can tell the operator what the live runner did with it.
        if out.reason.is_none() {
            out.reason = Some(Reason::HandlerFailed {
                position: ev.position,
            });
        }
        out
    }
}

/// A statement's text split at `:events` (one piece outside `-- per batch` sections), with
/// every `{{table}}` resolved; the first resolution error, if any.
fn render_pieces(
    st: &crate::model::handlers::Statement,
    resolve: &impl Fn(&TableRef) -> Result<String>,
) -> Result<Vec<String>> {
    let mut failed = None;
    let pieces = st.render_pieces(|r| {
        resolve(r).unwrap_or_else(|e| {
            failed.get_or_insert(e);
            String::new()
        })
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(pieces),
    }
}

/// A set-based statement failed: which projection, statement and batch. The event is not
/// known (the statement ran over the whole batch); a smaller batch narrows it down.
fn batch_error(
    p: &BatchProjection,
    st: &BatchStatement,
    from: &Cursor,
    last: &Cursor,
    count: i64,
    err: &tokio_postgres::Error,
) -> Error {
    let kind_err = Error::from(clone_pg(err));
    let out = Error::new(
        kind_err.kind,
        format!(
            "projection `{}` failed on the batch of {count} event(s) after {} up to {}",
            p.name,
            from.describe(),
            last.describe()
        ),
    )
    .caused_by(format!("{}:{}: {}", p.file, st.line, describe_pg(err)))
    .with_db_state(err);
    out.with_hint("nothing of the failed batch was kept; fix the handler (or the event) and run the rebuild again; `rebuild --resume --set-batch-size N` with a small N narrows down the failing events")
}

/// Whether a rendered handler statement runs unchanged as a statement of a PL/pgSQL function:
/// INSERT, UPDATE, DELETE or MERGE without RETURNING (PL/pgSQL refuses rows with nowhere to
/// go). Anything else (SELECT, WITH, utility statements) keeps the per-statement way.
/// Conservative: the word RETURNING anywhere, even in a string, counts.
pub fn server_loop_eligible(sql: &str) -> bool {
    let first = first_keyword(sql).to_ascii_lowercase();
    matches!(first.as_str(), "insert" | "update" | "delete" | "merge")
        && !sql.to_ascii_lowercase().contains("returning")
}

/// The first word of `sql` after whitespace and comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            // Block comments nest in PostgreSQL.
            let mut depth = 1;
            let mut i = 0;
            let b = r.as_bytes();
            while depth > 0 && i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            rest = &r[i.min(r.len())..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            return &rest[..end];
        }
    }
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    (0..)
        .map(|n| format!("$reproject{n}$"))
        .find(|tag| !body.contains(tag.as_str()))
        .expect("some tag is free")
}

/// A quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Makes the names of the temporary functions unique within the process (and so within the
/// session: a connection may prepare more than one projector).
static LOOP_GENERATION: AtomicUsize = AtomicUsize::new(0);

/// The SQL of the server loop: one function per statement (`$1..$6` are its parameters, as in
/// the prepared statement), then the loop over the batch. Returns the CREATE statements and
/// the loop's name.
fn server_loop_sql(
    generation: usize,
    sql: &[String],
    by_type: &[(String, Vec<usize>)],
) -> (Vec<String>, String) {
    const SIGNATURE: &str = "bigint, text, text, jsonb, jsonb, timestamptz";
    let mut creates = Vec::new();
    for (k, statement) in sql.iter().enumerate() {
        let statement = statement.trim().trim_end_matches(';');
        // use_column: a column named like a PL/pgSQL variable (`found`) means the column, as
        // it does in the prepared statement.
        let body = format!("#variable_conflict use_column\nBEGIN\n{statement}\n;\nEND");
        let tag = dollar_tag(&body);
        creates.push(format!(
            "CREATE OR REPLACE FUNCTION pg_temp.reproject_g{generation}_s{k}({SIGNATURE}) RETURNS void LANGUAGE plpgsql AS {tag}\n{body}\n{tag}"
        ));
    }
    let mut cases = String::new();
    for (ty, ids) in by_type {
        cases.push_str(&format!("      WHEN {} THEN\n", literal(ty)));
        for k in ids {
            cases.push_str(&format!(
                "        PERFORM pg_temp.reproject_g{generation}_s{k}(p[i], s[i], t[i], d[i], m[i], ts[i]);\n"
            ));
        }
        if ids.is_empty() {
            cases.push_str("        NULL;\n");
        }
    }
    let name = format!("reproject_g{generation}_loop");
    let body = format!(
        "DECLARE\n  i integer;\nBEGIN\n  FOR i IN 1 .. coalesce(array_length(p, 1), 0) LOOP\n    CASE t[i]\n{cases}      ELSE NULL;\n    END CASE;\n  END LOOP;\nEND"
    );
    let tag = dollar_tag(&body);
    creates.push(format!(
        "CREATE OR REPLACE FUNCTION pg_temp.{name}(p bigint[], s text[], t text[], d jsonb[], m jsonb[], ts timestamptz[]) RETURNS void LANGUAGE plpgsql AS {tag}\n{body}\n{tag}"
    ));
    (creates, name)
}

/// Creates the server loop's temporary functions and prepares its call. None when there is
/// no handler at all.
async fn create_server_loop(
    client: &Client,
    sql: &[String],
    by_type: &[(String, Vec<usize>)],
) -> std::result::Result<Option<Statement>, tokio_postgres::Error> {
    if by_type.iter().all(|(_, ids)| ids.is_empty()) {
        return Ok(None);
    }
    let generation = LOOP_GENERATION.fetch_add(1, Ordering::Relaxed);
    let (creates, name) = server_loop_sql(generation, sql, by_type);
    for create in &creates {
        client.batch_execute(create).await?;
    }
    let statement = client
        .prepare_typed(
            &format!("SELECT pg_temp.{name}($1, $2, $3, $4, $5, $6)"),
            &[
                Type::INT8_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::JSONB_ARRAY,
                Type::JSONB_ARRAY,
                Type::TIMESTAMPTZ_ARRAY,
            ],
        )
        .await?;
    Ok(Some(statement))
}

/// tokio-postgres errors are not Clone; keep only what decides the error kind.
fn clone_pg(err: &tokio_postgres::Error) -> PgKind {
    PgKind {
        closed: err.is_closed(),
        lost: crate::error::connection_lost(err),
        code: err.as_db_error().map(|d| d.code().code().to_string()),
    }
}

struct PgKind {
    closed: bool,
    /// The connection is gone (closed, or its socket failed).
    lost: bool,
    code: Option<String>,
}

impl From<PgKind> for Error {
    fn from(k: PgKind) -> Error {
        let mut out = if !k.closed && k.code.as_deref() == Some("57014") {
            Error::interrupted("interrupted")
        } else {
            Error::runtime("handler failed")
        };
        if k.lost {
            out = out.with_reason(crate::error::Reason::ConnectionLost);
        }
        out.sqlstate = k.code;
        out
    }
}

/// Makes sure statements exist on the connection before a long replay: a quick sanity check
/// that `SET` commands in the session did not break them.
pub async fn session_setup(client: &Client) -> Result<()> {
    // The rebuild is restartable from its last checkpoint, so losing the last few commits in
    // a server crash costs a re-run of those batches, never correctness: skip the WAL flush
    // wait on every batch commit.
    // Reading is gap-safe only if every read takes a snapshot after the bound it reads up to
    // was computed (see ordering.rs): never let a server default of REPEATABLE READ or
    // SERIALIZABLE pin one snapshot for a whole batch or the swap transaction.
    client
        .batch_execute(
            "SET synchronous_commit = off; SET default_transaction_isolation = 'read committed'",
        )
        .await
        .context("cannot configure the replay session")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_writes_are_eligible_for_the_server_loop() {
        assert!(server_loop_eligible("INSERT INTO t VALUES ($1)"));
        assert!(server_loop_eligible(
            "  -- note\n/* a /* nested */ comment */\n update t SET a = 1"
        ));
        assert!(server_loop_eligible("DELETE FROM t WHERE id = $1"));
        assert!(server_loop_eligible(
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING"
        ));
    }

    #[test]
    fn anything_else_is_not() {
        assert!(!server_loop_eligible("SELECT f($1)"));
        assert!(!server_loop_eligible(
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"
        ));
        assert!(!server_loop_eligible(
            "INSERT INTO t VALUES (1) RETURNING id"
        ));
        assert!(!server_loop_eligible("insert into t values ('returning')"));
        assert!(!server_loop_eligible("-- only a comment"));
        assert!(!server_loop_eligible("/* unterminated"));
        assert!(!server_loop_eligible("CREATE TABLE t (a int)"));
        assert!(!server_loop_eligible("inserted"));
    }

    #[test]
    fn the_loop_calls_each_types_statements_in_order() {
        let sql = vec![
            "INSERT INTO a VALUES ($1);".to_string(),
            "UPDATE b SET x = '$reproject0$'".to_string(),
        ];
        let by_type = vec![
            ("it's".to_string(), vec![0, 1]),
            ("other".to_string(), vec![1]),
        ];
        let (creates, name) = server_loop_sql(7, &sql, &by_type);
        assert_eq!(name, "reproject_g7_loop");
        assert_eq!(creates.len(), 3);
        assert!(creates[0].starts_with("CREATE OR REPLACE FUNCTION pg_temp.reproject_g7_s0(bigint, text, text, jsonb, jsonb, timestamptz)"));
        assert!(creates[0].contains("INSERT INTO a VALUES ($1)\n;"));
        // The statement's own text holds $reproject0$: another tag quotes it.
        assert!(creates[1].contains("AS $reproject1$\n"));
        let body = &creates[2];
        assert!(body.contains("WHEN 'it''s' THEN"));
        let first = body.find("reproject_g7_s0(p[i]").unwrap();
        let second = body.find("reproject_g7_s1(p[i]").unwrap();
        assert!(first < second);
        assert_eq!(body.matches("reproject_g7_s1(p[i]").count(), 2);
    }
}
