//! Creating the `_rebuild` tables a rebuild writes into.
//!
//! `CREATE TABLE x_rebuild (LIKE x INCLUDING ALL)` copies columns, defaults, constraints,
//! indexes, identity, generated columns, storage and comments. The clone is also built with the
//! live table's persistence, storage parameters, tablespace and statistics targets; a
//! projection's `reshape` DDL then runs on its clones in the same transaction (shape/). A table
//! the projection adds (`create`, not live yet) is made by its definition instead (added.rs). Grants,
//! RLS, triggers, foreign keys and dependents are carried over at the swap (swap/exchange.rs), so none
//! of them acts during the replay. A partitioned table's clone is partitioned the same way,
//! with a clone of each partition attached (partitions.rs).
//!
//! With `build_unlogged = true` a projection's clones are UNLOGGED whatever the live table is:
//! the replay then writes no WAL for the many row versions it creates, and [`make_logged`]
//! writes each final table to the WAL once, after the checks and before the swap's locks. An
//! unlogged table is emptied by crash recovery, while the run's checkpoint survives; so the
//! server's start time is recorded with the run, and [`check_unlogged_intact`] refuses to
//! continue on unlogged tables of a server that has restarted since.

use crate::error::{Context, Error, Result};
use crate::state::helpers::{self, Ownership};
use crate::state::locks::LockClass;
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
    replay_triggers: &std::collections::BTreeSet<String>,
    unlogged: &std::collections::BTreeSet<String>,
    reshape: Option<(
        &crate::model::config::Config,
        &std::collections::BTreeSet<String>,
    )>,
) -> Result<()> {
    crate::db::tx::run(
        client,
        "cannot start the clone transaction",
        None,
        || async {
            // Nobody but reproject uses rebuild tables; a long wait here means something is wrong.
            client
                .batch_execute("SET LOCAL lock_timeout = '10s'")
                .await
                .context("cannot set lock_timeout")?;
            let projections: Vec<String> = tables.iter().map(|t| t.projection.clone()).collect();
            crate::state::fence::prove(client, LockClass::Projection, &projections).await?;
            for t in tables {
                if let Ownership::Ours(_) = helpers::ownership(client, &t.rebuild).await? {
                    // The preview views of the run that left it read it: they go with it.
                    crate::pipeline::preview::drop_reading(client, &t.rebuild, true).await?;
                    client
                        .batch_execute(&format!("DROP TABLE {}", t.rebuild.quoted()))
                        .await
                        .with_context(|| {
                            format!("cannot drop the leftover rebuild table `{}`", t.rebuild)
                        })?;
                    helpers::unregister(client, &t.rebuild).await?;
                }
                if t.added {
                    // No live table to copy: the table is made by its definition.
                    let def = reshape
                        .and_then(|(config, _)| crate::pipeline::added::of_run_table(config, t))
                        .ok_or_else(|| {
                            Error::config(format!(
                                "projection `{}`: `{}` does not exist and the config has no `create` entry for it",
                                t.projection, t.live
                            ))
                            .with_hint("the run was started with a config that defined it; rebuild again (without --resume)")
                        })?;
                    crate::pipeline::added::create(client, &t.projection, def, &t.rebuild).await?;
                    helpers::register(
                        client,
                        &t.rebuild,
                        "rebuild",
                        &t.live.name,
                        &t.projection,
                        Some(run_id),
                    )
                    .await?;
                    continue;
                }
                // A partitioned table's clone is partitioned the same way; its partitions
                // cannot be UNLOGGED under a logged parent, so `build_unlogged` does not apply.
                let partition_key = crate::pipeline::partitions::key(client, &t.live).await?;
                let unlogged = unlogged.contains(&t.projection) && partition_key.is_none();
                client
                    .batch_execute(
                        &clone_statements(
                            client,
                            &t.live,
                            &t.rebuild,
                            unlogged,
                            partition_key.as_deref(),
                        )
                        .await?
                        .join(";\n"),
                    )
                    .await
                    .with_context(|| {
                        format!("cannot create `{}` as a copy of `{}`", t.rebuild, t.live)
                    })?;
                if replay_triggers.contains(&t.projection) {
                    copy_triggers(client, t).await?;
                }
                if partition_key.is_some() {
                    crate::pipeline::partitions::clone_partitions(
                        client,
                        &t.live,
                        &t.rebuild,
                        |live, clone| async move {
                            clone_statements(client, &live, &clone, false, None).await
                        },
                    )
                    .await?;
                }
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
            // The new shapes, once every clone exists (a reshape may name several tables of
            // its projection): after LIKE and the statistics targets, so everything the
            // clone copied stays unless the DDL changes it.
            if let Some((config, skip)) = reshape {
                crate::pipeline::shape::apply_to_clones(client, config, run_id, tables, skip)
                    .await?;
            }
            Ok(())
        },
    )
    .await
}

/// `CREATE TABLE clone (LIKE live INCLUDING ALL)` with the live table's persistence (UNLOGGED,
/// or UNLOGGED anyway with `unlogged`), storage parameters and tablespace, which LIKE leaves out,
/// `PARTITION BY` the live key for a partitioned table (`partition_key`), then its per-column
/// statistics targets.
async fn clone_statements(
    client: &Client,
    live: &crate::model::ident::TableName,
    clone: &crate::model::ident::TableName,
    unlogged: bool,
    partition_key: Option<&str>,
) -> Result<Vec<String>> {
    let row = client
        .query_one(
            "SELECT c.relpersistence::text, (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace),
                    coalesce(c.reloptions, '{}'),
                    coalesce((SELECT array_agg('toast.' || o) FROM pg_class tc, unnest(tc.reloptions) o
                              WHERE tc.oid = c.reltoastrelid), '{}')
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&live.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the storage settings of `{live}`"))?;
    let persistence: String = row.get(0);
    let tablespace: Option<String> = row.get(1);
    let mut options: Vec<String> = row.get(2);
    options.extend(row.get::<_, Vec<String>>(3));
    let options: Vec<String> = options
        .iter()
        .filter_map(|o| o.split_once('='))
        .map(|(k, v)| format!("{k} = {}", crate::model::ident::literal(v)))
        .collect();
    let mut out = vec![format!(
        "CREATE {}TABLE {} (LIKE {} INCLUDING ALL){}{}{}",
        if persistence == "u" || unlogged {
            "UNLOGGED "
        } else {
            ""
        },
        clone.quoted(),
        live.quoted(),
        partition_key
            .map(|k| format!(" PARTITION BY {k}"))
            .unwrap_or_default(),
        if options.is_empty() {
            String::new()
        } else {
            format!(" WITH ({})", options.join(", "))
        },
        tablespace
            .map(|ts| format!(" TABLESPACE {}", crate::model::ident::quote(&ts)))
            .unwrap_or_default()
    )];
    for (column, target) in statistics_targets(client, live).await? {
        out.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET STATISTICS {target}",
            clone.quoted(),
            crate::model::ident::quote(&column)
        ));
    }
    Ok(out)
}

