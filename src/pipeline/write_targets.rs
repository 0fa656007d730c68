//! The validation half of "a replay writes only its own tables" (write_guard.rs is the
//! run-time half): every handler and check statement is planned by the server with its
//! `{{table}}` references standing for temporary stand-in tables, and every table the plan
//! modifies must be such a temporary table. A name the server resolves to anything else (a
//! live table written without braces, through the search_path, schema-qualified or quoted, in
//! a writable CTE, through an updatable view or a rule) is refused before anything is written.
//!
//! The stand-ins (`CREATE TEMP TABLE … (LIKE live INCLUDING ALL)`, so ON CONFLICT finds its
//! unique indexes) live in one transaction that is always rolled back: `plan` and
//! `rebuild --dry-run` write nothing durable. Each statement is `EXPLAIN (VERBOSE, FORMAT
//! JSON)`ed with its six parameters bound to NULL (a custom plan, which every supported
//! PostgreSQL version makes; `GENERIC_PLAN` exists only from 16), never executed, and the plan
//! is walked for `ModifyTable` nodes, including those of CTEs, InitPlans and SubPlans.
//!
//! What the planner does not plan is not seen here: utility statements (TRUNCATE, DDL, COPY,
//! DO blocks, CALL) and what functions and triggers called by a statement write. Those are
//! caught by the run-time guard at the first batch that writes (exit 1, rolled back). A
//! server that refuses the stand-ins (a hot standby, no TEMP privilege) skips this check with
//! a warning in the log; the run-time guard still holds.

use crate::error::{Error, Result};
use crate::model::config::{Config, TableOwner};
use crate::model::handlers::{HandlerFile, Statement};
use crate::model::ident::quote as quote_ident;
use crate::model::ident::TableName;
use crate::model::Resolved;
use crate::pipeline::shape::apply::{Applied, Copy};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

/// A table a plan modifies: schema, name, operation (`Insert`, `Update`, `Delete`, `Merge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modified {
    /// The schema, as EXPLAIN names it (`pg_temp_3` for this session's temporary tables).
    pub schema: String,
    /// The relation's name.
    pub table: String,
    /// The operation.
    pub operation: String,
}

