//! [`Warning`]: what the user should know that is not an error, one variant per situation.

use super::values::{
    blockers, decide_commands, laggards, millis, position_or_start, ticked, At, EventAt, FoundBy,
    Lagging, Operation, Signal,
};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Something the user should know that is not an error. `Display` gives the line the binary
/// prints after `warning: `; the variant and its fields say the same for a program. Fields
/// named `error` hold an error's message as reproject prints it. New variants may be added:
/// match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Warning {
    /// A rebuild lost its connection; it resumes from its last committed batch.
    ConnectionLost {
        /// The server's or the socket's words.
        cause: String,
        /// The pause before resuming.
        #[serde(rename = "retry_in_ms", serialize_with = "millis")]
        retry_in: Duration,
        /// This attempt (1-based).
        attempt: u32,
        /// The most attempts made.
        attempts: u32,
    },
    /// The attempt that lost its connection never committed its clone: a new run starts.
    CloneNotCommitted {
        /// Why the old run cannot be continued.
        why: String,
    },
    /// After a lost connection, the run turned out to be swapped: the swap took effect,
    /// without waiting for its durability and foreign-key validation.
    SwappedBeforeConnectionLoss {
        /// The run.
        run_id: i64,
    },
    /// The connection went as the swap committed, and the run is recorded swapped.
    ConnectionLostAtSwapCommit {
        /// The run.
        run_id: i64,
    },
    /// A projection that reads a rebuilt one is not part of the rebuild.
    DependentNotRebuilt {
        /// The projection left out.
        projection: String,
        /// The rebuilt projection it reads.
        reads: String,
    },
    /// A projection's `reshape` is already live (applied by an earlier run).
    ReshapeAlreadyApplied {
        /// The projection.
        projection: String,
        /// The run that applied it.
        run_id: i64,
    },
    /// A table a projection's `create` makes already exists with that shape.
    CreateTableExists {
        /// The projection.
        projection: String,
        /// The table.
        table: String,
        /// The definition file.
        definition: String,
    },
    /// A new run supersedes unfinished runs of the same projections.
    RunsSuperseded {
        /// How many.
        count: i64,
        /// The new run.
        run_id: i64,
    },
    /// An event committed after its position had been passed as a final gap: the tables
    /// miss it (recorded in `reproject.late_events`).
    LateEvent {
        /// The event.
        late: EventAt,
        /// A projection whose tables miss it.
        projection: String,
        /// Who found it, which says how to repair it.
        found_by: FoundBy,
    },
    /// `--jobs` with `--max-events`: stream lanes cannot be used.
    JobsWithMaxEvents {
        /// `--jobs`.
        jobs: usize,
    },
    /// `--jobs` given, but this run cannot use stream lanes.
    NoStreamLanes {
        /// `--jobs`.
        jobs: usize,
        /// Why not.
        why: String,
    },
    /// Health checks failed; `--skip-checks` swaps anyway.
    ChecksFailedSwappingAnyway {
        /// How many failed.
        failed: usize,
    },
    /// Events arrived after an external projector's last range and no `handover` applies
    /// them: the swap released its locks to run the projector again.
    ExternalTailRetry {
        /// Events pending.
        pending: i64,
        /// How long the locks were held.
        #[serde(rename = "held_ms", serialize_with = "millis")]
        held: Duration,
        /// This retry (1-based).
        retry: u32,
        /// The most retries.
        retries: u32,
    },
    /// The preview's views (`rebuild --preview-schema … --no-swap`) show the new tables as of
    /// a position: nothing applies newer events to them until `swap`.
    PreviewCurrentTo {
        /// The schema.
        schema: String,
        /// The run's checkpoint (None: no event yet).
        position: Option<i64>,
    },
    /// More events than `--max-tail-events` arrived under the swap's locks: it released them
    /// to catch up first.
    TailRetry {
        /// Events pending.
        pending: i64,
        /// `--max-tail-events`.
        max_tail_events: i64,
        /// How long the locks were held.
        #[serde(rename = "held_ms", serialize_with = "millis")]
        held: Duration,
        /// This retry (1-based).
        retry: u32,
        /// The most retries.
        retries: u32,
    },
    /// More events than `--max-tail-events` arrived under a rollback's locks: it released
    /// them to catch up first.
    RollbackTailRetry {
        /// Events pending.
        pending: i64,
        /// `--max-tail-events`.
        max_tail_events: i64,
    },
    /// After a swap that committed as the connection went, no connection could be made to
    /// confirm its durability or validate its foreign keys.
    CannotReconnectAfterSwap {
        /// Why.
        error: String,
    },
    /// The swap or rollback committed; its durability could not be confirmed.
    DurabilityUnconfirmed {
        /// What committed.
        after: Operation,
        /// Why.
        error: String,
    },
    /// A foreign key could not be validated after the swap and stays `NOT VALID`.
    ForeignKeyNotValid {
        /// The constraint, in words.
        constraint: String,
    },
    /// The swap or rollback committed; its foreign keys could not be validated.
    ForeignKeysUnvalidated {
        /// What committed.
        after: Operation,
        /// Why.
        error: String,
    },
    /// A helper table could not be dropped (`cleanup --yes` will).
    DropFailed {
        /// The table.
        table: String,
        /// Why.
        error: String,
    },
    /// The swap committed; whether a rollback needs `--with-current-handlers` could not be
    /// read.
    RollbackCaveatUnknown {
        /// Why.
        error: String,
    },
    /// A rollback catches the previous tables up with the config's handlers
    /// (`--with-current-handlers`).
    PreviousTablesWithCurrentHandlers {
        /// Why the recorded handlers are not used.
        why: String,
        /// The handler files.
        files: String,
        /// Where the previous tables stand.
        from: At,
    },
    /// A rollback leaves the events since the swap to the live runner.
    RunnerCatchesUpPreviousTables {
        /// Why the rollback does not apply them itself.
        why: String,
    },
    /// `reproject cancel` asked this run to stop.
    CancelRequested {
        /// Who asked.
        by: String,
    },
    /// A partial rebuild found no row of its selected streams in the `stream_key` column.
    PartialNoSelectedRows {
        /// The rebuild tables.
        tables: Vec<String>,
    },
    /// A partial rebuild will compare the rows it does not rebuild with the live tables
    /// under the swap's locks.
    PartialCompareUnderLock {
        /// Rows to compare.
        rows: i64,
    },
    /// An external projector's hand-over checkpoint is left as it is: no event was applied.
    HandoverUnchanged {
        /// The projection.
        projection: String,
        /// The checkpoint table.
        table: String,
    },
    /// Whether the standbys have caught up cannot be told: the swap locks anyway.
    StandbysUnknown {
        /// Why.
        error: String,
    },
    /// This role cannot see how far some standbys have replayed: not waiting for them.
    StandbysUnseen {
        /// Their names.
        standbys: Vec<String>,
    },
    /// Standbys had not replayed the primary's WAL within `--standby-wait`: locking anyway.
    StandbysBehind {
        /// The standbys behind.
        standbys: Vec<Lagging>,
        /// How long the swap waited.
        #[serde(rename = "waited_ms", serialize_with = "millis")]
        waited: Duration,
    },
    /// Standbys had not replayed the swap's or rollback's commit within `--standby-wait`.
    StandbysBehindCommit {
        /// The standbys behind.
        standbys: Vec<Lagging>,
        /// What committed.
        after: Operation,
        /// How long it was watched.
        #[serde(rename = "waited_ms", serialize_with = "millis")]
        waited: Duration,
    },
    /// This role cannot see how far some standbys have replayed the commit.
    StandbysUnseenCommit {
        /// Their names.
        standbys: Vec<String>,
        /// What committed.
        after: Operation,
    },
    /// The standbys' replay of the commit could not be measured.
    StandbyReplayUnmeasured {
        /// What committed.
        after: Operation,
        /// Why.
        error: String,
    },
    /// The swap cancelled or terminated a session that blocked its locks
    /// (`--cancel-blockers-after`, `--terminate-blockers-after`).
    BlockerSignalled {
        /// What was done.
        signal: Signal,
        /// The session's pid.
        pid: i32,
        /// The session in words (user, application, query).
        session: String,
        /// How long the swap had been locking.
        #[serde(rename = "after_ms", serialize_with = "millis")]
        after: Duration,
    },
    /// The swap cancelled an autovacuum worker that held the tables.
    AutovacuumCancelled {
        /// Its pid.
        pid: i32,
        /// What it was doing.
        what: String,
    },
    /// A lock attempt of the swap or rollback timed out; it tries again. A round of the
    /// wait [`super::Reporter::waiting`] reports.
    LockTimedOut {
        /// The tables (and dependents) locked.
        tables: Vec<String>,
        /// This attempt (1-based).
        attempt: u32,
        /// How long the attempt waited.
        #[serde(rename = "timeout_ms", serialize_with = "millis")]
        timeout: Duration,
        /// The sessions in the way, in words.
        blockers: Vec<String>,
    },
    /// The locks were taken after failed attempts: the summary of that wait.
    LocksTaken {
        /// The tables (and dependents) locked.
        tables: Vec<String>,
        /// Attempts, the successful one included.
        attempts: u32,
        /// How long from the first attempt.
        #[serde(rename = "took_ms", serialize_with = "millis")]
        took: Duration,
        /// Every session that blocked an attempt, in words.
        blockers: Vec<String>,
    },
    /// Reading holds at a gap that an open transaction can still fill (gap-aware ordering):
    /// a round of the wait [`super::Reporter::waiting`] reports.
    HoldingAtGap {
        /// The last position proven final (None: none yet).
        bound: Option<i64>,
        /// The position the wait is for.
        head: i64,
        /// What can still fill the gap, in words.
        by: String,
    },
    /// The open transactions a run waited for ended: the summary of that wait.
    OpenTransactionsEnded {
        /// The run (None: the live runner).
        run_id: Option<i64>,
        /// How long it waited.
        #[serde(rename = "waited_ms", serialize_with = "millis")]
        waited: Duration,
        /// The position now proven final.
        up_to: i64,
    },
    /// Positions cannot be proven final within the wait: replaying up to the bound.
    PositionsNotFinal {
        /// The last position proven final (None: none yet).
        bound: Option<i64>,
        /// What can still fill the gap, in words.
        by: String,
    },
    /// Older transactions are still open (`xid8` ordering): replaying the events below the
    /// cut.
    OlderTransactionsOpen {
        /// The open transactions, in words.
        open: Vec<String>,
    },
    /// A transaction hit a transient error (serialization failure, deadlock…) and is
    /// retried.
    TransientRetry {
        /// What the transaction does.
        what: String,
        /// This retry (1-based).
        attempt: u32,
        /// The most retries.
        attempts: u32,
        /// The pause before it.
        #[serde(rename = "retry_in_ms", serialize_with = "millis")]
        retry_in: Duration,
        /// The error.
        error: String,
    },
    /// `gaps --repair` could not repair a projection.
    RepairFailed {
        /// The projection.
        projection: String,
        /// Why.
        error: String,
    },
    /// The live runner lost its locks; it takes them again.
    RunnerLocksLost {
        /// How.
        why: String,
    },
    /// The live runner hit a database error it retries.
    DatabaseErrorRetrying {
        /// The error.
        error: String,
    },
    /// A group of the live runner stopped on an error (the others go on).
    GroupStopped {
        /// The group's projections.
        projections: Vec<String>,
        /// The error.
        error: String,
    },
    /// The live runner switched a projection's handlers at a hand-over.
    HandlersSwitched {
        /// What was switched, to what and why.
        note: String,
    },
    /// The live runner cannot reconnect yet.
    CannotReconnectYet {
        /// The pause before the next try.
        #[serde(rename = "retry_in_ms", serialize_with = "millis")]
        retry_in: Duration,
        /// Why.
        error: String,
    },
    /// `run --from-position` does not move a projection that has a live checkpoint.
    LiveCheckpointKept {
        /// The projection.
        projection: String,
        /// Its live checkpoint (None: the start).
        position: Option<i64>,
    },
    /// The event a group is parked on is behind its live checkpoints now (a swap handed
    /// over tables that hold it).
    ParkedEventOvertaken {
        /// The event.
        parked: EventAt,
        /// The group's projections.
        projections: Vec<String>,
    },
    /// A group of the live runner waits on a parked event found at start.
    WaitingOnParkedEvent {
        /// The group's projections.
        projections: Vec<String>,
        /// The event.
        parked: EventAt,
        /// When it first failed.
        since: chrono::DateTime<chrono::Utc>,
        /// Failed attempts.
        failures: i32,
        /// The handler's error.
        error: String,
    },
    /// A handler error parked a group of the live runner on an event.
    EventParked {
        /// The group's projections.
        projections: Vec<String>,
        /// The event.
        parked: EventAt,
        /// The handler's error.
        error: String,
        /// `--stop-on-error all`: the runner stops (the event stays parked).
        runner_stops: bool,
    },
    /// The live runner holds at a gap an open transaction can still fill.
    RunnerHoldingAtGap {
        /// The last position proven final (None: none yet).
        bound: Option<i64>,
        /// For how long.
        #[serde(rename = "held_ms", serialize_with = "millis")]
        held: Duration,
        /// The position it waits for.
        head: i64,
        /// What can still fill the gap, in words.
        by: String,
    },
}

