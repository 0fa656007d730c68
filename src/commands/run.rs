//! `reproject run`: the same projections, kept live. New events are applied to the live tables
//! with the handlers and the per-event topological order of a rebuild ([`Projector`]), in
//! batches that commit together with the live checkpoint (compare-and-swap), so a crash at any
//! point loses nothing and applies nothing twice.
//!
//! Design (see also sql/003_live.sql and src/state/live_checkpoints.rs):
//! - Groups. The selected projections are split into groups connected by dependencies (in
//!   either direction). A group is applied together, in one transaction per batch, and waits
//!   together on a handler error: a reader must never get ahead of, or fall behind, what it
//!   reads. Independent groups run on, each with its own batches. A selection must hold whole
//!   groups (else exit 2).
//! - Parking. The event a handler fails on is recorded (state/parked_events.rs) in the
//!   transaction that commits the events before it, and its group waits there instead of
//!   stopping the process (which a supervisor would restart onto the same event forever). The
//!   runner looks for an operator's decision every second (`reproject skip` / `retry`) and
//!   acts on it in the batch that moves the checkpoint past the event, exactly once. A new
//!   runner waits on an open parked event without trying it again.
//! - Positions. Each projection has its own checkpoint row. Inside a group they normally agree;
//!   if they do not (a swap of only some of them handed over a new position), the projections
//!   that are behind are brought up to the next one first, alone, so every projection applies
//!   each event exactly once.
//! - Ordering. A batch reads only up to a bound proven final by the rebuild's own [`Cut`]
//!   (gap-aware: positions below it can no longer be filled by an open transaction, see
//!   src/ordering.rs; serialized: the head). Events committed late under a lower position are
//!   not skipped. `xid8` ordering is refused: the live checkpoints are positions.
//! - Hand-over. A rebuild's swap sets the checkpoint to the swap position in the swap
//!   transaction. A batch of the runner that overlaps waits for the swap's table locks, then
//!   its compare-and-swap fails: it rolls back, re-reads the checkpoint and continues on the new
//!   tables (cached plans of its prepared statements are re-planned by PostgreSQL after the
//!   rename, so they name the new tables). If the new tables were built with other handlers
//!   than the group applies, it switches to the recorded ones first (commands/live_handlers.rs).
//! - Stop. SIGINT/SIGTERM is checked between batches; the current batch is committed or rolled
//!   back whole, and `run` returns normally (exit 0): stopping a service on request is success.

use crate::apply::sql::{Projector, Target};
use crate::apply::write_guard;
use crate::commands::live_handlers::{self, Change, Handlers};
use crate::commands::Engine;
use crate::db::tx;
use crate::error::{Context, Error, Result};
use crate::model::config::Config;
use crate::model::ident::TableName;
use crate::pipeline::batches::{Batches, Policy};
use crate::progress::{self, FoundBy, Warning};
use crate::read::ordering::Cut;
use crate::read::source::{Bound, Cursor, Event, EventSource};
use crate::state::fence;
use crate::state::late_events;
use crate::state::live_checkpoints;
use crate::state::locks::LockClass;
use crate::state::migrate::migrate;
use crate::state::parked_events::{self, Decision, ParkedEvent};
use crate::state::runs;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

mod alive;
mod exposition;
mod live_report;
mod live_stats;
mod metrics_http;

use alive::Alive;
use live_stats::LiveStats;

/// Where a projection without a live checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Before the first event: the live tables are empty.
    Start,
    /// After the newest event: the live tables are current now.
    Head,
    /// After the event at this position.
    Position(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "start" => Ok(StartAt::Start),
            "head" => Ok(StartAt::Head),
            n => n
                .parse::<i64>()
                .map(StartAt::Position)
                .map_err(|_| format!("expected `start`, `head` or an event position, not `{n}`")),
        }
    }
}

/// What a handler error stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopOnError {
    /// Only the group of the failing projection; the others keep running.
    #[default]
    Projection,
    /// The whole runner (exit 1).
    All,
}

/// How `reproject run` keeps projections live ([`run`]).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Projections to keep live; empty means all.
    pub projections: Vec<String>,
    /// Catch up to the head as it is when the runner starts, then return.
    pub once: bool,
    /// Events per transaction (with their checkpoint).
    pub batch_size: i64,
    /// First pause when there is nothing to do; it doubles up to `max_poll_interval`.
    pub poll_interval: Duration,
    /// The longest pause between polls.
    pub max_poll_interval: Duration,
    /// Where to start a projection that has no live checkpoint yet.
    pub from: Option<StartAt>,
    /// What a handler error stops: its group of projections, or all.
    pub stop_on_error: StopOnError,
    /// How long the runner keeps retrying while the database is unreachable or keeps failing
    /// with transient errors (a restart, a failover) before it gives up with exit 1.
    pub reconnect_timeout: Duration,
    /// When another runner holds a projection: wait for it to stop (a standby) instead of
    /// failing with exit 75.
    pub wait: bool,
    /// How often the gaps passed are re-checked for events committed in them since
    /// (state/late_events.rs); the first time when the runner starts.
    pub recheck_gaps_every: Duration,
    /// `HOST:PORT` to serve `/metrics` and `/health` on (run/metrics_http.rs); None: off.
    pub metrics_addr: Option<String>,
    /// How often to print the alive line (run/alive.rs); zero: never.
    pub status_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            projections: Vec::new(),
            once: false,
            batch_size: 1000,
            poll_interval: Duration::from_millis(50),
            max_poll_interval: Duration::from_secs(2),
            from: None,
            stop_on_error: StopOnError::Projection,
            reconnect_timeout: Duration::from_secs(300),
            wait: false,
            recheck_gaps_every: Duration::from_secs(60),
            metrics_addr: None,
            status_every: Duration::from_secs(60),
        }
    }
}

/// One group of projections, as the runner left it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOutcome {
    /// The projections of the group, in application order.
    pub projections: Vec<String>,
    /// Its checkpoint when the runner stopped.
    pub position: Option<i64>,
    /// Set when a handler error stopped the group.
    pub error: Option<String>,
    /// The event the group waits on (parked after a handler error), when the runner ended.
    pub parked: Option<ParkedEvent>,
}

/// What a runner did.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Events applied in all.
    pub events_applied: i64,
    /// Batches committed.
    pub batches: i64,
    /// Batches rolled back because a swap (or another process) moved the checkpoint.
    pub handovers: i64,
    /// Times the connection was re-established.
    pub reconnects: i64,
    /// True when SIGINT/SIGTERM stopped it.
    pub interrupted: bool,
    /// Each group of projections applied independently.
    pub groups: Vec<GroupOutcome>,
}