/// Every table an `EXPLAIN (VERBOSE, FORMAT JSON)` output modifies: each `ModifyTable` node of
/// each plan (a rule can make several), at any depth (CTE, InitPlan, SubPlan).
pub fn modified_tables(explain: &Value) -> Vec<Modified> {
    fn walk(node: &Value, out: &mut Vec<Modified>) {
        if node.get("Node Type").and_then(Value::as_str) == Some("ModifyTable") {
            let field = |k: &str| {
                node.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            out.push(Modified {
                schema: field("Schema"),
                table: field("Relation Name"),
                operation: field("Operation"),
            });
        }
        if let Some(children) = node.get("Plans").and_then(Value::as_array) {
            for child in children {
                walk(child, out);
            }
        }
    }
    let mut out = Vec::new();
    for entry in explain.as_array().into_iter().flatten() {
        if let Some(plan) = entry.get("Plan") {
            walk(plan, &mut out);
        }
    }
    out
}

/// Refuses (exit 2) a handler or check statement of `config` whose plan modifies a table
/// other than a temporary one: the stand-in of its own `{{table}}`, or a table it created.
///
/// A projection that changes its shape (`reshape`) has the DDL run on its stand-ins first, so
/// its statements are planned (and prepared, validate.rs) against the new shape while the live
/// table keeps the old one; returns what the DDL did, per such projection.
pub async fn check(
    client: &impl GenericClient,
    config: &Config,
    resolved: &Resolved,
) -> Result<Checked> {
    let any = config.projections.iter().any(|p| {
        !p.sections().is_empty()
            || !p.checks.is_empty()
            || p.reshape.is_some()
            || !p.create.is_empty()
    });
    if !any {
        return Ok(Checked::default());
    }
    // READ WRITE: plan and status run in read-only sessions; temporary tables need a
    // transaction that may create them. It is rolled back whatever happens.
    if let Err(e) = client.batch_execute("BEGIN READ WRITE").await {
        tracing::warn!("handler write targets not checked before the run (cannot begin: {e}); the run-time guard still checks every batch");
        return Ok(Checked::default());
    }
    let result = check_in(client, config, resolved).await;
    let _ = client.batch_execute("ROLLBACK").await;
    result
}

/// What validation on the stand-ins found: per projection that changes its shape, what the
/// DDL did; a note per `create` entry whose table is already live with that shape.
#[derive(Debug, Default)]
pub struct Checked {
    /// Per projection with a pending reshape, what it did to the stand-ins.
    pub shaped: Vec<(usize, Vec<Applied>)>,
    /// Definitions already in place (pipeline/added.rs).
    pub notes: Vec<crate::progress::Warning>,
    /// Per table not created yet, the columns and indexes its definition makes.
    pub new_shapes: std::collections::BTreeMap<TableName, Vec<String>>,
}

/// Runs each projection's pending reshape on its stand-ins (`standins[p][t]`, SQL names) and
/// prepares its statements against them.
async fn reshape_standins(
    client: &impl GenericClient,
    config: &Config,
    resolved: &Resolved,
    standins: &[Vec<String>],
) -> Result<Vec<(usize, Vec<Applied>)>> {
    let mut out = Vec::new();
    for (pi, p) in config.projections.iter().enumerate() {
        let (Some(file), Some(crate::pipeline::shape::Planned::Applies(_))) =
            (&p.reshape, &resolved.shapes[pi])
        else {
            continue;
        };
        // Tables under `create` have their definition for a shape; the reshape leaves them.
        let kept = p.reshaped_tables();
        let copies: Vec<Copy> = kept
            .iter()
            .map(|&t| Copy {
                live: resolved.tables[pi][t].clone(),
                copy: TableName::new("pg_temp", standin_name(pi, t)),
            })
            .collect();
        let applied =
            crate::pipeline::shape::apply::apply(client, &p.name, file, &copies, &[], |w| {
                config
                    .owner_of(w)
                    .ok()
                    .filter(|o| o.projection == pi)
                    .and_then(|o| kept.iter().position(|&t| t == o.table))
            })
            .await?;
        crate::pipeline::validate::prepare_statements(client, config, pi, |o| {
            standins[o.projection][o.table].clone()
        })
        .await?;
        out.push((pi, applied));
    }
    // Projections that name a table not created yet were not prepared against the live
    // tables (validate.rs): prepare them against the stand-ins.
    for pi in 0..config.projections.len() {
        if resolved.needs_standins(config, pi) && !out.iter().any(|(p, _)| *p == pi) {
            crate::pipeline::validate::prepare_statements(client, config, pi, |o| {
                standins[o.projection][o.table].clone()
            })
            .await?;
        }
    }
    Ok(out)
}

fn standin_name(projection: usize, table: usize) -> String {
    format!("reproject_standin_{projection}_{table}")
}

async fn check_in(
    client: &impl GenericClient,
    config: &Config,
    resolved: &Resolved,
) -> Result<Checked> {
    // One stand-in per table of the config, named by its position (never a user's name, so
    // no unqualified name in a handler can resolve to it by accident).
    let mut standins: Vec<Vec<String>> = Vec::new();
    let mut new_shapes = std::collections::BTreeMap::new();
    for (p, tables) in resolved.tables.iter().enumerate() {
        let mut names = Vec::new();
        for (t, live) in tables.iter().enumerate() {
            let name = standin_name(p, t);
            if resolved.is_added(live) {
                // Not there yet: the stand-in is what its definition makes.
                let (projection, def) = crate::pipeline::added::definition(config, resolved, live)
                    .expect("an added table has a definition (validate.rs)");
                client
                    .batch_execute("SAVEPOINT standin")
                    .await
                    .map_err(|e| Error::runtime("cannot set a savepoint").caused_by(e))?;
                let standin = TableName::new("pg_temp", name.clone());
                crate::pipeline::added::create(client, projection, def, &standin).await?;
                new_shapes.insert(
                    live.clone(),
                    crate::pipeline::added::shape_of(client, &standin).await?,
                );
                let _ = client.batch_execute("RELEASE SAVEPOINT standin").await;
                names.push(format!("pg_temp.{}", quote_ident(&name)));
                continue;
            }
            let sql = format!(
                "SAVEPOINT standin; CREATE TEMP TABLE {} (LIKE {} INCLUDING ALL); RELEASE SAVEPOINT standin",
                quote_ident(&name),
                live.quoted()
            );
            if let Err(e) = client.batch_execute(&sql).await {
                tracing::warn!("handler write targets not checked before the run (cannot create a temporary stand-in for `{live}`: {e}); the run-time guard still checks every batch");
                return Ok(Checked::default());
            }
            names.push(format!("pg_temp.{}", quote_ident(&name)));
        }
        standins.push(names);
    }
    let notes = crate::pipeline::added::check_existing(client, config, resolved).await?;
    let shaped = reshape_standins(client, config, resolved, &standins).await?;
    let render = |st: &Statement| {
        st.render(|r| {
            let TableOwner { projection, table } =
                config.owner_of(&r.written).expect("resolved at load");
            standins[projection][table].clone()
        })
    };
    let file = config.path.display().to_string();
    for (pi, p) in config.projections.iter().enumerate() {
        let handler_file = p.handler_path().display().to_string();
        for section in p.sections() {
            for st in &section.statements {
                let where_ = format!(
                    "{handler_file}:{}: projection `{}`, section `{}`",
                    st.line,
                    p.name,
                    HandlerFile::header(section)
                );
                let Some(plan) = explain(client, &render(st)).await else {
                    continue;
                };
                if let Some(m) = modified_tables(&plan)
                    .into_iter()
                    .find(|m| !m.schema.starts_with("pg_temp"))
                {
                    return Err(refusal(config, resolved, pi, &where_, &m));
                }
            }
        }
        for check in &p.checks {
            let where_ = format!(
                "{file}:{}: projection `{}`, check `{}`",
                check.line, p.name, check.name
            );
            let Some(plan) = explain(client, &render(&check.sql)).await else {
                continue;
            };
            if let Some(m) = modified_tables(&plan).into_iter().next() {
                let table = shown(&m);
                return Err(Error::config(format!(
                    "{where_}: the check writes `{table}` ({}); a check only reads",
                    m.operation.to_uppercase()
                ))
                .with_hint("make the check a SELECT that returns one boolean, without INSERT, UPDATE, DELETE or MERGE"));
            }
        }
    }
    Ok(Checked {
        shaped,
        notes,
        new_shapes,
    })
}

/// The statement's plan, or None when the server does not plan it (a utility statement such
/// as TRUNCATE or DO; whether it prepares was checked before) or cannot with NULL parameters.
async fn explain(client: &impl GenericClient, sql: &str) -> Option<Value> {
    let explain = format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}");
    if client.batch_execute("SAVEPOINT explain").await.is_err() {
        return None;
    }
    // The six handler parameters (handlers.rs), all NULL; prepared with their types, so every
    // statement takes all six whichever it uses.
    let (position, text, json, time): (
        Option<i64>,
        Option<String>,
        Option<Value>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = (None, None, None, None);
    let values: [&(dyn ToSql + Sync); 6] = [&position, &text, &text, &json, &json, &time];
    let result = match client
        .prepare_typed(&explain, &crate::model::handlers::param_types())
        .await
    {
        Ok(stmt) => client
            .query_one(&stmt, &values[..stmt.params().len()])
            .await
            .map(|row| row.get::<_, Value>(0)),
        Err(e) => Err(e),
    };
    let _ = client.batch_execute("ROLLBACK TO SAVEPOINT explain").await;
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!("not planned, left to the run-time guard: {e}");
            None
        }
    }
}

