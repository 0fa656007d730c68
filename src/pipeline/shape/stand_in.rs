//! Redefinitions tried before the replay, against a stand-in of the new shape: an empty table
//! created `LIKE` the live one and changed as the `ShapeChange` says (drops, retypes, renames,
//! additions), in a transaction that is always rolled back. A mistake in a redefinition (a
//! column the new shape does not have, a type that does not fit) is then refused before hours
//! of replay rather than at the swap.
//!
//! Only what can be tried without touching a live object is tried: views and materialized
//! views that read the table directly, and the table's own policies and triggers. A view's
//! statement fails at the end with "already exists" (its name is taken by the view it
//! replaces): PostgreSQL analyses the query first, so that error means the query fits the new
//! shape. The rest (views of redefined views, foreign keys, rules, publications, statements
//! after a view's `CREATE`) is first run at the swap, where a failure swaps nothing.

use crate::error::{Context, Result};
use crate::model::config::Config;
use crate::model::ident::{helper_name, quote, TableName};
use crate::pipeline::preflight::Refusal;
use crate::pipeline::shape::dependents::{broken, Kind, Redefinition};
use crate::pipeline::shape::ShapeChange;
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

/// The statements that turn a `LIKE` clone of the live table into a stand-in of the new shape.
pub fn shape_sql(stand_in: &TableName, change: &ShapeChange) -> Vec<String> {
    let table = stand_in.quoted();
    let mut out = Vec::new();
    for c in change.columns.iter().filter(|c| c.is_dropped()) {
        let before = c.before.as_ref().expect("dropped");
        out.push(format!(
            "ALTER TABLE {table} DROP COLUMN {}",
            quote(&before.name)
        ));
    }
    for c in change.columns.iter().filter(|c| c.is_retyped()) {
        let (before, after) = (c.before.as_ref().unwrap(), c.after.as_ref().unwrap());
        let col = quote(&before.name);
        out.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} TYPE {ty} USING {col}::{ty}",
            ty = after.type_name
        ));
    }
    for c in change.columns.iter().filter(|c| c.is_renamed()) {
        let (before, after) = (c.before.as_ref().unwrap(), c.after.as_ref().unwrap());
        out.push(format!(
            "ALTER TABLE {table} RENAME COLUMN {} TO {}",
            quote(&before.name),
            quote(&after.name)
        ));
    }
    for c in change.columns.iter().filter(|c| c.is_added()) {
        let after = c.after.as_ref().unwrap();
        out.push(format!(
            "ALTER TABLE {table} ADD COLUMN {} {}",
            quote(&after.name),
            after.type_name
        ));
    }
    out
}

/// Tries the redefinitions of the broken dependents of each change (see the module comment)
/// and returns a refusal for each that fails against the new shape. Writes nothing: the
/// stand-ins live in a transaction that is rolled back (so it needs a connection that may
/// create tables, not a read-only one).
pub async fn try_redefinitions(
    client: &impl GenericClient,
    config: &Config,
    resolved: &crate::model::Resolved,
    changes: &[ShapeChange],
) -> Result<Vec<Refusal>> {
    let mut out = Vec::new();
    for change in changes {
        let Some(pi) = config.projection_index(&change.projection) else {
            continue;
        };
        let redefine = &config.projections[pi].redefine;
        let mut tried: Vec<&Redefinition> = Vec::new();
        for b in broken(client, change).await? {
            let direct_view = b.kind.is_relation() && b.through.is_none();
            let own = matches!(b.kind, Kind::Policy | Kind::Trigger);
            if !(direct_view || own) {
                continue;
            }
            if let Some(r) = redefine.iter().find(|r| r.dependent == b.dependent) {
                if !tried.iter().any(|t| t.dependent == r.dependent) {
                    tried.push(r);
                }
            }
        }
        if tried.is_empty() {
            continue;
        }
        client
            .batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
            .await
            .context("cannot begin trying the redefinitions")?;
        let result = try_in_transaction(client, config, resolved, change, &tried).await;
        client
            .batch_execute("ROLLBACK")
            .await
            .context("cannot roll back the trial of the redefinitions")?;
        out.extend(result?);
    }
    Ok(out)
}

async fn try_in_transaction(
    client: &impl GenericClient,
    config: &Config,
    resolved: &crate::model::Resolved,
    change: &ShapeChange,
    tried: &[&Redefinition],
) -> Result<Vec<Refusal>> {
    let stand_in = change
        .table
        .sibling(helper_name(&change.table.name, "shape_check"));
    let mut build = vec![format!(
        "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
        stand_in.quoted(),
        change.table.quoted()
    )];
    build.extend(shape_sql(&stand_in, change));
    if client.batch_execute(&build.join(";\n")).await.is_err() {
        // The stand-in is a sketch of the new shape (a retype may need the real DDL's USING):
        // without one, the redefinitions are first run at the swap.
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for r in tried {
        client
            .batch_execute("SAVEPOINT redefinition")
            .await
            .context("cannot set a savepoint")?;
        for st in &r.statements {
            let sql = st.render(|t| match config.owner_of(&t.written) {
                Ok(owner) if *resolved.live(owner) == change.table => stand_in.quoted(),
                Ok(owner) => resolved.live(owner).quoted(),
                Err(_) => t.written.clone(),
            });
            let Err(e) = client.batch_execute(&sql).await else {
                continue;
            };
            // Analysed and only its name is taken (by the view it replaces): it fits.
            if e.code() == Some(&SqlState::DUPLICATE_TABLE) {
                break;
            }
            out.push(Refusal {
                what: format!(
                    "the redefinition of `{}` ({}:{}) does not fit the new shape of `{}`: {}",
                    r.key,
                    r.path.display(),
                    st.line,
                    change.table,
                    crate::error::describe_pg(&e)
                ),
                hint:
                    "correct the statements: they are tried against an empty table of the new shape"
                        .into(),
            });
            break;
        }
        client
            .batch_execute("ROLLBACK TO SAVEPOINT redefinition")
            .await
            .context("cannot roll back to the savepoint")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::shape::{Column, ColumnChange};

    #[test]
    fn the_stand_in_takes_the_new_shape() {
        let col = |n: &str, t: &str| {
            Some(Column {
                name: n.into(),
                type_name: t.into(),
            })
        };
        let change = ShapeChange {
            projection: "p".into(),
            table: TableName::new("public", "balances"),
            columns: vec![
                ColumnChange {
                    before: col("amt", "integer"),
                    after: col("amount", "numeric(12,2)"),
                },
                ColumnChange {
                    before: col("legacy", "text"),
                    after: None,
                },
                ColumnChange {
                    before: None,
                    after: col("note", "text"),
                },
            ],
        };
        let t = TableName::new("public", "balances_shape_check");
        assert_eq!(
            shape_sql(&t, &change),
            vec![
                "ALTER TABLE \"public\".\"balances_shape_check\" DROP COLUMN \"legacy\"",
                "ALTER TABLE \"public\".\"balances_shape_check\" ALTER COLUMN \"amt\" TYPE numeric(12,2) USING \"amt\"::numeric(12,2)",
                "ALTER TABLE \"public\".\"balances_shape_check\" RENAME COLUMN \"amt\" TO \"amount\"",
                "ALTER TABLE \"public\".\"balances_shape_check\" ADD COLUMN \"note\" text",
            ]
        );
    }
}
