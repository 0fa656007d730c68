//! Human-readable output of data (plan, outcomes, status, history) on stdout. `--json`
//! prints the same structures as JSON instead.

use reproject::commands::{
    CleanupReport, HistoryReport, OutcomeStatus, PlanReport, RebuildOutcome, RollbackReport,
    RunOutcome, RunStatus, StatusReport,
};

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

/// `1234567` as `1,234,567`: counts of events and rows are read at a glance.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The version of the JSON that `--json` prints. Raised when a field is removed or changes
/// meaning; new fields may appear within a version.
pub const FORMAT_VERSION: u32 = 1;

/// Prints `value` as JSON with `format_version` in it: in the object, or, for a list, in each
/// of its objects (every command prints an object; a list is kept versioned all the same).
pub fn json<T: serde::Serialize>(value: &T) {
    let value = versioned(serde_json::to_value(value).expect("serialisable"));
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("serialisable")
    );
}

fn versioned(mut value: serde_json::Value) -> serde_json::Value {
    let stamp = |v: &mut serde_json::Value| {
        if let serde_json::Value::Object(map) = v {
            map.insert("format_version".into(), FORMAT_VERSION.into());
        }
    };
    match &mut value {
        serde_json::Value::Array(items) => items.iter_mut().for_each(stamp),
        other => stamp(other),
    }
    value
}

/// A failed command's error as JSON on stdout, for `--json` (the text stays on stderr):
/// what a script decides by (`kind`, `exit_code`, `sqlstate`) and what a person reads.
pub fn error_json(err: &reproject::Error) {
    json(&error_value(err));
}

fn error_value(err: &reproject::Error) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "kind": err.kind.name(),
            "exit_code": err.kind.exit_code(),
            "message": err.message,
            "causes": err.causes,
            "hint": err.hint,
            "sqlstate": err.sqlstate,
        }
    })
}

