//! [`Step`]: what a command is doing, one variant per kind of step.

use super::values::{
    joined, millis, ticked, At, Decision, EventAt, Operation, Output, PartialCopy, UpTo,
};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// A step of a command begins, or something it did that its user follows. `Display` gives
/// the line the binary prints after `-> `; the variant and its fields say the same for a
/// program. New variants may be added: match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// A rebuild run begins: its rebuild tables are created.
    Cloning {
        /// The run.
        run_id: i64,
        /// How many tables are cloned.
        tables: usize,
        /// The projections rebuilt.
        projections: Vec<String>,
    },
    /// `rebuild --resume` continues a recorded run.
    Resuming {
        /// The run.
        run_id: i64,
        /// Its status as recorded (`failed`, `cancelled`, `replaying`…).
        status: String,
    },
    /// The bulk replay into the rebuild tables begins (on one connection).
    Replaying {
        /// Events counted up to the bound.
        events: i64,
        /// How far it reads.
        up_to: UpTo,
        /// The rebuild tables written.
        tables: Vec<String>,
    },
    /// The bulk replay begins in stream lanes (`stream_key`, `--jobs`).
    ReplayingInLanes {
        /// How many lanes the events are split into.
        lanes: i32,
        /// The lane plan's number within the run (1, 2, …).
        plan: i32,
        /// A continued plan (after a failure, Ctrl-C or a lost connection): the lanes left.
        left: Option<usize>,
        /// How many lanes run at once.
        at_once: usize,
        /// Where the plan ends.
        up_to: At,
    },
    /// The read waited a moment for positions to be proven final before replaying past them
    /// (a gap, or the start, held by an open transaction or too young for `gap_age`).
    WaitedForPositions {
        /// The run (None: the live runner).
        run_id: Option<i64>,
        /// How long it waited.
        #[serde(
            rename = "waited_ms",
            serialize_with = "crate::progress::values::millis"
        )]
        waited: std::time::Duration,
        /// What held the read: the position (or the start) and what was open.
        held_at: String,
        /// The position now proven final.
        up_to: i64,
    },
    /// A round of catch-up before the checks or the swap.
    CatchingUp {
        /// Events pending.
        events: i64,
    },
    /// A rollback brings the previous tables up to date first.
    CatchingUpPreviousTables {
        /// Events since the swap still to apply to them.
        events: i64,
    },
    /// The run waits for its swap window (`--swap-window`), catching up meanwhile.
    WaitingForWindow {
        /// The window as configured.
        window: String,
        /// When it next opens.
        opens: chrono::DateTime<chrono::Local>,
    },
    /// The health checks run.
    RunningChecks,
    /// Tables built unlogged (`build_unlogged`) were made logged before the swap.
    MadeLogged {
        /// The rebuild tables.
        tables: Vec<String>,
    },
    /// The preview schema's views (`rebuild --preview-schema`) read the new tables.
    PreviewCreated {
        /// The schema.
        schema: String,
        /// Its views, as `schema.table`.
        views: Vec<String>,
        /// The run whose views these replaced, if any.
        replaces_run: Option<i64>,
    },
    /// The preview's views stay current: the run keeps catching up while it waits.
    PreviewKeptCurrent {
        /// The schema.
        schema: String,
    },
    /// The rebuilt tables are vacuumed and analyzed before the swap.
    Vacuuming,
    /// A projection's `retire` entry names a table that does not exist (any more).
    NothingToRetire {
        /// The projection.
        projection: String,
        /// The table `retire` names.
        table: String,
    },
    /// The swap begins (locks, exchange).
    Swapping {
        /// How many tables are exchanged.
        tables: usize,
    },
    /// After the swap or a rollback, the foreign keys added `NOT VALID` are validated.
    ValidatingForeignKeys {
        /// How many.
        count: usize,
    },
    /// A table an earlier swap retired but could not drop is dropped now.
    DroppingRetired {
        /// The table.
        table: String,
        /// The run that retired it, when known.
        retired_by: Option<i64>,
    },
    /// `cleanup` drops a helper table.
    DroppingHelper {
        /// The table.
        table: String,
        /// What it is (`rebuild`, `old`, `retired`…).
        kind: String,
    },
    /// The swap waited for the streaming standbys before locking (`--standby-wait`).
    WaitedForStandbys {
        /// How long.
        #[serde(rename = "waited_ms", serialize_with = "millis")]
        waited: Duration,
        /// How many standbys.
        standbys: usize,
    },
    /// Every standby replayed the swap's or rollback's commit.
    StandbysReplayed {
        /// How many standbys.
        standbys: usize,
        /// What committed.
        after: Operation,
        /// Milliseconds from the commit until the slowest standby replayed it.
        slowest_ms: u64,
        /// The longest its readers of the tables waited, about (lock hold + replay).
        stall_ms: u64,
    },
    /// An external projector's hand-over checkpoint was set in the swap transaction.
    HandoverSet {
        /// The projection.
        projection: String,
        /// The checkpoint table.
        table: String,
        /// Where it now stands.
        at: At,
    },
    /// `--from-time` resolved to a position.
    FromTime {
        /// The time given (RFC 3339).
        time: String,
        /// The last event before it.
        position: i64,
    },
    /// A partial rebuild copied the rows it does not rebuild from the live tables.
    PartialSeeded {
        /// The partial rebuild in words (the streams or the position it starts from).
        rebuild: String,
        /// Rows copied.
        copied: u64,
        /// How.
        copy: PartialCopy,
    },
    /// At the swap of a `--streams` rebuild: the rows not rebuilt were taken at the live
    /// position and brought forward by the replay.
    PartialRowsFromLive {
        /// The live position they were copied at.
        since: i64,
        /// Where the run is at the swap.
        at: At,
    },
    /// At the swap of a `--streams` rebuild: the rows not rebuilt were compared with the live
    /// ones under the locks and synced.
    PartialRowsSynced {
        /// Rows of the other streams.
        rows: i64,
        /// How long the comparison held the locks.
        #[serde(rename = "compared_ms", serialize_with = "millis")]
        compared: Duration,
        /// Rows removed since the early copy.
        deleted: i64,
        /// Rows added since the early copy.
        inserted: i64,
        /// Events of those streams applied that the live tables had not applied yet.
        applied: i64,
    },
    /// An external projector runs for a range of events.
    ExternalRange {
        /// The projection.
        projection: String,
        /// Its command.
        command: String,
        /// Events in the range.
        events: i64,
        /// Where the range starts (after).
        from: At,
        /// Its last position.
        to: i64,
    },
    /// A line an external projector wrote. Its words are the projector's own: reproject
    /// passes them on (credentials in connection strings redacted).
    ExternalOutput {
        /// The projection.
        projection: String,
        /// Standard output or error.
        output: Output,
        /// The line.
        line: String,
    },
    /// A rollback begins.
    RollingBack {
        /// The run rolled back.
        run_id: i64,
        /// Its projections.
        projections: Vec<String>,
    },
    /// A rollback catches the previous tables up with the handlers that built them.
    PreviousTablesWithRecordedHandlers {
        /// The runs that recorded those handlers.
        runs: Vec<i64>,
    },
    /// `gaps --repair` rebuilds the streams of late events.
    RepairingStreams {
        /// The projection.
        projection: String,
        /// The streams rebuilt.
        streams: Vec<String>,
        /// The late events' positions.
        positions: Vec<i64>,
    },
    /// The live runner serves its metrics and health endpoints.
    ServingMetrics {
        /// The address bound.
        addr: std::net::SocketAddr,
    },
    /// The live runner starts.
    KeepingLive {
        /// The projections it keeps.
        projections: Vec<String>,
        /// Its groups, each in dependency order.
        groups: Vec<Vec<String>>,
    },
    /// The live runner wakes on notifications.
    Listening {
        /// The `LISTEN` channel.
        channel: String,
        /// The longest pause between polls.
        #[serde(rename = "max_poll_interval_ms", serialize_with = "millis")]
        max_poll_interval: Duration,
    },
    /// The live runner polls: the events table has no notify trigger.
    Polling {
        /// The events table.
        table: String,
    },
    /// The live runner acted on the decision for a parked event.
    ParkedEventActed {
        /// The decision.
        decision: Decision,
        /// The event's position.
        position: i64,
        /// The group's projections.
        projections: Vec<String>,
    },
    /// The live runner found a decision for the event its group is parked on.
    ParkedEventDecided {
        /// The decision.
        decision: Decision,
        /// The event.
        parked: EventAt,
        /// Who decided (`--by`).
        decided_by: Option<String>,
        /// Why (`--reason`).
        reason: Option<String>,
    },
    /// `run --wait`: another runner holds the projections; this one stands by.
    StandingBy {
        /// What holds them.
        why: String,
    },
    /// A standing-by runner took over.
    TookOver,
    /// The live runner reconnected after a lost connection.
    Reconnected,
    /// The live runner starts a projection at `--from-position`.
    LiveStartsAt {
        /// The projection.
        projection: String,
        /// The position it starts after (None: the start).
        position: Option<i64>,
    },
    /// The live runner starts a projection where a rebuild swapped its tables in.
    LiveStartsAtSwap {
        /// The projection.
        projection: String,
        /// The swap position (None: the start).
        position: Option<i64>,
        /// The run.
        run_id: i64,
    },
    /// The live runner's periodic status line (`--status-every`): every group's position,
    /// lag and rate. The same numbers are in `reproject status` and the metrics endpoint.
    RunnerAlive {
        /// The line.
        line: String,
    },
}

