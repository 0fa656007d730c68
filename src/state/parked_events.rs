//! Parked events (`reproject.parked_events`, sql/026_parked_events.sql): an event on which a
//! group of projections kept live by `reproject run` failed with a handler error. Instead of
//! stopping (and failing on it again after every restart under a supervisor), the group waits
//! just before it while the runner serves the other groups, until an operator decides:
//! `skip` (the group's batch is applied without this event, in the transaction that moves the
//! checkpoint past it and marks the row acted on) or `retry` (after fixing the cause).
//!
//! A row is open until the runner acted on it (`acted_at`); at most one open row per event and
//! group (a unique index), so a decision is acted on exactly once.

use crate::error::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

/// What an operator decided for a parked event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Apply the group's events without this one.
    Skip,
    /// Apply it again (its cause was fixed).
    Retry,
}

impl Decision {
    /// The word stored in `decision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Skip => "skip",
            Decision::Retry => "retry",
        }
    }

    fn parse(s: &str) -> Option<Decision> {
        match s {
            "skip" => Some(Decision::Skip),
            "retry" => Some(Decision::Retry),
            _ => None,
        }
    }
}

/// One parked event, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedEvent {
    /// The row's id.
    pub id: i64,
    /// The group of projections that waits on it (connected by dependencies).
    pub projections: Vec<String>,
    /// The event's position.
    pub position: i64,
    /// Its stream.
    pub stream: Option<String>,
    /// Its type.
    pub event_type: Option<String>,
    /// The handler error (message and causes).
    pub error: String,
    /// The error's SQLSTATE, when the database raised it.
    pub sqlstate: Option<String>,
    /// When a runner first failed on it.
    pub first_seen_at: DateTime<Utc>,
    /// When a runner last failed on it.
    pub last_seen_at: DateTime<Utc>,
    /// Attempts that failed on it.
    pub times_seen: i32,
    /// `skip` or `retry`; None while pending.
    pub decision: Option<Decision>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// Why.
    pub reason: Option<String>,
    /// When the runner acted on the decision.
    pub acted_at: Option<DateTime<Utc>>,
    /// What came of it: `skipped`, `applied`, `failed again` (a new row is then open), or
    /// `overtaken` (a swap handed over tables past it).
    pub outcome: Option<String>,
}

impl ParkedEvent {
    /// `pending`, `skip decided`, `retry decided`, or the outcome once acted on.
    pub fn state(&self) -> String {
        match (&self.outcome, self.decision) {
            (Some(o), _) => o.clone(),
            (None, Some(d)) => format!("{} decided", d.as_str()),
            (None, None) => "pending".into(),
        }
    }

    /// `event at position 150 (type `added`, stream `s3`)`.
    pub fn what(&self) -> String {
        self.at().to_string()
    }

    /// The event, for reports.
    pub fn at(&self) -> crate::progress::EventAt {
        crate::progress::EventAt {
            position: self.position,
            event_type: self.event_type.clone(),
            stream: self.stream.clone(),
        }
    }

    /// What the live runner did about this event, decided `skip`: `the live runner skipped
    /// this event at position 150 for tally, big on 2026-12-07 19:40 UTC (reason: …, decided
    /// by oncall)`.
    pub fn skip_note(&self) -> String {
        let when = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        let done = match (&self.outcome, &self.acted_at, &self.decided_at) {
            (Some(o), Some(at), _) if o == "skipped" => format!(
                "skipped this event at position {} for {} on {}",
                self.position,
                self.projections.join(", "),
                when(at)
            ),
            (_, _, Some(at)) => format!(
                "was told on {} to skip this event at position {} for {}",
                when(at),
                self.position,
                self.projections.join(", ")
            ),
            _ => format!(
                "was told to skip this event at position {} for {}",
                self.position,
                self.projections.join(", ")
            ),
        };
        format!(
            "the live runner {done} (reason: {}, decided by {})",
            self.reason.as_deref().unwrap_or("none given"),
            self.decided_by.as_deref().unwrap_or("unknown")
        )
    }

    /// The commands that decide it, naming the group's first projection.
    pub fn commands(&self) -> String {
        crate::progress::decide_commands(
            self.projections.first().map(String::as_str),
            self.position,
        )
    }
}

const COLUMNS: &str = "id, projections, position, stream, event_type, error, sqlstate, \
    first_seen_at, last_seen_at, times_seen, decision, decided_by, decided_at, reason, acted_at, outcome";

fn from_row(r: &Row) -> ParkedEvent {
    let decision: Option<String> = r.get(10);
    ParkedEvent {
        id: r.get(0),
        projections: r.get(1),
        position: r.get(2),
        stream: r.get(3),
        event_type: r.get(4),
        error: r.get(5),
        sqlstate: r.get(6),
        first_seen_at: r.get(7),
        last_seen_at: r.get(8),
        times_seen: r.get(9),
        decision: decision.as_deref().and_then(Decision::parse),
        decided_by: r.get(11),
        decided_at: r.get(12),
        reason: r.get(13),
        acted_at: r.get(14),
        outcome: r.get(15),
    }
}

/// Whether the table exists (the commands that only read or decide never migrate).
pub async fn exists(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('reproject.parked_events') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot check for reproject.parked_events")?;
    Ok(row.get(0))
}

