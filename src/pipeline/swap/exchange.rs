//! Carrying a live table's identity over to the table that replaces it.
//!
//! `CREATE TABLE x_rebuild (LIKE x INCLUDING ALL)` copies columns, defaults, constraints,
//! indexes and comments, but not grants, owner, row-level security, triggers, foreign keys,
//! storage parameters, publications, nor anything that points at `x` by OID (views, foreign
//! keys of other tables, sequence ownership). A plain rename swap breaks all of those.
//!
//! [`exchange`] runs inside the swap (or rollback) transaction with every affected relation
//! locked: it renames the tables, gives the incoming table's indexes, constraints, statistics
//! and identity sequences the canonical names, makes its catalog state equal to the outgoing
//! table's, re-points dependents, and proves the result with the catalog fingerprint
//! (catalog/fingerprint.rs). The same code serves swap and rollback: only the direction
//! differs. What it cannot carry is refused up front by [`unsupported`].

use crate::db::catalog::fingerprint;
use crate::error::{describe_pg, Context, Error, Result};
use crate::model::fingerprint::{self as fp, Fingerprint, Grant, Policy, Shaped, View};
use crate::model::ident::{helper_name, literal, quote, TableName};
use tokio_postgres::Client;

/// One generation change: `live` (outgoing) becomes `parked`, `incoming` becomes `live`.
pub struct Exchange<'a> {
    /// The table that is live now and goes out.
    pub live: &'a TableName,
    /// The table that becomes live (a `_rebuild` clone, or `_old` on rollback).
    pub incoming: &'a TableName,
    /// The name the outgoing table is kept under (`_old`, or a rolled-back name).
    pub parked: &'a TableName,
    /// Suffix for the outgoing table's object names (`old7` after run 7's swap, `rb7` after
    /// its rollback): derived names that cannot collide with canonical ones.
    pub suffix: String,
    /// The live table's fingerprint when the incoming table was cloned from it, if known: its
    /// structure (columns, constraints, indexes) must not have changed since.
    pub cloned_from: Option<(i64, Fingerprint)>,
    /// Dependents of changed columns that are dropped and re-created from the user's
    /// statements instead of carried over (shape/dependents.rs); on a rollback, the recorded
    /// original definitions.
    pub redefined: &'a [crate::pipeline::shape::dependents::Redefined],
    /// The incoming table has another shape than the outgoing one (a `reshape`, or the
    /// rollback of one): what it must be.
    pub shape: Option<ShapeProof>,
    /// The tables are partitions, exchanged after their parents (partitions.rs).
    pub partition: bool,
}

/// The declared shape change an exchange proves: the new live table is the outgoing one with
/// `structure`'s columns, constraints and indexes, and everything carried mapped through `map`.
pub struct ShapeProof {
    /// A fingerprint whose `columns`, `constraints` (foreign keys aside) and `indexes` are the
    /// incoming table's structure under its names once live (recorded when it was shaped),
    /// with the column properties the DDL set.
    pub structure: Shaped,
    /// Every column of the outgoing table and what it is in the incoming one.
    pub map: Vec<crate::pipeline::shape::ColumnChange>,
}

/// A foreign key re-created `NOT VALID` inside the swap; validated after the commit.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The table holding the constraint, as SQL (already quoted).
    pub table_sql: String,
    /// The constraint's name.
    pub constraint: String,
}

/// `$1` the table, `$2` whether it is checked as a partition of a partitioned table that is
/// swapped as a whole (partitions.rs): being a partition is then expected.
pub(crate) const UNSUPPORTED_SQL: &str = "WITH t AS (SELECT * FROM pg_class WHERE oid = to_regclass($1))
             SELECT 'it is a partition of ' || (SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = t.oid LIMIT 1)
               FROM t WHERE t.relispartition AND NOT $2::bool
             UNION ALL
             SELECT 'it inherits from ' || i.inhparent::regclass::text FROM t JOIN pg_inherits i ON i.inhrelid = t.oid
               WHERE NOT t.relispartition
             UNION ALL
             SELECT 'table ' || i.inhrelid::regclass::text || ' inherits from it' FROM t JOIN pg_inherits i ON i.inhparent = t.oid
               JOIN pg_class c ON c.oid = i.inhrelid WHERE NOT c.relispartition
             UNION ALL
             SELECT 'its partition ' || c.oid::regclass::text || CASE c.relkind WHEN 'p' THEN ' is partitioned itself (sub-partitions are not supported)'
                                                                   ELSE ' is a foreign table' END
               FROM t JOIN pg_inherits i ON i.inhparent = t.oid JOIN pg_class c ON c.oid = i.inhrelid
              WHERE c.relispartition AND c.relkind <> 'r'
             UNION ALL
             SELECT 'it is ' || CASE WHEN t.relkind = 'p' THEN 'partitioned' ELSE 'a partition' END || ' and has foreign key ' || quote_ident(con.conname)
               FROM t JOIN pg_constraint con ON con.conrelid = t.oid AND con.contype = 'f'
              WHERE (t.relkind = 'p' OR t.relispartition) AND con.conparentid = 0
             UNION ALL
             SELECT 'foreign key ' || quote_ident(con.conname) || ' of ' || con.conrelid::regclass::text || ' references it, and it is '
                    || CASE WHEN t.relkind = 'p' THEN 'partitioned' ELSE 'a partition' END
               FROM t JOIN pg_constraint con ON con.confrelid = t.oid AND con.contype = 'f'
              WHERE (t.relkind = 'p' OR t.relispartition) AND con.conparentid = 0
             UNION ALL
             SELECT 'it is a typed table (OF ' || t.reloftype::regtype::text || ')' FROM t WHERE t.reloftype <> 0
             UNION ALL
             SELECT 'it has rule ' || quote_ident(r.rulename) FROM t JOIN pg_rewrite r ON r.ev_class = t.oid
             UNION ALL
             SELECT 'function ' || d.objid::regprocedure::text || ' depends on it (SQL-standard body)'
               FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
              WHERE d.classid = 'pg_proc'::regclass
             UNION ALL
             SELECT 'policy ' || quote_ident(p.polname) || ' on ' || p.polrelid::regclass::text || ' reads it'
               FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
               JOIN pg_policy p ON d.classid = 'pg_policy'::regclass AND p.oid = d.objid
              WHERE p.polrelid <> t.oid
             UNION ALL
             SELECT 'its row type is used by ' || pg_describe_object(d.classid, d.objid, d.objsubid)
               FROM t JOIN pg_depend d ON d.refclassid = 'pg_type'::regclass AND d.refobjid = t.reltype
              WHERE NOT (d.classid = 'pg_class'::regclass AND d.objid = t.oid)
                AND NOT (d.classid = 'pg_type'::regclass AND d.deptype = 'i')
             UNION ALL
             SELECT 'materialized view ' || mv.oid::regclass::text || ' reads it and is read by ' || v.oid::regclass::text
               FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass
               JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class mv ON mv.oid = r.ev_class AND mv.relkind = 'm'
               JOIN pg_depend d2 ON d2.refclassid = 'pg_class'::regclass AND d2.refobjid = mv.oid AND d2.classid = 'pg_rewrite'::regclass
               JOIN pg_rewrite r2 ON r2.oid = d2.objid JOIN pg_class v ON v.oid = r2.ev_class AND v.oid <> mv.oid";

