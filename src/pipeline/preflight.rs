//! What a rebuild will need, checked before anything is written.
//!
//! A rebuild replays for hours and swaps at the end; a missing privilege or a taken name found
//! at the swap wastes all of it. So everything the run needs from the database and the config
//! is checked up front, on one code path that `plan`, `rebuild --dry-run` and `rebuild` share
//! (and `swap` and `rollback`, for what they touch): [`check`] returns every refusal at once,
//! each naming the thing and what to do, and [`refuse`] turns them into one config error
//! (exit 2). Every query here only reads the catalog, so it runs on a read-only connection.
//!
//! What the swap touches (swap/exchange.rs, swap/mod.rs): it renames each live table and gives the new one
//! the live table's owner, grants, triggers, policies and storage settings (ownership of the
//! table, and the owner needs CREATE on its schema to receive the new table); re-points views
//! and re-creates materialized views that read it (ownership of each); moves foreign keys of
//! other tables (ownership of those tables); renames the sequences owned by its columns and
//! its extended statistics (ownership of each); moves it in its publications (ownership of
//! the publication); drops the earlier `_old` table (ownership). "Ownership" is membership in
//! the owning role with its privileges (`pg_has_role(…, 'USAGE')`), as PostgreSQL checks it.

use crate::error::{Context, Error, Result};
use crate::model::config::Config;
use crate::model::ident::TableName;
use crate::state::helpers::{self, Ownership};
use crate::state::runs::RunTable;
use tokio_postgres::GenericClient;

/// One thing that would make the run fail later, found before anything was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong, naming the table, role, projection or option.
    pub what: String,
    /// What the user can do about it.
    pub hint: String,
}

impl Refusal {
    fn new(what: impl Into<String>, hint: impl Into<String>) -> Refusal {
        Refusal {
            what: what.into(),
            hint: hint.into(),
        }
    }
}

/// What is about to run.
pub struct Request<'a> {
    /// The loaded config.
    pub config: &'a Config,
    /// The selected projections, in application order.
    pub order: &'a [usize],
    /// Their tables with the helper names the run will use.
    pub tables: &'a [RunTable],
    /// `--jobs`.
    pub jobs: usize,
    /// The new shapes of the tables (`reshape`): the dependents they break must be redefined.
    pub changes: &'a [crate::pipeline::shape::ShapeChange],
}

/// Every refusal for a new rebuild of `req` (plan, dry run and rebuild alike).
pub async fn check(client: &impl GenericClient, req: &Request<'_>) -> Result<Vec<Refusal>> {
    let mut out = options(req);
    let state = state_schema(client, true).await?;
    // Which helper tables are reproject's is in the state schema: unreadable, it cannot say.
    let registry_readable = state.is_empty();
    out.extend(state);
    let lives: Vec<TableName> = req.tables.iter().map(|t| t.live.clone()).collect();
    out.extend(ownership(client, &lives).await?);
    if registry_readable {
        out.extend(helper_names(client, req.tables).await?);
    }
    for live in &lives {
        for why in unsupported(client, live, false).await? {
            out.push(Refusal::new(
                format!("a swap of `{live}` could not keep what depends on it intact: {why}"),
                "reproject cannot carry these over at a swap; rebuild only projections whose tables have none of them (or remove them first: drop the rule, detach the inheriting table, …)",
            ));
        }
    }
    out.extend(partitioned(client, req, registry_readable).await?);
    // Tables the projections retire: nothing outside them may depend on them (retire.rs).
    let names: Vec<String> = req
        .order
        .iter()
        .map(|&i| req.config.projections[i].name.clone())
        .collect();
    let (retiring, _) = crate::pipeline::retire::resolve(client, req.config, &names).await?;
    out.extend(crate::pipeline::retire::refusals(client, &retiring).await?);
    out.extend(
        crate::pipeline::shape::dependents::refusals(
            client,
            req.changes,
            &crate::pipeline::shape::dependents::of_projections(req.config, req.order),
        )
        .await?,
    );
    Ok(out)
}

