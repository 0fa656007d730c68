//! Preview schemas (`rebuild --preview-schema NAME`): while a run waits for its swap, a schema
//! of views named like the live tables reads the run's rebuild tables, so the next version of
//! the application (`search_path = NAME, public`) reads the new shape before the swap, beside
//! the version that reads the live tables.
//!
//! A view binds to its table by OID, not by name: after the swap renames `x_rebuild` to `x`,
//! the same views read the live table, so the new version keeps working unchanged. The swap's
//! proof therefore leaves them out (they are the incoming table's, not carried from the
//! outgoing one: `exchange::Prepared::followed_by`). A rollback drops them inside its
//! transaction (they would show the table it parks), as does dropping the rebuild table they
//! read (`cleanup`, a new run's clone).
//!
//! Each view gets the live table's owner and the SELECT privileges the live table grants
//! (table-level, and column-level for the columns the shape change keeps, under their new
//! names), nothing else: the views are for reading. A table with row-level security is
//! refused: a view reads as its owner, so it would not apply the policies.

use crate::error::{Context, Error, Result};
use crate::model::ident::{check_ident, quote, TableName};
use crate::pipeline::preflight::Refusal;
use crate::state::previews::{self, ViewRecord};
use crate::state::runs::RunTable;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::{Client, GenericClient};

/// One view a preview creates (or would create).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedView {
    /// The view, `"NAME"."x"`.
    pub view: String,
    /// The table it reads (the run's rebuild table).
    pub reads: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// Its owner: the live table's.
    pub owner: String,
    /// Roles given SELECT on the whole view (the live table's table-level SELECT grantees).
    pub select_to: Vec<String>,
    /// Column-level SELECT, `role: col, col` (the live table's, for the columns kept).
    pub column_select: Vec<String>,
}

/// What `--preview-schema` does, shown by `plan`, the dry run and the rebuild's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPreview {
    /// The schema.
    pub schema: String,
    /// Whether the schema exists now (else reproject creates it, and drops it once empty).
    pub schema_exists: bool,
    /// The run whose views in the schema the new ones replace.
    pub replaces_run: Option<i64>,
    /// The views.
    pub views: Vec<PlannedView>,
}

/// The names a preview schema may not have, and an identifier PostgreSQL would truncate.
fn name_refusals(schema: &str) -> Vec<Refusal> {
    let mut out = Vec::new();
    if let Err(why) = check_ident(schema) {
        out.push(Refusal {
            what: format!("--preview-schema: {why}"),
            hint: "choose a schema name of at most 63 bytes".into(),
        });
    }
    if schema.starts_with("pg_") || schema == "information_schema" || schema == "reproject" {
        out.push(Refusal {
            what: format!("--preview-schema `{schema}` is a reserved schema"),
            hint: "choose a schema of your own, such as `v2`".into(),
        });
    }
    out
}