/// [`UNSUPPORTED_SQL`] for many tables at once: `$1` their names, `$2` whether each is checked
/// as a partition; one row per problem, with the table's index (1-based) in `$1`.
fn unsupported_many_sql() -> String {
    format!(
        "SELECT u.ord, x.problem FROM unnest($1::text[], $2::bool[]) WITH ORDINALITY AS u(name, partition, ord), \
         LATERAL ({}) AS x(problem) ORDER BY u.ord",
        UNSUPPORTED_SQL
            .replace("to_regclass($1)", "to_regclass(u.name)")
            .replace("$2::bool", "u.partition")
    )
}

/// Things about `table` that reproject cannot carry over (yet): each names the object.
/// A rebuild refuses to start while any exist.
pub async fn unsupported(client: &Client, table: &TableName) -> Result<Vec<String>> {
    let rows = client
        .query(UNSUPPORTED_SQL, &[&table.quoted(), &false])
        .await
        .with_context(|| format!("cannot inspect the dependents of `{table}`"))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// The catalog queries a swap runs while it holds its locks, prepared (and run once, so the
/// connection's catalog caches are warm) before it takes them: planning them and warming the
/// caches cost more than running them, and every millisecond under the lock is one the
/// application waits.
pub struct Prepared {
    /// The fingerprint query, prepared.
    pub fingerprints: fingerprint::Fingerprinter,
    unsupported: tokio_postgres::Statement,
    /// [`unsupported_many_sql`], prepared.
    unsupported_many: tokio_postgres::Statement,
    /// How long each step of the exchange took, for the lock attempt's record.
    pub laps: crate::pipeline::swap::laps::Laps,
    /// Views that read the incoming table and stay with it by OID (a preview schema's,
    /// pipeline/preview.rs), as this session names them: not the outgoing table's to carry,
    /// so the proof leaves them out.
    followers: Vec<String>,
}

impl Prepared {
    /// Prepares the queries for `tables` and warms the catalog caches they read.
    pub async fn prepare(client: &Client, tables: &[TableName]) -> Result<Prepared> {
        let fingerprints = fingerprint::Fingerprinter::prepare(client).await?;
        let unsupported = client
            .prepare(UNSUPPORTED_SQL)
            .await
            .context("cannot prepare the dependents query")?;
        let unsupported_many = client
            .prepare(&unsupported_many_sql())
            .await
            .context("cannot prepare the dependents query of several tables")?;
        let prepared = Prepared {
            fingerprints,
            unsupported,
            unsupported_many,
            laps: Default::default(),
            followers: Vec::new(),
        };
        // Generic plans, built now: under the lock the queries then skip planning (by default
        // a statement is planned again for each of its first executions; these run only a few
        // times per connection, so they would always be).
        client
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await
            .context("cannot set plan_cache_mode")?;
        let warmed = async {
            for t in tables {
                prepared.fingerprints.of(client, t).await?;
                prepared.unsupported(client, t, false).await?;
                // A partitioned table's partitions are exchanged too (partitions.rs), all at
                // once.
                let parts: Vec<TableName> = crate::pipeline::partitions::of(client, t)
                    .await?
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                if parts.len() > 1 {
                    prepared.fingerprints.of_all(client, &parts).await?;
                    prepared
                        .unsupported_all(client, &parts, &vec![true; parts.len()])
                        .await?;
                } else if let [p] = parts.as_slice() {
                    prepared.fingerprints.of(client, p).await?;
                    prepared.unsupported(client, p, true).await?;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        client
            .batch_execute("RESET plan_cache_mode")
            .await
            .context("cannot reset plan_cache_mode")?;
        warmed?;
        Ok(prepared)
    }

    /// The views (named as `oid::regclass` names them on this connection) that read the
    /// incoming tables and go with them: a preview schema's.
    pub fn followed_by(mut self, views: Vec<String>) -> Prepared {
        self.followers = views;
        self
    }

    async fn unsupported(
        &self,
        client: &Client,
        table: &TableName,
        partition: bool,
    ) -> Result<Vec<String>> {
        let rows = client
            .query(&self.unsupported, &[&table.quoted(), &partition])
            .await
            .with_context(|| format!("cannot inspect the dependents of `{table}`"))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// [`Prepared::unsupported`] of each of `tables` (with its `partition` flag), in their
    /// order, in one query (one table: the single-table statement).
    async fn unsupported_all(
        &self,
        client: &Client,
        tables: &[TableName],
        partition: &[bool],
    ) -> Result<Vec<Vec<String>>> {
        if let ([table], [partition]) = (tables, partition) {
            return Ok(vec![self.unsupported(client, table, *partition).await?]);
        }
        let names: Vec<String> = tables.iter().map(TableName::quoted).collect();
        let rows = client
            .query(&self.unsupported_many, &[&names, &partition])
            .await
            .with_context(|| {
                format!(
                    "cannot inspect the dependents of {} tables ({}, …)",
                    tables.len(),
                    tables.first().map(ToString::to_string).unwrap_or_default()
                )
            })?;
        let mut out = vec![Vec::new(); tables.len()];
        for r in rows {
            let at = r.get::<_, i64>(0) as usize;
            if let Some(list) = at.checked_sub(1).and_then(|i| out.get_mut(i)) {
                list.push(r.get::<_, String>(1));
            }
        }
        Ok(out)
    }
}

/// What a swap of `table` carries over beyond LIKE, in words, for `plan`.
pub fn describe(fp: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "owner {} and {} privilege(s)",
        fp.owner,
        fp.acl.len()
    ));
    let column_grants: usize = fp.columns.iter().map(|c| c.acl.len()).sum();
    if column_grants > 0 {
        out.push(format!("{column_grants} column privilege(s)"));
    }
    if fp.row_security || !fp.policies.is_empty() {
        let policies: Vec<&str> = fp.policies.iter().map(|p| &p.name[..]).collect();
        out.push(format!(
            "row-level security ({}{}), policies: {}",
            if fp.row_security {
                "enabled"
            } else {
                "disabled"
            },
            if fp.force_row_security {
                ", forced"
            } else {
                ""
            },
            policies.join(", ")
        ));
    }
    if !fp.triggers.is_empty() {
        let triggers: Vec<&str> = fp.triggers.iter().map(|t| &t.name[..]).collect();
        out.push(format!(
            "triggers: {} (created at the swap; they fire during the replay only with replay_triggers)",
            triggers.join(", ")
        ));
    }
    let fks: Vec<&str> = fp.foreign_keys().map(|c| &c.name[..]).collect();
    if !fks.is_empty() {
        out.push(format!(
            "foreign keys: {} (re-created NOT VALID, validated after the swap)",
            fks.join(", ")
        ));
    }
    let refs: Vec<String> = fp
        .referenced_by
        .iter()
        .map(|r| format!("{}.{}", r.table, r.name))
        .collect();
    if !refs.is_empty() {
        out.push(format!(
            "foreign keys pointing at it: {} (re-pointed)",
            refs.join(", ")
        ));
    }
    for v in &fp.views {
        let name = &v.name;
        if v.is_materialized() {
            out.push(format!("materialized view {name} (re-created and refreshed from the new table inside the swap)"));
        } else {
            out.push(format!("view {name} (re-pointed)"));
        }
    }
    for s in &fp.sequences {
        let (name, column) = (&s.name, &s.column);
        if s.is_identity() {
            out.push(format!(
                "identity sequence {name} of {column} (continues where it was)"
            ));
        } else {
            out.push(format!(
                "sequence {name} owned by {column} (ownership moves)"
            ));
        }
    }
    if !fp.publications.is_empty() {
        let pubs: Vec<&str> = fp.publications.iter().map(|p| &p.publication[..]).collect();
        out.push(format!("publications: {}", pubs.join(", ")));
    }
    if fp.comment.is_some() {
        out.push("table comment".into());
    }
    if fp.reloptions.len() + fp.toast_reloptions.len() > 0 {
        out.push("storage parameters".into());
    }
    if fp.replica_identity != "d" {
        out.push("replica identity".into());
    }
    out.push(format!(
        "{} index(es) and constraints under their own names",
        fp.indexes.len()
    ));
    if let Some(key) = &fp.partition_key {
        out.push(format!(
            "partitioned by {key}: {} partition(s), each cloned with its bounds and carried over like a table",
            fp.partitions.len()
        ));
    }
    out
}

/// The exchange's connection: statements are queued and sent together, in one round trip,
/// when something must be read or the exchange ends. Every statement runs under the swap's
/// locks, and on a busy server each round trip can wait milliseconds for the CPU: fewer round
/// trips are a shorter hold (docs/internals/benchmark-log.md).
pub(crate) struct Session<'a> {
    client: &'a Client,
    queue: std::sync::Mutex<Vec<String>>,
}

impl<'a> Session<'a> {
    fn new(client: &'a Client) -> Session<'a> {
        Session {
            client,
            queue: Default::default(),
        }
    }

    /// Sends the queued statements (one simple-query message, inside the caller's
    /// transaction) and returns the connection for a read.
    async fn flushed(&self) -> Result<&'a Client> {
        let queued = std::mem::take(&mut *self.queue.lock().unwrap());
        if !queued.is_empty() {
            let script = queued.join(";\n");
            if let Err(e) = self.client.batch_execute(&script).await {
                let mut shown: String = script.chars().take(2000).collect();
                if shown.len() < script.len() {
                    shown.push('…');
                }
                return Err(
                    Error::runtime("the swap could not carry the table's properties over")
                        .caused_by(describe_pg(&e))
                        .caused_by(format!("in the statements: {shown}"))
                        .with_db_state(&e),
                );
            }
        }
        Ok(self.client)
    }
}

/// Queues a statement of the exchange (sent by [`Session::flushed`]).
async fn exec(client: &Session<'_>, sql: &str) -> Result<()> {
    client.queue.lock().unwrap().push(sql.to_string());
    Ok(())
}

/// The part of an index definition that does not name the index or its table.
fn index_key(def: &str) -> String {
    let unique = def.starts_with("CREATE UNIQUE");
    let rest = def.find(" USING ").map_or(def, |i| &def[i..]);
    format!("{unique}{rest}")
}

/// A materialized view, captured before it is dropped and re-created on the new table.
struct MatView {
    name: String,
    create: String,
    indexes: Vec<String>,
    owner: String,
    grants: Vec<(String, String, bool)>,
    comment: Option<String>,
}

async fn capture_matview(client: &Session<'_>, view: &View) -> Result<MatView> {
    let name = view.name.clone();
    let row = client
        .flushed()
        .await?
        .query_one(
            "SELECT pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'),
                    (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace), c.reloptions,
                    coalesce((SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY indexrelid) FROM pg_index WHERE indrelid = c.oid), '{}'),
                    coalesce((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
                                               || ' ' || a.privilege_type || ' ' || a.is_grantable::text)
                              FROM aclexplode(c.relacl) a), '{}')
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&name],
        )
        .await
        .with_context(|| format!("cannot read materialized view `{name}`"))?;
    let options: Option<Vec<String>> = row.get(3);
    let tablespace: Option<String> = row.get(2);
    let create = format!(
        "CREATE MATERIALIZED VIEW {name}{}{} AS {} WITH {}",
        options
            .map(|o| format!(" WITH ({})", o.join(", ")))
            .unwrap_or_default(),
        tablespace
            .map(|t| format!(" TABLESPACE {}", quote(&t)))
            .unwrap_or_default(),
        view.definition.trim_end().trim_end_matches(';'),
        if view.populated { "DATA" } else { "NO DATA" }
    );
    let grants = row
        .get::<_, Vec<String>>(5)
        .iter()
        .filter_map(|g| {
            let mut parts = g.rsplitn(3, ' ');
            let grantable = parts.next()? == "true";
            let privilege = parts.next()?.to_string();
            let grantee = parts.next()?.to_string();
            Some((grantee, privilege, grantable))
        })
        .collect();
    Ok(MatView {
        name,
        create,
        indexes: row.get(4),
        owner: row.get(0),
        grants,
        comment: row.get(1),
    })
}

