//! Streaming standbys and the swap.
//!
//! Every ACCESS EXCLUSIVE lock the swap takes is written to the WAL, and a hot standby
//! replays it: its readers of the table queue behind the replayed lock until the swap's
//! commit is replayed, and a reader that already holds the table is waited for only as long
//! as `max_standby_streaming_delay` allows, counted from when the standby *received* that WAL.
//! A standby that is behind (say, still replaying the bulk load of the rebuild) receives the
//! lock record with its grace period already spent and cancels its readers at once
//! ("canceling statement due to conflict with recovery"). So, before each lock attempt the
//! swap waits (bounded) until every streaming standby has replayed what the primary has
//! written: the lock record then arrives at a standby that is waiting for WAL, with its whole
//! grace period, and the standby waits for its readers instead of cancelling them. After the
//! commit it waits (bounded) for the standbys to replay the commit, so the stall their readers
//! saw is measured, reported and recorded (`reproject.runs.standbys`).
//!
//! Standbys are found in `pg_stat_replication` (physical walsenders only: a logical consumer
//! replays no locks). Cascaded standbys are not visible from the primary.

use crate::error::{Context, Result};
use crate::progress::{Cancel, Lagging, Operation, Reporter, Step, Warning};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How often the replay positions are read while waiting.
const POLL: Duration = Duration::from_millis(10);

/// After a standby that had to be waited for has caught up: the pause before checking that it
/// is still caught up (see [`before_lock`]).
const SETTLE: Duration = Duration::from_millis(200);

/// Physical standbys streaming from this server: name (`application_name`, else the client
/// address), bytes of WAL between `target` (an LSN, as text) and what the standby replayed
/// (NULL when the role may not see replay positions: `pg_monitor` or superuser can).
const BEHIND_SQL: &str = "SELECT coalesce(nullif(r.application_name, ''), host(r.client_addr), 'local') AS name,
        pg_wal_lsn_diff(coalesce($1::text::pg_lsn, pg_current_wal_flush_lsn()), r.replay_lsn)::bigint AS behind
   FROM pg_stat_replication r
  WHERE r.state = 'streaming'
    AND r.pid IN (SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND datid IS NULL)
  ORDER BY 1";

/// (standby, bytes behind `target`, or behind what the primary has flushed right now when
/// `target` is None; None when it cannot be seen).
async fn behind(client: &Client, target: Option<&str>) -> Result<Vec<(String, Option<i64>)>> {
    let rows = client
        .query(BEHIND_SQL, &[&target])
        .await
        .context("cannot read pg_stat_replication")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn current_lsn(client: &Client) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .context("cannot read the current WAL position")?
        .get(0))
}

/// What waiting for the standbys found.
struct Waited {
    /// Each standby: name, bytes behind when the wait began, ms until it had replayed the
    /// target (None: not within the limit, or its position cannot be seen).
    standbys: Vec<(String, Option<i64>, Option<u64>)>,
    waited: Duration,
}

impl Waited {
    fn all_caught_up(&self) -> bool {
        self.standbys.iter().all(|(_, _, ms)| ms.is_some())
    }

    /// Standbys whose replay position this role cannot see.
    fn unseen(&self) -> Vec<String> {
        self.standbys
            .iter()
            .filter(|(_, behind, _)| behind.is_none())
            .map(|(name, _, _)| name.clone())
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.standbys
                .iter()
                .map(|(name, behind, ms)| {
                    serde_json::json!({ "name": name, "behind_bytes": behind, "replayed_after_ms": ms })
                })
                .collect(),
        )
    }

    fn laggards(&self) -> Vec<Lagging> {
        self.standbys
            .iter()
            .filter_map(|(name, behind, ms)| match (behind, ms) {
                (Some(b), None) => Some(Lagging {
                    standby: name.clone(),
                    behind_bytes: *b,
                }),
                _ => None,
            })
            .collect()
    }
}

/// Waits until every streaming standby has replayed the WAL up to `target` (None: everything
/// the primary has flushed at the moment of each look), at most `limit` (or until `cancel`). A
/// standby whose position this role cannot see is not waited for.
async fn wait_for_replay(
    client: &Client,
    target: Option<&str>,
    limit: Duration,
    cancel: Option<&Cancel>,
) -> Result<Option<Waited>> {
    let started = Instant::now();
    let first = behind(client, target).await?;
    if first.is_empty() {
        return Ok(None);
    }
    let mut done: Vec<Option<u64>> = vec![None; first.len()];
    loop {
        let now = behind(client, target).await?;
        for (i, (name, _)) in first.iter().enumerate() {
            // A standby that disconnected is no longer waited for (its figure stays None).
            let replayed = now
                .iter()
                .find(|(n, _)| n == name)
                .is_some_and(|(_, b)| b.is_some_and(|b| b <= 0));
            if replayed && done[i].is_none() {
                done[i] = Some(started.elapsed().as_millis() as u64);
            }
        }
        let pending = first
            .iter()
            .zip(&done)
            .filter(|((name, b), d)| {
                d.is_none() && b.is_some() && now.iter().any(|(n, _)| n == name)
            })
            .count();
        if pending == 0 || started.elapsed() >= limit || cancel.is_some_and(|c| c.is_cancelled()) {
            break;
        }
        Cancel::sleep(cancel, POLL).await;
    }
    Ok(Some(Waited {
        standbys: first
            .into_iter()
            .zip(done)
            .map(|((name, b), d)| (name, b, d))
            .collect(),
        waited: started.elapsed(),
    }))
}