/// The server's start time, as text (compared for equality only).
pub async fn server_start(client: &Client) -> Result<String> {
    let row = client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .context("cannot read the server's start time")?;
    Ok(row.get(0))
}

/// The rebuild tables that are UNLOGGED while their live table is not (`build_unlogged`).
async fn unlogged_rebuilds<'a>(
    client: &Client,
    tables: &'a [RunTable],
) -> Result<Vec<&'a RunTable>> {
    let mut out = Vec::new();
    for t in tables {
        let row = client
            .query_one(
                "SELECT (SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($1)),
                        (SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($2))",
                &[&t.rebuild.quoted(), &t.live.quoted()],
            )
            .await
            .with_context(|| format!("cannot read the persistence of `{}`", t.rebuild))?;
        let (rebuild, live): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        if rebuild.as_deref() == Some("u") && live.as_deref() == Some("p") {
            out.push(t);
        }
    }
    Ok(out)
}

/// Refuses to continue run `run_id` on unlogged rebuild tables if the server has restarted
/// since they were created: crash recovery (or a failover to a replica, which never had them)
/// leaves them empty while the checkpoint says the events were applied. A clean restart keeps
/// them, but nothing tells the two apart afterwards.
pub async fn check_unlogged_intact(
    client: &Client,
    run_id: i64,
    recorded_start: Option<&str>,
    tables: &[RunTable],
) -> Result<()> {
    let unlogged = unlogged_rebuilds(client, tables).await?;
    let Some(first) = unlogged.first() else {
        return Ok(());
    };
    let now = server_start(client).await?;
    if recorded_start == Some(now.as_str()) {
        return Ok(());
    }
    Err(Error::runtime(format!(
        "run {run_id}: its rebuild table `{}` is UNLOGGED (build_unlogged) and the server has restarted since the run created it (at {}, now started at {now}); crash recovery empties unlogged tables, so the rows the checkpoint counts may be gone",
        first.rebuild,
        recorded_start.unwrap_or("an unrecorded time"),
    ))
    .with_hint("run `reproject rebuild` again (without --resume)"))
}

