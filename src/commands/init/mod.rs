//! `reproject init`: a starter config read from the catalog, so a new user does not map the
//! event table's columns by hand. A known event store (presets.rs) is recognised by its table
//! and every column its preset reads; any other table gets each role guessed (guess.rs) with
//! the reason written beside it. Reads the catalog only, on a read-only session.

mod guess;
mod render;

use crate::db::Db;
use crate::error::{Context, Error, Result};
use crate::model::config::presets::{Preset, PRESETS};
use guess::{Column, Kind};
use tokio_postgres::Client;

/// What `init` found and the config it wrote for it.
#[derive(Debug, Clone)]
pub struct Starter {
    /// The text of the config.
    pub toml: String,
    /// The preset written, if a known store was found.
    pub preset: Option<String>,
    /// The event table (the preset's, or the one inspected).
    pub table: String,
    /// Required `[events]` keys no column was found for: written commented out, to fill in.
    pub missing: Vec<&'static str>,
    /// Things the user should know (a store's table that does not match its preset, other
    /// tables that look like event tables).
    pub notes: Vec<String>,
}

/// Reads the database behind `db` and writes a starter config: for `table` if given (as
/// `schema.table` or a name on the search path), else for the known store or the one table
/// that looks like an event table. Several candidates and no `table`: a config error (exit 2)
/// listing them.
pub async fn init(db: &Db, table: Option<&str>) -> Result<Starter> {
    let client = db.dedicated().await?;
    client
        .batch_execute("SET default_transaction_read_only = on; SET lock_timeout = '5s'")
        .await
        .context("cannot make the session read-only")?;
    let database = db.describe();
    if let Some(table) = table {
        let oid: Option<u32> = client
            .query_one("SELECT to_regclass($1)::oid", &[&table])
            .await
            .with_context(|| format!("cannot look up table `{table}`"))?
            .get(0);
        let Some(oid) = oid else {
            return Err(
                Error::config(format!("--table `{table}`: no such table in {database}")).with_hint(
                    "write it as `schema.table`, or as it resolves on the role's search_path",
                ),
            );
        };
        let found = tables(&client, Some(oid)).await?;
        let Some(t) = found.into_iter().next() else {
            return Err(Error::config(format!(
                "--table `{table}`: not a table (a view or another kind of relation)"
            ))
            .with_hint("name the table the events are appended to"));
        };
        return Ok(from_table(&t, &database, Vec::new()));
    }

    let mut notes = Vec::new();
    let mut matched = Vec::new();
    for preset in PRESETS {
        match preset_matches(&client, preset).await? {
            Match::Absent => {}
            Match::Yes(table) => matched.push((preset, table)),
            Match::No(table, why) => notes.push(format!(
                "`{table}` looks like the table of the `{}` preset but does not fit it: {why}",
                preset.name
            )),
        }
    }
    let candidates: Vec<Table> = tables(&client, None)
        .await?
        .into_iter()
        .filter(|t| guess::roles(&t.columns).missing_required().is_empty())
        .filter(|t| !matched.iter().any(|(_, m)| *m == t.name))
        .collect();
    match (matched.as_slice(), candidates.as_slice()) {
        ([(preset, table)], _) => {
            for other in &candidates {
                notes.push(format!(
                    "`{}` also looks like an event table: `reproject init --table {}` starts from it instead",
                    other.name, other.name
                ));
            }
            Ok(Starter {
                toml: render::preset(preset, table, &database),
                preset: Some(preset.name.to_string()),
                table: table.clone(),
                missing: Vec::new(),
                notes,
            })
        }
        ([], [one]) => Ok(from_table(one, &database, notes)),
        ([], []) => Err(Error::config(format!(
            "no event table found in {database}: no known event store, and no table with an integer position, a stream, a type and a data column"
        ))
        .with_hint("name the event table with `reproject init --table SCHEMA.TABLE`")),
        _ => {
            let mut err = Error::config(format!(
                "{} tables look like event tables; which one holds the events?",
                matched.len() + candidates.len()
            ));
            for (preset, table) in &matched {
                err = err.caused_by(format!("`{table}` (the `{}` preset)", preset.name));
            }
            for t in &candidates {
                err = err.caused_by(format!("`{}`", t.name));
            }
            Err(err.with_hint("name it with `reproject init --table SCHEMA.TABLE`"))
        }
    }
}

