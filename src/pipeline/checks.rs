//! Health checks that gate the swap: row counts of each rebuilt table against its live table,
//! and the projection's own SQL checks, run against the rebuilt tables.

use crate::apply::sql::Target;
use crate::db::catalog::count_rows;
use crate::error::{describe_pg, Context, Result};
use crate::model::config::Config;
use serde::Serialize;
use tokio_postgres::Client;

/// The outcome of one check, as recorded in the run's history.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The projection whose tables were checked.
    pub projection: String,
    /// The check's name (`row count within 10%`, or as named in the config).
    pub name: String,
    /// True when the check passed.
    pub passed: bool,
    /// What was found (counts, or the error that failed the check).
    pub detail: String,
    /// A row-count check's live table and the rows of its rebuilt table, so the run's
    /// `rows_after` need not count them again (not part of the recorded result).
    #[serde(skip)]
    pub rebuilt_rows: Option<(String, i64)>,
}

/// Runs every check of the projections in `order` against the tables of `target`.
pub async fn run(
    client: &Client,
    target: &Target<'_>,
    order: &[usize],
) -> Result<Vec<CheckResult>> {
    let config: &Config = target.config;
    let mut results = Vec::new();
    for &i in order {
        let p = &config.projections[i];
        for (ti, _) in p.tables.iter().enumerate() {
            let live = &target.resolved.tables[i][ti];
            let rebuilt = crate::model::ident::rebuild_table(live);
            let new_rows = count_rows(client, &rebuilt).await?;
            let (passed, detail) = if target.resolved.is_added(live) {
                // A table the rebuild adds has no live table to compare with.
                (
                    true,
                    format!("new table, rebuilt {new_rows} (no live table to compare with)"),
                )
            } else {
                let live_rows = count_rows(client, live).await?;
                row_count_verdict(live_rows, new_rows, p.row_count_tolerance)
            };
            results.push(CheckResult {
                projection: p.name.clone(),
                name: format!("row count of {}", live.name),
                passed,
                detail,
                rebuilt_rows: Some((live.to_string(), new_rows)),
            });
        }
        for check in &p.checks {
            let sql = check.sql.render(|r| target.physical(&r.written).quoted());
            // In a read-only transaction, rolled back: the server refuses any write a check
            // (or a function it calls) attempts; the check then fails.
            client
                .batch_execute("START TRANSACTION READ ONLY")
                .await
                .context("cannot begin a check")?;
            let outcome = client.query_one(&sql, &[]).await;
            client
                .batch_execute("ROLLBACK")
                .await
                .context("cannot end a check")?;
            let (passed, detail) = match outcome {
                Ok(row) => match row.get::<_, Option<bool>>(0) {
                    Some(true) => (true, "true".to_string()),
                    Some(false) => (false, "returned false".to_string()),
                    None => (false, "returned NULL".to_string()),
                },
                Err(e) => (false, format!("failed: {}", describe_pg(&e))),
            };
            results.push(CheckResult {
                projection: p.name.clone(),
                name: check.name.clone(),
                passed,
                detail,
                rebuilt_rows: None,
            });
        }
    }
    Ok(results)
}

/// Compares row counts. An empty live table gives no baseline (a brand-new projection), so
/// any count passes; otherwise the difference must be within `tolerance` percent of live.
pub fn row_count_verdict(live: i64, rebuilt: i64, tolerance: f64) -> (bool, String) {
    if live == 0 {
        return (
            true,
            format!("live 0, rebuilt {rebuilt} (no baseline: the live table is empty)"),
        );
    }
    let diff = (rebuilt - live).abs() as f64 / live as f64 * 100.0;
    let passed = diff <= tolerance;
    (
        passed,
        format!("live {live}, rebuilt {rebuilt}, difference {diff:.2}% (tolerance {tolerance}%)"),
    )
}

#[cfg(test)]
mod tests {
    use super::row_count_verdict;

    #[test]
    fn tolerance_is_a_percentage_of_live() {
        assert!(row_count_verdict(100, 110, 10.0).0);
        assert!(!row_count_verdict(100, 111, 10.0).0);
        assert!(!row_count_verdict(100, 0, 10.0).0);
        assert!(row_count_verdict(100, 100, 0.0).0);
        assert!(!row_count_verdict(100, 99, 0.0).0);
        assert!(row_count_verdict(0, 5000, 0.0).0);
    }
}
