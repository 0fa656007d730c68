//! `reproject gaps [--repair]`: re-checks every gap in the positions that a rebuild or the
//! live runner passed as final (state/late_events.rs), lists the late events found in them
//! that are not repaired yet, and with `--repair` repairs them: a partial rebuild of their
//! streams (`--streams`, pipeline/partial.rs) per projection that declares `stream_key`; for
//! the others it says what to run. Meant to be run or scheduled by an operator; the live
//! runner and each rebuild re-check too, but only this command repairs.

use crate::commands::rebuild::{rebuild, OutcomeStatus, RebuildOptions};
use crate::commands::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::partial::PartialRequest;
use crate::progress::{FoundBy, Step, Warning};
use crate::read::source::EventSource;
use crate::state::late_events::{self, LateEvent};
use crate::state::runs::RunStatus;
use serde::Serialize;
use std::collections::BTreeMap;

/// How to run [`gaps`].
#[derive(Debug, Clone, Default)]
pub struct GapsOptions {
    /// Repair the late events found (partial rebuilds of their streams).
    pub repair: bool,
}

/// What one repair did.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The projection repaired.
    pub projection: String,
    /// The streams rebuilt.
    pub streams: Vec<String>,
    /// The positions of the late events in them.
    pub positions: Vec<i64>,
    /// The rebuild run that repaired them, if it swapped.
    pub run_id: Option<i64>,
    /// Why it could not be repaired here, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `reproject gaps` found.
#[derive(Debug, Clone, Serialize)]
pub struct GapsReport {
    /// The event table.
    pub events_table: String,
    /// Gaps recorded as passed, in all.
    pub gaps_passed: i64,
    /// Late events found by this re-check.
    pub found_now: Vec<LateEvent>,
    /// The repairs made (`--repair`).
    pub repairs: Vec<Repair>,
    /// Late events not repaired (after the repairs).
    pub unrepaired: Vec<LateEvent>,
    /// What to run for each projection whose late events are not repaired.
    pub to_run: Vec<String>,
}

/// The command that repairs the late events of `projection` in `streams`: a partial rebuild
/// where the projection declares `stream_key`, else a full rebuild.
fn repair_command(engine: &Engine<'_>, projection: &str, streams: &[String]) -> String {
    let partial = engine
        .config
        .projection_index(projection)
        .map(|i| &engine.config.projections[i])
        .is_some_and(|p| p.stream_key.is_some() && p.command().is_none());
    if partial {
        format!(
            "reproject rebuild {projection} --streams {} --yes",
            streams.join(",")
        )
    } else {
        format!("reproject rebuild {projection} --yes")
    }
}

/// The unrepaired late events by projection: the streams and the positions.
fn by_projection(events: &[LateEvent]) -> BTreeMap<String, (Vec<String>, Vec<i64>)> {
    let mut map: BTreeMap<String, (Vec<String>, Vec<i64>)> = BTreeMap::new();
    for e in events {
        let entry = map.entry(e.projection.clone()).or_default();
        let stream = e.stream.clone().unwrap_or_default();
        if !entry.0.contains(&stream) {
            entry.0.push(stream);
        }
        entry.1.push(e.position);
    }
    map
}