/// The objects in `schema` that are not reproject's preview views, described (at most 6).
async fn foreign_objects(client: &impl GenericClient, schema: &str) -> Result<Vec<String>> {
    let ours: Vec<u32> = previews::views_in(client, schema)
        .await?
        .iter()
        .map(|v| v.oid)
        .collect();
    let rows = client
        .query(
            "SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
              WHERE d.refclassid = 'pg_namespace'::regclass
                AND d.refobjid = (SELECT oid FROM pg_namespace WHERE nspname = $1)
                AND NOT (d.classid = 'pg_class'::regclass AND d.objid = ANY($2::oid[]))
              ORDER BY 1 LIMIT 6",
            &[&schema, &ours],
        )
        .await
        .with_context(|| format!("cannot list the objects in schema `{schema}`"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn schema_exists(client: &impl GenericClient, schema: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .with_context(|| format!("cannot look for schema `{schema}`"))?
        .get(0))
}

/// Everything that makes a preview of `tables` in `schema` impossible, before anything is
/// written (`plan`, the dry run, `rebuild` before its first event): a bad name, two tables of
/// the run with the same name, a live table with row-level security, a schema holding objects
/// reproject did not put there.
pub async fn refusals(
    client: &impl GenericClient,
    schema: &str,
    tables: &[RunTable],
) -> Result<Vec<Refusal>> {
    let mut out = name_refusals(schema);
    // The catalog cannot be asked about a name it would refuse.
    let named = out.is_empty();
    let mut seen: BTreeMap<&str, &TableName> = BTreeMap::new();
    for t in tables {
        if t.live.schema == schema {
            out.push(Refusal {
                what: format!(
                    "--preview-schema `{schema}` holds the live table `{}`",
                    t.live
                ),
                hint: "the preview schema must be a schema of its own, such as `v2`".into(),
            });
        }
        if let Some(other) = seen.insert(&t.live.name, &t.live) {
            out.push(Refusal {
                what: format!(
                    "--preview-schema: `{other}` and `{}` would both be previewed as `{schema}.{}`",
                    t.live, t.live.name
                ),
                hint: "rebuild them in separate runs, each with its own preview schema".into(),
            });
        }
        if t.added {
            continue;
        }
        let rls: Option<bool> = client
            .query_opt(
                "SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass($1)",
                &[&t.live.quoted()],
            )
            .await
            .with_context(|| format!("cannot read `{}`", t.live))?
            .map(|r| r.get(0));
        if rls == Some(true) {
            out.push(Refusal {
                what: format!(
                    "--preview-schema: `{}` has row-level security enabled; a view reads as its owner and would bypass the policies",
                    t.live
                ),
                hint: "rebuild it without --preview-schema".into(),
            });
        }
    }
    let foreign = if named {
        foreign_objects(client, schema).await?
    } else {
        Vec::new()
    };
    if !foreign.is_empty() {
        out.push(Refusal {
            what: format!(
                "--preview-schema: schema `{schema}` exists and holds objects reproject did not create there: {}{}",
                foreign.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if foreign.len() > 5 { ", …" } else { "" }
            ),
            hint: "name a new or empty schema (reproject creates it if absent)".into(),
        });
    }
    Ok(out)
}

/// The live table's owner and SELECT grants: table-level (role, grantable) and column-level
/// (column, role, grantable). The owner's own privileges are its by ownership.
struct Grants {
    owner: String,
    table: Vec<(String, bool)>,
    columns: Vec<(String, String, bool)>,
}

async fn grants(client: &impl GenericClient, live: &TableName) -> Result<Grants> {
    let what = || format!("cannot read the owner and grants of `{live}`");
    let owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass($1)",
            &[&live.quoted()],
        )
        .await
        .with_context(what)?
        .get(0);
    let table = client
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.is_grantable
               FROM pg_class t, aclexplode(coalesce(t.relacl, acldefault('r', t.relowner))) a
              WHERE t.oid = to_regclass($1) AND a.privilege_type = 'SELECT' AND a.grantee <> t.relowner
              ORDER BY 1",
            &[&live.quoted()],
        )
        .await
        .with_context(what)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let columns = client
        .query(
            "SELECT att.attname::text, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.is_grantable
               FROM pg_attribute att, aclexplode(att.attacl) a
              WHERE att.attrelid = to_regclass($1) AND att.attnum > 0 AND NOT att.attisdropped
                AND a.privilege_type = 'SELECT'
              ORDER BY att.attnum, 2",
            &[&live.quoted()],
        )
        .await
        .with_context(what)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(Grants {
        owner,
        table,
        columns,
    })
}

/// The columns of `table` in order.
async fn columns(client: &impl GenericClient, table: &TableName) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1)
                AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the columns of `{table}`"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The view for one table: `renamed` maps a live column to its name in the new shape (a
/// dropped column maps to nothing; without a shape change every column keeps its name).
fn planned_view(
    schema: &str,
    t: &RunTable,
    columns: Vec<String>,
    grants: &Grants,
    renamed: &dyn Fn(&str) -> Option<String>,
) -> PlannedView {
    let mut by_role: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (column, role, grantable) in &grants.columns {
        if let Some(now) = renamed(column) {
            let mark = if *grantable { " (grantable)" } else { "" };
            by_role
                .entry(role.clone())
                .or_default()
                .push(format!("{now}{mark}"));
        }
    }
    PlannedView {
        view: format!("{}.{}", quote(schema), quote(&t.live.name)),
        reads: t.rebuild.to_string(),
        columns,
        owner: grants.owner.clone(),
        select_to: grants
            .table
            .iter()
            .map(|(r, g)| format!("{r}{}", if *g { " (grantable)" } else { "" }))
            .collect(),
        column_select: by_role
            .into_iter()
            .map(|(role, cols)| format!("{role}: {}", cols.join(", ")))
            .collect(),
    }
}