impl Step {
    /// The variant's name in snake_case (`cloning`, `running_checks`): the `event` field of
    /// the binary's JSON log lines.
    pub fn event(&self) -> String {
        super::event_name(self)
    }
}

fn show(p: Option<i64>) -> String {
    p.map_or("start".into(), |p| p.to_string())
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Cloning {
                run_id,
                tables,
                projections,
            } => write!(
                f,
                "run {run_id}: cloning {tables} table(s) of {}",
                projections.join(", ")
            ),
            Step::Resuming { run_id, status } => {
                write!(f, "resuming run {run_id} ({status}) from its checkpoint")
            }
            Step::Replaying {
                events,
                up_to,
                tables,
            } => write!(
                f,
                "replaying {events} event(s) up to {up_to} into {}",
                ticked(tables)
            ),
            Step::ReplayingInLanes {
                lanes,
                plan,
                left,
                at_once,
                up_to,
            } => write!(
                f,
                "replaying in {lanes} stream lane(s){}, {at_once} at a time (each lane: the events of the streams that hash to it, up to {up_to})",
                left.map(|n| format!(" ({n} left of plan {plan})"))
                    .unwrap_or_default()
            ),
            Step::WaitedForPositions {
                run_id,
                waited,
                held_at,
                up_to,
            } => write!(
                f,
                "{}: waited {:.1} s before replaying past {held_at}; replaying up to position {up_to}",
                run_id.map_or("the runner".into(), |id| format!("run {id}")),
                waited.as_secs_f64()
            ),
            Step::CatchingUp { events } => write!(f, "catching up with {events} new event(s)"),
            Step::CatchingUpPreviousTables { events } => write!(
                f,
                "catching the previous tables up with {events} event(s) since the swap"
            ),
            Step::WaitingForWindow { window, opens } => write!(
                f,
                "waiting for the swap window ({window}), which opens at {}; catching up meanwhile",
                opens.format("%Y-%m-%d %H:%M:%S %Z")
            ),
            Step::RunningChecks => f.write_str("running health checks"),
            Step::MadeLogged { tables } => {
                write!(f, "made {} logged (build_unlogged)", ticked(tables))
            }
            Step::PreviewCreated {
                schema,
                views,
                replaces_run,
            } => write!(
                f,
                "preview schema `{schema}`: {} read the new tables{} (`SET search_path = {}, public`)",
                views.join(", "),
                replaces_run
                    .map(|r| format!(", replacing the views of run {r}"))
                    .unwrap_or_default(),
                crate::model::ident::quote(schema)
            ),
            Step::PreviewKeptCurrent { schema } => write!(
                f,
                "the views in `{schema}` stay current while the run waits for the swap (it keeps catching up); after the swap they read the live tables"
            ),
            Step::Vacuuming => f.write_str("vacuuming and analyzing the rebuilt tables"),
            Step::NothingToRetire { projection, table } => write!(
                f,
                "projection `{projection}`: `retire` names `{table}`, which does not exist (retired by an earlier swap?): nothing to retire"
            ),
            Step::Swapping { tables } => write!(f, "swapping {tables} table(s)"),
            Step::ValidatingForeignKeys { count } => {
                write!(f, "validating {count} foreign key(s)")
            }
            Step::DroppingRetired { table, retired_by } => write!(
                f,
                "dropping `{table}`, left by an interrupted drop after the swap of {}",
                retired_by.map_or_else(|| "a later run".to_string(), |r| format!("run {r}"))
            ),
            Step::DroppingHelper { table, kind } => write!(f, "dropping `{table}` ({kind})"),
            Step::WaitedForStandbys { waited, standbys } => write!(
                f,
                "waited {:.1}s for {standbys} standby(s) to catch up before locking",
                waited.as_secs_f64()
            ),
            Step::StandbysReplayed {
                standbys,
                after,
                slowest_ms,
                stall_ms,
            } => write!(
                f,
                "{standbys} standby(s) replayed the {after} {slowest_ms} ms after its commit: their readers of the tables waited at most about {stall_ms} ms"
            ),
            Step::HandoverSet {
                projection,
                table,
                at,
            } => write!(
                f,
                "projection `{projection}`: hand-over checkpoint in `{table}` set to {at}"
            ),
            Step::FromTime { time, position } => write!(
                f,
                "--from-time {time}: the last event before it is at position {position}"
            ),
            Step::PartialSeeded {
                rebuild,
                copied,
                copy,
            } => {
                write!(
                    f,
                    "{rebuild}; copied {copied} row(s) that are not rebuilt from the live tables"
                )?;
                match copy {
                    PartialCopy::AtLivePosition(since) => write!(
                        f,
                        " at the live position {since}; the selected streams' events up to it and every event after it are replayed"
                    ),
                    PartialCopy::Early => f.write_str(
                        " (an early copy: it is compared with the live rows again under the swap's locks)",
                    ),
                    PartialCopy::FromPosition => Ok(()),
                }
            }
            Step::PartialRowsFromLive { since, at } => write!(
                f,
                "the rows of the streams that were not rebuilt are the live ones at position {since}, brought to {at} by the replay"
            ),
            Step::PartialRowsSynced {
                rows,
                compared,
                deleted,
                inserted,
                applied,
            } => {
                write!(
                    f,
                    "the {rows} row(s) of the streams that were not rebuilt now equal the live ones: compared under the lock in {} ms, {deleted} removed and {inserted} added since the early copy",
                    compared.as_millis()
                )?;
                if *applied > 0 {
                    write!(f, ", and applied the {applied} event(s) of those streams the live tables had not yet applied")?;
                }
                Ok(())
            }
            Step::ExternalRange {
                projection,
                command,
                events,
                from,
                to,
            } => write!(
                f,
                "projection `{projection}`: running `{command}` for {events} event(s) after {from} up to position {to}"
            ),
            Step::ExternalOutput {
                projection, line, ..
            } => write!(f, "{projection}: {line}"),
            Step::RollingBack {
                run_id,
                projections,
            } => write!(f, "rolling back run {run_id} ({})", projections.join(", ")),
            Step::PreviousTablesWithRecordedHandlers { runs } => write!(
                f,
                "the previous tables are caught up with the handlers recorded by run(s) {}",
                joined(runs, ", ")
            ),
            Step::RepairingStreams {
                projection,
                streams,
                positions,
            } => write!(
                f,
                "repairing `{projection}`: rebuilding stream(s) {} (late events at {})",
                streams.join(", "),
                joined(positions, ", ")
            ),
            Step::ServingMetrics { addr } => write!(
                f,
                "serving metrics on http://{addr}/metrics and health on http://{addr}/health"
            ),
            Step::KeepingLive {
                projections,
                groups,
            } => write!(
                f,
                "keeping {} live ({} group(s) applied independently: {})",
                projections.join(", "),
                groups.len(),
                groups
                    .iter()
                    .map(|g| g.join(" → "))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Step::Listening {
                channel,
                max_poll_interval,
            } => write!(
                f,
                "listening for new events on channel `{channel}`, polling every {} at most",
                humantime::format_duration(*max_poll_interval)
            ),
            Step::Polling { table } => write!(
                f,
                "`{table}` has no notify trigger: polling (see `reproject run --print-notify-sql`)"
            ),
            Step::ParkedEventActed {
                decision,
                position,
                projections,
            } => write!(
                f,
                "{} the parked event at position {position} for {}, as decided",
                match decision {
                    Decision::Skip => "skipped",
                    Decision::Retry => "applied",
                },
                projections.join(", ")
            ),
            Step::ParkedEventDecided {
                decision,
                parked,
                decided_by,
                reason,
            } => write!(
                f,
                "{} {parked}: {} decided by {}{}",
                match decision {
                    Decision::Skip => "skipping",
                    Decision::Retry => "retrying",
                },
                match decision {
                    Decision::Skip => "skip",
                    Decision::Retry => "retry",
                },
                decided_by.as_deref().unwrap_or("?"),
                reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Step::StandingBy { why } => write!(f, "standing by (--wait): {why}"),
            Step::TookOver => f.write_str("took over: the other runner stopped"),
            Step::Reconnected => f.write_str("reconnected to the database"),
            Step::LiveStartsAt {
                projection,
                position,
            } => write!(
                f,
                "`{projection}` starts after position {} (--from-position)",
                show(*position)
            ),
            Step::LiveStartsAtSwap {
                projection,
                position,
                run_id,
            } => write!(
                f,
                "`{projection}` starts after position {}, where run {run_id} swapped its tables in",
                show(*position)
            ),
            Step::RunnerAlive { line } => f.write_str(line),
        }
    }
}
