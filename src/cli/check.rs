//! `reproject check`: `plan`'s validation (the same function, so it refuses exactly what a
//! rebuild would refuse before writing anything), reported as one verdict line per
//! projection, or as the errors; with `--json`, errors included, for CI.

use reproject::commands::{self, Engine, PlanReport};
use reproject::error::Result;
use reproject::progress::{Cancel, Silent};
use reproject::{Config, Db};
use serde_json::json;
use std::path::Path;

pub async fn run(
    config_path: &Path,
    database_url: Option<&str>,
    projections: &[String],
    json: bool,
) -> Result<()> {
    match plan(config_path, database_url, projections).await {
        Ok(report) => {
            if json {
                super::print::json(&verdict_json(&report));
            } else {
                print_verdict(&report);
            }
            Ok(())
        }
        // The binary prints the error, as JSON on stdout too with --json (the versioned shape
        // every command's errors have), and exits with its code.
        Err(err) => Err(err),
    }
}

async fn plan(
    config_path: &Path,
    database_url: Option<&str>,
    projections: &[String],
) -> Result<PlanReport> {
    let config = Config::load(config_path)?;
    let engine = Engine {
        config: &config,
        db: Db::from_url_or_env(database_url)?,
        reporter: &Silent,
        cancel: Cancel::new(),
    };
    commands::plan(&engine, projections).await
}

fn print_verdict(report: &PlanReport) {
    for p in &report.projections {
        let tables: Vec<String> = p
            .tables
            .iter()
            .map(|t| format!("{} ({} rows)", t.live, t.rows))
            .collect();
        let builds = match &p.command {
            Some(command) => format!("rebuilt by `{command}`"),
            None => format!("{} event type(s)", p.event_types.len()),
        };
        println!("ok  {}: {}; {builds}", p.name, tables.join(", "));
    }
    for w in &report.warnings {
        super::log::line("WARN", "warning: ", w);
    }
    println!(
        "config ok: {} projection(s), {} event(s) to replay from {}",
        report.projections.len(),
        report.events_to_replay,
        report.events_table
    );
}

fn verdict_json(report: &PlanReport) -> serde_json::Value {
    let projections: Vec<_> = report
        .projections
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "ok": true,
                "tables": p.tables.iter().map(|t| &t.live).collect::<Vec<_>>(),
                "event_types": p.event_types,
            })
        })
        .collect();
    json!({
        "ok": true,
        "config": report.config,
        "database": report.database,
        "events_table": report.events_table,
        "events_to_replay": report.events_to_replay,
        "projections": projections,
        "warnings": report.warnings,
    })
}
