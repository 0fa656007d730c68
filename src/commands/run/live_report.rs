//! After each round of the runner: copy where the groups stand into the shared [`LiveStats`],
//! refresh the head (and the lag in seconds) when someone will read them, and print the alive
//! line when it is due.

use super::alive::Alive;
use super::live_stats::LiveStats;
use super::Group;
use crate::commands::Engine;
use crate::progress::Step;
use crate::read::source::EventSource;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The head is read at most this often for the metrics endpoint: a scrape costs nothing, and
/// a busy runner does not query the head after every batch.
const HEAD_EVERY: Duration = Duration::from_secs(1);

#[allow(clippy::too_many_arguments)]
pub(super) async fn after_round(
    conn: &Client,
    source: &EventSource,
    groups: &[Group],
    stats: &LiveStats,
    alive: &mut Alive,
    head_at: &mut Option<Instant>,
    serving: bool,
    engine: &Engine<'_>,
) {
    stats.update(|s| {
        for (g, st) in groups.iter().zip(s.groups.iter_mut()) {
            st.position = g.position;
            if g.error.is_some() && st.stopped.is_none() {
                st.errors += 1;
            }
            st.stopped.clone_from(&g.error);
            st.parked = g
                .parked
                .as_ref()
                .map(|p| format!("{}: {}", p.event.what(), p.event.error));
            st.parked_position = g.parked.as_ref().map(|p| p.event.position);
        }
    });
    let line_due = alive.due();
    let head_due = serving && head_at.is_none_or(|t| t.elapsed() >= HEAD_EVERY);
    if line_due || head_due {
        *head_at = Some(Instant::now());
        // A failed read leaves the last numbers: the next round meets the same database error
        // and handles it (retry, reconnect); reporting must not stop the runner.
        if let Ok(head) = source.head(conn).await {
            let mut ages = Vec::with_capacity(groups.len());
            for g in groups {
                ages.push(source.age_after(conn, g.position).await.ok().flatten());
            }
            stats.update(|s| {
                s.head = head;
                for (st, age) in s.groups.iter_mut().zip(ages) {
                    // Caught up (no event after the checkpoint): no lag, when timestamps exist.
                    st.lag_seconds =
                        age.map(|a| a.max(0.0))
                            .or(source_has_time(source, st.position, head));
                }
            });
        }
    }
    if line_due {
        engine.reporter.step(&Step::RunnerAlive {
            line: alive.line(&stats.snapshot()),
        });
    }
}

/// With a timestamp role and nothing past the checkpoint, the lag in seconds is 0.
fn source_has_time(source: &EventSource, position: Option<i64>, head: Option<i64>) -> Option<f64> {
    (source.has_timestamp() && head.is_none_or(|h| position.is_some_and(|p| p >= h))).then_some(0.0)
}