/// What the preview of `tables` in `schema` would create (`plan`, the dry run): the columns
/// as the run's shape change will make them (as validation read them from the stand-ins).
pub async fn plan(
    client: &impl GenericClient,
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    schema: &str,
    tables: &[RunTable],
) -> Result<PlannedPreview> {
    use crate::model::shape::Planned;
    let mut views = Vec::new();
    for t in tables {
        let applied = config
            .projection_index(&t.projection)
            .and_then(|i| resolved.shapes.get(i))
            .and_then(|s| match s {
                Some(Planned::Applies(a)) => a.iter().find(|a| a.live == t.live),
                _ => None,
            });
        let (cols, grants) = if t.added {
            let cols = resolved
                .new_shapes
                .get(&t.live)
                .cloned()
                .unwrap_or_default();
            let g = Grants {
                owner: "(the owner of the projection's other tables)".into(),
                table: Vec::new(),
                columns: Vec::new(),
            };
            (cols, g)
        } else {
            let cols = match applied {
                Some(a) => a
                    .shaped
                    .fingerprint
                    .columns
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
                None => columns(client, &t.live).await?,
            };
            (cols, grants(client, &t.live).await?)
        };
        let renamed = |c: &str| match applied {
            Some(a) => a
                .map
                .iter()
                .find(|m| m.before.as_ref().is_some_and(|b| b.name == c))
                .and_then(|m| m.after.as_ref().map(|a| a.name.clone())),
            None => Some(c.to_string()),
        };
        views.push(planned_view(schema, t, cols, &grants, &renamed));
    }
    Ok(PlannedPreview {
        schema: schema.to_string(),
        schema_exists: schema_exists(client, schema).await?,
        replaces_run: previews::schema(client, schema).await?.map(|s| s.run_id),
        views,
    })
}

/// What `create` made: the preview schema of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The schema and its views.
    #[serde(flatten)]
    pub preview: PlannedPreview,
    /// reproject created the schema now.
    pub created_schema: bool,
}