/// Grants of an ACL (fingerprint form) as SQL, on `target` (`TABLE x` or `(col) ON TABLE x`).
fn grant_sql(acl: &[Grant], privilege_target: impl Fn(&str) -> String) -> Vec<String> {
    acl.iter()
        .map(|a| {
            let grantee = if a.grantee == "PUBLIC" {
                a.grantee.clone()
            } else {
                quote(&a.grantee)
            };
            format!(
                "GRANT {} TO {grantee}{}",
                privilege_target(&a.privilege),
                if a.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            )
        })
        .collect()
}

fn grantees(acl: &[Grant]) -> Vec<String> {
    let mut g: Vec<String> = acl
        .iter()
        .map(|a| {
            if a.grantee == "PUBLIC" {
                a.grantee.clone()
            } else {
                quote(&a.grantee)
            }
        })
        .collect();
    g.sort();
    g.dedup();
    g
}

/// Performs the exchange (see the module comment). Returns the foreign keys to validate after
/// the transaction commits.
pub async fn exchange(
    conn: &Client,
    prepared: &Prepared,
    ex: &Exchange<'_>,
) -> Result<Vec<Validation>> {
    exchange_all(conn, prepared, std::slice::from_ref(ex)).await
}

/// Performs several exchanges in one go (a partitioned table's partitions, after their
/// parent): the catalog reads of all of them in one round trip, their statements queued
/// together and sent with one proof of all. Each exchange is the one [`exchange`] performs;
/// only the round trips are shared, since every one is taken with the locks held.
pub async fn exchange_all(
    conn: &Client,
    prepared: &Prepared,
    exs: &[Exchange<'_>],
) -> Result<Vec<Validation>> {
    if exs.is_empty() {
        return Ok(Vec::new());
    }
    let client = &Session::new(conn);
    let fingerprints = &prepared.fingerprints;
    let laps = &prepared.laps;
    let lives: Vec<TableName> = exs.iter().map(|e| e.live.clone()).collect();
    let incomings: Vec<TableName> = exs.iter().map(|e| e.incoming.clone()).collect();
    let partition: Vec<bool> = exs.iter().map(|e| e.partition).collect();
    // Checked at the start of the rebuild, and again here: a rule or an inheriting table added
    // since (a `--no-swap` run may wait for days) would be left behind on the old table. The
    // three reads go out together (pipelined): one round trip under the lock, not three.
    let generic = async {
        conn.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .await
            .context("cannot set plan_cache_mode")
    };
    let (_, problems, outs, incs) = tokio::try_join!(
        generic,
        prepared.unsupported_all(conn, &lives, &partition),
        fingerprints.of_all(conn, &lives),
        fingerprints.of_all(conn, &incomings),
    )?;
    laps.lap("catalog reads");
    let mut validations = Vec::new();
    let mut proofs = Vec::new();
    for (((ex, problems), out), inc) in exs.iter().zip(problems).zip(outs).zip(incs) {
        let (target, captured) = build(
            client,
            fingerprints,
            ex,
            problems,
            out,
            inc,
            &mut validations,
        )
        .await?;
        proofs.push((target, captured));
    }
    laps.lap("exchange statements built");

    // 7. The proof: each new live table must be indistinguishable from the old one (but for
    // the redefined dependents, proven on their own).
    // Sent together with the queued statements: they run first, in order.
    let (_, nows) = tokio::try_join!(client.flushed(), fingerprints.of_all(conn, &lives))?;
    laps.lap("exchange statements and proof");
    for ((ex, (target, captured)), now) in exs.iter().zip(&proofs).zip(&nows) {
        crate::pipeline::shape::redefine::prove_kept(conn, ex.live, captured).await?;
        let mut now = crate::pipeline::shape::redefine::without(now, ex.live, captured);
        now.views.retain(|v| !prepared.followers.contains(&v.name));
        let differences = fp::diff(target, &now);
        if !differences.is_empty() {
            let mut err = Error::fidelity(if ex.shape.is_some() {
                format!(
                    "refusing to swap `{}`: the new table would differ from the live one with the declared shape change",
                    ex.live
                )
            } else {
                format!(
                    "refusing to swap `{}`: the new table would differ from the live one",
                    ex.live
                )
            });
            for d in differences.iter().take(20) {
                err = err.caused_by(d);
            }
            return Err(err.with_hint(
                "nothing was swapped (the transaction was rolled back); please report this with the differences above",
            ));
        }
    }
    Ok(validations)
}

/// Steps 0 to 6b of one exchange, queued on `client` after its checks: returns what the proof
/// compares the new live table with (the target) and the captured redefined dependents.
async fn build(
    client: &Session<'_>,
    fingerprints: &fingerprint::Fingerprinter,
    ex: &Exchange<'_>,
    problems: Vec<String>,
    out: Fingerprint,
    inc: Fingerprint,
    validations: &mut Vec<Validation>,
) -> Result<(Fingerprint, Vec<crate::pipeline::shape::redefine::Captured>)> {
    if !problems.is_empty() {
        let mut err = Error::fidelity(format!(
            "refusing to swap `{}`: it gained dependents reproject cannot carry over",
            ex.live
        ));
        for p in problems {
            err = err.caused_by(p);
        }
        return Err(err.with_hint("nothing was swapped; remove them, or rebuild another way"));
    }
    if let Some((run_id, before)) = &ex.cloned_from {
        let d = fp::diff(&before.structure(), &out.structure());
        if !d.is_empty() {
            let mut err = Error::fidelity(format!(
                "the structure of `{}` changed since run {run_id} cloned it; the rebuilt table would not match",
                ex.live
            ));
            for line in d.iter().take(20) {
                err = err.caused_by(line);
            }
            return Err(err.with_hint("nothing was swapped; run `reproject rebuild` again"));
        }
    }
    // What the new live table must be: the outgoing one, or with a shape change, the outgoing
    // one with the declared structure and everything carried mapped through the column map.
    let live = ex.live.quoted();
    // 0. Redefined dependents: captured and dropped; the steps below never see them.
    let (captured, out) = detach_redefined(client, ex, out).await?;
    let target = match &ex.shape {
        Some(shape) => crate::pipeline::shape::diff::target(&out, &shape.structure, &shape.map),
        None => out.clone(),
    };

    // 1. Dependents that hold the outgoing table by OID are detached before the renames.
    for fk in &out.referenced_by {
        exec(
            client,
            &format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                fk.table,
                quote(&fk.name)
            ),
        )
        .await?;
    }
    let mut matviews = Vec::new();
    for v in out.views.iter().filter(|v| v.is_materialized()) {
        matviews.push(capture_matview(client, v).await?);
        exec(client, &format!("DROP MATERIALIZED VIEW {}", v.name)).await?;
    }

    // 2. The renames themselves.
    exec(
        client,
        &format!("ALTER TABLE {live} RENAME TO {}", quote(&ex.parked.name)),
    )
    .await?;
    exec(
        client,
        &format!(
            "ALTER TABLE {} RENAME TO {}",
            ex.incoming.quoted(),
            quote(&ex.live.name)
        ),
    )
    .await?;

    // 3. Canonical names: the incoming table's objects take the outgoing ones' names.
    canonical_names(client, ex, &out, &inc, &target).await?;
    // 4. Table properties: the incoming table's catalog state becomes the outgoing's.
    sync_properties(client, fingerprints, ex, &target, &inc).await?;
    // 5. Foreign keys, both ways.
    validations.extend(move_foreign_keys(client, ex, &target, &inc).await?);
    // 6. Views and materialized views read the new live table.
    repoint_views(client, &target, &matviews).await?;
    // 6b. Redefined dependents: the user's statements, then their owner, grants and comment.
    validations.extend(redefine(client, ex, &captured).await?);
    Ok((target, captured))
}

