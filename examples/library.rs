//! Using reproject as a library: rebuild and swap projections from your own Rust program,
//! with your own progress reporting.
//!
//! ```sh
//! cargo run --example library -- path/to/reproject.toml "postgres://user@host/db"
//! ```
//!
//! The engine does the work (plan, clone, replay in batches with checkpoints, checks, swap);
//! your program only supplies the config, the connection and a [`Reporter`].

use reproject::commands::{self, Engine, RebuildOptions};
use reproject::progress::{Cancel, Reporter, Step, Warning};
use reproject::Config;
use reproject::Db;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reports steps on stderr and remembers how many events were applied.
#[derive(Default)]
struct Log {
    applied: AtomicU64,
}

impl Reporter for Log {
    fn step(&self, step: &Step) {
        // Steps and warnings are typed: match the ones the program acts on, print the rest
        // (their `Display` is the line the `reproject` binary prints).
        match step {
            Step::Cloning { run_id, .. } => eprintln!("run {run_id} started: {step}"),
            _ => eprintln!("step: {step}"),
        }
    }
    fn warn(&self, warning: &Warning) {
        match warning {
            Warning::LocksTaken { attempts, took, .. } => {
                eprintln!("locks taken after {attempts} attempts in {took:?}")
            }
            _ => eprintln!("warning: {warning}"),
        }
    }
    fn replay_progress(&self, done: u64) {
        self.applied.store(done, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(config), Some(url)) = (args.next(), args.next()) else {
        eprintln!("usage: library CONFIG DATABASE_URL");
        std::process::exit(2);
    };
    let result = run(PathBuf::from(config), &url).await;
    if let Err(err) = result {
        eprintln!("{err}");
        std::process::exit(err.kind.exit_code());
    }
}

async fn run(config: PathBuf, url: &str) -> reproject::Result<()> {
    let config = Config::load(&config)?;
    let log = Log::default();
    let engine = Engine {
        config: &config,
        db: Db::new(url)?,
        reporter: &log,
        cancel: Cancel::new(),
    };
    // Read-only first: the plan, as `reproject plan --json` would print it.
    let plan = commands::plan(&engine, &[]).await?;
    println!("order: {}", plan.order.join(" -> "));
    println!("events to replay: {}", plan.events_to_replay);

    // Then the rebuild and swap, as `reproject rebuild --yes` would do it.
    let outcome = commands::rebuild(
        &engine,
        &RebuildOptions {
            reason: Some("rebuilt by the library example".into()),
            initiated_by: "library-example".into(),
            ..RebuildOptions::default()
        },
    )
    .await?;
    println!(
        "run {}: {} ({} events applied, last progress report {})",
        outcome.run_id.unwrap_or_default(),
        outcome.status,
        outcome.events_applied,
        log.applied.load(Ordering::Relaxed)
    );
    Ok(())
}