/// Creates the preview of run `run_id`'s tables in `schema`, in one transaction: the schema if
/// absent, one view per table reading its rebuild table (replacing the views an earlier run
/// had there), owner and SELECT grants as the live table's; recorded in the state.
pub async fn create(
    conn: &Client,
    run_id: i64,
    schema: &str,
    tables: &[RunTable],
) -> Result<Preview> {
    crate::db::tx::run(
        conn,
        "cannot begin the preview transaction",
        None,
        || async {
            conn.batch_execute("SET LOCAL lock_timeout = '10s'")
                .await
                .context("cannot set lock_timeout")?;
            // Two runs previewing into the same schema at once: one after the other.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('reproject preview ' || $1))",
                &[&schema],
            )
            .await
            .context("cannot lock the preview schema's record")?;
            let refused = refusals(conn, schema, tables).await?;
            crate::pipeline::preflight::refuse(
                &format!("create the preview schema `{schema}`"),
                refused,
            )?;
            let earlier = previews::schema(conn, schema).await?;
            drop_views(conn, &previews::views_in(conn, schema).await?, true).await?;
            let exists = schema_exists(conn, schema).await?;
            let q = quote(schema);
            let mut owners = BTreeSet::new();
            let mut readers = BTreeSet::new();
            let mut planned = Vec::new();
            let mut records = Vec::new();
            for t in tables {
                let grants = if t.added {
                    // The swap gives a new table the owner of its projection's other tables
                    // (added.rs); the application's grants come after.
                    let sibling = tables
                        .iter()
                        .find(|o| o.projection == t.projection && !o.added);
                    match sibling {
                        Some(s) => Grants {
                            table: Vec::new(),
                            columns: Vec::new(),
                            ..grants(conn, &s.live).await?
                        },
                        None => Grants {
                            owner: current_user(conn).await?,
                            table: Vec::new(),
                            columns: Vec::new(),
                        },
                    }
                } else {
                    grants(conn, &t.live).await?
                };
                let renames = renamed_columns(
                    &crate::state::shapes::of_table(conn, run_id, &t.live)
                        .await?
                        .map(|r| r.map),
                );
                let renamed = |c: &str| renamed_in(&renames, c);
                let cols = columns(conn, &t.rebuild).await?;
                owners.insert(grants.owner.clone());
                readers.extend(grants.table.iter().map(|(r, _)| r.clone()));
                readers.extend(
                    grants
                        .columns
                        .iter()
                        .filter_map(|(c, r, _)| renamed(c).map(|_| r.clone())),
                );
                planned.push((
                    t,
                    planned_view(schema, t, cols, &grants, &renamed),
                    grants,
                    renames,
                ));
            }
            if !exists {
                // Owned by the tables' owner when they share one, so the views can be given to it.
                let authorization = match owners.len() {
                    1 => format!(" AUTHORIZATION {}", quote(owners.first().unwrap())),
                    _ => String::new(),
                };
                exec(conn, &format!("CREATE SCHEMA {q}{authorization}")).await?;
            }
            let schema_owner: String = conn
                .query_one(
                    "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1",
                    &[&schema],
                )
                .await
                .with_context(|| format!("cannot read the owner of schema `{schema}`"))?
                .get(0);
            for owner in owners.iter().filter(|o| **o != schema_owner) {
                // A view's new owner needs CREATE on its schema.
                exec(
                    conn,
                    &format!("GRANT USAGE, CREATE ON SCHEMA {q} TO {}", quote(owner)),
                )
                .await?;
            }
            for reader in &readers {
                exec(
                    conn,
                    &format!("GRANT USAGE ON SCHEMA {q} TO {}", role(reader)),
                )
                .await?;
            }
            for (t, view, grants, renames) in &planned {
                let name = format!("{q}.{}", quote(&t.live.name));
                let list = view
                    .columns
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                exec(
                    conn,
                    &format!(
                        "CREATE VIEW {name} AS SELECT {list} FROM {}",
                        t.rebuild.quoted()
                    ),
                )
                .await?;
                exec(
                    conn,
                    &format!("ALTER VIEW {name} OWNER TO {}", quote(&grants.owner)),
                )
                .await?;
                // A view reads its table as its owner: before the swap gives the rebuild table
                // the live table's owner and grants, that owner may not be able to.
                let can: bool = conn
                    .query_one(
                        "SELECT has_table_privilege($1, to_regclass($2), 'SELECT')",
                        &[&grants.owner, &t.rebuild.quoted()],
                    )
                    .await
                    .with_context(|| format!("cannot check the privileges on `{}`", t.rebuild))?
                    .get(0);
                if !can {
                    exec(
                        conn,
                        &format!(
                            "GRANT SELECT ON TABLE {} TO {}",
                            t.rebuild.quoted(),
                            quote(&grants.owner)
                        ),
                    )
                    .await?;
                }
                for (grantee, grantable) in &grants.table {
                    exec(
                        conn,
                        &format!(
                            "GRANT SELECT ON TABLE {name} TO {}{}",
                            role(grantee),
                            if *grantable { " WITH GRANT OPTION" } else { "" }
                        ),
                    )
                    .await?;
                }
                for (column, grantee, grantable) in &grants.columns {
                    let Some(now) = renamed_in(renames, column) else {
                        continue;
                    };
                    exec(
                        conn,
                        &format!(
                            "GRANT SELECT ({}) ON TABLE {name} TO {}{}",
                            quote(&now),
                            role(grantee),
                            if *grantable { " WITH GRANT OPTION" } else { "" }
                        ),
                    )
                    .await?;
                }
                let oid: u32 = conn
                    .query_one("SELECT to_regclass($1)::oid", &[&name])
                    .await
                    .with_context(|| format!("cannot read the OID of `{name}`"))?
                    .get(0);
                records.push(ViewRecord {
                    schema: schema.to_string(),
                    name: t.live.name.clone(),
                    oid,
                    run_id,
                    live: t.live.quoted(),
                    reads: t.rebuild.quoted(),
                });
            }
            let created_schema = !exists || earlier.as_ref().is_some_and(|e| e.created_schema);
            previews::record(conn, schema, run_id, created_schema, &records).await?;
            Ok(Preview {
                preview: PlannedPreview {
                    schema: schema.to_string(),
                    schema_exists: exists,
                    replaces_run: earlier.map(|e| e.run_id).filter(|r| *r != run_id),
                    views: planned.into_iter().map(|(_, v, _, _)| v).collect(),
                },
                created_schema: !exists,
            })
        },
    )
    .await
}

/// A kept column's new name by its live name, from a recorded column map.
type Renames = BTreeMap<String, String>;

fn renamed_columns(map: &Option<Vec<crate::pipeline::shape::ColumnChange>>) -> Option<Renames> {
    map.as_ref().map(|map| {
        map.iter()
            .filter_map(|m| {
                Some((
                    m.before.as_ref()?.name.clone(),
                    m.after.as_ref()?.name.clone(),
                ))
            })
            .collect()
    })
}

fn renamed_in(renames: &Option<Renames>, column: &str) -> Option<String> {
    match renames {
        Some(r) => r.get(column).cloned(),
        None => Some(column.to_string()),
    }
}

/// A grantee as SQL: PUBLIC is a keyword, not a role.
fn role(name: &str) -> String {
    if name == "PUBLIC" {
        name.to_string()
    } else {
        quote(name)
    }
}

