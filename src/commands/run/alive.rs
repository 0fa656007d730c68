//! The periodic alive line of `reproject run` (`--status-every`): a runner that says nothing
//! while idle looks the same in a log as one that hangs, so it says where each group stands,
//! how far behind the head it is and how fast it went since the last line.

use super::live_stats::Snapshot;
use std::time::{Duration, Instant};

pub struct Alive {
    every: Duration,
    last: Instant,
    /// Events applied per group at the last line.
    applied: Vec<u64>,
}

impl Alive {
    pub fn new(every: Duration) -> Alive {
        Alive {
            every,
            last: Instant::now(),
            applied: Vec::new(),
        }
    }

    /// True when the next line is due (the runner then refreshes the head first).
    pub fn due(&self) -> bool {
        !self.every.is_zero() && self.last.elapsed() >= self.every
    }

    /// The line, and the start of the next interval.
    pub fn line(&mut self, s: &Snapshot) -> String {
        let secs = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        let line = format_line(s, &self.applied, secs);
        self.applied = s.groups.iter().map(|g| g.applied).collect();
        line
    }
}

/// `alive: a → b at 120, lag 3 events, 41.5 events/s; c stopped at 7; d parked at 9 (...)`.
fn format_line(s: &Snapshot, before: &[u64], secs: f64) -> String {
    let groups: Vec<String> = s
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let at = g.position.map_or("none".to_string(), |p| p.to_string());
            let names = g.projections.join(" → ");
            if g.stopped.is_some() {
                return format!("{names} stopped at {at}");
            }
            if let Some(p) = g.parked_position {
                return format!(
                    "{names} parked at {at} (event {p} waits for `reproject skip` or `retry`)"
                );
            }
            let rate =
                (g.applied - before.get(i).copied().unwrap_or(0).min(g.applied)) as f64 / secs;
            let mut part = format!("{names} at {at}, lag {} events", g.lag_events(s.head));
            if let Some(l) = g.lag_seconds {
                part.push_str(&format!(" ({l:.1}s)"));
            }
            part.push_str(&format!(", {rate:.1} events/s"));
            part
        })
        .collect();
    format!("alive: {}", groups.join("; "))
}

#[cfg(test)]
mod tests {
    use super::super::live_stats::GroupStats;
    use super::*;

    #[test]
    fn says_position_lag_and_rate_per_group() {
        let s = Snapshot {
            up: true,
            head: Some(150),
            database_errors: 0,
            groups: vec![
                GroupStats {
                    projections: vec!["a".into(), "b".into()],
                    applied: 300,
                    position: Some(140),
                    ..GroupStats::default()
                },
                GroupStats {
                    projections: vec!["c".into()],
                    position: Some(7),
                    stopped: Some("boom".into()),
                    ..GroupStats::default()
                },
                GroupStats {
                    projections: vec!["d".into()],
                    position: Some(9),
                    parked: Some("event at position 10 ...".into()),
                    parked_position: Some(10),
                    ..GroupStats::default()
                },
            ],
        };
        assert_eq!(
            format_line(&s, &[100], 10.0),
            "alive: a → b at 140, lag 10 events, 20.0 events/s; c stopped at 7; \
             d parked at 9 (event 10 waits for `reproject skip` or `retry`)"
        );
    }

    #[test]
    fn never_due_when_off() {
        assert!(!Alive::new(Duration::ZERO).due());
        assert!(Alive::new(Duration::from_nanos(1)).due());
    }
}
