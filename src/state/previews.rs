//! `reproject.preview_schemas` and `reproject.preview_views` (migration 029): which preview
//! schema holds whose views (pipeline/preview.rs makes and drops them).

use crate::error::{Context, Result};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// A preview view reproject created, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct ViewRecord {
    /// The preview schema.
    pub schema: String,
    /// The view's name (the live table's).
    pub name: String,
    /// The view's OID when it was created: a view under that name with another OID is not
    /// reproject's.
    #[serde(skip)]
    pub oid: u32,
    /// The run whose tables it was created on.
    pub run_id: i64,
    /// The live table it stands for.
    pub live: String,
    /// The table it was created on (the run's rebuild table).
    pub reads: String,
}

/// A preview schema as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaRecord {
    /// The schema.
    pub schema: String,
    /// The run whose views it holds.
    pub run_id: i64,
    /// reproject created the schema, so it drops it once no view is left in it.
    pub created_schema: bool,
}

/// Whether migration 029 is applied (read-only commands never migrate).
pub async fn exists(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('reproject.preview_views') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot check for reproject.preview_views")?;
    Ok(row.get(0))
}

const VIEW_COLUMNS: &str = "schema_name, view_name, view_oid, run_id, live_table, reads";

fn view(row: &tokio_postgres::Row) -> ViewRecord {
    ViewRecord {
        schema: row.get(0),
        name: row.get(1),
        oid: row.get(2),
        run_id: row.get(3),
        live: row.get(4),
        reads: row.get(5),
    }
}

/// The recorded schema `schema`, if reproject holds views there.
pub async fn schema(client: &impl GenericClient, schema: &str) -> Result<Option<SchemaRecord>> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT schema_name, run_id, created_schema FROM reproject.preview_schemas WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .with_context(|| format!("cannot read the record of preview schema `{schema}`"))?;
    Ok(row.map(|r| SchemaRecord {
        schema: r.get(0),
        run_id: r.get(1),
        created_schema: r.get(2),
    }))
}

/// The views recorded in `schema`.
pub async fn views_in(client: &impl GenericClient, schema: &str) -> Result<Vec<ViewRecord>> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!("SELECT {VIEW_COLUMNS} FROM reproject.preview_views WHERE schema_name = $1 ORDER BY view_name"),
            &[&schema],
        )
        .await
        .with_context(|| format!("cannot read the views of preview schema `{schema}`"))?;
    Ok(rows.iter().map(view).collect())
}

/// The views recorded for `run_id`.
pub async fn views_of_run(client: &impl GenericClient, run_id: i64) -> Result<Vec<ViewRecord>> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!("SELECT {VIEW_COLUMNS} FROM reproject.preview_views WHERE run_id = $1 ORDER BY schema_name, view_name"),
            &[&run_id],
        )
        .await
        .with_context(|| format!("cannot read the preview views of run {run_id}"))?;
    Ok(rows.iter().map(view).collect())
}

/// Every recorded view.
pub async fn all_views(client: &impl GenericClient) -> Result<Vec<ViewRecord>> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!("SELECT {VIEW_COLUMNS} FROM reproject.preview_views ORDER BY schema_name, view_name"),
            &[],
        )
        .await
        .context("cannot read the preview views")?;
    Ok(rows.iter().map(view).collect())
}

/// Records `views` as `schema`'s, made by `run_id`, in place of whatever the schema held.
pub async fn record(
    client: &impl GenericClient,
    schema: &str,
    run_id: i64,
    created_schema: bool,
    views: &[ViewRecord],
) -> Result<()> {
    let what = || format!("cannot record the views of preview schema `{schema}`");
    client
        .execute(
            "INSERT INTO reproject.preview_schemas (schema_name, run_id, created_schema) VALUES ($1, $2, $3)
             ON CONFLICT (schema_name) DO UPDATE SET run_id = EXCLUDED.run_id,
                 created_schema = EXCLUDED.created_schema, created_at = now()",
            &[&schema, &run_id, &created_schema],
        )
        .await
        .with_context(what)?;
    client
        .execute(
            "DELETE FROM reproject.preview_views WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .with_context(what)?;
    for v in views {
        client
            .execute(
                &format!("INSERT INTO reproject.preview_views ({VIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[&v.schema, &v.name, &v.oid, &v.run_id, &v.live, &v.reads],
            )
            .await
            .with_context(what)?;
    }
    Ok(())
}

/// Forgets one view (dropped).
pub async fn forget_view(client: &impl GenericClient, v: &ViewRecord) -> Result<()> {
    client
        .execute(
            "DELETE FROM reproject.preview_views WHERE schema_name = $1 AND view_name = $2",
            &[&v.schema, &v.name],
        )
        .await
        .with_context(|| format!("cannot forget preview view `{}.{}`", v.schema, v.name))?;
    Ok(())
}

/// Forgets a schema whose views are gone.
pub async fn forget_schema(client: &impl GenericClient, schema: &str) -> Result<()> {
    client
        .execute(
            "DELETE FROM reproject.preview_schemas WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .with_context(|| format!("cannot forget preview schema `{schema}`"))?;
    Ok(())
}