/// What partitioned tables need (partitions.rs): each partition's helper names fit and are
/// free, nothing about a partition that its exchange cannot carry over, and no shape change.
async fn partitioned(
    client: &impl GenericClient,
    req: &Request<'_>,
    registry_readable: bool,
) -> Result<Vec<Refusal>> {
    use crate::pipeline::partitions;
    let mut out = Vec::new();
    for t in req.tables.iter().filter(|t| !t.added) {
        if partitions::key(client, &t.live).await?.is_none() {
            continue;
        }
        let parts = partitions::of(client, &t.live).await?;
        for (what, hint) in partitions::name_refusals(&t.live, &parts) {
            out.push(Refusal::new(what, hint));
        }
        if registry_readable {
            for (what, hint) in
                partitions::taken_names(client, &t.projection, &t.live, &parts).await?
            {
                out.push(Refusal::new(what, hint));
            }
        }
        for p in &parts {
            for why in unsupported(client, &p.name, true).await? {
                out.push(Refusal::new(
                    format!(
                        "a swap of `{}` could not keep what depends on its partition `{}` intact: {why}",
                        t.live, p.name
                    ),
                    "reproject cannot carry these over at a swap; remove them first",
                ));
            }
        }
        if req.changes.iter().any(|c| c.table == t.live) {
            out.push(Refusal::new(
                format!(
                    "projection `{}`: `{}` is partitioned, and reproject cannot change the shape of a partitioned table (`reshape`)",
                    t.projection, t.live
                ),
                "change the shape of a partitioned table yourself (ALTER TABLE on the parent), then rebuild without `reshape`",
            ));
        }
    }
    Ok(out)
}

/// swap/exchange.rs's list of what a swap cannot carry over, on any client (`partition`: the
/// table is checked as a partition of a partitioned table swapped as a whole).
async fn unsupported(
    client: &impl GenericClient,
    table: &TableName,
    partition: bool,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            crate::pipeline::swap::exchange::UNSUPPORTED_SQL,
            &[&table.quoted(), &partition],
        )
        .await
        .with_context(|| format!("cannot inspect the dependents of `{table}`"))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Refusals that need no database: projections the binary cannot run, option combinations.
fn options(req: &Request<'_>) -> Vec<Refusal> {
    let config = req.config;
    let mut out = Vec::new();
    // The binary has no Rust code: a projection with neither handlers nor command cannot run.
    if let Err(e) = crate::model::projection::require_registered(config, req.order) {
        let e = e.into_details();
        out.push(Refusal::new(e.message, e.hint.unwrap_or_default()));
    }
    out.extend(jobs(config, req.order, req.jobs));
    out
}

/// `--jobs` replays in stream lanes, which need every projection of the run to declare
/// `stream_key`: asking for lanes a run cannot have is refused rather than ignored.
pub fn jobs(config: &Config, order: &[usize], jobs: usize) -> Vec<Refusal> {
    let mut out = Vec::new();
    if jobs > 1 {
        for &i in order {
            let p = &config.projections[i];
            if p.stream_key.is_none() {
                out.push(Refusal::new(
                    format!(
                        "--jobs {} needs stream lanes, and projection `{}` ({}:{}) declares no `stream_key`",
                        jobs,
                        p.name,
                        config.path.display(),
                        p.line
                    ),
                    format!(
                        "leave out --jobs, or declare `stream_key = \"COLUMN\"` on `{}` if every row of its tables is written only by the events of one stream",
                        p.name
                    ),
                ));
            }
        }
    }
    out
}

