//! The run-time half of "a replay writes only its own tables": before a batch that ran handler
//! code commits, one statement asks the server which tables the batch's transaction wrote, and
//! a write to a table the batch does not own fails the batch (the caller rolls it back).
//!
//! Validation (validate.rs) refuses handler statements whose write target the planner
//! resolves to a foreign table; it cannot see what functions and triggers called by handlers
//! write, nor statements the planner does not plan (TRUNCATE, DDL, DO blocks). The server can:
//!
//! every INSERT, UPDATE, DELETE, MERGE or COPY takes a ROW EXCLUSIVE lock on its target, and
//! TRUNCATE, ALTER, LOCK stronger ones, held until the transaction ends, even when no row was
//! touched; `pg_locks` lists this backend's own. (The transaction's row counters,
//! `pg_stat_xact_user_tables`, are not used: on PostgreSQL 15 they also report the rows of the
//! session's earlier transactions until its statistics are flushed, which made a group of the
//! live runner see the writes of the group before it on the same connection. A row written
//! always leaves a lock, so the locks prove at least as much.)
//!
//! Inside a transaction the caller has locked tables in on purpose (the swap and the rollback
//! take ACCESS EXCLUSIVE on the live tables before applying the last events), only ROW
//! EXCLUSIVE locks count: the lock manager records each mode a transaction holds separately,
//! so a write still shows as its own ROW EXCLUSIVE row (a TRUNCATE of a table the caller
//! locked is not seen there).
//!
//! What a batch may write: its own generation's tables, reproject's state schema, temporary
//! tables and sequences. Other tables of the config are never allowed (a projection's live
//! table during a rebuild is the failure this exists for). Any other table is refused too,
//! unless one of the batch's own tables carries an enabled user trigger: such triggers
//! (`replay_triggers = true`, or the live tables' own triggers under `reproject run`) are the
//! application's and may keep tables of their own, such as an audit log.

use crate::error::{Context, Error, Result};
use crate::model::ident::TableName;
use crate::read::source::Cursor;
use tokio_postgres::Client;

/// The tables a projector's batches may and may not write.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// The batch's own tables (quoted, qualified): the generation it builds.
    own: Vec<String>,
    /// Tables of the config that are not the batch's own: never written.
    protected: Vec<String>,
    /// The projections whose handlers run in the batch, for the message.
    projections: Vec<String>,
    /// What the own tables are, for the message ("rebuild tables", "live tables", …).
    generation: &'static str,
}

impl Writes {
    /// `own`: the tables the batch writes; `config`: every table of the config (any own one
    /// among them is skipped); `projections`: whose handlers the batch runs.
    pub fn new(
        own: impl IntoIterator<Item = TableName>,
        config: impl IntoIterator<Item = TableName>,
        projections: Vec<String>,
        generation: &'static str,
    ) -> Writes {
        let own: Vec<String> = own.into_iter().map(|t| t.quoted()).collect();
        let protected = config
            .into_iter()
            .map(|t| t.quoted())
            .filter(|t| !own.contains(t))
            .collect();
        Writes {
            own,
            protected,
            projections,
            generation,
        }
    }

    /// The same, with more tables of the batch's own (tables a run added that the config
    /// does not list: live_handlers.rs).
    pub fn with_own(mut self, more: impl IntoIterator<Item = TableName>) -> Writes {
        for t in more {
            let t = t.quoted();
            self.protected.retain(|p| *p != t);
            if !self.own.contains(&t) {
                self.own.push(t);
            }
        }
        self
    }
}

/// A table written that should not have been: (qualified name, name, how it was written).
type Forbidden = (String, String, String);

/// The statement: every table this transaction wrote that it may not write (a partitioned
/// table stands for its partitions too, which a write to it locks).
/// `$1` own tables, `$2` protected tables, `$3` whether strong locks count (a batch's own
/// transaction) or only ROW EXCLUSIVE ones (inside a transaction that locked tables on purpose).
const SQL: &str = "
WITH own AS (SELECT to_regclass(n) AS oid FROM unnest($1::text[]) AS n
             UNION ALL SELECT p.relid FROM unnest($1::text[]) AS n, pg_partition_tree(to_regclass(n)) p),
protected AS (SELECT to_regclass(n) AS oid FROM unnest($2::text[]) AS n
              UNION ALL SELECT p.relid FROM unnest($2::text[]) AS n, pg_partition_tree(to_regclass(n)) p),
written AS (
    SELECT l.relation AS oid, l.mode::text AS how
    FROM pg_locks l
    WHERE l.locktype = 'relation' AND l.pid = pg_backend_pid() AND l.granted
      AND l.mode IN ('RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock',
                     'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
      AND ($3 OR l.mode = 'RowExclusiveLock')
),
triggers AS (
    SELECT EXISTS (SELECT 1 FROM pg_trigger t
                   WHERE t.tgrelid IN (SELECT oid FROM own) AND NOT t.tgisinternal AND t.tgenabled <> 'D') AS fire
)
SELECT format('%I.%I', n.nspname, c.relname), c.relname::text, string_agg(DISTINCT w.how, ', ')
FROM written w
JOIN pg_class c ON c.oid = w.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'f') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'reproject')
  AND NOT EXISTS (SELECT 1 FROM own o WHERE o.oid = c.oid)
  AND (EXISTS (SELECT 1 FROM protected p WHERE p.oid = c.oid) OR NOT (SELECT fire FROM triggers))
GROUP BY n.nspname, c.relname
ORDER BY 1";

/// Fails when the open transaction on `conn` wrote a table `writes` does not allow; the
/// caller then rolls the batch (the events after `after` up to `to`) back. `own_transaction`:
/// the batch's transaction is its own (false inside the swap's or rollback's transaction,
/// which hold strong locks on the live tables on purpose).
pub async fn check(
    conn: &Client,
    writes: &Writes,
    after: &Cursor,
    to: &Cursor,
    own_transaction: bool,
) -> Result<()> {
    let rows = conn
        .query(SQL, &[&writes.own, &writes.protected, &own_transaction])
        .await
        .context("cannot check which tables the batch wrote")?;
    let forbidden: Vec<Forbidden> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let Some((table, short, how)) = forbidden.first() else {
        return Ok(());
    };
    let whose = match writes.projections.as_slice() {
        [one] => format!("projection `{one}`"),
        many => format!("projections `{}`", many.join("`, `")),
    };
    let others = forbidden[1..]
        .iter()
        .map(|(t, _, _)| format!("`{t}`"))
        .collect::<Vec<_>>();
    let mut err = Error::runtime(format!(
        "{whose}: the batch of the events after {} up to {} wrote `{table}`, which is not one of the {} it builds; the batch was rolled back",
        after.describe(),
        to.describe(),
        writes.generation,
    ))
    .caused_by(format!("this transaction holds {how} on `{table}`"));
    if !others.is_empty() {
        err = err.caused_by(format!("also written: {}", others.join(", ")));
    }
    Err(err.with_hint(format!(
        "a handler writes only its projection's tables, named in braces (`{{{{{short}}}}}` if `{table}` is one of them); find the statement, function or trigger that writes `{table}` and make it write the braced table or nothing"
    )))
}
