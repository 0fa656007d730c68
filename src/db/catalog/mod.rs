//! What the live database says about tables: do they exist, what kind they are, how many rows,
//! and their fingerprint (everything about them but their rows).

pub mod fingerprint;

use crate::error::{Context, Error, Result};
use crate::model::ident::{ConfigTableRef, TableName};
use tokio_postgres::GenericClient;

/// A table found in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The schema-qualified name.
    pub name: TableName,
    /// `pg_class.oid`: tells a table from another one created later under the same name.
    pub oid: u32,
    /// `pg_class.relkind`: `r` table, `p` partitioned table, `v` view, …
    pub relkind: char,
}

impl TableInfo {
    /// `relkind` in words, for messages (`table`, `view`, …).
    pub fn kind_name(&self) -> &'static str {
        match self.relkind {
            'r' => "table",
            'p' => "partitioned table",
            'v' => "view",
            'm' => "materialized view",
            'f' => "foreign table",
            _ => "relation",
        }
    }
}

const LOOKUP: &str = "SELECT n.nspname, c.relname, c.oid, c.relkind::text \
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.oid = to_regclass($1)";

async fn lookup_text(client: &impl GenericClient, text: &str) -> Result<Option<TableInfo>> {
    let row = client
        .query_opt(LOOKUP, &[&text])
        .await
        .with_context(|| format!("cannot look up table `{text}`"))?;
    Ok(row.map(|r| TableInfo {
        name: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
        oid: r.get(2),
        relkind: r.get::<_, String>(3).chars().next().unwrap_or('?'),
    }))
}

/// Resolves a table as written in the config (unqualified names follow `search_path`).
pub async fn resolve(
    client: &impl GenericClient,
    table: &ConfigTableRef,
) -> Result<Option<TableInfo>> {
    let text = match &table.schema {
        Some(schema) => format!(
            "{}.{}",
            crate::model::ident::quote(schema),
            crate::model::ident::quote(&table.name)
        ),
        None => crate::model::ident::quote(&table.name),
    };
    lookup_text(client, &text).await
}

/// Looks up an exact schema-qualified table.
pub async fn lookup(client: &impl GenericClient, table: &TableName) -> Result<Option<TableInfo>> {
    lookup_text(client, &table.quoted()).await
}

/// Exact row count of a table.
pub async fn count_rows(client: &impl GenericClient, table: &TableName) -> Result<i64> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
        .await
        .with_context(|| format!("cannot count the rows of `{table}`"))?;
    Ok(row.get(0))
}

/// Refuses relations reproject cannot clone and swap (yet), naming the object: tables and
/// partitioned tables are rebuilt (what a swap cannot carry over is refused by preflight).
pub fn require_plain_table(info: &TableInfo, whose: &str) -> Result<()> {
    if matches!(info.relkind, 'r' | 'p') {
        return Ok(());
    }
    Err(Error::config(format!(
        "{whose}: `{}` is a {}; reproject rebuilds tables and partitioned tables only",
        info.name,
        info.kind_name()
    )))
}
