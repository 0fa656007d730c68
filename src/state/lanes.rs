//! The stream lanes of a run's bulk replay (`reproject.lanes`, pipeline/lanes.rs): the plan,
//! each per-event lane's cursor, and each lane's done mark, all set in the lanes' own
//! transactions.

use crate::error::{Context, Error, Result};
use tokio_postgres::GenericClient;

/// A run's split of the events after `after` up to `upto` into `lanes` stream lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanePlan {
    /// 1, 2, … within the run.
    pub plan: i32,
    /// How many lanes the events are split into.
    pub lanes: i32,
    /// The checkpoint the plan starts after (None: before the first event).
    pub after: Option<i64>,
    /// The last position of the plan (inclusive).
    pub upto: i64,
    /// The events of the whole plan, counted when it was made.
    pub events: i64,
    /// The lanes not done yet, in order.
    pub pending: Vec<PendingLane>,
}

/// A lane not done yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLane {
    /// 0 .. lanes - 1.
    pub lane: i32,
    /// A per-event lane's last applied event (None: none yet, it starts at the plan's start).
    pub position: Option<i64>,
    /// The events a per-event lane applied so far.
    pub events: i64,
}

/// The newest plan of `run` that starts at the checkpoint `after`, if any: a plan whose
/// lanes were applied in part (or in full, when the run stopped before moving the
/// checkpoint). Once the checkpoint has moved past a plan, no plan starts there any more.
pub async fn at_checkpoint(
    client: &impl GenericClient,
    run: i64,
    after: Option<i64>,
) -> Result<Option<LanePlan>> {
    let rows = client
        .query(
            "WITH newest AS (SELECT max(plan) AS plan FROM reproject.lanes \
                              WHERE run_id = $1 AND after_position IS NOT DISTINCT FROM $2) \
             SELECT l.plan, l.lanes, l.upto_position, l.plan_events, l.lane, l.position, \
                    coalesce(l.events, 0), l.done_at IS NOT NULL \
               FROM reproject.lanes l JOIN newest USING (plan) \
              WHERE l.run_id = $1 ORDER BY l.lane",
            &[&run, &after],
        )
        .await
        .context("cannot read the run's stream lanes")?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(LanePlan {
        plan: first.get(0),
        lanes: first.get(1),
        after,
        upto: first.get(2),
        events: first.get(3),
        pending: rows
            .iter()
            .filter(|r| !r.get::<_, bool>(7))
            .map(|r| PendingLane {
                lane: r.get(4),
                position: r.get(5),
                events: r.get(6),
            })
            .collect(),
    }))
}

/// Records a new plan of `lanes` lanes for the events after `after` up to `upto`, none of
/// them applied. Its own statement: committed before any lane runs.
pub async fn create(
    client: &impl GenericClient,
    run: i64,
    after: Option<i64>,
    upto: i64,
    lanes: i32,
    events: i64,
) -> Result<LanePlan> {
    let rows = client
        .query(
            "WITH next AS (SELECT coalesce(max(plan), 0) + 1 AS plan FROM reproject.lanes WHERE run_id = $1) \
             INSERT INTO reproject.lanes (run_id, plan, lane, lanes, after_position, upto_position, plan_events) \
             SELECT $1, next.plan, lane, $4, $2, $3, $5 FROM next, generate_series(0, $4 - 1) AS lane \
             RETURNING plan",
            &[&run, &after, &upto, &lanes, &events],
        )
        .await
        .context("cannot record the run's stream lanes")?;
    let Some(row) = rows.first() else {
        return Err(Error::runtime(format!(
            "run {run}: recording {lanes} stream lane(s) wrote none"
        )));
    };
    Ok(LanePlan {
        plan: row.get(0),
        lanes,
        after,
        upto,
        events,
        pending: (0..lanes)
            .map(|lane| PendingLane {
                lane,
                position: None,
                events: 0,
            })
            .collect(),
    })
}

/// Marks a set-based `lane` of `plan` applied, inside the lane's transaction. A lane already
/// marked (by another process, which the run's locks should have made impossible) is an
/// error, so the caller rolls back and the lane is never applied twice.
pub async fn mark_done(client: &impl GenericClient, run: i64, plan: i32, lane: i32) -> Result<()> {
    let n = client
        .execute(
            "UPDATE reproject.lanes SET done_at = now() \
              WHERE run_id = $1 AND plan = $2 AND lane = $3 AND done_at IS NULL",
            &[&run, &plan, &lane],
        )
        .await
        .context("cannot mark the stream lane applied")?;
    if n != 1 {
        return Err(moved(run, plan, lane));
    }
    Ok(())
}

/// Moves a per-event lane's cursor from `old` to `new` and adds `events`, inside the batch's
/// transaction, with a compare-and-set on the old cursor; `done` also marks the lane done.
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    client: &impl GenericClient,
    run: i64,
    plan: i32,
    lane: i32,
    old: Option<i64>,
    new: i64,
    events: i64,
    done: bool,
) -> Result<()> {
    let n = client
        .execute(
            "UPDATE reproject.lanes SET position = $5, events = coalesce(events, 0) + $6, \
                    done_at = CASE WHEN $7 THEN now() END \
              WHERE run_id = $1 AND plan = $2 AND lane = $3 AND done_at IS NULL \
                AND position IS NOT DISTINCT FROM $4",
            &[&run, &plan, &lane, &old, &new, &events, &done],
        )
        .await
        .context("cannot advance the stream lane")?;
    if n != 1 {
        return Err(moved(run, plan, lane));
    }
    Ok(())
}

fn moved(run: i64, plan: i32, lane: i32) -> Error {
    Error::runtime(format!(
        "run {run}: stream lane {} of plan {plan} moved under us; another process is applying events to the same tables",
        lane + 1
    ))
}

/// How many lanes of `plan` are not done yet (read in the transaction that moves the
/// checkpoint past the plan, which must find none).
pub async fn pending(client: &impl GenericClient, run: i64, plan: i32) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM reproject.lanes WHERE run_id = $1 AND plan = $2 AND done_at IS NULL",
            &[&run, &plan],
        )
        .await
        .context("cannot read the run's stream lanes")?;
    Ok(row.get(0))
}

/// The events the per-event lanes of `plan` counted (set-based lanes count none).
pub async fn counted(client: &impl GenericClient, run: i64, plan: i32) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(events), 0)::bigint FROM reproject.lanes WHERE run_id = $1 AND plan = $2",
            &[&run, &plan],
        )
        .await
        .context("cannot read the run's stream lanes")?;
    Ok(row.get(0))
}
