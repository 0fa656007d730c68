//! The data every layer above shares, with no dependency on any of them: an event as handlers
//! see it ([`Event`]), the config's names resolved against the database ([`Resolved`]), how
//! the event roles are stored ([`Encodings`]), and the trait of projections written in Rust
//! ([`RustProjection`], with the [`Batch`] it is given) with the registry the config holds.
//! The config, reading (read/source.rs), validation (pipeline/validate.rs) and applying
//! (apply/) import it; it imports only identifiers and errors. Library users name the
//! trait by its public path, `reproject::RustProjection`.

pub mod config;
pub mod fingerprint;
pub(crate) mod handlers;
pub mod ident;
pub mod projection;
pub mod shape;

use crate::error::{Error, Result};
use crate::model::ident::{parse_table_ref, TableName};
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::Client;

/// A jsonb value kept in PostgreSQL's binary form: read from the event table and bound to
/// handler statements without parsing or re-serialising it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJsonb(pub Vec<u8>);

impl<'a> FromSql<'a> for RawJsonb {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawJsonb(raw.to_vec()))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

impl ToSql for RawJsonb {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
    tokio_postgres::types::to_sql_checked!();
}

impl RawJsonb {
    /// The JSON text (binary jsonb is a version byte followed by the text).
    pub fn text(&self) -> &str {
        std::str::from_utf8(self.0.get(1..).unwrap_or_default()).unwrap_or("")
    }

    /// The value parsed into any serde type (`serde_json::Value`, or a struct of your own), for
    /// Rust projections.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.text())
    }
}

/// One event as handlers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// `xid8` mode: the writing transaction's id.
    pub tx: Option<u64>,
    /// `events.position`.
    pub position: i64,
    /// `events.stream`, as text.
    pub stream: Option<String>,
    /// `events.type`.
    pub event_type: Option<String>,
    /// `events.data`, jsonb in binary form ([`RawJsonb::parse`] reads it).
    pub data: Option<RawJsonb>,
    /// `events.metadata`, if mapped.
    pub metadata: Option<RawJsonb>,
    /// `events.timestamp`, if mapped.
    pub timestamp: Option<DateTime<Utc>>,
}

/// Where a `{{table}}` reference points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOwner {
    /// Index into [`crate::model::config::Config::projections`].
    pub projection: usize,
    /// Index into that projection's `tables`.
    pub table: usize,
}

/// The config's names resolved against the database.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The event table (or `lock_table`), schema-qualified.
    pub events_table: TableName,
    /// The `[events]` mapping as read from this database: the config's, with a preset's
    /// metadata and filter made of the optional columns the table has
    /// (pipeline/preset_columns.rs). Events are read with this one.
    pub events: crate::model::config::EventsConfig,
    /// The preset's optional columns found in the table and used (for `plan`).
    pub preset_columns: Vec<&'static str>,
    /// How the payload and time roles are stored (bytea, timestamp without time zone, text).
    pub encodings: Encodings,
    /// Per projection, its tables in config order, schema-qualified.
    pub tables: Vec<Vec<TableName>>,
    /// Per projection, what a rebuild does about its declared `reshape` (shape/), with the
    /// changes read on the reshaped stand-ins.
    pub shapes: Vec<Option<crate::model::shape::Planned>>,
    /// The tables that do not exist live yet: a rebuild creates them from their `create`
    /// definition (no LIKE clone, no `_old`, nothing to carry at the swap).
    pub added: std::collections::BTreeSet<TableName>,
    /// Notes for `plan` and `rebuild`: `create` entries whose table is already live with the
    /// shape they define (pipeline/added.rs).
    pub notes: Vec<crate::progress::Warning>,
    /// The columns and indexes each added table's definition makes, read on its stand-in
    /// (what `plan` shows).
    pub new_shapes: BTreeMap<TableName, Vec<String>>,
}

impl Resolved {
    /// The live table of a projection's table.
    pub fn live(&self, owner: TableOwner) -> &TableName {
        &self.tables[owner.projection][owner.table]
    }

    /// Whether a live table of the config does not exist yet and is created by the rebuild.
    pub fn is_added(&self, table: &TableName) -> bool {
        self.added.contains(table)
    }

    /// Whether projection `pi`'s statements name a table under `create` (its own, or one
    /// it reads): they are prepared against the stand-ins, after the definition was checked
    /// (a table that does not exist yet has nothing else; one that exists with another shape
    /// is refused for that, not for the statements written for the definition).
    pub fn needs_standins(&self, config: &crate::model::config::Config, pi: usize) -> bool {
        if !config.projections.iter().any(|p| !p.create.is_empty()) {
            return false;
        }
        let p = &config.projections[pi];
        let mut refs = p
            .sections()
            .iter()
            .flat_map(|s| s.statements.iter())
            .chain(p.checks.iter().map(|c| &c.sql))
            .flat_map(|st| st.tables.iter());
        refs.any(|r| {
            config.owner_of(&r.written).is_ok_and(|o| {
                let owner = &config.projections[o.projection];
                owner
                    .create
                    .iter()
                    .any(|d| d.table == owner.tables[o.table].table)
            })
        })
    }
}