/// What a failed attempt knows about the event.
pub struct Failure<'a> {
    pub position: i64,
    pub stream: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub error: &'a str,
    pub sqlstate: Option<&'a str>,
}

/// Records that `group` failed on an event, in the transaction that commits the events before
/// it: a new open row, or one more attempt on the open row. A retry decided on it ends as
/// `failed again` and a new pending row opens.
pub async fn record(
    client: &impl GenericClient,
    group: &[String],
    f: &Failure<'_>,
) -> Result<ParkedEvent> {
    let context = "cannot record the parked event in reproject.parked_events";
    client
        .execute(
            "UPDATE reproject.parked_events SET acted_at = now(), outcome = 'failed again' \
             WHERE position = $1 AND projections = $2 AND acted_at IS NULL AND decision = 'retry'",
            &[&f.position, &group],
        )
        .await
        .context(context)?;
    let row = client
        .query_one(
            &format!(
                "INSERT INTO reproject.parked_events AS p (projections, position, stream, event_type, error, sqlstate) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (position, projections) WHERE acted_at IS NULL DO UPDATE SET \
                     times_seen = p.times_seen + 1, last_seen_at = now(), error = EXCLUDED.error, \
                     sqlstate = EXCLUDED.sqlstate \
                 RETURNING {COLUMNS}"
            ),
            &[&group, &f.position, &f.stream, &f.event_type, &f.error, &f.sqlstate],
        )
        .await
        .context(context)?;
    Ok(from_row(&row))
}

/// The open row of a group (the lowest position, if several), if any.
pub async fn open_for(
    client: &impl GenericClient,
    group: &[String],
) -> Result<Option<ParkedEvent>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM reproject.parked_events \
                 WHERE acted_at IS NULL AND projections && $1 ORDER BY position, id LIMIT 1"
            ),
            &[&group],
        )
        .await
        .context("cannot read reproject.parked_events")?;
    Ok(row.as_ref().map(from_row))
}

/// The rows about `projection` at `position`, newest first (the open one, if any, first).
pub async fn at(
    client: &impl GenericClient,
    projection: &str,
    position: i64,
) -> Result<Vec<ParkedEvent>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reproject.parked_events \
                 WHERE $1 = ANY (projections) AND position = $2 \
                 ORDER BY acted_at IS NULL DESC, id DESC"
            ),
            &[&projection, &position],
        )
        .await
        .context("cannot read reproject.parked_events")?;
    Ok(rows.iter().map(from_row).collect())
}

/// The newest row of any group at `position` that an operator decided to skip (acted on
/// first), if any; None also when the table does not exist yet.
pub async fn skipped(client: &impl GenericClient, position: i64) -> Result<Option<ParkedEvent>> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM reproject.parked_events \
                 WHERE position = $1 AND decision = 'skip' \
                 ORDER BY acted_at IS NULL, id DESC LIMIT 1"
            ),
            &[&position],
        )
        .await
        .context("cannot read reproject.parked_events")?;
    Ok(row.as_ref().map(from_row))
}

/// Every open row (and with `all`, the acted-on ones too), open first, by position.
pub async fn list(client: &impl GenericClient, all: bool) -> Result<Vec<ParkedEvent>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reproject.parked_events WHERE $1 OR acted_at IS NULL \
                 ORDER BY acted_at IS NULL DESC, position, id"
            ),
            &[&all],
        )
        .await
        .context("cannot read reproject.parked_events")?;
    Ok(rows.iter().map(from_row).collect())
}

/// Records a decision on open row `id`; None if it is decided or acted on already.
pub async fn decide(
    client: &impl GenericClient,
    id: i64,
    decision: Decision,
    by: &str,
    reason: Option<&str>,
) -> Result<Option<ParkedEvent>> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE reproject.parked_events SET decision = $2, decided_by = $3, decided_at = now(), reason = $4 \
                 WHERE id = $1 AND decision IS NULL AND acted_at IS NULL RETURNING {COLUMNS}"
            ),
            &[&id, &decision.as_str(), &by, &reason],
        )
        .await
        .context("cannot record the decision in reproject.parked_events")?;
    Ok(row.as_ref().map(from_row))
}

/// Marks open row `id`, decided `decision`, as acted on with `outcome`, in the runner's batch
/// transaction; false (the caller rolls back) if it is not so any more.
pub async fn act(
    client: &impl GenericClient,
    id: i64,
    decision: Decision,
    outcome: &str,
) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE reproject.parked_events SET acted_at = now(), outcome = $3 \
             WHERE id = $1 AND decision = $2 AND acted_at IS NULL",
            &[&id, &decision.as_str(), &outcome],
        )
        .await
        .context("cannot mark the parked event acted on")?;
    Ok(n == 1)
}

/// Closes open row `id` as `overtaken`: the group's checkpoints are past it (a swap handed over
/// tables that hold it).
pub async fn overtaken(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE reproject.parked_events SET acted_at = now(), outcome = 'overtaken' \
             WHERE id = $1 AND acted_at IS NULL",
            &[&id],
        )
        .await
        .context("cannot close the parked event")?;
    Ok(())
}
