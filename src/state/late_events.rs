//! Late events: events committed at a position that a reader had already passed as a final
//! gap. The gap-aware proof assumes positions are drawn inside the inserting transaction; a
//! store that reserves them earlier (Marten's Rich append mode, a cached sequence, an id
//! service) breaks it, and `gap_age` only narrows the window. So every gap passed is recorded
//! (`reproject.gaps`, read/ordering.rs) and re-checked here: by `reproject run` periodically,
//! by each rebuild after its catch-up, and by `reproject gaps`. An event found in a gap is
//! recorded once per projection whose tables miss it (`reproject.late_events`) until a partial
//! rebuild of its stream, or a full rebuild started after it was found, has swapped.
//!
//! Which gaps still matter for projection P: those of P's newest swapped full rebuild (its
//! tables are live), of the partial rebuilds swapped after it (their streams' rows), and those
//! the live runner passed after that swap. A gap of an older generation was read past by the
//! rebuild that replaced it: an event that filled it before that rebuild read there is in the
//! live tables, one that filled it later is in the newer rebuild's own gaps.

use crate::error::{Context, Result};
use crate::model::config::Config;
use crate::progress::{EventAt, FoundBy, Warning};
use crate::read::source::EventSource;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

/// One late event and a projection whose tables miss it.
#[derive(Debug, Clone, Serialize)]
pub struct LateEvent {
    /// Its position.
    pub position: i64,
    /// A projection whose tables miss it.
    pub projection: String,
    /// Its stream.
    pub stream: Option<String>,
    /// Its type.
    pub event_type: Option<String>,
    /// When it was found.
    pub found_at: DateTime<Utc>,
    /// Who found it: `run`, `run 7 (catch-up)`, `gaps`.
    pub found_by: String,
    /// When it was repaired.
    pub repaired_at: Option<DateTime<Utc>>,
    /// By what: `run 9 (--streams s3)`, `run 12`.
    pub repaired_by: Option<String>,
}

impl LateEvent {
    /// The loud report of a late event just found.
    pub fn describe(&self) -> String {
        self.warning(FoundBy::Gaps).to_string()
    }

    /// The warning about it, with the repair that fits who found it.
    pub fn warning(&self, found_by: FoundBy) -> Warning {
        Warning::LateEvent {
            late: EventAt {
                position: self.position,
                event_type: self.event_type.clone(),
                stream: self.stream.clone(),
            },
            projection: self.projection.clone(),
            found_by,
        }
    }
}

/// The gaps that still matter, per projection (see the module docs), as ranges for
/// [`EventSource::in_ranges_sql`] tagged with the projection; `$1` is a running rebuild
/// whose own gaps matter too (its tables are about to go live).
const RELEVANT_GAPS: &str = "\
    WITH full_swap AS ( \
      SELECT DISTINCT ON (p) p AS projection, r.id, coalesce(r.swapped_at, r.started_at) AS at \
      FROM reproject.runs r CROSS JOIN LATERAL unnest(r.projections) p \
      WHERE r.status = 'swapped' AND jsonb_typeof(r.options->'partial') IS DISTINCT FROM 'object' \
      ORDER BY p, coalesce(r.swapped_at, r.started_at) DESC, r.id DESC) \
    SELECT g.from_position AS reproject_from, g.to_position AS reproject_to, p AS reproject_tag \
    FROM reproject.gaps g CROSS JOIN LATERAL unnest(g.projections) p \
    LEFT JOIN full_swap f ON f.projection = p \
    LEFT JOIN reproject.runs r ON r.id = g.run_id \
    WHERE g.run_id = $1::bigint \
       OR (g.run_id IS NULL AND (f.at IS NULL OR g.skipped_at > f.at)) \
       OR g.run_id = f.id \
       OR (r.status = 'swapped' AND jsonb_typeof(r.options->'partial') = 'object' \
           AND (f.at IS NULL OR r.swapped_at > f.at))";

const COLUMNS: &str =
    "position, projection, stream, event_type, found_at, found_by, repaired_at, repaired_by";

fn from_row(r: &tokio_postgres::Row) -> LateEvent {
    LateEvent {
        position: r.get(0),
        projection: r.get(1),
        stream: r.get(2),
        event_type: r.get(3),
        found_at: r.get(4),
        found_by: r.get(5),
        repaired_at: r.get(6),
        repaired_by: r.get(7),
    }
}

/// Whether projection `name` of the config applies events of type `ty` (a projection the
/// config does not know, a Rust or external projection or set-based handlers: assume so).
fn handles(config: &Config, name: &str, ty: Option<&str>) -> bool {
    let Some(p) = config
        .projection_index(name)
        .map(|i| &config.projections[i])
    else {
        return true;
    };
    match (p.handlers(), ty) {
        (Some(h), Some(ty)) if !h.per_batch() => h.by_type().contains_key(ty),
        (Some(h), None) if !h.per_batch() => false,
        _ => true,
    }
}

/// Re-checks the gaps that still matter: first marks late events repaired by a full rebuild
/// that started after they were found (it read them), then records every event now found in a
/// gap, once per projection that handles its type, and returns the ones found this time.
pub async fn recheck(
    client: &Client,
    config: &Config,
    source: &EventSource,
    own_run: Option<i64>,
    found_by: &str,
) -> Result<Vec<LateEvent>> {
    client
        .execute(
            "UPDATE reproject.late_events l SET repaired_at = r.swapped_at, repaired_by = format('run %s', r.id) \
             FROM reproject.runs r \
             WHERE l.repaired_at IS NULL AND r.status = 'swapped' \
               AND l.projection = ANY (r.projections) AND jsonb_typeof(r.options->'partial') IS DISTINCT FROM 'object' \
               AND r.started_at > l.found_at",
            &[],
        )
        .await
        .context("cannot mark the late events that a rebuild has since read")?;
    let rows = client
        .query(&source.in_ranges_sql(RELEVANT_GAPS), &[&own_run])
        .await
        .with_context(|| {
            format!(
                "cannot look for events in the gaps passed in the positions of `{}`",
                source.table
            )
        })?;
    let mut found = Vec::new();
    for r in &rows {
        let (position, stream, ty, projection): (i64, Option<String>, Option<String>, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if !handles(config, &projection, ty.as_deref()) {
            continue;
        }
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO reproject.late_events (position, projection, stream, event_type, found_by) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
                ),
                &[&position, &projection, &stream, &ty, &found_by],
            )
            .await
            .context("cannot record a late event in reproject.late_events")?;
        if let Some(row) = row {
            found.push(from_row(&row));
        }
    }
    Ok(found)
}

/// The late events recorded (only those not repaired yet, unless `all`), by position.
pub async fn list(client: &Client, all: bool) -> Result<Vec<LateEvent>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reproject.late_events \
                 WHERE $1 OR repaired_at IS NULL ORDER BY position, projection"
            ),
            &[&all],
        )
        .await
        .context("cannot read reproject.late_events")?;
    Ok(rows.iter().map(from_row).collect())
}

/// How many gaps have been recorded as passed.
pub async fn gaps_passed(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM reproject.gaps", &[])
        .await
        .context("cannot count reproject.gaps")?
        .get(0))
}

/// Marks the late events of `projection` at `positions` repaired by `by`.
pub async fn mark_repaired(
    client: &Client,
    projection: &str,
    positions: &[i64],
    by: &str,
) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.late_events SET repaired_at = now(), repaired_by = $3 \
             WHERE projection = $1 AND position = ANY ($2) AND repaired_at IS NULL",
            &[&projection, &positions, &by],
        )
        .await
        .context("cannot mark late events repaired")?;
    Ok(())
}