/// Step 0 of [`exchange`]: what the swap keeps of each redefined dependent is read, and the
/// dependents are detached from the outgoing table. Returns the captures and the outgoing
/// fingerprint without the redefined dependents (what the other steps carry over and the
/// proof expects).
async fn detach_redefined(
    client: &Session<'_>,
    ex: &Exchange<'_>,
    out: Fingerprint,
) -> Result<(Vec<crate::pipeline::shape::redefine::Captured>, Fingerprint)> {
    use crate::pipeline::shape::redefine;
    if ex.redefined.is_empty() {
        return Ok((Vec::new(), out));
    }
    let captured = redefine::capture(client.flushed().await?, ex.redefined).await?;
    for sql in redefine::detach_sql(ex.redefined, ex.live) {
        exec(client, &sql).await?;
    }
    let kept = redefine::without(&out, ex.live, &captured);
    Ok((captured, kept))
}

/// Step 6b of [`exchange`]: the redefined dependents are created by the user's statements
/// (after the renames, so the live name is the incoming table's), proven to exist (one round
/// trip, only when there are any), then given their owner, privileges and comment back.
/// Returns the redefined foreign keys to validate after the commit.
async fn redefine(
    client: &Session<'_>,
    ex: &Exchange<'_>,
    captured: &[crate::pipeline::shape::redefine::Captured],
) -> Result<Vec<Validation>> {
    if ex.redefined.is_empty() {
        return Ok(Vec::new());
    }
    for r in ex.redefined {
        for sql in &r.sql {
            exec(client, sql).await?;
        }
    }
    let conn = client.flushed().await?;
    let validations =
        crate::pipeline::shape::redefine::prove_created(conn, ex.live, ex.redefined).await?;
    for sql in crate::pipeline::shape::redefine::restore_sql(ex.redefined, captured) {
        exec(client, &sql).await?;
    }
    Ok(validations)
}

