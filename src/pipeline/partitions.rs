//! Partitioned projection tables: cloned, swapped and rolled back partition by partition.
//!
//! `LIKE … INCLUDING ALL` copies neither the partition key nor the partitions, so the clone of
//! a partitioned table `x` is created `PARTITION BY` the live key (`pg_get_partkeydef`), and
//! each partition `p` of `x` is cloned as a plain table `p_rebuild` (`LIKE p INCLUDING ALL`,
//! with its own storage settings) and attached with the live bounds
//! (`pg_get_expr(relpartbound)`): its indexes match the parent's partitioned indexes and are
//! attached to them, its own ones stay its own. At the swap the parent is exchanged first, then
//! each partition by the same exchange as a plain table (swap/exchange.rs: grants, policies,
//! triggers of its own, comments, names…); partitions are paired by name (`p` ↔ `p_rebuild`,
//! or `p` ↔ `p_old` on rollback), so a partition added to or removed from the live table after
//! the clone refuses the swap. The helper names of partitions must fit PostgreSQL's 63 bytes
//! as plain suffixes: a longer one is refused up front rather than hashed, since the partition
//! names are the ones people query.
//!
//! Not supported (refused up front, swap/exchange.rs `UNSUPPORTED_SQL`): sub-partitions,
//! foreign-table partitions, foreign keys from or to a partitioned table or its partitions; a
//! `reshape` of a partitioned table (preflight.rs).

use crate::error::{Context, Error, Result};
use crate::model::ident::{quote, TableName, MAX_IDENT_BYTES};
use crate::state::helpers::{self, Ownership};
use tokio_postgres::GenericClient;

/// One partition of a partitioned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its name.
    pub name: TableName,
    /// `pg_get_expr(relpartbound)`: `FOR VALUES FROM (1) TO (10)`, `DEFAULT`, …
    pub bound: String,
}

/// The partition key (`RANGE (k)`) of `table`, `None` when it is not partitioned (or absent).
pub async fn key(client: &impl GenericClient, table: &TableName) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT pg_get_partkeydef(c.oid) FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind = 'p'",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the partition key of `{table}`"))?;
    Ok(row.and_then(|r| r.get(0)))
}

/// The direct partitions of `table`, by name (none for a table that is not partitioned).
pub async fn of(client: &impl GenericClient, table: &TableName) -> Result<Vec<Partition>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE i.inhparent = to_regclass($1) AND c.relispartition
             ORDER BY 1, 2",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the partitions of `{table}`"))?;
    Ok(rows
        .iter()
        .map(|r| Partition {
            name: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            bound: r.get(2),
        })
        .collect())
}

/// `p` → `p_<suffix>` for a partition: the plain suffix only (see the module comment); the
/// caller has refused names that would not fit ([`name_refusals`]).
pub fn helper(partition: &TableName, suffix: &str) -> TableName {
    partition.sibling(crate::model::ident::helper_name(&partition.name, suffix))
}

/// The partitions of `live` whose `_rebuild` or `_old` name would exceed 63 bytes, as
/// (what, hint) pairs naming each.
pub fn name_refusals(live: &TableName, partitions: &[Partition]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in partitions {
        let longest = format!("{}_rebuild", p.name.name);
        if longest.len() > MAX_IDENT_BYTES {
            out.push((
                format!(
                    "partition `{}` of `{live}`: its rebuild table `{longest}` would be {} bytes long, over PostgreSQL's limit of {MAX_IDENT_BYTES}",
                    p.name, longest.len()
                ),
                format!(
                    "rename the partition to at most {} bytes (`ALTER TABLE {} RENAME TO …`); reproject never shortens a partition's name",
                    MAX_IDENT_BYTES - "_rebuild".len(),
                    p.name.quoted()
                ),
            ));
        }
    }
    out
}

/// The helper names the partitions of `live` would take (`p_rebuild`, `p_old`) that are held
/// by tables reproject did not create: a partition of a registered helper table (the leftover
/// of an earlier run, dropped or moved with its parent) is reproject's.
pub async fn taken_names(
    client: &impl GenericClient,
    projection: &str,
    live: &TableName,
    partitions: &[Partition],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in partitions {
        for role in ["rebuild", "old"] {
            let name = helper(&p.name, role);
            if crate::db::catalog::lookup(client, &name).await?.is_none() {
                continue;
            }
            let parent = client
                .query_opt(
                    "SELECT n.nspname::text, c.relname::text FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE i.inhrelid = to_regclass($1)",
                    &[&name.quoted()],
                )
                .await
                .with_context(|| format!("cannot read the parent of `{name}`"))?
                .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)));
            let ours = match &parent {
                Some(parent) if crate::state::exists(client).await? => {
                    matches!(
                        helpers::ownership(client, parent).await?,
                        Ownership::Ours(_)
                    )
                }
                _ => false,
            };
            if !ours {
                out.push((
                    format!(
                        "projection `{projection}`: table `{name}` exists and was not created by reproject; it would be the {role} table of partition `{}` of `{live}`, and reproject never replaces a table it did not create",
                        p.name
                    ),
                    format!("rename or drop `{name}` yourself if it is not needed"),
                ));
            }
        }
    }
    Ok(out)
}

