//! Rebuilding into a new shape: the DDL a projection declares for its next generation
//! (`reshape`), applied to the `_rebuild` clones after `LIKE … INCLUDING ALL`, and what that
//! change means for the table's columns and for everything that depends on them.
//!
//! The column changes are read from the catalog, never parsed from the DDL: right after the
//! LIKE clone its columns are the live table's, in the same order; the DDL then renames
//! (same attribute number, new name), retypes (same number, new type), drops (number gone) or
//! adds (new number) columns.

pub mod dependents;
pub mod redefine;
pub mod stand_in;

use crate::ident::TableName;

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
