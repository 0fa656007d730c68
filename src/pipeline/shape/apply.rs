//! Running a projection's reshape DDL on copies of its tables (the `_rebuild` clones, or the
//! temporary stand-ins `plan` validates with) and reading what it changed from the catalog.

use crate::db::catalog::fingerprint;
use crate::error::{describe_pg, Context, Error, Result};
use crate::model::fingerprint::Shaped;
use crate::model::ident::TableName;
use crate::model::shape::file::ReshapeFile;
pub use crate::model::shape::Applied;
use crate::pipeline::shape::diff::{self, Attribute};
use crate::pipeline::shape::Column;
use tokio_postgres::GenericClient;

/// One table of the projection and the copy the DDL runs on.
#[derive(Debug, Clone)]
pub struct Copy {
    /// The live table.
    pub live: TableName,
    /// The copy (`x_rebuild`, or a temporary stand-in), freshly made `LIKE live INCLUDING ALL`.
    pub copy: TableName,
}

/// The columns of `table`, with their attribute numbers.
pub async fn attributes(client: &impl GenericClient, table: &TableName) -> Result<Vec<Attribute>> {
    let rows = client
        .query(
            "SELECT attnum, attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the columns of `{table}`"))?;
    Ok(rows
        .iter()
        .map(|r| Attribute {
            attnum: r.get(0),
            column: Column {
                name: r.get(1),
                type_name: r.get(2),
            },
        })
        .collect())
}

/// Runs `file` on the copies of `projection`'s tables (`copies`, in config order; `index_of`
/// maps a `{{table}}` reference to its position there) and reads back what changed. The
/// caller's transaction decides whether it stays (the clone transaction) or not (validation).
/// `others`: the other copies the same transaction made (other projections' clones), which
/// the DDL must not change either but whose locks are the transaction's own.
pub async fn apply(
    client: &impl GenericClient,
    projection: &str,
    file: &ReshapeFile,
    copies: &[Copy],
    others: &[TableName],
    index_of: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<Applied>> {
    let mut before = Vec::new();
    for c in copies {
        before.push((
            attributes(client, &c.copy).await?,
            fingerprint::fingerprint(client, &c.copy).await?,
            fingerprint::fingerprint(client, &c.live).await?,
        ));
    }
    // `{{index}}`: the live table's index of that name is, on the copy, the one LIKE made
    // with the same definition (as a swap matches them).
    let mut indexes: std::collections::BTreeMap<String, String> = Default::default();
    for (_, copy_fp, live_fp) in &before {
        let mut copy_indexes = copy_fp.indexes.clone();
        for l in &live_fp.indexes {
            let key = diff::index_key(&l.definition);
            if let Some(pos) = copy_indexes
                .iter()
                .position(|c| diff::index_key(&c.definition) == key)
            {
                indexes.insert(l.name.clone(), copy_indexes.remove(pos).name);
            }
        }
    }
    for st in &file.statements {
        let mut unknown = None;
        let sql = st.render(|r| match index_of(&r.written) {
            Some(i) => copies[i].copy.quoted(),
            None => match indexes.get(r.written.trim_matches('"')) {
                Some(name) => crate::model::ident::quote(name),
                None => {
                    unknown = Some(r.written.clone());
                    String::new()
                }
            },
        });
        if let Some(written) = unknown {
            return Err(Error::config(format!(
                "{}: projection `{projection}`: the reshape names `{{{{{written}}}}}`, which is neither a table of the projection nor an index of one",
                file.at(st)
            ))
            .with_hint("write the projection's tables and their indexes in braces, by the live names (`DROP INDEX {{balances_by_owner}}`)"));
        }
        let tables: Vec<String> = st
            .tables
            .iter()
            .filter_map(|r| index_of(&r.written))
            .map(|i| format!("`{}`", copies[i].live))
            .collect();
        if let Err(e) = client.batch_execute(&sql).await {
            return Err(Error::config(format!(
                "{}: projection `{projection}`: the reshape statement fails on the rebuilt copy of {}",
                file.at(st),
                if tables.is_empty() { "its tables".to_string() } else { tables.join(", ") }
            ))
            .caused_by(as_rebuild_tables(&describe_pg(&e), copies))
            .with_db_state(&e)
            .with_hint("the statement runs on an empty copy of the live table as it is now (LIKE … INCLUDING ALL); nothing was written"));
        }
        refuse_foreign_writes(client, projection, file, st, copies, others).await?;
    }
    let mut out = Vec::new();
    for (c, (attrs, fp_before, live_fp)) in copies.iter().zip(before) {
        let after = fingerprint::fingerprint(client, &c.copy).await?;
        if let Some(fk) = after.foreign_keys().next() {
            return Err(Error::config(format!(
                "{}: projection `{projection}`: the reshape adds foreign key `{}` to `{}`; a swap carries the live table's foreign keys and cannot add new ones",
                file.path.display(),
                fk.name,
                c.live
            ))
            .with_hint("add the foreign key to the live table after the swap"));
        }
        let map = diff::column_map(&attrs, &attributes(client, &c.copy).await?);
        let shaped = Shaped {
            fingerprint: diff::canonicalize(
                &live_fp,
                &fp_before,
                &after,
                &c.copy.name,
                &c.live.schema,
                &c.live.name,
            ),
            set_by_reshape: diff::set_by_ddl(&fp_before, &after, &map),
        };
        out.push(Applied {
            live: c.live.clone(),
            map,
            shaped,
            live_fingerprint: live_fp,
        });
    }
    Ok(out)
}

/// The server's message with the temporary stand-ins of validation named as the rebuild
/// tables they stand for, so `plan` says what `rebuild` would say.
fn as_rebuild_tables(message: &str, copies: &[Copy]) -> String {
    copies
        .iter()
        .filter(|c| c.copy.schema == "pg_temp")
        .fold(message.to_string(), |m, c| {
            m.replace(
                &format!("\"{}\"", c.copy.name),
                &format!("\"{}\"", crate::model::ident::rebuild_table(&c.live).name),
            )
        })
}

/// Refuses a statement that took a lock for changing a relation other than the copies and
/// what belongs to them (a table written without braces resolves to the live table).
async fn refuse_foreign_writes(
    client: &impl GenericClient,
    projection: &str,
    file: &ReshapeFile,
    st: &crate::model::handlers::Statement,
    copies: &[Copy],
    others: &[TableName],
) -> Result<()> {
    let ours: Vec<String> = copies
        .iter()
        .map(|c| c.copy.quoted())
        .chain(others.iter().map(TableName::quoted))
        .collect();
    let rows = client
        .query(
            "SELECT DISTINCT c.oid::regclass::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation'
               AND l.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
               AND c.relnamespace <> pg_my_temp_schema()
               AND c.relnamespace <> coalesce(to_regnamespace('reproject')::oid, 0)
               AND c.oid <> ALL (SELECT to_regclass(x) FROM unnest($1::text[]) x WHERE to_regclass(x) IS NOT NULL)",
            &[&ours],
        )
        .await
        .context("cannot read the locks the reshape statement took")?;
    if let Some(r) = rows.first() {
        let table: String = r.get(0);
        return Err(Error::config(format!(
            "{}: projection `{projection}`: the reshape statement changes `{table}`, which is not a rebuilt copy of the projection's tables",
            file.at(st)
        ))
        .with_hint("write the projection's tables in braces (`ALTER TABLE {{balances}} …`): a reshape changes only the rebuilt copies"));
    }
    Ok(())
}
