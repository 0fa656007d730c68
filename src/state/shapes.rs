//! The shape changes a run applied to its rebuilt tables (`reproject.run_shapes`, shape/).

use crate::error::{Context, Error, Result};
use crate::model::fingerprint::{self, Shaped};
use crate::model::ident::TableName;
use crate::model::shape::diff;
use crate::model::shape::Applied;

use crate::model::shape::ColumnChange;
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

/// A recorded shape change of one table.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The run that applied it.
    pub run_id: i64,
    /// The projection.
    pub projection: String,
    /// The live table.
    pub live: TableName,
    /// The DDL as run.
    pub ddl: String,
    /// Its SHA-256.
    pub ddl_hash: String,
    /// Every column before and after.
    pub map: Vec<ColumnChange>,
    /// The changes in words.
    pub changes: Vec<String>,
    /// The reshaped copy's fingerprint after the DDL, under its names once live.
    pub shaped: Shaped,
}

impl Recorded {
    /// The columns the recorded change adds, drops, renames or retypes.
    pub fn shape_change(&self) -> crate::model::shape::ShapeChange {
        crate::model::shape::ShapeChange {
            projection: self.projection.clone(),
            table: self.live.clone(),
            columns: crate::model::shape::changed(&self.map),
        }
    }
}

/// The changes of one applied shape in words (columns, then indexes and constraints).
pub fn changes(applied: &Applied) -> Vec<String> {
    crate::model::shape::changed(&applied.map)
        .iter()
        .map(diff::describe_column)
        .chain(
            diff::object_changes(&applied.live_fingerprint, &applied.shaped.fingerprint)
                .iter()
                .map(diff::describe_object),
        )
        .collect()
}

/// Records what `ddl` did to each table of `projection` in run `run_id`.
pub async fn record(
    client: &impl GenericClient,
    run_id: i64,
    projection: &str,
    ddl: &str,
    applied: &[Applied],
) -> Result<()> {
    for a in applied {
        client
            .execute(
                "INSERT INTO reproject.run_shapes (run_id, projection, table_schema, live_name, ddl, ddl_hash, columns, changes, shaped)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &run_id,
                    &projection,
                    &a.live.schema,
                    &a.live.name,
                    &ddl,
                    &crate::model::shape::file::hash(ddl),
                    &diff::map_to_json(&a.map),
                    &json!(changes(a)),
                    &tokio_postgres::types::Json(&a.shaped),
                ],
            )
            .await
            .with_context(|| format!("cannot record the shape change of `{}`", a.live))?;
    }
    Ok(())
}

const COLUMNS: &str =
    "run_id, projection, table_schema, live_name, ddl, ddl_hash, columns, changes, shaped";

fn from_row(r: &tokio_postgres::Row) -> Result<Recorded> {
    let run_id: i64 = r.get(0);
    let live = TableName::new(r.get::<_, String>(2), r.get::<_, String>(3));
    let shaped = serde_json::from_value(r.get::<_, Value>(8)).map_err(|e| {
        Error::runtime(format!(
            "reproject.run_shapes: the recorded shape of `{live}` (run {run_id}) cannot be read: {e}"
        ))
    })?;
    Ok(Recorded {
        run_id,
        projection: r.get(1),
        live,
        ddl: r.get(4),
        ddl_hash: r.get(5),
        map: diff::map_from_json(&r.get::<_, Value>(6)),
        changes: serde_json::from_value(r.get::<_, Value>(7)).unwrap_or_default(),
        shaped,
    })
}

/// The shape change run `run_id` applied to `live`, if any.
pub async fn of_table(
    client: &impl GenericClient,
    run_id: i64,
    live: &TableName,
) -> Result<Option<Recorded>> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM reproject.run_shapes WHERE run_id = $1 AND table_schema = $2 AND live_name = $3"),
            &[&run_id, &live.schema, &live.name],
        )
        .await
        .context("cannot read the run's shape changes")?;
    row.as_ref().map(from_row).transpose()
}

/// Every shape change of run `run_id`.
pub async fn of_run(client: &impl GenericClient, run_id: i64) -> Result<Vec<Recorded>> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM reproject.run_shapes WHERE run_id = $1 ORDER BY projection, table_schema, live_name"),
            &[&run_id],
        )
        .await
        .context("cannot read the run's shape changes")?;
    rows.iter().map(from_row).collect()
}

/// Whether the state schema has the table (an older state schema, or none: no shapes).
async fn exists(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('reproject.run_shapes') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot look for reproject.run_shapes")?;
    Ok(row.get(0))
}

/// The run that already put the shape of `ddl_hash` in place on every table of `projection`
/// (`lives`): the newest swapped run of the projection applied that DDL, and each live table's
/// structure is still what it made. A new rebuild then keeps the live shape.
pub async fn already_applied(
    client: &impl GenericClient,
    projection: &str,
    ddl_hash: &str,
    lives: &[TableName],
) -> Result<Option<i64>> {
    if !crate::state::exists(client).await? || !exists(client).await? {
        return Ok(None);
    }
    let Some(run) = crate::state::runs::latest_swapped_for(client, projection).await? else {
        return Ok(None);
    };
    if run.status != crate::state::runs::RunStatus::Swapped {
        return Ok(None);
    }
    for live in lives {
        let Some(rec) = of_table(client, run.id, live).await? else {
            return Ok(None);
        };
        if rec.ddl_hash != ddl_hash {
            return Ok(None);
        }
        if crate::db::catalog::lookup(client, live).await?.is_none() {
            return Ok(None);
        }
        let now = crate::db::catalog::fingerprint::fingerprint(client, live).await?;
        if !fingerprint::diff(&rec.shaped.fingerprint.shape(), &now.shape()).is_empty() {
            return Ok(None);
        }
    }
    Ok(Some(run.id))
}