/// How `data` or `metadata` is stored, detected at validation from the expression's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payload {
    /// jsonb, or anything PostgreSQL casts to it (json, text holding JSON).
    #[default]
    Jsonb,
    /// bytea holding UTF-8 JSON: read as bytes and checked here, so bytes that are not JSON
    /// fail naming the event's position rather than failing a whole batch in the server.
    Bytea,
}

impl Payload {
    /// The storage of a column of type `ty`.
    pub fn of(ty: &Type) -> Payload {
        if *ty == Type::BYTEA {
            Payload::Bytea
        } else {
            Payload::Jsonb
        }
    }

    pub(crate) fn read(self, sql: &str) -> String {
        match self {
            Payload::Jsonb => format!("({sql})::jsonb"),
            Payload::Bytea => format!("({sql})::bytea"),
        }
    }

    pub(crate) fn sql_type(self) -> &'static str {
        match self {
            Payload::Jsonb => "jsonb",
            Payload::Bytea => "bytea",
        }
    }

    /// The payload as jsonb in SQL, for `:events` (bytes that are not UTF-8 JSON fail the
    /// batch's statement in the server).
    pub(crate) fn read_json(self, sql: &str) -> String {
        match self {
            Payload::Jsonb => format!("({sql})::jsonb"),
            Payload::Bytea => format!("convert_from(({sql})::bytea, 'UTF8')::jsonb"),
        }
    }
}

/// How `timestamp` is stored, detected at validation from the expression's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeKind {
    /// timestamptz, or anything else PostgreSQL casts to it.
    #[default]
    Timestamptz,
    /// timestamp without time zone: the stores that use it write UTC, so it is read as UTC
    /// whatever the session's TimeZone.
    Timestamp,
    /// ISO-8601 text: with an offset (`Z`, `+02:00`) as written, without one as UTC.
    Text,
}

impl TimeKind {
    /// The storage of a column of type `ty`.
    pub fn of(ty: &Type) -> TimeKind {
        if *ty == Type::TIMESTAMP {
            TimeKind::Timestamp
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR].contains(ty) {
            TimeKind::Text
        } else {
            TimeKind::Timestamptz
        }
    }

    pub(crate) fn read(self, sql: &str) -> String {
        match self {
            TimeKind::Timestamptz => format!("({sql})::timestamptz"),
            TimeKind::Timestamp => format!("(({sql})::timestamp AT TIME ZONE 'UTC')"),
            // The offset must follow a time of day: a bare date's `-01` is not an offset.
            TimeKind::Text => format!(
                "(CASE WHEN ({sql})::text ~ '[0-9]:[0-9]{{2}}(:[0-9]{{2}}([.,][0-9]+)?)? *([Zz]|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$' \
                 THEN ({sql})::text::timestamptz ELSE (({sql})::text::timestamp AT TIME ZONE 'UTC') END)"
            ),
        }
    }
}

/// How the `transaction_id` role of `xid8` ordering is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxKind {
    /// `xid8` (`pg_current_xact_id()`), read as it is, so an index on it serves the order.
    #[default]
    Xid8,
    /// A `bigint` holding the same 64-bit id (`txid_current()`, or Sequent's
    /// `pg_current_xact_id()::text::bigint`): PostgreSQL has no cast from bigint to xid8, so
    /// it is read through text. The numbers are equal, so the cut compares them unchanged.
    Bigint,
}

impl TxKind {
    /// The storage of an expression of type `ty`.
    pub fn of(ty: &Type) -> TxKind {
        if [Type::INT8, Type::INT4].contains(ty) {
            TxKind::Bigint
        } else {
            TxKind::Xid8
        }
    }

    /// The expression read as xid8.
    pub(crate) fn read(self, sql: &str) -> String {
        match self {
            TxKind::Xid8 => format!("(({sql})::xid8)"),
            TxKind::Bigint => format!("(({sql})::text::xid8)"),
        }
    }
}

/// The storage of the payload and time roles, detected by `validate` (the defaults are what
/// an unmapped role reads as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encodings {
    /// How `data` is stored.
    pub data: Payload,
    /// How `metadata` is stored.
    pub metadata: Payload,
    /// How `timestamp` is stored.
    pub timestamp: TimeKind,
    /// How `transaction_id` (`xid8` ordering) is stored.
    pub transaction_id: TxKind,
}

