//! The commands, step by step. Each command is a function over an [`Engine`]: it validates,
//! takes its locks, records what it does in the state schema, and reports progress through
//! the [`Reporter`]. Nothing here prints or exits.

mod cleanup;
mod inspect;
mod lanes;
mod live;
mod old_generation;
mod partial;
mod rebuild;
mod restore;
mod scope;

pub use cleanup::{cleanup, CleanupEntry, CleanupOptions, CleanupReport, KeptEntry};
pub use inspect::{
    history, plan, status, HistoryOptions, HistoryReport, LaneStatus, PlanReport, ProjectionStatus,
    RunnerStatus, StatusReport,
};
pub use live::{
    notify_sql, print_notify_sql, run, GroupOutcome, RunOptions, RunOutcome, StartAt, StopOnError,
    NOTIFY_CHANNEL,
};
pub use partial::{Partial, PartialRequest};
pub use rebuild::{rebuild, swap, RebuildOptions, RebuildOutcome, SwapOptions};
pub use restore::{cancel, rollback, RollbackOptions, RollbackReport};

use crate::config::Config;
use crate::db::Db;
use crate::error::Result;
use crate::progress::{Cancel, Reporter};
use crate::state::runs::RunTable;
use crate::validate::Resolved;
use sha2::{Digest, Sha256};

/// Everything a command needs.
pub struct Engine<'a> {
    /// The loaded config, with any Rust projections registered on it.
    pub config: &'a Config,
    /// The connection pool.
    pub db: Db,
    /// Receives progress; the engine itself never prints.
    pub reporter: &'a dyn Reporter,
    /// Set it (e.g. on Ctrl-C) to stop after the current batch.
    pub cancel: Cancel,
}

impl Engine<'_> {
    /// Validates the config against the database on a pooled connection.
    pub async fn validate(&self) -> Result<Resolved> {
        let client = self.db.get().await?;
        crate::validate::validate(&**client, self.config).await
    }
}

/// The tables of the given projections with their helper names.
pub fn run_tables(config: &Config, resolved: &Resolved, order: &[usize]) -> Vec<RunTable> {
    let mut tables = Vec::new();
    for &i in order {
        for live in &resolved.tables[i] {
            tables.push(RunTable {
                projection: config.projections[i].name.clone(),
                live: live.clone(),
                rebuild: crate::ident::rebuild_table(live),
                old: crate::ident::old_table(live),
            });
        }
    }
    tables
}

/// sha256 of a projection's handler file (of a Rust projection's version), so a later `swap`
/// can tell whether the handlers that would catch up are the ones that built the tables.
pub fn handler_digest(config: &Config, projection: usize) -> String {
    let p = &config.projections[projection];
    let digest = if p.rust {
        Sha256::digest(crate::projection::version_tag(config, projection).as_bytes())
    } else {
        Sha256::digest(p.handlers.source.as_bytes())
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a run records as the handlers that built a projection's tables: the SQL handler file,
/// or null for a Rust projection, so that a rollback never takes "no handlers" for handlers
/// that apply nothing (engine/old_generation.rs).
pub fn handler_source(config: &Config, projection: usize) -> serde_json::Value {
    let p = &config.projections[projection];
    if p.rust {
        serde_json::Value::Null
    } else {
        serde_json::Value::String(p.handlers.source.clone())
    }
}

/// Who started a command: `--initiated-by`, else the OS user.
pub fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
