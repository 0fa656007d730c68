//! The stream lanes of a run's bulk replay (`reproject.lanes`, pipeline/lanes.rs): the plan,
//! each per-event lane's cursor, and each lane's done mark, all set in the lanes' own
//! transactions. In `xid8` mode every cursor is a (transaction id, position) pair, stored as
//! the run's checkpoint is (migration 028); in the position modes the transaction ids are NULL.

use crate::error::{Context, Error, Result};
use crate::read::source::{Bound, Cursor};
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
    /// `xid8` mode: the transaction id of the checkpoint the plan starts after.
    pub after_tx: Option<u64>,
    /// The last position of the plan (inclusive); in `xid8` mode the position of its last
    /// event in (transaction id, position) order.
    pub upto: i64,
    /// `xid8` mode: the transaction id of the plan's last event.
    pub upto_tx: Option<u64>,
    /// The events of the whole plan, counted when it was made.
    pub events: i64,
    /// The lanes not done yet, in order.
    pub pending: Vec<PendingLane>,
}

impl LanePlan {
    /// The checkpoint the plan starts after.
    pub fn after_cursor(&self) -> Cursor {
        Cursor {
            tx: self.after_tx,
            position: self.after,
        }
    }

    /// The plan's last event: where the checkpoint goes once every lane is done.
    pub fn upto_cursor(&self) -> Cursor {
        Cursor {
            tx: self.upto_tx,
            position: Some(self.upto),
        }
    }

    /// The bound that reads exactly the plan's events after its start. In `xid8` mode: the
    /// transactions up to the last event's. Its transaction ended before the plan was made (it
    /// was below the cut), so these rows are final, and the events of that transaction after
    /// the plan's last one are none (it is the last that passes the filter).
    pub fn bound(&self) -> Bound {
        match self.upto_tx {
            None => Bound::UpTo(self.upto),
            Some(tx) => Bound::BelowTx(tx.saturating_add(1)),
        }
    }
}

/// A lane not done yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLane {
    /// 0 .. lanes - 1.
    pub lane: i32,
    /// A per-event lane's last applied event (None: none yet, it starts at the plan's start).
    pub position: Option<i64>,
    /// `xid8` mode: the transaction id of that event.
    pub tx: Option<u64>,
    /// The events a per-event lane applied so far.
    pub events: i64,
}

impl PendingLane {
    /// Where the lane stands: its last applied event, or the plan's start.
    pub fn cursor(&self, plan: &LanePlan) -> Cursor {
        match self.position {
            Some(_) => Cursor {
                tx: self.tx,
                position: self.position,
            },
            None => plan.after_cursor(),
        }
    }
}

/// An xid8 as text (how it crosses the wire: the driver has no xid8 type) to a number.
fn parse_tx(text: Option<String>) -> Result<Option<u64>> {
    text.map(|t| {
        t.parse::<u64>()
            .map_err(|_| Error::runtime(format!("unreadable stream lane transaction id `{t}`")))
    })
    .transpose()
}

/// The newest plan of `run` that starts at the checkpoint `after`, if any: a plan whose
/// lanes were applied in part (or in full, when the run stopped before moving the
/// checkpoint). Once the checkpoint has moved past a plan, no plan starts there any more.
///
/// The transaction id columns are read through `to_jsonb` so that `reproject status`, which
/// does not migrate, also reads a state schema from before they were added (migration 028).
pub async fn at_checkpoint(
    client: &impl GenericClient,
    run: i64,
    after: &Cursor,
) -> Result<Option<LanePlan>> {
    let after_tx = after.tx.map(|t| t.to_string());
    let rows = client
        .query(
            "WITH newest AS (SELECT max(plan) AS plan FROM reproject.lanes l \
                              WHERE run_id = $1 AND after_position IS NOT DISTINCT FROM $2 \
                                AND to_jsonb(l) ->> 'after_transaction_id' IS NOT DISTINCT FROM $3::text) \
             SELECT l.plan, l.lanes, l.upto_position, l.plan_events, l.lane, l.position, \
                    coalesce(l.events, 0), l.done_at IS NOT NULL, \
                    to_jsonb(l) ->> 'upto_transaction_id', to_jsonb(l) ->> 'transaction_id' \
               FROM reproject.lanes l JOIN newest USING (plan) \
              WHERE l.run_id = $1 ORDER BY l.lane",
            &[&run, &after.position, &after_tx],
        )
        .await
        .context("cannot read the run's stream lanes")?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut pending = Vec::new();
    for r in rows.iter().filter(|r| !r.get::<_, bool>(7)) {
        pending.push(PendingLane {
            lane: r.get(4),
            position: r.get(5),
            tx: parse_tx(r.get(9))?,
            events: r.get(6),
        });
    }
    Ok(Some(LanePlan {
        plan: first.get(0),
        lanes: first.get(1),
        after: after.position,
        after_tx: after.tx,
        upto: first.get(2),
        upto_tx: parse_tx(first.get(8))?,
        events: first.get(3),
        pending,
    }))
}

