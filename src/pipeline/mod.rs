//! The steps of a rebuild, one file each, in the order a rebuild takes them: `plan` (the
//! projection graph and its waves), `validate` and `write_targets` (the config against the
//! database), `preflight` (everything the swap will need, refused before anything is
//! written), `clone` (the `_rebuild` tables) and `shape` (a declared new shape applied to
//! them), `batches` (the one batch driver and the catch-up), `replay` (a run's
//! events into its rebuild tables, by its handlers or its external projectors), `lanes` (stream lanes),
//! `partial` (rebuilds of some streams or positions) and `rebuild_scope` (a run's full or
//! partial scope, whose hooks the rebuild calls for every run), `partitions` (partitioned tables cloned
//! and swapped partition by partition), `checks` (health checks), `swap` (the
//! locked section, the exchange of the generations and what it carries over),
//! `old_generation` (catching `x_old` up before a rollback), `cancel_requests` (a `cancel`
//! from another process, turned into the run's cancel token). The commands (`commands/`)
//! string them together; nothing here prints.

pub(crate) mod added;
pub(crate) mod batches;
pub(crate) mod cancel_requests;
pub mod checks;
pub mod clone;
pub(crate) mod lanes;
pub(crate) mod old_generation;
pub(crate) mod partial;
pub mod partitions;
pub mod plan;
pub mod preflight;
pub(crate) mod preset_columns;
pub(crate) mod preview;
pub(crate) mod rebuild_scope;
pub(crate) mod replay;
pub(crate) mod retire;
pub(crate) mod shape;
pub mod swap;
pub(crate) mod validate;
pub mod write_targets;

use crate::db::Db;
use crate::error::Result;
use crate::model::config::Config;
use crate::model::Resolved;
use crate::progress::{Cancel, Reporter};
use crate::state::runs::RunTable;

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
        crate::pipeline::validate::validate(&**client, self.config).await
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
                rebuild: crate::model::ident::rebuild_table(live),
                old: crate::model::ident::old_table(live),
                added: resolved.is_added(live),
            });
        }
    }
    tables
}
