//! External projectors: a projection whose `command` (the user's own replay, in any language)
//! applies a range of events to the rebuild tables. reproject clones, runs the command for
//! (FROM, TO] with the tables and the connection in its environment, records TO as the
//! checkpoint when it exits 0, catches up by running it again for the events that arrived,
//! checks and swaps. The contract is in docs/guide/external-projectors.md; this module keeps it.
//!
//! Why no final tail under the swap lock: the tail is applied while the live tables are locked
//! ACCESS EXCLUSIVE, and starting a process (an interpreter, a connection) there would keep
//! the application's readers waiting for seconds. So the swap position of an external
//! projection is the last range its command applied. Events after it are left to the
//! application's live projector through a `handover` (its checkpoint is set to the swap
//! position in the swap transaction); without a hand-over nothing could apply them, so the
//! swap then happens only when no event is pending beyond that range (see [`External::tail_limit`]).

use crate::error::{Error, Result};
use crate::model::config::{Config, ExternalCommand};
use crate::progress::{Cancel, Output, Reporter, Step};
use crate::read::source::{Bound, Cursor, EventSource};
use crate::state::runs::{self, InFlight, RunOptions, RunTable};
use serde_json::json;
use std::collections::VecDeque;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::Client;

/// The options patch that marks a range in flight, or clears the mark (recorded as null).
fn in_flight(flight: Option<InFlight>) -> RunOptions {
    RunOptions {
        external_in_flight: Some(flight),
        ..RunOptions::default()
    }
}

/// `REPROJECT_FROM_POSITION` before any event was applied: every position is after it.
pub const START: i64 = i64::MIN;

/// How long a command has to exit after SIGTERM (cancel, timeout) before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// How many of the command's last stderr lines an error quotes.
const STDERR_KEPT: usize = 10;

