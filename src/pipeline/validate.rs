//! Checks a loaded config against the database before anything is written: the event table
//! and every mapped expression, every projection table, every handler statement and check
//! (each prepared, never executed). Errors name the file, line, projection and table.

use crate::db::catalog::{self, require_plain_table};
use crate::error::{describe_pg, Context, Error, Result};
use crate::model::config::Config;
use crate::model::handlers::param_types;
use crate::model::{Encodings, Payload, Resolved, TableOwner, TimeKind, TxKind};
use crate::read::source::EventSource;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

/// Validates everything and returns the resolved names.
pub async fn validate(client: &impl GenericClient, config: &Config) -> Result<Resolved> {
    let file = config.path.display().to_string();
    let ev = &config.events;
    let (what, key) = match ev.source {
        Some(_) => ("the table appends insert into", "events.lock_table"),
        None => ("event table", "events.table"),
    };
    let info = catalog::resolve(client, &ev.table).await?.ok_or_else(|| {
        Error::config(format!(
            "{file}:{}: {what} `{}` does not exist",
            ev.table_line, ev.table
        ))
        .with_hint(format!(
            "check `{key}` (and the schema, or the search_path of the connecting user)"
        ))
    })?;
    let events_table = info.name.clone();
    // A preset's columns, checked and completed with the optional ones the table has: from
    // here on the mapping is the one events are read with.
    let completed =
        crate::pipeline::preset_columns::complete(client, &file, ev, &events_table).await?;
    let ev = &completed.events;
    let from = crate::read::source::from_clause(ev, &events_table);
    if let Some(source) = &ev.source {
        if let Err(e) = client
            .prepare(&format!("SELECT * FROM {from} LIMIT 0"))
            .await
        {
            return Err(Error::config(format!(
                "{file}:{}: `events.source` does not prepare",
                source.line
            ))
            .caused_by(describe_pg(&e)).with_db_state(&e).with_source(e)
            .with_hint("`source` is one SELECT query; it is read as `(source) AS events`, so the role keys name its output columns"));
        }
    }
    if let crate::read::source::PositionOrigin::Sequence(seq) =
        crate::read::source::PositionOrigin::of(ev, &events_table)
    {
        let found = client
            .query_opt(
                "SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind = 'S'",
                &[&seq.quoted()],
            )
            .await
            .with_context(|| format!("cannot look up sequence `{seq}`"))?;
        // The preset's sequence is a help: without it, no floor (read/ordering.rs).
        let supplied = ev
            .preset
            .as_ref()
            .is_some_and(|p| p.supplied("position_sequence"));
        if found.is_none() && !supplied {
            let line = ev.position_sequence.as_ref().map_or(0, |e| e.line);
            return Err(Error::config(format!(
                "{file}:{line}: `events.position_sequence`: sequence `{seq}` does not exist"
            ))
            .with_hint("name the sequence the store draws positions from (an unqualified name is looked up in the event table's schema), or remove the key"));
        }
    }
    let shown = match ev.source {
        Some(_) => "`events.source`".to_string(),
        None => format!("`{events_table}`"),
    };
    // The payload and time roles are read according to how they are stored, so the config
    // names only the column: the type of each expression decides (an expression that does not
    // prepare is reported by the role checks below).
    let type_of = |sql: String| async move {
        client
            .prepare(&sql)
            .await
            .ok()
            .map(|stmt| stmt.columns()[0].type_().clone())
    };
    let select = |e: &crate::model::config::Expr| format!("SELECT ({}) FROM {from} LIMIT 0", e.sql);
    let mut encodings = Encodings::default();
    if let Some(ty) = type_of(select(&ev.data)).await {
        encodings.data = Payload::of(&ty);
    }
    if let Some(e) = &ev.metadata {
        if let Some(ty) = type_of(select(e)).await {
            encodings.metadata = Payload::of(&ty);
        }
    }
    if let Some(e) = &ev.timestamp {
        if let Some(ty) = type_of(select(e)).await {
            encodings.timestamp = TimeKind::of(&ty);
        }
    }
    if let crate::model::config::Ordering::Xid8 { transaction_id } = &ev.ordering {
        if let Some(ty) = type_of(select(transaction_id)).await {
            encodings.transaction_id = TxKind::of(&ty);
        }
    }
    for role in EventSource::roles(ev, &encodings) {
        // The position is compared and sorted as written (so an index on it is used): it must
        // be an integer, not merely castable to one (text would sort '10' before '9'). The
        // filter must be a real boolean, not text that happens to cast.
        let required: &[Type] = match role.key {
            "position" => &[Type::INT2, Type::INT4, Type::INT8],
            "filter" => &[Type::BOOL],
            _ => &[],
        };
        if !required.is_empty() {
            let sql = format!("SELECT ({}) FROM {} LIMIT 0", role.expr.sql, from);
            if let Ok(stmt) = client.prepare(&sql).await {
                let ty = stmt.columns()[0].type_().clone();
                if !required.contains(&ty) {
                    return Err(Error::config(format!(
                        "{file}:{}: `events.{} = \"{}\"` is of type {ty}; it must be {}",
                        role.expr.line,
                        role.key,
                        role.expr.sql,
                        if role.key == "position" {
                            "an integer (smallint, integer or bigint)"
                        } else {
                            "a boolean"
                        }
                    )));
                }
            }
        }
        let sql = format!("SELECT {} FROM {from} LIMIT 0", role.read);
        if let Err(e) = client.prepare(&sql).await {
            return Err(locked_or(
                &e,
                Error::config(format!(
                    "{file}:{}: `events.{} = \"{}\"` does not work on {shown} as {}",
                    role.expr.line, role.key, role.expr.sql, role.sql_type
                ))
                .caused_by(describe_pg(&e))
                .with_db_state(&e),
            ));
        }
    }

    let mut tables = Vec::new();
    let mut added = std::collections::BTreeSet::new();
    for p in &config.projections {
        let mut resolved = Vec::new();
        for t in &p.tables {
            let Some(info) = catalog::resolve(client, &t.table).await? else {
                if !p.create.iter().any(|d| d.table == t.table) {
                    return Err(Error::config(format!(
                        "{file}:{}: projection `{}`: table `{}` does not exist",
                        t.line, p.name, t.table
                    ))
                    .with_hint(format!("create the projection table first, or give its definition (`create = {{ \"{}\" = \"FILE.sql\" }}`) and the rebuild creates it", t.table)));
                }
                // A new table: created where `CREATE TABLE` would put it.
                let name = crate::pipeline::added::resolve_new(client, &t.table)
                    .await
                    .map_err(|e| {
                        e.context(format!("{file}:{}: projection `{}`", t.line, p.name))
                    })?;
                added.insert(name.clone());
                resolved.push(name);
                continue;
            };
            require_plain_table(
                &info,
                &format!("{file}:{}: projection `{}`", t.line, p.name),
            )?;
            if info.name.schema == "reproject" {
                return Err(Error::config(format!(
                    "{file}:{}: projection `{}`: table `{}` is in reproject's own schema",
                    t.line, p.name, info.name
                )));
            }
            resolved.push(info.name);
        }
        tables.push(resolved);
    }
    let shapes = crate::pipeline::shape::plan(client, config, &tables).await?;
    let mut resolved = Resolved {
        events_table,
        events: completed.events.clone(),
        preset_columns: completed.optional_used.clone(),
        encodings,
        tables,
        shapes,
        added,
        notes: Vec::new(),
        new_shapes: Default::default(),
    };

    // The hand-over checkpoints of external projectors: the statement the swap will run.
    for p in &config.projections {
        if let Some(h) = &p.handover {
            if let Err(e) = client
                .prepare(&crate::pipeline::swap::handover::statement(h))
                .await
            {
                return Err(Error::config(format!(
                    "{file}:{}: projection `{}`: the hand-over checkpoint in `{}` cannot be set",
                    h.line, p.name, h.table
                ))
                .caused_by(describe_pg(&e)).with_db_state(&e).with_source(e)
                .with_hint("`handover` names a table, its key column and value, a bigint position column and (xid8 mode) an xid8 transaction id column"));
            }
        }
    }

    // Prepare every handler statement against the live tables; a projection that changes its
    // shape is prepared against its reshaped stand-ins instead (write_targets.rs).
    for (pi, _) in config.projections.iter().enumerate() {
        if matches!(
            resolved.shapes[pi],
            Some(crate::pipeline::shape::Planned::Applies(_))
        ) || resolved.needs_standins(config, pi)
        {
            continue;
        }
        prepare_statements(client, config, pi, |owner| resolved.live(owner).quoted()).await?;
    }
    // What each statement writes, resolved by the server.
    let checked = crate::pipeline::write_targets::check(client, config, &resolved).await?;
    for (pi, applied) in checked.shaped {
        resolved.shapes[pi] = Some(crate::pipeline::shape::Planned::Applies(applied));
    }
    resolved.notes = checked.notes;
    resolved.new_shapes = checked.new_shapes;
    Ok(resolved)
}

