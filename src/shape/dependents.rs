//! What outside a table depends on a column its new shape drops, renames or retypes, and
//! the user's definitions of those dependents against the new shape (`redefine`).
//!
//! A swap re-creates every dependent of the live table on the incoming one from its current
//! definition (carry.rs): views from their text, foreign keys, policies, triggers and
//! publication memberships from theirs. Against a table of another shape such a definition
//! fails, or silently means something else. So each dependent that uses a changed column is
//! found from the catalog ([`broken`]) and refused up front ([`refusals`]) unless the
//! projection redefines it. At the swap the dependent is dropped and the user's statements
//! run instead; its owner, grants and comment are kept; the original definition is recorded
//! so that a rollback restores it (the rollback's redefinitions are the recorded ones).
//!
//! What is found, by column (not by text): rewrite rules of views, materialized views and
//! rules (`pg_depend` on the column), views and materialized views that read one of those
//! (they are dropped with it, so they need their own definition), policies (`pg_depend`),
//! foreign keys both ways (`conkey`/`confkey`), triggers (`UPDATE OF` columns and `WHEN`),
//! publications with a column list or row filter (`pg_depend` on the column, PostgreSQL 15+).
//! Not found: whole-row uses (`SELECT t FROM t` depends on the table, not on a column) and
//! function bodies, which the catalog does not tie to columns.

use super::{ColumnChange, ShapeChange};
use crate::error::{Context, Error, Result};
use crate::ident::{literal, parse_table_ref, quote, TableName};
use crate::preflight::Refusal;
use std::fmt;
use tokio_postgres::Client;
use tokio_postgres::GenericClient;

/// The kinds of dependent a shape change can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
    /// A row-level security policy (on the table, or on another table reading it).
    Policy,
    /// A trigger of the table (`UPDATE OF` a column, or a `WHEN` condition).
    Trigger,
    /// A foreign key of the table, or of another table referencing it.
    ForeignKey,
    /// A rule of another relation whose action reads the table.
    Rule,
    /// A publication that lists columns of the table or filters its rows by them.
    Publication,
}

impl Kind {
    /// The kind in words, as messages and the state schema write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::MaterializedView => "materialized view",
            Kind::Policy => "policy",
            Kind::Trigger => "trigger",
            Kind::ForeignKey => "foreign key",
            Kind::Rule => "rule",
            Kind::Publication => "publication",
        }
    }

    /// The kind from [`Kind::name`].
    pub fn parse(text: &str) -> Option<Kind> {
        [
            Kind::View,
            Kind::MaterializedView,
            Kind::Policy,
            Kind::Trigger,
            Kind::ForeignKey,
            Kind::Rule,
            Kind::Publication,
        ]
        .into_iter()
        .find(|k| k.name() == text)
    }

    fn is_relation(self) -> bool {
        matches!(self, Kind::View | Kind::MaterializedView)
    }
}

/// Which object a dependent is, as a `redefine` key names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dependent {
    /// A view or materialized view: `schema.name`.
    Relation(TableName),
    /// A policy, trigger, rule or foreign key: `name on schema.table`, the table holding it.
    On {
        /// The object's name.
        name: String,
        /// The table (or view, for a rule) it belongs to.
        table: TableName,
    },
    /// A publication: `publication name`.
    Publication(String),
}

impl fmt::Display for Dependent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dependent::Relation(t) => write!(f, "{}.{}", t.schema, t.name),
            Dependent::On { name, table } => write!(f, "{name} on {}.{}", table.schema, table.name),
            Dependent::Publication(name) => write!(f, "publication {name}"),
        }
    }
}

/// Parses a `redefine` key: `schema.view`, `name on schema.table` or `publication name`.
/// The schema is required: a key names one object, whatever the search path.
pub fn parse_key(key: &str) -> std::result::Result<Dependent, String> {
    let key = key.trim();
    let qualified = |text: &str| -> std::result::Result<TableName, String> {
        let r = parse_table_ref(text).map_err(|e| e.message)?;
        match r.schema {
            Some(schema) => Ok(TableName::new(schema, r.name)),
            None => Err(format!(
                "`{text}` is not schema-qualified; write `public.{}`",
                r.name
            )),
        }
    };
    let unquote = |name: &str| -> std::result::Result<String, String> {
        let name = name.trim();
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => name.to_string(),
        };
        if name.is_empty() {
            Err("the name is empty".into())
        } else {
            Ok(name)
        }
    };
    if let Some(name) = key.strip_prefix("publication ") {
        return Ok(Dependent::Publication(unquote(name)?));
    }
    if let Some((name, table)) = key.rsplit_once(" on ") {
        return Ok(Dependent::On {
            name: unquote(name)?,
            table: qualified(table)?,
        });
    }
    Ok(Dependent::Relation(qualified(key)?))
}

/// A dependent that the change breaks, with the column it uses and what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// What it is.
    pub kind: Kind,
    /// Which one.
    pub dependent: Dependent,
    /// The live table whose shape changes.
    pub table: TableName,
    /// The column it uses, as the live table names it.
    pub column: String,
    /// What the change does to that column (`drops column legacy`).
    pub change: String,
    /// For a view that reads a broken view rather than the column: that view.
    pub through: Option<TableName>,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.dependent {
            Dependent::Relation(t) => format!("{} {}.{}", self.kind.name(), t.schema, t.name),
            Dependent::On { name, table } => {
                format!(
                    "{} {name} on {}.{}",
                    self.kind.name(),
                    table.schema,
                    table.name
                )
            }
            Dependent::Publication(name) => format!("publication {name}"),
        };
        let table = format!("{}.{}", self.table.schema, self.table.name);
        match &self.through {
            Some(view) => write!(
                f,
                "{what} reads view {}.{}, which uses column `{}` of {table} ({}): it is dropped and re-created with it",
                view.schema, view.name, self.column, self.change
            ),
            None => {
                write!(
                    f,
                    "{what} uses column `{}` of {table}, and the new shape {}",
                    self.column, self.change
                )?;
                if self.kind.is_relation() && self.change.contains(" from ") {
                    write!(f, " (the view's column would change type)")?;
                }
                Ok(())
            }
        }
    }
}

