//! Pure logic of a shape change: the column map read from attribute numbers, the canonical
//! names of the reshaped clone's indexes and constraints, and the differences shown by `plan`.

use crate::model::fingerprint::{ColumnProperty, Constraint, Fingerprint, Sequence, Shaped};
use crate::model::shape::{Column, ColumnChange};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A column with its attribute number, as read from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// `pg_attribute.attnum`.
    pub attnum: i16,
    /// Name and type.
    pub column: Column,
}

/// Every column before and after the DDL (kept ones included), matched by attribute number:
/// the live table's columns in order, then the added ones.
pub fn column_map(before: &[Attribute], after: &[Attribute]) -> Vec<ColumnChange> {
    let mut out: Vec<ColumnChange> = before
        .iter()
        .map(|b| ColumnChange {
            before: Some(b.column.clone()),
            after: after
                .iter()
                .find(|a| a.attnum == b.attnum)
                .map(|a| a.column.clone()),
        })
        .collect();
    for a in after {
        if !before.iter().any(|b| b.attnum == a.attnum) {
            out.push(ColumnChange {
                before: None,
                after: Some(a.column.clone()),
            });
        }
    }
    out
}

pub use super::changed;

/// The map the other way round (a rollback's: the reshaped columns back to the old ones).
pub fn reversed(map: &[ColumnChange]) -> Vec<ColumnChange> {
    map.iter()
        .map(|c| ColumnChange {
            before: c.after.clone(),
            after: c.before.clone(),
        })
        .collect()
}

/// The name a column of the outgoing generation has in the incoming one: `None` if dropped.
pub fn renamed<'a>(map: &'a [ColumnChange], name: &'a str) -> Option<&'a str> {
    match map
        .iter()
        .find(|c| c.before.as_ref().is_some_and(|b| b.name == name))
    {
        Some(c) => c.after.as_ref().map(|a| a.name.as_str()),
        None => Some(name),
    }
}

/// A column map as JSON (recorded with the run): `[{"before": {name, type}|null, "after": …}]`.
pub fn map_to_json(map: &[ColumnChange]) -> Value {
    let col = |c: &Option<Column>| {
        c.as_ref().map_or(
            Value::Null,
            |c| json!({"name": c.name, "type": c.type_name}),
        )
    };
    Value::Array(
        map.iter()
            .map(|c| json!({"before": col(&c.before), "after": col(&c.after)}))
            .collect(),
    )
}

/// A column map read back from [`map_to_json`].
pub fn map_from_json(v: &Value) -> Vec<ColumnChange> {
    let col = |c: &Value| {
        Some(Column {
            name: c.get("name")?.as_str()?.to_string(),
            type_name: c.get("type")?.as_str()?.to_string(),
        })
    };
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| ColumnChange {
            before: col(&c["before"]),
            after: col(&c["after"]),
        })
        .collect()
}

/// The part of an index definition that does not name the index or its table.
pub fn index_key(def: &str) -> String {
    let unique = def.starts_with("CREATE UNIQUE");
    let rest = def.find(" USING ").map_or(def, |i| &def[i..]);
    format!("{unique}{rest}")
}

/// An identifier as PostgreSQL prints it in definitions: bare when it can be.
fn pg_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        crate::model::ident::quote(name)
    }
}

/// An object name of the clone as the live table's would be: `balances_rebuild_currency_idx`
/// → `balances_currency_idx` (names PostgreSQL derived from the clone's name); a name the user
/// gave is kept.
pub fn derived_name(name: &str, clone: &str, live: &str) -> String {
    match name.strip_prefix(clone) {
        Some(rest) if rest.starts_with('_') => format!("{live}{rest}"),
        _ => name.to_string(),
    }
}