/// Step 3 of [`exchange`]: indexes (and with them their constraints), extended statistics and
/// identity sequences of the incoming table take the names `target` gives them (the outgoing
/// ones', or with a shape change the names recorded for the new shape); every outgoing index
/// gets a derived name, so none of the outgoing table's names blocks a later generation; check
/// constraints the shape change added take their recorded names; serial sequences move to the
/// incoming table.
async fn canonical_names(
    client: &Session<'_>,
    ex: &Exchange<'_>,
    out: &Fingerprint,
    inc: &Fingerprint,
    target: &Fingerprint,
) -> Result<()> {
    let live = ex.live.quoted();
    let schema = quote(&ex.live.schema);
    let mut inc_indexes = inc.indexes.clone();
    let mut renames = Vec::new();
    for t in &target.indexes {
        let key = index_key(&t.definition);
        let Some(pos) = inc_indexes
            .iter()
            .position(|i| index_key(&i.definition) == key)
        else {
            return Err(Error::fidelity(format!(
                "the rebuilt table has no index matching `{}` of `{}`",
                t.name, ex.live
            )));
        };
        renames.push((inc_indexes.remove(pos).name, t.name.clone()));
    }
    for o in &out.indexes {
        let oname = &o.name;
        exec(
            client,
            &format!(
                "ALTER INDEX {schema}.{} RENAME TO {}",
                quote(oname),
                quote(&helper_name(oname, &ex.suffix))
            ),
        )
        .await?;
    }
    for (iname, tname) in renames.iter().filter(|(i, t)| i != t) {
        exec(
            client,
            &format!(
                "ALTER INDEX {schema}.{} RENAME TO {}",
                quote(iname),
                quote(tname)
            ),
        )
        .await?;
    }
    if ex.shape.is_some() {
        rename_checks(client, &live, inc, target).await?;
    }
    if !out.statistics.is_empty() {
        // Reads the catalog (after the queued renames): only when there is something to name.
        rename_statistics(client, ex).await?;
    }
    // The target's sequences are the outgoing ones, their columns named as in the new shape.
    for o in &target.sequences {
        let column = &o.column;
        if o.is_identity() {
            let Some(i) = inc
                .sequences
                .iter()
                .find(|i| i.is_identity() && &i.column == column)
            else {
                continue;
            };
            let (oname, iname) = (&o.name, &i.name);
            exec(
                client,
                &format!(
                    "ALTER SEQUENCE {schema}.{} RENAME TO {}",
                    quote(oname),
                    quote(&helper_name(oname, &ex.suffix))
                ),
            )
            .await?;
            exec(
                client,
                &format!(
                    "ALTER SEQUENCE {schema}.{} RENAME TO {}",
                    quote(iname),
                    quote(oname)
                ),
            )
            .await?;
            // Continue after every value either generation handed out or holds.
            let derived = format!("{schema}.{}", quote(&helper_name(oname, &ex.suffix)));
            let canonical = format!("{schema}.{}", quote(oname));
            exec(
                client,
                &format!(
                    "SELECT setval({}, greatest((SELECT last_value FROM {derived}), (SELECT last_value FROM {canonical}), \
                     coalesce((SELECT max({col}) FROM {live}), 1)))",
                    literal(&canonical),
                    col = quote(column)
                ),
            )
            .await?;
        } else {
            // serial: one sequence shared by both generations; it belongs to the live one.
            exec(
                client,
                &format!(
                    "ALTER SEQUENCE {schema}.{} OWNED BY {live}.{}",
                    quote(&o.name),
                    quote(column)
                ),
            )
            .await?;
        }
    }

    Ok(())
}

