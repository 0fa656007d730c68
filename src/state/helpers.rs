//! The registry of tables reproject created. A table is reproject's to replace or drop only if
//! it is registered here with the same OID it has in the catalog: a user's table that merely
//! has a helper-like name (`orders_rebuild`) is never touched.

use crate::db::catalog;
use crate::error::{Context, Result};
use crate::model::ident::TableName;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// A table reproject created, as registered in `reproject.helper_tables`.
#[derive(Debug, Clone, Serialize)]
pub struct HelperTable {
    /// The table.
    pub table: TableName,
    /// Its oid when registered: a table of that name created by someone else has another.
    pub oid: u32,
    /// `rebuild`, `old`, `rolled_back` or `retired` (an `_old` table a later swap replaced,
    /// left when the drop after that swap did not happen).
    pub kind: String,
    /// The live table it belongs to.
    pub live_name: String,
    /// The projection that owns it.
    pub projection: String,
    /// The run that created it.
    pub run_id: Option<i64>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// For a `retired` table: the run whose swap retired it.
    pub retired_by: Option<i64>,
}

/// Who a table name belongs to.
#[derive(Debug, Clone)]
pub enum Ownership {
    /// No such table.
    Absent,
    /// A table reproject created (same OID as registered).
    Ours(HelperTable),
    /// A table reproject did not create: never touch it.
    Foreign,
}

/// Records a table reproject created, so `cleanup` and later runs know it is reproject's.
pub async fn register(
    client: &impl GenericClient,
    table: &TableName,
    kind: &str,
    live_name: &str,
    projection: &str,
    run_id: Option<i64>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO reproject.helper_tables (table_schema, table_name, table_oid, kind, live_name, projection, run_id) \
             VALUES ($1, $2, to_regclass($3)::oid, $4, $5, $6, $7) \
             ON CONFLICT (table_schema, table_name) DO UPDATE SET table_oid = EXCLUDED.table_oid, kind = EXCLUDED.kind, \
                 live_name = EXCLUDED.live_name, projection = EXCLUDED.projection, run_id = EXCLUDED.run_id, created_at = now()",
            &[&table.schema, &table.name, &table.quoted(), &kind, &live_name, &projection, &run_id],
        )
        .await
        .with_context(|| format!("cannot register helper table `{table}`"))?;
    Ok(())
}

/// Forgets a helper table (after it was dropped or became live).
pub async fn unregister(client: &impl GenericClient, table: &TableName) -> Result<()> {
    client
        .execute(
            "DELETE FROM reproject.helper_tables WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .with_context(|| format!("cannot unregister helper table `{table}`"))?;
    Ok(())
}

/// Whether `table` exists, and if so whether reproject made it.
pub async fn ownership(client: &impl GenericClient, table: &TableName) -> Result<Ownership> {
    let Some(info) = catalog::lookup(client, table).await? else {
        return Ok(Ownership::Absent);
    };
    let row = client
        .query_opt(
            "SELECT table_oid, kind, live_name, projection, run_id, created_at, retired_by FROM reproject.helper_tables \
             WHERE table_schema = $1 AND table_name = $2",
            &[&table.schema, &table.name],
        )
        .await
        .context("cannot read reproject's helper tables")?;
    match row {
        Some(r) if r.get::<_, u32>(0) == info.oid => Ok(Ownership::Ours(HelperTable {
            table: table.clone(),
            oid: info.oid,
            kind: r.get(1),
            live_name: r.get(2),
            projection: r.get(3),
            run_id: r.get(4),
            created_at: r.get(5),
            retired_by: r.get(6),
        })),
        _ => Ok(Ownership::Foreign),
    }
}

/// Every registered helper table that still exists with its registered OID. Registry rows
/// whose table is gone (dropped by hand) are removed on the way.
pub async fn list(client: &impl GenericClient) -> Result<Vec<HelperTable>> {
    client
        .execute(
            "DELETE FROM reproject.helper_tables h WHERE NOT EXISTS (SELECT 1 FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = h.table_oid AND n.nspname = h.table_schema AND c.relname = h.table_name)",
            &[],
        )
        .await
        .context("cannot prune reproject's helper tables")?;
    let rows = client
        .query(
            "SELECT table_schema, table_name, table_oid, kind, live_name, projection, run_id, created_at, retired_by \
             FROM reproject.helper_tables ORDER BY created_at, table_schema, table_name",
            &[],
        )
        .await
        .context("cannot read reproject's helper tables")?;
    Ok(rows
        .iter()
        .map(|r| HelperTable {
            table: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            oid: r.get(2),
            kind: r.get(3),
            live_name: r.get(4),
            projection: r.get(5),
            run_id: r.get(6),
            created_at: r.get(7),
            retired_by: r.get(8),
        })
        .collect())
}
