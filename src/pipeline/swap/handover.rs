//! Hand-over to projectors that reproject does not run: a projection's `handover` names the
//! checkpoint row of such a projector, and the swap sets it to the swap position inside the
//! swap transaction, so the projector continues exactly where the swapped-in tables end: it
//! neither applies an event twice nor skips one, whenever it reads the row.

use crate::error::{Context, Error, Result};
use crate::model::config::{Config, Handover};
use crate::model::ident::quote;
use crate::progress::{Reporter, Step, Warning};
use crate::read::source::Cursor;
use tokio_postgres::GenericClient;

/// `UPDATE table SET position_column = $2 [, transaction_id_column = $3] WHERE key_column = $1`.
pub fn statement(h: &Handover) -> String {
    let table = match &h.table.schema {
        Some(schema) => format!("{}.{}", quote(schema), quote(&h.table.name)),
        None => quote(&h.table.name),
    };
    let tx = h
        .transaction_id_column
        .as_ref()
        .map(|c| format!(", {} = $3::text::xid8", quote(c)))
        .unwrap_or_default();
    format!(
        "UPDATE {table} SET {} = $2::bigint{tx} WHERE {}::text = $1::text",
        quote(&h.position_column),
        quote(&h.key_column)
    )
}

/// Sets the hand-over checkpoint of every projection of `names` that has one to `at`. Called
/// inside the swap transaction: if a checkpoint row is missing, the swap fails as a whole.
pub async fn apply(
    client: &impl GenericClient,
    config: &Config,
    names: &[String],
    at: &Cursor,
    reporter: &dyn Reporter,
) -> Result<()> {
    for name in names {
        let Some(h) = config
            .projection_index(name)
            .and_then(|i| config.projections[i].handover.as_ref())
        else {
            continue;
        };
        let Some(position) = at.position else {
            reporter.warn(&Warning::HandoverUnchanged {
                projection: name.to_string(),
                table: h.table.to_string(),
            });
            continue;
        };
        let tx = at.tx.map(|t| t.to_string());
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&h.key, &position];
        if h.transaction_id_column.is_some() {
            params.push(&tx);
        }
        let n = client
            .execute(&statement(h), &params)
            .await
            .with_context(|| {
                format!(
                    "{}:{}: projection `{name}`: cannot set the hand-over checkpoint in `{}`",
                    config.path.display(),
                    h.line,
                    h.table
                )
            })?;
        if n != 1 {
            return Err(Error::runtime(format!(
                "{}:{}: projection `{name}`: the hand-over checkpoint `{}` = '{}' in `{}` matched {n} rows, not 1; nothing was swapped",
                config.path.display(),
                h.line,
                h.key_column,
                h.key,
                h.table
            ))
            .with_hint("create that checkpoint row (the external projector's), then run `reproject swap`"));
        }
        reporter.step(&Step::HandoverSet {
            projection: name.to_string(),
            table: h.table.to_string(),
            at: (*at).into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ident::ConfigTableRef;

    fn handover(schema: Option<&str>, tx: Option<&str>) -> Handover {
        Handover {
            table: ConfigTableRef {
                schema: schema.map(String::from),
                name: "Checkpoints".into(),
            },
            key_column: "name".into(),
            key: "tally".into(),
            position_column: "last position".into(),
            transaction_id_column: tx.map(String::from),
            line: 1,
        }
    }

    #[test]
    fn the_statement_quotes_every_name_and_sets_the_transaction_id_only_when_named() {
        assert_eq!(
            statement(&handover(None, None)),
            r#"UPDATE "Checkpoints" SET "last position" = $2::bigint WHERE "name"::text = $1::text"#
        );
        assert_eq!(
            statement(&handover(Some("app"), Some("tx"))),
            r#"UPDATE "app"."Checkpoints" SET "last position" = $2::bigint, "tx" = $3::text::xid8 WHERE "name"::text = $1::text"#
        );
    }
}