struct Group {
    /// Projection indexes in topological order.
    order: Vec<usize>,
    names: Vec<String>,
    /// The handlers each projection applies (like `order`): the config's, until a hand-over
    /// gives it tables built with others (commands/live_handlers.rs).
    applied: Vec<Handlers>,
    /// Prepared on the current connection; None after a reconnect or a switch of handlers.
    projector: Option<Projector>,
    error: Option<String>,
    position: Option<i64>,
    /// Waiting on a parked event for an operator's decision (state/parked_events.rs).
    parked: Option<Parked>,
    /// A decision to act on in the batch that passes its event.
    decided: Option<Decided>,
}

/// A group waiting on a parked event.
struct Parked {
    event: ParkedEvent,
    /// When the runner last looked for a decision.
    polled: Instant,
}

/// How often a parked group looks for a decision.
const DECISION_POLL: Duration = Duration::from_secs(1);

/// An operator's decision on a parked event, to act on.
#[derive(Debug, Clone, Copy)]
struct Decided {
    id: i64,
    position: i64,
    decision: Decision,
}

enum Step {
    /// The group is at the bound.
    Idle,
    Applied(i64),
    /// The checkpoint moved under the batch (a swap handed over): rolled back, try again.
    Moved,
    /// The group cannot go on (its checkpoint was removed, another process stopped it).
    /// `.1`: events committed before.
    Failed(String, i64),
    /// A handler failed on an event: the events before it were committed, the event is
    /// parked (recorded in the same transaction). `.1`: the events before it, committed.
    Parked(Box<ParkedEvent>, i64),
    /// A hand-over gave the group tables built with other handlers: rolled back, switch and
    /// try again from the hand-over position.
    Switch(Vec<Change>),
}

/// The channel the notify trigger signals and the runner listens on.
pub const NOTIFY_CHANNEL: &str = "reproject_events";
/// The trigger's name on the event table; the runner listens only if it exists.
const NOTIFY_TRIGGER: &str = "reproject_notify";

/// SQL that makes the event table notify runners of new events: one notification per
/// inserting statement, delivered at commit. Printed by `run --print-notify-sql`, never run by
/// reproject: adding a trigger to the application's event table is the owner's decision.
pub fn notify_sql(table: &TableName) -> String {
    let function = TableName::new(table.schema.clone(), "reproject_notify_events".to_string());
    format!(
        "-- Wakes `reproject run` as soon as events are committed to {table} (otherwise it polls).\n\
         CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$\n\
         BEGIN\n    PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);\n    RETURN NULL;\nEND $$;\n\
         CREATE TRIGGER {NOTIFY_TRIGGER} AFTER INSERT ON {t}\n    FOR EACH STATEMENT EXECUTE FUNCTION {f}();\n",
        f = function.quoted(),
        t = table.quoted(),
    )
}

/// `reproject run --print-notify-sql`: the trigger SQL for the configured event table.
pub async fn print_notify_sql(engine: &Engine<'_>) -> Result<String> {
    let resolved = engine.validate().await?;
    Ok(notify_sql(&resolved.events_table))
}

type Listener = Option<(Client, tokio::sync::mpsc::UnboundedReceiver<String>)>;

/// Listens on a connection of its own when the event table has the notify trigger.
async fn listen(engine: &Engine<'_>, conn: &Client, source: &EventSource) -> Result<Listener> {
    let has_trigger: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2 AND NOT tgisinternal)",
            &[&source.table.quoted(), &NOTIFY_TRIGGER],
        )
        .await
        .context("cannot read the event table's triggers")?
        .get(0);
    if !has_trigger {
        return Ok(None);
    }
    let (client, rx) = engine.db.listener().await?;
    client
        .batch_execute(&format!(
            "LISTEN {}",
            crate::model::ident::quote(NOTIFY_CHANNEL)
        ))
        .await
        .context("cannot listen for new events")?;
    Ok(Some((client, rx)))
}

