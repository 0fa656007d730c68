//! The configuration file (`reproject.toml`): where the events are, which projections exist.
//!
//! Loading happens in two steps. `raw` is the TOML shape, deserialised strictly
//! (`deny_unknown_fields`) with spans so every later error can name a line. [`Config::load`]
//! then turns it into the checked model below: names parsed, handler files read and parsed,
//! `{{table}}` references resolved to the projection that owns the table, dependencies
//! inferred. Anything that needs the database is checked later, in `validate.rs`.

pub(crate) mod presets;
pub(crate) mod raw;

use crate::error::{Error, Result};
use crate::model::handlers::{self, HandlerFile, Statement};
use crate::model::ident::{parse_table_ref, ConfigTableRef};
pub use crate::model::TableOwner;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Default `row_count_tolerance`, in percent. A rebuild that changes the number of rows by more
/// than this refuses to swap: generous enough for a bug fix that adds or removes some rows,
/// tight enough to stop an empty or half-built table from going live.
pub const DEFAULT_ROW_COUNT_TOLERANCE: f64 = 10.0;

/// An SQL expression from the config with the line it came from.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The SQL text as written.
    pub sql: String,
    /// Line in the config file (1-based).
    pub line: usize,
}

/// How to read events: one SQL expression per role.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// The event table; with `source`, the table each append inserts into (`lock_table`):
    /// gap-aware ordering watches its writers and `reproject run` wakes on its inserts.
    pub table: ConfigTableRef,
    /// Line of `table` (or `lock_table`) in the config file.
    pub table_line: usize,
    /// `events.source`: a query read as `(source) AS events` instead of the table.
    pub source: Option<Expr>,
    /// `events.position`: the global order, castable to bigint.
    pub position: Expr,
    /// `events.stream`: the stream (aggregate) an event belongs to, read as text.
    pub stream: Expr,
    /// `events.type`: picks the handler section.
    pub event_type: Expr,
    /// `events.data`: the payload.
    pub data: Expr,
    /// `events.metadata`, if mapped.
    pub metadata: Option<Expr>,
    /// `events.timestamp`, if mapped.
    pub timestamp: Option<Expr>,
    /// `events.filter`: only events matching this predicate are replayed.
    pub filter: Option<Expr>,
    /// How reading stays gap-safe; `events.ordering`.
    pub ordering: Ordering,
    /// `events.position_sequence` (gap-aware only): the sequence positions are drawn from,
    /// when the position column's default does not name it. Its start value says where
    /// positions begin (read/ordering.rs).
    pub position_sequence: Option<Expr>,
    /// `events.preset`, with the keys it supplied: validation checks the columns they read
    /// and completes them with the optional columns the table has
    /// (pipeline/preset_columns.rs).
    pub preset: Option<PresetUse>,
}

/// The preset a config names and what it supplied.
#[derive(Debug, Clone)]
pub struct PresetUse {
    /// The preset.
    pub(crate) preset: &'static presets::Preset,
    /// Line of `preset` in the config file.
    pub line: usize,
    /// The `[events]` keys whose value is the preset's (not written in the config).
    pub supplied: Vec<&'static str>,
}

impl PresetUse {
    /// Whether `key` came from the preset.
    pub fn supplied(&self, key: &str) -> bool {
        self.supplied.contains(&key)
    }

    /// The preset's name.
    pub fn name(&self) -> &'static str {
        self.preset.name
    }

    /// The store versions and append modes the preset was checked against.
    pub fn checked(&self) -> &'static str {
        self.preset.checked
    }
}

/// How reading events avoids skipping an event whose transaction commits after a later
/// position was already seen (`events.ordering`; docs/internals/design.md explains each).
#[derive(Debug, Clone)]
pub enum Ordering {
    /// A plain sequence position (bigserial, identity): read up to the highest position below
    /// which no open transaction can still insert; pass a gap only when every transaction that
    /// was open when it was seen has ended. The default: it is right for any sequence-numbered
    /// table, costs nothing when writers commit in order, and needs no extra column.
    GapAware {
        /// `events.gap_age`: a gap is passed only once it is also at least this old (zero:
        /// as soon as it is proven). For stores that draw positions outside the inserting
        /// transaction (Marten's Rich append mode), where no lock reveals a reservation.
        gap_age: std::time::Duration,
    },
    /// The event rows carry their writing transaction id (`xid8`): read only transactions below
    /// `pg_snapshot_xmin(pg_current_snapshot())`, in (transaction id, position) order.
    Xid8 {
        /// `events.transaction_id`: the writing transaction's id (`xid8`).
        transaction_id: Expr,
    },
    /// Writers are serialized (one appender at a time, or a global lock per append): positions
    /// commit in order, so the highest position is a safe bound.
    Serialized,
}

impl Ordering {
    /// The name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Ordering::GapAware { .. } => "gap-aware",
            Ordering::Xid8 { .. } => "xid8",
            Ordering::Serialized => "serialized",
        }
    }
}

/// The checkpoint of a projector that reproject does not run, set to the swap position inside
/// the swap transaction: `UPDATE table SET position_column = <swap position>
/// [, transaction_id_column = <its transaction id>] WHERE key_column = key`.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The external projector's checkpoint table.
    pub table: ConfigTableRef,
    /// The column that identifies the checkpoint row.
    pub key_column: String,
    /// The value of `key_column` in that row (compared as text).
    pub key: String,
    /// The column that receives the swap position.
    pub position_column: String,
    /// Required in `xid8` mode (a position alone is no cut there), refused otherwise.
    pub transaction_id_column: Option<String>,
    /// Line of `handover` in the config file.
    pub line: usize,
}

/// An external projector (`command = [...]`): a program of the user's that applies a range of
/// events to the rebuild tables; reproject runs it instead of handlers (external.rs,
/// docs/guide/external-projectors.md).
#[derive(Debug, Clone)]
pub struct ExternalCommand {
    /// The argv as written.
    pub argv: Vec<String>,
    /// `argv[0]` to start: resolved against the config file's directory when it names a path
    /// (contains `/`), else looked up in `PATH` as a shell would.
    pub program: PathBuf,
    /// The config file's directory: the command's working directory, so relative arguments
    /// (`replay.py`) mean what they mean next to the config.
    pub dir: PathBuf,
    /// `command_timeout`: one run of the command is killed after this long.
    pub timeout: Option<std::time::Duration>,
    /// Line of `command` in the config file.
    pub line: usize,
    /// What a run records as the handlers that built the tables: the command and the text of
    /// every file its arguments name next to the config (the script), so the recorded digest
    /// changes when the projector does. Deliberately not a valid handler file (it starts with
    /// [`EXTERNAL_SOURCE_PREFIX`]): a rollback, which replays the events since the swap into the
    /// old tables with the recorded handlers, must find none here rather than an empty file
    /// that would skip those events.
    pub source: String,
}

