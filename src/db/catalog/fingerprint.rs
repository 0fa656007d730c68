//! Reading the catalog fingerprint of a table (model/fingerprint.rs: everything an
//! application can observe about it except its rows). A swap compares the fingerprint of the
//! live table before with that of the new live table inside the swap transaction and refuses
//! to commit if they differ.

use crate::error::{Context, Error, Result};
use crate::model::fingerprint::Fingerprint;
use crate::model::ident::TableName;
use serde_json::Value;
use tokio_postgres::GenericClient;

const FINGERPRINT_SQL: &str = include_str!("../../../sql/fingerprint.sql");

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
pub async fn fingerprint(client: &impl GenericClient, table: &TableName) -> Result<Fingerprint> {
    let sql = fingerprint_sql(client).await?;
    let row = client
        .query_one(&sql, &[&table.quoted()])
        .await
        .with_context(|| format!("cannot read the catalog fingerprint of `{table}`"))?;
    typed(row.get(0), table)
}

/// The query's JSON as a [`Fingerprint`] (the query and the type are written together: a
/// mismatch is a bug, said with the table's name).
fn typed(value: Value, table: &TableName) -> Result<Fingerprint> {
    serde_json::from_value(value).map_err(|e| {
        Error::runtime(format!(
            "cannot read the catalog fingerprint of `{table}`: {e}"
        ))
    })
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
    pub async fn of(
        &self,
        client: &tokio_postgres::Client,
        table: &TableName,
    ) -> Result<Fingerprint> {
        let row = client
            .query_one(&self.statement, &[&table.quoted()])
            .await
            .with_context(|| format!("cannot read the catalog fingerprint of `{table}`"))?;
        typed(row.get(0), table)
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
}
