//! # reproject
//!
//! Zero-downtime blue/green rebuilds of event-sourced projection tables on PostgreSQL.
//!
//! The public API is small: an [`Engine`] (a loaded [`Config`], a connection pool [`Db`], a
//! [`Reporter`] and a [`Cancel`] token) and the [`commands`] that run over it (`plan`,
//! `rebuild`, `swap`, `rollback`, `cleanup`, `status`, `history`, `run`), with their options and
//! outcomes; the [`RustProjection`] trait for projections written in Rust; and the [`Error`],
//! whose [`ErrorKind`] maps to the binary's exit codes. The `reproject` binary is a thin layer
//! over exactly this.
//!
//! Inside, the folders follow a rebuild (docs/internals/design.md has the whole tree):
//! `model/` (the config, handler files, identifiers, the data every layer shares) →
//! `db/` (connections, transactions, the catalog) → `read/` (events in order, the read
//! bound) → `state/` (reproject's own schema) → `apply/` (SQL handlers, Rust and external
//! projections, the write guard) → `pipeline/` (plan, preflight, clone, batches, lanes,
//! checks, swap with its exchange) → `commands/`. Imports point that way only.
//!
//! ```no_run
//! use reproject::commands::{self, RebuildOptions};
//! use reproject::progress::{Cancel, Silent};
//! use reproject::{Batch, BoxFuture, Config, Db, Engine, RustProjection};
//!
//! /// The code of a projection declared in reproject.toml without `handlers`.
//! struct StreamCounts;
//!
//! impl RustProjection for StreamCounts {
//!     fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
//!         Box::pin(async move {
//!             // The `_rebuild` clone during a rebuild, the live table under `run`.
//!             let table = batch.table("stream_counts")?.quoted();
//!             let streams: Vec<Option<String>> =
//!                 batch.events.iter().map(|e| e.stream.clone()).collect();
//!             // Inside the engine's transaction, which also advances the checkpoint:
//!             // write through `batch.client` only, and never commit.
//!             batch
//!                 .client
//!                 .execute(
//!                     &format!(
//!                         "INSERT INTO {table} AS c (stream, n) \
//!                          SELECT s, count(*) FROM unnest($1::text[]) s GROUP BY s \
//!                          ON CONFLICT (stream) DO UPDATE SET n = c.n + EXCLUDED.n"
//!                     ),
//!                     &[&streams],
//!                 )
//!                 .await?;
//!             Ok(())
//!         })
//!     }
//! }
//!
//! # async fn demo() -> reproject::Result<()> {
//! let mut config = Config::load("reproject.toml".as_ref())?;
//! config.register("stream_counts", StreamCounts)?;
//! let engine = Engine {
//!     config: &config,
//!     db: Db::new("postgres://app@localhost/app")?,
//!     reporter: &Silent,
//!     cancel: Cancel::new(),
//! };
//! // Clone, replay in batches with checkpoints, catch up, check, swap.
//! let outcome = commands::rebuild(&engine, &RebuildOptions::default()).await?;
//! println!("run {:?}: {}", outcome.run_id, outcome.status);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/library.rs` and `examples/rust_projector.rs` are complete programs.

#![warn(missing_docs)]

pub(crate) mod apply;
pub mod commands;
pub(crate) mod db;
pub mod error;
pub(crate) mod model;
pub(crate) mod pipeline;
pub mod progress;
pub(crate) mod read;
pub(crate) mod state;
#[cfg(test)]
mod test_db;

pub use commands::Engine;
pub use db::Db;
pub use error::{Error, ErrorKind, Reason, Result};
pub use model::config::Config;
pub use model::ident::TableName;
pub use model::projection::{Batch, BoxFuture, RustProjection};
pub use model::{Event, RawJsonb};
pub use progress::{Cancel, Reporter};
