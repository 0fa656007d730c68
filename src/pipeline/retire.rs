//! Retiring a table a projection no longer has (`retire = ["old_table"]`).
//!
//! When a projection is split or reorganised, a table it used to write can go: the config
//! lists it under `retire` instead of `tables`. The swap that puts the new generation in place
//! renames each retired table to its `_old` name in the same transaction, and registers it as
//! the run's `old` table, like the tables the swap replaced: a rollback of that run renames it
//! back, and `cleanup` drops it once the run can no longer be rolled back.
//!
//! A rename keeps every object that depends on the table pointing at it, under its new name: a
//! view, a foreign key of another table, another table's policy or a publication would then
//! read or guard the `_old` table without anyone noticing. Those are refused up front instead
//! ([`refusals`]), naming them. A `retire` entry naming a table that does not exist (retired by
//! an earlier swap) is skipped with a note.

use crate::error::{Context, Error, Result};
use crate::model::config::Config;
use crate::model::ident::TableName;
use crate::pipeline::preflight::Refusal;
use crate::state::helpers::{self, HelperTable, Ownership};
use tokio_postgres::{Client, GenericClient};

/// A table a swap retires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retiring {
    /// The projection that retires it.
    pub projection: String,
    /// The table, live until the swap.
    pub live: TableName,
    /// Its name after the swap (`x_old`), kept for a rollback.
    pub parked: TableName,
}

/// The tables the projections `names` retire, and a note for each `retire` entry that names
/// no existing table (nothing to retire).
pub async fn resolve(
    client: &impl GenericClient,
    config: &Config,
    names: &[String],
) -> Result<(Vec<Retiring>, Vec<crate::progress::Step>)> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for p in config
        .projections
        .iter()
        .filter(|p| names.contains(&p.name))
    {
        for t in &p.retire {
            match crate::db::catalog::resolve(client, &t.table).await? {
                Some(info) => out.push(Retiring {
                    projection: p.name.clone(),
                    parked: crate::model::ident::old_table(&info.name),
                    live: info.name,
                }),
                None => notes.push(crate::progress::Step::NothingToRetire {
                    projection: p.name.clone(),
                    table: t.table.to_string(),
                }),
            }
        }
    }
    Ok((out, notes))
}

/// The objects outside the table that depend on it, which a rename would leave attached to the
/// `_old` table: views, foreign keys and policies of other tables, publications.
const DEPENDENTS_SQL: &str = "
    WITH t AS (SELECT to_regclass($1)::oid AS oid)
    SELECT DISTINCT format('%s %s', CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, v.oid::regclass)
      FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class, t
     WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = t.oid AND r.ev_class <> t.oid
    UNION
    SELECT format('foreign key %I of %s', c.conname, c.conrelid::regclass)
      FROM pg_constraint c, t WHERE c.contype = 'f' AND c.confrelid = t.oid AND c.conrelid <> t.oid
    UNION
    SELECT DISTINCT format('policy %I of %s', pol.polname, pol.polrelid::regclass)
      FROM pg_depend d JOIN pg_policy pol ON pol.oid = d.objid, t
     WHERE d.classid = 'pg_policy'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = t.oid AND pol.polrelid <> t.oid
    UNION
    SELECT format('publication %I', p.pubname)
      FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid, t
     WHERE pr.prrelid = t.oid
    ORDER BY 1";

