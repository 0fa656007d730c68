//! The catalog fingerprint of a table (everything an application can observe about it but its
//! rows), read with the query reproject itself runs (sql/fingerprint.sql), as plain SQL: the
//! tests compare what the database says before and after a swap, without reaching into the
//! crate.

use crate::harness::TestDb;
use serde_json::Value;
use tokio_postgres::Client;

/// Publication column lists and row filters came with PostgreSQL 15; before, reproject's query
/// reads NULL for them (src/db/catalog/fingerprint.rs does the same substitution).
const PG15_ONLY: [(&str, &str); 2] = [
    (
        "(SELECT jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a\n                                   WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs))",
        "NULL::jsonb",
    ),
    ("pg_get_expr(pr.prqual, pr.prrelid)", "NULL::text"),
];

/// The fingerprint query (`$1`: the table as regclass text) for `client`'s server.
pub async fn fingerprint_sql(client: &Client) -> String {
    let sql = include_str!("../../sql/fingerprint.sql").to_string();
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    if version >= 150000 {
        return sql;
    }
    PG15_ONLY.iter().fold(sql, |sql, (from, to)| {
        assert!(sql.contains(from), "sql/fingerprint.sql changed: {from}");
        sql.replace(from, to)
    })
}

/// The catalog fingerprint of `table`.
pub async fn fingerprint(db: &TestDb, table: &str) -> Value {
    let client = db.client().await;
    let sql = fingerprint_sql(&client).await;
    client.query_one(&sql, &[&table]).await.unwrap().get(0)
}

/// The parts (top-level keys) in which two fingerprints differ, each as
/// `key: was …, now …` (empty when equal).
pub fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let (Some(e), Some(a)) = (expected.as_object(), actual.as_object()) else {
        panic!("not fingerprints: {expected} / {actual}");
    };
    let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| e.get(*k) != a.get(*k))
        .map(|k| {
            format!(
                "{k}: was {}, now {}",
                e.get(k).unwrap_or(&Value::Null),
                a.get(k).unwrap_or(&Value::Null)
            )
        })
        .collect()
}
