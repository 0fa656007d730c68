//! What a confirmation prompt says: the database, the projections and tables, the events a
//! rebuild replays, the run a swap or rollback acts on. An on-call engineer answering `y` at
//! 3 a.m. must see what they agree to, not only "swap?".
//!
//! The questions are built only when a prompt is shown (a terminal, no `--yes`), from the same
//! read-only reports `plan` and `status` print.

use super::print::thousands;
use reproject::commands::{self, Engine, PlanReport, StatusReport};
use reproject::error::Result;

/// The rebuild's question. The plan is `plan`'s: whatever it refuses, the rebuild would
/// refuse too, so its error is returned before anything is asked.
pub async fn rebuild(
    engine: &Engine<'_>,
    projections: &[String],
    resume: bool,
    partial: bool,
) -> Result<String> {
    let plan = commands::plan(engine, projections).await?;
    Ok(rebuild_text(&plan, resume, partial))
}

fn rebuild_text(plan: &PlanReport, resume: bool, partial: bool) -> String {
    let mut q = format!("rebuild on {}:\n", plan.database);
    for p in &plan.projections {
        for t in &p.tables {
            q.push_str(&format!(
                "  projection `{}`: table `{}` ({} rows), rebuilt as `{}`\n",
                p.name,
                t.live,
                thousands(t.rows),
                t.rebuild
            ));
        }
    }
    let events = thousands(plan.events_to_replay);
    let range = match (plan.first_position, plan.last_position) {
        (Some(a), Some(b)) => format!(" (positions {a}..{b})"),
        _ => String::new(),
    };
    q.push_str(&if resume {
        format!("  events: continues the unfinished run, at most {events} events{range}\n")
    } else if partial {
        format!("  events: a partial rebuild, at most {events} events{range}\n")
    } else {
        format!("  events to replay: {events}{range}\n")
    });
    let olds: Vec<String> = plan
        .projections
        .iter()
        .flat_map(|p| p.tables.iter().map(|t| format!("`{}`", t.old)))
        .collect();
    q.push_str(&format!(
        "  then swap the rebuilt tables in; the current ones are kept as {}",
        olds.join(", ")
    ));
    q
}

/// The swap's question: the runs waiting for a swap among `projections` (all when empty).
pub async fn swap(engine: &Engine<'_>, projections: &[String]) -> String {
    let database = engine.db.describe();
    match commands::status(engine).await {
        Ok(status) => swap_text(&status, projections),
        Err(_) => format!("swap the rebuilt tables in on {database}"),
    }
}

fn in_scope(name: &str, projections: &[String]) -> bool {
    projections.is_empty() || projections.iter().any(|p| p == name)
}

fn swap_text(status: &StatusReport, projections: &[String]) -> String {
    let mut q = format!("swap on {}:\n", status.database);
    let waiting: Vec<_> = status
        .projections
        .iter()
        .filter(|p| p.state == "awaiting swap" && in_scope(&p.name, projections))
        .collect();
    if waiting.is_empty() {
        q.push_str("  (no run waiting for its swap was found)");
        return q;
    }
    for p in waiting {
        q.push_str(&format!(
            "  run {}, projection `{}`: the rebuilt tables replace {} (the current ones are kept for a rollback)\n",
            p.run_id.map_or("?".to_string(), |r| r.to_string()),
            p.name,
            tables(&p.tables)
        ));
    }
    q.pop();
    q
}

/// The rollback's question: the newest swap among `projections` (all when empty).
pub async fn rollback(engine: &Engine<'_>, projections: &[String]) -> String {
    let database = engine.db.describe();
    match commands::status(engine).await {
        Ok(status) => rollback_text(&status, projections),
        Err(_) => format!("roll back the newest swap on {database}"),
    }
}

fn rollback_text(status: &StatusReport, projections: &[String]) -> String {
    let mut q = format!("roll back on {}:\n", status.database);
    let swapped: Vec<_> = status
        .projections
        .iter()
        .filter(|p| p.state == "swapped" && in_scope(&p.name, projections))
        .collect();
    let Some(run) = swapped.iter().filter_map(|p| p.run_id).max() else {
        q.push_str("  (no swapped run was found)");
        return q;
    };
    for p in swapped.iter().filter(|p| p.run_id == Some(run)) {
        q.push_str(&format!(
            "  run {run}, projection `{}`: the tables its swap replaced come back as {}\n",
            p.name,
            tables(&p.tables)
        ));
    }
    q.pop();
    q
}

fn tables(names: &[String]) -> String {
    names
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
