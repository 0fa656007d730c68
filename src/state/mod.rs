//! reproject's own state, in the `reproject` schema: migrations, runs and checkpoints, the
//! registry of tables it created, and the advisory locks that keep two runs apart.

pub mod fence;
pub mod helpers;
pub mod lanes;
pub mod late_events;
pub mod live_checkpoints;
pub(crate) mod locks;
pub(crate) mod migrate;
pub mod parked_events;
pub mod previews;
pub mod runs;
pub mod shapes;

use crate::error::{Context, Result};
use tokio_postgres::GenericClient;

/// Whether the state schema exists (read-only commands never create it).
pub async fn exists(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('reproject.runs') IS NOT NULL AND to_regclass('reproject.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot check for reproject's state schema")?;
    Ok(row.get(0))
}
