//! The Prometheus text exposition format (version 0.0.4) of a runner's [`Snapshot`], and its
//! health answer. Pure functions: metrics_http.rs serves them.

use super::live_stats::Snapshot;
use std::fmt::Write;

/// The `/metrics` body: one series per projection (a group's numbers hold for each of its
/// projections, which are applied together), names prefixed `reproject_`, with HELP and TYPE.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let per_projection =
        |out: &mut String,
         name: &str,
         kind: &str,
         help: &str,
         value: &dyn Fn(&super::live_stats::GroupStats) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for g in &s.groups {
                let Some(v) = value(g) else { continue };
                for p in &g.projections {
                    let _ = writeln!(out, "{name}{{projection=\"{}\"}} {}", label(p), number(v));
                }
            }
        };
    let _ = writeln!(
        out,
        "# HELP reproject_runner_up 1 while the runner applies events, 0 while it stands by."
    );
    let _ = writeln!(out, "# TYPE reproject_runner_up gauge");
    let _ = writeln!(out, "reproject_runner_up {}", u8::from(s.up));
    let _ = writeln!(
        out,
        "# HELP reproject_database_errors_total Runner rounds that failed with a transient database error and were retried."
    );
    let _ = writeln!(out, "# TYPE reproject_database_errors_total counter");
    let _ = writeln!(out, "reproject_database_errors_total {}", s.database_errors);
    if let Some(head) = s.head {
        let _ = writeln!(
            out,
            "# HELP reproject_head_position The newest event position the runner has seen."
        );
        let _ = writeln!(out, "# TYPE reproject_head_position gauge");
        let _ = writeln!(out, "reproject_head_position {head}");
    }
    per_projection(
        &mut out,
        "reproject_events_applied_total",
        "counter",
        "Events applied and committed since the runner started.",
        &|g| Some(g.applied as f64),
    );
    per_projection(
        &mut out,
        "reproject_errors_total",
        "counter",
        "Handler errors that stopped or parked the projection since the runner started.",
        &|g| Some(g.errors as f64),
    );
    per_projection(
        &mut out,
        "reproject_checkpoint_position",
        "gauge",
        "The position of the last event applied to the live tables.",
        &|g| g.position.map(|p| p as f64),
    );
    per_projection(
        &mut out,
        "reproject_lag_events",
        "gauge",
        "Events between the checkpoint and the head.",
        &|g| Some(g.lag_events(s.head) as f64),
    );
    if s.groups.iter().any(|g| g.lag_seconds.is_some()) {
        per_projection(
            &mut out,
            "reproject_lag_seconds",
            "gauge",
            "Age of the oldest event not applied yet (0 when caught up).",
            &|g| g.lag_seconds,
        );
    }
    per_projection(
        &mut out,
        "reproject_last_batch_timestamp_seconds",
        "gauge",
        "Unix time when the last batch committed.",
        &|g| g.last_batch_unix,
    );
    per_projection(
        &mut out,
        "reproject_parked_events",
        "gauge",
        "Events the projection waits on, parked after a handler error until `reproject skip` or `retry` (0 or 1).",
        &|g| Some(if g.parked.is_some() { 1.0 } else { 0.0 }),
    );
    per_projection(
        &mut out,
        "reproject_projection_up",
        "gauge",
        "1 while the projection is applied, 0 once an error stopped or parked it.",
        &|g| {
            Some(if g.stopped.is_none() && g.parked.is_none() && s.up {
                1.0
            } else {
                0.0
            })
        },
    );
    out
}

/// The `/health` answer: 200 `ok` while every projection runs, 503 naming the stopped and
/// parked ones (or saying the runner is not applying events) otherwise.
pub fn health(s: &Snapshot) -> (u16, String) {
    let stopped: Vec<String> = s
        .groups
        .iter()
        .filter_map(|g| {
            let names = g.projections.join(", ");
            match (&g.stopped, &g.parked) {
                (Some(why), _) => Some(format!("stopped: {names}: {why}\n")),
                (None, Some(what)) => Some(format!("parked: {names}: {what}\n")),
                (None, None) => None,
            }
        })
        .collect();
    if !stopped.is_empty() {
        return (503, stopped.concat());
    }
    if !s.up {
        return (
            503,
            "not applying events (starting, standing by or stopping)\n".into(),
        );
    }
    (200, "ok\n".into())
}

/// A label value escaped as the format requires (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::live_stats::GroupStats;
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            up: true,
            head: Some(120),
            database_errors: 2,
            groups: vec![
                GroupStats {
                    projections: vec!["tally".into(), "big".into()],
                    applied: 100,
                    position: Some(100),
                    last_batch_unix: Some(1_700_000_000.5),
                    ..GroupStats::default()
                },
                GroupStats {
                    projections: vec!["odd\"name".into()],
                    errors: 1,
                    stopped: Some("handler failed at position 7".into()),
                    ..GroupStats::default()
                },
            ],
        }
    }

    #[test]
    fn every_projection_has_its_series() {
        let text = render(&snapshot());
        assert!(text.contains("reproject_runner_up 1\n"), "{text}");
        assert!(text.contains("reproject_events_applied_total{projection=\"tally\"} 100\n"));
        assert!(text.contains("reproject_events_applied_total{projection=\"big\"} 100\n"));
        assert!(text.contains("reproject_lag_events{projection=\"big\"} 20\n"));
        assert!(text.contains("reproject_lag_events{projection=\"odd\\\"name\"} 120\n"));
        assert!(text.contains("reproject_errors_total{projection=\"odd\\\"name\"} 1\n"));
        assert!(text.contains("reproject_projection_up{projection=\"odd\\\"name\"} 0\n"));
        assert!(text.contains("reproject_parked_events{projection=\"tally\"} 0\n"));
        assert!(text.contains(
            "reproject_last_batch_timestamp_seconds{projection=\"tally\"} 1700000000.500\n"
        ));
        assert!(text.contains("# TYPE reproject_events_applied_total counter\n"));
        // No checkpoint yet: no sample rather than a made-up one.
        assert!(!text.contains("reproject_checkpoint_position{projection=\"odd"));
        // No timestamp role: the lag in seconds is omitted, not reported as 0.
        assert!(!text.contains("reproject_lag_seconds"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("reproject_"), "{line}");
        }
    }

    #[test]
    fn health_names_the_stopped() {
        let (code, body) = health(&snapshot());
        assert_eq!(code, 503);
        assert!(
            body.contains("odd\"name: handler failed at position 7"),
            "{body}"
        );
        let mut s = snapshot();
        s.groups.truncate(1);
        assert_eq!(health(&s), (200, "ok\n".into()));
        s.groups[0].parked = Some("event at position 101 (type `added`, stream `s1`): boom".into());
        let (code, body) = health(&s);
        assert_eq!(code, 503);
        assert_eq!(
            body,
            "parked: tally, big: event at position 101 (type `added`, stream `s1`): boom\n"
        );
        assert!(render(&s).contains("reproject_parked_events{projection=\"big\"} 1\n"));
        assert!(render(&s).contains("reproject_projection_up{projection=\"big\"} 0\n"));
        s.groups[0].parked = None;
        s.up = false;
        assert_eq!(health(&s).0, 503);
    }
}
