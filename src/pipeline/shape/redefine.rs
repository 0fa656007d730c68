//! At the swap (swap/exchange.rs `exchange`), the dependents a new shape breaks are replaced by their
//! redefinitions: captured (what the fingerprint calls them; a view's owner, privileges and
//! comment), detached from the outgoing table before the renames, left out of what the other
//! steps carry over and of the proof, created by the user's statements, restored and proven.
//! The original definitions are recorded in the swap transaction; a rollback runs them as its
//! redefinitions.

use crate::error::{Context, Error, Result};
use crate::model::fingerprint::Fingerprint;
use crate::model::ident::{literal, quote, TableName};
use crate::pipeline::shape::dependents::{Dependent, Kind, Redefined};
use tokio_postgres::Client;
use tokio_postgres::GenericClient;

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
pub fn without(fp: &Fingerprint, live: &TableName, captured: &[Captured]) -> Fingerprint {
    let mut fp = fp.clone();
    for c in captured {
        match &c.dependent {
            Dependent::Relation(_) => {
                let name = c.regclass.clone().unwrap_or_default();
                fp.views.retain(|v| v.name != name);
            }
            d @ Dependent::On { name, .. } if on_live(d, live) => {
                fp.policies.retain(|p| p.name != *name);
                fp.triggers.retain(|t| t.name != *name);
                fp.constraints
                    .retain(|k| !(k.is_foreign_key() && k.name == *name));
            }
            Dependent::On { name, .. } => {
                let table = c.regclass.clone().unwrap_or_default();
                fp.referenced_by
                    .retain(|r| !(r.name == *name && r.table == table));
            }
            Dependent::Publication(name) => {
                fp.publications.retain(|p| p.publication != *name);
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
) -> Result<Vec<crate::pipeline::swap::exchange::Validation>> {
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
            validations.push(crate::pipeline::swap::exchange::Validation {
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
            let policy: tokio_postgres::types::Json<crate::model::fingerprint::Policy> =
                row.try_get(0).map_err(|e| {
                    Error::runtime(format!("cannot read policy `{name}` on `{table}`: {e}"))
                })?;
            vec![crate::pipeline::swap::exchange::create_policy(
                &policy.0,
                &table.quoted(),
            )]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::shape::dependent::parse_key;
    use serde_json::json;

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
        let fp: Fingerprint = serde_json::from_value(json!({
            "views": [{"name": "summary"}, {"name": "kept"}],
            "policies": [{"name": "own"}, {"name": "other"}],
            "triggers": [{"name": "own"}],
            "constraints": [{"name": "own", "type": "f"}, {"name": "balances_pkey", "type": "p"}],
            "referenced_by": [{"table": "lines", "name": "fk"}, {"table": "other", "name": "fk"}],
            "publications": [{"publication": "pub"}, {"publication": "all"}],
        }))
        .unwrap();
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
        let names = |items: Vec<&str>| items.join(",");
        assert_eq!(
            names(stripped.views.iter().map(|v| &v.name[..]).collect()),
            "kept"
        );
        assert_eq!(
            names(stripped.policies.iter().map(|p| &p.name[..]).collect()),
            "other"
        );
        assert!(stripped.triggers.is_empty());
        assert_eq!(
            names(stripped.constraints.iter().map(|c| &c.name[..]).collect()),
            "balances_pkey"
        );
        assert_eq!(
            names(
                stripped
                    .referenced_by
                    .iter()
                    .map(|r| &r.table[..])
                    .collect()
            ),
            "other"
        );
        assert_eq!(
            names(
                stripped
                    .publications
                    .iter()
                    .map(|p| &p.publication[..])
                    .collect()
            ),
            "all"
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