/// With a shape change: the incoming table's check constraints take the names the target gives
/// constraints of the same definition (those the DDL added were named after the clone).
async fn rename_checks(
    client: &Session<'_>,
    live: &str,
    inc: &Fingerprint,
    target: &Fingerprint,
) -> Result<()> {
    let checks = |fp: &Fingerprint| -> Vec<fp::Constraint> {
        fp.constraints
            .iter()
            .filter(|c| c.is_check())
            .cloned()
            .collect()
    };
    let wanted = checks(target);
    let mut have = checks(inc);
    have.retain(|h| !wanted.iter().any(|w| w.name == h.name));
    for w in &wanted {
        if checks(inc).iter().any(|h| h.name == w.name) {
            continue;
        }
        let Some(pos) = have.iter().position(|h| h.definition == w.definition) else {
            continue;
        };
        let h = have.remove(pos);
        exec(
            client,
            &format!(
                "ALTER TABLE {live} RENAME CONSTRAINT {} TO {}",
                quote(&h.name),
                quote(&w.name)
            ),
        )
        .await?;
    }
    Ok(())
}

/// Step 4 of [`exchange`]: owner, grants (table and column), statistics targets, row-level
/// security and policies, triggers, comment, storage parameters, replica identity and
/// publication membership of the incoming table become the outgoing table's.
async fn sync_properties(
    client: &Session<'_>,
    fingerprints: &fingerprint::Fingerprinter,
    ex: &Exchange<'_>,
    out: &Fingerprint,
    inc: &Fingerprint,
) -> Result<()> {
    let live = ex.live.quoted();
    let parked = ex.parked.quoted();
    if out.owner != inc.owner {
        exec(
            client,
            &format!("ALTER TABLE {live} OWNER TO {}", quote(&out.owner)),
        )
        .await?;
    }
    // Changing the owner rewrites the ACL; otherwise the incoming table's is still current.
    let current = if out.owner != inc.owner {
        fingerprints.of(client.flushed().await?, ex.live).await?
    } else {
        inc.clone()
    };
    if out.acl != current.acl {
        let all: Vec<Grant> = out.acl.iter().chain(&current.acl).cloned().collect();
        for g in grantees(&all) {
            exec(client, &format!("REVOKE ALL ON TABLE {live} FROM {g}")).await?;
        }
        for sql in grant_sql(&out.acl, |p| format!("{p} ON TABLE {live}")) {
            exec(client, &sql).await?;
        }
    }
    for (o, c) in out.columns.iter().zip(current.columns.iter()) {
        let col = quote(&o.name);
        if o.acl != c.acl {
            let all: Vec<Grant> = o.acl.iter().chain(&c.acl).cloned().collect();
            for g in grantees(&all) {
                exec(
                    client,
                    &format!("REVOKE ALL ({col}) ON TABLE {live} FROM {g}"),
                )
                .await?;
            }
            for sql in grant_sql(&o.acl, |p| format!("{p} ({col}) ON TABLE {live}")) {
                exec(client, &sql).await?;
            }
        }
        if o.statistics != c.statistics {
            let target = o.statistics.unwrap_or(-1);
            exec(
                client,
                &format!("ALTER TABLE {live} ALTER COLUMN {col} SET STATISTICS {target}"),
            )
            .await?;
        }
    }
    // Row-level security on/off and forced or not: the outgoing table's state.
    for (wanted, had, on, off) in [
        (out.row_security, inc.row_security, "ENABLE", "DISABLE"),
        (
            out.force_row_security,
            inc.force_row_security,
            "FORCE",
            "NO FORCE",
        ),
    ] {
        if wanted != had {
            let how = if wanted { on } else { off };
            exec(
                client,
                &format!("ALTER TABLE {live} {how} ROW LEVEL SECURITY"),
            )
            .await?;
        }
    }
    for p in &inc.policies {
        exec(client, &format!("DROP POLICY {} ON {live}", quote(&p.name))).await?;
    }
    for p in &out.policies {
        exec(client, &create_policy(p, &live)).await?;
    }
    for t in &inc.triggers {
        exec(
            client,
            &format!("DROP TRIGGER {} ON {live}", quote(&t.name)),
        )
        .await?;
    }
    for t in &out.triggers {
        // Captured while the outgoing table had the live name: it now names the incoming one.
        exec(client, &t.definition).await?;
        let state = match t.enabled.as_str() {
            "D" => Some("DISABLE"),
            "R" => Some("ENABLE REPLICA"),
            "A" => Some("ENABLE ALWAYS"),
            _ => None,
        };
        if let Some(state) = state {
            exec(
                client,
                &format!("ALTER TABLE {live} {state} TRIGGER {}", quote(&t.name)),
            )
            .await?;
        }
    }
    if out.comment != inc.comment {
        let comment = out.comment.as_deref().map_or("NULL".to_string(), literal);
        exec(client, &format!("COMMENT ON TABLE {live} IS {comment}")).await?;
    }
    for (wanted, had, prefix) in [
        (&out.reloptions, &inc.reloptions, ""),
        (&out.toast_reloptions, &inc.toast_reloptions, "toast."),
    ] {
        if wanted != had {
            let old: Vec<String> = had
                .iter()
                .filter_map(|o| o.split('=').next().map(|k| format!("{prefix}{k}")))
                .collect();
            if !old.is_empty() {
                exec(
                    client,
                    &format!("ALTER TABLE {live} RESET ({})", old.join(", ")),
                )
                .await?;
            }
            let new: Vec<String> = wanted
                .iter()
                .filter_map(|o| {
                    let (k, v) = o.split_once('=')?;
                    Some(format!("{prefix}{k} = {}", literal(v)))
                })
                .collect();
            if !new.is_empty() {
                exec(
                    client,
                    &format!("ALTER TABLE {live} SET ({})", new.join(", ")),
                )
                .await?;
            }
        }
    }
    if out.replica_identity != inc.replica_identity || out.replica_identity == "i" {
        let identity = match out.replica_identity.as_str() {
            "n" => "NOTHING".to_string(),
            "f" => "FULL".to_string(),
            "i" => {
                let index = out
                    .indexes
                    .iter()
                    .find(|i| i.replica_identity)
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                format!("USING INDEX {}", quote(&index))
            }
            _ => "DEFAULT".to_string(),
        };
        exec(
            client,
            &format!("ALTER TABLE {live} REPLICA IDENTITY {identity}"),
        )
        .await?;
    }
    for p in &inc.publications {
        exec(
            client,
            &format!(
                "ALTER PUBLICATION {} DROP TABLE {live}",
                quote(&p.publication)
            ),
        )
        .await?;
    }
    for p in &out.publications {
        let name = quote(&p.publication);
        exec(
            client,
            &format!("ALTER PUBLICATION {name} DROP TABLE {parked}"),
        )
        .await?;
        let columns = p
            .columns
            .as_ref()
            .map(|c| {
                format!(
                    " ({})",
                    c.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
                )
            })
            .unwrap_or_default();
        let filter = p
            .row_filter
            .as_ref()
            .map(|w| format!(" WHERE ({w})"))
            .unwrap_or_default();
        exec(
            client,
            &format!("ALTER PUBLICATION {name} ADD TABLE {live}{columns}{filter}"),
        )
        .await?;
    }

    Ok(())
}