/// What makes retiring these tables unsafe: objects that depend on a retired table, a taken
/// `_old` name, a table the connecting role cannot rename.
pub async fn refusals(client: &impl GenericClient, retiring: &[Retiring]) -> Result<Vec<Refusal>> {
    let mut out = Vec::new();
    let lives: Vec<TableName> = retiring.iter().map(|r| r.live.clone()).collect();
    out.extend(crate::pipeline::preflight::ownership(client, &lives).await?);
    for r in retiring {
        let rows = client
            .query(DEPENDENTS_SQL, &[&r.live.quoted()])
            .await
            .with_context(|| format!("cannot read what depends on `{}`", r.live))?;
        let dependents: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        if !dependents.is_empty() {
            out.push(Refusal {
                what: format!(
                    "projection `{}` retires `{}`, and {} depend(s) on it: {}; after the swap they would use the table kept as `{}`",
                    r.projection,
                    r.live,
                    dependents.len(),
                    dependents.join(", "),
                    r.parked
                ),
                hint: "drop them or point them at another table first, or keep the table (remove it from `retire`)".to_string(),
            });
        }
        if let Ownership::Foreign = parked_ownership(client, &r.parked).await? {
            out.push(Refusal {
                what: format!(
                    "projection `{}`: table `{}` exists and was not created by reproject; the swap would keep the retired `{}` under that name",
                    r.projection, r.parked, r.live
                ),
                hint: format!("rename or drop `{}` yourself if it is not needed", r.parked),
            });
        }
    }
    Ok(out)
}

/// Who `parked` belongs to; without a state schema nothing is registered, so any table there
/// is not reproject's.
async fn parked_ownership(client: &impl GenericClient, parked: &TableName) -> Result<Ownership> {
    if crate::state::exists(client).await? {
        return helpers::ownership(client, parked).await;
    }
    Ok(match crate::db::catalog::lookup(client, parked).await? {
        Some(_) => Ownership::Foreign,
        None => Ownership::Absent,
    })
}

/// Inside the swap transaction of run `run_id`, with the retired tables locked: renames each
/// to its `_old` name and registers it as the run's `old` table (what a rollback renames back
/// and `cleanup` drops). An earlier `_old` table under that name was moved out of the way by
/// `swap::retire_old_tables` just before.
pub async fn park(client: &Client, run_id: i64, retiring: &[Retiring]) -> Result<()> {
    for r in retiring {
        client
            .batch_execute(&format!(
                "ALTER TABLE {} RENAME TO {}",
                r.live.quoted(),
                crate::model::ident::quote(&r.parked.name)
            ))
            .await
            .with_context(|| format!("cannot rename the retired `{}` to `{}`", r.live, r.parked))?;
        helpers::register(
            client,
            &r.parked,
            "old",
            &r.live.name,
            &r.projection,
            Some(run_id),
        )
        .await?;
    }
    Ok(())
}

/// The tables run `run_id`'s swap retired and that are still kept: its `old` tables that are
/// not the `_old` table of one of its rebuilt tables (`run_olds`).
pub async fn parked_by(
    client: &impl GenericClient,
    run_id: i64,
    run_olds: &[TableName],
) -> Result<Vec<HelperTable>> {
    Ok(helpers::list(client)
        .await?
        .into_iter()
        .filter(|h| h.kind == "old" && h.run_id == Some(run_id) && !run_olds.contains(&h.table))
        .collect())
}

/// The name a retired table had before the swap.
pub fn live_name(parked: &HelperTable) -> TableName {
    parked.table.sibling(parked.live_name.clone())
}

/// Refuses to roll back when a retired table's name has been taken since the swap.
pub async fn check_restorable(
    client: &impl GenericClient,
    run_id: i64,
    parked: &[HelperTable],
) -> Result<()> {
    for h in parked {
        let live = live_name(h);
        if crate::db::catalog::lookup(client, &live).await?.is_some() {
            return Err(Error::runtime(format!(
                "cannot roll back run {run_id}: its swap retired `{live}` (kept as `{}`), and a table `{live}` exists again",
                h.table
            ))
            .with_hint(format!("rename or drop the new `{live}` first; nothing was changed")));
        }
    }
    Ok(())
}

/// Inside the rollback transaction of run `run_id`: renames each retired table back to its
/// name and forgets it as a helper (it is the application's table again).
pub async fn restore(client: &Client, parked: &[HelperTable]) -> Result<()> {
    for h in parked {
        let live = live_name(h);
        client
            .batch_execute(&format!(
                "ALTER TABLE {} RENAME TO {}",
                h.table.quoted(),
                crate::model::ident::quote(&live.name)
            ))
            .await
            .with_context(|| format!("cannot rename the retired `{}` back to `{live}`", h.table))?;
        helpers::unregister(client, &h.table).await?;
    }
    Ok(())
}
