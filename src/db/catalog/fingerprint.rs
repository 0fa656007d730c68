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

/// The fingerprint query of many tables at once (`$1` their names as regclass text, an array):
/// one row per table, in the order given. A partitioned table's partitions are read in one
/// round trip instead of one each (the swap holds its locks meanwhile).
pub fn many_sql(single: &str) -> String {
    format!(
        "SELECT ({}\n) FROM unnest($1::text[]) WITH ORDINALITY AS u(name, ord) ORDER BY u.ord",
        single.replace("to_regclass($1)", "to_regclass(u.name)")
    )
}

/// The fingerprint query prepared once on a connection: planning it costs more than running
/// it, and a swap runs it several times per table while holding its locks.
pub struct Fingerprinter {
    statement: tokio_postgres::Statement,
    /// [`many_sql`], prepared.
    many: tokio_postgres::Statement,
}

impl Fingerprinter {
    /// Prepares the fingerprint query on `client` (valid on that connection only).
    pub async fn prepare(client: &tokio_postgres::Client) -> Result<Fingerprinter> {
        let sql = fingerprint_sql(client).await?;
        let statement = client
            .prepare(&sql)
            .await
            .context("cannot prepare the catalog fingerprint query")?;
        let many = client
            .prepare(&many_sql(&sql))
            .await
            .context("cannot prepare the catalog fingerprint query of several tables")?;
        Ok(Fingerprinter { statement, many })
    }

    /// The fingerprints of `tables`, in their order, in one query (one table: the
    /// single-table statement).
    pub async fn of_all(
        &self,
        client: &tokio_postgres::Client,
        tables: &[TableName],
    ) -> Result<Vec<Fingerprint>> {
        if let [table] = tables {
            return Ok(vec![self.of(client, table).await?]);
        }
        let names: Vec<String> = tables.iter().map(TableName::quoted).collect();
        let rows = client.query(&self.many, &[&names]).await.with_context(|| {
            format!(
                "cannot read the catalog fingerprints of {} tables ({}, …)",
                tables.len(),
                tables.first().map(ToString::to_string).unwrap_or_default()
            )
        })?;
        if rows.len() != tables.len() {
            return Err(Error::runtime(format!(
                "the catalog fingerprint query returned {} rows for {} tables",
                rows.len(),
                tables.len()
            )));
        }
        rows.iter()
            .zip(tables)
            .map(|(row, table)| match row.get::<_, Option<Value>>(0) {
                Some(v) => typed(v, table),
                None => Err(Error::runtime(format!(
                    "cannot read the catalog fingerprint of `{table}`: it does not exist"
                ))),
            })
            .collect()
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
    fn the_query_of_many_tables_reads_each_by_its_name() {
        let many = many_sql(FINGERPRINT_SQL);
        assert!(!many.contains("to_regclass($1)"), "{many}");
        assert!(many.contains("to_regclass(u.name)"));
        assert!(many.contains("unnest($1::text[]) WITH ORDINALITY"));
    }

    #[test]
    fn before_15_the_query_reads_no_publication_column_lists_or_row_filters() {
        let old = for_version(140011);
        assert!(!old.contains("prattrs") && !old.contains("prqual"), "{old}");
        assert!(old.contains("'columns', NULL::jsonb") && old.contains("'where', NULL::text"));
        assert_eq!(for_version(150004), FINGERPRINT_SQL);
    }
}