fn from_table(t: &Table, database: &str, notes: Vec<String>) -> Starter {
    let roles = guess::roles(&t.columns);
    Starter {
        toml: render::table(&t.name, &t.columns, &roles, database),
        preset: None,
        table: t.name.clone(),
        missing: roles.missing_required(),
        notes,
    }
}

/// A table with its columns, named as a config writes it (`schema.table`, quoted as needed).
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<Column>,
}

/// Every column of the tables in user schemas (`oid` None), or of one table. Partitions are
/// left out (their parent is the event table), and so is reproject's own schema.
async fn tables(client: &Client, oid: Option<u32>) -> Result<Vec<Table>> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname, \
                    format_type(a.atttypid, a.atttypmod), coalesce(bt.typname, t.typname)::text, \
                    quote_ident(a.attname), \
                    a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', false), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary \
                            AND a.attnum = ANY (i.indkey::int2[])), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique \
                            AND i.indnatts = 1 AND i.indkey[0] = a.attnum) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
             LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND CASE WHEN $1::oid IS NULL \
                        THEN n.nspname NOT IN ('information_schema', 'reproject') \
                             AND n.nspname NOT LIKE 'pg\\_%' \
                        ELSE c.oid = $1::oid END \
             ORDER BY n.nspname, c.relname, a.attnum",
            &[&oid],
        )
        .await
        .context("cannot read the tables' columns from the catalog")?;
    let mut out: Vec<Table> = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let typname: String = r.get(3);
        let column = Column {
            name: r.get(1),
            type_name: r.get(2),
            kind: Kind::from_typname(&typname),
            sql: r.get(4),
            sequence: r.get(5),
            primary_key: r.get(6),
            unique: r.get(7),
        };
        match out.last_mut() {
            Some(t) if t.name == name => t.columns.push(column),
            _ => out.push(Table {
                name,
                columns: vec![column],
            }),
        }
    }
    Ok(out)
}

enum Match {
    /// The store's table is not there.
    Absent,
    /// It is, with every column the preset reads (the table as resolved).
    Yes(String),
    /// It is, but the preset's query does not prepare on it.
    No(String, String),
}

/// Whether the database holds `preset`'s store: its table (or, for a `source`, the table its
/// appends insert into) exists and the query the preset makes prepares, so every column it
/// reads and its filter's columns are there. Preparing executes nothing.
async fn preset_matches(client: &Client, preset: &Preset) -> Result<Match> {
    let Some(table) = preset.table.or(preset.lock_table) else {
        return Ok(Match::Absent);
    };
    let resolved: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&table])
        .await
        .with_context(|| format!("cannot look up table `{table}`"))?
        .get(0);
    let Some(resolved) = resolved else {
        return Ok(Match::Absent);
    };
    // As on an installation without the store's optional columns: those are not needed.
    let none = |_: &str| false;
    let mut columns: Vec<String> = [
        preset.position,
        preset.stream,
        preset.event_type,
        preset.data,
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    columns.extend(preset.metadata_sql(&none));
    columns.extend(preset.timestamp.map(str::to_string));
    columns.extend(preset.transaction_id.map(str::to_string));
    let from = match preset.source {
        Some(source) => format!("({source}) AS events"),
        None => table.to_string(),
    };
    let filter = preset
        .filter_sql(&none)
        .map(|f| format!(" WHERE {f}"))
        .unwrap_or_default();
    let sql = format!("SELECT {} FROM {from}{filter} LIMIT 0", columns.join(", "));
    Ok(match client.prepare(&sql).await {
        Ok(_) => Match::Yes(resolved),
        Err(e) => Match::No(resolved, crate::error::describe_pg(&e)),
    })
}