/// Refuses selections an external run cannot keep consistent: a run rebuilds either only
/// external projections or only handler projections, so that every projection of the run is
/// swapped at the same position (handler projections apply a final tail under the lock, which
/// a command cannot). Returns whether the run is external.
pub fn check_selection(config: &Config, order: &[usize], max_events: Option<i64>) -> Result<bool> {
    let (external, handlers): (Vec<usize>, Vec<usize>) = order
        .iter()
        .partition(|&&i| config.projections[i].command().is_some());
    let names = |v: &[usize]| {
        v.iter()
            .map(|&i| format!("`{}`", config.projections[i].name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if external.is_empty() {
        return Ok(false);
    }
    if !handlers.is_empty() {
        return Err(Error::config(format!(
            "one run cannot rebuild external projections ({}) together with handler projections ({}): they could not be swapped at the same position",
            names(&external),
            names(&handlers)
        ))
        .with_hint("rebuild them in separate runs (`reproject rebuild NAME...`); if one depends on the other, rebuild the one it reads first"));
    }
    if max_events.is_some() {
        return Err(Error::config(format!(
            "--max-events cannot stop an external projector ({}) part-way through a range",
            names(&external)
        ))
        .with_hint("use --no-swap to rebuild without swapping, then `reproject swap`"));
    }
    Ok(true)
}

/// Refuses to continue (`--resume`, `swap`) a run whose command did not finish a range: what
/// it wrote of that range is unknown, so only a new run gives a correct table.
pub fn check_continuable(run: &runs::Run) -> Result<()> {
    let Some(Some(flight)) = &run.options.external_in_flight else {
        return Ok(());
    };
    let range = Range {
        from: flight.from,
        to: flight.to,
    };
    Err(Error::config(format!(
        "run {}: the external projector of `{}` stopped while applying {}; its rebuild tables hold an unknown part of that range",
        run.id,
        flight.projection,
        range.describe()
    ))
    .with_hint("start over with `reproject rebuild` (a new run replaces this one's tables)"))
}

/// The external projectors of one run, in dependency order.
pub struct External<'a> {
    config: &'a Config,
    order: Vec<usize>,
    tables: &'a [RunTable],
    run_id: i64,
    /// The run's projections (all external): their checkpoints move together.
    names: Vec<String>,
    libpq: Vec<(&'static str, String)>,
    events_table: String,
}

impl<'a> External<'a> {
    /// `None` unless the run's projections are external (see [`check_selection`]).
    pub fn for_run(
        config: &'a Config,
        order: &[usize],
        db: &crate::db::Db,
        source: &EventSource,
        tables: &'a [RunTable],
        run_id: i64,
    ) -> Option<External<'a>> {
        let order: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| config.projections[i].command().is_some())
            .collect();
        if order.is_empty() {
            return None;
        }
        Some(External {
            config,
            names: order
                .iter()
                .map(|&i| config.projections[i].name.clone())
                .collect(),
            order,
            tables,
            run_id,
            libpq: db.libpq_env(),
            events_table: source.table.quoted(),
        })
    }

    /// How many events may be pending beyond the last applied range at the swap: any, when
    /// every projection hands over to a live projector (which applies them); else none, so
    /// that no event is left out of a table nobody keeps up to date.
    pub fn tail_limit(&self) -> i64 {
        if self
            .order
            .iter()
            .all(|&i| self.config.projections[i].handover.is_some())
        {
            i64::MAX
        } else {
            0
        }
    }

    /// Runs every command for the events after `from` up to `upto` and records the range as
    /// applied. Returns the number of events in the range.
    pub async fn apply(
        &self,
        conn: &Client,
        source: &EventSource,
        from: Cursor,
        upto: Bound,
        cancel: Option<&Cancel>,
        reporter: &dyn Reporter,
    ) -> Result<i64> {
        let Bound::UpTo(to) = upto else {
            // Refused when the config is loaded; kept as an error rather than a panic.
            return Err(Error::config(
                "external projectors need a position bound (gap-aware or serialized ordering)",
            ));
        };
        if upto.reached_by(&from) {
            return Ok(0);
        }
        if cancel.is_some_and(|c| c.is_cancelled()) {
            // Between ranges: nothing is in flight, so the run can be resumed.
            return Err(Error::interrupted(format!(
                "run {}: cancelled; checkpoint at {}",
                self.run_id,
                from.describe()
            ))
            .with_hint("`reproject rebuild --resume` continues it"));
        }
        let events = source.count(conn, &from, &upto).await?.events;
        let from_position = from.position.unwrap_or(START);
        for &i in &self.order {
            let p = &self.config.projections[i];
            let command = p.command().expect("external projections only");
            runs::merge_options(
                conn,
                self.run_id,
                &in_flight(Some(InFlight {
                    projection: p.name.clone(),
                    from: from_position,
                    to,
                })),
            )
            .await?;
            reporter.step(&Step::ExternalRange {
                projection: p.name.clone(),
                command: command.display().to_string(),
                events,
                from: from.into(),
                to,
            });
            let env = self.env(&p.name, from_position, to, events);
            run_command(
                self.run_id,
                &p.name,
                command,
                &self.config.path,
                &env,
                &Range {
                    from: from_position,
                    to,
                },
                cancel,
                reporter,
            )
            .await?;
        }
        // The range and the end of the flight in one transaction: a crash in between leaves
        // the marker, never a checkpoint past what was applied.
        crate::db::tx::run(
            conn,
            "cannot begin recording the range",
            Some(crate::db::tx::Fence::projections(&self.names)),
            || async {
                runs::advance_cursor(
                    conn,
                    self.run_id,
                    &self.names,
                    &from,
                    &Cursor::at(Some(to)),
                    events,
                )
                .await?;
                runs::merge_options(conn, self.run_id, &in_flight(None)).await
            },
        )
        .await?;
        reporter.replay_progress(events.max(0) as u64);
        Ok(events)
    }

    /// The contract's environment for one run of `projection`'s command (docs/guide/
    /// external-projectors.md); the libpq variables hold the password and go to the child only.
    fn env(&self, projection: &str, from: i64, to: i64, events: i64) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .libpq
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        env.push((
            "PGAPPNAME".into(),
            format!("reproject external {projection}"),
        ));
        env.push(("REPROJECT_RUN_ID".into(), self.run_id.to_string()));
        env.push(("REPROJECT_PROJECTION".into(), projection.to_string()));
        env.push(("REPROJECT_FROM_POSITION".into(), from.to_string()));
        env.push(("REPROJECT_TO_POSITION".into(), to.to_string()));
        env.push(("REPROJECT_EVENT_COUNT".into(), events.to_string()));
        env.push(("REPROJECT_EVENTS_TABLE".into(), self.events_table.clone()));
        let mut map = serde_json::Map::new();
        for (n, t) in self
            .tables
            .iter()
            .filter(|t| t.projection == projection)
            .enumerate()
        {
            env.push((
                format!("REPROJECT_TABLE_{}", var_suffix(&t.live.name)),
                t.rebuild.quoted(),
            ));
            env.push((format!("REPROJECT_LIVE_TABLE_{n}"), t.live.quoted()));
            env.push((format!("REPROJECT_REBUILD_TABLE_{n}"), t.rebuild.quoted()));
            map.insert(
                format!("{}.{}", t.live.schema, t.live.name),
                json!({ "schema": t.rebuild.schema, "name": t.rebuild.name, "sql": t.rebuild.quoted() }),
            );
        }
        env.push((
            "REPROJECT_TABLES".into(),
            serde_json::Value::Object(map).to_string(),
        ));
        env
    }
}

