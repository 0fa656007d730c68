//! Command-line arguments (clap derive). Help texts are the CLI reference.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "reproject",
    version,
    about = "Zero-downtime blue/green rebuilds of event-sourced projection tables on PostgreSQL",
    after_help = "Exit codes: 0 ok, 1 runtime failure, 2 usage or config error, 3 health check refused the swap, \
                  4 the swap would have changed the table's definition, grants or dependents (refused), \
                  5 declined at the confirmation prompt (nothing changed), \
                  6 late events left unrepaired (`gaps`), \
                  75 busy (locks not obtained, or another run is active), 130 interrupted."
)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "REPROJECT_CONFIG",
        default_value = "reproject.toml"
    )]
    pub config: PathBuf,
    /// PostgreSQL connection URL or libpq `key=value` string, `sslmode`/`sslrootcert` included
    /// (never printed with its password). Without it, PGHOST, PGUSER, ... as for psql.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Print only errors, warnings and data (no progress).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output: -v the phases with their timings, each batch, the lock waits; -vv also
    /// reproject's statements with their timings and every SQL statement sent. RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the result as JSON on stdout (every command but `completions` and `man`); on
    /// failure, the error as JSON on stdout as well (the human text stays on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// How stderr is written: `text` (lines for people, progress bars on a terminal) or `json`
    /// (one JSON object per line with timestamp, level and message: log events, steps,
    /// warnings and the error; no progress bars), for containers and journald.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value = "text",
        env = "REPROJECT_LOG_FORMAT"
    )]
    pub log_format: super::log::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the dependency order, waves, tables and event counts of a rebuild. Writes nothing.
    Plan {
        /// Projections to plan (default: all).
        projections: Vec<String>,
        /// Also show (and check) what `rebuild --preview-schema NAME` would create.
        #[arg(long, value_name = "NAME")]
        preview_schema: Option<String>,
    },
    /// Validate the config against the database exactly as `plan` does, and print only a
    /// verdict per projection (or the errors): exit 0 when a rebuild would start, 2 when it
    /// would be refused. `plan` with less to read, for CI before a deploy. Writes nothing.
    Check {
        /// Projections to check (default: all).
        projections: Vec<String>,
    },
    /// Write a starter config from an existing event table: a preset when a known event store
    /// is found, else each column role guessed with the reason beside it. Reads the catalog
    /// only; needs no config.
    Init {
        /// The event table (`schema.table`); without it, a known store or the only table that
        /// looks like an event table (several: they are listed, exit 2).
        #[arg(long, value_name = "SCHEMA.TABLE")]
        table: Option<String>,
        /// Write the config to this file instead of stdout (never over an existing file
        /// without --force).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite --output if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Rebuild projections into `_rebuild` tables, check them, and swap them in.
    Rebuild(RebuildArgs),
    /// Swap in a rebuild that was left waiting (after --no-swap, --max-events or failed checks).
    Swap(SwapArgs),
    /// Keep projections' live tables current: apply new events as they arrive, with the same
    /// handlers and order as a rebuild. Stops on SIGINT/SIGTERM after the current batch (exit 0).
    /// An event whose handler fails is parked: its projections wait for `reproject skip` or
    /// `reproject retry`, the others go on.
    Run(RunArgs),
    /// Put back the tables the newest swap of the config's projections replaced (they were
    /// kept as `x_old`).
    Rollback {
        /// Projections whose newest swap to undo (default: the newest swap of any of the config's).
        projections: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Events per transaction while catching the previous tables up with the events since the swap.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
        batch_size: i64,
        /// When the handlers that built the previous tables are not recorded (the application
        /// built them) or no longer apply: catch them up with the events since the swap using
        /// this config's handlers, which may differ from whatever built them.
        #[arg(long)]
        with_current_handlers: bool,
        /// Consider the swaps of every projection recorded in the database, not only the
        /// config's (and allow a run that also swapped projections of other configs).
        #[arg(long)]
        all_projections: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// List, and with --yes drop, the helper tables of the config's projections that reproject
    /// created and no longer needs, each with what dropping it ends.
    Cleanup {
        /// Only the helper tables of these projections (default: the config's).
        projections: Vec<String>,
        /// Only tables created longer ago than this (e.g. `7d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Drop them (without it, only list).
        #[arg(long, short = 'y')]
        yes: bool,
        /// The helper tables of every projection recorded in the database, not only the
        /// config's (other configs' too).
        #[arg(long)]
        all_projections: bool,
    },
    /// Ask a running rebuild (from any terminal or machine) to stop after its current batch;
    /// it exits 130 and `rebuild --resume` continues it.
    Cancel {
        /// The run (default: the only running rebuild).
        run: Option<i64>,
        /// Who asks (default: $USER, else the OS account); recorded.
        #[arg(long)]
        initiated_by: Option<String>,
    },
    /// Show each projection's state, checkpoint and lag (and a running rebuild's speed and ETA).
    Status,
    /// Show the recorded runs of the config's projections.
    History {
        /// Only runs of these projections (default: the config's).
        projections: Vec<String>,
        /// How many runs, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The runs of every projection recorded in the database, not only the config's.
        #[arg(long)]
        all_projections: bool,
    },
    /// Re-check every gap in the positions that a rebuild or `run` passed as final: list the
    /// events committed there since (late events: the tables built past them miss them) and,
    /// with --repair, rebuild their streams. Exit 6 when late events are left unrepaired.
    Gaps {
        /// Repair: a partial rebuild (`--streams`) of the late events' streams, per projection
        /// that declares `stream_key`; the others are listed with the command to run.
        #[arg(long)]
        repair: bool,
    },
    /// List the events that `reproject run` parked after a handler error: the projections
    /// waiting on each, the event, the error, and the decision taken (pending until `skip` or
    /// `retry`). Writes nothing.
    Parked {
        /// Also the parked events already acted on (skipped, applied, failed again, overtaken).
        #[arg(long)]
        all: bool,
    },
    /// Decide to skip a parked event: the live runner applies the events of its projections
    /// without it, moving past it in the same transaction (exactly once). Recorded with who
    /// and why.
    Skip {
        /// A projection waiting on the event (the decision holds for every projection
        /// connected to it by dependencies).
        projection: String,
        /// The position of the parked event.
        position: i64,
        /// Why it is skipped (recorded; required).
        #[arg(long, required = true)]
        reason: String,
        /// Who decides (default: $USER, else the OS account); recorded.
        #[arg(long)]
        initiated_by: Option<String>,
    },
    /// Decide to retry a parked event once its cause is fixed (a handler, a function or a row
    /// it needs): the live runner applies it again; if it fails again it is parked anew.
    Retry {
        /// A projection waiting on the event.
        projection: String,
        /// The position of the parked event.
        position: i64,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
        /// Who decides (default: $USER, else the OS account); recorded.
        #[arg(long)]
        initiated_by: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    Man {
        /// Write `reproject.1` and `reproject-<command>.1` into this directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Projections to rebuild (default: all).
    pub projections: Vec<String>,
    /// Events per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: i64,
    /// Events per transaction of a run with set-based (`-- per batch`) projections: the
    /// fewer batches, the fewer times each row is written.
    #[arg(long, default_value_t = reproject::commands::DEFAULT_SET_BATCH_SIZE, value_parser = clap::value_parser!(i64).range(1..))]
    pub set_batch_size: i64,
    /// Stream lanes applied at once, each on its own connection (projections that declare
    /// `stream_key`; refused when one does not); each uses one server CPU.
    #[arg(long, short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Stop after the health checks; `reproject swap` swaps later.
    #[arg(long)]
    pub no_swap: bool,
    /// Once the new tables are complete and checked, while the run waits for its swap (with
    /// --no-swap, --swap-at or --swap-window), create schema NAME with a view per table, named
    /// like the live table, reading the new table: the next application version reads the new
    /// shape through `search_path = NAME, public`, before and after the swap.
    #[arg(long, value_name = "NAME")]
    pub preview_schema: Option<String>,
    /// Show the plan, counts and steps; write nothing, not even reproject's state schema.
    #[arg(long)]
    pub dry_run: bool,
    /// Why this rebuild is run (recorded in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who started it (default: $USER, else the OS account); recorded with the database role.
    #[arg(long)]
    pub initiated_by: Option<String>,
    /// Stop after this many events and leave the run unswapped (`reproject swap` continues).
    #[arg(long)]
    pub max_events: Option<i64>,
    /// Continue the newest unfinished run of these projections (after a crash, SIGKILL, Ctrl-C
    /// or a lost connection) from its last committed batch instead of starting a new run.
    #[arg(long)]
    pub resume: bool,
    /// Rebuild only the rows of these streams (the projection's `stream_key`); every other row
    /// is copied from the live table at the swap.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "ID,...",
          conflicts_with_all = ["streams_where", "from_position", "from_time", "resume"])]
    pub streams: Option<Vec<String>>,
    /// Rebuild only the rows of the streams of the events this SQL predicate selects (over
    /// the event table's columns, as the `[events]` expressions), resolved once at the start.
    #[arg(long, value_name = "SQL", conflicts_with_all = ["from_position", "from_time", "resume"])]
    pub streams_where: Option<String>,
    /// Keep the live rows written by events up to position N and replay only the later events
    /// (append-only projections with `position_column`).
    #[arg(long, value_name = "N", conflicts_with_all = ["from_time", "resume"])]
    pub from_position: Option<i64>,
    /// As --from-position, from the last event before this RFC 3339 time
    /// (e.g. `2026-11-01T00:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339, conflicts_with = "resume")]
    pub from_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

fn parse_rfc3339(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-11-01T00:00:00Z ({e})"))
}

impl RebuildArgs {
    /// The partial-rebuild flags, if any (clap keeps them mutually exclusive).
    pub fn partial(&self) -> Option<reproject::commands::PartialRequest> {
        use reproject::commands::PartialRequest;
        if let Some(s) = &self.streams {
            Some(PartialRequest::Streams(s.clone()))
        } else if let Some(w) = &self.streams_where {
            Some(PartialRequest::StreamsWhere(w.clone()))
        } else if let Some(n) = self.from_position {
            Some(PartialRequest::FromPosition(n))
        } else {
            self.from_time.map(PartialRequest::FromTime)
        }
    }
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    /// Projections of the waiting run (default: the only waiting run).
    pub projections: Vec<String>,
    /// Events per transaction while catching up.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: i64,
    /// Events per transaction while catching up set-based (`-- per batch`) projections.
    #[arg(long, default_value_t = reproject::commands::DEFAULT_SET_BATCH_SIZE, value_parser = clap::value_parser!(i64).range(1..))]
    pub set_batch_size: i64,
    /// Swap even when health checks fail (recorded).
    #[arg(long)]
    pub skip_checks: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Projections to keep live (default: all). Projections connected by dependencies must be
    /// named together.
    pub projections: Vec<String>,
    /// Catch up to the newest event as of the start, then exit.
    #[arg(long)]
    pub once: bool,
    /// Events per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: i64,
    /// First pause when idle; it doubles while idle, up to --max-poll-interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    pub poll_interval: std::time::Duration,
    /// Longest pause between two looks at the event table.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub max_poll_interval: std::time::Duration,
    /// Where projections without a live checkpoint (never run, never rebuilt) start: `start`
    /// (the live tables are empty), `head` (they are current now) or an event position.
    #[arg(long, value_name = "start|head|N")]
    pub from_position: Option<reproject::commands::StartAt>,
    /// On a handler error park the event and let only the projection and those connected to
    /// it wait for `reproject skip` or `retry` (`projection`), or stop the whole runner
    /// (`all`, exit 1; the event stays parked).
    #[arg(long, value_parser = ["projection", "all"], default_value = "projection")]
    pub stop_on_error: String,
    /// How long to keep reconnecting while the database is unreachable (a restart, a
    /// failover) before giving up with exit 1; also with --once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub reconnect_timeout: std::time::Duration,
    /// If another runner keeps a projection live, stand by until it stops and take over,
    /// instead of exiting 75.
    #[arg(long)]
    pub wait: bool,
    /// How often to re-check the gaps passed for events committed in them since (late
    /// events, reported and recorded; `reproject gaps --repair` repairs them).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub recheck_gaps_every: std::time::Duration,
    /// Serve Prometheus metrics on `http://HOST:PORT/metrics` and a health check on
    /// `/health` (200 while every projection runs, 503 otherwise). Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// How often to print an alive line on stderr (position, lag and events/s per group);
    /// `0s` turns it off.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub status_every: std::time::Duration,
    /// Print the SQL of a trigger that makes the event table notify runners of new events
    /// (install it yourself; the runner then wakes at once instead of polling), and exit.
    #[arg(long)]
    pub print_notify_sql: bool,
}

#[derive(Debug, Args, Clone)]
pub struct WindowArgs {
    /// Swap no earlier than this: `HH:MM`, `YYYY-MM-DD HH:MM` (local time) or RFC 3339.
    /// A rebuild waits for it, catching up; `swap` refuses before it (exit 75).
    #[arg(long, conflicts_with = "swap_window")]
    pub swap_at: Option<String>,
    /// Swap only inside this daily window, `HH:MM-HH:MM` local time (e.g. `02:00-04:00`).
    /// A rebuild waits for it, catching up; `swap` refuses outside it (exit 75).
    #[arg(long)]
    pub swap_window: Option<String>,
}

impl WindowArgs {
    pub fn window(&self) -> reproject::Result<Option<reproject::commands::SwapWindow>> {
        use reproject::commands::SwapWindow;
        match (&self.swap_at, &self.swap_window) {
            (Some(at), _) => SwapWindow::parse_at(at, chrono::Local::now()).map(Some),
            (None, Some(w)) => SwapWindow::parse_daily(w).map(Some),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Args, Clone, Copy)]
pub struct LockArgs {
    /// lock_timeout of the first attempt to lock the tables; it doubles per attempt up to 1s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub lock_timeout: std::time::Duration,
    /// Give up locking after this long in total (exit 75); nothing is swapped.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub lock_budget: std::time::Duration,
    /// Longest time the locks may be held (statement_timeout and idle_in_transaction_session_timeout of the swap transaction); past it the swap is rolled back (exit 75).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub lock_hold_max: std::time::Duration,
    /// With more events pending once the locks are held, release them, catch up and retry (up to 5 times, then exit 75).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_tail_events: i64,
    /// Opt-in: after locking has taken this long, cancel the running statements of sessions holding locks on the tables (pg_cancel_backend).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cancel_blockers_after: Option<std::time::Duration>,
    /// Opt-in: after locking has taken this long, terminate sessions holding locks on the tables (pg_terminate_backend).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub terminate_blockers_after: Option<std::time::Duration>,
    /// Before locking, wait at most this long for streaming standbys to replay the primary's WAL (so their readers are waited for, not cancelled), and as long after the commit to measure their replay; 0 turns it off.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub standby_wait: std::time::Duration,
}

impl LockArgs {
    pub fn policy(&self) -> reproject::commands::LockPolicy {
        reproject::commands::LockPolicy {
            first_timeout: self.lock_timeout,
            max_timeout: self.lock_timeout.max(std::time::Duration::from_secs(1)),
            budget: self.lock_budget,
            hold_max: self.lock_hold_max,
            max_tail_events: self.max_tail_events,
            cancel_blockers_after: self.cancel_blockers_after,
            terminate_blockers_after: self.terminate_blockers_after,
            standby_wait: self.standby_wait,
        }
    }
}