/// Step 5 of [`exchange`]: the table's own foreign keys move to the incoming table (the outgoing
/// one keeps none: a stale table must not block deletes of parent rows), and other tables'
/// foreign keys are re-created against it, all `NOT VALID` until validated after the commit.
async fn move_foreign_keys(
    client: &Session<'_>,
    ex: &Exchange<'_>,
    out: &Fingerprint,
    inc: &Fingerprint,
) -> Result<Vec<Validation>> {
    let mut validations = Vec::new();
    let live = ex.live.quoted();
    let parked = ex.parked.quoted();
    for i in inc.foreign_keys() {
        exec(
            client,
            &format!("ALTER TABLE {live} DROP CONSTRAINT {}", quote(&i.name)),
        )
        .await?;
    }
    for o in out.foreign_keys() {
        let name = o.name.clone();
        exec(
            client,
            &format!("ALTER TABLE {parked} DROP CONSTRAINT {}", quote(&name)),
        )
        .await?;
        exec(
            client,
            &format!(
                "ALTER TABLE {live} ADD CONSTRAINT {} {} NOT VALID",
                quote(&name),
                o.definition
            ),
        )
        .await?;
        validations.push(Validation {
            table_sql: live.clone(),
            constraint: name,
        });
    }
    for fk in &out.referenced_by {
        let (table, name) = (fk.table.clone(), fk.name.clone());
        exec(
            client,
            &format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} {} NOT VALID",
                quote(&name),
                fk.definition
            ),
        )
        .await?;
        validations.push(Validation {
            table_sql: table,
            constraint: name,
        });
    }

    Ok(validations)
}