/// `reproject run`.
pub async fn run(engine: &Engine<'_>, opts: &RunOptions) -> Result<RunOutcome> {
    let config = engine.config;
    let plan = runnable(config, opts)?;
    crate::model::projection::require_registered(config, &plan.order)?;
    let selected: BTreeSet<usize> = plan.order.iter().copied().collect();
    let mut groups = groups(config, &plan.order, &selected)?;
    let resolved = engine.validate().await?;
    crate::pipeline::shape::refuse_pending(config, &resolved, &plan.order)?;
    let names: Vec<String> = plan
        .order
        .iter()
        .map(|&i| config.projections[i].name.clone())
        .collect();
    let stats = LiveStats::new(groups.iter().map(|g| g.names.clone()).collect());
    // Served before the runner locks are taken: a standby (--wait) reports itself down.
    let _metrics = match &opts.metrics_addr {
        Some(addr) => {
            let server = metrics_http::serve(addr, stats.clone()).await?;
            engine
                .reporter
                .step(&progress::Step::ServingMetrics { addr: server.addr });
            Some(server)
        }
        None => None,
    };
    let mut alive = Alive::new(opts.status_every);
    let mut head_at: Option<Instant> = None;
    let Some(mut locks) = take_locks(engine, &names, opts.wait).await? else {
        // Stopped on request while standing by: nothing was done.
        return Ok(RunOutcome {
            events_applied: 0,
            batches: 0,
            handovers: 0,
            reconnects: 0,
            interrupted: true,
            groups: Vec::new(),
        });
    };
    let mut conn = engine.db.dedicated().await?;
    migrate(&mut conn).await?;
    live_handlers::refuse_older_shape(config, &resolved, &conn, &plan.order).await?;
    let source = EventSource::new(&config.events, &resolved);
    start_positions(engine, &conn, &source, &names, opts.from).await?;
    let started = live_checkpoints::claim(&conn, &names).await?;
    // A group whose event an earlier runner parked waits on it again (no new attempt), or
    // acts on the decision taken meanwhile.
    for g in groups.iter_mut() {
        resume(engine, &conn, g).await?;
    }

    let no_rebuild = BTreeSet::new();
    let target = Target {
        config,
        resolved: &resolved,
        rebuilding: &no_rebuild,
    };
    engine.reporter.step(&progress::Step::KeepingLive {
        projections: names.to_vec(),
        groups: groups.iter().map(|g| g.names.clone()).collect(),
    });

    let mut listener = listen(engine, &conn, &source).await?;
    let notify = listener.is_some();
    if notify {
        engine.reporter.step(&progress::Step::Listening {
            channel: NOTIFY_CHANNEL.to_string(),
            max_poll_interval: opts.max_poll_interval,
        });
    } else {
        engine.reporter.step(&progress::Step::Polling {
            table: source.table.to_string(),
        });
    }
    let mut outcome = RunOutcome {
        events_applied: 0,
        batches: 0,
        handovers: 0,
        reconnects: 0,
        interrupted: false,
        groups: Vec::new(),
    };
    // With --once: the head when the runner started is where it may stop.
    let once_target = if opts.once {
        Some(source.head(&conn).await?)
    } else {
        None
    };
    let mut cut = Cut::for_runner(&source, &names);
    // The last proven bound: every position up to it is final, so the next proof starts there
    // (or at a higher checkpoint) and never rescans what a group far behind has still to read.
    let mut bound: Option<i64> = None;
    let mut held = Held::default();
    let mut rechecked: Option<Instant> = None;
    let mut pause = opts.poll_interval;
    // Since when rounds have failed with transient errors (None: the last round worked).
    let mut outage: Option<Instant> = None;
    stats.update(|s| s.up = true);
    loop {
        if engine.cancel.is_cancelled() {
            outcome.interrupted = true;
            break;
        }
        let round = async {
            if !locks.is_held() {
                // The session that held the runner locks is gone (server restart, terminated
                // backend): take them again, or give way to the runner that has them now.
                match take_locks(engine, &names, opts.wait).await? {
                    Some(l) => locks = l,
                    None => return Ok((false, bound)),
                }
            }
            if rechecked.is_none_or(|t| t.elapsed() >= opts.recheck_gaps_every) {
                // Outside any batch: a late event is recorded even if the round fails later.
                let found = late_events::recheck(&conn, config, &source, None, "run").await?;
                for e in found {
                    engine.reporter.warn(&e.warning(FoundBy::Runner));
                }
                rechecked = Some(Instant::now());
            }
            let at = Cursor::at(lowest(&conn, &groups).await?.max(bound));
            let (proven, hold) = cut.bound_and_hold(&conn, &at).await?;
            bound = match proven {
                Some(Bound::UpTo(b)) => Some(b).max(bound),
                Some(Bound::BelowTx(_)) => {
                    return Err(Error::runtime(
                        "a transaction-id bound in `reproject run`, which reads by position",
                    ))
                }
                None => bound,
            };
            held.observe(engine, hold);
            let mut busy = false;
            for (gi, g) in groups
                .iter_mut()
                .enumerate()
                .filter(|(_, g)| g.error.is_none())
            {
                if engine.cancel.is_cancelled() {
                    break;
                }
                if let Some(p) = &g.parked {
                    if p.polled.elapsed() < DECISION_POLL {
                        continue;
                    }
                    resume(engine, &conn, g).await?;
                    if g.parked.is_some() {
                        continue;
                    }
                    busy = true;
                }
                let Some(bound) = bound else { continue };
                let at = Batch {
                    source: &source,
                    target: &target,
                    bound,
                    batch_size: opts.batch_size,
                    started,
                };
                let (step, acted) = step(&conn, &at, g).await?;
                if let Some(d) = acted {
                    engine.reporter.step(&progress::Step::ParkedEventActed {
                        decision: decision(d.decision),
                        position: d.position,
                        projections: g.names.clone(),
                    });
                    g.decided = None;
                }
                match step {
                    Step::Idle => {}
                    Step::Applied(n) => {
                        outcome.batches += 1;
                        outcome.events_applied += n;
                        stats.applied(gi, n);
                        busy = true;
                    }
                    Step::Moved => {
                        outcome.handovers += 1;
                        busy = true;
                        if g.decided.is_some() {
                            // The row may have changed under the batch: read it again.
                            resume(engine, &conn, g).await?;
                        }
                    }
                    Step::Switch(changes) => {
                        outcome.handovers += 1;
                        busy = true;
                        if let Err(message) = switch(engine, &conn, &target, g, changes).await? {
                            stop(engine, g, message, opts)?;
                        }
                    }
                    Step::Failed(message, committed) => {
                        outcome.events_applied += committed;
                        stats.applied(gi, committed);
                        stop(engine, g, message, opts)?
                    }
                    Step::Parked(event, committed) => {
                        outcome.events_applied += committed;
                        stats.applied(gi, committed);
                        stats.update(|s| {
                            if let Some(st) = s.groups.get_mut(gi) {
                                st.errors += 1;
                            }
                        });
                        busy = true;
                        park(engine, g, *event, opts)?
                    }
                }
            }
            Ok((busy, bound))
        }
        .await;
        let (busy, bound) = match round {
            Ok(r) => {
                outage = None;
                r
            }
            // The lock session ended under the batch (which proved it and rolled back): the
            // next round takes the locks again, or gives way to the runner that has them now.
            Err(err) if !locks.is_held() && !conn.is_closed() => {
                engine.reporter.warn(&Warning::RunnerLocksLost {
                    why: err.message.clone(),
                });
                let _ = conn.batch_execute("ROLLBACK").await;
                continue;
            }
            Err(err) if is_transient(&err, &conn) => {
                stats.update(|s| s.database_errors += 1);
                let since = *outage.get_or_insert_with(Instant::now);
                if since.elapsed() >= opts.reconnect_timeout {
                    return Err(gave_up(opts.reconnect_timeout, &err));
                }
                engine.reporter.warn(&Warning::DatabaseErrorRetrying {
                    error: err.to_string().lines().collect::<Vec<_>>().join(" / "),
                });
                if conn.is_closed() {
                    conn = reconnect(engine, &mut outcome, since + opts.reconnect_timeout, opts)
                        .await?;
                    for g in groups.iter_mut() {
                        g.projector = None;
                    }
                    // The observations still to prove name transactions by virtual id, and a
                    // prepared transaction gets another one when the server restarts: an old
                    // observation would look proven while it is still open. Start the proof
                    // afresh (this only delays the bound).
                    cut = Cut::for_runner(&source, &names);
                } else {
                    // A transaction may be left open by the failed statement.
                    let _ = conn.batch_execute("ROLLBACK").await;
                }
                if notify && listener.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                    listener = listen(engine, &conn, &source).await.unwrap_or(None);
                }
                sleep(engine, pause, &mut None).await;
                pause = (pause * 2).min(opts.max_poll_interval);
                continue;
            }
            Err(err) => return Err(err),
        };
        live_report::after_round(
            &conn,
            &source,
            &groups,
            &stats,
            &mut alive,
            &mut head_at,
            opts.metrics_addr.is_some(),
            engine,
        )
        .await;
        // The listening connection was lost (and not back at the reconnect): try again, or
        // keep polling.
        if notify && listener.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            listener = listen(engine, &conn, &source).await.unwrap_or(None);
        }
        if groups.iter().all(|g| g.error.is_some()) {
            let mut err = Error::runtime("every projection of this runner stopped on an error");
            for g in &groups {
                err = err.caused_by(g.error.as_deref().unwrap_or_default());
            }
            return Err(err.with_hint(
                "fix the handler or the event, then start `reproject run` again: it retries from the failing event",
            ));
        }
        if let Some(target) = once_target {
            let caught_up = match (target, bound) {
                (None, _) => true,
                (Some(t), Some(b)) => !busy && b >= t,
                (Some(_), None) => false,
            };
            if caught_up {
                break;
            }
        }
        if busy {
            pause = opts.poll_interval;
        } else {
            if sleep(engine, pause, &mut listener).await {
                pause = opts.poll_interval;
            } else {
                pause = (pause * 2).min(opts.max_poll_interval);
            }
        }
    }
    stats.update(|s| s.up = false);
    finish(outcome, &groups, opts)
}

