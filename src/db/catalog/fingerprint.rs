//! The catalog fingerprint of a table: everything an application can observe about it except
//! its rows (columns, constraints, indexes, grants, row-level security, triggers, comments,
//! storage, publications, sequences, and the views and foreign keys that point at it), by
//! name, never by OID. A swap compares the fingerprint of the live table before with that of
//! the new live table inside the swap transaction and refuses to commit if they differ.

use crate::error::{Context, Result};
use crate::model::ident::TableName;
use serde_json::Value;
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;

const FINGERPRINT_SQL: &str = include_str!("../../../sql/fingerprint.sql");

/// The parts a `LIKE … INCLUDING ALL` clone inherits from the live table when it is created:
/// if these changed on the live table during a rebuild, the clone is stale.
pub const STRUCTURAL: &[&str] = &[
    "columns",
    "constraints",
    "indexes",
    "statistics",
    "persistence",
    "tablespace",
];

/// Publication column lists and row filters (`pg_publication_rel.prattrs`, `prqual`) came
/// with PostgreSQL 15; before, a publication holds the whole table.
const COLUMN_LIST: &str = "(SELECT jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a\n                                   WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs))";
const ROW_FILTER: &str = "pg_get_expr(pr.prqual, pr.prrelid)";

/// The fingerprint query (sql/fingerprint.sql, `$1` the table as regclass text) for the
/// connected server's version.
pub async fn fingerprint_sql(client: &impl GenericClient) -> Result<String> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .context("cannot read the server version")?
        .get(0);
    Ok(for_version(version))
}

fn for_version(version: i32) -> String {
    if version >= 150000 {
        FINGERPRINT_SQL.to_string()
    } else {
        FINGERPRINT_SQL
            .replace(COLUMN_LIST, "NULL::jsonb")
            .replace(ROW_FILTER, "NULL::text")
    }
}

/// Computes the fingerprint of `table` (which must exist).
pub async fn fingerprint(client: &impl GenericClient, table: &TableName) -> Result<Value> {
    let sql = fingerprint_sql(client).await?;
    let row = client
        .query_one(&sql, &[&table.quoted()])
        .await
        .with_context(|| format!("cannot read the catalog fingerprint of `{table}`"))?;
    Ok(row.get(0))
}

/// The fingerprint query prepared once on a connection: planning it costs more than running
/// it, and a swap runs it several times per table while holding its locks.
pub struct Fingerprinter {
    statement: tokio_postgres::Statement,
}

impl Fingerprinter {
    /// Prepares the fingerprint query on `client` (valid on that connection only).
    pub async fn prepare(client: &tokio_postgres::Client) -> Result<Fingerprinter> {
        let sql = fingerprint_sql(client).await?;
        let statement = client
            .prepare(&sql)
            .await
            .context("cannot prepare the catalog fingerprint query")?;
        Ok(Fingerprinter { statement })
    }

    /// The fingerprint of `table`, on the connection that prepared this.
    pub async fn of(&self, client: &tokio_postgres::Client, table: &TableName) -> Result<Value> {
        let row = client
            .query_one(&self.statement, &[&table.quoted()])
            .await
            .with_context(|| format!("cannot read the catalog fingerprint of `{table}`"))?;
        Ok(row.get(0))
    }
}

/// Keeps only the given top-level keys (and, for `constraints`, all but foreign keys, which a
/// swap re-creates rather than inherits).
pub fn subset(fp: &Value, keys: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for key in keys {
        if let Some(v) = fp.get(*key) {
            out.insert((*key).to_string(), v.clone());
        }
    }
    // Column grants, comments and statistics targets are carried over at the swap; only the
    // shape of a column is structure.
    if let Some(Value::Array(cols)) = out.get_mut("columns") {
        for c in cols.iter_mut() {
            if let Value::Object(m) = c {
                m.remove("acl");
                m.remove("comment");
                m.remove("statistics");
            }
        }
    }
    if keys.contains(&"constraints") {
        if let Some(Value::Array(cons)) = fp.get("constraints") {
            let kept: Vec<Value> = cons.iter().filter(|c| c["type"] != "f").cloned().collect();
            out.insert("constraints".into(), Value::Array(kept));
        }
    }
    Value::Object(out)
}

/// Human-readable differences between two fingerprints (empty when equal). Lists of named
/// things (columns, indexes, policies, …) are compared by name, so a message says which one.
pub fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at("", expected, actual, &mut out);
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
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
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
mod tests {
    use super::*;

    #[test]
    fn before_15_the_query_reads_no_publication_column_lists_or_row_filters() {
        let old = for_version(140011);
        assert!(!old.contains("prattrs") && !old.contains("prqual"), "{old}");
        assert!(old.contains("'columns', NULL::jsonb") && old.contains("'where', NULL::text"));
        assert_eq!(for_version(150004), FINGERPRINT_SQL);
    }
    use serde_json::json;

    #[test]
    fn differences_name_the_thing() {
        let before = json!({
            "owner": "app",
            "indexes": [{"name": "t_pkey", "definition": "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)"}],
            "policies": [{"name": "own_rows", "using": "(owner = CURRENT_USER)"}],
            "acl": ["app:SELECT", "owner:INSERT"],
        });
        let mut after = before.clone();
        assert!(diff(&before, &after).is_empty());
        after["owner"] = json!("postgres");
        after["indexes"][0]["name"] = json!("t_rebuild_pkey");
        after["policies"] = json!([]);
        after["acl"] = json!(["owner:INSERT"]);
        let d = diff(&before, &after);
        assert!(
            d.contains(&"owner: was \"app\", now \"postgres\"".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"indexes `t_pkey` is missing".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"indexes `t_rebuild_pkey` is new".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"policies `own_rows` is missing".to_string()),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l.starts_with("acl:")), "{d:?}");
    }

    #[test]
    fn subset_drops_foreign_keys_from_constraints() {
        let fp = json!({"constraints": [{"name": "a", "type": "p"}, {"name": "b", "type": "f"}], "owner": "x"});
        assert_eq!(
            subset(&fp, &["constraints"]),
            json!({"constraints": [{"name": "a", "type": "p"}]})
        );
    }
}
