//! How the library tells its caller what it is doing, and how the caller tells it to stop.
//! The library never prints: the binary implements [`Reporter`] with progress bars on a
//! terminal and log lines elsewhere; tests and library users can implement it as they like.

use std::sync::Arc;
use std::time::Duration;

mod steps;
mod values;
mod warnings;

pub use steps::Step;
pub(crate) use values::decide_commands;
pub use values::{
    At, Decision, EventAt, FoundBy, Lagging, Operation, Output, PartialCopy, Signal, UpTo,
};
pub use warnings::Warning;

/// Receives progress from the engine. Every method has a default that does nothing.
///
/// Steps and warnings are typed: match on the [`Step`] or [`Warning`] variant (with a `_`
/// arm: new ones may come) and read its fields; `to_string()` gives the line the binary
/// prints.
pub trait Reporter: Send + Sync {
    /// A step of the command begins ([`Step::Cloning`], [`Step::RunningChecks`],
    /// [`Step::Swapping`]).
    fn step(&self, _step: &Step) {}
    /// Something the user should know that is not an error.
    fn warn(&self, _warning: &Warning) {}
    /// A replay of `total` events (an estimate; catch-up may add some) begins.
    fn replay_started(&self, _label: &str, _total: u64) {}
    /// `done` events of the current replay have been applied and committed.
    fn replay_progress(&self, _done: u64) {}
    /// The current replay ended.
    fn replay_finished(&self) {}
    /// One more round of a wait that repeats (the swap asking again for its locks): the
    /// caller may collapse the rounds of one `key` into one updating line and a summary. By
    /// default each round is a warning (its [`Waiting::reason`]), as before waits had their
    /// own event.
    fn waiting(&self, wait: &Waiting<'_>) {
        self.warn(wait.reason)
    }
    /// The wait `key` is over. `summary` says how it went ([`Warning::LocksTaken`],
    /// [`Warning::OpenTransactionsEnded`]), or is `None` when it ended in an error, which
    /// says it. Only called for a wait that had at least one [`Reporter::waiting`] round.
    fn wait_over(&self, _key: &str, summary: Option<&Warning>) {
        if let Some(summary) = summary {
            self.warn(summary)
        }
    }
}

/// One round of a repeated wait, for [`Reporter::waiting`].
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    /// Names the wait: rounds with the same key are the same wait (`lock tally`).
    pub key: &'a str,
    /// How many rounds so far, this one included (1-based).
    pub attempt: u32,
    /// Since the wait began.
    pub elapsed: Duration,
    /// This round: what was tried and what blocks it ([`Warning::LockTimedOut`],
    /// [`Warning::HoldingAtGap`]).
    pub reason: &'a Warning,
}