/// The table as the user knows it: schema-qualified.
fn shown(m: &Modified) -> String {
    format!(
        "{}.{}",
        quote_if_needed(&m.schema),
        quote_if_needed(&m.table)
    )
}

fn quote_if_needed(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.is_empty();
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// The error for a handler statement of projection `pi` that writes `m`.
fn refusal(config: &Config, resolved: &Resolved, pi: usize, where_: &str, m: &Modified) -> Error {
    let table = shown(m);
    let op = m.operation.to_uppercase();
    // Is it a table of the config (its live table)?
    let owner = resolved.tables.iter().enumerate().find_map(|(p, ts)| {
        ts.iter()
            .position(|t| t.schema == m.schema && t.name == m.table)
            .map(|t| (p, t))
    });
    match owner {
        Some((p, t)) if p == pi => {
            let written = &config.projections[p].tables[t].table;
            Error::config(format!(
                "{where_}: the statement writes `{table}` ({op}), the live table, which the application reads during the replay"
            ))
            .with_hint(format!(
                "write {{{{{written}}}}} (in braces): the replay then writes the table it builds"
            ))
        }
        Some((p, _)) => Error::config(format!(
            "{where_}: the statement writes `{table}` ({op}), a live table of projection `{}`",
            config.projections[p].name
        ))
        .with_hint("a projection writes only its own tables, in braces; it may read others"),
        None if m.schema == "reproject" => Error::config(format!(
            "{where_}: the statement writes `{table}` ({op}) in reproject's own schema"
        ))
        .with_hint("handlers write only their projection's tables, in braces; reproject keeps its state itself"),
        None => Error::config(format!(
            "{where_}: the statement writes `{table}` ({op}), which is not a table of projection `{}`",
            config.projections[pi].name
        ))
        .with_hint(format!(
            "a handler writes only its projection's tables, in braces; to rebuild `{table}` too, add it to the projection's `tables` and write it as {{{{{}}}}}",
            m.table
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_modify_table_nodes_at_any_depth_in_every_plan() {
        let explain = json!([
            {"Plan": {
                "Node Type": "ModifyTable", "Operation": "Update", "Schema": "public",
                "Relation Name": "accounts", "Alias": "accounts",
                "Plans": [
                    {"Node Type": "ModifyTable", "Operation": "Delete", "Parent Relationship": "InitPlan",
                     "Subplan Name": "CTE gone", "Schema": "app", "Relation Name": "Side Table",
                     "Plans": [{"Node Type": "Seq Scan", "Relation Name": "x", "Schema": "public"}]},
                    {"Node Type": "Result", "Plans": [
                        {"Node Type": "ModifyTable", "Operation": "Merge", "Schema": "pg_temp_3",
                         "Relation Name": "reproject_standin_0_0"}
                    ]}
                ]
            }},
            {"Plan": {"Node Type": "ModifyTable", "Operation": "Insert", "Schema": "public", "Relation Name": "log"}}
        ]);
        let found = modified_tables(&explain);
        let names: Vec<_> = found
            .iter()
            .map(|m| format!("{} {}.{}", m.operation, m.schema, m.table))
            .collect();
        assert_eq!(
            names,
            [
                "Update public.accounts",
                "Delete app.Side Table",
                "Merge pg_temp_3.reproject_standin_0_0",
                "Insert public.log"
            ]
        );
    }

    #[test]
    fn a_read_only_plan_modifies_nothing() {
        let explain = json!([{"Plan": {"Node Type": "Seq Scan", "Schema": "public", "Relation Name": "accounts",
                                        "Plans": [{"Node Type": "Index Scan", "Relation Name": "y"}]}}]);
        assert!(modified_tables(&explain).is_empty());
        assert!(modified_tables(&json!({})).is_empty());
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert_eq!(quote_if_needed("accounts"), "accounts");
        assert_eq!(quote_if_needed("Side Table"), "\"Side Table\"");
        assert_eq!(quote_if_needed("1x"), "\"1x\"");
    }
}