/// Before a lock attempt of a swap or rollback: waits, at most `limit`, until every streaming
/// standby has replayed everything written so far, so that the lock record reaches them with
/// their whole `max_standby_streaming_delay` (see the module's comment). Returns what it found,
/// for the lock attempt's record (None: no standby, or `limit` is zero). Never fails the swap:
/// a standby that does not catch up in time is reported and the swap goes on.
/// `first`: the first lock attempt of the swap; a standby it cannot see is reported then only,
/// not again before every attempt.
pub async fn before_lock(
    client: &Client,
    limit: Duration,
    reporter: &dyn Reporter,
    cancel: Option<&Cancel>,
    first: bool,
) -> Option<serde_json::Value> {
    if limit.is_zero() {
        return None;
    }
    // Caught up with the present, not with a position read when the wait began: a standby
    // counts the grace period of a record from when its replay last found nothing more to
    // replay and waited for WAL. Replaying at a small lag past an earlier position, it may not
    // have waited since it fell behind, and would still cancel its readers at once.
    //
    // Caught up once is not enough after a standby was far behind: it counts that grace period
    // from the last time its replay reached the newest WAL it had *received*, and WAL keeps
    // arriving on a busy primary. Having just replayed a backlog up to what the primary had
    // flushed at our look, it may still not have reached the newest chunk its receiver holds;
    // a lock record arriving then is replayed with the grace period measured from before the
    // backlog (seen: readers cancelled by a swap that had waited for the standby, right after
    // its replay resumed from a pause). So wait again, a moment later, for it to have replayed
    // everything flushed by then: a standby that catches up twice in a row is keeping up.
    let started = Instant::now();
    let mut waited = wait_for_replay(client, None, limit, cancel).await;
    if let Ok(Some(first)) = &waited {
        let was_behind = first
            .standbys
            .iter()
            .any(|(_, b, _)| b.is_some_and(|b| b > 0));
        if was_behind && first.all_caught_up() && started.elapsed() + SETTLE < limit {
            Cancel::sleep(cancel, SETTLE).await;
            let left = limit.saturating_sub(started.elapsed());
            if let Ok(Some(mut again)) = wait_for_replay(client, None, left, cancel).await {
                // The record keeps the first wait's figures (how far behind each standby was,
                // when it had caught up), unless one fell behind again; and the whole wait.
                if again.all_caught_up() && again.standbys.len() == first.standbys.len() {
                    again.standbys = first.standbys.clone();
                }
                again.waited = started.elapsed();
                waited = Ok(Some(again));
            }
        }
    }
    let waited = match waited {
        Ok(Some(w)) => w,
        Ok(None) => return None,
        Err(e) => {
            reporter.warn(&Warning::StandbysUnknown { error: e.plain() });
            return None;
        }
    };
    let unseen = waited.unseen();
    if !unseen.is_empty() && first {
        reporter.warn(&Warning::StandbysUnseen { standbys: unseen });
    }
    let laggards = waited.laggards();
    if !laggards.is_empty() {
        reporter.warn(&Warning::StandbysBehind {
            standbys: laggards,
            waited: waited.waited,
        });
    } else if waited.waited >= Duration::from_millis(500) {
        reporter.step(&Step::WaitedForStandbys {
            waited: waited.waited,
            standbys: waited.standbys.len(),
        });
    }
    Some(serde_json::json!({
        "action": "waited for standbys",
        "waited_ms": waited.waited.as_millis() as i64,
        "caught_up": waited.all_caught_up(),
        "standbys": waited.json(),
    }))
}

/// After a swap or rollback committed (and `confirm_durable` flushed its WAL): waits, at most
/// `limit`, for every streaming standby to replay the commit, then reports and records in
/// `reproject.runs.standbys` each standby, how far behind it was and when it had replayed it,
/// and the longest its readers of the tables could have been held up: from the lock (`hold`
/// before the commit) until the standby replayed the commit. Never fails: the exchange has
/// committed; a failure to measure is a warning.
pub async fn after_commit(
    client: &Client,
    run_id: i64,
    what: Operation,
    hold: Duration,
    limit: Duration,
    reporter: &dyn Reporter,
) {
    if limit.is_zero() {
        return;
    }
    let measured = async {
        let target = current_lsn(client).await?;
        let Some(waited) = wait_for_replay(client, Some(&target), limit, None).await? else {
            return Ok(());
        };
        let slowest = waited
            .standbys
            .iter()
            .filter_map(|(_, _, ms)| *ms)
            .max()
            .unwrap_or(0);
        let stall = hold.as_millis() as u64 + slowest;
        if waited.all_caught_up() {
            reporter.step(&Step::StandbysReplayed {
                standbys: waited.standbys.len(),
                after: what,
                slowest_ms: slowest,
                stall_ms: stall,
            });
        } else {
            let laggards = waited.laggards();
            if !laggards.is_empty() {
                reporter.warn(&Warning::StandbysBehindCommit {
                    standbys: laggards,
                    after: what,
                    waited: waited.waited,
                });
            }
            let unseen = waited.unseen();
            if !unseen.is_empty() {
                reporter.warn(&Warning::StandbysUnseenCommit {
                    standbys: unseen,
                    after: what,
                });
            }
        }
        let entry = serde_json::json!({
            "at": what.to_string(),
            "lock_hold_ms": hold.as_millis() as i64,
            "caught_up": waited.all_caught_up(),
            "stall_ms": waited.all_caught_up().then_some(stall),
            "standbys": waited.json(),
        });
        client
            .execute(
                "UPDATE reproject.runs SET standbys = coalesce(standbys, '[]'::jsonb) || jsonb_build_array($2::jsonb) WHERE id = $1",
                &[&run_id, &entry],
            )
            .await
            .context("cannot record the standbys' replay")?;
        Ok::<_, crate::error::Error>(())
    }
    .await;
    if let Err(e) = measured {
        reporter.warn(&Warning::StandbyReplayUnmeasured {
            after: what,
            error: e.plain(),
        });
    }
}
