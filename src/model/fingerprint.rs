//! The catalog fingerprint of a table, as data: everything an application can observe about
//! it except its rows (columns, constraints, indexes, grants, row-level security, triggers,
//! comments, storage, publications, sequences, and the views and foreign keys that point at
//! it), by name, never by OID. db/catalog/fingerprint.rs reads it (sql/fingerprint.sql); the
//! swap, the shape change and the state use it.
//!
//! The fields are named as the JSON keys of sql/fingerprint.sql, which is also the form
//! stored in reproject's state (`run_tables.fingerprint`, `run_shapes.shaped`): a key the
//! code reads is a field, so a misspelt one does not compile. Every field has a default and
//! a JSON `null` reads as the empty list, so rows written by older versions (with fewer
//! keys) still read. Codes PostgreSQL stores as `"char"` (`contype`, `relreplident`, …) stay
//! strings: a server may add codes, and a fingerprint must still read then.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A JSON `null` (an aggregate over no rows) reads as the empty value.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Everything about a table but its rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fingerprint {
    /// The owner's role name.
    pub owner: String,
    /// `relpersistence`: `p` permanent, `u` unlogged, `t` temporary.
    pub persistence: String,
    /// The tablespace, `None` for the database's default.
    pub tablespace: Option<String>,
    /// Storage parameters (`fillfactor=80`), sorted.
    #[serde(deserialize_with = "nullable")]
    pub reloptions: Vec<String>,
    /// Storage parameters of the TOAST table, sorted.
    #[serde(deserialize_with = "nullable")]
    pub toast_reloptions: Vec<String>,
    /// The table's comment.
    pub comment: Option<String>,
    /// Row-level security enabled.
    pub row_security: bool,
    /// Row-level security forced on the owner too.
    pub force_row_security: bool,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` an index.
    pub replica_identity: String,
    /// A partitioned table's key (`RANGE (day)`), `pg_get_partkeydef`. (The partition keys
    /// are left out of the stored form when empty: a plain table's reads as it always did.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// A partitioned table's partition bounds, sorted (the partitions are proven on their own).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
    /// A partition's bound (`FOR VALUES IN (1)`, `DEFAULT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_bound: Option<String>,
    /// Table privileges (the owner's implicit ones included).
    #[serde(deserialize_with = "nullable")]
    pub acl: Vec<Grant>,
    /// Columns in attribute order.
    #[serde(deserialize_with = "nullable")]
    pub columns: Vec<Column>,
    /// Constraints by name (foreign keys included).
    #[serde(deserialize_with = "nullable")]
    pub constraints: Vec<Constraint>,
    /// Indexes by name.
    #[serde(deserialize_with = "nullable")]
    pub indexes: Vec<Index>,
    /// Extended statistics objects by name.
    #[serde(deserialize_with = "nullable")]
    pub statistics: Vec<Statistics>,
    /// Row-level security policies by name.
    #[serde(deserialize_with = "nullable")]
    pub policies: Vec<Policy>,
    /// User triggers by name.
    #[serde(deserialize_with = "nullable")]
    pub triggers: Vec<Trigger>,
    /// Publications the table belongs to.
    #[serde(deserialize_with = "nullable")]
    pub publications: Vec<Publication>,
    /// Sequences owned by a column (serial) or behind an identity column.
    #[serde(deserialize_with = "nullable")]
    pub sequences: Vec<Sequence>,
    /// Foreign keys of other tables that point at this one.
    #[serde(deserialize_with = "nullable")]
    pub referenced_by: Vec<Reference>,
    /// Views and materialized views that read the table.
    #[serde(deserialize_with = "nullable")]
    pub views: Vec<View>,
}

/// One privilege of a role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grant {
    /// The role, or `PUBLIC`.
    pub grantee: String,
    /// `SELECT`, `INSERT`, …
    pub privilege: String,
    /// Granted `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// The type as `format_type` prints it.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The default expression.
    pub default: Option<String>,
    /// `attidentity`: empty, `a` always, `d` by default.
    pub identity: String,
    /// `attgenerated`: empty or `s` stored.
    pub generated: String,
    /// The collation's name.
    pub collation: Option<String>,
    /// `attstorage`.
    pub storage: String,
    /// The statistics target (`-1`, or `None` from PostgreSQL 17, for the default).
    pub statistics: Option<i64>,
    /// The column's comment.
    pub comment: Option<String>,
    /// Column privileges.
    #[serde(deserialize_with = "nullable")]
    pub acl: Vec<Grant>,
}