/// The reshaped clone's fingerprint (`after`) with the names it will have once live: an index
/// (and its constraint) that the clone had right after LIKE (`before`) takes the name of the
/// live table's index it copies (matched by definition, as a swap does); one the DDL added
/// keeps the name the user gave or gets one derived from the live table's. Index definitions
/// then name the live table. `schema` is the live table's schema.
pub fn canonicalize(
    live: &Fingerprint,
    before: &Fingerprint,
    after: &Fingerprint,
    clone: &str,
    schema: &str,
    live_name: &str,
) -> Fingerprint {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut live_indexes = live.indexes.clone();
    for b in &before.indexes {
        let key = index_key(&b.definition);
        if let Some(pos) = live_indexes
            .iter()
            .position(|l| index_key(&l.definition) == key)
        {
            names.insert(b.name.clone(), live_indexes.remove(pos).name);
        }
    }
    let index_name = |name: &str| {
        names
            .get(name)
            .cloned()
            .unwrap_or_else(|| derived_name(name, clone, live_name))
    };
    let mut out = after.clone();
    for i in &mut out.indexes {
        let name = index_name(&i.name);
        let def = &i.definition;
        let head = if def.starts_with("CREATE UNIQUE") {
            "CREATE UNIQUE INDEX"
        } else {
            "CREATE INDEX"
        };
        let rest = def.find(" USING ").map_or("", |p| &def[p..]);
        i.definition = format!(
            "{head} {} ON {}.{}{rest}",
            pg_ident(&name),
            pg_ident(schema),
            pg_ident(live_name)
        );
        i.name = name;
    }
    out.indexes.sort_by(|a, b| a.name.cmp(&b.name));
    let live_constraints: Vec<&str> = live.constraints.iter().map(|c| &c.name[..]).collect();
    for c in &mut out.constraints {
        c.name = if c.has_index() {
            // Backed by an index of the same name.
            index_name(&c.name)
        } else if live_constraints.contains(&c.name.as_str()) {
            // LIKE keeps check constraints' names.
            c.name.clone()
        } else {
            derived_name(&c.name, clone, live_name)
        };
    }
    out.constraints.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The column properties the DDL changed on kept columns (by their new names): `before` and
/// `after` are the copy's fingerprints around the DDL.
pub fn set_by_ddl(
    before: &Fingerprint,
    after: &Fingerprint,
    map: &[ColumnChange],
) -> BTreeMap<String, Vec<ColumnProperty>> {
    let mut out = BTreeMap::new();
    for m in map {
        let (Some(b), Some(a)) = (&m.before, &m.after) else {
            continue;
        };
        let (Some(cb), Some(ca)) = (before.column(&b.name), after.column(&a.name)) else {
            continue;
        };
        let keys: Vec<ColumnProperty> = ColumnProperty::ALL
            .into_iter()
            .filter(|k| !cb.same(ca, *k))
            .collect();
        if !keys.is_empty() {
            out.insert(a.name.clone(), keys);
        }
    }
    out
}

/// The same list for the way back (a rollback): keyed by the old names, read through `map`
/// (the forward column map).
pub fn set_by_ddl_reversed(
    set: &BTreeMap<String, Vec<ColumnProperty>>,
    map: &[ColumnChange],
) -> BTreeMap<String, Vec<ColumnProperty>> {
    let mut out = BTreeMap::new();
    for (name, keys) in set {
        if let Some(old) = map
            .iter()
            .find(|m| m.after.as_ref().is_some_and(|a| &a.name == name))
            .and_then(|m| m.before.as_ref())
        {
            out.insert(old.name.clone(), keys.clone());
        }
    }
    out
}

/// What the target fingerprint of an exchange is when the incoming table has another shape:
/// the outgoing table's fingerprint (`out`) with the structure of `shaped` (columns,
/// constraints but foreign keys, indexes) and everything carried mapped through `map`
/// (column privileges, comments and statistics targets of kept columns, publication column
/// lists, sequences of kept columns). Without a shape change the target is `out` itself.
pub fn target(out: &Fingerprint, shaped: &Shaped, map: &[ColumnChange]) -> Fingerprint {
    let mut t = out.clone();
    t.columns = shaped
        .fingerprint
        .columns
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let name = c.name.clone();
            let before = map
                .iter()
                .find(|m| m.after.as_ref().is_some_and(|a| a.name == name))
                .and_then(|m| m.before.as_ref());
            let old = match before {
                Some(b) => out.column(&b.name),
                // Not in the map: a column the DDL left alone.
                None if !map
                    .iter()
                    .any(|m| m.after.as_ref().is_some_and(|a| a.name == name)) =>
                {
                    out.column(&name)
                }
                None => None,
            };
            // What the DDL itself set on a kept column stays; the rest is carried.
            let set_by_ddl = shaped.set_by_reshape.get(&name);
            if let Some(o) = old {
                for key in ColumnProperty::ALL {
                    if !set_by_ddl.is_some_and(|keys| keys.contains(&key)) {
                        c.take(o, key);
                    }
                }
            }
            c
        })
        .collect();
    let mut constraints: Vec<Constraint> = shaped
        .fingerprint
        .constraints
        .iter()
        .filter(|c| !c.is_foreign_key())
        .chain(out.foreign_keys())
        .cloned()
        .collect();
    constraints.sort_by(|a, b| a.name.cmp(&b.name));
    t.constraints = constraints;
    t.indexes = shaped
        .fingerprint
        .indexes
        .iter()
        .map(|i| {
            let mut i = i.clone();
            let same = out.indexes.iter().find(|o| o.name == i.name);
            i.replica_identity = same.is_some_and(|o| o.replica_identity);
            i.clustered = same.is_some_and(|o| o.clustered);
            i
        })
        .collect();
    for p in &mut t.publications {
        if let Some(cols) = &p.columns {
            p.columns = Some(
                cols.iter()
                    .filter_map(|c| renamed(map, c).map(String::from))
                    .collect(),
            );
        }
    }
    t.sequences = out
        .sequences
        .iter()
        .filter_map(|q| {
            let column = renamed(map, &q.column)?.to_string();
            Some(Sequence {
                column,
                ..q.clone()
            })
        })
        .collect();
    t
}

