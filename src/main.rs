//! The `reproject` binary: parse arguments, set up logging and signals, run one command of the
//! library, print its result, and map errors to the documented exit codes.

mod cli;

use clap::Parser;
use cli::args::{Cli, Command};
use cli::{ask, must_ask, print, prompt};
use reproject::commands::{
    self, CleanupOptions, Engine, RebuildOptions, RunOptions, StopOnError, SwapOptions,
};
use reproject::error::{Error, Result};
use reproject::progress::Cancel;
use reproject::Config;
use reproject::Db;

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`reproject history | head`) instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A script that asked for JSON gets its usage error as JSON too (exit 2, as clap).
            let wants_json = std::env::args().skip(1).any(|a| a == "--json");
            if wants_json && e.use_stderr() {
                let text = e.render().to_string();
                let message = text.lines().next().unwrap_or("invalid arguments");
                let message = message.strip_prefix("error: ").unwrap_or(message);
                print::error_json(&Error::config(message.to_string()));
            }
            e.exit()
        }
    };
    cli::log::init(cli.verbose, cli.log_format);
    // Generated from the CLI definition; needs no config, database or runtime.
    if let Some(code) = cli::docs::run(&cli.command, cli.json) {
        std::process::exit(code);
    }
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    let code = runtime.block_on(async {
        match run(cli).await {
            Ok(()) => 0,
            Err(mut err) => {
                // Whatever step lost the connection, the user needs to know what to run next.
                if err.is_connection_loss() && err.hint.is_none() {
                    err = err.with_hint(
                        "the connection to PostgreSQL was lost, and nothing after the last commit was kept: `reproject status` shows where each run stands; `reproject rebuild --resume` continues an unfinished rebuild, `reproject swap` a rebuild awaiting its swap",
                    );
                }
                cli::log::error(&err);
                if json {
                    print::error_json(&err);
                }
                err.kind.exit_code()
            }
        }
    });
    std::process::exit(code);
}

/// First Ctrl-C / SIGTERM: stop after the current batch. Second: stop at once (the open
/// transaction dies with the connection, so nothing half-done is committed).
fn watch_signals(cancel: Cancel) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                cli::log::notice(
                    "interrupted: stopping after the current batch (again to stop at once)",
                );
                cancel.cancel();
            } else {
                cli::log::notice("interrupted again: stopping now; the open batch is rolled back");
                std::process::exit(130);
            }
        }
    });
}

async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    // Neither goes through the config loading below: `init` writes the config, and `check`
    // reports a config that does not load as its verdict (in JSON too).
    match &cli.command {
        Command::Init {
            table,
            output,
            force,
        } => {
            let db_url = cli.database_url.as_deref();
            return cli::init::run(db_url, table.as_deref(), output.as_deref(), *force, json).await;
        }
        Command::Check { projections } => {
            let db_url = cli.database_url.as_deref();
            return cli::check::run(&cli.config, db_url, projections, json).await;
        }
        _ => {}
    }
    let config = Config::load(&cli.config)?;
    // The URL wins; PG* variables and ~/.pgpass fill in what it leaves out, as for psql.
    let db = Db::from_url_or_env(cli.database_url.as_deref())?;
    let reporter = cli::reporter::TermReporter::new(cli.quiet);
    let cancel = Cancel::new();
    watch_signals(cancel.clone());
    let engine = Engine {
        config: &config,
        db,
        reporter: &reporter,
        cancel,
    };

    match cli.command {
        Command::Plan {
            projections,
            preview_schema,
        } => {
            let report =
                commands::plan_with_preview(&engine, &projections, preview_schema.as_deref())
                    .await?;
            if json {
                print::json(&report)
            } else {
                print::plan(&report, false)
            }
        }
        Command::Rebuild(args) => {
            let partial = args.partial();
            // Before the question: the answer would not matter.
            if args.preview_schema.is_some()
                && !args.no_swap
                && args.window.swap_at.is_none()
                && args.window.swap_window.is_none()
            {
                return Err(commands::preview_mode_error());
            }
            if !args.dry_run && !args.no_swap && must_ask("rebuild and swap", args.yes)? {
                let question =
                    prompt::rebuild(&engine, &args.projections, args.resume, partial.is_some())
                        .await?;
                ask(&question)?;
            }
            let opts = rebuild_options(args, partial)?;
            let outcome = commands::rebuild(&engine, &opts).await?;
            match (&outcome.dry_run, json) {
                (Some(report), true) => print::json(report),
                (Some(report), false) => print::plan(report, true),
                (None, true) => print::json(&outcome),
                (None, false) => print::outcome(&outcome),
            }
        }
        Command::Swap(args) => {
            if must_ask("swap", args.yes)? {
                ask(&prompt::swap(&engine, &args.projections).await)?;
            }
            let opts = SwapOptions {
                projections: args.projections,
                batch_size: args.batch_size,
                set_batch_size: args.set_batch_size,
                skip_checks: args.skip_checks,
                window: args.window.window()?,
                lock: args.lock.policy(),
            };
            let outcome = commands::swap(&engine, &opts).await?;
            show(json, &outcome, print::outcome);
        }
        Command::Run(args) if args.print_notify_sql => {
            let sql = commands::print_notify_sql(&engine).await?;
            if json {
                print::json(&serde_json::json!({ "sql": sql }))
            } else {
                print!("{sql}");
            }
        }
        Command::Run(args) => {
            let opts = run_options(args);
            let outcome = commands::run(&engine, &opts).await?;
            show(json, &outcome, print::run);
        }
        Command::Rollback {
            projections,
            yes,
            batch_size,
            with_current_handlers,
            all_projections,
            lock,
        } => {
            if must_ask("rollback", yes)? {
                ask(&prompt::rollback(&engine, &projections).await)?;
            }
            let opts = commands::RollbackOptions {
                lock: lock.policy(),
                batch_size,
                with_current_handlers,
                all_projections,
            };
            let report = commands::rollback(&engine, &projections, opts).await?;
            show(json, &report, print::rollback);
        }
        Command::Cleanup {
            projections,
            older_than,
            yes,
            all_projections,
        } => {
            // The command that drops exactly what this one listed.
            let mut again = vec!["reproject cleanup".to_string()];
            again.extend(projections.iter().cloned());
            if all_projections {
                again.push("--all-projections".into());
            }
            if let Some(d) = older_than {
                again.push(format!("--older-than {}", humantime::format_duration(d)));
            }
            again.push("--yes".into());
            let report = commands::cleanup(
                &engine,
                &CleanupOptions {
                    older_than,
                    drop: yes,
                    projections,
                    all_projections,
                },
            )
            .await?;
            if json {
                print::json(&report)
            } else {
                print::cleanup(&report, &again.join(" "))
            }
        }
        Command::Cancel { run, initiated_by } => {
            let by = initiated_by.unwrap_or_else(commands::os_user);
            let id = commands::cancel(&engine, run, &by).await?;
            if json {
                print::json(&serde_json::json!({ "run": id, "cancel_requested": true }))
            } else {
                println!("run {id}: cancellation requested; it stops after its current batch");
            }
        }
        Command::Status => {
            let report = commands::status(&engine).await?;
            show(json, &report, print::status);
        }
        Command::Gaps { repair } => {
            let report = commands::gaps(&engine, &commands::GapsOptions { repair }).await?;
            show(json, &report, print::gaps);
            if let Some(err) = commands::unrepaired_error(&report) {
                return Err(err);
            }
        }
        Command::Parked { all } => {
            let report = commands::parked(&engine, all).await?;
            show(json, &report, print::parked);
        }
        Command::Skip {
            projection,
            position,
            reason,
            initiated_by,
        } => {
            let decision = commands::Decision::Skip;
            decide(
                &engine,
                json,
                &projection,
                position,
                decision,
                initiated_by,
                Some(&reason),
            )
            .await?
        }
        Command::Retry {
            projection,
            position,
            reason,
            initiated_by,
        } => {
            let decision = commands::Decision::Retry;
            decide(
                &engine,
                json,
                &projection,
                position,
                decision,
                initiated_by,
                reason.as_deref(),
            )
            .await?
        }
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled in main before anything connects")
        }
        Command::Init { .. } | Command::Check { .. } => {
            unreachable!("handled above, before the config is loaded")
        }
        Command::History {
            projections,
            limit,
            all_projections,
        } => {
            let report = commands::history(
                &engine,
                &commands::HistoryOptions {
                    limit,
                    projections,
                    all_projections,
                },
            )
            .await?;
            if json {
                print::json(&print::history_json(&report))
            } else {
                print::history(&report)
            }
        }
    }
    Ok(())
}