/// The variant name an event serializes with (its `event` tag).
fn event_name<T: serde::Serialize>(event: &T) -> String {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(map)) => map
            .get("event")
            .and_then(|e| e.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// A reporter that reports nothing.
pub struct Silent;
impl Reporter for Silent {}

/// A cancellation token shared between the signal handler, the poller of `reproject cancel`
/// requests and the engine. The engine stops between batches, so a batch is either committed
/// whole or not at all; a wait (for a lock, a window, new events) ends as soon as it is set.
#[derive(Clone)]
pub struct Cancel(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Cancel {
    /// A token that is not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the token: the engine stops after the current batch.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
    /// Whether the token is set.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
    /// Sleeps `pause`, or less: until the token is set. For loops that must look at the
    /// database again after a pause anyway; they check [`Cancel::is_cancelled`] next.
    pub async fn sleep(cancel: Option<&Cancel>, pause: std::time::Duration) {
        match cancel {
            Some(cancel) => {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            None => tokio::time::sleep(pause).await,
        }
    }
    /// Completes once the token is set (at once if it is).
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|set| *set).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_say_what_the_binary_always_printed() {
        let cloning = Step::Cloning {
            run_id: 7,
            tables: 2,
            projections: vec!["tally".into(), "summary".into()],
        };
        assert_eq!(
            cloning.to_string(),
            "run 7: cloning 2 table(s) of tally, summary"
        );
        assert_eq!(cloning.event(), "cloning");
        let replaying = Step::Replaying {
            events: 300,
            up_to: UpTo::Position(300),
            tables: vec!["tally_rebuild".into()],
        };
        assert_eq!(
            replaying.to_string(),
            "replaying 300 event(s) up to position 300 into `tally_rebuild`"
        );
        let lanes = Step::ReplayingInLanes {
            lanes: 4,
            plan: 1,
            left: Some(2),
            at_once: 2,
            up_to: At {
                transaction: Some(812),
                position: Some(40),
            },
        };
        assert_eq!(
            lanes.to_string(),
            "replaying in 4 stream lane(s) (2 left of plan 1), 2 at a time (each lane: the events of the streams that hash to it, up to transaction 812 position 40)"
        );
        assert_eq!(Step::RunningChecks.to_string(), "running health checks");
        assert_eq!(Step::RunningChecks.event(), "running_checks");
        assert_eq!(
            Step::PartialSeeded {
                rebuild: "partial rebuild of 1 stream(s): s3".into(),
                copied: 12,
                copy: PartialCopy::Early,
            }
            .to_string(),
            "partial rebuild of 1 stream(s): s3; copied 12 row(s) that are not rebuilt from the live tables (an early copy: it is compared with the live rows again under the swap's locks)"
        );
    }

    #[test]
    fn warnings_say_what_the_binary_always_printed() {
        let timed_out = Warning::LockTimedOut {
            tables: vec!["tally".into()],
            attempt: 3,
            timeout: Duration::from_millis(250),
            blockers: (1..=5).map(|i| format!("pid {i}")).collect(),
        };
        assert_eq!(
            timed_out.to_string(),
            "could not lock `tally` (attempt 3 timed out after 250 ms); blocked by pid 1; pid 2; pid 3 and 2 more, retrying"
        );
        assert_eq!(timed_out.event(), "lock_timed_out");
        assert_eq!(
            Warning::LocksTaken {
                tables: vec!["tally".into(), "tally_rebuild".into()],
                attempts: 4,
                took: Duration::from_millis(2049),
                blockers: vec![],
            }
            .to_string(),
            "took the locks on `tally`, `tally_rebuild` after 4 attempts over 2.0 s; no blocker could be identified"
        );
        let late = EventAt {
            position: 101,
            event_type: None,
            stream: Some("s3".into()),
        };
        assert_eq!(
            Warning::LateEvent {
                late: late.clone(),
                projection: "tally".into(),
                found_by: FoundBy::Runner,
            }
            .to_string(),
            "late event: position 101 (stream `s3`, type `NULL`) was committed after `tally` had passed its position as a final gap, so its tables miss it; recorded in reproject.late_events; repair: `reproject gaps --repair`"
        );
        assert_eq!(
            Warning::EventParked {
                projections: vec!["tally".into()],
                parked: late,
                error: "boom".into(),
                runner_stops: false,
            }
            .to_string(),
            "parked tally at the event at position 101 (type `NULL`, stream `s3`): boom; they wait for a decision (the other projections go on): `reproject skip tally 101 --reason \"...\"` applies the rest without it; after fixing the cause, `reproject retry tally 101` applies it again"
        );
        assert_eq!(
            Warning::DurabilityUnconfirmed {
                after: Operation::Rollback,
                error: "gone".into(),
            }
            .to_string(),
            "the rollback committed, but its durability could not be confirmed: gone"
        );
    }

    /// The JSON log's `event` and `data` come from the serialization: the tag is the
    /// variant's name, durations are whole milliseconds under a `_ms` name.
    #[test]
    fn events_serialize_with_their_name_and_fields() {
        let value = serde_json::to_value(Warning::TailRetry {
            pending: 12,
            max_tail_events: 10,
            held: Duration::from_millis(1500),
            retry: 1,
            retries: 5,
        })
        .unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "event": "tail_retry", "pending": 12, "max_tail_events": 10,
                "held_ms": 1500, "retry": 1, "retries": 5,
            })
        );
        let value = serde_json::to_value(Step::HandoverSet {
            projection: "p".into(),
            table: "cp".into(),
            at: At {
                transaction: None,
                position: Some(9),
            },
        })
        .unwrap();
        assert_eq!(value["event"], "handover_set");
        assert_eq!(value["at"]["position"], 9);
    }
}