/// The future a [`RustProjection`] returns: boxed so the trait stays dyn-compatible (the
/// engine holds the registered projections as `Arc<dyn RustProjection>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A projection whose event handling is Rust code instead of SQL handlers.
///
/// The engine calls [`apply`](RustProjection::apply) once per batch with the batch's events
/// in global order; the implementation writes the projection's tables through
/// [`Batch::client`], naming them with [`Batch::table`] (the `_rebuild` clone during a rebuild,
/// the live table under `reproject run`). It must not commit, roll back or open a transaction
/// of its own: the batch's transaction also advances the checkpoint, which is what makes each
/// event count exactly once across crashes, resumes and retries. A returned error rolls the
/// batch back and fails the run (resumable with `--resume`).
///
/// ```no_run
/// use reproject::{Batch, BoxFuture, RustProjection};
///
/// /// Counts the events of each stream.
/// struct Counts;
///
/// impl RustProjection for Counts {
///     fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
///         Box::pin(async move {
///             let table = batch.table("stream_counts")?.quoted();
///             let sql = format!(
///                 "INSERT INTO {table} (stream, n) VALUES ($1, 1) \
///                  ON CONFLICT (stream) DO UPDATE SET n = {table}.n + 1"
///             );
///             let statement = batch.client.prepare(&sql).await?;
///             for event in batch.events {
///                 batch.client.execute(&statement, &[&event.stream]).await?;
///             }
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait RustProjection: Send + Sync {
    /// Applies `batch.events`, in order, to the tables of this projection, inside the engine's
    /// transaction. Called with every event the config's `[events]` section selects (the
    /// projection filters by type itself); never called with an empty batch.
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<()>>;

    /// Identifies what this code writes; recorded with each run. A run built by another
    /// version is not continued by `rebuild --resume` or `swap` (mixing two versions in one
    /// table), so change it when the output changes. Default: empty (no such protection).
    fn version(&self) -> String {
        String::new()
    }
}

/// One batch for a [`RustProjection`]: the events and where to write them.
pub struct Batch<'a> {
    /// The engine's connection, inside the batch's transaction. Write through this client
    /// only, and do not end the transaction.
    pub client: &'a Client,
    /// The events of the batch in global order (never empty).
    pub events: &'a [Event],
    projection: &'a str,
    tables: &'a Tables,
}

/// Every projection's tables for one generation: (projection, as written in the config, the
/// physical table now).
pub(crate) type Tables = Vec<(String, String, TableName)>;

impl<'a> Batch<'a> {
    /// The batch the engine gives the Rust projection `projection` (apply/sql.rs).
    pub(crate) fn new(
        client: &'a Client,
        events: &'a [Event],
        projection: &'a str,
        tables: &'a Tables,
    ) -> Batch<'a> {
        Batch {
            client,
            events,
            projection,
            tables,
        }
    }

    /// The physical table for a table of a projection, named as in its config `tables`,
    /// optionally qualified with the schema it resolved to (`"postings"` or
    /// `"public.postings"`), as a `{{table}}` reference in SQL handlers resolves: the
    /// `_rebuild` clone for a projection this run rebuilds, the live table otherwise. The
    /// projection's own tables win over another projection's of the same name. Write only your
    /// own; read another's only if the config says `depends_on` (that orders the two). Quote
    /// it with its `quoted()` in SQL.
    pub fn table(&self, name: &str) -> Result<&TableName> {
        let wanted = parse_table_ref(name)?;
        let matches = |(_, written, physical): &&(String, String, TableName)| {
            // The schema is the one the table resolved to (the clone lives beside it).
            parse_table_ref(written).is_ok_and(|t| {
                t.name == wanted.name
                    && wanted.schema.as_ref().is_none_or(|s| *s == physical.schema)
            })
        };
        let own = self
            .tables
            .iter()
            .filter(|t| t.0 == self.projection)
            .find(matches);
        let found: Vec<_> = match own {
            Some(t) => vec![t],
            None => self.tables.iter().filter(matches).collect(),
        };
        match found.as_slice() {
            [(_, _, physical)] => Ok(physical),
            [] => Err(Error::config(format!(
                "projection `{}` asked for table `{name}`, which no projection of the config owns",
                self.projection
            ))
            .with_hint(format!(
                "its own tables in the config: {}",
                self.tables
                    .iter()
                    .filter(|t| t.0 == self.projection)
                    .map(|(_, w, _)| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Err(Error::config(format!(
                "projection `{}` asked for table `{name}`, which several projections own",
                self.projection
            ))
            .with_hint("qualify it with its schema")),
        }
    }

    /// The name of the projection being applied.
    pub fn projection(&self) -> &str {
        self.projection
    }
}

/// The Rust projections a program registered, by projection name (held by the config,
/// filled by `Config::register`).
#[derive(Clone, Default)]
pub(crate) struct Registry(pub(crate) BTreeMap<String, Arc<dyn RustProjection>>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}
