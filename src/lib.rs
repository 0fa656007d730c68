//! # reproject
//!
//! Zero-downtime blue/green rebuilds of event-sourced projection tables on PostgreSQL.
//!
//! The path of a rebuild through the modules: [`config`] is read and [`validate`]d against the
//! database; [`plan`] orders the projections; [`shadow`] clones each table to `x_rebuild`;
//! [`source`] reads events in global order and [`replay`] applies them with the projections'
//! [`handlers`], checkpointing in [`state`]; [`checks`] gate the swap; [`swap`] renames the
//! generations. [`engine`] runs these steps for each command and reports through
//! [`progress::Reporter`]. A projection can also be Rust code instead of SQL handlers
//! ([`projection::RustProjection`]). [`model`] holds what these layers share (events, the
//! resolved names, the Rust projection trait) and imports none of them.
//!
//! # Using the library
//!
//! The `reproject` binary is a thin layer over this crate: every command is a function of
//! [`engine`] over an [`engine::Engine`] (the loaded config, a connection pool, a reporter and
//! a cancel flag). Failures are [`Error`]s whose [`ErrorKind`] maps to the binary's exit codes.
//!
//! ```no_run
//! use reproject::config::Config;
//! use reproject::db::Db;
//! use reproject::engine::{self, Engine, RebuildOptions};
//! use reproject::progress::{Cancel, Silent};
//! use reproject::projection::{Batch, BoxFuture, RustProjection};
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
//! let outcome = engine::rebuild(&engine, &RebuildOptions::default()).await?;
//! println!("run {:?}: {}", outcome.run_id, outcome.status);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/library.rs` and `examples/rust_projector.rs` are complete programs.

#![warn(missing_docs)]

pub mod carry;
pub mod catalog;
pub mod checks;
pub mod config;
pub mod db;
pub mod engine;
pub mod error;
pub mod external;
pub mod handlers;
pub mod handover;
pub mod ident;
pub mod laps;
pub mod model;
pub mod ordering;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod projection;
pub mod replay;
pub mod retire;
pub mod shadow;
pub mod shape;
pub mod source;
pub mod standby;
pub mod state;
pub mod swap;
pub mod validate;
pub mod window;
pub mod write_guard;
pub mod write_targets;

pub use error::{Error, ErrorKind, Reason, Result};