/// The column properties a swap carries over from the outgoing table (and a reshape may set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnProperty {
    /// Column privileges.
    Acl,
    /// The comment.
    Comment,
    /// The statistics target.
    Statistics,
}

impl ColumnProperty {
    /// All of them.
    pub const ALL: [ColumnProperty; 3] = [
        ColumnProperty::Acl,
        ColumnProperty::Comment,
        ColumnProperty::Statistics,
    ];
}

impl Column {
    /// Whether `property` is the same on both columns.
    pub fn same(&self, other: &Column, property: ColumnProperty) -> bool {
        match property {
            ColumnProperty::Acl => self.acl == other.acl,
            ColumnProperty::Comment => self.comment == other.comment,
            ColumnProperty::Statistics => self.statistics == other.statistics,
        }
    }

    /// Takes `property` from `other`.
    pub fn take(&mut self, other: &Column, property: ColumnProperty) {
        match property {
            ColumnProperty::Acl => self.acl = other.acl.clone(),
            ColumnProperty::Comment => self.comment = other.comment.clone(),
            ColumnProperty::Statistics => self.statistics = other.statistics,
        }
    }

    /// The column without what a swap carries over (grants, comment, statistics target):
    /// only its shape.
    fn shape(&self) -> Column {
        Column {
            acl: Vec::new(),
            comment: None,
            statistics: None,
            ..self.clone()
        }
    }
}

/// One constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraint {
    /// The constraint name.
    pub name: String,
    /// `contype`: `p` primary key, `u` unique, `x` exclusion, `c` check, `f` foreign key, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `pg_get_constraintdef`, without ` NOT VALID`.
    pub definition: String,
    /// The constraint's comment.
    pub comment: Option<String>,
}

impl Constraint {
    /// A foreign key (a swap re-creates these rather than inherits them).
    pub fn is_foreign_key(&self) -> bool {
        self.kind == "f"
    }

    /// The primary key.
    pub fn is_primary_key(&self) -> bool {
        self.kind == "p"
    }

    /// A check constraint.
    pub fn is_check(&self) -> bool {
        self.kind == "c"
    }

    /// Backed by an index of the same name (primary key, unique, exclusion).
    pub fn has_index(&self) -> bool {
        matches!(self.kind.as_str(), "p" | "u" | "x")
    }
}

/// One index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Index {
    /// The index name.
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// The table's replica identity index.
    pub replica_identity: bool,
    /// The table was clustered on it.
    pub clustered: bool,
    /// The index's comment.
    pub comment: Option<String>,
}

/// One extended statistics object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Statistics {
    /// Its name.
    pub name: String,
    /// `pg_get_statisticsobjdef`.
    pub definition: String,
}

/// One row-level security policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// The policy name.
    pub name: String,
    /// `polcmd`: `r` SELECT, `a` INSERT, `w` UPDATE, `d` DELETE, `*` ALL.
    pub command: String,
    /// Permissive (else restrictive).
    pub permissive: bool,
    /// The roles it applies to (`PUBLIC` for all).
    #[serde(deserialize_with = "nullable")]
    pub roles: Vec<String>,
    /// The `USING` expression.
    pub using: Option<String>,
    /// The `WITH CHECK` expression.
    pub check: Option<String>,
}

/// One user trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trigger {
    /// The trigger name.
    pub name: String,
    /// `pg_get_triggerdef`.
    pub definition: String,
    /// `tgenabled`: `O` origin, `D` disabled, `R` replica, `A` always.
    pub enabled: String,
}

/// Membership in one publication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Publication {
    /// The publication's name.
    pub publication: String,
    /// The column list, `None` for the whole row (always before PostgreSQL 15).
    pub columns: Option<Vec<String>>,
    /// The row filter.
    #[serde(rename = "where")]
    pub row_filter: Option<String>,
}

/// A sequence that belongs to a column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sequence {
    /// The sequence's name.
    pub name: String,
    /// The column it belongs to.
    pub column: String,
    /// `deptype`: `i` identity, `a` owned (serial).
    pub kind: String,
}

impl Sequence {
    /// The sequence of an identity column.
    pub fn is_identity(&self) -> bool {
        self.kind == "i"
    }
}

/// A foreign key of another table that points at this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reference {
    /// The referencing table, as `regclass` text.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// `pg_get_constraintdef`, without ` NOT VALID`.
    pub definition: String,
}