/// The state schema `reproject`: creatable, or usable and writable. `migrates`: the command
/// creates or migrates it (a new rebuild), which needs CREATE on it even when it is current
/// (`CREATE TABLE IF NOT EXISTS` checks the privilege first); `swap`, `--resume` and
/// `rollback` only write its rows.
pub async fn state_schema(client: &impl GenericClient, migrates: bool) -> Result<Vec<Refusal>> {
    let row = client
        .query_one(
            "SELECT n.oid IS NOT NULL, current_user::text, current_database()::text,
                    has_database_privilege(current_database(), 'CREATE'),
                    n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE'),
                    n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'CREATE')
             FROM (SELECT to_regnamespace('reproject')::oid AS oid) n",
            &[],
        )
        .await
        .context("cannot check the privileges on the state schema `reproject`")?;
    let (exists, me, database): (bool, String, String) = (row.get(0), row.get(1), row.get(2));
    let (create_db, usage, create): (bool, bool, bool) = (row.get(3), row.get(4), row.get(5));
    let mut out = Vec::new();
    if !exists {
        if !create_db {
            out.push(Refusal::new(
                format!(
                    "role `{me}` cannot create reproject's state schema `reproject`: it has no CREATE privilege on database `{database}`"
                ),
                format!(
                    "have the database owner run `CREATE SCHEMA reproject AUTHORIZATION \"{me}\"` once (or `GRANT CREATE ON DATABASE \"{database}\" TO \"{me}\"`)"
                ),
            ));
        }
        return Ok(out);
    }
    let create = create || !migrates;
    if !usage || !create {
        let (missing, grant) = match (usage, create) {
            (false, false) => ("USAGE and CREATE", "USAGE, CREATE"),
            (false, true) => ("USAGE", "USAGE"),
            _ => ("CREATE", "CREATE"),
        };
        out.push(Refusal::new(
            format!("role `{me}` has no {missing} privilege on reproject's state schema `reproject`"),
            format!("have its owner run `GRANT {grant} ON SCHEMA reproject TO \"{me}\"`, or run reproject as the role that owns it"),
        ));
        return Ok(out);
    }
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_class c
             WHERE c.relnamespace = to_regnamespace('reproject') AND c.relkind IN ('r', 'p')
               AND NOT (has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
                        AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE'))
             ORDER BY 1",
            &[],
        )
        .await
        .context("cannot check the privileges on the state schema `reproject`")?;
    for r in rows {
        let table: String = r.get(0);
        out.push(Refusal::new(
            format!("role `{me}` cannot write reproject's state table `reproject.{table}` (it needs SELECT, INSERT, UPDATE and DELETE)"),
            format!("have its owner run `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA reproject TO \"{me}\"`, or run reproject as the role that owns them"),
        ));
    }
    if migrates && out.is_empty() {
        out.extend(migrations(client, &me).await?);
    }
    Ok(out)
}

/// A migration the schema still needs alters reproject's tables, which needs their owner.
async fn migrations(client: &impl GenericClient, me: &str) -> Result<Vec<Refusal>> {
    let applied: Vec<i32> = if crate::state::exists(client).await? {
        client
            .query("SELECT version FROM reproject.schema_migrations", &[])
            .await
            .context("cannot read the state schema version")?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    if crate::state::migrate::pending(&applied).is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT string_agg('reproject.' || quote_ident(c.relname), ', ' ORDER BY c.relname),
                    pg_get_userbyid(c.relowner)::text FROM pg_class c
             WHERE c.relnamespace = to_regnamespace('reproject') AND c.relkind IN ('r', 'p')
               AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
             GROUP BY c.relowner ORDER BY 2",
            &[],
        )
        .await
        .context("cannot read the owners of reproject's state tables")?;
    Ok(rows
        .iter()
        .map(|r| {
            let (tables, owner): (String, String) = (r.get(0), r.get(1));
            Refusal::new(
                format!("the state schema needs migrating, which alters its tables owned by role `{owner}` ({tables}); role `{me}` is neither `{owner}` nor a member of it"),
                format!("run this rebuild once as `{owner}` (it migrates the schema), or `GRANT \"{owner}\" TO \"{me}\"`"),
            )
        })
        .collect())
}