/// What a change does to a column, in words; `None` for an added column (it breaks nothing).
pub fn describe_change(c: &ColumnChange) -> Option<(String, String)> {
    let before = c.before.as_ref()?;
    let Some(after) = &c.after else {
        return Some((before.name.clone(), format!("drops column {}", before.name)));
    };
    let text = match (c.is_renamed(), c.is_retyped()) {
        (true, true) => format!(
            "renames {} to {} and changes it from {} to {}",
            before.name, after.name, before.type_name, after.type_name
        ),
        (true, false) => format!("renames {} to {}", before.name, after.name),
        (false, true) => format!(
            "changes {} from {} to {}",
            after.name, before.type_name, after.type_name
        ),
        (false, false) => return None,
    };
    Some((before.name.clone(), text))
}

/// Every dependent of a column of `$1` named in `$2` (the live table's names): rows of
/// (kind, schema, relation, object name, column, through schema, through name).
const BROKEN_SQL: &str = "WITH RECURSIVE t AS (SELECT oid FROM pg_class WHERE oid = to_regclass($1)),
cols AS (SELECT a.attnum, a.attname::text AS col FROM t JOIN pg_attribute a ON a.attrelid = t.oid
          WHERE a.attname::text = ANY ($2::text[]) AND a.attnum > 0 AND NOT a.attisdropped),
direct AS (
    SELECT CASE WHEN r.rulename = '_RETURN' AND c.relkind = 'v' THEN 'view'
                WHEN r.rulename = '_RETURN' AND c.relkind = 'm' THEN 'materialized view'
                ELSE 'rule' END AS kind,
           c.oid AS rel, CASE WHEN r.rulename = '_RETURN' THEN c.relname::text ELSE r.rulename::text END AS name,
           cols.col
      FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                             AND d.classid = 'pg_rewrite'::regclass
      JOIN cols ON cols.attnum = d.refobjsubid
      JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = r.ev_class
     WHERE c.oid <> t.oid
    UNION ALL
    SELECT 'policy', p.polrelid, p.polname::text, cols.col
      FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                             AND d.classid = 'pg_policy'::regclass
      JOIN cols ON cols.attnum = d.refobjsubid JOIN pg_policy p ON p.oid = d.objid
    UNION ALL
    SELECT 'trigger', tg.tgrelid, tg.tgname::text, cols.col
      FROM t JOIN pg_trigger tg ON tg.tgrelid = t.oid AND NOT tg.tgisinternal
      JOIN cols ON cols.attnum = ANY (tg.tgattr::int2[])
    UNION ALL
    SELECT 'trigger', tg.tgrelid, tg.tgname::text, cols.col
      FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                             AND d.classid = 'pg_trigger'::regclass
      JOIN cols ON cols.attnum = d.refobjsubid
      JOIN pg_trigger tg ON tg.oid = d.objid AND NOT tg.tgisinternal
    UNION ALL
    SELECT 'foreign key', k.conrelid, k.conname::text, cols.col
      FROM t JOIN pg_constraint k ON k.contype = 'f' AND (k.conrelid = t.oid OR k.confrelid = t.oid)
      JOIN cols ON (k.conrelid = t.oid AND cols.attnum = ANY (k.conkey))
                OR (k.confrelid = t.oid AND cols.attnum = ANY (k.confkey))
    UNION ALL
    SELECT 'publication', NULL::oid, pub.pubname::text, cols.col
      FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                             AND d.classid = 'pg_publication_rel'::regclass
      JOIN cols ON cols.attnum = d.refobjsubid
      JOIN pg_publication_rel pr ON pr.oid = d.objid JOIN pg_publication pub ON pub.oid = pr.prpubid
),
readers(rel, col, through, depth) AS (
    SELECT rel, col, NULL::oid, 0 FROM direct WHERE kind IN ('view', 'materialized view')
    UNION ALL
    SELECT c.oid, w.col, w.rel, w.depth + 1
      FROM readers w JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = w.rel
                                     AND d.classid = 'pg_rewrite'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = r.ev_class AND c.relkind IN ('v', 'm')
     WHERE c.oid <> w.rel AND w.depth < 50
),
found AS (
    SELECT kind, rel, name, col, NULL::oid AS through FROM direct
    UNION
    SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END, c.oid, c.relname::text, w.col, w.through
      FROM readers w JOIN pg_class c ON c.oid = w.rel WHERE w.through IS NOT NULL
)
SELECT DISTINCT ON (f.kind, n.nspname, c.relname, f.name, f.col)
       f.kind, n.nspname::text, c.relname::text, f.name, f.col, tn.nspname::text, tc.relname::text
  FROM found f
  LEFT JOIN pg_class c ON c.oid = f.rel LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class tc ON tc.oid = f.through LEFT JOIN pg_namespace tn ON tn.oid = tc.relnamespace
 ORDER BY f.kind, n.nspname, c.relname, f.name, f.col, f.through IS NOT NULL";