/// What `run` refuses before it takes anything: the options and projections a runner cannot
/// keep live. Returns the plan of the selected projections.
fn runnable(
    config: &crate::model::config::Config,
    opts: &RunOptions,
) -> Result<crate::pipeline::plan::Plan> {
    if opts.batch_size < 1 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    if let crate::model::config::Ordering::Xid8 { .. } = config.events.ordering {
        // The runner keeps one position per projection; `xid8` reading needs (transaction id,
        // position) checkpoints, and a swap in that mode hands over a pair that a position
        // alone cannot stand for.
        return Err(Error::config(format!(
            "`reproject run` does not support `events.ordering = \"xid8\"` ({})",
            config.path.display()
        ))
        .with_hint("use `ordering = \"gap-aware\"` (the default: safe on sequence positions without a transaction id column) or `\"serialized\"` for projections kept live by `run`; `rebuild` supports all three"));
    }
    let plan = crate::pipeline::plan::plan(config, &opts.projections)?;
    if let Some(p) = plan
        .order
        .iter()
        .map(|&i| &config.projections[i])
        .find(|p| p.per_batch())
    {
        // The runner narrows a failing batch down to its event and stops there; a set-based
        // statement fails for a whole batch, so there is no event to stop at yet.
        return Err(Error::config(format!(
            "`reproject run` does not run set-based projections: `{}` has `-- per batch` handlers ({})",
            p.name,
            p.handler_path().display()
        ))
        .with_hint("select the per-event projections (`reproject run NAME ...`); keep a set-based projection's live table up to date with `reproject rebuild` runs, or write per-event handlers for it"));
    }
    if let Some(&i) = plan
        .order
        .iter()
        .find(|&&i| config.projections[i].command().is_some())
    {
        // It has no handlers: the runner would move its checkpoint without applying anything.
        return Err(Error::config(format!(
            "`reproject run` cannot keep projection `{}` live: it is rebuilt by an external projector (`command`), whose own live projector keeps it up to date",
            config.projections[i].name
        ))
        .with_hint("name the handler projections to run: `reproject run NAME...`"));
    }
    Ok(plan)
}

