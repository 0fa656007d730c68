//! A preset against the database: the columns its keys read must be there, and the
//! optional columns of its store (Marten's `headers`, `is_skipped`, …) are used only when the
//! table has them. The config (presets.rs) cannot know which options the store was installed
//! with; the catalog does. Only the keys the preset supplied are touched: a key written in
//! the config is the user's, checked by validation like any other.

use crate::error::{Context, Error, Result};
use crate::model::config::presets::Need;
use crate::model::config::{EventsConfig, Expr};
use crate::model::ident::TableName;
use std::collections::BTreeSet;
use tokio_postgres::GenericClient;

/// The `[events]` mapping completed for this database, and the optional columns it uses.
pub struct Completed {
    /// The mapping to read with: the config's, with the preset's metadata and filter made of
    /// the columns the table has.
    pub events: EventsConfig,
    /// The preset's optional columns found (and used), for `plan`.
    pub optional_used: Vec<&'static str>,
}

/// The columns of a table (`to_regclass` text), or None when there is no such table.
async fn columns_of(client: &impl GenericClient, table: &str) -> Result<Option<BTreeSet<String>>> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&table])
        .await
        .with_context(|| format!("cannot look up table `{table}`"))?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await
        .with_context(|| format!("cannot read the columns of `{table}`"))?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

/// Checks the columns the preset's keys read and completes its metadata and filter with the
/// optional columns `events_table` has. `file` names the config in errors.
pub async fn complete(
    client: &impl GenericClient,
    file: &str,
    events: &EventsConfig,
    events_table: &TableName,
) -> Result<Completed> {
    let Some(using) = &events.preset else {
        return Ok(Completed {
            events: events.clone(),
            optional_used: Vec::new(),
        });
    };
    let preset = using.preset;
    let missing = |need: &Need, table: &str| {
        let error = Error::config(format!(
            "{file}:{}: the `{}` preset reads column `{}` of `{table}` (for `events.{}`), which that table does not have",
            using.line, preset.name, need.column, need.key
        ))
        .with_hint(format!(
            "the preset expects {}; it was checked against {}. If your store is laid out otherwise, write `{}` under `[events]` yourself",
            need.since, preset.checked, need.key
        ));
        Err(error)
    };
    let absent = |need: &Need, table: &str| {
        let error = Error::config(format!(
            "{file}:{}: the `{}` preset reads table `{table}`, which does not exist",
            using.line, preset.name
        ))
        .with_hint(format!(
            "the preset expects {}; it was checked against {}. Check the schema, or the search_path of the connecting user",
            need.since, preset.checked
        ));
        Err(error)
    };
    // The event table's columns, when the preset's role keys read that table (not a query
    // the config writes).
    let reads_table = events.source.is_none();
    let table_columns = if reads_table {
        columns_of(client, &events_table.quoted()).await?
    } else {
        None
    };
    // The columns of each table a `source` joins, looked up once.
    let mut joined: std::collections::BTreeMap<&str, Option<BTreeSet<String>>> =
        std::collections::BTreeMap::new();
    for need in preset.needs {
        if !using.supplied(need.key) {
            continue;
        }
        match need.table {
            None => {
                if let Some(columns) = &table_columns {
                    if !columns.contains(need.column) {
                        return missing(need, &events_table.to_string());
                    }
                }
            }
            Some(table) => {
                if !joined.contains_key(table) {
                    joined.insert(table, columns_of(client, table).await?);
                }
                match &joined[table] {
                    Some(columns) if !columns.contains(need.column) => return missing(need, table),
                    Some(_) => {}
                    None => return absent(need, table),
                }
            }
        }
    }
    let present = |column: &str| {
        table_columns
            .as_ref()
            .is_some_and(|columns| columns.contains(column))
    };
    let mut completed = events.clone();
    let expr = |sql: String| Expr {
        sql,
        line: using.line,
    };
    if using.supplied("metadata") {
        completed.metadata = preset.metadata_sql(&present).map(expr);
    }
    if using.supplied("filter") {
        completed.filter = preset.filter_sql(&present).map(expr);
    }
    // What an optional column adds is used only through a key the preset supplied.
    let optional_used = preset
        .optional
        .iter()
        .filter(|o| present(o.column))
        .filter(|o| match o.adds {
            crate::model::config::presets::Adds::Filter(_) => using.supplied("filter"),
            _ => using.supplied("metadata"),
        })
        .map(|o| o.column)
        .collect();
    Ok(Completed {
        events: completed,
        optional_used,
    })
}