/// Every dependent that uses a column `change` drops, renames or retypes (an added column
/// breaks nothing), one entry per dependent and column, in a stable order.
pub async fn broken(client: &impl GenericClient, change: &ShapeChange) -> Result<Vec<Broken>> {
    let described: Vec<(String, String)> =
        change.columns.iter().filter_map(describe_change).collect();
    if described.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = described.iter().map(|(c, _)| c.clone()).collect();
    let rows = client
        .query(BROKEN_SQL, &[&change.table.quoted(), &names])
        .await
        .with_context(|| {
            format!(
                "cannot list what depends on the columns of `{}`",
                change.table
            )
        })?;
    let mut out = Vec::new();
    for r in rows {
        let kind = Kind::parse(r.get::<_, &str>(0)).expect("the query names known kinds");
        let (schema, relation): (Option<String>, Option<String>) = (r.get(1), r.get(2));
        let name: String = r.get(3);
        let column: String = r.get(4);
        let relation = relation.map(|rel| TableName::new(schema.unwrap_or_default(), rel));
        let dependent = match (kind, relation) {
            (Kind::Publication, _) | (_, None) => Dependent::Publication(name),
            (k, Some(rel)) if k.is_relation() => Dependent::Relation(rel),
            (_, Some(table)) => Dependent::On { name, table },
        };
        let through = match (r.get::<_, Option<String>>(5), r.get::<_, Option<String>>(6)) {
            (Some(s), Some(n)) => Some(TableName::new(s, n)),
            _ => None,
        };
        let change_text = described
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        out.push(Broken {
            kind,
            dependent,
            table: change.table.clone(),
            column,
            change: change_text,
            through,
        });
    }
    Ok(out)
}

/// One `redefine` entry of a projection, loaded with the config.
#[derive(Debug, Clone)]
pub struct Redefinition {
    /// The key as written.
    pub key: String,
    /// The dependent it names.
    pub dependent: Dependent,
    /// The file holding the statements, as resolved against the config's directory.
    pub path: std::path::PathBuf,
    /// Line of the entry in the config file.
    pub line: usize,
    /// The statements, with `{{table}}` references.
    pub statements: Vec<crate::handlers::Statement>,
}

/// A dependent the swap replaces by the given statements (rendered: table names resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redefined {
    /// What it is.
    pub kind: Kind,
    /// Which one.
    pub dependent: Dependent,
    /// The statements that create it against the incoming table, under the live name.
    pub sql: Vec<String>,
}