impl ExternalCommand {
    /// The argv for messages, each argument quoted only when it needs it.
    pub fn display(&self) -> String {
        display_argv(&self.argv)
    }
}

/// An argv for messages, each argument quoted only when it needs it.
fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A custom health check: SQL returning one boolean, run against the rebuilt tables.
#[derive(Debug, Clone)]
pub struct Check {
    /// The check's name (`check N` when the config gives none).
    pub name: String,
    /// Line of the check's SQL in the config file.
    pub line: usize,
    /// The SQL, with `{{table}}` references.
    pub sql: Statement,
}

/// A table owned by a projection, as written in the config.
#[derive(Debug, Clone)]
pub struct OwnedTable {
    /// The table as written.
    pub table: ConfigTableRef,
    /// Line in the config file.
    pub line: usize,
}

/// One `[[projection]]`, checked.
#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    /// Unique name, used on the command line and in the state schema.
    pub name: String,
    /// Line of `name` in the config file.
    pub line: usize,
    /// The tables it owns: cloned, rebuilt and swapped together.
    pub tables: Vec<OwnedTable>,
    /// How its events are applied: SQL handlers, an external command or Rust code.
    pub kind: ProjectionKind,
    /// Declared and inferred dependencies: names of projections this one reads.
    pub depends_on: BTreeSet<String>,
    /// Only the dependencies written under `depends_on` (for messages).
    pub declared_depends_on: BTreeSet<String>,
    /// Largest allowed change of a table's row count by the rebuild, in percent.
    pub row_count_tolerance: f64,
    /// Custom health checks, run against the rebuilt tables before the swap.
    pub checks: Vec<Check>,
    /// The checkpoint of an external projector that the swap sets (`handover`).
    pub handover: Option<Handover>,
    /// Create the live tables' triggers on the rebuild tables, so they fire during the replay.
    /// Off by default: an audit trigger would fire once per replayed event.
    pub replay_triggers: bool,
    /// Build the rebuild tables UNLOGGED (no WAL per row version during the replay) and make
    /// them LOGGED once the checks pass, before the swap (clone.rs).
    pub build_unlogged: bool,
    /// `stream_key`: the column holding the stream of the events that write each row
    /// (`rebuild --streams`, pipeline/partial.rs).
    pub stream_key: Option<DeclaredColumn>,
    /// `position_column`: the column holding the position of the event that inserted each row
    /// of append-only tables (`rebuild --from-position`, pipeline/partial.rs).
    pub position_column: Option<DeclaredColumn>,
    /// `redefine`: dependents of columns the new shape changes, with the statements that
    /// define them against it (shape/dependents.rs), in key order.
    pub redefine: Vec<crate::model::shape::dependent::Redefinition>,
    /// `reshape`: DDL run on the clones right after they are created, so the next generation
    /// has a new shape (shape/).
    pub reshape: Option<crate::model::shape::file::ReshapeFile>,
    /// `retire`: tables the projection owned before and no longer has; the swap renames them
    /// to `_old` beside the replaced tables (retire.rs).
    pub retire: Vec<OwnedTable>,
    /// `create`: tables under `tables` that may not exist live yet, each with the DDL that
    /// creates its first generation (model/shape/file.rs `TableDefinition`).
    pub create: Vec<crate::model::shape::file::TableDefinition>,
}

/// How a projection's events are applied: the config gives `handlers`, `command` or neither.
#[derive(Debug, Clone)]
pub enum ProjectionKind {
    /// `handlers = "FILE.sql"`: reproject replays the events with these SQL handlers.
    Sql(HandlerFile),
    /// `command = [...]`: a command the user provides rebuilds the projection.
    External(ExternalCommand),
    /// Neither `handlers` nor `command`: the events are applied by a Rust projection that the
    /// program registers under the projection's name ([`Config::register`]).
    Rust,
}

impl ProjectionConfig {
    /// The positions (in `tables`) of the tables a `reshape` applies to: all but those under
    /// `create`, whose definition is their shape.
    pub fn reshaped_tables(&self) -> Vec<usize> {
        (0..self.tables.len())
            .filter(|&t| !self.create.iter().any(|d| d.table == self.tables[t].table))
            .collect()
    }

    /// The SQL handler file, for a projection with `handlers`.
    pub fn handlers(&self) -> Option<&HandlerFile> {
        match &self.kind {
            ProjectionKind::Sql(h) => Some(h),
            _ => None,
        }
    }

    /// The external projector, for a projection with `command`.
    pub fn command(&self) -> Option<&ExternalCommand> {
        match &self.kind {
            ProjectionKind::External(c) => Some(c),
            _ => None,
        }
    }

    /// Whether a registered Rust projection applies the events.
    pub fn is_rust(&self) -> bool {
        matches!(self.kind, ProjectionKind::Rust)
    }

    /// The sections of the SQL handlers; none for an external or Rust projection.
    pub fn sections(&self) -> &[handlers::Section] {
        self.handlers().map_or(&[], |h| h.sections.as_slice())
    }

    /// Whether the SQL handlers are set-based (`-- per batch`).
    pub fn per_batch(&self) -> bool {
        self.handlers().is_some_and(|h| h.per_batch())
    }

    /// The file messages name for its handlers: the handler file, an external projector's
    /// program; empty for a Rust projection.
    pub fn handler_path(&self) -> &Path {
        match &self.kind {
            ProjectionKind::Sql(h) => &h.path,
            ProjectionKind::External(c) => &c.program,
            ProjectionKind::Rust => Path::new(""),
        }
    }

    /// What a run records (and a resume compares) as the code that built its tables: the
    /// handler file's text, an external projector's description ([`ExternalCommand::source`]);
    /// None for a Rust projection, whose code is identified by its version instead.
    pub fn recorded_source(&self) -> Option<&str> {
        match &self.kind {
            ProjectionKind::Sql(h) => Some(&h.source),
            ProjectionKind::External(c) => Some(&c.source),
            ProjectionKind::Rust => None,
        }
    }
}

