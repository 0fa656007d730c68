//! Human-readable output of data (plan, outcomes, status, history) on stdout. `--json`
//! prints the same structures as JSON instead.

use reproject::commands::{
    CleanupReport, HistoryReport, OutcomeStatus, PlanReport, RebuildOutcome, RollbackReport,
    RunOutcome, RunStatus, StatusReport,
};

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

pub fn json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serialisable")
    );
}

pub fn plan(p: &PlanReport, dry_run: bool) {
    println!("plan for {} on {}", p.config, p.database);
    println!(
        "events: `{}`: {} to replay, {} excluded by the filter, positions {}..{}",
        p.events_table,
        p.events_to_replay,
        p.events_excluded,
        opt(&p.first_position),
        opt(&p.last_position)
    );
    println!("order: {}", p.order.join(" -> "));
    for (i, wave) in p.waves.iter().enumerate() {
        println!("wave {}: {}", i + 1, wave.join(", "));
    }
    println!();
    for proj in &p.projections {
        println!(
            "projection `{}` (wave {}){}",
            proj.name,
            proj.wave,
            if proj.depends_on.is_empty() {
                String::new()
            } else {
                format!(", reads {}", proj.depends_on.join(", "))
            }
        );
        match &proj.command {
            Some(command) => {
                println!("  rebuilt by the external projector `{command}` (no handlers)");
                match &proj.handover {
                    Some(h) => println!(
                        "  events after its last range at the swap: left to the live projector (hand-over in `{h}`)"
                    ),
                    None => println!(
                        "  no hand-over: swaps only when no event arrived after its last range"
                    ),
                }
            }
            None if proj.per_batch => println!(
                "  handlers: {} (set-based: once per batch over :events)",
                proj.handlers
            ),
            // A Rust projection: its code, not the config, decides which events it handles.
            None if proj.event_types.is_empty() => println!("  handlers: {}", proj.handlers),
            None => println!(
                "  handlers: {} (on {})",
                proj.handlers,
                proj.event_types.join(", ")
            ),
        }
        for t in &proj.tables {
            println!(
                "  table `{}` ({} rows) -> rebuilt as `{}`, kept as `{}` after the swap",
                t.live, t.rows, t.rebuild, t.old
            );
            println!(
                "    carried over at the swap: {}",
                t.carried_over.join("; ")
            );
            for why in &t.not_supported {
                println!("    not supported: {why}");
            }
            if let Some(shape) = &t.shape {
                match shape.already_applied_by {
                    Some(run) => println!(
                        "    new shape ({}): reshape already applied by run {run}; the clone keeps the live shape; remove `reshape` from the config",
                        shape.file
                    ),
                    None if shape.changes.is_empty() => {
                        println!("    new shape ({}): no change to this table", shape.file)
                    }
                    None => {
                        println!("    new shape ({}):", shape.file);
                        for c in &shape.changes {
                            println!("      {c}");
                        }
                    }
                }
            }
        }
        for r in &proj.retired {
            println!("  {r}");
        }
        let mut checks = vec![format!("row count within {}%", proj.row_count_tolerance)];
        checks.extend(proj.checks.iter().cloned());
        println!("  checks: {}", checks.join("; "));
    }
    println!();
    match (&p.estimate_seconds, &p.estimate_basis) {
        (Some(s), Some(basis)) => println!("estimate: ~{s:.0}s of replay (from {basis})"),
        _ => println!("estimate: none yet (no earlier run to measure from)"),
    }
    for r in &p.reads {
        println!(
            "read for the {}: {} ({}{})",
            r.read,
            r.access_path,
            if r.per_batch {
                "once per batch"
            } else {
                "one ordered pass"
            },
            if r.ordered_by_index {
                ", in index order"
            } else {
                ", sorted"
            }
        );
    }
    for w in &p.warnings {
        println!("warning: {w}");
    }
    if dry_run {
        println!("\nsteps a rebuild would take:");
        for (i, s) in p.steps.iter().enumerate() {
            println!("  {}. {s}", i + 1);
        }
        println!("\ndry run: nothing was written");
    }
}