/// Refusals for the broken dependents of `changes`: each one no redefinition covers, and each
/// redefinition of the selected projections that covers nothing the changes break (it would
/// be ignored otherwise). `redefinitions` are per projection name.
pub async fn refusals(
    client: &impl GenericClient,
    changes: &[ShapeChange],
    redefinitions: &[(&str, &[Redefinition])],
) -> Result<Vec<Refusal>> {
    let mut out = Vec::new();
    let mut all: Vec<(String, Broken)> = Vec::new();
    for change in changes {
        for b in broken(client, change).await? {
            all.push((change.projection.clone(), b));
        }
    }
    let of = |projection: &str| -> &[Redefinition] {
        redefinitions
            .iter()
            .find(|(p, _)| *p == projection)
            .map_or(&[], |(_, r)| r)
    };
    for (projection, b) in &all {
        if of(projection).iter().any(|r| r.dependent == b.dependent) {
            continue;
        }
        out.push(Refusal {
            what: b.to_string(),
            hint: format!(
                "define it against the new shape: on projection `{projection}`, `redefine = {{ \"{}\" = \"shapes/{}.sql\" }}`, a file whose statements create it (tables as `{{{{{}}}}}`)",
                b.dependent,
                file_stem(&b.dependent),
                b.table.name
            ),
        });
    }
    for (projection, redefs) in redefinitions {
        for r in redefs.iter() {
            let broken_by: Vec<&Broken> = all
                .iter()
                .filter(|(p, b)| p == projection && b.dependent == r.dependent)
                .map(|(_, b)| b)
                .collect();
            if broken_by.is_empty() {
                let mut listed: Vec<String> = all
                    .iter()
                    .filter(|(p, _)| p == projection)
                    .map(|(_, b)| format!("`{}`", b.dependent))
                    .collect();
                listed.dedup();
                out.push(Refusal {
                    what: format!(
                        "projection `{projection}` redefines `{}` (line {}), which is not a dependent that the new shape of its tables breaks",
                        r.key, r.line
                    ),
                    hint: if listed.is_empty() {
                        "remove the `redefine` entry: the new shape breaks nothing".to_string()
                    } else {
                        format!(
                            "remove the entry, or check its name (the new shape breaks {})",
                            listed.join(", ")
                        )
                    },
                });
                continue;
            }
            let tables: std::collections::BTreeSet<&TableName> =
                broken_by.iter().map(|b| &b.table).collect();
            if tables.len() > 1 {
                let names: Vec<String> = tables.iter().map(|t| format!("`{t}`")).collect();
                out.push(Refusal {
                    what: format!(
                        "projection `{projection}` redefines `{}`, which uses changed columns of {}: reproject redefines a dependent of one reshaped table only",
                        r.key,
                        names.join(" and ")
                    ),
                    hint: "reshape these tables in separate rebuilds".to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A file name for the example line of a hint.
fn file_stem(d: &Dependent) -> String {
    match d {
        Dependent::Relation(t) => t.name.clone(),
        Dependent::On { name, .. } | Dependent::Publication(name) => name.replace(' ', "_"),
    }
}

/// `broken` with every view after the views it reads: the order in which the redefinitions
/// can create them.
fn in_creation_order(broken: Vec<Broken>) -> Vec<Broken> {
    fn depth(b: &Broken, all: &[Broken], seen: usize) -> usize {
        match &b.through {
            Some(view) if seen < all.len() => all
                .iter()
                .filter(|o| o.dependent == Dependent::Relation(view.clone()))
                .map(|o| 1 + depth(o, all, seen + 1))
                .max()
                .unwrap_or(1),
            _ => 0,
        }
    }
    let mut keyed: Vec<(usize, Broken)> = broken
        .iter()
        .map(|b| {
            let deepest = broken
                .iter()
                .filter(|o| o.dependent == b.dependent)
                .map(|o| depth(o, &broken, 0))
                .max()
                .unwrap_or(0);
            (deepest, b.clone())
        })
        .collect();
    keyed.sort_by_key(|(d, _)| *d);
    keyed.into_iter().map(|(_, b)| b).collect()
}

/// The redefinitions the swap of `change.table` applies: the broken dependents with the
/// user's statements, rendered by `render` (which resolves `{{table}}` to live names).
pub async fn to_redefine(
    client: &impl GenericClient,
    change: &ShapeChange,
    redefinitions: &[Redefinition],
    render: impl Fn(&crate::handlers::Statement) -> Result<String>,
) -> Result<Vec<Redefined>> {
    let mut out: Vec<Redefined> = Vec::new();
    for b in in_creation_order(broken(client, change).await?) {
        if out.iter().any(|r| r.dependent == b.dependent) {
            continue;
        }
        let Some(r) = redefinitions.iter().find(|r| r.dependent == b.dependent) else {
            return Err(Error::config(format!(
                "refusing to swap `{}`: its new shape breaks {b}, and projection `{}` does not redefine it",
                change.table, change.projection
            ))
            .with_hint("nothing was swapped; add a `redefine` entry for it"));
        };
        let sql = r.statements.iter().map(&render).collect::<Result<_>>()?;
        out.push(Redefined {
            kind: b.kind,
            dependent: b.dependent,
            sql,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// At the swap (carry.rs `exchange`): detach, redefine, restore, prove; and the record a
// rollback redefines from.

/// What a redefined dependent was before the swap dropped it: the name the fingerprint knows
/// it by (`regclass` text, as the swap's connection prints it), and for a view or materialized
/// view its owner, privileges and comment, restored on the new one.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The dependent.
    pub dependent: Dependent,
    /// The relation (or the table holding the object) as `regclass` text.
    pub regclass: Option<String>,
    /// Owner of a relation.
    pub owner: Option<String>,
    /// `relacl` was set (not the default privileges).
    pub explicit_acl: bool,
    /// The privileges of a relation as `grantee privilege grantable` (grantee quoted).
    pub grants: Vec<String>,
    /// The comment of a relation.
    pub comment: Option<String>,
}

const CAPTURE_SQL: &str = "SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner)::text, c.relacl IS NOT NULL,
        coalesce((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
                                   || ' ' || a.privilege_type || ' ' || a.is_grantable::text ORDER BY 1)
                  FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a), '{}'),
        obj_description(c.oid, 'pg_class')
   FROM pg_class c WHERE c.oid = to_regclass($1)";

/// Reads what the swap keeps of each redefined dependent, before anything changes.
pub async fn capture(client: &Client, redefined: &[Redefined]) -> Result<Vec<Captured>> {
    let mut out = Vec::new();
    for r in redefined {
        let relation = match &r.dependent {
            Dependent::Relation(t) | Dependent::On { table: t, .. } => Some(t),
            Dependent::Publication(_) => None,
        };
        let row = match relation {
            Some(t) => client
                .query_opt(CAPTURE_SQL, &[&t.quoted()])
                .await
                .with_context(|| format!("cannot read {} `{}`", r.kind.name(), r.dependent))?,
            None => None,
        };
        let own = r.kind.is_relation();
        out.push(Captured {
            dependent: r.dependent.clone(),
            regclass: row.as_ref().map(|row| row.get(0)),
            owner: row.as_ref().filter(|_| own).map(|row| row.get(1)),
            explicit_acl: own && row.as_ref().is_some_and(|row| row.get(2)),
            grants: row
                .as_ref()
                .filter(|_| own)
                .map(|row| row.get(3))
                .unwrap_or_default(),
            comment: row.as_ref().filter(|_| own).and_then(|row| row.get(4)),
        });
    }
    Ok(out)
}

fn on_live(d: &Dependent, live: &TableName) -> bool {
    matches!(d, Dependent::On { table, .. } if table == live)
}

/// The statements that detach the redefined dependents from the outgoing table, run before
/// the renames (when `live` still names it). Views go in one statement, so that a view of a
/// redefined view is dropped with it; a policy or trigger of the table itself stays on the
/// outgoing table (the incoming one is given the new one).
pub fn detach_sql(redefined: &[Redefined], live: &TableName) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [Kind::View, Kind::MaterializedView] {
        let names: Vec<String> = redefined
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| match &r.dependent {
                Dependent::Relation(t) => Some(t.quoted()),
                _ => None,
            })
            .collect();
        if !names.is_empty() {
            out.push(format!(
                "DROP {} {}",
                kind.name().to_uppercase(),
                names.join(", ")
            ));
        }
    }
    for r in redefined {
        match (&r.dependent, r.kind) {
            (Dependent::On { name, table }, Kind::ForeignKey) => out.push(format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                table.quoted(),
                quote(name)
            )),
            (Dependent::On { name, table }, Kind::Rule) => {
                out.push(format!("DROP RULE {} ON {}", quote(name), table.quoted()))
            }
            (d @ Dependent::On { name, table }, Kind::Policy) if !on_live(d, live) => {
                out.push(format!("DROP POLICY {} ON {}", quote(name), table.quoted()))
            }
            (Dependent::Publication(name), _) => out.push(format!(
                "ALTER PUBLICATION {} DROP TABLE {}",
                quote(name),
                live.quoted()
            )),
            _ => {}
        }
    }
    out
}

/// `fp` (a fingerprint of the live table) without the redefined dependents: the exchange
/// neither re-creates them from their old definitions nor expects those afterwards.
pub fn without(
    fp: &serde_json::Value,
    live: &TableName,
    captured: &[Captured],
) -> serde_json::Value {
    let mut fp = fp.clone();
    let keep =
        |key: &str, fp: &mut serde_json::Value, drop: &dyn Fn(&serde_json::Value) -> bool| {
            if let Some(serde_json::Value::Array(items)) = fp.get_mut(key) {
                items.retain(|i| !drop(i));
            }
        };
    let str_of = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    for c in captured {
        match &c.dependent {
            Dependent::Relation(_) => {
                let name = c.regclass.clone().unwrap_or_default();
                keep("views", &mut fp, &|v| str_of(v, "name") == name);
            }
            d @ Dependent::On { name, .. } if on_live(d, live) => {
                for key in ["policies", "triggers"] {
                    keep(key, &mut fp, &|v| str_of(v, "name") == *name);
                }
                keep("constraints", &mut fp, &|v| {
                    v["type"] == "f" && str_of(v, "name") == *name
                });
            }
            Dependent::On { name, .. } => {
                let table = c.regclass.clone().unwrap_or_default();
                keep("referenced_by", &mut fp, &|v| {
                    str_of(v, "name") == *name && str_of(v, "table") == table
                });
            }
            Dependent::Publication(name) => {
                keep("publications", &mut fp, &|v| {
                    str_of(v, "publication") == *name
                });
            }
        }
    }
    fp
}

/// The statements that give each re-created view or materialized view its owner, privileges
/// and comment back (run after the user's statements).
pub fn restore_sql(redefined: &[Redefined], captured: &[Captured]) -> Vec<String> {
    let mut out = Vec::new();
    for (r, c) in redefined.iter().zip(captured) {
        let (Dependent::Relation(t), Some(owner)) = (&r.dependent, &c.owner) else {
            continue;
        };
        let kind = r.kind.name().to_uppercase();
        let name = t.quoted();
        out.push(format!("ALTER {kind} {name} OWNER TO {}", quote(owner)));
        if c.explicit_acl {
            out.push(format!(
                "REVOKE ALL ON TABLE {name} FROM {}, PUBLIC",
                quote(owner)
            ));
            for g in &c.grants {
                let mut parts = g.rsplitn(3, ' ');
                let (Some(grantable), Some(privilege), Some(grantee)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                out.push(format!(
                    "GRANT {privilege} ON TABLE {name} TO {grantee}{}",
                    if grantable == "true" {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(comment) = &c.comment {
            out.push(format!("COMMENT ON {kind} {name} IS {}", literal(comment)));
        }
    }
    out
}

/// Whether `$1` (kind), `$2` (name), `$3` (relation or table, regclass text) exists; for a
/// foreign key, whether it still needs validating; for a publication `$3` is the live table.
const EXISTS_SQL: &str = "SELECT CASE $1
    WHEN 'view' THEN EXISTS (SELECT FROM pg_class WHERE oid = to_regclass($3) AND relkind = 'v')
    WHEN 'materialized view' THEN EXISTS (SELECT FROM pg_class WHERE oid = to_regclass($3) AND relkind = 'm')
    WHEN 'policy' THEN EXISTS (SELECT FROM pg_policy WHERE polname = $2 AND polrelid = to_regclass($3))
    WHEN 'trigger' THEN EXISTS (SELECT FROM pg_trigger WHERE tgname = $2 AND tgrelid = to_regclass($3))
    WHEN 'foreign key' THEN EXISTS (SELECT FROM pg_constraint WHERE conname = $2 AND contype = 'f' AND conrelid = to_regclass($3))
    WHEN 'rule' THEN EXISTS (SELECT FROM pg_rewrite WHERE rulename = $2 AND ev_class = to_regclass($3))
    WHEN 'publication' THEN EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                                     WHERE p.pubname = $2 AND pr.prrelid = to_regclass($3))
    END,
    EXISTS (SELECT FROM pg_constraint WHERE $1 = 'foreign key' AND conname = $2 AND conrelid = to_regclass($3) AND NOT convalidated)";

/// Proves, right after the user's statements ran, that each redefined dependent exists under
/// its name. Returns the redefined foreign keys created `NOT VALID` (validated after the
/// commit, like the ones the swap re-creates).
pub async fn prove_created(
    client: &Client,
    live: &TableName,
    redefined: &[Redefined],
) -> Result<Vec<crate::carry::Validation>> {
    let mut problems = Vec::new();
    let mut validations = Vec::new();
    for r in redefined {
        let (name, relation) = match &r.dependent {
            Dependent::Relation(t) => (t.name.clone(), t.clone()),
            Dependent::On { name, table } => (name.clone(), table.clone()),
            Dependent::Publication(name) => (name.clone(), live.clone()),
        };
        let row = client
            .query_one(EXISTS_SQL, &[&r.kind.name(), &name, &relation.quoted()])
            .await
            .with_context(|| format!("cannot look for {} `{}`", r.kind.name(), r.dependent))?;
        if !row.get::<_, bool>(0) {
            problems.push(format!(
                "the statements redefining `{}` did not create {} `{}`",
                r.dependent,
                r.kind.name(),
                r.dependent
            ));
        } else if row.get::<_, bool>(1) {
            validations.push(crate::carry::Validation {
                table_sql: relation.quoted(),
                constraint: name,
            });
        }
    }
    refuse_unless_empty(live, problems)?;
    Ok(validations)
}

/// Proves, after the restore ran, that each re-created view or materialized view has the
/// owner and privileges it had.
pub async fn prove_kept(client: &Client, live: &TableName, captured: &[Captured]) -> Result<()> {
    let mut problems = Vec::new();
    for c in captured {
        let (Dependent::Relation(t), Some(owner)) = (&c.dependent, &c.owner) else {
            continue;
        };
        let now = client
            .query_one(CAPTURE_SQL, &[&t.quoted()])
            .await
            .with_context(|| format!("cannot read `{}`", c.dependent))?;
        let (now_owner, now_grants): (String, Vec<String>) = (now.get(1), now.get(3));
        if now_owner != *owner {
            problems.push(format!(
                "`{}` is owned by `{now_owner}`, not `{owner}` as before",
                c.dependent
            ));
        }
        if now_grants != c.grants {
            problems.push(format!(
                "`{}` has the privileges [{}], not [{}] as before",
                c.dependent,
                now_grants.join(", "),
                c.grants.join(", ")
            ));
        }
    }
    refuse_unless_empty(live, problems)
}

fn refuse_unless_empty(live: &TableName, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut err = Error::fidelity(format!(
        "refusing to swap `{live}`: the redefined dependents are not what they should be"
    ));
    for p in problems {
        err = err.caused_by(p);
    }
    Err(err.with_hint(
        "nothing was swapped (the transaction was rolled back); check the `redefine` files",
    ))
}

/// The statements that re-create each dependent as it is now, read before the swap changes
/// anything: a rollback runs them as its redefinitions, when the live name is the old
/// table's again.
pub async fn originals(
    client: &Client,
    live: &TableName,
    redefined: &[Redefined],
) -> Result<Vec<Redefined>> {
    let mut out = Vec::new();
    for r in redefined {
        let sql = original_sql(client, live, r).await.with_context(|| {
            format!(
                "cannot read the definition of {} `{}`",
                r.kind.name(),
                r.dependent
            )
        })?;
        out.push(Redefined {
            kind: r.kind,
            dependent: r.dependent.clone(),
            sql,
        });
    }
    Ok(out)
}

async fn original_sql(client: &Client, live: &TableName, r: &Redefined) -> Result<Vec<String>> {
    let one = |sql: &'static str, params: Vec<String>| async move {
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        client.query_one(sql, &refs).await.map_err(Error::from)
    };
    Ok(match (&r.dependent, r.kind) {
        (Dependent::Relation(t), Kind::View) => {
            let row = one(
                "SELECT pg_get_viewdef(c.oid), array_to_string(c.reloptions, ', ') FROM pg_class c WHERE c.oid = to_regclass($1)",
                vec![t.quoted()],
            )
            .await?;
            let options: Option<String> = row.get(1);
            vec![format!(
                "CREATE VIEW {}{} AS {}",
                t.quoted(),
                options.map(|o| format!(" WITH ({o})")).unwrap_or_default(),
                row.get::<_, String>(0)
            )]
        }
        (Dependent::Relation(t), _) => {
            let row = one(
                "SELECT pg_get_viewdef(c.oid), array_to_string(c.reloptions, ', '), c.relispopulated,
                        coalesce((SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY indexrelid) FROM pg_index WHERE indrelid = c.oid), '{}')
                   FROM pg_class c WHERE c.oid = to_regclass($1)",
                vec![t.quoted()],
            )
            .await?;
            let options: Option<String> = row.get(1);
            let mut sql = vec![format!(
                "CREATE MATERIALIZED VIEW {}{} AS {} WITH {}",
                t.quoted(),
                options.map(|o| format!(" WITH ({o})")).unwrap_or_default(),
                row.get::<_, String>(0).trim_end().trim_end_matches(';'),
                if row.get::<_, bool>(2) {
                    "DATA"
                } else {
                    "NO DATA"
                }
            )];
            sql.extend(row.get::<_, Vec<String>>(3));
            sql
        }
        (Dependent::On { name, table }, Kind::Policy) => {
            let row = one(
                "SELECT jsonb_build_object('name', p.polname, 'command', p.polcmd, 'permissive', p.polpermissive,
                        'roles', (SELECT jsonb_agg(CASE WHEN x = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x) END ORDER BY 1) FROM unnest(p.polroles) x),
                        'using', pg_get_expr(p.polqual, p.polrelid), 'check', pg_get_expr(p.polwithcheck, p.polrelid))
                   FROM pg_policy p WHERE p.polname = $1 AND p.polrelid = to_regclass($2)",
                vec![name.clone(), table.quoted()],
            )
            .await?;
            vec![crate::carry::create_policy(&row.get(0), &table.quoted())]
        }
        (Dependent::On { name, table }, Kind::Trigger) => {
            let row = one(
                "SELECT pg_get_triggerdef(t.oid), t.tgenabled::text FROM pg_trigger t WHERE t.tgname = $1 AND t.tgrelid = to_regclass($2)",
                vec![name.clone(), table.quoted()],
            )
            .await?;
            let mut sql = vec![row.get::<_, String>(0)];
            let state = match row.get::<_, String>(1).as_str() {
                "D" => Some("DISABLE"),
                "R" => Some("ENABLE REPLICA"),
                "A" => Some("ENABLE ALWAYS"),
                _ => None,
            };
            if let Some(state) = state {
                sql.push(format!(
                    "ALTER TABLE {} {state} TRIGGER {}",
                    table.quoted(),
                    quote(name)
                ));
            }
            sql
        }
        (Dependent::On { name, table }, Kind::ForeignKey) => {
            let row = one(
                "SELECT replace(pg_get_constraintdef(k.oid), ' NOT VALID', '') FROM pg_constraint k
                  WHERE k.conname = $1 AND k.conrelid = to_regclass($2) AND k.contype = 'f'",
                vec![name.clone(), table.quoted()],
            )
            .await?;
            // Re-created NOT VALID and validated after the commit, like the keys a swap moves.
            vec![format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                table.quoted(),
                quote(name),
                row.get::<_, String>(0)
            )]
        }
        (Dependent::On { name, table }, _) => {
            let row = one(
                "SELECT pg_get_ruledef(r.oid) FROM pg_rewrite r WHERE r.rulename = $1 AND r.ev_class = to_regclass($2)",
                vec![name.clone(), table.quoted()],
            )
            .await?;
            vec![row.get::<_, String>(0)]
        }
        (Dependent::Publication(name), _) => {
            // Only PostgreSQL 15+ has column lists and row filters, and so such dependents.
            let row = one(
                "SELECT (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                          WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs)),
                        pg_get_expr(pr.prqual, pr.prrelid)
                   FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                  WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2)",
                vec![name.clone(), live.quoted()],
            )
            .await?;
            let columns: Option<String> = row.get(0);
            let filter: Option<String> = row.get(1);
            vec![format!(
                "ALTER PUBLICATION {} ADD TABLE {}{}{}",
                quote(name),
                live.quoted(),
                columns.map(|c| format!(" ({c})")).unwrap_or_default(),
                filter.map(|w| format!(" WHERE ({w})")).unwrap_or_default()
            )]
        }
    })
}

/// Records, inside the swap transaction, how to restore what the swap of `live` in run
/// `run_id` redefined (`reproject.redefined_dependents`).
pub async fn record(
    client: &impl GenericClient,
    run_id: i64,
    live: &TableName,
    originals: &[Redefined],
) -> Result<()> {
    for (i, r) in originals.iter().enumerate() {
        let (relation, object) = match &r.dependent {
            Dependent::Relation(t) => (Some(t), None),
            Dependent::On { name, table } => (Some(table), Some(name)),
            Dependent::Publication(name) => (None, Some(name)),
        };
        client
            .execute(
                "INSERT INTO reproject.redefined_dependents
                        (run_id, table_schema, live_name, position, kind, relation_schema, relation_name, object_name, statements)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[&run_id, &live.schema, &live.name, &(i as i32), &r.kind.name(),
                  &relation.map(|t| &t.schema), &relation.map(|t| &t.name), &object, &r.sql],
            )
            .await
            .with_context(|| format!("cannot record the definition of `{}`", r.dependent))?;
    }
    Ok(())
}

/// What run `run_id`'s swap of `live` redefined, as it was before: the rollback's
/// redefinitions.
pub async fn recorded(
    client: &impl GenericClient,
    run_id: i64,
    live: &TableName,
) -> Result<Vec<Redefined>> {
    // A state schema from before redefinitions has nothing recorded (and no table for it).
    let has_table: bool = client
        .query_one(
            "SELECT to_regclass('reproject.redefined_dependents') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot look for reproject's redefined dependents")?
        .get(0);
    if !has_table {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT kind, relation_schema, relation_name, object_name, statements FROM reproject.redefined_dependents
              WHERE run_id = $1 AND table_schema = $2 AND live_name = $3 ORDER BY position",
            &[&run_id, &live.schema, &live.name],
        )
        .await
        .with_context(|| format!("cannot read what run {run_id} redefined for `{live}`"))?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get(0);
            let relation = match (r.get::<_, Option<String>>(1), r.get::<_, Option<String>>(2)) {
                (Some(s), Some(n)) => Some(TableName::new(s, n)),
                _ => None,
            };
            let object: Option<String> = r.get(3);
            let bad = || {
                Error::runtime(format!(
                    "run {run_id} recorded an unreadable redefinition of a {kind}"
                ))
            };
            let dependent = match (relation, object) {
                (Some(t), None) => Dependent::Relation(t),
                (Some(table), Some(name)) => Dependent::On { name, table },
                (None, Some(name)) => Dependent::Publication(name),
                (None, None) => return Err(bad()),
            };
            Ok(Redefined {
                kind: Kind::parse(&kind).ok_or_else(bad)?,
                dependent,
                sql: r.get(4),
            })
        })
        .collect()
}

/// The redefinitions of every table of `changes` for its swap, each rendered with the live
/// names of the config's tables (as they are after the swap).
pub async fn for_swap(
    client: &impl GenericClient,
    config: &crate::config::Config,
    resolved: &crate::validate::Resolved,
    changes: &[ShapeChange],
) -> Result<crate::swap::Redefinitions> {
    let mut out = crate::swap::Redefinitions::new();
    for change in changes {
        let redefine = config
            .projection_index(&change.projection)
            .map_or(&[][..], |i| config.projections[i].redefine.as_slice());
        let render = |st: &crate::handlers::Statement| -> Result<String> {
            let mut unknown = None;
            let sql = st.render(|r| match config.owner_of(&r.written) {
                Ok(owner) => resolved.live(owner).quoted(),
                Err(why) => {
                    unknown = Some(why);
                    String::new()
                }
            });
            match unknown {
                Some(why) => Err(Error::config(why)),
                None => Ok(sql),
            }
        };
        let redefined = to_redefine(client, change, redefine, render).await?;
        if !redefined.is_empty() {
            out.entry(change.table.clone())
                .or_default()
                .extend(redefined);
        }
    }
    Ok(out)
}

/// The `redefine` entries of the projections `order` of `config`, for [`refusals`].
pub fn of_projections<'a>(
    config: &'a crate::config::Config,
    order: &[usize],
) -> Vec<(&'a str, &'a [Redefinition])> {
    order
        .iter()
        .map(|&i| {
            let p = &config.projections[i];
            (p.name.as_str(), p.redefine.as_slice())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Column;
    use serde_json::json;

    fn col(name: &str, ty: &str) -> Option<Column> {
        Some(Column {
            name: name.into(),
            type_name: ty.into(),
        })
    }

    #[test]
    fn keys_name_one_object_with_its_schema() {
        let t = |s: &str, n: &str| TableName::new(s, n);
        assert_eq!(
            parse_key("public.balance_summary"),
            Ok(Dependent::Relation(t("public", "balance_summary")))
        );
        assert_eq!(
            parse_key("own_rows on app.balances"),
            Ok(Dependent::On {
                name: "own_rows".into(),
                table: t("app", "balances")
            })
        );
        assert_eq!(
            parse_key("\"Own Rows\" on public.\"Balances\""),
            Ok(Dependent::On {
                name: "Own Rows".into(),
                table: t("public", "Balances")
            })
        );
        assert_eq!(
            parse_key("publication balances_pub"),
            Ok(Dependent::Publication("balances_pub".into()))
        );
        let err = parse_key("balance_summary").unwrap_err();
        assert!(err.contains("public.balance_summary"), "{err}");
        assert!(parse_key(" on public.t").is_err());
        // Keys print back as they are written.
        for key in ["public.v", "p on public.t", "publication pub"] {
            assert_eq!(parse_key(key).unwrap().to_string(), key);
        }
    }

    #[test]
    fn views_are_created_after_the_views_they_read() {
        let b = |view: &str, through: Option<&str>| Broken {
            kind: Kind::View,
            dependent: Dependent::Relation(TableName::new("public", view)),
            table: TableName::new("public", "balances"),
            column: "amt".into(),
            change: "drops column amt".into(),
            through: through.map(|t| TableName::new("public", t)),
        };
        let order: Vec<String> = in_creation_order(vec![
            b("a_outermost", Some("b_outer")),
            b("b_outer", Some("c_inner")),
            b("c_inner", None),
        ])
        .iter()
        .map(|b| b.dependent.to_string())
        .collect();
        assert_eq!(
            order,
            ["public.c_inner", "public.b_outer", "public.a_outermost"]
        );
    }

    #[test]
    fn changes_are_described_in_words() {
        let c = |before, after| ColumnChange { before, after };
        assert_eq!(
            describe_change(&c(col("legacy", "text"), None)),
            Some(("legacy".into(), "drops column legacy".into()))
        );
        assert_eq!(
            describe_change(&c(col("amt", "integer"), col("amount", "integer"))),
            Some(("amt".into(), "renames amt to amount".into()))
        );
        assert_eq!(
            describe_change(&c(col("amount", "integer"), col("amount", "numeric(12,2)"))),
            Some((
                "amount".into(),
                "changes amount from integer to numeric(12,2)".into()
            ))
        );
        assert_eq!(
            describe_change(&c(col("amt", "integer"), col("amount", "numeric(12,2)"))),
            Some((
                "amt".into(),
                "renames amt to amount and changes it from integer to numeric(12,2)".into()
            ))
        );
        assert_eq!(describe_change(&c(None, col("added", "text"))), None);
    }

    fn live() -> TableName {
        TableName::new("public", "balances")
    }

    fn redefined(kind: Kind, key: &str) -> Redefined {
        Redefined {
            kind,
            dependent: parse_key(key).unwrap(),
            sql: vec![],
        }
    }

    #[test]
    fn views_are_dropped_together_and_own_policies_stay_on_the_outgoing_table() {
        let sql = detach_sql(
            &[
                redefined(Kind::View, "public.summary"),
                redefined(Kind::View, "public.outer_summary"),
                redefined(Kind::Policy, "own on public.balances"),
                redefined(Kind::Trigger, "audit on public.balances"),
                redefined(Kind::ForeignKey, "lines_fk on public.lines"),
                redefined(Kind::Publication, "publication pub"),
            ],
            &live(),
        );
        assert_eq!(
            sql,
            vec![
                "DROP VIEW \"public\".\"summary\", \"public\".\"outer_summary\"",
                "ALTER TABLE \"public\".\"lines\" DROP CONSTRAINT \"lines_fk\"",
                "ALTER PUBLICATION \"pub\" DROP TABLE \"public\".\"balances\"",
            ]
        );
    }

    #[test]
    fn the_fingerprint_loses_exactly_the_redefined_entries() {
        let fp = json!({
            "views": [{"name": "summary"}, {"name": "kept"}],
            "policies": [{"name": "own"}, {"name": "other"}],
            "triggers": [{"name": "own"}],
            "constraints": [{"name": "own", "type": "f"}, {"name": "balances_pkey", "type": "p"}],
            "referenced_by": [{"table": "lines", "name": "fk"}, {"table": "other", "name": "fk"}],
            "publications": [{"publication": "pub"}, {"publication": "all"}],
        });
        let cap = |key: &str, regclass: Option<&str>| Captured {
            dependent: parse_key(key).unwrap(),
            regclass: regclass.map(String::from),
            owner: None,
            explicit_acl: false,
            grants: vec![],
            comment: None,
        };
        let stripped = without(
            &fp,
            &live(),
            &[
                cap("public.summary", Some("summary")),
                cap("own on public.balances", Some("balances")),
                cap("fk on public.lines", Some("lines")),
                cap("publication pub", None),
            ],
        );
        assert_eq!(
            stripped,
            json!({
                "views": [{"name": "kept"}],
                "policies": [{"name": "other"}],
                "triggers": [],
                "constraints": [{"name": "balances_pkey", "type": "p"}],
                "referenced_by": [{"table": "other", "name": "fk"}],
                "publications": [{"publication": "all"}],
            })
        );
    }

    #[test]
    fn a_view_gets_its_owner_grants_and_comment_back() {
        let r = redefined(Kind::View, "public.summary");
        let c = Captured {
            dependent: r.dependent.clone(),
            regclass: Some("summary".into()),
            owner: Some("app owner".into()),
            explicit_acl: true,
            grants: vec![
                "\"app owner\" SELECT true".into(),
                "reader SELECT false".into(),
            ],
            comment: Some("it's a summary".into()),
        };
        assert_eq!(
            restore_sql(&[r], &[c]),
            vec![
                "ALTER VIEW \"public\".\"summary\" OWNER TO \"app owner\"",
                "REVOKE ALL ON TABLE \"public\".\"summary\" FROM \"app owner\", PUBLIC",
                "GRANT SELECT ON TABLE \"public\".\"summary\" TO \"app owner\" WITH GRANT OPTION",
                "GRANT SELECT ON TABLE \"public\".\"summary\" TO reader",
                "COMMENT ON VIEW \"public\".\"summary\" IS 'it''s a summary'",
            ]
        );
    }
}