/// A column name declared on a projection, with the line it came from (checked against the
/// catalog when a partial rebuild uses it).
#[derive(Debug, Clone)]
pub struct DeclaredColumn {
    /// The column name, unquoted.
    pub name: String,
    /// Line of the key in the config file.
    pub line: usize,
}

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file; relative paths in it are relative to its directory.
    pub path: PathBuf,
    /// `[events]`: where the events are.
    pub events: EventsConfig,
    /// The projections, in config order.
    pub projections: Vec<ProjectionConfig>,
    /// The Rust projections registered by the program ([`Config::register`]).
    pub(crate) registered: crate::model::Registry,
}

impl Config {
    /// Reads and checks the config file and every handler file it names.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file `{}`", path.display()))
                .caused_by_error(e)
                .with_hint(
                    "pass `--config PATH`, or run from the directory holding `reproject.toml`",
                )
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` locates handler files and names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            Error::config(format!("invalid config file `{}`", path.display()))
                .caused_by(e.to_string().trim_end())
                .with_source(e)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |span: std::ops::Range<usize>| Location {
            file: path.display().to_string(),
            line: line_of(text, span.start),
        };
        let events = convert_events(&raw.events, &at)?;
        let mut projections = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for p in &raw.projections {
            let loc = at(p.name.span());
            let name = p.name.get_ref().trim().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(loc.err(format!(
                    "projection name `{name}` must be non-empty and use only letters, digits, `_` and `-`"
                )));
            }
            if let Some(first) = names.insert(name.clone(), loc.line) {
                return Err(loc.err(format!(
                    "projection `{name}` is defined twice (first at line {first})"
                )));
            }
            let mut projection = convert_projection(p, &name, base, &at)?;
            projection.handover = p
                .handover
                .as_ref()
                .map(|h| handover(h, &name, &events.ordering, &at))
                .transpose()?;
            if let (Some(c), Ordering::Xid8 { .. }) = (projection.command(), &events.ordering) {
                // The range an external projector is given is a pair of positions; in xid8
                // mode the cut is a transaction id and "after the checkpoint" a (transaction
                // id, position) pair, which no `position > X AND position <= Y` can express.
                return Err(Error::config(format!(
                    "{}:{}: projection `{name}`: an external projector (`command`) cannot be used with `events.ordering = \"xid8\"`",
                    path.display(),
                    c.line
                ))
                .with_hint("external projectors are given a position range: use `gap-aware` (the default) or `serialized` ordering, or handlers"));
            }
            projections.push(projection);
        }
        if projections.is_empty() {
            return Err(
                Error::config(format!("{}: no projections defined", path.display()))
                    .with_hint("add a `[[projection]]` table with `name`, `tables` and `handlers`"),
            );
        }
        let mut config = Config {
            path: path.to_path_buf(),
            events,
            projections,
            registered: Default::default(),
        };
        config.resolve_references(&raw, text)?;
        Ok(config)
    }

    /// Index of a projection by name.
    pub fn projection_index(&self, name: &str) -> Option<usize> {
        self.projections.iter().position(|p| p.name == name)
    }

    /// Finds which projection owns the table a `{{...}}` reference names. An unqualified
    /// reference matches a table of that name in any schema, if only one projection has one.
    pub fn owner_of(&self, written: &str) -> std::result::Result<TableOwner, String> {
        let wanted = parse_table_ref(written).map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for (pi, p) in self.projections.iter().enumerate() {
            for (ti, t) in p.tables.iter().enumerate() {
                let same = t.table.name == wanted.name
                    && (wanted.schema.is_none() || t.table.schema == wanted.schema);
                if same {
                    found.push(TableOwner {
                        projection: pi,
                        table: ti,
                    });
                }
            }
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "`{{{{{written}}}}}` names no table of any projection; braces name a projection's table (list it under `tables` of the projection that writes it), a table read from elsewhere is named without braces"
            )),
            _ => Err(format!(
                "`{{{{{written}}}}}` is ambiguous: several projections own a table of that name; qualify it with its schema"
            )),
        }
    }

    /// Resolves every `{{table}}` reference, infers dependencies, and rejects writes to tables
    /// of other projections and unknown or cyclic-by-self dependencies.
    fn resolve_references(&mut self, raw: &raw::RawConfig, text: &str) -> Result<()> {
        let file = self.path.display().to_string();
        // A table may belong to one projection only.
        // Keyed by (schema, name), not by display text: `"a.b"` and `a.b` are different tables.
        let mut owners: BTreeMap<(Option<String>, String), String> = BTreeMap::new();
        for p in &self.projections {
            for t in &p.tables {
                let key = (t.table.schema.clone(), t.table.name.clone());
                if let Some(other) = owners.insert(key, p.name.clone()) {
                    let what = if other == p.name {
                        format!("projection `{other}` lists table `{}` twice", t.table)
                    } else {
                        format!(
                            "table `{}` is listed by projections `{other}` and `{}`; a table belongs to one projection",
                            t.table, p.name
                        )
                    };
                    return Err(Error::config(format!("{file}:{}: {what}", t.line)));
                }
            }
        }
        // A retired table is one no projection has any more.
        for p in &self.projections {
            for t in &p.retire {
                let key = (t.table.schema.clone(), t.table.name.clone());
                if let Some(owner) = owners.get(&key) {
                    return Err(Error::config(format!(
                        "{file}:{}: projection `{}` retires table `{}`, which projection `{owner}` still lists under `tables`",
                        t.line, p.name, t.table
                    ))
                    .with_hint("`retire` names a table the projection no longer has: remove it from `tables`, or from `retire`"));
                }
            }
        }
        for (pi, rawp) in raw.projections.iter().enumerate() {
            let mut inferred = BTreeSet::new();
            let refs = self.projections[pi].handlers().map(|h| h.table_refs());
            for r in refs.into_iter().flatten() {
                let handler_file = self.projections[pi].handler_path().display().to_string();
                let owner = self.owner_of(&r.written).map_err(|why| {
                    Error::config(format!(
                        "{handler_file}:{}: projection `{}`: {why}",
                        r.line, self.projections[pi].name
                    ))
                })?;
                if owner.projection != pi {
                    let other = &self.projections[owner.projection].name;
                    if r.writes {
                        return Err(Error::config(format!(
                            "{handler_file}:{}: projection `{}` writes to `{}`, which belongs to projection `{other}`",
                            r.line, self.projections[pi].name, r.written
                        ))
                        .with_hint("a projection may read other projections' tables but only write its own"));
                    }
                    inferred.insert(other.clone());
                }
            }
            for r in &self.projections[pi].redefine {
                for st in &r.statements {
                    for t in &st.tables {
                        self.owner_of(&t.written).map_err(|why| {
                            Error::config(format!(
                                "{}:{}: projection `{}`: redefinition of `{}`: {why}",
                                r.path.display(),
                                t.line,
                                self.projections[pi].name,
                                r.key
                            ))
                        })?;
                    }
                }
            }
            for check in &self.projections[pi].checks {
                for r in &check.sql.tables {
                    self.owner_of(&r.written).map_err(|why| {
                        Error::config(format!(
                            "{file}:{}: check `{}` of projection `{}`: {why}",
                            check.line, check.name, self.projections[pi].name
                        ))
                    })?;
                }
            }
            if let Some(reshape) = &self.projections[pi].reshape {
                for st in &reshape.statements {
                    for r in &st.tables {
                        // A name that is no projection's table may be an index of one of this
                        // projection's tables (`DROP INDEX {{balances_by_owner}}`): the
                        // catalog decides when the reshape runs (shape/apply.rs).
                        let Ok(owner) = self.owner_of(&r.written) else {
                            continue;
                        };
                        if owner.projection == pi
                            && !self.projections[pi]
                                .reshaped_tables()
                                .contains(&owner.table)
                        {
                            return Err(Error::config(format!(
                                "{}:{}: projection `{}`: the reshape names `{{{{{}}}}}`, a table under `create`",
                                reshape.path.display(),
                                r.line,
                                self.projections[pi].name,
                                r.written,
                            ))
                            .with_hint("a new table's shape is its definition: write it there"));
                        }
                        if owner.projection != pi {
                            return Err(Error::config(format!(
                                "{}:{}: projection `{}`: the reshape names `{{{{{}}}}}`, a table of projection `{}`",
                                reshape.path.display(),
                                r.line,
                                self.projections[pi].name,
                                r.written,
                                self.projections[owner.projection].name
                            ))
                            .with_hint("a reshape changes only the projection's own tables"));
                        }
                    }
                }
            }
            let name = self.projections[pi].name.clone();
            for dep in rawp.depends_on.iter().flatten() {
                let line = line_of(text, dep.span().start);
                let dep = dep.get_ref().trim();
                if dep == name {
                    return Err(Error::config(format!(
                        "{file}:{line}: projection `{name}` depends on itself"
                    )));
                }
                if self.projection_index(dep).is_none() {
                    let known: Vec<_> = self.projections.iter().map(|p| p.name.as_str()).collect();
                    return Err(Error::config(format!(
                        "{file}:{line}: projection `{name}` depends on unknown projection `{dep}`"
                    ))
                    .with_hint(format!("known projections: {}", known.join(", "))));
                }
                self.projections[pi]
                    .declared_depends_on
                    .insert(dep.to_string());
            }
            let declared = self.projections[pi].declared_depends_on.clone();
            self.projections[pi].depends_on = declared.union(&inferred).cloned().collect();
        }
        // A set-based projection sees a whole batch at once: a projection reading it would see
        // it ahead of the event being applied, and it would see the one it reads as of the
        // batch's end, so the result would depend on the batch size. Refused until there is a
        // well-defined order to offer.
        for p in &self.projections {
            for dep in &p.depends_on {
                let other = &self.projections[self.projection_index(dep).expect("checked")];
                if p.per_batch() || other.per_batch() {
                    let set_based = if p.per_batch() { p } else { other };
                    return Err(Error::config(format!(
                        "{file}:{}: projection `{}` depends on `{dep}`, and `{}` is set-based (`-- per batch` in {}): a set-based projection may neither read nor be read by another projection",
                        p.line,
                        p.name,
                        set_based.name,
                        set_based.handler_path().display()
                    ))
                    .with_hint("write the reading projection's handlers per event (`-- on TYPE` sections) for both, or let the set-based projection read only the events"));
                }
            }
        }
        Ok(())
    }
}