/// One index or constraint the shape change adds, drops or changes (by name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectChange {
    /// `index`, `constraint` or `primary key`.
    pub kind: String,
    /// Its name (the live table's, or the new one's).
    pub name: String,
    /// The definition before, if it existed.
    pub before: Option<String>,
    /// The definition after, if it exists.
    pub after: Option<String>,
}

fn index_shown(def: &str) -> String {
    let unique = if def.starts_with("CREATE UNIQUE") {
        "UNIQUE "
    } else {
        ""
    };
    let rest = def
        .find(" USING ")
        .map_or(def, |i| &def[i + " USING ".len()..]);
    format!("{unique}{rest}")
}

/// The indexes and constraints (foreign keys aside) that differ between the live table's
/// fingerprint and the canonical shaped one, by name. The primary key is reported once, as
/// `primary key`, not also as its index and constraint.
pub fn object_changes(live: &Fingerprint, shaped: &Fingerprint) -> Vec<ObjectChange> {
    let mut out = Vec::new();
    let pkey = |fp: &Fingerprint| {
        fp.constraints
            .iter()
            .find(|c| c.is_primary_key())
            .map(|c| c.definition.clone())
    };
    let (pb, pa) = (pkey(live), pkey(shaped));
    if pb != pa {
        out.push(ObjectChange {
            kind: "primary key".into(),
            name: String::new(),
            before: pb,
            after: pa,
        });
    }
    let is_pkey_index = |fp: &Fingerprint, name: &str| {
        fp.constraints
            .iter()
            .any(|c| c.name == name && c.is_primary_key())
    };
    // By name: the definition as `plan` shows it.
    let indexes = |fp: &Fingerprint| -> BTreeMap<String, String> {
        fp.indexes
            .iter()
            .filter(|i| !is_pkey_index(fp, &i.name))
            .map(|i| (i.name.clone(), index_shown(&i.definition)))
            .collect()
    };
    let constraints = |fp: &Fingerprint| -> BTreeMap<String, String> {
        fp.constraints
            .iter()
            .filter(|c| !c.is_foreign_key() && !c.is_primary_key())
            .map(|c| (c.name.clone(), c.definition.clone()))
            .collect()
    };
    for (kind, b, a) in [
        ("index", indexes(live), indexes(shaped)),
        ("constraint", constraints(live), constraints(shaped)),
    ] {
        let names: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for name in names {
            let (before, after) = (b.get(name).cloned(), a.get(name).cloned());
            if before != after {
                out.push(ObjectChange {
                    kind: kind.into(),
                    name: name.clone(),
                    before,
                    after,
                });
            }
        }
    }
    out
}

/// A column change in words: `+ currency text`, `- note`, `amount: integer → numeric(12,2)`,
/// `owner → owner_id`.
pub fn describe_column(c: &ColumnChange) -> String {
    match (&c.before, &c.after) {
        (None, Some(a)) => format!("added column {} {}", a.name, a.type_name),
        (Some(b), None) => format!("dropped column {} {}", b.name, b.type_name),
        (Some(b), Some(a)) => {
            let mut parts = Vec::new();
            if b.name != a.name {
                parts.push(format!("renamed column {} → {}", b.name, a.name));
            }
            if b.type_name != a.type_name {
                parts.push(format!(
                    "retyped column {}: {} → {}",
                    a.name, b.type_name, a.type_name
                ));
            }
            parts.join(", ")
        }
        (None, None) => String::new(),
    }
}

/// An index or constraint change in words.
pub fn describe_object(o: &ObjectChange) -> String {
    let what = if o.name.is_empty() {
        o.kind.clone()
    } else {
        format!("{} {}", o.kind, o.name)
    };
    match (&o.before, &o.after) {
        (None, Some(a)) => format!("added {what}: {a}"),
        (Some(b), None) => format!("dropped {what}: {b}"),
        (Some(b), Some(a)) => format!("changed {what}: {b} → {a}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests;
