//! Tables a rebuild adds to a projection (`create = { "x" = "x.sql" }`): listed under `tables`
//! before they exist, and made by the rebuild from their definition.
//!
//! While `x` does not exist live, the definition runs where a LIKE clone would be made: on
//! the temporary stand-in of validation (so handlers and checks are prepared and planned
//! against it) and on `x_rebuild` in the clone transaction. The swap renames `x_rebuild` to
//! `x` (after checking, under its locks, that nobody took the name since) with no `_old`: there
//! is nothing to replace and nothing to carry. Index, constraint and sequence names that
//! PostgreSQL derived from `x_rebuild` get the names it would have derived from `x`, and the
//! table gets the owner of the projection's other tables, as if whoever owns them had created
//! it; privileges are what the definition grants (and the default privileges of the role that
//! ran the rebuild). A rollback parks it as `x_rolled_back_N`, like every table it replaces:
//! the application of the old version never knew it, and `cleanup` drops it.
//!
//! Once `x` is live the definition is never run again: validation compares the live table's
//! columns and indexes with what the definition makes, refuses (exit 2) when they differ and
//! otherwise notes that the entry can go.

use crate::error::{describe_pg, Context, Error, Result};
use crate::model::config::Config;
use crate::model::ident::{ConfigTableRef, TableName};
use crate::model::shape::file::TableDefinition;
use crate::state::helpers;
use crate::state::runs::RunTable;
use tokio_postgres::GenericClient;

/// Where `CREATE TABLE` would put `table`, which does not exist: its schema, or the first
/// schema of the search_path.
pub async fn resolve_new(client: &impl GenericClient, table: &ConfigTableRef) -> Result<TableName> {
    let schema: Option<String> = match &table.schema {
        Some(s) => client
            .query_opt(
                "SELECT nspname::text FROM pg_namespace WHERE nspname = $1",
                &[s],
            )
            .await
            .context("cannot read the schemas")?
            .map(|r| r.get(0)),
        None => client
            .query_one("SELECT current_schema()::text", &[])
            .await
            .context("cannot read the current schema")?
            .get(0),
    };
    let schema = schema.ok_or_else(|| {
        Error::config(format!(
            "table `{table}` is to be created, and {}",
            match &table.schema {
                Some(s) => format!("schema `{s}` does not exist"),
                None => "the search_path names no existing schema".to_string(),
            }
        ))
        .with_hint("create the schema first, or qualify the table with an existing schema")
    })?;
    Ok(TableName::new(schema, table.name.clone()))
}

/// The definition that creates `live`, if the config has one.
pub fn definition<'a>(
    config: &'a Config,
    resolved: &crate::model::Resolved,
    live: &TableName,
) -> Option<(&'a str, &'a TableDefinition)> {
    for (pi, p) in config.projections.iter().enumerate() {
        for (ti, t) in p.tables.iter().enumerate() {
            if resolved.tables.get(pi).and_then(|ts| ts.get(ti)) == Some(live) {
                return p
                    .create
                    .iter()
                    .find(|d| d.table == t.table)
                    .map(|d| (p.name.as_str(), d));
            }
        }
    }
    None
}

/// The definition of a run's table, found by its projection and name.
pub fn of_run_table<'a>(config: &'a Config, t: &RunTable) -> Option<&'a TableDefinition> {
    let p = &config.projections[config.projection_index(&t.projection)?];
    p.create.iter().find(|d| {
        d.table.name == t.live.name && d.table.schema.as_ref().is_none_or(|s| *s == t.live.schema)
    })
}