/// Everything the swap or rollback of these live tables alters, whose owning role the
/// connecting role cannot act as; and each table's schema, where the new table is created and
/// given to the owner. See the module comment for why each is touched.
const TOUCHED_SQL: &str = "WITH t AS (SELECT c.oid, c.relowner FROM pg_class c WHERE c.oid = to_regclass($1)),
objects AS (
    SELECT 'table' AS kind, t.oid::regclass::text AS name, t.relowner AS owner,
           'the swap renames it and gives the new table its owner, grants, triggers and policies' AS why
      FROM t
    UNION ALL
    SELECT CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, c.oid::regclass::text, c.relowner,
           'it reads ' || t.oid::regclass::text || ', and the swap ' ||
           CASE c.relkind WHEN 'm' THEN 're-creates it' ELSE 're-points it' END || ' at the new table'
      FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = r.ev_class
     WHERE c.oid <> t.oid
    UNION ALL
    SELECT 'table', c.oid::regclass::text, c.relowner,
           'its foreign key ' || quote_ident(k.conname) || ' references ' || t.oid::regclass::text || ', and the swap moves it to the new table'
      FROM t JOIN pg_constraint k ON k.confrelid = t.oid AND k.conrelid <> t.oid AND k.contype = 'f'
      JOIN pg_class c ON c.oid = k.conrelid
    UNION ALL
    SELECT 'sequence', c.oid::regclass::text, c.relowner,
           'a column of ' || t.oid::regclass::text || ' owns it, and the swap renames it'
      FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                              AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
      JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S'
    UNION ALL
    SELECT 'statistics object', quote_ident(n.nspname) || '.' || quote_ident(s.stxname), s.stxowner,
           'it is defined on ' || t.oid::regclass::text || ', and the swap renames it'
      FROM t JOIN pg_statistic_ext s ON s.stxrelid = t.oid JOIN pg_namespace n ON n.oid = s.stxnamespace
    UNION ALL
    SELECT 'publication', quote_ident(p.pubname), p.pubowner,
           'it publishes ' || t.oid::regclass::text || ', and the swap moves the new table into it'
      FROM t JOIN pg_publication_rel pr ON pr.prrelid = t.oid JOIN pg_publication p ON p.oid = pr.prpubid
)
SELECT DISTINCT ON (kind, name) kind, name, pg_get_userbyid(owner)::text, why, current_user::text
  FROM objects WHERE NOT pg_has_role(current_user, owner, 'USAGE')
 ORDER BY kind, name";

/// The schema of a live table: can the connecting role create the clone in it, and can the
/// owner receive it (`ALTER TABLE … OWNER TO` needs CREATE on the schema for the new owner,
/// unless a superuser runs it).
const SCHEMA_SQL: &str =
    "SELECT n.nspname::text, pg_get_userbyid(c.relowner)::text, current_user::text,
        has_schema_privilege(n.oid, 'CREATE'),
        has_schema_privilege(c.relowner, n.oid, 'CREATE')
          OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";

/// The views a swap locks (every view reading a live table, directly or through other views:
/// swap/mod.rs `dependents_to_lock`) whose lock would be refused. PostgreSQL locks what a view
/// reads with the privileges of the view's owner (of the locking user for a
/// `security_invoker` view), and ACCESS EXCLUSIVE needs UPDATE, DELETE or TRUNCATE (or, from
/// PostgreSQL 17, MAINTAIN) on each relation: a view owner with SELECT alone makes every lock
/// attempt fail with "permission denied", after the whole replay.
const VIEW_LOCKS_SQL: &str = "WITH RECURSIVE
     reads(reader, rel) AS (
         SELECT DISTINCT r.ev_class, d.refobjid FROM pg_depend d
           JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
          WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
            AND v.relkind = 'v' AND r.ev_class <> d.refobjid),
     views(oid) AS (
         SELECT reader FROM reads WHERE rel = to_regclass($1)::oid
         UNION
         SELECT r.reader FROM views w JOIN reads r ON r.rel = w.oid)
     SELECT v.oid::regclass::text, c.oid::regclass::text, x.role
       FROM views w JOIN reads e ON e.reader = w.oid
       JOIN pg_class v ON v.oid = e.reader JOIN pg_class c ON c.oid = e.rel
       CROSS JOIN LATERAL (SELECT CASE WHEN EXISTS (
               SELECT 1 FROM unnest(v.reloptions) o WHERE o ~* '^security_invoker=(true|on|yes|1)$')
             THEN current_user::text ELSE pg_get_userbyid(v.relowner)::text END AS role) x
      WHERE c.relkind IN ('r', 'p', 'v', 'f')
        AND NOT (has_table_privilege(x.role, c.oid, 'UPDATE')
                 OR has_table_privilege(x.role, c.oid, 'DELETE')
                 OR has_table_privilege(x.role, c.oid, 'TRUNCATE')
                 OR (current_setting('server_version_num')::int >= 170000
                     AND has_table_privilege(x.role, c.oid, 'MAINTAIN')))
      ORDER BY 1, 2";