pub fn outcome(o: &RebuildOutcome) {
    let Some(run) = o.run_id else { return };
    let checks_passed = o.checks.iter().filter(|c| c.passed).count();
    match &o.status {
        OutcomeStatus::Run(RunStatus::Swapped) => {
            println!(
                "run {run}: swapped. {} events applied, {checks_passed}/{} checks passed, swap position {}, lock wait {} ms, lock hold {} ms",
                o.events_applied,
                o.checks.len(),
                opt(&o.swap_position),
                opt(&o.lock_wait_ms),
                opt(&o.lock_hold_ms)
            );
            for t in &o.tables {
                println!(
                    "  `{}` is live; the previous table is kept as `{}`",
                    t.live, t.old
                );
            }
            println!("undo with `reproject rollback`; drop the old tables with `reproject cleanup --yes`");
            if let Some(caveat) = &o.rollback_caveat {
                println!("{caveat}");
            }
        }
        OutcomeStatus::Run(RunStatus::AwaitingSwap) => {
            println!(
                "run {run}: rebuilt and checked ({} events, {checks_passed}/{} checks passed), not swapped",
                o.events_applied,
                o.checks.len()
            );
            println!("swap with `reproject swap`");
        }
        OutcomeStatus::Run(RunStatus::Paused) => {
            println!(
                "run {run}: stopped after {} events (--max-events), not swapped; `reproject swap` catches up, checks and swaps",
                o.events_applied
            );
        }
        other => println!("run {run}: {other}"),
    }
}

pub fn rollback(r: &RollbackReport) {
    println!(
        "run {}: rolled back ({}), lock wait {} ms, lock hold {} ms",
        r.run_id,
        r.projections.join(", "),
        r.lock_wait_ms,
        r.lock_hold_ms
    );
    if let Some(position) = r.position {
        println!(
            "  the restored tables were caught up with {} event(s) since the swap, to position {position}",
            r.events_applied
        );
    }
    for (live, kept) in &r.kept {
        println!("  `{live}` is the previous table again; the replaced one is kept as `{kept}`");
    }
}

pub fn cleanup(r: &CleanupReport, drop_command: &str) {
    if r.candidates.is_empty() {
        println!("nothing to clean up");
    }
    for e in &r.candidates {
        let h = &e.table;
        println!(
            "{} `{}` ({} of `{}`, projection {}, run {}, created {}): {}",
            if r.dropped { "dropped" } else { "would drop" },
            h.table,
            kind(&h.kind),
            h.live_name,
            h.projection,
            opt(&h.run_id),
            h.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.ends
        );
    }
    for e in &r.kept {
        println!(
            "kept `{}` ({} of `{}`): {}",
            e.table.table,
            kind(&e.table.kind),
            e.table.live_name,
            e.reason
        );
    }
    if !r.other_projections.is_empty() {
        println!(
            "not considered: {} helper table(s) of {} ({})",
            r.other_tables,
            r.other_projections.join(", "),
            if r.named {
                "not named"
            } else {
                "not in this config; `--all-projections` includes them"
            }
        );
    }
    if !r.dropped && !r.candidates.is_empty() {
        println!("run `{drop_command}` to drop them");
    }
}

/// A helper table's kind, in words.
fn kind(kind: &str) -> &str {
    match kind {
        "old" => "previous table",
        "rebuild" => "rebuild table",
        "rolled_back" => "rolled-back table",
        "retired" => "retired previous table",
        other => other,
    }
}

pub fn status(s: &StatusReport) {
    println!(
        "database {}, event head at position {}",
        s.database,
        opt(&s.head)
    );
    println!(
        "{:<24} {:<15} {:>6} {:>12} {:>10}  tables",
        "projection", "state", "run", "checkpoint", "lag"
    );
    for p in &s.projections {
        let state = match &p.phase {
            Some(phase) if p.state == "rebuilding" => format!("{} ({phase})", p.state),
            _ => p.state.clone(),
        };
        println!(
            "{:<24} {:<15} {:>6} {:>12} {:>10}  {}",
            p.name,
            state,
            opt(&p.run_id),
            opt(&p.checkpoint),
            opt(&p.lag),
            p.tables.join(", ")
        );
        if let (Some(done), Some(rate)) = (p.events_applied, p.events_per_second) {
            println!(
                "{:<24} {done} event(s) applied, {rate:.0} events/s, ETA {}",
                "",
                p.eta_seconds
                    .map_or("-".to_string(), |s| format!("{s:.0}s"))
            );
        }
        if let (Some(run), Some(by)) = (p.run_id, &p.initiated_by) {
            println!(
                "{:<24} run {run} by {}",
                "",
                who(by, &p.db_session_user, &p.db_current_user)
            );
        }
        for shape in &p.shape {
            println!(
                "{:<24} new shape of `{}` (run {}): {}",
                "",
                shape.table,
                shape.run_id,
                shape.changes.join("; ")
            );
        }
        if let Some(l) = &p.lanes {
            println!(
                "{:<24} stream lanes: {} of {} done (plan {}: {} event(s) up to position {}; the checkpoint moves when all are done)",
                "", l.done, l.lanes, l.plan, l.events, l.upto
            );
        }
        if !p.helper_tables.is_empty() {
            println!("{:<24} helper tables: {}", "", p.helper_tables.join(", "));
        }
        if let Some(e) = &p.error {
            println!("{:<24} last error: {}", "", e.lines().next().unwrap_or(""));
        }
        if let Some(r) = &p.runner {
            let lag = match (r.lag_events, r.lag_seconds) {
                (Some(n), Some(s)) => format!("lag {n} event(s), {s:.1}s"),
                (Some(n), None) => format!("lag {n} event(s)"),
                _ => "lag -".to_string(),
            };
            println!(
                "{:<24} runner: {}, live checkpoint {}, {lag}{}",
                "",
                if r.up { "up" } else { "not running" },
                opt(&r.checkpoint),
                if r.stopped { ", STOPPED" } else { "" }
            );
            if let Some(h) = &r.handlers {
                println!("{:<24} runner applies {h}", "");
            }
            if let Some(e) = &r.last_error {
                println!(
                    "{:<24} runner error at position {}: {}",
                    "",
                    opt(&r.last_error_position),
                    e.lines().next().unwrap_or("")
                );
            }
        }
    }
}

