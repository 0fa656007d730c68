//! Pure logic of a shape change: the column map read from attribute numbers, the canonical
//! names of the reshaped clone's indexes and constraints, and the differences shown by `plan`.

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

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn items(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
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
    live: &Value,
    before: &Value,
    after: &Value,
    clone: &str,
    schema: &str,
    live_name: &str,
) -> Value {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut live_indexes = items(live, "indexes");
    for b in items(before, "indexes") {
        let key = index_key(&s(&b, "definition"));
        if let Some(pos) = live_indexes
            .iter()
            .position(|l| index_key(&s(l, "definition")) == key)
        {
            names.insert(s(&b, "name"), s(&live_indexes.remove(pos), "name"));
        }
    }
    let index_name = |name: &str| {
        names
            .get(name)
            .cloned()
            .unwrap_or_else(|| derived_name(name, clone, live_name))
    };
    let mut out = after.clone();
    let indexes: Vec<Value> = items(after, "indexes")
        .into_iter()
        .map(|mut i| {
            let name = index_name(&s(&i, "name"));
            let def = s(&i, "definition");
            let head = if def.starts_with("CREATE UNIQUE") {
                "CREATE UNIQUE INDEX"
            } else {
                "CREATE INDEX"
            };
            let rest = def.find(" USING ").map_or("", |p| &def[p..]);
            i["definition"] = json!(format!(
                "{head} {} ON {}.{}{rest}",
                pg_ident(&name),
                pg_ident(schema),
                pg_ident(live_name)
            ));
            i["name"] = json!(name);
            i
        })
        .collect();
    let mut indexes = indexes;
    indexes.sort_by_key(|i| s(i, "name"));
    out["indexes"] = Value::Array(indexes);
    let live_constraints: Vec<String> = items(live, "constraints")
        .iter()
        .map(|c| s(c, "name"))
        .collect();
    let mut constraints: Vec<Value> = items(after, "constraints")
        .into_iter()
        .map(|mut c| {
            let name = s(&c, "name");
            let name = match s(&c, "type").as_str() {
                // Backed by an index of the same name.
                "p" | "u" | "x" => index_name(&name),
                // LIKE keeps check constraints' names.
                _ if live_constraints.contains(&name) => name,
                _ => derived_name(&name, clone, live_name),
            };
            c["name"] = json!(name);
            c
        })
        .collect();
    constraints.sort_by_key(|c| s(c, "name"));
    out["constraints"] = Value::Array(constraints);
    out
}

/// The key of a shaped fingerprint that lists, per kept column (by its new name), the column
/// properties the DDL itself changed (`comment`, `statistics`, `acl`): those are not carried
/// from the outgoing table.
pub const SET_BY_DDL: &str = "set_by_reshape";

/// The column properties the DDL changed on kept columns: `before` and `after` are the copy's
/// fingerprints around the DDL.
pub fn set_by_ddl(before: &Value, after: &Value, map: &[ColumnChange]) -> Value {
    let mut out = serde_json::Map::new();
    for m in map {
        let (Some(b), Some(a)) = (&m.before, &m.after) else {
            continue;
        };
        let find = |fp: &Value, name: &str| {
            items(fp, "columns")
                .into_iter()
                .find(|c| s(c, "name") == name)
        };
        let (Some(cb), Some(ca)) = (find(before, &b.name), find(after, &a.name)) else {
            continue;
        };
        let keys: Vec<Value> = ["acl", "comment", "statistics"]
            .into_iter()
            .filter(|k| cb[*k] != ca[*k])
            .map(|k| json!(k))
            .collect();
        if !keys.is_empty() {
            out.insert(a.name.clone(), Value::Array(keys));
        }
    }
    Value::Object(out)
}

/// The same list for the way back (a rollback): keyed by the old names, read through `map`
/// (the forward column map).
pub fn set_by_ddl_reversed(set: &Value, map: &[ColumnChange]) -> Value {
    let mut out = serde_json::Map::new();
    for (name, keys) in set.as_object().into_iter().flatten() {
        if let Some(old) = map
            .iter()
            .find(|m| m.after.as_ref().is_some_and(|a| &a.name == name))
            .and_then(|m| m.before.as_ref())
        {
            out.insert(old.name.clone(), keys.clone());
        }
    }
    Value::Object(out)
}

