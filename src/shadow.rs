//! Creating the `_rebuild` tables a rebuild writes into.
//!
//! `CREATE TABLE x_rebuild (LIKE x INCLUDING ALL)` copies columns, defaults, constraints,
//! indexes, identity, generated columns, storage and comments. What LIKE does not copy (grants,
//! RLS, triggers, foreign keys, dependents) is the subject of swap fidelity (issue #3).

use crate::error::{Context, Error, Result};
use crate::state::helpers::{self, Ownership};
use crate::state::runs::RunTable;
use tokio_postgres::Client;

/// Refuses to start when a helper name is taken by a table reproject did not create.
pub async fn preflight(client: &Client, tables: &[RunTable]) -> Result<()> {
    for t in tables {
        for (helper, role) in [(&t.rebuild, "rebuild"), (&t.old, "old")] {
            if let Ownership::Foreign = helpers::ownership(client, helper).await? {
                return Err(Error::config(format!(
                    "projection `{}`: table `{helper}` exists and was not created by reproject; \
                     it would be the {role} table of `{}`, and reproject never replaces a table it did not create",
                    t.projection, t.live
                ))
                .with_hint(format!("rename or drop `{helper}` yourself if it is not needed")));
            }
        }
    }
    Ok(())
}

/// Creates (or re-creates, if a leftover of reproject's) each rebuild table, in one
/// transaction, and registers them as reproject's. The caller has run [`preflight`].
pub async fn create_rebuild_tables(
    client: &Client,
    run_id: i64,
    tables: &[RunTable],
) -> Result<()> {
    client
        .batch_execute("BEGIN")
        .await
        .context("cannot start the clone transaction")?;
    let result = async {
        // Nobody but reproject uses rebuild tables; a long wait here means something is wrong.
        client
            .batch_execute("SET LOCAL lock_timeout = '10s'")
            .await
            .context("cannot set lock_timeout")?;
        for t in tables {
            if let Ownership::Ours(_) = helpers::ownership(client, &t.rebuild).await? {
                client
                    .batch_execute(&format!("DROP TABLE {}", t.rebuild.quoted()))
                    .await
                    .with_context(|| {
                        format!("cannot drop the leftover rebuild table `{}`", t.rebuild)
                    })?;
                helpers::unregister(client, &t.rebuild).await?;
            }
            client
                .batch_execute(&format!(
                    "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
                    t.rebuild.quoted(),
                    t.live.quoted()
                ))
                .await
                .with_context(|| {
                    format!("cannot create `{}` as a copy of `{}`", t.rebuild, t.live)
                })?;
            helpers::register(
                client,
                &t.rebuild,
                "rebuild",
                &t.live.name,
                &t.projection,
                Some(run_id),
            )
            .await?;
        }
        Ok(())
    }
    .await;
    finish(client, result).await
}

/// Commits on success, rolls back on failure (keeping the first error).
pub async fn finish<T>(client: &Client, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            client
                .batch_execute("COMMIT")
                .await
                .context("cannot commit")?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