/// The outcome of a runner that stopped: each group's end, and with `--once`, the error when
/// a group stopped on an error or waits on a parked event.
fn finish(mut outcome: RunOutcome, groups: &[Group], opts: &RunOptions) -> Result<RunOutcome> {
    outcome.groups = groups
        .iter()
        .map(|g| GroupOutcome {
            projections: g.names.clone(),
            position: g.position,
            error: g.error.clone(),
            parked: g.parked.as_ref().map(|p| p.event.clone()),
        })
        .collect();
    let failed: Vec<&GroupOutcome> = outcome
        .groups
        .iter()
        .filter(|g| g.error.is_some())
        .collect();
    if opts.once && !failed.is_empty() {
        let mut err = Error::runtime(format!(
            "caught up, but {} stopped on an error",
            failed
                .iter()
                .map(|g| g.projections.join(", "))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        for g in failed {
            err = err.caused_by(g.error.as_deref().unwrap_or_default());
        }
        return Err(err);
    }
    let parked: Vec<&ParkedEvent> = outcome
        .groups
        .iter()
        .filter_map(|g| g.parked.as_ref())
        .collect();
    if opts.once && !parked.is_empty() {
        let mut err = Error::runtime(format!(
            "caught up, but {} wait(s) on a parked event",
            parked
                .iter()
                .map(|e| e.projections.join(", "))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        for e in &parked {
            err = err.caused_by(format!("{} failed: {}", e.what(), e.error));
        }
        let commands: Vec<String> = parked.iter().map(|e| e.commands()).collect();
        return Err(err.with_hint(format!(
            "decide, then run again: {}; `reproject parked` lists them",
            commands.join("; ")
        )));
    }
    Ok(outcome)
}

/// Stops group `g` with `message` (or the whole runner, with `--stop-on-error all`).
fn stop(engine: &Engine<'_>, g: &mut Group, message: String, opts: &RunOptions) -> Result<()> {
    engine.reporter.warn(&Warning::GroupStopped {
        projections: g.names.clone(),
        error: message.clone(),
    });
    g.error = Some(message);
    if opts.stop_on_error == StopOnError::All {
        return Err(Error::runtime(format!(
            "stopped the runner on a handler error (--stop-on-error all): {}",
            g.error.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Switches the handlers of group `g` as a hand-over asks, saying so loudly, and prepares them
/// (outside any batch); Err(message) when the group cannot go on.
async fn switch(
    engine: &Engine<'_>,
    conn: &Client,
    target: &Target<'_>,
    g: &mut Group,
    changes: Vec<Change>,
) -> Result<std::result::Result<(), String>> {
    for change in changes {
        match change {
            Change::Stop(message) => return Ok(Err(message)),
            Change::Switch { member, to, note } => {
                engine
                    .reporter
                    .warn(&Warning::HandlersSwitched { note: note.clone() });
                live_checkpoints::set_handlers(conn, &g.names[member], to.describe().as_deref())
                    .await?;
                g.applied[member] = to;
            }
        }
    }
    g.projector = None;
    let applied: Vec<&Handlers> = g.applied.iter().collect();
    match live_handlers::prepare(conn, target, &g.order, &applied).await {
        Ok(p) => {
            g.projector = Some(p);
            Ok(Ok(()))
        }
        Err(e) if conn.is_closed() => Err(e),
        Err(e) => Ok(Err(format!(
            "cannot prepare the handlers that built the tables of {} on them: {}",
            g.names.join(", "),
            e.plain().replace('\n', " ")
        ))),
    }
}

/// Sleeps `pause`, waking early on a stop request or a notification (then returns true).
async fn sleep(engine: &Engine<'_>, pause: Duration, listener: &mut Listener) -> bool {
    let until = tokio::time::sleep(pause);
    tokio::pin!(until);
    loop {
        let notified = async {
            match listener.as_mut() {
                Some((_, rx)) => rx.recv().await.map(|_| while rx.try_recv().is_ok() {}),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = engine.cancel.cancelled() => return false,
            _ = &mut until => return false,
            got = notified => match got {
                Some(()) => return true,
                // The listening connection is gone; poll until it is back.
                None => *listener = None,
            },
        }
    }
}

/// Errors worth retrying: the connection is gone, or the server asked us to try again.
fn is_transient(err: &Error, conn: &Client) -> bool {
    err.kind != crate::error::ErrorKind::Busy && (conn.is_closed() || retryable(err))
}

/// Whether an error is worth retrying by its SQLSTATE, or because no connection could be made.
fn retryable(err: &Error) -> bool {
    if err.kind == crate::error::ErrorKind::Busy {
        return false;
    }
    if err.reason == Some(crate::error::Reason::CannotConnect) {
        return true;
    }
    err.sqlstate().is_some_and(|code| {
        matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
        ) || code.starts_with("08") // connection exceptions
    })
}

/// Takes the runner locks; with `wait`, while another runner holds one, tries again every
/// second (saying once who holds it) until it is free, or returns None on a stop request.
async fn take_locks(
    engine: &Engine<'_>,
    names: &[String],
    wait: bool,
) -> Result<Option<live_checkpoints::RunnerLocks>> {
    let mut told = false;
    loop {
        match live_checkpoints::lock_runners(&engine.db, names).await {
            Err(e) if wait && e.kind == crate::error::ErrorKind::Busy => {
                if !told {
                    engine.reporter.step(&progress::Step::StandingBy {
                        why: e.message.clone(),
                    });
                    told = true;
                }
                sleep(engine, Duration::from_secs(1), &mut None).await;
                if engine.cancel.is_cancelled() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
            Ok(locks) => {
                if told {
                    engine.reporter.step(&progress::Step::TookOver);
                }
                return Ok(Some(locks));
            }
        }
    }
}

/// The error once transient failures have lasted `--reconnect-timeout`.
fn gave_up(timeout: Duration, last: &Error) -> Error {
    let mut err = Error::runtime(format!(
        "gave up after {} without a working database connection (--reconnect-timeout)",
        humantime::format_duration(timeout)
    ))
    .caused_by(&last.message);
    for cause in &last.causes {
        err = err.caused_by(cause);
    }
    err.with_hint("nothing was lost: the live checkpoints are where the last committed batch left them; start `reproject run` again once the database is back, or give a longer --reconnect-timeout")
}

/// Connects again after losing the connection, with backoff (the server may be restarting:
/// connection refused, then "the database system is starting up"), until it works, a stop is
/// requested or `deadline` passes.
async fn reconnect(
    engine: &Engine<'_>,
    outcome: &mut RunOutcome,
    deadline: Instant,
    opts: &RunOptions,
) -> Result<Client> {
    let mut pause = Duration::from_millis(100);
    loop {
        if engine.cancel.is_cancelled() {
            return Err(Error::interrupted(
                "stopped while reconnecting to the database",
            ));
        }
        let attempt = engine.db.dedicated().await;
        if let Err(e) = &attempt {
            if Instant::now() >= deadline {
                return Err(gave_up(opts.reconnect_timeout, e));
            }
        }
        match attempt {
            Ok(c) => {
                outcome.reconnects += 1;
                engine.reporter.step(&progress::Step::Reconnected);
                return Ok(c);
            }
            Err(e) => {
                engine.reporter.warn(&Warning::CannotReconnectYet {
                    retry_in: pause,
                    error: format!(
                        "{}{}",
                        e.message,
                        // Why: refused (down), "starting up", authentication...
                        e.causes
                            .first()
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default()
                    ),
                });
                // Not past the deadline, so a stop is noticed and the limit is kept.
                let left = deadline.saturating_duration_since(Instant::now());
                sleep(engine, pause.min(left), &mut None).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Splits the selection into groups connected by dependencies; refuses a selection that cuts a
/// group (a runner for a reader without what it reads, or the reverse, lets one get ahead).
fn groups(config: &Config, order: &[usize], selected: &BTreeSet<usize>) -> Result<Vec<Group>> {
    let n = config.projections.len();
    let mut component: Vec<usize> = (0..n).collect();
    fn root(c: &mut [usize], mut i: usize) -> usize {
        while c[i] != i {
            c[i] = c[c[i]];
            i = c[i];
        }
        i
    }
    for (i, p) in config.projections.iter().enumerate() {
        for dep in &p.depends_on {
            if let Some(d) = config.projection_index(dep) {
                let (a, b) = (root(&mut component, i), root(&mut component, d));
                component[a] = b;
            }
        }
    }
    let mut groups: Vec<(usize, Group)> = Vec::new();
    for &i in order {
        let r = root(&mut component, i);
        let missing: Vec<&str> = (0..n)
            .filter(|&j| !selected.contains(&j) && root(&mut component, j) == r)
            .map(|j| config.projections[j].name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::config(format!(
                "projection `{}` is connected by dependencies to {}, which must be kept live by the same runner",
                config.projections[i].name,
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ))
            .with_hint("name them too (or run all projections): a reader must not get ahead of, or fall behind, what it reads"));
        }
        let name = config.projections[i].name.clone();
        match groups.iter_mut().find(|(root, _)| *root == r) {
            Some((_, g)) => {
                g.order.push(i);
                g.applied.push(Handlers::Config);
                g.names.push(name);
            }
            None => groups.push((
                r,
                Group {
                    order: vec![i],
                    names: vec![name],
                    applied: vec![Handlers::Config],
                    projector: None,
                    error: None,
                    position: None,
                    parked: None,
                    decided: None,
                },
            )),
        }
    }
    Ok(groups.into_iter().map(|(_, g)| g).collect())
}

/// Makes sure every projection has a live checkpoint: kept from an earlier runner or a swap,
/// else from `--from-position`, else the position of its newest swap; refuses otherwise.
async fn start_positions(
    engine: &Engine<'_>,
    conn: &Client,
    source: &EventSource,
    names: &[String],
    from: Option<StartAt>,
) -> Result<()> {
    let existing = live_checkpoints::read(conn, names).await?;
    let mut unknown = Vec::new();
    for name in names {
        if let Some(cp) = existing.iter().find(|c| &c.projection == name) {
            if from.is_some() {
                engine.reporter.warn(&Warning::LiveCheckpointKept {
                    projection: name.clone(),
                    position: cp.position,
                });
            }
            continue;
        }
        let swapped = runs::latest_swapped_for(conn, name)
            .await?
            .filter(|r| r.status == runs::RunStatus::Swapped);
        match (from, swapped) {
            (Some(at), _) => {
                let position = match at {
                    StartAt::Start => None,
                    StartAt::Position(p) => Some(p),
                    StartAt::Head => settled_head(engine, conn, source, names).await?,
                };
                live_checkpoints::init(conn, name, position, "start", None).await?;
                engine.reporter.step(&progress::Step::LiveStartsAt {
                    projection: name.clone(),
                    position,
                });
            }
            (None, Some(run)) => {
                live_checkpoints::init(conn, name, run.swap_position, "swap", Some(run.id)).await?;
                engine.reporter.step(&progress::Step::LiveStartsAtSwap {
                    projection: name.clone(),
                    position: run.swap_position,
                    run_id: run.id,
                });
            }
            (None, None) => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::config(format!(
            "cannot tell which events the live tables of {} already hold: no live checkpoint, and never rebuilt by reproject",
            unknown.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ))
        .with_hint("rebuild them once (`reproject rebuild`; the swap hands over to `run`), or say where they stand: `--from-position head` (current now), `--from-position start` (empty) or `--from-position N`"));
    }
    Ok(())
}

/// What every batch of a round shares.
struct Batch<'a> {
    source: &'a EventSource,
    target: &'a Target<'a>,
    /// Read up to here (a bound proven by [`Cut`]).
    bound: i64,
    batch_size: i64,
    /// When this runner started (server clock).
    started: DateTime<Utc>,
}

/// One batch of one group, in one transaction with its checkpoint: one batch of the batch
/// loop (pipeline/batches.rs) per group and round, so independent groups take turns. Also
/// returns the decision on a parked event that the batch acted on, if it did.
async fn step(conn: &Client, at: &Batch<'_>, g: &mut Group) -> Result<(Step, Option<Decided>)> {
    // Outside the batch's transaction: a rolled-back batch must not take the server loop's
    // temporary functions with it.
    if g.projector.is_none() {
        let applied: Vec<&Handlers> = g.applied.iter().collect();
        g.projector = Some(live_handlers::prepare(conn, at.target, &g.order, &applied).await?);
    }
    let batches = GroupBatch {
        conn,
        at,
        g,
        out: std::sync::Mutex::new(None),
    };
    let policy = Policy {
        own_transaction: true,
        // A transient error ends the round; the runner's round loop retries it, reconnecting.
        retry: None,
        // Checked by the round loop between groups.
        cancel: None,
        stop: None,
        budget: None,
        batches: Some(1),
    };
    crate::pipeline::batches::drive(
        conn,
        &batches,
        Cursor::at(None),
        Bound::UpTo(at.bound),
        &policy,
    )
    .await?;
    let (attempt, position, acted) = batches
        .out
        .into_inner()
        .unwrap()
        .expect("the batch ran or failed");
    if let Some(position) = position {
        g.position = position;
    }
    let acted = acted.then_some(g.decided).flatten();
    match attempt {
        Attempt::Done(step) => Ok((step, acted)),
        Attempt::HandlerFailed(failed) => careful(conn, at.target, g, *failed).await,
    }
}

/// The batch of one group: its checkpoints are read in the transaction, so the cursor the
/// batch loop passes is not used.
struct GroupBatch<'r, 'a> {
    conn: &'r Client,
    at: &'r Batch<'a>,
    g: &'r Group,
    /// What the batch found, the group's position after it (if known), and whether it acted
    /// on the group's decision.
    out: std::sync::Mutex<Option<Found>>,
}

/// What a group's batch found, the group's position after it, whether it acted on a decision.
type Found = (Attempt, Option<Option<i64>>, bool);

impl Batches for GroupBatch<'_, '_> {
    async fn batch(
        &self,
        _from: &Cursor,
        _upto: &Bound,
        _budget: Option<i64>,
    ) -> Result<tx::End<crate::apply::sql::Step>> {
        fence::prove(self.conn, LockClass::Runner, &self.g.names).await?;
        let mut position = None;
        let mut acted = false;
        let attempt = batch(self.conn, self.at, self.g, &mut position, &mut acted).await?;
        // Only an applied batch commits; one that found nothing to do or its checkpoint
        // moved, or whose handlers failed, rolls back (the failed one is then tried event by
        // event).
        let step = crate::apply::sql::Step {
            to: Cursor::at(position.flatten()),
            events: match &attempt {
                Attempt::Done(Step::Applied(n)) => *n,
                _ => 0,
            },
            exhausted: true,
        };
        let end = match &attempt {
            Attempt::Done(Step::Applied(_)) => tx::End::Commit(step),
            _ => tx::End::RollBack(step),
        };
        *self.out.lock().unwrap() = Some((attempt, position, acted));
        Ok(end)
    }

    fn what(&self, _from: &Cursor) -> String {
        format!("batch of {}", self.g.names.join(", "))
    }

    /// The group's checkpoints decide (read in the batch), not the loop's cursor.
    fn reached(&self, _from: &Cursor, _upto: &Bound) -> bool {
        false
    }
}

/// A batch whose handlers failed, for [`careful`].
struct FailedBatch {
    subset: Vec<usize>,
    /// The handlers of `subset`.
    applied: Vec<Handlers>,
    names: Vec<String>,
    from: Option<i64>,
    upto: i64,
    events: Vec<Event>,
    /// The event left out by an operator's `skip` decision, if the batch held it.
    skipped: Option<i64>,
    error: Error,
}

enum Attempt {
    Done(Step),
    HandlerFailed(Box<FailedBatch>),
}

/// One batch of group `g` in the open transaction; `position` gets the group's position when
/// the batch learns it (the furthest of its checkpoints, or where an applied batch of the
/// whole group ended); `acted` is set when it acted on the group's decision on a parked event.
async fn batch(
    conn: &Client,
    at: &Batch<'_>,
    g: &Group,
    position_out: &mut Option<Option<i64>>,
    acted: &mut bool,
) -> Result<Attempt> {
    let (source, target, bound, batch_size) = (at.source, at.target, at.bound, at.batch_size);
    let cps = live_checkpoints::read(conn, &g.names).await?;
    if cps.len() != g.names.len() {
        return Ok(Attempt::Done(Step::Failed(format!(
            "the live checkpoint of {} was removed (by a rollback of a swap that had no live checkpoint to hand back, or by hand); start `reproject run --from-position ...` to say where the live tables stand",
            g.names.join(", ")
        ), 0)));
    }
    let changes = live_handlers::at_handover(
        target.config,
        conn,
        at.started,
        &g.order,
        &g.names,
        &g.applied,
        &cps,
    )
    .await?;
    if !changes.is_empty() {
        return Ok(Attempt::Done(Step::Switch(changes)));
    }
    if let Some(stopped) = cps.iter().find(|c| c.stopped) {
        return Ok(Attempt::Done(Step::Failed(
            format!(
                "`{}` was stopped by another process: {}",
                stopped.projection,
                stopped
                    .last_error
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ),
            0,
        )));
    }
    // The group's projections that are furthest behind go first, alone, up to the next one.
    let position = |name: &str| cps.iter().find(|c| c.projection == name).unwrap().position;
    let from = g.names.iter().map(|n| position(n)).min().unwrap();
    *position_out = Some(g.names.iter().map(|n| position(n)).max().unwrap());
    let next = g
        .names
        .iter()
        .filter_map(|n| position(n))
        .filter(|&p| Some(p) > from)
        .min();
    let upto = next.map_or(bound, |n| n.min(bound));
    if from.is_some_and(|f| f >= upto) {
        return Ok(Attempt::Done(Step::Idle));
    }
    let (subset, applied): (Vec<usize>, Vec<Handlers>) = g
        .order
        .iter()
        .zip(&g.names)
        .zip(&g.applied)
        .filter(|((_, n), _)| position(n) == from)
        .map(|((&i, _), h)| (i, h.clone()))
        .unzip();
    let names: Vec<String> = subset
        .iter()
        .map(|&i| target.config.projections[i].name.clone())
        .collect();
    // A position bound (xid8 is refused), so it reads by position.
    let mut events = source
        .read_batch(conn, &Cursor::at(from), &Bound::UpTo(upto), batch_size)
        .await?;
    // Fewer events than asked for: the range is exhausted, move past trailing filtered ones.
    let new = if (events.len() as i64) < batch_size {
        upto
    } else {
        events.last().map_or(upto, |e| e.position)
    };
    // An operator decided to skip a parked event: the batch is applied without it, and the
    // decision is marked acted on in this transaction, which moves the checkpoint past it.
    let skipped = match g.decided {
        Some(d)
            if d.decision == Decision::Skip && events.iter().any(|e| e.position == d.position) =>
        {
            events.retain(|e| e.position != d.position);
            Some(d.position)
        }
        _ => None,
    };
    let whole = subset.len() == g.order.len();
    let partial;
    let projector = if let (true, Some(projector)) = (whole, &g.projector) {
        projector
    } else {
        partial =
            live_handlers::prepare(conn, target, &subset, &applied.iter().collect::<Vec<_>>())
                .await?;
        &partial
    };
    if let Err(error) = projector.apply(conn, &events).await {
        if conn.is_closed() {
            return Err(error);
        }
        return Ok(Attempt::HandlerFailed(Box::new(FailedBatch {
            subset,
            applied,
            names,
            from,
            upto: new,
            events,
            skipped,
            error,
        })));
    }
    if !live_checkpoints::advance(conn, &names, from, new, events.len() as i64).await?
        || !act_on(conn, g.decided, new, acted).await?
    {
        return Ok(Attempt::Done(Step::Moved));
    }
    write_guard::check(
        conn,
        projector.writes(),
        &Cursor::at(from),
        &Cursor::at(Some(new)),
        true,
    )
    .await?;
    if whole {
        *position_out = Some(Some(new));
    }
    Ok(Attempt::Done(Step::Applied(events.len() as i64)))
}

/// After a handler error: applies the batch again event by event, each under a savepoint,
/// commits the events before the failing one, and stops the group at the failing event with
/// the error recorded. If no event fails this time (a transient error), commits the batch.
async fn careful(
    conn: &Client,
    target: &Target<'_>,
    g: &mut Group,
    f: FailedBatch,
) -> Result<(Step, Option<Decided>)> {
    tx::begin(conn, "cannot begin a batch").await?;
    let decided = g.decided;
    let mut acted = false;
    // Where the checkpoint stands once the transaction commits: the group's position must say
    // so (status lines, metrics and the outcome report it), also when it stops here.
    let mut reached: Option<i64> = None;
    let result = async {
        fence::prove(conn, LockClass::Runner, &g.names).await?;
        // The handlers may have failed because a swap just handed over tables of another
        // shape: then the next batch switches handlers at the hand-over, nothing stops here.
        let cps = live_checkpoints::read(conn, &f.names).await?;
        if cps.len() != f.names.len() || cps.iter().any(|c| c.position != f.from || c.stopped) {
            return Ok(Step::Moved);
        }
        let applied: Vec<&Handlers> = f.applied.iter().collect();
        let projector = live_handlers::prepare(conn, target, &f.subset, &applied).await?;
        let mut failing = None;
        for (k, ev) in f.events.iter().enumerate() {
            conn.batch_execute("SAVEPOINT reproject_event")
                .await
                .context("cannot set a savepoint")?;
            match projector.apply(conn, std::slice::from_ref(ev)).await {
                Ok(()) => conn
                    .batch_execute("RELEASE SAVEPOINT reproject_event")
                    .await
                    .context("cannot release a savepoint")?,
                Err(e) => {
                    if conn.is_closed() {
                        return Err(e);
                    }
                    conn.batch_execute("ROLLBACK TO SAVEPOINT reproject_event")
                        .await
                        .context("cannot roll back to a savepoint")?;
                    failing = Some((k, e));
                    break;
                }
            }
        }
        write_guard::check(
            conn,
            projector.writes(),
            &Cursor::at(f.from),
            &Cursor::at(Some(f.upto)),
            true,
        )
        .await?;
        let Some((k, error)) = failing else {
            let n = f.events.len() as i64;
            if !live_checkpoints::advance(conn, &f.names, f.from, f.upto, n).await?
                || !act_on(conn, decided, f.upto, &mut acted).await?
            {
                return Ok(Step::Moved);
            }
            reached = Some(f.upto);
            return Ok(Step::Applied(n));
        };
        let failed = &f.events[k];
        let at = failed.position;
        // Everything below the failing event is done: the events before it, and the one an
        // operator decided to skip.
        let done = (k > 0)
            .then(|| f.events[k - 1].position)
            .max(f.skipped.filter(|&s| s < at));
        if let Some(done) = done {
            if !live_checkpoints::advance(conn, &f.names, f.from, done, k as i64).await?
                || !act_on(conn, decided, done, &mut acted).await?
            {
                return Ok(Step::Moved);
            }
            reached = Some(done);
        }
        // The whole group waits: its other projections must not get ahead of this one.
        let message = std::iter::once(error.message.clone())
            .chain(error.causes.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ");
        live_checkpoints::record_error(conn, &g.names, at, &message, false).await?;
        let parked = parked_events::record(
            conn,
            &g.names,
            &parked_events::Failure {
                position: at,
                stream: failed.stream.as_deref(),
                event_type: failed.event_type.as_deref(),
                error: &message,
                sqlstate: error.sqlstate(),
            },
        )
        .await?;
        Ok(Step::Parked(Box::new(parked), k as i64))
    }
    .await;
    match result {
        Ok(Step::Moved) => Ok((
            tx::end(conn, Ok(tx::End::RollBack(Step::Moved))).await?,
            None,
        )),
        Ok(step) => {
            let step = tx::end(conn, Ok(tx::End::Commit(step))).await?;
            if reached.is_some() {
                g.position = reached;
            }
            Ok((step, acted.then_some(decided).flatten()))
        }
        Err(e) => {
            let _ = conn.batch_execute("ROLLBACK").await;
            // The handler error says what went wrong; the careful pass only located it.
            Err(if conn.is_closed() { e } else { f.error })
        }
    }
}

/// Marks the decision on a parked event acted on, in the batch's transaction, once the
/// checkpoint `reached` its event: exactly once, as the checkpoint moves past it only once.
/// False if the row is not open with that decision any more (the caller rolls back).
async fn act_on(
    conn: &Client,
    decided: Option<Decided>,
    reached: i64,
    acted: &mut bool,
) -> Result<bool> {
    let Some(d) = decided.filter(|d| reached >= d.position) else {
        return Ok(true);
    };
    let outcome = match d.decision {
        Decision::Skip => "skipped",
        Decision::Retry => "applied",
    };
    if !parked_events::act(conn, d.id, d.decision, outcome).await? {
        return Ok(false);
    }
    *acted = true;
    Ok(true)
}

/// Reads where group `g` stands with parked events (at start, while parked, and when a
/// decision could not be acted on): the open row of its projections, if any, makes it wait
/// (pending) or act (decided). A row its checkpoints are already past (a swap handed over
/// tables that hold the event) is closed as `overtaken`. Reports what changed.
async fn resume(engine: &Engine<'_>, conn: &Client, g: &mut Group) -> Result<()> {
    let open = parked_events::open_for(conn, &g.names).await?;
    let cps = live_checkpoints::read(conn, &g.names).await?;
    let lowest = cps.iter().map(|c| c.position).min().flatten();
    let was_parked = g.parked.is_some();
    g.decided = None;
    let Some(event) = open else {
        g.parked = None;
        return Ok(());
    };
    if lowest.is_some_and(|l| l >= event.position) {
        parked_events::overtaken(conn, event.id).await?;
        engine.reporter.warn(&Warning::ParkedEventOvertaken {
            parked: event.at(),
            projections: g.names.clone(),
        });
        g.parked = None;
        return Ok(());
    }
    match event.decision {
        None => {
            if !was_parked {
                engine.reporter.warn(&Warning::WaitingOnParkedEvent {
                    projections: g.names.clone(),
                    parked: event.at(),
                    since: event.first_seen_at,
                    failures: event.times_seen,
                    error: event.error.clone(),
                });
            }
            g.parked = Some(Parked {
                event,
                polled: Instant::now(),
            });
        }
        Some(decision) => {
            engine.reporter.step(&progress::Step::ParkedEventDecided {
                decision: self::decision(decision),
                parked: event.at(),
                decided_by: event.decided_by.clone(),
                reason: event.reason.clone(),
            });
            g.parked = None;
            g.decided = Some(Decided {
                id: event.id,
                position: event.position,
                decision,
            });
        }
    }
    Ok(())
}

/// Parks group `g` on `event` after a handler error, loudly (or stops the whole runner, with
/// `--stop-on-error all`: the event stays recorded, so a restarted runner waits on it).
fn park(engine: &Engine<'_>, g: &mut Group, event: ParkedEvent, opts: &RunOptions) -> Result<()> {
    let parked = |runner_stops| Warning::EventParked {
        projections: g.names.clone(),
        parked: event.at(),
        error: event.error.clone(),
        runner_stops,
    };
    if opts.stop_on_error == StopOnError::All {
        engine.reporter.warn(&parked(true));
        g.error = Some(event.error.clone());
        return Err(Error::runtime(format!(
            "stopped the runner on a handler error (--stop-on-error all): {}",
            event.error
        ))
        .with_hint(format!(
            "the {} is parked: a restarted runner waits on it; {}",
            event.what(),
            event.commands()
        )));
    }
    engine.reporter.warn(&parked(false));
    g.parked = Some(Parked {
        event,
        polled: Instant::now(),
    });
    Ok(())
}

/// How often a runner held back by an open transaction says so.
const HELD_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Since when the bound has stood still below the head, to say (every [`HELD_REPORT_EVERY`])
/// which open transactions hold it: otherwise a runner that lags behind one looks stuck. A
/// bound that moves is not held, even if busy writers keep it a little below the head.
#[derive(Default)]
struct Held {
    since: Option<Instant>,
    at: Option<i64>,
    reported: Option<Instant>,
}

impl Held {
    fn observe(&mut self, engine: &Engine<'_>, hold: Option<crate::read::ordering::Hold>) {
        let Some(hold) =
            hold.filter(|h| h.head.is_some_and(|head| h.bound.is_none_or(|b| b < head)))
        else {
            self.since = None;
            self.reported = None;
            return;
        };
        if self.since.is_none() || self.at != hold.bound {
            self.since = Some(Instant::now());
            self.at = hold.bound;
            self.reported = None;
        }
        let since = self.since.unwrap_or_else(Instant::now);
        let last = self.reported.unwrap_or(since);
        if last.elapsed() >= HELD_REPORT_EVERY {
            self.reported = Some(Instant::now());
            engine.reporter.warn(&Warning::RunnerHoldingAtGap {
                bound: hold.bound,
                held: since.elapsed(),
                head: hold.head.unwrap_or_default(),
                by: hold.describe(),
            });
        }
    }
}

/// A decision as the reports name it.
fn decision(d: Decision) -> progress::Decision {
    match d {
        Decision::Skip => progress::Decision::Skip,
        Decision::Retry => progress::Decision::Retry,
    }
}

/// The lowest live checkpoint of the groups still running: a bound proven from there holds for
/// every one of them.
async fn lowest(conn: &Client, groups: &[Group]) -> Result<Option<i64>> {
    let names: Vec<String> = groups
        .iter()
        .filter(|g| g.error.is_none() && g.parked.is_none())
        .flat_map(|g| g.names.iter().cloned())
        .collect();
    let cps = live_checkpoints::read(conn, &names).await?;
    Ok(cps.iter().map(|c| c.position).min().flatten())
}

/// The head as it is now, once proven final (for `--from-position head`): waits, naming them,
/// for the transactions that can still fill a gap below it.
async fn settled_head(
    engine: &Engine<'_>,
    conn: &Client,
    source: &EventSource,
    names: &[String],
) -> Result<Option<i64>> {
    let Some(head) = source.head(conn).await? else {
        return Ok(None);
    };
    let mut cut = Cut::for_runner(source, names);
    loop {
        let bound = cut
            .settle(
                conn,
                &Cursor::at(None),
                &engine.cancel,
                engine.reporter,
                crate::read::ordering::SETTLE_WAIT,
            )
            .await?;
        if let Some(Bound::UpTo(b)) = bound {
            if b >= head {
                return Ok(Some(b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("start".parse::<StartAt>(), Ok(StartAt::Start));
        assert_eq!("head".parse::<StartAt>(), Ok(StartAt::Head));
        assert_eq!("42".parse::<StartAt>(), Ok(StartAt::Position(42)));
        assert!("tail".parse::<StartAt>().unwrap_err().contains("`tail`"));
    }

    #[test]
    fn what_is_retried() {
        let coded = |e: Error, code: &str| {
            let mut e = e;
            e.sqlstate = Some(code.to_string());
            e
        };
        let busy = coded(Error::busy("held"), "40001");
        let deadlock = coded(Error::runtime("x"), "40P01").context("applying a batch");
        let handler = coded(Error::runtime("x"), "22P02");
        let connect = Error::runtime("x").with_reason(crate::error::Reason::CannotConnect);
        assert!(!retryable(&busy));
        assert!(retryable(&deadlock));
        assert!(retryable(&coded(Error::runtime("x"), "08006")));
        assert!(retryable(&coded(Error::runtime("x"), "57P01")));
        assert!(!retryable(&handler));
        assert!(retryable(&connect));
        // The words alone decide nothing: only the SQLSTATE and the reason set where the
        // error was made.
        assert!(!retryable(
            &Error::runtime("cannot connect to PostgreSQL at u@h:5432/d")
                .caused_by("ERROR: deadlock detected [SQLSTATE 40P01]")
        ));
    }
}