/// `reproject gaps`. Returns the report; the binary exits 5 ([`ErrorKind::LateEvents`]) when
/// late events are left unrepaired.
pub async fn gaps(engine: &Engine<'_>, opts: &GapsOptions) -> Result<GapsReport> {
    let resolved = engine.validate().await?;
    let mut conn = engine.db.dedicated().await?;
    crate::state::migrate::migrate(&mut conn).await?;
    let source = EventSource::new(&engine.config.events, &resolved);
    let found_now = late_events::recheck(&conn, engine.config, &source, None, "gaps").await?;
    for e in &found_now {
        engine.reporter.warn(&e.warning(FoundBy::Gaps));
    }
    let mut repairs = Vec::new();
    if opts.repair {
        let pending = late_events::list(&conn, false).await?;
        for (projection, (streams, positions)) in by_projection(&pending) {
            let known = engine.config.projection_index(&projection).is_some();
            let command = repair_command(engine, &projection, &streams);
            if !known || !command.contains("--streams") {
                // A full rebuild is the operator's decision: it can take long.
                continue;
            }
            engine.reporter.step(&Step::RepairingStreams {
                projection: projection.clone(),
                streams: streams.clone(),
                positions: positions.clone(),
            });
            let outcome = rebuild(
                engine,
                &RebuildOptions {
                    projections: vec![projection.clone()],
                    reason: Some(format!(
                        "repair of late events at positions {}",
                        positions
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    partial: Some(PartialRequest::Streams(streams.clone())),
                    ..RebuildOptions::default()
                },
            )
            .await;
            let mut repair = Repair {
                projection: projection.clone(),
                streams: streams.clone(),
                positions: positions.clone(),
                run_id: None,
                error: None,
            };
            match outcome {
                Ok(o) if matches!(o.status, OutcomeStatus::Run(RunStatus::Swapped)) => {
                    let by = format!(
                        "run {} (--streams {})",
                        o.run_id.unwrap_or_default(),
                        streams.join(",")
                    );
                    late_events::mark_repaired(&conn, &projection, &positions, &by).await?;
                    repair.run_id = o.run_id;
                }
                Ok(o) => {
                    repair.run_id = o.run_id;
                    repair.error = Some(format!("the rebuild ended {}", o.status.as_str()));
                }
                Err(e) if e.kind == ErrorKind::Interrupted => return Err(e),
                Err(e) => repair.error = Some(e.plain().replace('\n', " ")),
            }
            if let Some(error) = &repair.error {
                engine.reporter.warn(&Warning::RepairFailed {
                    projection: projection.clone(),
                    error: error.clone(),
                });
            }
            repairs.push(repair);
        }
    }
    let unrepaired = late_events::list(&conn, false).await?;
    let to_run = by_projection(&unrepaired)
        .iter()
        .map(|(projection, (streams, _))| repair_command(engine, projection, streams))
        .collect();
    Ok(GapsReport {
        events_table: resolved.events_table.to_string(),
        gaps_passed: late_events::gaps_passed(&conn).await?,
        found_now,
        repairs,
        unrepaired,
        to_run,
    })
}

/// The error the binary ends with when late events are left unrepaired (exit 6).
pub fn unrepaired_error(report: &GapsReport) -> Option<Error> {
    if report.unrepaired.is_empty() {
        return None;
    }
    Some(
        Error::new(
            ErrorKind::LateEvents,
            format!(
                "{} late event(s) not repaired: the tables of {} miss them",
                report.unrepaired.len(),
                by_projection(&report.unrepaired)
                    .keys()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_hint(format!(
            "run `reproject gaps --repair`, or: {}",
            report.to_run.join("; ")
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn late(position: i64, projection: &str, stream: &str) -> LateEvent {
        LateEvent {
            position,
            projection: projection.into(),
            stream: Some(stream.into()),
            event_type: Some("added".into()),
            found_at: chrono::Utc::now(),
            found_by: "run".into(),
            repaired_at: None,
            repaired_by: None,
        }
    }

    #[test]
    fn late_events_are_grouped_by_projection_with_each_stream_once() {
        let map = by_projection(&[
            late(5, "tally", "s3"),
            late(9, "tally", "s3"),
            late(7, "tally", "s1"),
            late(5, "other", "s3"),
        ]);
        assert_eq!(
            map["tally"],
            (vec!["s3".to_string(), "s1".to_string()], vec![5, 9, 7])
        );
        assert_eq!(map["other"], (vec!["s3".to_string()], vec![5]));
    }

    #[test]
    fn unrepaired_late_events_are_exit_5_with_what_to_run() {
        let mut report = GapsReport {
            events_table: "public.events".into(),
            gaps_passed: 1,
            found_now: Vec::new(),
            repairs: Vec::new(),
            unrepaired: Vec::new(),
            to_run: Vec::new(),
        };
        assert!(unrepaired_error(&report).is_none(), "none left: exit 0");
        report.unrepaired.push(late(5, "tally", "s3"));
        report.to_run.push("reproject rebuild tally --yes".into());
        let err = unrepaired_error(&report).expect("an error");
        assert_eq!(err.kind.exit_code(), 6);
        assert!(
            err.message.contains("the tables of `tally` miss them"),
            "{err}"
        );
        assert!(
            err.hint
                .as_deref()
                .unwrap()
                .contains("reproject rebuild tally --yes"),
            "{err}"
        );
    }

    #[test]
    fn a_late_event_is_described_with_position_stream_type_and_projection() {
        assert!(late(101, "tally", "s3").describe().starts_with(
            "late event: position 101 (stream `s3`, type `added`) was committed after `tally`"
        ));
    }
}
