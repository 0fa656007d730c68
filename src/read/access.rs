//! How the server serves each read of the events in reading order, for `plan`: the plan
//! (EXPLAIN) of the query a rebuild actually sends, and the index that would serve it.
//!
//! Why: a read repeated per batch (`ORDER BY … LIMIT n` past the checkpoint) that no index
//! serves scans and sorts every event left in its range each time, so the rebuild time grows
//! with events × batches. Nothing else tells the user; the fix is one index, built
//! concurrently without stopping the application, so `plan` names it.

use crate::error::{Context, Result};
use crate::read::source::{refs, Bound, Cursor, EventSource};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

/// One read of a rebuild and how the server would serve it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRead {
    /// Which read (`bulk replay`, `catch-up rounds`, …).
    pub read: String,
    /// Whether it runs once per batch (else once for its whole range).
    pub per_batch: bool,
    /// The plan's nodes down to the scans, outermost first (`Limit → Sort → Seq Scan on events`).
    pub access_path: String,
    /// Whether an index gives the reading order (no full sort in the plan).
    pub ordered_by_index: bool,
}

/// The nodes of an EXPLAIN (FORMAT JSON) plan, outermost first, as `Node on relation using
/// index`; and whether a full sort is among them.
pub fn describe_plan(plan: &Value) -> (String, bool) {
    fn walk(node: &Value, out: &mut Vec<String>, sorted: &mut bool) {
        let kind = node["Node Type"].as_str().unwrap_or("?");
        // An incremental sort only orders rows that share the index's leading key (one
        // transaction's events): the index serves the order.
        if kind == "Sort" {
            *sorted = true;
        }
        let mut text = kind.to_string();
        if let Some(index) = node["Index Name"].as_str() {
            text.push_str(&format!(" using {index}"));
        }
        if let Some(rel) = node["Relation Name"].as_str() {
            text.push_str(&format!(" on {rel}"));
        }
        out.push(text);
        if let Some(children) = node["Plans"].as_array() {
            let mut inner = Vec::new();
            for child in children {
                let mut part = Vec::new();
                walk(child, &mut part, sorted);
                inner.push(part.join(" → "));
            }
            match inner.len() {
                0 => {}
                1 => out.push(inner.remove(0)),
                _ => out.push(format!("[{}]", inner.join(", "))),
            }
        }
    }
    let mut out = Vec::new();
    let mut sorted = false;
    walk(&plan[0]["Plan"], &mut out, &mut sorted);
    (out.join(" → "), sorted)
}

/// EXPLAINs `sql` with `params` and describes its plan.
async fn explain(
    client: &impl GenericClient,
    source: &EventSource,
    read: &str,
    per_batch: bool,
    sql: &str,
    params: &crate::read::source::Params,
) -> Result<PlannedRead> {
    let row = client
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &refs(params))
        .await
        .with_context(|| format!("cannot explain the {read} read of `{}`", source.table))?;
    let plan: Value = row.get(0);
    let (access_path, sorted) = describe_plan(&plan);
    Ok(PlannedRead {
        read: read.to_string(),
        per_batch,
        access_path,
        ordered_by_index: !sorted,
    })
}

/// The reads of a rebuild: the bulk replay (`one_pass`: read with one ordered cursor, else a
/// query per batch of `bulk_batch` events) and the catch-up rounds (and `reproject run`, when
/// `runner`), each a query per batch of `batch_size` events after a checkpoint near the head.
pub async fn reads(
    client: &impl GenericClient,
    source: &EventSource,
    one_pass: bool,
    bulk_batch: i64,
    batch_size: i64,
) -> Result<Vec<PlannedRead>> {
    let Some(head) = source.head(client).await? else {
        return Ok(Vec::new());
    };
    let (start, bound, near_head) = match source.tx.as_deref() {
        Some(tx) => {
            // The cut and a checkpoint in the newest transaction: a catch-up reads the few
            // events after it.
            let sql = format!(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, max({tx})::text FROM {}",
                source.from
            );
            let row = client.query_one(&sql, &[]).await.with_context(|| {
                format!("cannot read the transaction ids of `{}`", source.table)
            })?;
            let parse = |s: Option<String>| s.and_then(|s| s.parse::<u64>().ok());
            let newest = parse(row.get(1));
            // Only the plan's shape matters here: a cut held back below the newest transaction
            // (a transaction open anywhere in the cluster) would make the catch-up range empty,
            // and an empty range plans as a constant `Result` that names no table.
            let cut = parse(row.get(0))
                .unwrap_or(u64::MAX)
                .max(newest.map_or(0, |n| n.saturating_add(1)));
            (
                Cursor::default(),
                Bound::BelowTx(cut),
                Cursor {
                    tx: newest,
                    position: Some(head.saturating_sub(batch_size)),
                },
            )
        }
        None => (
            Cursor::default(),
            Bound::UpTo(head),
            Cursor::at(Some(head.saturating_sub(batch_size))),
        ),
    };
    let mut out = Vec::new();
    let (sql, mut params) = source.ordered(&start, &bound);
    out.push(if one_pass {
        explain(client, source, "bulk replay", false, &sql, &params).await?
    } else {
        let limited = format!("{sql} LIMIT ${}::bigint", params.len() + 1);
        params.push(Box::new(bulk_batch));
        explain(client, source, "bulk replay", true, &limited, &params).await?
    });
    let (sql, mut params) = source.ordered(&near_head, &bound);
    let limited = format!("{sql} LIMIT ${}::bigint", params.len() + 1);
    params.push(Box::new(batch_size));
    let read = if source.tx.is_some() {
        "catch-up rounds"
    } else {
        "catch-up rounds and `reproject run`"
    };
    out.push(explain(client, source, read, true, &limited, &params).await?);
    Ok(out)
}