/// Runs `def` with its `{{table}}` as `target` (a stand-in or `x_rebuild`), in the caller's
/// transaction; a failing statement is refused naming the file and line.
pub async fn create(
    client: &impl GenericClient,
    projection: &str,
    def: &TableDefinition,
    target: &TableName,
) -> Result<()> {
    for st in &def.file.statements {
        let sql = st.render(|_| target.quoted());
        if let Err(e) = client.batch_execute(&sql).await {
            return Err(Error::config(format!(
                "{}: projection `{projection}`: the definition of the new table `{}` fails",
                def.file.at(st),
                def.table
            ))
            .caused_by(describe_pg(&e))
            .with_db_state(&e)
            .with_hint(
                "the statements run on an empty table made for the rebuild; nothing was written",
            ));
        }
    }
    if crate::db::catalog::lookup(client, target).await?.is_none() {
        return Err(Error::config(format!(
            "{}: projection `{projection}`: the definition of `{}` does not create it",
            def.file.path.display(),
            def.table
        ))
        .with_hint(format!(
            "write `CREATE TABLE {{{{{}}}}} (…)`: the braces are where the rebuild puts the table",
            def.table.name
        )));
    }
    Ok(())
}

/// What "the same shape" means for a table and its definition: the columns (name, type, not
/// null, in order) and the indexes (definition without names, unique/primary).
pub async fn shape_of(client: &impl GenericClient, table: &TableName) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT 'column ' || quote_ident(attname) || ' ' || format_type(atttypid, atttypmod)
                    || CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END
               FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
             UNION ALL
             SELECT * FROM (
             SELECT CASE WHEN i.indisprimary THEN 'primary key ' WHEN i.indisunique THEN 'unique index ' ELSE 'index ' END
                    || regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', 'USING ')
               FROM pg_index i WHERE i.indrelid = to_regclass($1) ORDER BY 1) ix",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the columns and indexes of `{table}`"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// In a transaction the caller rolls back: each definition whose table exists live is run on
/// a temporary table and compared with the live table. A difference is refused (exit 2): the
/// rebuild would keep the live shape while the definition (and the handlers written for it)
/// say another. Returns a note per definition already in place.
pub async fn check_existing(
    client: &impl GenericClient,
    config: &Config,
    resolved: &crate::model::Resolved,
) -> Result<Vec<crate::progress::Warning>> {
    let mut notes = Vec::new();
    for (pi, p) in config.projections.iter().enumerate() {
        for (ti, t) in p.tables.iter().enumerate() {
            let Some(def) = p.create.iter().find(|d| d.table == t.table) else {
                continue;
            };
            let live = &resolved.tables[pi][ti];
            if resolved.is_added(live) {
                continue;
            }
            let probe = TableName::new("pg_temp", format!("reproject_definition_{pi}_{ti}"));
            create(client, &p.name, def, &probe).await?;
            let (want, have) = (
                shape_of(client, &probe).await?,
                shape_of(client, live).await?,
            );
            if want != have {
                let missing: Vec<&String> = want.iter().filter(|w| !have.contains(w)).collect();
                let extra: Vec<&String> = have.iter().filter(|h| !want.contains(h)).collect();
                let mut err = Error::config(format!(
                    "{}:{}: projection `{}`: `create` defines `{}`, which exists with a different shape",
                    config.path.display(),
                    def.line,
                    p.name,
                    live
                ));
                for m in missing {
                    err = err.caused_by(format!("the definition has {m}; the table does not"));
                }
                for x in extra {
                    err = err.caused_by(format!("the table has {x}; the definition does not"));
                }
                return Err(err.with_hint(format!(
                    "`create` only makes a table that does not exist yet: to change `{live}`, remove its `create` entry and use `reshape`; if the name belongs to another table, choose another name"
                )));
            }
            notes.push(crate::progress::Warning::CreateTableExists {
                projection: p.name.clone(),
                table: live.to_string(),
                definition: def.file.path.display().to_string(),
            });
        }
    }
    Ok(notes)
}

