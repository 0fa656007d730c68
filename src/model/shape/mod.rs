//! What a projection's new shape is, as data: the column changes a declared `reshape` makes
//! (read from the catalog by the pipeline, never parsed from the DDL), what a rebuild will do
//! about it, the reshape file itself (`file`) and the `redefine` entries (`dependent`). The
//! config holds these and the state records them; the work on the database is in
//! `pipeline/shape/`.

pub mod dependent;
pub mod diff;
pub mod file;

use crate::model::fingerprint::{Fingerprint, Shaped};
use crate::model::ident::TableName;

/// One column as the shape change sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name, unquoted.
    pub name: String,
    /// The type as `format_type` prints it (`numeric(12,2)`, `text[]`).
    pub type_name: String,
}

/// What the declared change does to one column: `before` is the live table's column, `after`
/// the next generation's. Added: no `before`; dropped: no `after`; renamed: the names differ;
/// retyped: the types differ (a column can be renamed and retyped at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnChange {
    /// The column of the live table, if it existed.
    pub before: Option<Column>,
    /// The column of the next generation, if it exists.
    pub after: Option<Column>,
}

impl ColumnChange {
    /// A new column.
    pub fn is_added(&self) -> bool {
        self.before.is_none() && self.after.is_some()
    }

    /// A column the next generation no longer has.
    pub fn is_dropped(&self) -> bool {
        self.before.is_some() && self.after.is_none()
    }

    /// A kept column under a new name.
    pub fn is_renamed(&self) -> bool {
        matches!((&self.before, &self.after), (Some(b), Some(a)) if b.name != a.name)
    }

    /// A kept column of a new type.
    pub fn is_retyped(&self) -> bool {
        matches!((&self.before, &self.after), (Some(b), Some(a)) if b.type_name != a.type_name)
    }
}

/// The declared change of one live table: only the columns that change are listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeChange {
    /// The projection that declares it.
    pub projection: String,
    /// The live table.
    pub table: TableName,
    /// The columns that are added, dropped, renamed or retyped.
    pub columns: Vec<ColumnChange>,
}

/// Only the entries of a column map that change something.
pub fn changed(map: &[ColumnChange]) -> Vec<ColumnChange> {
    map.iter()
        .filter(|c| c.before != c.after)
        .cloned()
        .collect()
}

/// What a rebuild will do about a projection's declared `reshape`.
#[derive(Debug, Clone)]
pub enum Planned {
    /// The DDL runs on the clones; what it does, as read on the stand-ins (empty until the
    /// stand-ins were reshaped, write_targets.rs).
    Applies(Vec<Applied>),
    /// The live tables already have this shape, put in place by this run: the clones keep
    /// the live shape.
    AlreadyApplied(i64),
}

/// What the DDL did to one table.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The live table.
    pub live: TableName,
    /// Every column before and after (kept ones included), matched by attribute number.
    pub map: Vec<ColumnChange>,
    /// The copy's fingerprint right after the DDL, under the names it will have once live
    /// (diff.rs `canonicalize`).
    pub shaped: Shaped,
    /// The live table's fingerprint when the DDL ran.
    pub live_fingerprint: Fingerprint,
}

impl Applied {
    /// The columns this table's shape change adds, drops, renames or retypes.
    pub fn shape_change(&self, projection: &str) -> ShapeChange {
        ShapeChange {
            projection: projection.to_string(),
            table: self.live.clone(),
            columns: changed(&self.map),
        }
    }
}
