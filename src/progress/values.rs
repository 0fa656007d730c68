//! The small values that [`Step`](super::Step) and [`Warning`](super::Warning) carry, each
//! with the words it has in the messages.

use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Where reading stands: the last event applied (none yet: the start), with its transaction
/// id when the events are read in `xid8` order. Shown as `position 42`,
/// `transaction 1234 position 42` or `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct At {
    /// `xid8` ordering: the transaction id of the last applied event.
    pub transaction: Option<u64>,
    /// The position of the last applied event (the position orderings: every position up to
    /// it is applied). None: nothing applied yet.
    pub position: Option<i64>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.transaction, self.position) {
            (_, None) => f.write_str("start"),
            (None, Some(p)) => write!(f, "position {p}"),
            (Some(tx), Some(p)) => write!(f, "transaction {tx} position {p}"),
        }
    }
}

/// How far a replay reads: `position 42`, or `transactions below 1234` (`xid8` ordering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UpTo {
    /// Every position up to and including this one.
    Position(i64),
    /// The events of every transaction below this id.
    TransactionsBelow(u64),
}

impl fmt::Display for UpTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpTo::Position(p) => write!(f, "position {p}"),
            UpTo::TransactionsBelow(tx) => write!(f, "transactions below {tx}"),
        }
    }
}

/// What committed: the swap of a rebuild or a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// The swap of a rebuild (`rebuild`, `swap`).
    Swap,
    /// A rollback (`rollback`).
    Rollback,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Swap => "swap",
            Operation::Rollback => "rollback",
        })
    }
}

/// An event of the store, named for messages: `event at position 42 (type `x`, stream `s`)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventAt {
    /// Its position.
    pub position: i64,
    /// Its type (None: NULL).
    pub event_type: Option<String>,
    /// Its stream (None: NULL).
    pub stream: Option<String>,
}

impl fmt::Display for EventAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event at position {} (type `{}`, stream `{}`)",
            self.position,
            self.event_type.as_deref().unwrap_or("NULL"),
            self.stream.as_deref().unwrap_or("NULL")
        )
    }
}

/// What an operator decided for a parked event of the live runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// `reproject skip`: go on without the event.
    Skip,
    /// `reproject retry`: apply it again.
    Retry,
}

/// The commands that decide a parked event, naming `projection` (the group's first).
pub(crate) fn decide_commands(projection: Option<&str>, position: i64) -> String {
    let p = projection.unwrap_or("PROJECTION");
    format!(
        "`reproject skip {p} {position} --reason \"...\"` applies the rest without it; after fixing the cause, `reproject retry {p} {position}` applies it again"
    )
}

/// Which output of an external projector a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Output {
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// Who found a late event, which says how it is repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FoundBy {
    /// `reproject gaps`, which lists it (and repairs it with `--repair`).
    Gaps,
    /// A rebuild's catch-up: repair after its swap.
    Rebuild,
    /// The live runner.
    Runner,
}

/// What the swap did to a session that blocked its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Signal {
    /// `pg_cancel_backend` (`--cancel-blockers-after`).
    Cancelled,
    /// `pg_terminate_backend` (`--terminate-blockers-after`).
    Terminated,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Cancelled => "cancelled",
            Signal::Terminated => "terminated",
        })
    }
}

/// How a partial rebuild took the rows of the streams it does not rebuild from the live
/// tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartialCopy {
    /// `--streams`: at the live position the live checkpoints record; the replay brings them
    /// to the swap position.
    AtLivePosition(i64),
    /// `--streams` without a live position: an early copy, compared with the live rows again
    /// under the swap's locks.
    Early,
    /// `--from-position`/`--from-time`: the rows as they were at that position.
    FromPosition,
}

/// A standby that had not replayed the primary's WAL in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lagging {
    /// Its `application_name`.
    pub standby: String,
    /// How many bytes of WAL it was behind when the wait began.
    pub behind_bytes: i64,
}

/// `` `a`, `b` ``.
pub(crate) fn ticked<T: fmt::Display>(names: &[T]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn joined<T: fmt::Display>(items: &[T], by: &str) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(by)
}

pub(crate) fn laggards(standbys: &[Lagging]) -> String {
    standbys
        .iter()
        .map(|l| format!("`{}` ({} bytes behind)", l.standby, l.behind_bytes))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sessions that blocked a lock: at most three spelled out, the rest counted.
pub(crate) fn blockers(sessions: &[String]) -> String {
    let mut text = sessions
        .iter()
        .take(3)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if sessions.len() > 3 {
        text.push_str(&format!(" and {} more", sessions.len() - 3));
    }
    text
}

/// Durations go into the JSON lines as whole milliseconds.
pub(crate) fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// `position 42`, or `the start` before the first.
pub(crate) fn position_or_start(p: Option<i64>) -> String {
    p.map_or("the start".into(), |p| format!("position {p}"))
}