/// Inside the clone transaction, once `rebuild` exists (created `PARTITION BY` the live key):
/// clones each partition of `live` and attaches it with the same bounds. `clone_sql` gives the
/// `CREATE TABLE clone (LIKE partition INCLUDING ALL) …` of a partition (clone.rs);
/// `statistics` the `ALTER … SET STATISTICS` statements it needs.
pub async fn clone_partitions<F, Fut>(
    client: &tokio_postgres::Client,
    live: &TableName,
    rebuild: &TableName,
    clone_sql: F,
) -> Result<()>
where
    F: Fn(TableName, TableName) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>>>,
{
    for p in of(client, live).await? {
        let clone = helper(&p.name, "rebuild");
        let mut sql = clone_sql(p.name.clone(), clone.clone()).await?;
        sql.push(format!(
            "ALTER TABLE {} ATTACH PARTITION {} {}",
            rebuild.quoted(),
            clone.quoted(),
            p.bound
        ));
        client
            .batch_execute(&sql.join(";\n"))
            .await
            .with_context(|| {
                format!(
                    "cannot create `{clone}` as a copy of partition `{}` of `{live}`",
                    p.name
                )
            })?;
    }
    Ok(())
}

/// Pairs each partition of `live` with its counterpart among the partitions of `incoming`
/// (`helper(p, role)`), under the swap's locks. A partition of either side without one (added
/// to the live table after the clone, say) refuses the exchange: it would be left behind.
pub async fn pairs(
    client: &impl GenericClient,
    live: &TableName,
    incoming: &TableName,
    role: &str,
) -> Result<Vec<(Partition, TableName)>> {
    let live_parts = of(client, live).await?;
    let mut incoming_parts = of(client, incoming).await?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for p in live_parts {
        let counterpart = helper(&p.name, role);
        match incoming_parts.iter().position(|i| i.name == counterpart) {
            Some(at) => {
                let i = incoming_parts.remove(at);
                if i.bound != p.bound {
                    problems.push(format!(
                        "partition `{}` is `{}`, its counterpart `{counterpart}` is `{}`",
                        p.name, p.bound, i.bound
                    ));
                }
                out.push((p, counterpart));
            }
            None => problems.push(format!(
                "partition `{}` ({}) has no counterpart `{counterpart}` in `{incoming}` (it was attached after `{incoming}` was made)",
                p.name, p.bound
            )),
        }
    }
    for i in incoming_parts {
        problems.push(format!(
            "partition `{}` of `{incoming}` ({}) has no counterpart in `{live}` (it was detached after `{incoming}` was made)",
            i.name, i.bound
        ));
    }
    if problems.is_empty() {
        return Ok(out);
    }
    let mut err = Error::fidelity(format!(
        "refusing to swap `{live}`: its partitions differ from those of `{incoming}`"
    ));
    for p in problems {
        err = err.caused_by(p);
    }
    Err(err.with_hint("nothing was swapped; run `reproject rebuild` again to clone the table as it is partitioned now"))
}

/// After the exchanges of a partitioned table: the live table must have the partitions it had
/// before, by name and bound (each exchange proved its partition's own properties).
pub async fn prove(
    client: &impl GenericClient,
    live: &TableName,
    before: &[(Partition, TableName)],
) -> Result<()> {
    let now = of(client, live).await?;
    let mut want: Vec<&Partition> = before.iter().map(|(p, _)| p).collect();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    let want: Vec<Partition> = want.into_iter().cloned().collect();
    if now == want {
        return Ok(());
    }
    let show = |v: &[Partition]| {
        v.iter()
            .map(|p| format!("{} {}", p.name, p.bound))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::fidelity(format!(
        "refusing to swap `{live}`: its partitions would differ from the live table's"
    ))
    .caused_by(format!("before: {}", show(&want)))
    .caused_by(format!("after: {}", show(&now)))
    .with_hint("nothing was swapped (the transaction was rolled back); please report this with the differences above"))
}

/// Inside a swap transaction: the partitions of `table` (a helper table moved out of the way
/// under a new name) take names derived with `suffix`, so the names of the generation that
/// follows are free.
pub async fn move_aside(
    client: &impl GenericClient,
    table: &TableName,
    suffix: &str,
) -> Result<()> {
    // One script: a round trip per partition would be one more wait under the locks each.
    let parts = of(client, table).await?;
    if parts.is_empty() {
        return Ok(());
    }
    let script: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "ALTER TABLE {} RENAME TO {}",
                p.name.quoted(),
                quote(&helper(&p.name, suffix).name)
            )
        })
        .collect();
    client
        .batch_execute(&script.join(";\n"))
        .await
        .with_context(|| {
            format!(
                "cannot rename the partitions of `{table}` to their `_{suffix}` names ({})",
                parts
                    .iter()
                    .map(|p| p.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    Ok(())
}