/// Prepares (never runs) every handler statement and check of projection `pi`, each
/// `{{table}}` standing for `table_sql(owner)`: errors name the file, line and section.
pub(crate) async fn prepare_statements(
    client: &impl GenericClient,
    config: &Config,
    pi: usize,
    table_sql: impl Fn(TableOwner) -> String,
) -> Result<()> {
    let file = config.path.display().to_string();
    let p = &config.projections[pi];
    let render = |st: &crate::model::handlers::Statement| {
        st.render(|r| table_sql(config.owner_of(&r.written).expect("resolved at load")))
    };
    let handler_file = p.handler_path().display().to_string();
    for section in p.sections() {
        for st in &section.statements {
            if let Err(e) = client.prepare_typed(&render(st), &param_types()).await {
                return Err(locked_or(
                    &e,
                    Error::config(format!(
                        "{handler_file}:{}: projection `{}`, section `{}`: the statement does not prepare",
                        st.line,
                        p.name,
                        crate::model::handlers::HandlerFile::header(section)
                    ))
                    .caused_by(describe_pg(&e))
                    .with_db_state(&e),
                ));
            }
        }
    }
    for check in &p.checks {
        let where_ = format!(
            "{file}:{}: projection `{}`, check `{}`",
            check.line, p.name, check.name
        );
        match client.prepare(&render(&check.sql)).await {
            Err(e) => {
                return Err(locked_or(
                    &e,
                    Error::config(format!("{where_}: the SQL does not prepare"))
                        .caused_by(describe_pg(&e))
                        .with_db_state(&e),
                ))
            }
            Ok(stmt) => {
                let cols = stmt.columns();
                if cols.len() != 1 || *cols[0].type_() != Type::BOOL || !stmt.params().is_empty() {
                    return Err(Error::config(format!(
                        "{where_}: a check must return exactly one boolean column and take no parameters"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A statement that could not be prepared because a table is locked (a swap or rollback holds
/// it; read-only commands run with a short `lock_timeout`) is not a config error: say so.
fn locked_or(e: &tokio_postgres::Error, otherwise: Error) -> Error {
    if crate::error::sqlstate(e) == Some("55P03") {
        Error::busy("a table of this config is locked by another session; a swap or rollback may be in progress")
            .caused_by(describe_pg(e)).with_db_state(e)
            .with_hint("try again in a moment; `reproject status` shows what runs")
    } else {
        otherwise
    }
}