/// The swap of an external run without a hand-over found events after the last applied range
/// each time it took the locks: swapping would leave them out of a table nobody updates.
pub fn tail_refused(run_id: i64, pending: i64, attempts: u32) -> Error {
    Error::busy(format!(
        "run {run_id}: {pending} event(s) had arrived after the external projector's last range each time the locks were taken ({attempts} attempts); nothing was swapped"
    ))
    .with_hint("no command runs under the swap lock, and without a `handover` no live projector applies the events after the swap position: add the `handover` of your live projector, or run `reproject swap` when events arrive more slowly")
}

/// The name part of `REPROJECT_TABLE_<NAME>`: the live table's name upper-cased, every
/// character other than a letter or digit as `_`.
pub fn var_suffix(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

struct Range {
    from: i64,
    to: i64,
}

impl Range {
    fn describe(&self) -> String {
        if self.from == START {
            format!("events from the start up to position {}", self.to)
        } else {
            format!("events after position {} up to {}", self.from, self.to)
        }
    }
}

/// How a command ended when it did not exit 0.
enum Stop {
    Cancelled,
    TimedOut(Duration),
}

/// Starts the command, passes its output on line by line, and waits for it; kills it (and
/// everything it started) on cancel or timeout.
#[allow(clippy::too_many_arguments)]
async fn run_command(
    run_id: i64,
    projection: &str,
    command: &ExternalCommand,
    config_path: &std::path::Path,
    env: &[(String, String)],
    range: &Range,
    cancel: Option<&Cancel>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let password = env
        .iter()
        .find(|(k, _)| k == "PGPASSWORD")
        .map(|(_, v)| v.clone())
        .filter(|p| !p.is_empty());
    let redact = |line: &str| match &password {
        Some(p) => line.replace(p.as_str(), "********"),
        None => line.to_string(),
    };
    let failed = |what: String| {
        Error::runtime(format!(
            "run {run_id}: projection `{projection}`: the external projector `{}` {what} while applying {}; nothing was swapped",
            command.display(),
            range.describe()
        ))
    };
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.argv[1..])
        .current_dir(&command.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The connection is ours alone: the caller's own PG* settings (a PGSERVICE, another
    // PGDATABASE) must not point the command at another database.
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str() {
            if k.starts_with("PG") || k == "DATABASE_URL" {
                cmd.env_remove(k);
            }
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // Its own process group: a cancel or timeout stops the command and whatever it started
    // (psql, a pipeline), and a Ctrl-C in the terminal reaches reproject, which ends the
    // command itself and records the run as cancelled.
    #[cfg(unix)]
    cmd.process_group(0);
    // If reproject itself dies (kill -9, a second Ctrl-C exits at once), the command must not
    // go on writing into rebuild tables that a later run may recreate under the same name.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        failed("could not be started".into())
            .caused_by(format!("{}: {e}", command.program.display()))
            .with_hint(format!(
                "`command` is run without a shell, from {}",
                command.dir.display()
            ))
    })?;
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut last_stderr: VecDeque<String> = VecDeque::new();
    let started = Instant::now();
    let mut stop = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let status = loop {
        tokio::select! {
            line = out.next_line(), if out_open => match line {
                Ok(Some(l)) => reporter.step(&Step::ExternalOutput {
                    projection: projection.to_string(),
                    output: Output::Stdout,
                    line: redact(&l),
                }),
                _ => out_open = false,
            },
            line = err.next_line(), if err_open => match line {
                Ok(Some(l)) => {
                    let l = redact(&l);
                    reporter.step(&Step::ExternalOutput {
                        projection: projection.to_string(),
                        output: Output::Stderr,
                        line: l.clone(),
                    });
                    last_stderr.push_back(l);
                    if last_stderr.len() > STDERR_KEPT {
                        last_stderr.pop_front();
                    }
                }
                _ => err_open = false,
            },
            status = child.wait(), if !out_open && !err_open => {
                break status.map_err(|e| {
                    Error::runtime("cannot wait for the external projector").caused_by_error(e)
                })?;
            }
            // Ctrl-C or a `reproject cancel` request (pipeline/cancel_requests.rs).
            _ = cancelled(cancel), if stop.is_none() => {
                stop = Some(Stop::Cancelled);
                terminate(pid, &mut child).await;
            }
            _ = tick.tick(), if stop.is_none() => {
                if let Some(limit) = command.timeout {
                    if started.elapsed() >= limit {
                        stop = Some(Stop::TimedOut(limit));
                    }
                }
                if stop.is_some() {
                    terminate(pid, &mut child).await;
                }
            }
        }
    };
    let tail = || {
        let mut causes: Vec<String> = Vec::new();
        if !last_stderr.is_empty() {
            causes.push(format!(
                "its last output on stderr:\n  {}",
                last_stderr.iter().cloned().collect::<Vec<_>>().join("\n  ")
            ));
        }
        causes
    };
    let with_causes = |mut e: Error| {
        for c in tail() {
            e = e.caused_by(c);
        }
        e
    };
    match stop {
        Some(Stop::Cancelled) => {
            return Err(Error::interrupted(format!(
                "run {run_id}: cancelled while the external projector `{}` of `{projection}` was applying {}; it was stopped",
                command.display(),
                range.describe()
            ))
            .with_hint("its rebuild tables hold part of that range: start over with `reproject rebuild`"))
        }
        Some(Stop::TimedOut(limit)) => {
            return Err(with_causes(failed(format!(
                "did not finish within command_timeout = {} s and was stopped",
                limit.as_secs()
            )))
            .with_hint(format!(
                "{}:{}: raise `command_timeout`, or make the projector faster; then run `reproject rebuild` again",
                config_path.display(), command.line
            )));
        }
        None => {}
    }
    if status.success() {
        return Ok(());
    }
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                format!("was killed by signal {}", status.signal().unwrap_or(0))
            }
            #[cfg(not(unix))]
            {
                "was killed".to_string()
            }
        }
    };
    Err(with_causes(failed(how)).with_hint(
        "the live tables are untouched; fix the projector and run `reproject rebuild` again (a failed range cannot be resumed)",
    ))
}

/// SIGTERM to the command's process group, then SIGKILL after [`TERM_GRACE`].
async fn terminate(pid: Option<u32>, child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
        if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_ok() {
            return;
        }
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
    let _ = pid;
    let _ = child.start_kill();
}

/// Completes once `cancel` is set; never without one.
async fn cancelled(cancel: Option<&Cancel>) {
    match cancel {
        Some(cancel) => cancel.cancelled().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_variables_are_upper_case_with_underscores() {
        assert_eq!(var_suffix("tally"), "TALLY");
        assert_eq!(var_suffix("Order Lines-2"), "ORDER_LINES_2");
    }

    #[test]
    fn ranges_name_the_start_and_both_ends() {
        assert_eq!(
            Range { from: START, to: 9 }.describe(),
            "events from the start up to position 9"
        );
        assert_eq!(
            Range { from: 3, to: 9 }.describe(),
            "events after position 3 up to 9"
        );
    }
}