pub fn plan(p: &PlanReport, dry_run: bool) {
    println!("plan for {} on {}", p.config, p.database);
    println!(
        "events: `{}`: {} to replay, {} excluded by the filter, positions {}..{}",
        p.events_table,
        thousands(p.events_to_replay),
        thousands(p.events_excluded),
        opt(&p.first_position),
        opt(&p.last_position)
    );
    if let Some(preset) = &p.preset {
        println!(
            "preset {} (checked against {})",
            preset.name, preset.checked
        );
        if !preset.optional_columns.is_empty() {
            println!(
                "  optional columns read: {}",
                preset.optional_columns.join(", ")
            );
        }
    }
    println!(
        "ordering: {}",
        match p.ordering.gap_age_seconds {
            Some(age) if age > 0.0 => format!(
                "{}: a gap is passed once no open transaction can fill it and it is at least {} old (gap_age)",
                p.ordering.mode,
                humantime::format_duration(std::time::Duration::from_secs_f64(age))
            ),
            Some(_) => format!(
                "{}: a gap is passed once no open transaction can fill it",
                p.ordering.mode
            ),
            None => p.ordering.mode.to_string(),
        }
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
            if let Some(n) = &t.new_table {
                println!(
                    "  new table `{}` -> built as `{}` from {}, renamed to `{}` at the swap (it replaces nothing)",
                    t.live, t.rebuild, n.file, t.live
                );
                for line in &n.shape {
                    println!("    {line}");
                }
                continue;
            }
            println!(
                "  table `{}` ({} rows) -> rebuilt as `{}`, kept as `{}` after the swap",
                t.live,
                thousands(t.rows),
                t.rebuild,
                t.old
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
    if let Some(preview) = &p.preview {
        println!(
            "preview schema `{}` ({}{}):",
            preview.schema,
            if preview.schema_exists {
                "exists"
            } else {
                "created by the rebuild"
            },
            preview
                .replaces_run
                .map(|r| format!(", replacing the views of run {r}"))
                .unwrap_or_default()
        );
        for v in &preview.views {
            println!(
                "  view {} reading `{}` ({}), owner {}, SELECT to {}{}",
                v.view,
                v.reads,
                v.columns.join(", "),
                v.owner,
                if v.select_to.is_empty() {
                    "nobody else".to_string()
                } else {
                    v.select_to.join(", ")
                },
                if v.column_select.is_empty() {
                    String::new()
                } else {
                    format!("; column SELECT: {}", v.column_select.join("; "))
                }
            );
        }
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

/// The preview schema a rebuild created, and how the next application version reads it.
fn preview(o: &RebuildOutcome) {
    let Some(p) = &o.preview else { return };
    let views: Vec<&str> = p.preview.views.iter().map(|v| v.view.as_str()).collect();
    println!(
        "preview schema `{0}`: {1} (the new version reads them with `SET search_path = {0}, public`; after the swap they read the live tables)",
        p.preview.schema,
        views.join(", "),
    );
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
            preview(o);
        }
        OutcomeStatus::Run(RunStatus::AwaitingSwap) => {
            println!(
                "run {run}: rebuilt and checked ({} events, {checks_passed}/{} checks passed), not swapped",
                o.events_applied,
                o.checks.len()
            );
            println!("swap with `reproject swap`");
            preview(o);
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
    if !r.preview_dropped.is_empty() {
        println!(
            "  dropped the run's preview views {} (they would have shown the replaced tables)",
            r.preview_dropped.join(", ")
        );
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
    // Columns as wide as their widest cell, so long projection names keep the table aligned.
    let rows: Vec<[String; 6]> = s
        .projections
        .iter()
        .map(|p| {
            let state = match &p.phase {
                Some(phase) if p.state == "rebuilding" => format!("{} ({phase})", p.state),
                _ => p.state.clone(),
            };
            [
                p.name.clone(),
                state,
                opt(&p.run_id),
                opt(&p.checkpoint),
                p.lag.map_or("-".to_string(), thousands),
                p.tables.join(", "),
            ]
        })
        .collect();
    let header = ["projection", "state", "run", "checkpoint", "lag", "tables"].map(String::from);
    let width = |i: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3, w4) = (width(0), width(1), width(2), width(3), width(4));
    let line = |r: &[String; 6]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        )
    };
    println!("{}", line(&header));
    // Detail lines under a projection start below its state column.
    let pad = " ".repeat(w0);
    for (p, row) in s.projections.iter().zip(&rows) {
        println!("{}", line(row));
        if let (Some(done), Some(rate)) = (p.events_applied, p.events_per_second) {
            println!(
                "{pad} {} event(s) applied, {rate:.0} events/s, ETA {}",
                thousands(done),
                p.eta_seconds
                    .map_or("-".to_string(), |s| format!("{s:.0}s"))
            );
        }
        if let (Some(run), Some(by)) = (p.run_id, &p.initiated_by) {
            println!(
                "{pad} run {run} by {}",
                who(by, &p.db_session_user, &p.db_current_user)
            );
        }
        if let Some(schema) = &p.preview_schema {
            println!(
                "{pad} preview schema `{schema}` (run {}): {} (`SET search_path = {schema}, public`)",
                opt(&p.run_id),
                p.preview_views.join(", ")
            );
        }
        for shape in &p.shape {
            println!(
                "{pad} new shape of `{}` (run {}): {}",
                shape.table,
                shape.run_id,
                shape.changes.join("; ")
            );
        }
        if let Some(l) = &p.lanes {
            println!(
                "{pad} stream lanes: {} of {} done (plan {}: {} event(s) up to position {}; the checkpoint moves when all are done)",
                l.done, l.lanes, l.plan, l.events, l.upto
            );
        }
        if !p.helper_tables.is_empty() {
            println!("{pad} helper tables: {}", p.helper_tables.join(", "));
        }
        if let Some(e) = &p.error {
            println!("{pad} last error: {}", e.lines().next().unwrap_or(""));
        }
        if let Some(r) = &p.runner {
            let lag = match (r.lag_events, r.lag_seconds) {
                (Some(n), Some(s)) => format!("lag {n} event(s), {s:.1}s"),
                (Some(n), None) => format!("lag {n} event(s)"),
                _ => "lag -".to_string(),
            };
            println!(
                "{pad} runner: {}, live checkpoint {}, {lag}{}",
                if r.up { "up" } else { "not running" },
                opt(&r.checkpoint),
                if r.stopped {
                    ", STOPPED"
                } else if r.parked.is_some() {
                    ", PARKED (see `reproject parked`)"
                } else {
                    ""
                }
            );
            if let Some(h) = &r.handlers {
                println!("{pad} runner applies {h}");
            }
            if let Some(e) = &r.last_error {
                println!(
                    "{pad} runner error at position {}: {}",
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
        if let Some(p) = &g.parked {
            println!(
                "  {}: waiting on the parked {} ({})",
                g.projections.join(", "),
                p.what(),
                p.state()
            );
        }
    }
}

pub fn parked(r: &reproject::commands::ParkedReport) {
    if r.events.is_empty() {
        println!("no parked events");
        return;
    }
    for e in &r.events {
        println!(
            "{} [{}] {}: {}",
            e.position,
            e.state(),
            e.projections.join(", "),
            e.what()
        );
        println!(
            "  error{}: {}",
            e.sqlstate
                .as_deref()
                .map(|s| format!(" (SQLSTATE {s})"))
                .unwrap_or_default(),
            e.error
        );
        println!(
            "  first seen {}, last seen {}, {} failed attempt(s)",
            e.first_seen_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.last_seen_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.times_seen
        );
        match (e.decision, &e.decided_by) {
            (Some(d), by) => println!(
                "  {} decided by {} at {}{}{}",
                d.as_str(),
                by.as_deref().unwrap_or("?"),
                opt(&e.decided_at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC"))),
                e.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                e.acted_at
                    .map(|t| format!("; acted on at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                    .unwrap_or_else(|| "; the runner acts on it at its next look".into())
            ),
            (None, _) if e.acted_at.is_some() => {}
            (None, _) => println!("  decide: {}", e.commands()),
        }
    }
}

pub fn decided(e: &reproject::commands::ParkedEvent) {
    println!(
        "{} of {}: {} decided; a running `reproject run` acts on it within seconds (else the next one when it starts)",
        e.what(),
        e.projections.join(", "),
        e.decision.map_or("?", |d| d.as_str())
    );
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

/// `history --json`: the report's object (`runs`, `other_runs`, `named`), each run with the
/// shape changes it made in its `shapes`.
pub fn history_json(report: &HistoryReport) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = report
        .runs
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            let shapes: Vec<_> = report.shapes.iter().filter(|s| s.run_id == r.id).collect();
            v["shapes"] = serde_json::json!(shapes);
            if let Some(schema) = &r.options.preview_schema {
                let views: Vec<_> = report
                    .previews
                    .iter()
                    .filter(|p| p.run_id == r.id)
                    .collect();
                v["preview"] = serde_json::json!({ "schema": schema, "views": views });
            }
            v
        })
        .collect();
    serde_json::json!({
        "runs": runs,
        "other_runs": report.other_runs,
        "named": report.named,
    })
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
        if let Some(schema) = &r.options.preview_schema {
            let views: Vec<String> = report
                .previews
                .iter()
                .filter(|p| p.run_id == r.id)
                .map(|p| format!("{}.{}", p.schema, p.name))
                .collect();
            if views.is_empty() {
                println!("    preview schema {schema}: its views are gone (dropped by a rollback or cleanup, or replaced by a later run)");
            } else {
                println!("    preview schema {schema}: {}", views.join(", "));
            }
        }
        if let Ok(Some(partial)) = reproject::commands::Partial::of_run(&r.options) {
            println!("    {}", partial.describe());
        }
        println!(
            "    events {}, positions {}..{}, swap position {}, rows {}",
            thousands(r.events_applied),
            r.start_position
                .map_or("start".to_string(), |p| p.to_string()),
            opt(&r.target_position),
            opt(&r.swap_position),
            row_counts(&r.rows_before, &r.rows_after)
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

/// A run's row counts per table, before and after, in words: `` `tally` 10,482 → 10,490 ``
/// (`-` where a count is missing: no live table before, not rebuilt yet).
fn row_counts(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let mut tables: Vec<&String> = before
        .as_object()
        .into_iter()
        .chain(after.as_object())
        .flat_map(|m| m.keys())
        .collect();
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        return "-".to_string();
    }
    let count = |v: &serde_json::Value, t: &str| v[t].as_i64().map_or("-".to_string(), thousands);
    tables
        .iter()
        .map(|t| format!("`{t}` {} → {}", count(before, t), count(after, t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `reproject gaps`: the gaps passed, the late events found in them, the repairs.
pub fn gaps(r: &reproject::commands::GapsReport) {
    println!(
        "{} gap(s) passed in the positions of `{}` re-checked",
        r.gaps_passed, r.events_table
    );
    for repair in &r.repairs {
        match (&repair.error, repair.run_id) {
            (None, Some(run)) => println!(
                "repaired `{}`: run {run} rebuilt stream(s) {} (late events at {})",
                repair.projection,
                repair.streams.join(", "),
                repair
                    .positions
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (error, _) => println!(
                "not repaired `{}`: {}",
                repair.projection,
                error.as_deref().unwrap_or("no run swapped")
            ),
        }
    }
    if r.unrepaired.is_empty() {
        println!("no late events: every event committed in a passed gap is in the tables");
        return;
    }
    println!("late events not repaired:");
    for e in &r.unrepaired {
        println!(
            "  position {} (stream `{}`, type `{}`): missing from `{}` (found {} by {})",
            e.position,
            e.stream.as_deref().unwrap_or("NULL"),
            e.event_type.as_deref().unwrap_or("NULL"),
            e.projection,
            e.found_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.found_by
        );
    }
    println!("to repair: reproject gaps --repair, or:");
    for c in &r.to_run {
        println!("  {c}");
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn every_json_document_carries_the_format_version() {
        let v = super::versioned(serde_json::json!({"a": 1}));
        assert_eq!(v["format_version"], 1);
        let v = super::versioned(serde_json::json!([{"id": 1}, {"id": 2}]));
        assert_eq!(v[1]["format_version"], 1);
        let err = reproject::Error::busy("locked")
            .caused_by("run 3 holds `tally`")
            .with_hint("wait");
        let v = super::versioned(super::error_value(&err));
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["error"]["kind"], "busy");
        assert_eq!(v["error"]["exit_code"], 75);
        assert_eq!(v["error"]["causes"][0], "run 3 holds `tally`");
        assert_eq!(v["error"]["hint"], "wait");
        assert!(v["error"]["sqlstate"].is_null());
    }

    #[test]
    fn row_counts_read_as_before_and_after() {
        let before = serde_json::json!({"tally": 10482, "b": 1});
        let after = serde_json::json!({"tally": 10490});
        assert_eq!(
            super::row_counts(&before, &after),
            "`b` 1 → -, `tally` 10,482 → 10,490"
        );
        assert_eq!(
            super::row_counts(&serde_json::json!({}), &serde_json::Value::Null),
            "-"
        );
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-20000), "-20,000");
    }
}
