//! How the library tells its caller what it is doing, and how the caller tells it to stop.
//! The library never prints: the binary implements [`Reporter`] with progress bars on a
//! terminal and log lines elsewhere; tests and library users can implement it as they like.

use std::sync::Arc;
use std::time::Duration;

/// Receives progress from the engine. Every method has a default that does nothing.
pub trait Reporter: Send + Sync {
    /// A step of the command begins (`cloning 2 tables`, `checking`, `swapping`).
    fn step(&self, _message: &str) {}
    /// Something the user should know that is not an error.
    fn warn(&self, _message: &str) {}
    /// A replay of `total` events (an estimate; catch-up may add some) begins.
    fn replay_started(&self, _label: &str, _total: u64) {}
    /// `done` events of the current replay have been applied and committed.
    fn replay_progress(&self, _done: u64) {}
    /// The current replay ended.
    fn replay_finished(&self) {}
    /// One more round of a wait that repeats (the swap asking again for its locks): the
    /// caller may collapse the rounds of one `key` into one updating line and a summary. By
    /// default each round is a warning, as before waits had their own event.
    fn waiting(&self, wait: &Waiting<'_>) {
        self.warn(wait.message)
    }
    /// The wait `key` is over. `summary` says how it went ("took the locks after 7 attempts
    /// over 12.3 s; blocked by ..."), or is `None` when it ended in an error, which says it.
    /// Only called for a wait that had at least one [`Reporter::waiting`] round.
    fn wait_over(&self, _key: &str, summary: Option<&str>) {
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
    /// This round in words: what was tried and what blocks it.
    pub message: &'a str,
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