impl Warning {
    /// The variant's name in snake_case (`lock_timed_out`, `late_event`): the `event` field
    /// of the binary's JSON log lines.
    pub fn event(&self) -> String {
        super::event_name(self)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ConnectionLost { cause, retry_in, attempt, attempts } => write!(
                f,
                "lost the connection to PostgreSQL ({cause}); resuming from the last committed batch in {:.1} s (attempt {attempt} of {attempts})",
                retry_in.as_secs_f64()
            ),
            Warning::CloneNotCommitted { why } => write!(f, "{why}; starting a new run"),
            Warning::SwappedBeforeConnectionLoss { run_id } => write!(
                f,
                "run {run_id}: the connection was lost as its swap committed; the run is recorded swapped, so the swap took effect (its durability and foreign-key validation could not be waited for)"
            ),
            Warning::ConnectionLostAtSwapCommit { run_id } => write!(
                f,
                "run {run_id}: the connection was lost as the swap committed; the run is recorded swapped, so the swap took effect"
            ),
            Warning::DependentNotRebuilt { projection, reads } => write!(
                f,
                "projection `{projection}` reads `{reads}` but is not part of this rebuild; it will keep the rows it derived from the old `{reads}`"
            ),
            Warning::ReshapeAlreadyApplied { projection, run_id } => write!(
                f,
                "projection `{projection}`: reshape already applied by run {run_id}; the clone keeps the live shape; remove `reshape` from the config"
            ),
            Warning::CreateTableExists { projection, table, definition } => write!(
                f,
                "projection `{projection}`: `{table}` exists with the shape its definition ({definition}) makes; the rebuild clones it as it is; remove it from `create`"
            ),
            Warning::RunsSuperseded { count, run_id } => write!(
                f,
                "{count} earlier unfinished run(s) of these projections are superseded by run {run_id} (`rebuild --resume` continues an unfinished run instead)"
            ),
            Warning::LateEvent { late, projection, found_by } => {
                write!(
                    f,
                    "late event: position {} (stream `{}`, type `{}`) was committed after `{projection}` had passed its position as a final gap, so its tables miss it; recorded in reproject.late_events",
                    late.position,
                    late.stream.as_deref().unwrap_or("NULL"),
                    late.event_type.as_deref().unwrap_or("NULL"),
                )?;
                match found_by {
                    FoundBy::Gaps => Ok(()),
                    FoundBy::Rebuild => {
                        f.write_str("; repair after the swap: `reproject gaps --repair`")
                    }
                    FoundBy::Runner => f.write_str("; repair: `reproject gaps --repair`"),
                }
            }
            Warning::JobsWithMaxEvents { jobs } => write!(
                f,
                "--jobs {jobs} applies to stream lanes only, and a run with --max-events cannot use them; replaying on one connection"
            ),
            Warning::NoStreamLanes { jobs, why } => write!(
                f,
                "--jobs {jobs} applies to stream lanes only, and this run cannot use them: {why}; replaying on one connection"
            ),
            Warning::ChecksFailedSwappingAnyway { failed } => {
                write!(f, "{failed} check(s) failed; swapping anyway (--skip-checks)")
            }
            Warning::ExternalTailRetry { pending, held, retry, retries } => write!(
                f,
                "{pending} event(s) arrived after the external projector's last range and no `handover` would apply them: released the locks after {} ms to run it again first (retry {retry} of {retries})",
                held.as_millis()
            ),
            Warning::PreviewCurrentTo { schema, position } => write!(
                f,
                "the views in `{schema}` are current to position {} only: with --no-swap nothing applies new events to the new tables until `reproject swap` catches them up (use --swap-at to keep them current while waiting)",
                position.map_or_else(|| "(none)".to_string(), |p| p.to_string())
            ),
            Warning::TailRetry { pending, max_tail_events, held, retry, retries } => write!(
                f,
                "{pending} event(s) pending under the lock, more than --max-tail-events {max_tail_events}: released the locks after {} ms to catch up first (retry {retry} of {retries})",
                held.as_millis()
            ),
            Warning::RollbackTailRetry { pending, max_tail_events } => write!(
                f,
                "{pending} event(s) pending under the lock, more than --max-tail-events {max_tail_events}: released the locks to catch up first"
            ),
            Warning::CannotReconnectAfterSwap { error } => write!(
                f,
                "could not reconnect to confirm the swap's durability or validate its foreign keys ({error}); `reproject status` shows the run, `reproject cleanup --yes` drops what is left"
            ),
            Warning::DurabilityUnconfirmed { after, error } => write!(
                f,
                "the {after} committed, but its durability could not be confirmed: {error}"
            ),
            Warning::ForeignKeyNotValid { constraint } => {
                write!(f, "foreign key left NOT VALID: {constraint}")
            }
            Warning::ForeignKeysUnvalidated { after, error } => write!(
                f,
                "the {after} committed, but its foreign keys could not be validated (they still guard new rows): {error}"
            ),
            Warning::DropFailed { table, error } => write!(
                f,
                "could not drop `{table}` (`reproject cleanup --yes` will): {error}"
            ),
            Warning::RollbackCaveatUnknown { error } => write!(
                f,
                "the swap committed, but whether `reproject rollback` needs `--with-current-handlers` could not be read: {error}"
            ),
            Warning::PreviousTablesWithCurrentHandlers { why, files, from } => write!(
                f,
                "{why}: as --with-current-handlers allows, the previous tables are caught up with this config's handlers ({files}) from {from}"
            ),
            Warning::RunnerCatchesUpPreviousTables { why } => write!(
                f,
                "{why}: `reproject run` re-applies the events since the swap to the restored tables"
            ),
            Warning::CancelRequested { by } => write!(f, "cancellation requested by {by}"),
            Warning::PartialNoSelectedRows { tables } => write!(
                f,
                "partial rebuild: no row of {} has a selected stream in its `stream_key` column; check that the column's text equals the events' stream",
                ticked(tables)
            ),
            Warning::PartialCompareUnderLock { rows } => write!(
                f,
                "partial rebuild: {rows} row(s) of the streams that are not rebuilt will be compared with the live tables while their locks are held, and those that changed copied (the hold grows with them; --lock-hold-max bounds it)"
            ),
            Warning::HandoverUnchanged { projection, table } => write!(
                f,
                "projection `{projection}`: no event was applied, so the hand-over checkpoint in `{table}` is left as it is"
            ),
            Warning::StandbysUnknown { error } => write!(
                f,
                "cannot tell whether the standbys have caught up, locking anyway: {error}"
            ),
            Warning::StandbysUnseen { standbys } => write!(
                f,
                "cannot see how far standby {} has replayed (that needs superuser or the pg_monitor role): not waiting for it; its readers of the tables may be cancelled by the swap",
                ticked(standbys)
            ),
            Warning::StandbysBehind { standbys, waited } => write!(
                f,
                "standby {} had not replayed the primary's WAL after {:.1}s (--standby-wait): locking anyway; its readers of the tables may be cancelled",
                laggards(standbys),
                waited.as_secs_f64()
            ),
            Warning::StandbysBehindCommit { standbys, after, waited } => write!(
                f,
                "standby {} had not replayed the {after} {:.1}s after its commit (--standby-wait): its readers of the tables wait until it does",
                laggards(standbys),
                waited.as_secs_f64()
            ),
            Warning::StandbysUnseenCommit { standbys, after } => write!(
                f,
                "cannot see how far standby {} has replayed the {after} (that needs superuser or the pg_monitor role)",
                ticked(standbys)
            ),
            Warning::StandbyReplayUnmeasured { after, error } => write!(
                f,
                "the {after} committed; could not measure the standbys' replay of it: {error}"
            ),
            Warning::BlockerSignalled { signal, pid, session, after } => write!(
                f,
                "{signal} blocking session pid {pid} ({session}) after {:.1}s of locking",
                after.as_secs_f64()
            ),
            Warning::AutovacuumCancelled { pid, what } => write!(
                f,
                "cancelled autovacuum pid {pid} ({what}) that held the tables"
            ),
            Warning::LockTimedOut { tables, attempt, timeout, blockers: found } => write!(
                f,
                "could not lock {} (attempt {attempt} timed out after {} ms); {}",
                ticked(tables),
                timeout.as_millis(),
                if found.is_empty() {
                    "retrying".to_string()
                } else {
                    format!("blocked by {}, retrying", blockers(found))
                }
            ),
            Warning::LocksTaken { tables, attempts, took, blockers: seen } => write!(
                f,
                "took the locks on {} after {attempts} attempts over {:.1} s; {}",
                ticked(tables),
                took.as_secs_f64(),
                if seen.is_empty() {
                    "no blocker could be identified".to_string()
                } else {
                    format!("blocked by {}", blockers(seen))
                }
            ),
            Warning::HoldingAtGap { bound, head, by } => write!(
                f,
                "holding at {}: a gap below position {head} can still be filled by {by}",
                position_or_start(*bound)
            ),
            Warning::OpenTransactionsEnded { run_id, waited, up_to } => write!(
                f,
                "{}: the open transactions ended after {:.1} s; replaying up to position {up_to}",
                run_id.map_or("the runner".into(), |id| format!("run {id}")),
                waited.as_secs_f64()
            ),
            Warning::PositionsNotFinal { bound, by } => write!(
                f,
                "positions after {} cannot be proven final yet ({by}); replaying up to there, the rest follows when they end",
                bound.map_or("the start".into(), |b| b.to_string())
            ),
            Warning::OlderTransactionsOpen { open } => write!(
                f,
                "older transactions are still open ({}); replaying the events below the cut, the rest follows when they end",
                if open.is_empty() { "none identified".to_string() } else { open.join("; ") }
            ),
            Warning::TransientRetry { what, attempt, attempts, retry_in, error } => write!(
                f,
                "{what} hit a transient error (attempt {attempt} of {attempts}, retrying in {} ms): {error}",
                retry_in.as_millis()
            ),
            Warning::RepairFailed { projection, error } => {
                write!(f, "could not repair `{projection}`: {error}")
            }
            Warning::RunnerLocksLost { why } => write!(f, "{why}; taking the runner locks again"),
            Warning::DatabaseErrorRetrying { error } => {
                write!(f, "database error, retrying: {error}")
            }
            Warning::GroupStopped { projections, error } => {
                write!(f, "stopped {}: {error}", projections.join(", "))
            }
            Warning::HandlersSwitched { note } => write!(f, "handlers switched: {note}"),
            Warning::CannotReconnectYet { retry_in, error } => write!(
                f,
                "cannot reconnect yet (retrying in {} ms): {error}",
                retry_in.as_millis()
            ),
            Warning::LiveCheckpointKept { projection, position } => write!(
                f,
                "`{projection}` continues from its live checkpoint at {} (--from-position only sets where projections without one start)",
                position.map_or("start".into(), |p| p.to_string())
            ),
            Warning::ParkedEventOvertaken { parked, projections } => write!(
                f,
                "the parked {parked} of {} is behind their live checkpoints now (a swap handed over tables that hold it): no longer waiting on it",
                projections.join(", ")
            ),
            Warning::WaitingOnParkedEvent { projections, parked, since, failures, error } => {
                write!(
                    f,
                    "{} wait on the parked {parked} since {} ({failures} failed attempt(s)): {error}; {}",
                    projections.join(", "),
                    since.format("%Y-%m-%d %H:%M:%S UTC"),
                    decide_commands(projections.first().map(String::as_str), parked.position)
                )
            }
            Warning::EventParked { projections, parked, error, runner_stops } => {
                write!(f, "parked {} at the {parked}: {error}", projections.join(", "))?;
                if !runner_stops {
                    write!(
                        f,
                        "; they wait for a decision (the other projections go on): {}",
                        decide_commands(projections.first().map(String::as_str), parked.position)
                    )?;
                }
                Ok(())
            }
            Warning::RunnerHoldingAtGap { bound, held, head, by } => write!(
                f,
                "holding at {} for {}s: a gap below position {head} can still be filled by {by}",
                position_or_start(*bound),
                held.as_secs()
            ),
        }
    }
}