/// `ALTER TABLE … SET LOGGED` for the rebuild tables built unlogged (`build_unlogged`): each is
/// rewritten once, in one sequential WAL write, under an ACCESS EXCLUSIVE lock on the rebuild
/// table only, which nobody else reads. Live tables that are UNLOGGED themselves keep their
/// clones unlogged. Returns the tables made logged.
pub async fn make_logged(client: &Client, tables: &[RunTable]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for t in unlogged_rebuilds(client, tables).await? {
        client
            .batch_execute(&format!("ALTER TABLE {} SET LOGGED", t.rebuild.quoted()))
            .await
            .with_context(|| format!("cannot make `{}` logged", t.rebuild))?;
        done.push(t.rebuild.to_string());
    }
    Ok(done)
}

/// Creates the live table's enabled user triggers on the rebuild table
/// (`replay_triggers = true`), so they fire during the replay. At the swap the rebuilt table
/// gets the live table's triggers exactly (swap/exchange.rs), whatever was done here.
async fn copy_triggers(client: &Client, t: &RunTable) -> Result<()> {
    // pg_get_triggerdef always names the table as `quote_ident(schema).quote_ident(name)`.
    let rows = client
        .query(
            "SELECT tg.tgname::text, pg_get_triggerdef(tg.oid), format(' ON %I.%I ', n.nspname, c.relname)
             FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE tg.tgrelid = to_regclass($1) AND NOT tg.tgisinternal AND tg.tgenabled <> 'D'
             ORDER BY tg.tgname",
            &[&t.live.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the triggers of `{}`", t.live))?;
    for r in rows {
        let (name, def, on): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let Some(at) = def.find(&on) else {
            return Err(Error::runtime(format!(
                "cannot copy trigger `{name}` of `{}` to `{}`: unexpected definition `{def}`",
                t.live, t.rebuild
            )));
        };
        let sql = format!(
            "{} ON {} {}",
            &def[..at],
            t.rebuild.quoted(),
            &def[at + on.len()..]
        );
        client
            .batch_execute(&sql)
            .await
            .with_context(|| format!("cannot copy trigger `{name}` to `{}`", t.rebuild))?;
    }
    Ok(())
}

/// Per-column statistics targets that differ from the default.
async fn statistics_targets(
    client: &Client,
    table: &crate::model::ident::TableName,
) -> Result<Vec<(String, i32)>> {
    let rows = client
        .query(
            "SELECT attname::text, attstattarget::int FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attstattarget >= 0",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the statistics targets of `{table}`"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