/// What a swap or rollback of `tables` alters, that the connecting role may not alter, and
/// the views it locks whose lock would be refused.
pub async fn ownership(client: &impl GenericClient, tables: &[TableName]) -> Result<Vec<Refusal>> {
    let mut out = Vec::new();
    for live in tables {
        let rows = client
            .query(VIEW_LOCKS_SQL, &[&live.quoted()])
            .await
            .with_context(|| {
                format!("cannot check the locks the swap of `{live}` takes on its views")
            })?;
        for r in rows {
            let (view, rel, role): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            out.push(Refusal::new(
                format!(
                    "the swap of `{live}` locks view `{view}`, which PostgreSQL does with the privileges of role `{role}` on what the view reads, and `{role}` has no UPDATE, DELETE or TRUNCATE privilege on `{rel}` (ACCESS EXCLUSIVE needs one of them)"
                ),
                format!("`GRANT UPDATE ON {rel} TO \"{role}\"` (the lock needs it; the view stays read-only to its readers), or drop the view before the swap"),
            ));
        }
    }
    for live in tables {
        let rows = client
            .query(TOUCHED_SQL, &[&live.quoted()])
            .await
            .with_context(|| format!("cannot list what the swap of `{live}` alters"))?;
        for r in rows {
            let (kind, name, owner, why, me): (String, String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            out.push(Refusal::new(
                format!(
                    "{kind} `{name}` is owned by role `{owner}`, and role `{me}` is neither `{owner}` nor a member of it ({why})"
                ),
                format!(
                    "run reproject as `{owner}` (or a role that is a member of it: `GRANT \"{owner}\" TO \"{me}\"`)"
                ),
            ));
        }
        if let Some(r) = client
            .query_opt(SCHEMA_SQL, &[&live.quoted()])
            .await
            .with_context(|| format!("cannot read the schema privileges of `{live}`"))?
        {
            let (schema, owner, me): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let (we_create, owner_creates): (bool, bool) = (r.get(3), r.get(4));
            if !we_create {
                out.push(Refusal::new(
                    format!("role `{me}` has no CREATE privilege on schema `{schema}`, where the rebuild creates the new table of `{live}`"),
                    format!("`GRANT CREATE ON SCHEMA \"{schema}\" TO \"{me}\"`, or run reproject as a role that has it"),
                ));
            }
            if !owner_creates {
                out.push(Refusal::new(
                    format!("role `{owner}`, which owns `{live}`, has no CREATE privilege on schema `{schema}`, so the swap cannot give it the new table"),
                    format!("`GRANT CREATE ON SCHEMA \"{schema}\" TO \"{owner}\"`"),
                ));
            }
        }
    }
    Ok(out)
}

/// The helper tables the run will create or replace: each must be free or provably
/// reproject's own (registered in `reproject.helper_tables` with its OID). The `_old` table of
/// an earlier swap is dropped by the swap, so its owner must be one the role can act as.
pub async fn helper_names(
    client: &impl GenericClient,
    tables: &[RunTable],
) -> Result<Vec<Refusal>> {
    let has_state = crate::state::exists(client).await?;
    let mut out = Vec::new();
    for t in tables {
        for (helper, role) in [(&t.rebuild, "rebuild"), (&t.old, "old")] {
            let owned = if has_state {
                helpers::ownership(client, helper).await?
            } else if crate::db::catalog::lookup(client, helper).await?.is_some() {
                // Nothing is registered before the state schema exists.
                Ownership::Foreign
            } else {
                Ownership::Absent
            };
            match owned {
                Ownership::Foreign => out.push(Refusal::new(
                    format!(
                        "projection `{}`: table `{helper}` exists and was not created by reproject; it would be the {role} table of `{}`, and reproject never replaces a table it did not create",
                        t.projection, t.live
                    ),
                    format!("rename or drop `{helper}` yourself if it is not needed"),
                )),
                Ownership::Ours(_) if role == "old" => {
                    out.extend(table_owner(client, helper, "the swap drops it to make room for the table it replaces").await?)
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Where a rollback of run `run_id` keeps the tables it replaces (`x_rolled_back_N`): the
/// names must be free, since a rollback never replaces a table.
pub async fn parked_names(
    client: &impl GenericClient,
    tables: &[RunTable],
    run_id: i64,
) -> Result<Vec<Refusal>> {
    let mut out = Vec::new();
    for t in tables {
        let parked = crate::model::ident::rolled_back_table(&t.live, run_id);
        if crate::db::catalog::lookup(client, &parked).await?.is_some() {
            out.push(Refusal::new(
                format!("table `{parked}` exists; the rollback of run {run_id} would keep the replaced `{}` under that name", t.live),
                format!("rename or drop `{parked}` if it is not needed"),
            ));
        }
    }
    Ok(out)
}

/// `table`'s owner, if the connecting role cannot act as it.
async fn table_owner(
    client: &impl GenericClient,
    table: &TableName,
    why: &str,
) -> Result<Vec<Refusal>> {
    let row = client
        .query_opt(
            "SELECT pg_get_userbyid(relowner)::text, current_user::text FROM pg_class
             WHERE oid = to_regclass($1) AND NOT pg_has_role(current_user, relowner, 'USAGE')",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the owner of `{table}`"))?;
    Ok(row
        .map(|r| {
            let (owner, me): (String, String) = (r.get(0), r.get(1));
            Refusal::new(
                format!("table `{table}` is owned by role `{owner}`, and role `{me}` is neither `{owner}` nor a member of it ({why})"),
                format!("run reproject as `{owner}` (or a role that is a member of it: `GRANT \"{owner}\" TO \"{me}\"`)"),
            )
        })
        .into_iter()
        .collect())
}

/// The refusals of a swap or rollback of recorded tables: the live tables and what the
/// exchange alters, and the table that comes back (`incoming`) or is dropped.
pub async fn exchange(
    client: &impl GenericClient,
    tables: &[RunTable],
    incoming: impl Fn(&RunTable) -> &TableName,
    why: &str,
) -> Result<Vec<Refusal>> {
    let lives: Vec<TableName> = tables.iter().map(|t| t.live.clone()).collect();
    let mut out = ownership(client, &lives).await?;
    for t in tables {
        out.extend(table_owner(client, incoming(t), why).await?);
    }
    Ok(out)
}

/// Nothing, or one config error (exit 2) naming every refusal: `doing` is what was refused
/// (`rebuild`, `swap run 4`, …).
pub fn refuse(doing: &str, refusals: Vec<Refusal>) -> Result<()> {
    let mut refusals = refusals;
    refusals.dedup();
    let Some(first) = refusals.first() else {
        return Ok(());
    };
    let err = if refusals.len() == 1 {
        Error::config(format!("refusing to {doing}: {}", first.what))
    } else {
        let mut err = Error::config(format!(
            "refusing to {doing}: {} problems, found before anything was written",
            refusals.len()
        ));
        for r in &refusals {
            err = err.caused_by(&r.what);
        }
        err
    };
    let mut hints: Vec<&str> = Vec::new();
    for r in &refusals {
        if !hints.contains(&r.hint.as_str()) {
            hints.push(&r.hint);
        }
    }
    Err(err.with_hint(hints.join("; ")))
}