/// A place in the config file, for error messages.
#[derive(Clone)]
struct Location {
    file: String,
    line: usize,
}

impl Location {
    fn err(&self, message: String) -> Error {
        Error::config(format!("{}:{}: {message}", self.file, self.line))
    }
}

/// Moves the causes of `inner` (e.g. "PostgreSQL would truncate it") under `outer`.
fn keep_causes(mut outer: Error, inner: Error) -> Error {
    outer = outer.with_state_of(&inner);
    outer.causes.extend(inner.into_details().causes);
    outer
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn expr(value: &Value, key: &str) -> Result<Expr> {
    let sql = value.sql.trim();
    if sql.is_empty() {
        return Err(value.loc.err(format!("`events.{key}` is empty")));
    }
    Ok(Expr {
        sql: sql.to_string(),
        line: value.loc.line,
    })
}

/// One `[events]` key after merging with the preset: its text and where it was written (the
/// `preset` line when the preset supplied it).
struct Value {
    sql: String,
    loc: Location,
}

/// The `[events]` keys, each written explicitly or else taken from the preset.
struct EventKeys {
    table: Option<Value>,
    source: Option<Value>,
    lock_table: Option<Value>,
    position: Option<Value>,
    stream: Option<Value>,
    event_type: Option<Value>,
    data: Option<Value>,
    metadata: Option<Value>,
    timestamp: Option<Value>,
    filter: Option<Value>,
    ordering: Option<Value>,
    transaction_id: Option<Value>,
    gap_age: Option<Value>,
    position_sequence: Option<Value>,
    preset: Option<PresetUse>,
}

/// Merges the explicit keys over the preset's, key by key. A preset's `transaction_id` only
/// goes with its own `ordering`: a config that writes another `ordering` drops it.
fn merge_preset(
    raw: &raw::RawEvents,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<EventKeys> {
    let preset = match &raw.preset {
        None => None,
        Some(name) => {
            let loc = at(name.span());
            let wanted = name.get_ref().trim();
            let preset = presets::find(wanted).ok_or_else(|| {
                loc.err(format!("unknown `events.preset = \"{wanted}\"`"))
                    .with_hint(format!("known presets: {}", presets::names().join(", ")))
            })?;
            Some((preset, loc))
        }
    };
    let pick = |written: &Option<toml::Spanned<String>>,
                from_preset: fn(&presets::Preset) -> Option<&'static str>|
     -> Option<Value> {
        match (written, &preset) {
            (Some(v), _) => Some(Value {
                sql: v.get_ref().clone(),
                loc: at(v.span()),
            }),
            (None, Some((p, loc))) => from_preset(p).map(|sql| Value {
                sql: sql.to_string(),
                loc: loc.clone(),
            }),
            (None, None) => None,
        }
    };
    let ordering_changed = raw
        .ordering
        .as_ref()
        .is_some_and(|o| preset.as_ref().and_then(|(p, _)| p.ordering) != Some(o.get_ref().trim()));
    let transaction_id = if ordering_changed && raw.transaction_id.is_none() {
        None
    } else {
        pick(&raw.transaction_id, |p| p.transaction_id)
    };
    // Likewise the preset's `gap_age` belongs to its (gap-aware) ordering.
    let gap_age = if ordering_changed && raw.gap_age.is_none() {
        None
    } else {
        pick(&raw.gap_age, |p| p.gap_age)
    };
    // And so does its `position_sequence`, which only gap-aware reading uses, and only with
    // the preset's table.
    let position_sequence = if (ordering_changed && raw.position_sequence.is_none())
        || ((raw.table.is_some() || raw.source.is_some()) && raw.position_sequence.is_none())
    {
        None
    } else {
        pick(&raw.position_sequence, |p| p.position_sequence)
    };
    // Where events come from (`table`, or `source` with its `lock_table`) is one choice: a
    // config that writes either takes nothing of it from the preset.
    let own_from = raw.table.is_some() || raw.source.is_some();
    let from_preset = |written: &Option<toml::Spanned<String>>,
                       get: fn(&presets::Preset) -> Option<&'static str>| {
        if own_from && written.is_none() {
            None
        } else {
            pick(written, get)
        }
    };
    // Metadata and filter as on an installation without the store's optional columns;
    // validation adds those the table has.
    let none = |_: &str| false;
    let built = |written: &Option<toml::Spanned<String>>, sql: Option<String>| match written {
        Some(v) => Some(Value {
            sql: v.get_ref().clone(),
            loc: at(v.span()),
        }),
        None => preset.as_ref().and_then(|(_, loc)| {
            sql.map(|sql| Value {
                sql,
                loc: loc.clone(),
            })
        }),
    };
    let metadata = built(
        &raw.metadata,
        preset.as_ref().and_then(|(p, _)| p.metadata_sql(&none)),
    );
    let filter = built(
        &raw.filter,
        preset.as_ref().and_then(|(p, _)| p.filter_sql(&none)),
    );
    let mut keys = EventKeys {
        table: from_preset(&raw.table, |p| p.table),
        source: from_preset(&raw.source, |p| p.source),
        lock_table: from_preset(&raw.lock_table, |p| p.lock_table),
        position: pick(&raw.position, |p| Some(p.position)),
        stream: pick(&raw.stream, |p| Some(p.stream)),
        event_type: pick(&raw.event_type, |p| Some(p.event_type)),
        data: pick(&raw.data, |p| Some(p.data)),
        metadata,
        timestamp: pick(&raw.timestamp, |p| p.timestamp),
        filter,
        ordering: pick(&raw.ordering, |p| p.ordering),
        transaction_id,
        gap_age,
        position_sequence,
        preset: None,
    };
    if let Some((p, loc)) = &preset {
        // A key is the preset's when the config does not write it and the preset gave it.
        let written = [
            ("table", raw.table.is_some()),
            ("source", raw.source.is_some()),
            ("lock_table", raw.lock_table.is_some()),
            ("position", raw.position.is_some()),
            ("stream", raw.stream.is_some()),
            ("type", raw.event_type.is_some()),
            ("data", raw.data.is_some()),
            ("metadata", raw.metadata.is_some()),
            ("timestamp", raw.timestamp.is_some()),
            ("filter", raw.filter.is_some()),
            ("ordering", raw.ordering.is_some()),
            ("transaction_id", raw.transaction_id.is_some()),
            ("position_sequence", raw.position_sequence.is_some()),
        ];
        let present = [
            keys.table.is_some(),
            keys.source.is_some(),
            keys.lock_table.is_some(),
            keys.position.is_some(),
            keys.stream.is_some(),
            keys.event_type.is_some(),
            keys.data.is_some(),
            keys.metadata.is_some() || !p.metadata_object.is_empty(),
            keys.timestamp.is_some(),
            keys.filter.is_some() || !p.optional.is_empty(),
            keys.ordering.is_some(),
            keys.transaction_id.is_some(),
            keys.position_sequence.is_some(),
        ];
        let supplied = written
            .iter()
            .zip(present)
            .filter(|((_, w), has)| !w && *has)
            .map(|((k, _), _)| *k)
            .collect();
        keys.preset = Some(PresetUse {
            preset: p,
            line: loc.line,
            supplied,
        });
    }
    Ok(keys)
}

fn convert_events(
    raw: &toml::Spanned<raw::RawEvents>,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<EventsConfig> {
    let keys = merge_preset(raw.get_ref(), at)?;
    let events_loc = at(raw.span());
    let required = |v: &Option<Value>, key: &str| -> Result<Expr> {
        match v {
            Some(v) => expr(v, key),
            None => Err(events_loc
                .err(format!("`[events]` is missing field `{key}`"))
                .with_hint(
                    "write it, or set `preset` to the event store you use (it fills in every key)",
                )),
        }
    };
    // With a `source`, reproject cannot tell which table the appends write, and the
    // gap-aware proof needs exactly that (see docs/internals/design.md): `lock_table` is required in
    // every ordering mode, which also gives `reproject run` its table to wake on.
    let (table_key, source) = match (&keys.table, &keys.source, &keys.lock_table) {
        (Some(_), Some(s), _) => {
            return Err(s.loc.err(
                "`events.table` and `events.source` are mutually exclusive: read a table, or a query".into(),
            ))
        }
        (Some(_), None, Some(l)) => {
            return Err(l.loc.err(
                "`events.lock_table` is only used with `events.source` (with `table`, that table is the one watched)".into(),
            ))
        }
        (None, Some(s), None) => {
            return Err(s.loc.err(
                "`events.source` needs `events.lock_table`: the table each append inserts into, whose writers reproject watches so that no event is skipped".into(),
            ))
        }
        (None, Some(s), Some(_)) => ("lock_table", Some(expr(s, "source")?)),
        (_, None, _) => ("table", None),
    };
    let table_value = if source.is_some() {
        &keys.lock_table
    } else {
        &keys.table
    };
    let table_expr = required(table_value, table_key)?;
    let loc = &table_value.as_ref().expect("required above").loc;
    let table = parse_table_ref(&table_expr.sql)
        .map_err(|e| keep_causes(loc.err(format!("`events.{table_key}`: {}", e.message)), e))?;
    let opt = |v: &Option<Value>, key: &str| -> Result<Option<Expr>> {
        v.as_ref().map(|v| expr(v, key)).transpose()
    };
    Ok(EventsConfig {
        table,
        table_line: loc.line,
        source,
        position: required(&keys.position, "position")?,
        stream: required(&keys.stream, "stream")?,
        event_type: required(&keys.event_type, "type")?,
        data: required(&keys.data, "data")?,
        metadata: opt(&keys.metadata, "metadata")?,
        timestamp: opt(&keys.timestamp, "timestamp")?,
        filter: opt(&keys.filter, "filter")?,
        ordering: ordering(&keys)?,
        position_sequence: position_sequence(&keys)?,
        preset: keys.preset.clone(),
    })
}

/// `events.position_sequence`: a sequence name (`seq` or `schema.seq`), only with gap-aware
/// ordering (the other modes do not prove gaps).
fn position_sequence(keys: &EventKeys) -> Result<Option<Expr>> {
    let Some(v) = &keys.position_sequence else {
        return Ok(None);
    };
    let mode = keys.ordering.as_ref().map_or("gap-aware", |o| o.sql.trim());
    if mode != "gap-aware" {
        return Err(v.loc.err(format!(
            "`events.position_sequence` is only used with `events.ordering = \"gap-aware\"` (ordering is \"{mode}\")"
        )));
    }
    let e = expr(v, "position_sequence")?;
    parse_table_ref(&e.sql).map_err(|err| {
        keep_causes(
            v.loc
                .err(format!("`events.position_sequence`: {}", err.message)),
            err,
        )
    })?;
    Ok(Some(e))
}

/// `events.ordering`, with `events.transaction_id`, which only `xid8` takes and requires, and
/// `events.gap_age`, which only `gap-aware` takes.
fn ordering(keys: &EventKeys) -> Result<Ordering> {
    let mode = keys.ordering.as_ref().map(|v| (v.sql.trim(), &v.loc));
    let gap_age = match &keys.gap_age {
        None => None,
        Some(age) => {
            let text = age.sql.trim();
            let parsed = humantime::parse_duration(text).map_err(|e| {
                age.loc
                    .err(format!(
                        "`events.gap_age = \"{text}\"` is not a duration ({e})"
                    ))
                    .with_hint("write e.g. \"5s\", \"500ms\" or \"1m\"")
            })?;
            Some((parsed, age))
        }
    };
    if let (Some((_, age)), Some((other, _))) = (&gap_age, mode) {
        if other == "xid8" || other == "serialized" {
            return Err(age.loc.err(format!(
                "`events.gap_age` is only used with `events.ordering = \"gap-aware\"` (ordering is \"{other}\")"
            )));
        }
    }
    match (mode, &keys.transaction_id) {
        (Some(("xid8", _)), Some(tx)) => Ok(Ordering::Xid8 {
            transaction_id: expr(tx, "transaction_id")?,
        }),
        (Some(("xid8", loc)), None) => Err(loc.err(
            "`events.ordering = \"xid8\"` needs `events.transaction_id`, an SQL expression of type xid8 (e.g. a column with DEFAULT pg_current_xact_id())".into(),
        )),
        (Some((other, loc)), _) if other != "gap-aware" && other != "serialized" => Err(loc.err(
            format!("unknown `events.ordering = \"{other}\"`; expected \"gap-aware\" (the default), \"xid8\" or \"serialized\""),
        )),
        (mode, Some(tx)) => Err(tx.loc.err(format!(
            "`events.transaction_id` is only used with `events.ordering = \"xid8\"` (ordering is \"{}\")",
            mode.map_or("gap-aware", |m| m.0)
        ))),
        (Some(("serialized", _)), None) => Ok(Ordering::Serialized),
        _ => Ok(Ordering::GapAware {
            gap_age: gap_age.map_or(std::time::Duration::ZERO, |(d, _)| d),
        }),
    }
}

fn handover(
    raw: &toml::Spanned<raw::RawHandover>,
    name: &str,
    ordering: &Ordering,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<Handover> {
    let h = raw.get_ref();
    let field = |v: &toml::Spanned<String>, key: &str| -> Result<String> {
        let text = v.get_ref().trim();
        if text.is_empty() {
            return Err(at(v.span()).err(format!("projection `{name}`: `handover.{key}` is empty")));
        }
        Ok(text.to_string())
    };
    let loc = at(h.table.span());
    let table = parse_table_ref(h.table.get_ref()).map_err(|e| {
        keep_causes(
            loc.err(format!(
                "projection `{name}`: `handover.table`: {}",
                e.message
            )),
            e,
        )
    })?;
    let transaction_id_column = h
        .transaction_id_column
        .as_ref()
        .map(|c| field(c, "transaction_id_column"))
        .transpose()?;
    match (ordering, &h.transaction_id_column) {
        (Ordering::Xid8 { .. }, None) => {
            return Err(at(raw.span()).err(format!(
                "projection `{name}`: with `events.ordering = \"xid8\"` the hand-over needs `transaction_id_column`: a position alone is no cut in (transaction id, position) order"
            )))
        }
        (Ordering::Xid8 { .. }, Some(_)) => {}
        (other, Some(c)) => {
            return Err(at(c.span()).err(format!(
                "projection `{name}`: `handover.transaction_id_column` is only used with `events.ordering = \"xid8\"` (ordering is \"{}\")",
                other.name()
            )))
        }
        (_, None) => {}
    }
    Ok(Handover {
        table,
        key_column: field(&h.key_column, "key_column")?,
        key: h.key.get_ref().clone(),
        position_column: field(&h.position_column, "position_column")?,
        transaction_id_column,
        line: loc.line,
    })
}

fn convert_projection(
    p: &raw::RawProjection,
    name: &str,
    base: &Path,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<ProjectionConfig> {
    let line = at(p.name.span()).line;
    let mut tables = Vec::new();
    for t in p.tables.get_ref() {
        let loc = at(t.span());
        let table = parse_table_ref(t.get_ref())
            .map_err(|e| keep_causes(loc.err(format!("projection `{name}`: {}", e.message)), e))?;
        tables.push(OwnedTable {
            table,
            line: loc.line,
        });
    }
    if tables.is_empty() {
        return Err(at(p.tables.span()).err(format!("projection `{name}` lists no tables")));
    }
    let kind = match (&p.handlers, &p.command) {
        (Some(h), None) => {
            if let Some(t) = &p.command_timeout {
                return Err(at(t.span()).err(format!(
                    "projection `{name}`: `command_timeout` is only used with `command`"
                )));
            }
            ProjectionKind::Sql(handler_source(h, name, base, at)?)
        }
        (None, Some(c)) => ProjectionKind::External(external_command(
            c,
            p.command_timeout.as_ref(),
            name,
            base,
            at,
        )?),
        (Some(h), Some(_)) => {
            return Err(at(h.span()).err(format!(
                "projection `{name}` has both `handlers` and `command`; it is rebuilt by one of them"
            ))
            .with_hint("keep `handlers` to let reproject replay the events, or `command` to run your own projector"))
        }
        // A Rust projection: whether the program registered it is checked when a run needs it
        // ([`crate::model::projection::require_registered`]).
        (None, None) => ProjectionKind::Rust,
    };
    let tolerance = match &p.row_count_tolerance {
        Some(t) => {
            let v = *t.get_ref();
            if !(0.0..=100.0).contains(&v) || v.is_nan() {
                return Err(at(t.span()).err(format!(
                    "projection `{name}`: `row_count_tolerance` is a percentage from 0 to 100, got {v}"
                )));
            }
            v
        }
        None => DEFAULT_ROW_COUNT_TOLERANCE,
    };
    let mut checks = Vec::new();
    for (i, c) in p.checks.iter().flatten().enumerate() {
        let check_name = c.name.clone().unwrap_or_else(|| format!("check {}", i + 1));
        let sql = &c.sql;
        let loc = at(sql.span());
        let statement = handlers::parse_single(sql.get_ref())
            .map_err(|why| loc.err(format!("projection `{name}`: check `{check_name}`: {why}")))?;
        checks.push(Check {
            name: check_name,
            line: loc.line,
            sql: statement,
        });
    }
    let column = |v: &Option<toml::Spanned<String>>, key: &str| -> Result<Option<DeclaredColumn>> {
        let Some(v) = v else { return Ok(None) };
        let text = v.get_ref().trim();
        if text.is_empty() {
            return Err(at(v.span()).err(format!("projection `{name}`: `{key}` is empty")));
        }
        Ok(Some(DeclaredColumn {
            name: text.to_string(),
            line: at(v.span()).line,
        }))
    };
    let stream_key = column(&p.stream_key, "stream_key")?;
    let position_column = column(&p.position_column, "position_column")?;
    let redefine = redefinitions(p, name, base, at)?;
    let mut retire = Vec::new();
    for t in p.retire.iter().flatten() {
        let loc = at(t.span());
        let table = parse_table_ref(t.get_ref()).map_err(|e| {
            keep_causes(
                loc.err(format!("projection `{name}`: `retire`: {}", e.message)),
                e,
            )
        })?;
        retire.push(OwnedTable {
            table,
            line: loc.line,
        });
    }
    let reshape = p
        .reshape
        .as_ref()
        .map(|f| {
            crate::model::shape::file::ReshapeFile::load(&base.join(f.get_ref())).map_err(|e| {
                e.context(format!(
                    "{}: projection `{name}`: bad reshape file",
                    at(f.span()).file_line()
                ))
            })
        })
        .transpose()?;
    let mut create = Vec::new();
    for (key, f) in p.create.iter().flatten() {
        let loc = at(f.span());
        let table = parse_table_ref(key).map_err(|e| {
            keep_causes(
                loc.err(format!(
                    "projection `{name}`: `create` key `{key}`: {}",
                    e.message
                )),
                e,
            )
        })?;
        if !tables.iter().any(|t| t.table == table) {
            return Err(loc
                .err(format!(
                    "projection `{name}`: `create` defines `{table}`, which is not under `tables`"
                ))
                .with_hint("list the new table under `tables` too: `create` only says how to make it when it does not exist yet"));
        }
        let file =
            crate::model::shape::file::ReshapeFile::load(&base.join(f.get_ref())).map_err(|e| {
                e.context(format!(
                    "{}: projection `{name}`: bad definition of `{table}`",
                    loc.file_line()
                ))
            })?;
        // The definition makes this table only: another name in braces would be created (or
        // changed) under a name nothing swaps.
        for st in &file.statements {
            for r in &st.tables {
                let named = parse_table_ref(&r.written).ok();
                if named.as_ref().map(|n| n.name.as_str()) != Some(table.name.as_str())
                    || named
                        .as_ref()
                        .and_then(|n| n.schema.as_ref())
                        .is_some_and(|s| Some(s) != table.schema.as_ref())
                {
                    return Err(Error::config(format!(
                        "{}:{}: projection `{name}`: the definition of `{table}` names `{{{{{}}}}}`; it may name only `{{{{{}}}}}`",
                        file.path.display(),
                        r.line,
                        r.written,
                        table.name
                    ))
                    .with_hint("a definition creates one new table (with its indexes, comments and grants); change existing tables with `reshape`"));
                }
            }
        }
        if !file.statements.iter().any(|st| {
            let words: Vec<String> = st
                .render(|r| r.written.clone())
                .split_whitespace()
                .take(3)
                .map(str::to_ascii_uppercase)
                .collect();
            matches!(words.as_slice(), [c, t, ..] if c == "CREATE" && t == "TABLE")
                || matches!(words.as_slice(), [c, _, t] if c == "CREATE" && t == "TABLE")
        }) {
            return Err(Error::config(format!(
                "{}: projection `{name}`: the definition of `{table}` has no `CREATE TABLE {{{{{}}}}}` statement",
                file.path.display(),
                table.name
            ))
            .with_hint(format!("start it with `CREATE TABLE {{{{{}}}}} (…)`", table.name)));
        }
        create.push(crate::model::shape::file::TableDefinition {
            table,
            key: key.clone(),
            line: loc.line,
            file,
        });
    }
    Ok(ProjectionConfig {
        name: name.to_string(),
        line,
        tables,
        kind,
        depends_on: BTreeSet::new(),
        declared_depends_on: BTreeSet::new(),
        row_count_tolerance: tolerance,
        checks,
        handover: None,
        replay_triggers: p.replay_triggers.unwrap_or(false),
        build_unlogged: p.build_unlogged.unwrap_or(false),
        stream_key,
        position_column,
        redefine,
        reshape,
        retire,
        create,
    })
}

/// Loads `redefine = { KEY = FILE }`: each key names one dependent (`schema.view`,
/// `name on schema.table`, `publication name`), each file holds the statements that define it
/// against the new shape, with `{{table}}` references (resolved with the handlers').
fn redefinitions(
    p: &raw::RawProjection,
    name: &str,
    base: &Path,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<Vec<crate::model::shape::dependent::Redefinition>> {
    let mut out: Vec<crate::model::shape::dependent::Redefinition> = Vec::new();
    for (key, file) in p.redefine.iter().flatten() {
        let loc = at(file.span());
        let dependent = crate::model::shape::dependent::parse_key(key).map_err(|why| {
            loc.err(format!("projection `{name}`: `redefine` key `{key}`: {why}"))
                .with_hint("a key is `schema.view`, `name on schema.table` (a policy, trigger, rule or foreign key) or `publication name`")
        })?;
        if let Some(first) = out.iter().find(|r| r.dependent == dependent) {
            return Err(loc.err(format!(
                "projection `{name}`: `redefine` names `{dependent}` twice (`{}` at line {}, and `{key}`)",
                first.key, first.line
            )));
        }
        let path = base.join(file.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            loc.err(format!(
                "projection `{name}`: cannot read `{}`, the redefinition of `{key}`",
                path.display()
            ))
            .caused_by(e)
            .with_hint("a `redefine` file is relative to the config file's directory")
        })?;
        let in_file = |line: usize, why: String| {
            Error::config(format!(
                "{}:{line}: projection `{name}`: redefinition of `{key}`: {why}",
                path.display()
            ))
        };
        let statements = handlers::parse_statements(&text).map_err(|(l, why)| in_file(l, why))?;
        if statements.is_empty() {
            return Err(in_file(1, "no SQL statement".into()));
        }
        if let Some(st) = statements
            .iter()
            .find(|st| st.uses_params() || st.reads_events())
        {
            return Err(in_file(
                st.line,
                "a redefinition runs once, at the swap: it cannot use event parameters such as `:stream` or `:events`".into(),
            ));
        }
        out.push(crate::model::shape::dependent::Redefinition {
            key: key.clone(),
            dependent,
            path,
            line: loc.line,
            statements,
        });
    }
    Ok(out)
}

/// Checks `command` and `command_timeout` of a projection.
fn external_command(
    raw: &toml::Spanned<Vec<toml::Spanned<String>>>,
    timeout: Option<&toml::Spanned<i64>>,
    name: &str,
    base: &Path,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<ExternalCommand> {
    let loc = at(raw.span());
    let argv: Vec<String> = raw.get_ref().iter().map(|a| a.get_ref().clone()).collect();
    let Some(first) = argv.first() else {
        return Err(loc
            .err(format!("projection `{name}`: `command` is empty"))
            .with_hint(
            "write the program and its arguments, e.g. `command = [\"python3\", \"replay.py\"]`",
        ));
    };
    if first.trim().is_empty() {
        return Err(loc.err(format!("projection `{name}`: `command` names no program")));
    }
    // Run without a shell, so `$VAR`, pipes and `~` mean nothing: say so instead of failing
    // later with "no such file".
    if raw.get_ref().len() == 1 && first.contains(' ') && !base.join(first).exists() {
        return Err(loc.err(format!(
            "projection `{name}`: `command = [\"{first}\"]` is one program name with spaces; the command runs without a shell"
        ))
        .with_hint("write each argument as its own string: `command = [\"python3\", \"replay.py\"]`"));
    }
    let program = if first.contains('/') {
        let path = base.join(first);
        if !path.is_file() {
            return Err(loc
                .err(format!(
                    "projection `{name}`: the command's program `{}` does not exist",
                    path.display()
                ))
                .with_hint("a program path is relative to the config file's directory"));
        }
        path
    } else {
        PathBuf::from(first)
    };
    let timeout = match timeout {
        None => None,
        Some(t) if *t.get_ref() >= 1 => Some(std::time::Duration::from_secs(*t.get_ref() as u64)),
        Some(t) => {
            return Err(at(t.span()).err(format!(
                "projection `{name}`: `command_timeout` is a number of seconds, at least 1; got {}",
                t.get_ref()
            )))
        }
    };
    // `reproject.toml` given as a bare name has the empty path as its parent.
    let dir = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.to_path_buf()
    };
    let source = describe_command(&argv, &dir);
    Ok(ExternalCommand {
        argv,
        program,
        dir,
        timeout,
        line: loc.line,
        source,
    })
}

/// How the recorded handler source of an external projection starts.
pub const EXTERNAL_SOURCE_PREFIX: &str = "external projector (no handlers): ";

/// The recorded source of an external projection ([`ExternalCommand::source`]): the command
/// and the text of every file its arguments name next to the config.
fn describe_command(argv: &[String], dir: &Path) -> String {
    let mut source = format!("{EXTERNAL_SOURCE_PREFIX}{}\n", display_argv(argv));
    for arg in argv {
        let path = dir.join(arg);
        if path.is_file() {
            if let Ok(text) = std::fs::read(&path) {
                source.push_str(&format!("-- file {arg}\n"));
                source.push_str(&String::from_utf8_lossy(&text));
                source.push('\n');
            }
        }
    }
    source
}

/// Loads a projection's SQL handler file.
fn handler_source(
    file: &toml::Spanned<String>,
    name: &str,
    base: &Path,
    at: &impl Fn(std::ops::Range<usize>) -> Location,
) -> Result<HandlerFile> {
    HandlerFile::load(&base.join(file.get_ref())).map_err(|e| {
        e.context(format!(
            "{}: projection `{name}`: bad handlers",
            at(file.span()).file_line()
        ))
    })
}

impl Location {
    fn file_line(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

#[cfg(test)]
mod tests;