/// A view or materialized view that reads the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct View {
    /// Its name, as `regclass` text.
    pub name: String,
    /// `relkind`: `v` view, `m` materialized view.
    pub kind: String,
    /// Its options (`security_barrier=true`).
    pub options: Option<Vec<String>>,
    /// `pg_get_viewdef`.
    pub definition: String,
    /// A materialized view holds data.
    pub populated: bool,
}

impl View {
    /// A materialized view.
    pub fn is_materialized(&self) -> bool {
        self.kind == "m"
    }
}

/// The columns (without what a swap carries over), constraints (without foreign keys) and
/// indexes of a table: what a shape change defines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    /// The columns' shapes.
    pub columns: Vec<Column>,
    /// The constraints but foreign keys.
    pub constraints: Vec<Constraint>,
    /// The indexes.
    pub indexes: Vec<Index>,
}

/// What a `LIKE … INCLUDING ALL` clone inherits from the live table when it is created: if
/// this changed on the live table during a rebuild, the clone is stale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Structure {
    /// Columns, constraints and indexes.
    #[serde(flatten)]
    pub shape: Shape,
    /// Extended statistics objects.
    pub statistics: Vec<Statistics>,
    /// `relpersistence`.
    pub persistence: String,
    /// The tablespace.
    pub tablespace: Option<String>,
    /// The partition key, if partitioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The partitions' bounds: a partition attached to or detached from the live table after
    /// the clone makes the clone stale.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
}

impl Fingerprint {
    /// The table's [`Shape`].
    pub fn shape(&self) -> Shape {
        Shape {
            columns: self.columns.iter().map(Column::shape).collect(),
            constraints: self
                .constraints
                .iter()
                .filter(|c| !c.is_foreign_key())
                .cloned()
                .collect(),
            indexes: self.indexes.clone(),
        }
    }

    /// The table's [`Structure`].
    pub fn structure(&self) -> Structure {
        Structure {
            shape: self.shape(),
            statistics: self.statistics.clone(),
            persistence: self.persistence.clone(),
            tablespace: self.tablespace.clone(),
            partition_key: self.partition_key.clone(),
            partitions: self.partitions.clone(),
        }
    }

    /// The table's foreign keys.
    pub fn foreign_keys(&self) -> impl Iterator<Item = &Constraint> {
        self.constraints.iter().filter(|c| c.is_foreign_key())
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A fingerprint after a shape change (`run_shapes.shaped`), with, per kept column (by its
/// new name), the properties the DDL itself changed: those are not carried from the outgoing
/// table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shaped {
    /// The reshaped table's fingerprint.
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    /// Column name → the properties the DDL set on it.
    #[serde(default, deserialize_with = "nullable")]
    pub set_by_reshape: BTreeMap<String, Vec<ColumnProperty>>,
}

/// Human-readable differences between two fingerprints (or parts of them; empty when
/// equal). Lists of named things (columns, indexes, policies, …) are compared by name, so a
/// message says which one; paths use the JSON keys, as a user reading the stored form sees
/// them.
pub fn diff<T: Serialize>(expected: &T, actual: &T) -> Vec<String> {
    // Serialising these plain structs cannot fail (string keys, no custom serialisers).
    let as_json = |v: &T| serde_json::to_value(v).unwrap_or(Value::Null);
    let mut out = Vec::new();
    diff_at("", &as_json(expected), &as_json(actual), &mut out);
    out
}

fn key_of(v: &Value) -> Option<String> {
    let name = v.get("name").or_else(|| v.get("publication"))?.as_str()?;
    Some(match v.get("table").and_then(Value::as_str) {
        Some(table) => format!("{table}.{name}"),
        None => name.to_string(),
    })
}

fn diff_at(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    if expected == actual {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_at(
                    &sub,
                    e.get(k).unwrap_or(&Value::Null),
                    a.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(e), Value::Array(a))
            if e.iter().chain(a.iter()).all(|v| key_of(v).is_some()) =>
        {
            let em: BTreeMap<String, &Value> = e.iter().map(|v| (key_of(v).unwrap(), v)).collect();
            let am: BTreeMap<String, &Value> = a.iter().map(|v| (key_of(v).unwrap(), v)).collect();
            for (k, ev) in &em {
                match am.get(k) {
                    None => out.push(format!("{path} `{k}` is missing")),
                    Some(av) => diff_at(&format!("{path} `{k}`"), ev, av, out),
                }
            }
            for k in am.keys().filter(|k| !em.contains_key(*k)) {
                out.push(format!("{path} `{k}` is new"));
            }
        }
        _ => out.push(format!("{path}: was {expected}, now {actual}")),
    }
}

#[cfg(test)]
mod tests;
