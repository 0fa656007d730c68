//! How the library tells its caller what it is doing, and how the caller tells it to stop.
//! The library never prints: the binary implements [`Reporter`] with progress bars on a
//! terminal and log lines elsewhere; tests and library users can implement it as they like.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

/// A reporter that reports nothing.
pub struct Silent;
impl Reporter for Silent {}

/// A cancellation flag shared between the signal handler and the engine. The engine checks it
/// between batches, so a batch is either committed whole or not at all.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the flag: the engine stops after the current batch.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
