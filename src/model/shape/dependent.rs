//! The `redefine` entries of a projection: which dependent of a changed column each names
//! (parsed from its key) and the statements that define it against the new shape.

use crate::model::ident::{parse_table_ref, TableName};
use std::fmt;

/// The kinds of dependent a shape change can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
    /// A row-level security policy (on the table, or on another table reading it).
    Policy,
    /// A trigger of the table (`UPDATE OF` a column, or a `WHEN` condition).
    Trigger,
    /// A foreign key of the table, or of another table referencing it.
    ForeignKey,
    /// A rule of another relation whose action reads the table.
    Rule,
    /// A publication that lists columns of the table or filters its rows by them.
    Publication,
}

impl Kind {
    /// The kind in words, as messages and the state schema write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::MaterializedView => "materialized view",
            Kind::Policy => "policy",
            Kind::Trigger => "trigger",
            Kind::ForeignKey => "foreign key",
            Kind::Rule => "rule",
            Kind::Publication => "publication",
        }
    }

    /// The kind from [`Kind::name`].
    pub fn parse(text: &str) -> Option<Kind> {
        [
            Kind::View,
            Kind::MaterializedView,
            Kind::Policy,
            Kind::Trigger,
            Kind::ForeignKey,
            Kind::Rule,
            Kind::Publication,
        ]
        .into_iter()
        .find(|k| k.name() == text)
    }

    /// A view or materialized view: a relation with an owner and privileges of its own.
    pub fn is_relation(self) -> bool {
        matches!(self, Kind::View | Kind::MaterializedView)
    }
}

/// Which object a dependent is, as a `redefine` key names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dependent {
    /// A view or materialized view: `schema.name`.
    Relation(TableName),
    /// A policy, trigger, rule or foreign key: `name on schema.table`, the table holding it.
    On {
        /// The object's name.
        name: String,
        /// The table (or view, for a rule) it belongs to.
        table: TableName,
    },
    /// A publication: `publication name`.
    Publication(String),
}

impl fmt::Display for Dependent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dependent::Relation(t) => write!(f, "{}.{}", t.schema, t.name),
            Dependent::On { name, table } => write!(f, "{name} on {}.{}", table.schema, table.name),
            Dependent::Publication(name) => write!(f, "publication {name}"),
        }
    }
}

/// Parses a `redefine` key: `schema.view`, `name on schema.table` or `publication name`.
/// The schema is required: a key names one object, whatever the search path.
pub fn parse_key(key: &str) -> std::result::Result<Dependent, String> {
    let key = key.trim();
    let qualified = |text: &str| -> std::result::Result<TableName, String> {
        let r = parse_table_ref(text).map_err(|e| e.into_details().message)?;
        match r.schema {
            Some(schema) => Ok(TableName::new(schema, r.name)),
            None => Err(format!(
                "`{text}` is not schema-qualified; write `public.{}`",
                r.name
            )),
        }
    };
    let unquote = |name: &str| -> std::result::Result<String, String> {
        let name = name.trim();
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => name.to_string(),
        };
        if name.is_empty() {
            Err("the name is empty".into())
        } else {
            Ok(name)
        }
    };
    if let Some(name) = key.strip_prefix("publication ") {
        return Ok(Dependent::Publication(unquote(name)?));
    }
    if let Some((name, table)) = key.rsplit_once(" on ") {
        return Ok(Dependent::On {
            name: unquote(name)?,
            table: qualified(table)?,
        });
    }
    Ok(Dependent::Relation(qualified(key)?))
}

/// One `redefine` entry of a projection, loaded with the config.
#[derive(Debug, Clone)]
pub struct Redefinition {
    /// The key as written.
    pub key: String,
    /// The dependent it names.
    pub dependent: Dependent,
    /// The file holding the statements, as resolved against the config's directory.
    pub path: std::path::PathBuf,
    /// Line of the entry in the config file.
    pub line: usize,
    /// The statements, with `{{table}}` references.
    pub statements: Vec<crate::model::handlers::Statement>,
}
