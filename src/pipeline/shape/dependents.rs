//! What outside a table depends on a column its new shape drops, renames or retypes, and
//! the user's definitions of those dependents against the new shape (`redefine`).
//!
//! A swap re-creates every dependent of the live table on the incoming one from its current
//! definition (swap/exchange.rs): views from their text, foreign keys, policies, triggers and
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

use crate::error::{Context, Error, Result};
use crate::model::ident::TableName;
pub use crate::model::shape::dependent::{Dependent, Kind, Redefinition};
use crate::pipeline::preflight::Refusal;
use crate::pipeline::shape::{ColumnChange, ShapeChange};
use std::fmt;
use tokio_postgres::GenericClient;

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
    render: impl Fn(&crate::model::handlers::Statement) -> Result<String>,
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

/// The redefinitions of every table of `changes` for its swap, each rendered with the live
/// names of the config's tables (as they are after the swap).
pub async fn for_swap(
    client: &impl GenericClient,
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    changes: &[ShapeChange],
) -> Result<crate::pipeline::swap::Redefinitions> {
    let mut out = crate::pipeline::swap::Redefinitions::new();
    for change in changes {
        let redefine = config
            .projection_index(&change.projection)
            .map_or(&[][..], |i| config.projections[i].redefine.as_slice());
        let render = |st: &crate::model::handlers::Statement| -> Result<String> {
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
    config: &'a crate::model::config::Config,
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
    use crate::model::shape::dependent::parse_key;
    use crate::pipeline::shape::Column;

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
}