/// Records a new plan of `lanes` lanes for the events after `after` up to `upto` (a cursor
/// with a position), none of them applied. Its own statement: committed before any lane runs.
pub async fn create(
    client: &impl GenericClient,
    run: i64,
    after: &Cursor,
    upto: &Cursor,
    lanes: i32,
    events: i64,
) -> Result<LanePlan> {
    let Some(upto_position) = upto.position else {
        return Err(Error::runtime(format!(
            "run {run}: a plan of stream lanes needs the position of its last event"
        )));
    };
    let after_tx = after.tx.map(|t| t.to_string());
    let upto_tx = upto.tx.map(|t| t.to_string());
    let rows = client
        .query(
            "WITH next AS (SELECT coalesce(max(plan), 0) + 1 AS plan FROM reproject.lanes WHERE run_id = $1) \
             INSERT INTO reproject.lanes (run_id, plan, lane, lanes, after_position, upto_position, plan_events, \
                                          after_transaction_id, upto_transaction_id) \
             SELECT $1, next.plan, lane, $4, $2, $3, $5, $6::text::xid8, $7::text::xid8 \
               FROM next, generate_series(0, $4 - 1) AS lane \
             RETURNING plan",
            &[&run, &after.position, &upto_position, &lanes, &events, &after_tx, &upto_tx],
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
        after: after.position,
        after_tx: after.tx,
        upto: upto_position,
        upto_tx: upto.tx,
        events,
        pending: (0..lanes)
            .map(|lane| PendingLane {
                lane,
                position: None,
                tx: None,
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
/// transaction, with a compare-and-set on the old cursor (the pair, in `xid8` mode); `done`
/// also marks the lane done.
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    client: &impl GenericClient,
    run: i64,
    plan: i32,
    lane: i32,
    old: &Cursor,
    new: &Cursor,
    events: i64,
    done: bool,
) -> Result<()> {
    let (old_tx, new_tx) = (old.tx.map(|t| t.to_string()), new.tx.map(|t| t.to_string()));
    let n = client
        .execute(
            "UPDATE reproject.lanes SET position = $5, transaction_id = $9::text::xid8, \
                    events = coalesce(events, 0) + $6, done_at = CASE WHEN $7 THEN now() END \
              WHERE run_id = $1 AND plan = $2 AND lane = $3 AND done_at IS NULL \
                AND position IS NOT DISTINCT FROM $4 \
                AND transaction_id IS NOT DISTINCT FROM $8::text::xid8",
            &[
                &run,
                &plan,
                &lane,
                &old.position,
                &new.position,
                &events,
                &done,
                &old_tx,
                &new_tx,
            ],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(after: Option<i64>, after_tx: Option<u64>, upto_tx: Option<u64>) -> LanePlan {
        LanePlan {
            plan: 1,
            lanes: 2,
            after,
            after_tx,
            upto: 40,
            upto_tx,
            events: 10,
            pending: Vec::new(),
        }
    }

    #[test]
    fn a_position_plan_reads_up_to_its_last_position() {
        let p = plan(Some(7), None, None);
        assert_eq!(p.bound(), Bound::UpTo(40));
        assert_eq!(p.after_cursor(), Cursor::at(Some(7)));
        assert_eq!(p.upto_cursor(), Cursor::at(Some(40)));
    }

    #[test]
    fn an_xid8_plan_reads_the_transactions_up_to_its_last_events() {
        let p = plan(Some(50), Some(700), Some(705));
        assert_eq!(
            p.bound(),
            Bound::BelowTx(706),
            "the last event's own transaction is in the plan"
        );
        assert_eq!(
            p.upto_cursor(),
            Cursor {
                tx: Some(705),
                position: Some(40)
            },
            "a lower position in a later transaction"
        );
        let (upto, after) = (p.upto_cursor(), p.after_cursor());
        assert!((upto.tx, upto.position) > (after.tx, after.position));
    }

    #[test]
    fn a_lane_without_a_cursor_starts_at_the_plan_start() {
        let p = plan(Some(50), Some(700), Some(705));
        let fresh = PendingLane {
            lane: 0,
            position: None,
            tx: None,
            events: 0,
        };
        assert_eq!(fresh.cursor(&p), p.after_cursor());
        let part_way = PendingLane {
            lane: 1,
            position: Some(12),
            tx: Some(703),
            events: 4,
        };
        assert_eq!(
            part_way.cursor(&p),
            Cursor {
                tx: Some(703),
                position: Some(12)
            }
        );
    }
}