async fn current_user(client: &impl GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .await
        .context("cannot read current_user")?
        .get(0))
}

async fn exec(client: &impl GenericClient, sql: &str) -> Result<()> {
    client
        .batch_execute(sql)
        .await
        .with_context(|| format!("cannot run `{sql}`"))
}

/// Drops `views` that are still the ones reproject created (same OID) and forgets them. A
/// schema left without views is forgotten too, and dropped if reproject created it and nothing
/// else is in it, unless `keep_schema` (a new run replaces a leftover rebuild table: it will
/// likely preview into the same schema, which stays reproject's). Runs in the caller's
/// transaction. Returns the dropped views' names, and the schema's when it went too.
pub async fn drop_views(
    client: &impl GenericClient,
    views: &[ViewRecord],
    keep_schema: bool,
) -> Result<Vec<String>> {
    let mut dropped = Vec::new();
    let mut schemas: BTreeMap<String, bool> = BTreeMap::new();
    for v in views {
        if let Some(s) = previews::schema(client, &v.schema).await? {
            schemas.insert(s.schema, s.created_schema);
        }
        let name = format!("{}.{}", quote(&v.schema), quote(&v.name));
        let ours: bool = client
            .query_one(
                "SELECT coalesce(to_regclass($1)::oid = $2, false)",
                &[&name, &v.oid],
            )
            .await
            .with_context(|| format!("cannot look for `{name}`"))?
            .get(0);
        if ours {
            exec(client, &format!("DROP VIEW {name}")).await?;
            dropped.push(name);
        }
        previews::forget_view(client, v).await?;
    }
    if keep_schema {
        return Ok(dropped);
    }
    for (schema, created) in schemas {
        if !previews::views_in(client, &schema).await?.is_empty() {
            continue;
        }
        previews::forget_schema(client, &schema).await?;
        if created
            && schema_exists(client, &schema).await?
            && foreign_objects(client, &schema).await?.is_empty()
        {
            exec(client, &format!("DROP SCHEMA {}", quote(&schema))).await?;
            dropped.push(format!("schema {}", quote(&schema)));
        }
    }
    Ok(dropped)
}

/// Drops the preview views of run `run_id` (a rollback of its swap, inside its transaction).
pub async fn drop_for_run(client: &impl GenericClient, run_id: i64) -> Result<Vec<String>> {
    let views = previews::views_of_run(client, run_id).await?;
    drop_views(client, &views, false).await
}

/// The recorded preview views that read `table`.
pub async fn reading(client: &impl GenericClient, table: &TableName) -> Result<Vec<ViewRecord>> {
    let all = previews::all_views(client).await?;
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let oids: Vec<u32> = all.iter().map(|v| v.oid).collect();
    let reading: Vec<u32> = client
        .query(
            "SELECT DISTINCT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
              WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                AND d.refobjid = to_regclass($1) AND r.ev_class = ANY($2::oid[])",
            &[&table.quoted(), &oids],
        )
        .await
        .with_context(|| format!("cannot list the preview views reading `{table}`"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(all
        .into_iter()
        .filter(|v| reading.contains(&v.oid))
        .collect())
}

/// Drops the recorded preview views that read `table` (before `table` is dropped: `cleanup`,
/// a new run's clone replacing a leftover rebuild table). Runs in the caller's transaction.
pub async fn drop_reading(
    client: &impl GenericClient,
    table: &TableName,
    keep_schema: bool,
) -> Result<Vec<String>> {
    let views = reading(client, table).await?;
    drop_views(client, &views, keep_schema).await
}

/// The preview views of run `run_id` as this session names them (`oid::regclass`): the views
/// its swap's proof leaves out, since they follow the incoming table by OID.
pub async fn followers(client: &impl GenericClient, run_id: i64) -> Result<Vec<String>> {
    if !previews::exists(client).await? {
        return Ok(Vec::new());
    }
    Ok(client
        .query(
            "SELECT v.view_oid::regclass::text FROM reproject.preview_views v
               JOIN pg_class c ON c.oid = v.view_oid WHERE v.run_id = $1",
            &[&run_id],
        )
        .await
        .with_context(|| format!("cannot read the preview views of run {run_id}"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A refusal of `--preview-schema` outside the modes that wait for the swap.
pub fn mode_error() -> Error {
    Error::config("--preview-schema needs --no-swap, --swap-at or --swap-window: the preview is made once the new tables are complete and checked, while the run waits for its swap; without one the swap follows at once")
        .with_hint("add --no-swap (then `reproject swap`) or --swap-at TIME")
}
