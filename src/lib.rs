//! # reproject
//!
//! Zero-downtime blue/green rebuilds of event-sourced projection tables on PostgreSQL.
//!
//! The path of a rebuild through the modules: [`config`] is read and [`validate`]d against the
//! database; [`plan`] orders the projections; [`shadow`] clones each table to `x_rebuild`;
//! [`source`] reads events in global order and [`replay`] applies them with the projections'
//! [`handlers`], checkpointing in [`state`]; [`checks`] gate the swap; [`swap`] renames the
//! generations. [`engine`] runs these steps for each command and reports through
//! [`progress::Reporter`].

pub mod carry;
pub mod catalog;
pub mod checks;
pub mod config;
pub mod db;
pub mod engine;
pub mod error;
pub mod handlers;
pub mod handover;
pub mod ident;
pub mod ordering;
pub mod plan;
pub mod progress;
pub mod projection;
pub mod replay;
pub mod shadow;
pub mod source;
pub mod state;
pub mod swap;
pub mod validate;
pub mod window;

pub use error::{Error, ErrorKind, Result};