/// What the target fingerprint of an exchange is when the incoming table has another shape:
/// the outgoing table's fingerprint (`out`) with the structure of `shaped` (columns,
/// constraints but foreign keys, indexes) and everything carried mapped through `map`
/// (column privileges, comments and statistics targets of kept columns, publication column
/// lists, sequences of kept columns). Without a shape change the target is `out` itself.
pub fn target(out: &Value, shaped: &Value, map: &[ColumnChange]) -> Value {
    let mut t = out.clone();
    let out_columns = items(out, "columns");
    let columns: Vec<Value> = items(shaped, "columns")
        .into_iter()
        .map(|mut c| {
            let name = s(&c, "name");
            let before = map
                .iter()
                .find(|m| m.after.as_ref().is_some_and(|a| a.name == name))
                .and_then(|m| m.before.as_ref());
            let old = match before {
                Some(b) => out_columns.iter().find(|o| s(o, "name") == b.name),
                // Not in the map: a column the DDL left alone.
                None if !map
                    .iter()
                    .any(|m| m.after.as_ref().is_some_and(|a| a.name == name)) =>
                {
                    out_columns.iter().find(|o| s(o, "name") == name)
                }
                None => None,
            };
            // What the DDL itself set on a kept column stays; the rest is carried.
            let set_by_ddl = &shaped[SET_BY_DDL][&name];
            if let Some(o) = old {
                for key in ["acl", "comment", "statistics"] {
                    let set = set_by_ddl
                        .as_array()
                        .is_some_and(|keys| keys.iter().any(|k| k == key));
                    if !set {
                        c[key] = o[key].clone();
                    }
                }
            }
            c
        })
        .collect();
    t["columns"] = Value::Array(columns);
    let mut constraints: Vec<Value> = items(shaped, "constraints")
        .into_iter()
        .filter(|c| c["type"] != "f")
        .chain(
            items(out, "constraints")
                .into_iter()
                .filter(|c| c["type"] == "f"),
        )
        .collect();
    constraints.sort_by_key(|c| s(c, "name"));
    t["constraints"] = Value::Array(constraints);
    let out_indexes = items(out, "indexes");
    let indexes: Vec<Value> = items(shaped, "indexes")
        .into_iter()
        .map(|mut i| {
            let same = out_indexes.iter().find(|o| o["name"] == i["name"]);
            for key in ["replica_identity", "clustered"] {
                i[key] = same.map_or(json!(false), |o| o[key].clone());
            }
            i
        })
        .collect();
    t["indexes"] = Value::Array(indexes);
    let publications: Vec<Value> = items(out, "publications")
        .into_iter()
        .map(|mut p| {
            if let Some(cols) = p["columns"].as_array() {
                let mapped: Vec<Value> = cols
                    .iter()
                    .filter_map(|c| renamed(map, c.as_str()?).map(|n| json!(n)))
                    .collect();
                p["columns"] = Value::Array(mapped);
            }
            p
        })
        .collect();
    t["publications"] = Value::Array(publications);
    let sequences: Vec<Value> = items(out, "sequences")
        .into_iter()
        .filter_map(|mut q| {
            let column = renamed(map, q["column"].as_str()?)?.to_string();
            q["column"] = json!(column);
            Some(q)
        })
        .collect();
    t["sequences"] = Value::Array(sequences);
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
pub fn object_changes(live: &Value, shaped: &Value) -> Vec<ObjectChange> {
    let mut out = Vec::new();
    let constraint_of = |fp: &Value, name: &str| {
        items(fp, "constraints")
            .into_iter()
            .find(|c| s(c, "name") == name)
    };
    let pkey = |fp: &Value| {
        items(fp, "constraints")
            .into_iter()
            .find(|c| c["type"] == "p")
            .map(|c| s(&c, "definition"))
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
    let is_pkey_index =
        |fp: &Value, name: &str| constraint_of(fp, name).is_some_and(|c| c["type"] == "p");
    let by_name = |fp: &Value, key: &str| -> BTreeMap<String, Value> {
        items(fp, key)
            .into_iter()
            .filter(|v| v["type"] != "f" && v["type"] != "p")
            .filter(|v| key != "indexes" || !is_pkey_index(fp, &s(v, "name")))
            .map(|v| (s(&v, "name"), v))
            .collect()
    };
    for (key, kind) in [("indexes", "index"), ("constraints", "constraint")] {
        let (b, a) = (by_name(live, key), by_name(shaped, key));
        let shown = |v: &Value| {
            let def = s(v, "definition");
            if key == "indexes" {
                index_shown(&def)
            } else {
                def
            }
        };
        let names: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for name in names {
            let (before, after) = (b.get(name).map(shown), a.get(name).map(shown));
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