/// Inside the swap transaction, with the locks held: `x_rebuild` becomes `x`. Refused (exit 4,
/// nothing swapped) when `x` exists by now: whatever made it, replacing it is not what the
/// run planned.
pub async fn swap_in(
    client: &tokio_postgres::Client,
    t: &RunTable,
    siblings: &[&RunTable],
) -> Result<()> {
    if crate::db::catalog::lookup(client, &t.live).await?.is_some() {
        return Err(Error::new(
            crate::error::ErrorKind::Fidelity,
            format!(
                "projection `{}`: `{}` exists now; the run was to create it (from its `create` definition) and replaces no table",
                t.projection, t.live
            ),
        )
        .with_hint("nothing was swapped; drop or rename that table, or remove the `create` entry and rebuild"));
    }
    // The names PostgreSQL derived from `x_rebuild` (`x_rebuild_pkey`, `x_rebuild_id_seq`)
    // would otherwise stay: rename them as if the table had been created as `x`.
    let objects = client
        .query(
            "SELECT 'index', c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = to_regclass($1)
             UNION ALL
             SELECT 'constraint', conname::text FROM pg_constraint
              WHERE conrelid = to_regclass($1) AND contype NOT IN ('p', 'u', 'x')
             UNION ALL
             SELECT 'sequence', s.relname::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
              WHERE d.refobjid = to_regclass($1) AND d.classid = 'pg_class'::regclass
                AND s.relkind = 'S' AND d.deptype IN ('a', 'i')",
            &[&t.rebuild.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the indexes and constraints of `{}`", t.rebuild))?;
    client
        .batch_execute(&format!(
            "ALTER TABLE {} RENAME TO {}",
            t.rebuild.quoted(),
            crate::model::ident::quote(&t.live.name)
        ))
        .await
        .with_context(|| format!("cannot rename `{}` to `{}`", t.rebuild, t.live))?;
    for r in &objects {
        let (kind, name): (String, String) = (r.get(0), r.get(1));
        let to = crate::pipeline::shape::diff::derived_name(&name, &t.rebuild.name, &t.live.name);
        if to == name {
            continue;
        }
        let (from, to) = (
            crate::model::ident::quote(&name),
            crate::model::ident::quote(&to),
        );
        let schema = crate::model::ident::quote(&t.live.schema);
        let sql = match kind.as_str() {
            "index" => format!("ALTER INDEX {schema}.{from} RENAME TO {to}"),
            "sequence" => format!("ALTER SEQUENCE {schema}.{from} RENAME TO {to}"),
            _ => format!(
                "ALTER TABLE {} RENAME CONSTRAINT {from} TO {to}",
                t.live.quoted()
            ),
        };
        client
            .batch_execute(&sql)
            .await
            .with_context(|| format!("cannot rename {kind} {from} of `{}` to {to}", t.live))?;
    }
    // The owner of the projection's other tables: the table belongs with them.
    if let Some(sibling) = siblings.first() {
        let owner: Option<String> = client
            .query_opt(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass($1)",
                &[&sibling.live.quoted()],
            )
            .await
            .context("cannot read the owner of the projection's tables")?
            .map(|r| r.get(0));
        if let Some(owner) = owner {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {} OWNER TO {}",
                    t.live.quoted(),
                    crate::model::ident::quote(&owner)
                ))
                .await
                .with_context(|| format!("cannot give `{}` to {owner}", t.live))?;
        }
    }
    helpers::unregister(client, &t.rebuild).await
}

/// Inside the rollback transaction, with the locks held: the table run `run_id` added leaves
/// its name, kept as `x_rolled_back_N` like the tables the rollback replaces.
pub async fn park(client: &tokio_postgres::Client, run_id: i64, t: &RunTable) -> Result<()> {
    let parked = crate::model::ident::rolled_back_table(&t.live, run_id);
    if let helpers::Ownership::Ours(_) = helpers::ownership(client, &parked).await? {
        client
            .batch_execute(&format!("DROP TABLE {}", parked.quoted()))
            .await
            .with_context(|| format!("cannot drop the leftover `{parked}`"))?;
    }
    client
        .batch_execute(&format!(
            "ALTER TABLE {} RENAME TO {}",
            t.live.quoted(),
            crate::model::ident::quote(&parked.name)
        ))
        .await
        .with_context(|| format!("cannot rename `{}` to `{parked}`", t.live))?;
    helpers::register(
        client,
        &parked,
        "rolled_back",
        &t.live.name,
        &t.projection,
        Some(run_id),
    )
    .await
}
