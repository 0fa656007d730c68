//! `reproject parked`, `reproject skip` and `reproject retry`: the operator's side of parked
//! events (state/parked_events.rs). A live runner whose group failed on an event waits before
//! it; these commands list such events and record a decision, which the runner polls for and
//! acts on (commands/run.rs): nothing here applies events or moves a checkpoint, so they work
//! the same whether a runner is up, standing by or stopped.

use crate::commands::Engine;
use crate::error::{Error, Result};
use crate::state::parked_events::{self, Decision, ParkedEvent};
use serde::Serialize;

/// What `reproject parked` lists.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedReport {
    /// Open parked events (pending or decided, not acted on yet), then with `--all` the ones
    /// acted on.
    pub events: Vec<ParkedEvent>,
}

/// `reproject parked [--all]`. Writes nothing.
pub async fn parked(engine: &Engine<'_>, all: bool) -> Result<ParkedReport> {
    let client = engine.db.get().await?;
    if !parked_events::exists(&**client).await? {
        return Ok(ParkedReport { events: Vec::new() });
    }
    Ok(ParkedReport {
        events: parked_events::list(&**client, all).await?,
    })
}

/// `reproject skip` / `reproject retry`: records `decision` on the open parked event of
/// `projection` at `position`. Refuses a projection the config does not have, and an event
/// that is not parked (never, or already decided or acted on), naming what is parked.
pub async fn decide(
    engine: &Engine<'_>,
    projection: &str,
    position: i64,
    decision: Decision,
    by: &str,
    reason: Option<&str>,
) -> Result<ParkedEvent> {
    let command = decision.as_str();
    if engine.config.projection_index(projection).is_none() {
        return Err(Error::config(format!(
            "cannot {command}: projection `{projection}` is not in {}",
            engine.config.path.display()
        ))
        .with_hint("name a projection of the config; `reproject parked` lists the parked events"));
    }
    let client = engine.db.get().await?;
    let rows = if parked_events::exists(&**client).await? {
        parked_events::at(&**client, projection, position).await?
    } else {
        Vec::new()
    };
    let Some(open) = rows.iter().find(|r| r.acted_at.is_none()) else {
        let why = match rows.first() {
            Some(last) => format!(
                " (it was, and is closed: {}{})",
                last.state(),
                last.decided_by
                    .as_deref()
                    .map(|b| format!(", decided by {b}"))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let pending: Vec<String> = if parked_events::exists(&**client).await? {
            parked_events::list(&**client, false)
                .await?
                .iter()
                .filter(|e| e.projections.iter().any(|p| p == projection))
                .map(|e| e.position.to_string())
                .collect()
        } else {
            Vec::new()
        };
        return Err(Error::config(format!(
            "cannot {command}: no event at position {position} is parked for `{projection}`{why}"
        ))
        .with_hint(if pending.is_empty() {
            format!("nothing is parked for `{projection}`; `reproject parked --all` lists every parked event")
        } else {
            format!(
                "parked for `{projection}`: position(s) {}; `reproject parked` lists them",
                pending.join(", ")
            )
        }));
    };
    if let Some(d) = open.decision {
        return Err(Error::config(format!(
            "cannot {command}: the parked {} of {} is already decided: {} by {} at {}",
            open.what(),
            open.projections.join(", "),
            d.as_str(),
            open.decided_by.as_deref().unwrap_or("?"),
            open.decided_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default()
        ))
        .with_hint("the runner acts on it at its next look (within seconds while it runs, else when it starts); a retry that fails again parks the event anew"));
    }
    match parked_events::decide(&**client, open.id, decision, by, reason).await? {
        Some(decided) => Ok(decided),
        None => Err(Error::config(format!(
            "cannot {command}: the parked {} was decided or acted on meanwhile",
            open.what()
        ))
        .with_hint("see `reproject parked --all`")),
    }
}
