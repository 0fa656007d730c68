//! Creates and upgrades the `reproject` schema from the versioned files in `sql/`.

use crate::error::{Context, Error, Result};
use tokio_postgres::Client;

/// (version, name, SQL). Append only: a released migration is never edited.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../sql/001_init.sql")),
    (2, "ordering", include_str!("../../sql/002_ordering.sql")),
    (3, "live", include_str!("../../sql/003_live.sql")),
    (
        4,
        "fingerprints",
        include_str!("../../sql/004_fingerprints.sql"),
    ),
    (
        6,
        "lock_attempts",
        include_str!("../../sql/006_lock_attempts.sql"),
    ),
    (7, "cancel", include_str!("../../sql/007_cancel.sql")),
    (11, "claims", include_str!("../../sql/011_claims.sql")),
    (12, "lanes", include_str!("../../sql/012_lanes.sql")),
    (13, "retired", include_str!("../../sql/013_retired.sql")),
    (14, "run_role", include_str!("../../sql/014_run_role.sql")),
    (15, "fence", include_str!("../../sql/015_fence.sql")),
    (16, "standbys", include_str!("../../sql/016_standbys.sql")),
    (17, "faults", include_str!("../../sql/017_faults.sql")),
    (18, "shapes", include_str!("../../sql/018_shapes.sql")),
    (
        19,
        "redefined_dependents",
        include_str!("../../sql/019_redefined_dependents.sql"),
    ),
    (
        22,
        "live_handlers",
        include_str!("../../sql/022_live_handlers.sql"),
    ),
    (
        23,
        "added_tables",
        include_str!("../../sql/023_added_tables.sql"),
    ),
    (
        25,
        "late_events",
        include_str!("../../sql/025_late_events.sql"),
    ),
    (
        26,
        "parked_events",
        include_str!("../../sql/026_parked_events.sql"),
    ),
    (
        28,
        "lane_transactions",
        include_str!("../../sql/028_lane_transactions.sql"),
    ),
    (
        29,
        "preview_views",
        include_str!("../../sql/029_preview_views.sql"),
    ),
];

/// The versions of the migrations this reproject knows that are not in `applied`.
pub fn pending(applied: &[i32]) -> Vec<i32> {
    MIGRATIONS
        .iter()
        .map(|m| m.0)
        .filter(|v| !applied.contains(v))
        .collect()
}

/// Advisory lock key that serialises concurrent migrations.
const MIGRATION_LOCK: (i32, i32) = (727_001, 1);

/// Applies every migration not applied yet, each in its own transaction.
pub async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .context("cannot start the state migration")?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
    )
    .await
    .context("cannot lock the state schema for migration")?;
    // `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the schema exists,
    // so only ask for it when the schema is missing: a DBA may create it for us.
    let has_schema: bool = tx
        .query_one("SELECT to_regnamespace('reproject') IS NOT NULL", &[])
        .await
        .context("cannot look for the state schema")?
        .get(0);
    let create_schema = if has_schema {
        ""
    } else {
        "CREATE SCHEMA reproject;"
    };
    tx.batch_execute(&format!(
        "{create_schema}
         CREATE TABLE IF NOT EXISTS reproject.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(|e| {
        Error::from(e)
            .context("cannot create reproject's state schema `reproject`")
            .with_hint("the connecting user needs CREATE on the database (once); or create the schema `reproject` owned by that user")
    })?;
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM reproject.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .context("cannot read the state schema version")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(&newest) = applied.last() {
        if newest > known {
            return Err(Error::config(format!(
                "the state schema `reproject` is at version {newest}, newer than this reproject knows ({known})"
            ))
            .with_hint("upgrade reproject"));
        }
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("state migration {version:03}_{name} failed"))?;
        tx.execute(
            "INSERT INTO reproject.schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .context("cannot record the state migration")?;
        tracing::info!("applied state migration {version:03}_{name}");
    }
    tx.commit()
        .await
        .context("cannot commit the state migration")?;
    Ok(())
}