/// Prints `report` as JSON, or as text with `text`.
fn show<T: serde::Serialize>(json: bool, report: &T, text: impl FnOnce(&T)) {
    if json {
        print::json(report)
    } else {
        text(report)
    }
}

/// `skip` and `retry`: records the decision on a parked event and prints the event.
async fn decide(
    engine: &Engine<'_>,
    json: bool,
    projection: &str,
    position: i64,
    decision: commands::Decision,
    initiated_by: Option<String>,
    reason: Option<&str>,
) -> Result<()> {
    let by = initiated_by.unwrap_or_else(commands::os_user);
    let event = commands::decide(engine, projection, position, decision, &by, reason).await?;
    show(json, &event, print::decided);
    Ok(())
}

/// The library's options of `rebuild`, from its arguments.
fn rebuild_options(
    args: cli::args::RebuildArgs,
    partial: Option<reproject::commands::PartialRequest>,
) -> Result<RebuildOptions> {
    let opts = RebuildOptions {
        partial,
        projections: args.projections,
        batch_size: args.batch_size,
        set_batch_size: args.set_batch_size,
        jobs: usize::from(args.jobs),
        no_swap: args.no_swap,
        dry_run: args.dry_run,
        reason: args.reason,
        initiated_by: args.initiated_by.unwrap_or_else(commands::os_user),
        max_events: args.max_events,
        resume: args.resume,
        window: args.window.window()?,
        lock: args.lock.policy(),
        preview_schema: args.preview_schema,
    };
    if let Some(n) = opts.max_events {
        if n < 1 {
            return Err(Error::config("--max-events must be at least 1"));
        }
    }
    if let Some(n) = opts.max_events {
        if n < 1 {
            return Err(Error::config("--max-events must be at least 1"));
        }
    }
    Ok(opts)
}

/// The library's options of `run`, from its arguments.
fn run_options(args: cli::args::RunArgs) -> RunOptions {
    RunOptions {
        projections: args.projections,
        once: args.once,
        batch_size: args.batch_size,
        poll_interval: args.poll_interval,
        max_poll_interval: args.max_poll_interval.max(args.poll_interval),
        from: args.from_position,
        stop_on_error: if args.stop_on_error == "all" {
            StopOnError::All
        } else {
            StopOnError::Projection
        },
        reconnect_timeout: args.reconnect_timeout,
        wait: args.wait,
        recheck_gaps_every: args.recheck_gaps_every,
        metrics_addr: args.metrics_addr,
        status_every: args.status_every,
    }
}