/// The statements that create an index in reading order on each of `tables` (the event
/// table, or each leaf partition of a partitioned one: CONCURRENTLY cannot build a
/// partitioned index), built without stopping writers: the same expressions the reads order
/// by, so the planner matches it.
pub fn order_index(source: &EventSource, tables: &[String]) -> Vec<String> {
    let keys: Vec<&str> = source
        .tx
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(source.position.as_str()))
        .collect();
    tables
        .iter()
        .map(|t| format!("CREATE INDEX CONCURRENTLY ON {t} ({})", keys.join(", ")))
        .collect()
}

/// The tables an index in reading order goes on (already quoted): the leaf partitions of a
/// partitioned event table, else the table itself.
pub async fn index_tables(
    client: &impl GenericClient,
    source: &EventSource,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT relid::regclass::text FROM pg_partition_tree($1::text::regclass) WHERE isleaf AND relid <> $1::text::regclass",
            &[&source.table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the partitions of `{}`", source.table))?;
    Ok(if rows.is_empty() {
        vec![source.table.quoted()]
    } else {
        rows.iter().map(|r| r.get(0)).collect()
    })
}

/// Of `tables` (from [`index_tables`]), those a plan in `reads` scans: a partition the filter
/// prunes (Marten's and Emmett's archived partitions under `is_archived = false`) is never
/// read, so it needs no index. All of them when the plans name none (a plan that scans the
/// parent by another name, say).
pub fn scanned(tables: &[String], reads: &[&PlannedRead]) -> Vec<String> {
    let scans = |table: &str| {
        let name = table.rsplit('.').next().unwrap_or(table).trim_matches('"');
        let needle = format!(" on {name}");
        reads.iter().any(|r| {
            r.access_path.match_indices(&needle).any(|(i, _)| {
                r.access_path[i + needle.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| matches!(c, ',' | ']' | ' '))
            })
        })
    };
    let found: Vec<String> = tables.iter().filter(|t| scans(t)).cloned().collect();
    if found.is_empty() {
        tables.to_vec()
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sort_in_the_plan_means_no_index_serves_the_order() {
        let sorted = json!([{"Plan": {"Node Type": "Limit", "Plans": [
            {"Node Type": "Sort", "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "events"}]}]}}]);
        assert_eq!(
            describe_plan(&sorted),
            ("Limit → Sort → Seq Scan on events".to_string(), true)
        );
        let indexed = json!([{"Plan": {"Node Type": "Limit", "Plans": [
            {"Node Type": "Index Scan", "Index Name": "events_tx_pos", "Relation Name": "events"}]}}]);
        assert_eq!(
            describe_plan(&indexed),
            (
                "Limit → Index Scan using events_tx_pos on events".to_string(),
                false
            )
        );
    }

    #[test]
    fn partitions_merged_in_order_and_incremental_sorts_count_as_served() {
        let merged = json!([{"Plan": {"Node Type": "Merge Append", "Plans": [
            {"Node Type": "Index Scan", "Index Name": "a_idx", "Relation Name": "a"},
            {"Node Type": "Incremental Sort", "Plans": [
                {"Node Type": "Index Scan", "Index Name": "b_idx", "Relation Name": "b"}]}]}}]);
        let (path, sorted) = describe_plan(&merged);
        assert!(!sorted, "{path}");
        assert_eq!(
            path,
            "Merge Append → [Index Scan using a_idx on a, Incremental Sort → Index Scan using b_idx on b]"
        );
    }

    #[test]
    fn only_the_partitions_a_plan_scans_need_an_index() {
        let read = PlannedRead {
            read: "catch-up rounds".into(),
            per_batch: true,
            access_path: "Limit → Sort → Seq Scan on emt_messages_global_active".into(),
            ordered_by_index: false,
        };
        let tables = vec![
            "emt_messages_global_active".to_string(),
            "emt_messages_global_archived".to_string(),
            "public.\"emt_messages_global\"".to_string(),
        ];
        assert_eq!(
            scanned(&tables, &[&read]),
            vec!["emt_messages_global_active".to_string()],
            "the pruned archived partition needs none; a prefix is no match"
        );
        let other = PlannedRead {
            access_path: "Seq Scan on events".into(),
            ..read.clone()
        };
        assert_eq!(scanned(&tables, &[&other]), tables, "none named: all");
    }
}
