//! The TOML shape of the config file, deserialised strictly: an unknown key is an error that
//! names the key and its line, never silently ignored.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub events: Spanned<RawEvents>,
    #[serde(default, rename = "projection")]
    pub projections: Vec<RawProjection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// A store's defaults for every other key (config/presets.rs); keys written here win.
    pub preset: Option<Spanned<String>>,
    pub table: Option<Spanned<String>>,
    /// An SQL query read instead of `table` (for stores that need a join).
    pub source: Option<Spanned<String>>,
    /// With `source`: the table each append inserts into (whose writers are watched).
    pub lock_table: Option<Spanned<String>>,
    pub position: Option<Spanned<String>>,
    pub stream: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub event_type: Option<Spanned<String>>,
    pub data: Option<Spanned<String>>,
    pub metadata: Option<Spanned<String>>,
    pub timestamp: Option<Spanned<String>>,
    pub filter: Option<Spanned<String>>,
    pub ordering: Option<Spanned<String>>,
    pub transaction_id: Option<Spanned<String>>,
    /// Gap-aware ordering: how old a proven gap must also be before it is passed.
    pub gap_age: Option<Spanned<String>>,
    /// Gap-aware ordering: the sequence positions are drawn from, when the position column's
    /// default does not name it (it says where positions begin).
    pub position_sequence: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProjection {
    pub name: Spanned<String>,
    pub tables: Spanned<Vec<Spanned<String>>>,
    /// A handler file, or else `command`, or neither for a projection written in Rust
    /// (`Config::register`).
    pub handlers: Option<Spanned<String>>,
    /// An external projector: argv of a program that applies a range of events (external.rs).
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// Seconds one run of `command` may take before it is killed.
    pub command_timeout: Option<Spanned<i64>>,
    pub depends_on: Option<Vec<Spanned<String>>>,
    pub row_count_tolerance: Option<Spanned<f64>>,
    pub replay_triggers: Option<bool>,
    pub build_unlogged: Option<bool>,
    pub checks: Option<Vec<RawCheck>>,
    pub handover: Option<Spanned<RawHandover>>,
    /// The column of every table of the projection that holds the stream of the events that
    /// write the row (partial rebuilds by stream).
    pub stream_key: Option<Spanned<String>>,
    /// The column of every table of the projection that holds the position of the event that
    /// inserted the row, in append-only tables (partial rebuilds from a position).
    pub position_column: Option<Spanned<String>>,
    /// `{ "schema.view" = "file.sql", "policy on schema.table" = "file.sql" }`: dependents of
    /// columns a new shape changes, defined against the new shape (shape/dependents.rs).
    pub redefine: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    /// A file of DDL run on the projection's `_rebuild` clones right after they are created:
    /// the next generation's new shape (shape/).
    pub reshape: Option<Spanned<String>>,
    /// Tables the projection owned before and no longer has: the swap parks them as `_old`
    /// (retire.rs).
    pub retire: Option<Vec<Spanned<String>>>,
    /// `{ "table" = "file.sql" }`: tables under `tables` that may not exist yet, with the DDL
    /// that creates each (`CREATE TABLE {{table}} (…)`), run instead of the LIKE clone.
    pub create: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

/// `handover = { table, key_column, key, position_column, transaction_id_column }`: the
/// checkpoint of a projector that reproject does not run, set to the swap position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHandover {
    pub table: Spanned<String>,
    pub key_column: Spanned<String>,
    pub key: Spanned<String>,
    pub position_column: Spanned<String>,
    pub transaction_id_column: Option<Spanned<String>>,
}

/// A check: `{ name = "...", sql = "..." }` (the name is optional). Not an untagged enum that
/// also takes a bare string: serde's untagged enums lose the spans we need for line numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: Option<String>,
    pub sql: Spanned<String>,
}