pub fn run(o: &RunOutcome) {
    println!(
        "{}: {} events applied in {} batches ({} hand-over(s), {} reconnect(s))",
        if o.interrupted {
            "stopped"
        } else {
            "caught up"
        },
        o.events_applied,
        o.batches,
        o.handovers,
        o.reconnects
    );
    for g in &o.groups {
        match &g.error {
            None => println!(
                "  {}: at position {}",
                g.projections.join(", "),
                opt(&g.position)
            ),
            Some(e) => println!("  {}: stopped: {e}", g.projections.join(", ")),
        }
    }
}

/// Who started a run, with the database role(s) it ran as when recorded:
/// `alice (role app)`, or `alice (role bob as app)` after a `SET ROLE`.
fn who(by: &str, session: &Option<String>, current: &Option<String>) -> String {
    match (session, current) {
        (Some(s), Some(c)) if s != c => format!("{by} (role {s} as {c})"),
        (Some(s), _) => format!("{by} (role {s})"),
        _ => by.to_string(),
    }
}

pub fn history(report: &HistoryReport) {
    if report.runs.is_empty() && report.other_runs == 0 {
        println!("no runs recorded");
    } else if report.runs.is_empty() {
        println!("no runs of the projections in scope");
    }
    if report.other_runs > 0 {
        println!(
            "({} run(s) of projections {} are not shown{})",
            report.other_runs,
            if report.named {
                "not named"
            } else {
                "not in this config"
            },
            if report.named {
                ""
            } else {
                "; `--all-projections` shows them"
            }
        );
    }
    for r in &report.runs {
        let duration = r
            .finished_at
            .map(|f| {
                format!(
                    "{:.1}s",
                    (f - r.started_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "run {} [{}] {} by {} at {}, {}",
            r.id,
            r.status,
            r.projections.join(", "),
            who(&r.initiated_by, &r.db_session_user, &r.db_current_user),
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            duration
        );
        if let Some(reason) = &r.reason {
            println!("    reason: {reason}");
        }
        if let Ok(Some(partial)) = reproject::commands::Partial::of_run(&r.options) {
            println!("    {}", partial.describe());
        }
        println!(
            "    events {}, positions {}..{}, swap position {}, rows before {}, after {}",
            r.events_applied,
            r.start_position
                .map_or("start".to_string(), |p| p.to_string()),
            opt(&r.target_position),
            opt(&r.swap_position),
            r.rows_before,
            r.rows_after
        );
        if let Some(checks) = r.checks.as_array().filter(|c| !c.is_empty()) {
            let passed = checks.iter().filter(|c| c["passed"] == true).count();
            println!("    checks {passed}/{} passed", checks.len());
            for c in checks.iter().filter(|c| c["passed"] != true) {
                println!(
                    "      failed: {}: {}: {}",
                    c["projection"].as_str().unwrap_or(""),
                    c["name"].as_str().unwrap_or(""),
                    c["detail"].as_str().unwrap_or("")
                );
            }
        }
        if r.lock_wait_ms.is_some() {
            println!(
                "    lock wait {} ms, hold {} ms",
                opt(&r.lock_wait_ms),
                opt(&r.lock_hold_ms)
            );
        }
        for fk in &r.unvalidated_foreign_keys {
            println!("    foreign key left NOT VALID after the swap: {fk}");
        }
        for shape in report.shapes.iter().filter(|s| s.run_id == r.id) {
            println!(
                "    new shape of `{}`: {}",
                shape.table,
                shape.changes.join("; ")
            );
        }
        for f in r.faults.as_array().into_iter().flatten() {
            println!(
                "    survived {}: {}{}",
                f["kind"].as_str().unwrap_or("fault").replace('_', " "),
                f["detail"].as_str().unwrap_or(""),
                f["at"]
                    .as_str()
                    .map(|at| format!(" (at {at})"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = &r.error {
            println!("    error: {}", e.lines().next().unwrap_or(""));
        }
    }
}