/// Step 6 of [`exchange`]: views are re-pointed at the live name (their definitions were read
/// while it named the outgoing table); materialized views are re-created from it.
async fn repoint_views(
    client: &Session<'_>,
    out: &Fingerprint,
    matviews: &[MatView],
) -> Result<()> {
    for v in out.views.iter().filter(|v| v.kind == "v") {
        let options = v
            .options
            .as_ref()
            .map(|o| format!(" WITH ({})", o.join(", ")))
            .unwrap_or_default();
        exec(
            client,
            &format!(
                "CREATE OR REPLACE VIEW {}{options} AS {}",
                v.name, v.definition
            ),
        )
        .await?;
    }
    for mv in matviews {
        exec(client, &mv.create).await?;
        for index in &mv.indexes {
            exec(client, index).await?;
        }
        exec(
            client,
            &format!(
                "ALTER MATERIALIZED VIEW {} OWNER TO {}",
                mv.name,
                quote(&mv.owner)
            ),
        )
        .await?;
        if !mv.grants.is_empty() {
            exec(
                client,
                &format!("REVOKE ALL ON TABLE {} FROM {}", mv.name, quote(&mv.owner)),
            )
            .await?;
        }
        for (grantee, privilege, grantable) in &mv.grants {
            exec(
                client,
                &format!(
                    "GRANT {privilege} ON TABLE {} TO {grantee}{}",
                    mv.name,
                    if *grantable { " WITH GRANT OPTION" } else { "" }
                ),
            )
            .await?;
        }
        if let Some(c) = &mv.comment {
            exec(
                client,
                &format!("COMMENT ON MATERIALIZED VIEW {} IS {}", mv.name, literal(c)),
            )
            .await?;
        }
    }

    Ok(())
}

async fn rename_statistics(client: &Session<'_>, ex: &Exchange<'_>) -> Result<()> {
    let query = "SELECT n.nspname, s.stxname, pg_get_statisticsobjdef_columns(s.oid) || ' ' || s.stxkind::text
                 FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
                 WHERE s.stxrelid = to_regclass($1) ORDER BY s.stxname";
    let parked = client
        .flushed()
        .await?
        .query(query, &[&ex.parked.quoted()])
        .await
        .context("cannot read extended statistics")?;
    let mut incoming = client
        .flushed()
        .await?
        .query(query, &[&ex.live.quoted()])
        .await
        .context("cannot read extended statistics")?;
    for o in &parked {
        let key: String = o.get(2);
        let Some(pos) = incoming.iter().position(|i| i.get::<_, String>(2) == key) else {
            continue;
        };
        let i = incoming.remove(pos);
        let (schema, oname): (String, String) = (o.get(0), o.get(1));
        let (ischema, iname): (String, String) = (i.get(0), i.get(1));
        exec(
            client,
            &format!(
                "ALTER STATISTICS {}.{} RENAME TO {}",
                quote(&schema),
                quote(&oname),
                quote(&helper_name(&oname, &ex.suffix))
            ),
        )
        .await?;
        exec(
            client,
            &format!(
                "ALTER STATISTICS {}.{} RENAME TO {}",
                quote(&ischema),
                quote(&iname),
                quote(&oname)
            ),
        )
        .await?;
    }
    Ok(())
}

pub(crate) fn create_policy(p: &Policy, table: &str) -> String {
    let command = match p.command.as_str() {
        "r" => "SELECT",
        "a" => "INSERT",
        "w" => "UPDATE",
        "d" => "DELETE",
        _ => "ALL",
    };
    let roles: Vec<String> = p
        .roles
        .iter()
        .map(|r| {
            if r == "PUBLIC" {
                r.to_string()
            } else {
                quote(r)
            }
        })
        .collect();
    let mut sql = format!(
        "CREATE POLICY {} ON {table} AS {} FOR {command} TO {}",
        quote(&p.name),
        if p.permissive {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        },
        if roles.is_empty() {
            "PUBLIC".to_string()
        } else {
            roles.join(", ")
        }
    );
    if let Some(using) = &p.using {
        sql.push_str(&format!(" USING ({using})"));
    }
    if let Some(check) = &p.check {
        sql.push_str(&format!(" WITH CHECK ({check})"));
    }
    sql
}

/// Validates the foreign keys a swap re-created `NOT VALID`, each in its own transaction
/// after the swap committed (validation scans rows but blocks neither readers nor writers).
/// Returns the ones that failed, with the database's reason.
pub async fn validate_foreign_keys(client: &Client, validations: &[Validation]) -> Vec<String> {
    let mut failed = Vec::new();
    for v in validations {
        let sql = format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            v.table_sql,
            quote(&v.constraint)
        );
        if let Err(e) = client.batch_execute(&sql).await {
            failed.push(format!(
                "{}.{}: {}",
                v.table_sql,
                v.constraint,
                describe_pg(&e)
            ));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_ignore_names() {
        assert_eq!(
            index_key("CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)"),
            index_key("CREATE UNIQUE INDEX t_rebuild_pkey ON public.t_rebuild USING btree (id)")
        );
        assert_ne!(
            index_key("CREATE INDEX a ON public.t USING btree (id)"),
            index_key("CREATE UNIQUE INDEX b ON public.t USING btree (id)")
        );
    }

    #[test]
    fn policies_are_rebuilt_from_the_catalog() {
        let p: Policy = serde_json::from_value(
            serde_json::json!({"name": "own rows", "command": "r", "permissive": true,
            "roles": ["app", "PUBLIC"], "using": "(owner = CURRENT_USER)", "check": null}),
        )
        .unwrap();
        assert_eq!(
            create_policy(&p, "\"public\".\"t\""),
            "CREATE POLICY \"own rows\" ON \"public\".\"t\" AS PERMISSIVE FOR SELECT TO \"app\", PUBLIC USING ((owner = CURRENT_USER))"
        );
    }
}
