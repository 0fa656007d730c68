//! What a running `reproject run` knows about itself, shared between the runner loop (which
//! writes it after each round) and what reports it: the `/metrics` and `/health` endpoint
//! (metrics_http.rs) and the periodic alive line (alive.rs). A plain mutex: it is held only
//! to copy a few numbers, never across an await.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// One group of projections (applied together, so its numbers hold for each of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupStats {
    pub projections: Vec<String>,
    /// Events applied (committed) since the runner started.
    pub applied: u64,
    /// Handler errors that stopped or parked the group.
    pub errors: u64,
    /// The live checkpoint.
    pub position: Option<i64>,
    /// When the last batch of the group committed (unix seconds).
    pub last_batch_unix: Option<f64>,
    /// Age in seconds of the oldest event past the checkpoint, when the events have a
    /// timestamp role; None otherwise (or when there is none).
    pub lag_seconds: Option<f64>,
    /// Why the group stopped, if it did.
    pub stopped: Option<String>,
    /// The parked event the group waits on (`event at position N (...): error`), if any.
    pub parked: Option<String>,
    /// Its position.
    pub parked_position: Option<i64>,
}

impl GroupStats {
    /// Events between the checkpoint and the head (0 when the head is unknown).
    pub fn lag_events(&self, head: Option<i64>) -> i64 {
        match (head, self.position) {
            (Some(h), Some(p)) => (h - p).max(0),
            (Some(h), None) => h.max(0),
            (None, _) => 0,
        }
    }
}

/// The runner as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// True while the runner applies events (false while it stands by or after it ended).
    pub up: bool,
    /// The newest event position the runner has seen (refreshed at most every second).
    pub head: Option<i64>,
    /// Rounds that failed with a transient database error (retried).
    pub database_errors: u64,
    pub groups: Vec<GroupStats>,
}

/// The snapshot, shared.
#[derive(Debug, Clone, Default)]
pub struct LiveStats(Arc<Mutex<Snapshot>>);

impl LiveStats {
    pub fn new(groups: Vec<Vec<String>>) -> LiveStats {
        let groups = groups
            .into_iter()
            .map(|projections| GroupStats {
                projections,
                ..GroupStats::default()
            })
            .collect();
        LiveStats(Arc::new(Mutex::new(Snapshot {
            groups,
            ..Snapshot::default()
        })))
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// Changes the snapshot in place.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.lock());
    }

    /// Group `i` committed a batch of `n` events.
    pub fn applied(&self, i: usize, n: i64) {
        self.update(|s| {
            if let Some(g) = s.groups.get_mut(i) {
                g.applied += n.max(0) as u64;
                g.last_batch_unix = Some(unix_now());
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A panic while holding it cannot leave the numbers half-written in a way that
        // matters more than losing the endpoint: keep serving them.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_events() {
        let g = GroupStats {
            position: Some(90),
            ..GroupStats::default()
        };
        assert_eq!(g.lag_events(Some(100)), 10);
        assert_eq!(g.lag_events(Some(80)), 0, "a checkpoint past a stale head");
        assert_eq!(g.lag_events(None), 0);
        let fresh = GroupStats::default();
        assert_eq!(fresh.lag_events(Some(7)), 7);
    }

    #[test]
    fn applied_counts_and_stamps() {
        let s = LiveStats::new(vec![vec!["a".into()], vec!["b".into()]]);
        s.applied(1, 5);
        s.applied(1, 3);
        let snap = s.snapshot();
        assert_eq!(snap.groups[0].applied, 0);
        assert_eq!(snap.groups[1].applied, 8);
        assert!(snap.groups[1].last_batch_unix.is_some());
    }
}
