//! Applying events to a generation of tables: `sql` (the projections' SQL handlers, per event
//! or set-based, each batch and its checkpoint in the caller's transaction), `rust` (Rust
//! projections in dependency order with the SQL ones), `external` (a projector command of the
//! user's, for a range of events) and `write_guard` (before a batch commits: it wrote only its
//! own tables).

pub mod external;
pub(crate) mod rust;
pub mod sql;
pub mod write_guard;
