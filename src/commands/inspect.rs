//! Read-only commands: `plan` (and the dry run), `status`, `history`. None of them writes,
//! not even the state schema: they run on a connection set to read-only.

use crate::commands::Engine;
use crate::db::catalog::count_rows;
use crate::error::{Context, Result};
use crate::model::ident::quote;
use crate::pipeline::plan::Plan;
use crate::read::source::{Bound, Cursor, EventSource};
use crate::state::runs::{self, Phase, Run, RunStatus};
use crate::state::{helpers, live_checkpoints, locks, parked_events};
use serde::Serialize;
use tokio_postgres::Client;

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTable {
    pub live: String,
    pub rebuild: String,
    pub old: String,
    pub rows: i64,
    /// What a swap carries over beyond `LIKE … INCLUDING ALL`.
    pub carried_over: Vec<String>,
    /// What reproject cannot carry over yet: a rebuild refuses while this is not empty.
    pub not_supported: Vec<String>,
    /// The shape change the projection's `reshape` makes to this table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<PlannedShape>,
    /// A table the rebuild adds (`create`): it does not exist live yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_table: Option<PlannedNewTable>,
}

/// A table the rebuild creates from its definition, as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedNewTable {
    /// The definition file.
    pub file: String,
    /// Its columns and indexes as the definition makes them (read on the stand-in).
    pub shape: Vec<String>,
}

/// A table's shape change, as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedShape {
    /// The reshape file.
    pub file: String,
    /// The run that already put this shape in place: the clone then keeps the live shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_applied_by: Option<i64>,
    /// The columns that change: `[{"before": {name, type}|null, "after": …}]`.
    pub columns: serde_json::Value,
    /// The indexes and constraints that change (and the primary key).
    pub objects: Vec<crate::pipeline::shape::diff::ObjectChange>,
    /// All of it in words.
    pub changes: Vec<String>,
}

/// The shape change of `live` (a table of projection `i`) that `resolved` read on the stand-ins.
pub(crate) fn planned_shape(
    config: &crate::model::config::Config,
    resolved: &crate::model::Resolved,
    i: usize,
    live: &crate::model::ident::TableName,
) -> Option<PlannedShape> {
    use crate::pipeline::shape::{diff, Planned};
    let file = config.projections[i]
        .reshape
        .as_ref()?
        .path
        .display()
        .to_string();
    match resolved.shapes.get(i)?.as_ref()? {
        Planned::AlreadyApplied(run) => Some(PlannedShape {
            file,
            already_applied_by: Some(*run),
            columns: serde_json::json!([]),
            objects: Vec::new(),
            changes: Vec::new(),
        }),
        Planned::Applies(applied) => {
            let a = applied.iter().find(|a| &a.live == live)?;
            Some(PlannedShape {
                file,
                already_applied_by: None,
                columns: diff::map_to_json(&diff::changed(&a.map)),
                objects: diff::object_changes(&a.live_fingerprint, &a.shaped.fingerprint),
                changes: crate::state::shapes::changes(a),
            })
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedProjection {
    pub name: String,
    /// 1-based wave number.
    pub wave: usize,
    pub depends_on: Vec<String>,
    pub event_types: Vec<String>,
    /// Set-based handlers (`-- per batch`): run once per batch over `:events`.
    pub per_batch: bool,
    pub handlers: String,
    /// Set when an external projector (`command`) rebuilds the projection instead of handlers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// With a command: the hand-over table that takes over after the swap position, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handover: Option<String>,
    pub row_count_tolerance: f64,
    pub checks: Vec<String>,
    pub tables: Vec<PlannedTable>,
    /// The tables it retires (`retire`), and the entries that name no table any more.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

/// The ordering mode as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOrdering {
    /// `gap-aware`, `xid8` or `serialized`.
    pub mode: &'static str,
    /// Gap-aware: how old a proven gap must also be before it is passed, in seconds (0: as
    /// soon as it is proven); absent in the other modes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_age_seconds: Option<f64>,
}

impl PlannedOrdering {
    fn of(ordering: &crate::model::config::Ordering) -> PlannedOrdering {
        PlannedOrdering {
            mode: ordering.name(),
            gap_age_seconds: match ordering {
                crate::model::config::Ordering::GapAware { gap_age } => Some(gap_age.as_secs_f64()),
                _ => None,
            },
        }
    }
}

/// The preset `[events]` names, as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPreset {
    /// The preset's name.
    pub name: &'static str,
    /// The store versions and append modes it was checked against.
    pub checked: &'static str,
    /// The store's optional columns found in the table and read (metadata, filter).
    pub optional_columns: Vec<&'static str>,
}

/// The plan, as `plan` and `rebuild --dry-run` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The config file.
    pub config: String,
    /// Where the plan was made (`user@host:port/db`, no password).
    pub database: String,
    /// The resolved event table.
    pub events_table: String,
    /// The preset `[events]` names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<PlannedPreset>,
    /// How reading stays gap-safe (`events.ordering`).
    pub ordering: PlannedOrdering,
    /// Projection names in application (topological) order.
    pub order: Vec<String>,
    /// Projections grouped by dependency depth: a wave reads only earlier waves.
    pub waves: Vec<Vec<String>>,
    /// Each selected projection, by wave.
    pub projections: Vec<PlannedProjection>,
    /// Events that pass the filter: what a rebuild replays now.
    pub events_to_replay: i64,
    /// Events the filter excludes.
    pub events_excluded: i64,
    /// Lowest position of the events to replay.
    pub first_position: Option<i64>,
    /// Highest position of the events to replay.
    pub last_position: Option<i64>,
    /// Estimated replay time from the speed of the last completed run, if there is one.
    pub estimate_seconds: Option<f64>,
    /// Which run the estimate is based on.
    pub estimate_basis: Option<String>,
    /// How the server serves each read of the events (EXPLAIN of the queries a rebuild sends).
    pub reads: Vec<crate::read::access::PlannedRead>,
    /// Things to know before rebuilding (e.g. dependents that are rebuilt too).
    pub warnings: Vec<String>,
    /// What a rebuild would do, step by step.
    pub steps: Vec<String>,
    /// `--preview-schema`: the schema and views a rebuild would create once its tables are
    /// checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<crate::pipeline::preview::PlannedPreview>,
}

/// A connection that cannot write: the guarantee behind "plan and dry run write nothing".
async fn read_only(engine: &Engine<'_>) -> Result<Client> {
    let client = engine.db.dedicated().await?;
    // Never queue behind a swap's ACCESS EXCLUSIVE locks for long (and never make readers
    // queue behind us): fail with a clear "busy" instead.
    client
        .batch_execute("SET default_transaction_read_only = on; SET lock_timeout = '5s'")
        .await
        .context("cannot make the session read-only")?;
    Ok(client)
}

/// `reproject plan`: validate, then describe what a rebuild of the selection would do.
pub async fn plan(engine: &Engine<'_>, selection: &[String]) -> Result<PlanReport> {
    plan_with_preview(engine, selection, None).await
}

/// [`plan`], with what `rebuild --preview-schema PREVIEW` would create (and refusing what it
/// would refuse).
pub async fn plan_with_preview(
    engine: &Engine<'_>,
    selection: &[String],
    preview: Option<&str>,
) -> Result<PlanReport> {
    let plan = crate::pipeline::plan::plan(engine.config, selection)?;
    plan_report(engine, &plan, false, 1, preview).await
}

/// The plan of `rebuild` (`dry_run`: with its steps) of `plan`'s projections with `--jobs`
/// `jobs`. Refuses (exit 2) exactly what `rebuild` would refuse before writing anything: both
/// run preflight.rs on the same request.
pub(crate) async fn plan_report(
    engine: &Engine<'_>,
    plan: &Plan,
    dry_run: bool,
    jobs: usize,
    preview: Option<&str>,
) -> Result<PlanReport> {
    let config = engine.config;
    let client = read_only(engine).await?;
    let resolved = crate::pipeline::validate::validate(&client, config).await?;
    let run_tables = crate::commands::run_tables(config, &resolved, &plan.order);
    let mut refusals = crate::pipeline::preflight::check(
        &client,
        &crate::pipeline::preflight::Request {
            config,
            order: &plan.order,
            tables: &run_tables,
            jobs,
            changes: &crate::pipeline::shape::planned_changes(config, &resolved, &plan.order),
        },
    )
    .await?;
    if let Some(schema) = preview {
        refusals.extend(crate::pipeline::preview::refusals(&client, schema, &run_tables).await?);
    }
    crate::pipeline::preflight::refuse("rebuild", refusals)?;
    let preview = match preview {
        Some(schema) => Some(
            crate::pipeline::preview::plan(&client, config, &resolved, schema, &run_tables).await?,
        ),
        None => None,
    };
    let source = EventSource::new(&config.events, &resolved);
    let head = source.head(&client).await?;
    let counts = match head {
        Some(h) => {
            source
                .count(&client, &Cursor::default(), &Bound::UpTo(h))
                .await?
        }
        None => Default::default(),
    };
    let mut projections = Vec::new();
    for (w, wave) in plan.waves.iter().enumerate() {
        for &i in wave {
            let p = &config.projections[i];
            let (retiring, notes) =
                crate::pipeline::retire::resolve(&client, config, std::slice::from_ref(&p.name))
                    .await?;
            let mut retired = Vec::new();
            for r in &retiring {
                retired.push(format!(
                    "retired table `{}` ({} rows): no longer rebuilt, kept as `{}` after the swap",
                    r.live,
                    count_rows(&client, &r.live).await?,
                    r.parked
                ));
            }
            retired.extend(notes.iter().map(|n| n.to_string()));
            let mut tables = Vec::new();
            for live in &resolved.tables[i] {
                if resolved.is_added(live) {
                    tables.push(PlannedTable {
                        live: live.to_string(),
                        rebuild: crate::model::ident::rebuild_table(live).to_string(),
                        old: String::new(),
                        rows: 0,
                        carried_over: Vec::new(),
                        not_supported: Vec::new(),
                        shape: None,
                        new_table: crate::pipeline::added::definition(config, &resolved, live).map(
                            |(_, d)| PlannedNewTable {
                                file: d.file.path.display().to_string(),
                                shape: resolved.new_shapes.get(live).cloned().unwrap_or_default(),
                            },
                        ),
                    });
                    continue;
                }
                tables.push(PlannedTable {
                    live: live.to_string(),
                    rebuild: crate::model::ident::rebuild_table(live).to_string(),
                    old: crate::model::ident::old_table(live).to_string(),
                    rows: count_rows(&client, live).await?,
                    carried_over: crate::pipeline::swap::exchange::describe(
                        &crate::db::catalog::fingerprint::fingerprint(&client, live).await?,
                    ),
                    not_supported: crate::pipeline::swap::exchange::unsupported(&client, live)
                        .await?,
                    shape: planned_shape(config, &resolved, i, live),
                    new_table: None,
                });
            }
            projections.push(PlannedProjection {
                name: p.name.clone(),
                wave: w + 1,
                depends_on: p.depends_on.iter().cloned().collect(),
                event_types: p
                    .handlers()
                    .map(|h| h.by_type().keys().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                per_batch: p.per_batch(),
                handlers: if p.is_rust() {
                    "(Rust projection)".to_string()
                } else {
                    p.handler_path().display().to_string()
                },
                command: p.command().map(|c| c.display()),
                handover: p.handover.as_ref().map(|h| h.table.to_string()),
                row_count_tolerance: p.row_count_tolerance,
                checks: p.checks.iter().map(|c| c.name.clone()).collect(),
                tables,
                retired,
            });
        }
    }
    let selected: Vec<String> = plan
        .order
        .iter()
        .map(|&i| config.projections[i].name.clone())
        .collect();
    let (estimate_seconds, estimate_basis) = estimate(&client, counts.events, &selected).await?;
    let mut warnings: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
    let reads = planned_reads(&client, config, plan, &source, &mut warnings).await?;
    let name = |i: &usize| config.projections[*i].name.clone();
    let mut steps = Vec::new();
    if dry_run {
        let tables: Vec<String> = projections
            .iter()
            .flat_map(|p| p.tables.iter().filter(|t| t.new_table.is_none()))
            .map(|t| t.live.clone())
            .collect();
        steps.push(format!(
            "take the advisory lock of {}",
            plan.order.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
        steps.push("create or migrate the state schema `reproject`".to_string());
        for p in &projections {
            for t in &p.tables {
                steps.push(match &t.new_table {
                    Some(n) => format!("create `{}` from `{}` (a new table)", t.rebuild, n.file),
                    None => format!("create `{}` (LIKE `{}` INCLUDING ALL)", t.rebuild, t.live),
                });
            }
            if let Some(shape) = p.tables.iter().find_map(|t| t.shape.as_ref()) {
                if shape.already_applied_by.is_none() {
                    steps.push(format!(
                        "run `{}` on the rebuild tables of `{}` (their new shape)",
                        shape.file, p.name
                    ));
                }
            }
        }
        // pipeline/lanes.rs decides with the run's options; the dry run says whether it can.
        let selected: Vec<_> = plan.order.iter().map(|&i| &config.projections[i]).collect();
        let why_not = crate::pipeline::lanes::why_not_configured(config, &plan.order, &source);
        let stream_scoped = why_not.is_none();
        let set_based = selected.iter().all(|p| p.per_batch());
        let per_event = selected.iter().all(|p| !p.per_batch());
        // Why not, once a projection declares `stream_key` (its author wants lanes).
        let not_in_lanes = match why_not {
            Some(why) if selected.iter().any(|p| p.stream_key.is_some()) => {
                format!("in batches on one connection (not in stream lanes: {why})")
            }
            _ => "in batches".to_string(),
        };
        let xid8 = if source.tx.is_some() {
            ", below the transaction-id cut"
        } else {
            ""
        };
        steps.push(format!(
            "replay {} event(s) up to position {} {}, applying {} in this order",
            counts.events,
            head.map_or("-".into(), |h| h.to_string()),
            if stream_scoped && set_based {
                format!("in stream lanes (split by a hash of the stream: one lane per --set-batch-size events, --jobs at a time{xid8})")
            } else if stream_scoped && per_event {
                format!("in batches (with --jobs N: in N stream lanes at once, split by a hash of the stream{xid8})")
            } else {
                not_in_lanes
            },
            plan.order.iter().map(name).collect::<Vec<_>>().join(" → ")
        ));
        steps.push("catch up with events that arrived meanwhile".to_string());
        steps
            .push("run the health checks (row counts within tolerance, custom checks)".to_string());
        if let Some(p) = &preview {
            let views = p
                .views
                .iter()
                .map(|v| format!("view {} reading `{}`", v.view, v.reads))
                .collect::<Vec<_>>()
                .join(", ");
            steps.push(format!(
                "in one transaction, create {}{views} with the owner and SELECT grants of the live tables{} (with --no-swap they show the tables as of this point until `swap`; with --swap-at the run keeps them current while it waits)",
                if p.schema_exists {
                    String::new()
                } else {
                    format!("schema `{}` and ", p.schema)
                },
                p.replaces_run
                    .map(|r| format!(", replacing the views of run {r}"))
                    .unwrap_or_default(),
            ));
        }
        steps.push("VACUUM (ANALYZE) the rebuilt tables".to_string());
        steps.push(format!(
            "lock {} (and any `_old` table of an earlier swap), apply the final events, then in one transaction retire the earlier `_old`, rename each `x` to `x_old` and `x_rebuild` to `x`; drop the retired table after the commit",
            tables.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
        ));
        if projections
            .iter()
            .any(|p| p.tables.iter().any(|t| t.new_table.is_some()))
        {
            steps.push(
                "in the same transaction, rename each new table's `x_rebuild` to `x` (nothing replaced, no `x_old`) and give it the owner of its projection's other tables".to_string(),
            );
        }
        if projections.iter().any(|p| !p.retired.is_empty()) {
            steps.push(
                "in the same transaction, rename each table the projections retire to its `_old` name (kept for a rollback, like the replaced tables)".to_string(),
            );
        }
    }
    Ok(PlanReport {
        config: config.path.display().to_string(),
        database: engine.db.describe(),
        events_table: resolved.events_table.to_string(),
        preset: config.events.preset.as_ref().map(|p| PlannedPreset {
            name: p.name(),
            checked: p.checked(),
            optional_columns: resolved.preset_columns.clone(),
        }),
        ordering: PlannedOrdering::of(&config.events.ordering),
        order: plan.order.iter().map(name).collect(),
        waves: plan
            .waves
            .iter()
            .map(|w| w.iter().map(name).collect())
            .collect(),
        projections,
        events_to_replay: counts.events,
        events_excluded: counts.excluded,
        first_position: counts.first_position,
        last_position: counts.last_position,
        estimate_seconds,
        estimate_basis,
        reads,
        warnings: warnings
            .into_iter()
            .chain(resolved.notes.iter().map(|n| n.to_string()))
            .collect(),
        steps,
        preview,
    })
}

/// The batch size `plan` assumes (`--batch-size`'s default) for the reads it explains.
const PLANNED_BATCH_SIZE: i64 = 1000;

/// How the server would serve the reads of a rebuild of `plan` (none for external projectors,
/// whose commands read the events), with a warning and the index to create for each read
/// repeated per batch that scans and sorts the table.
async fn planned_reads(
    client: &Client,
    config: &crate::model::config::Config,
    plan: &Plan,
    source: &EventSource,
    warnings: &mut Vec<String>,
) -> Result<Vec<crate::read::access::PlannedRead>> {
    use crate::read::access;
    let selected: Vec<_> = plan.order.iter().map(|&i| &config.projections[i]).collect();
    if selected.iter().any(|p| p.command().is_some()) {
        return Ok(Vec::new());
    }
    // commands/rebuild.rs reads the bulk replay in one pass exactly when no projection is
    // set-based (`Projector::reads_each_event`).
    let set_based = selected.iter().any(|p| p.per_batch());
    let bulk_batch = if set_based {
        crate::apply::sql::DEFAULT_SET_BATCH_SIZE
    } else {
        PLANNED_BATCH_SIZE
    };
    let reads = access::reads(client, source, !set_based, bulk_batch, PLANNED_BATCH_SIZE).await?;
    let unserved: Vec<_> = reads
        .iter()
        .filter(|r| r.per_batch && !r.ordered_by_index)
        .collect();
    if !unserved.is_empty() {
        let fix = if config.events.source.is_some() {
            "an index on the table the `source` query reads, in the order it reads".to_string()
        } else {
            let tables = access::index_tables(client, source).await?;
            access::order_index(source, &access::scanned(&tables, &unserved)).join("; ")
        };
        warnings.push(format!(
            "no index serves the reading order of `{}`: {} scan and sort every event left in the range once per batch, so the time grows with events × batches; create one (it does not block writers): {fix}",
            source.table,
            unserved
                .iter()
                .map(|r| format!("the {} ({})", r.read, r.access_path))
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    Ok(reads)
}

/// Replay speed of the most recent finished run with events (preferring one that rebuilt some
/// of the same projections: speed depends on the handlers), applied to `events`.
async fn estimate(
    client: &Client,
    events: i64,
    projections: &[String],
) -> Result<(Option<f64>, Option<String>)> {
    if !crate::state::exists(client).await? {
        return Ok((None, None));
    }
    let row = client
        .query_opt(
            "SELECT id, events_applied, extract(epoch FROM coalesce(swapped_at, finished_at) - started_at)::float8 \
             FROM reproject.runs WHERE status IN ('swapped', 'awaiting_swap', 'rolled_back') AND events_applied > 0 \
             ORDER BY projections && $1 DESC, id DESC LIMIT 1",
            &[&projections],
        )
        .await
        .context("cannot read earlier runs")?;
    Ok(match row {
        Some(r) => {
            let (id, applied, secs): (i64, i64, Option<f64>) = (r.get(0), r.get(1), r.get(2));
            match secs {
                Some(secs) if secs > 0.0 => {
                    let rate = applied as f64 / secs;
                    (
                        Some(events as f64 / rate),
                        Some(format!("run {id}: {rate:.0} events/s end to end")),
                    )
                }
                _ => (None, None),
            }
        }
        None => (None, None),
    })
}

/// One projection's state, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// The projection.
    pub name: String,
    /// `live` (never rebuilt), `rebuilding`, `interrupted`, `paused`, `awaiting swap`,
    /// `checks failed`, `failed`, `cancelled`, `swapped`, `rolled back`.
    pub state: String,
    /// Its newest run, if any.
    pub run_id: Option<i64>,
    /// That run's phase (`replay`, `catch_up`, `checks`, `swap`, …).
    pub phase: Option<Phase>,
    /// That run's checkpoint position.
    pub checkpoint: Option<i64>,
    /// Events between the checkpoint and the head of the event table (for unfinished runs).
    pub lag: Option<i64>,
    /// While rebuilding: events applied so far, the average speed since the run started and
    /// the time left for the current lag at that speed.
    pub events_applied: Option<i64>,
    /// Average events per second since the run started.
    pub events_per_second: Option<f64>,
    /// Seconds left for the current lag at that speed.
    pub eta_seconds: Option<f64>,
    /// Its live tables.
    pub tables: Vec<String>,
    /// reproject's helper tables of this projection that exist now.
    pub helper_tables: Vec<String>,
    /// The newest run's error, if it failed.
    pub error: Option<String>,
    /// Who started the newest run (`--initiated-by`, `$USER`, else the OS account).
    pub initiated_by: Option<String>,
    /// The database role the newest run logged in as (`session_user`).
    pub db_session_user: Option<String>,
    /// The database role its statements ran as (`current_user`).
    pub db_current_user: Option<String>,
    /// An unfinished run's stream lanes (pipeline/lanes.rs) at its checkpoint, if it has some.
    pub lanes: Option<LaneStatus>,
    /// The live runner (`reproject run`) of this projection, if it ever had one or a swap
    /// handed it a live checkpoint.
    pub runner: Option<RunnerStatus>,
    /// The shape changes (`reshape`) of its newest run, per table.
    pub shape: Vec<ShapeRecord>,
    /// The newest run's preview schema (`rebuild --preview-schema`), if its views exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_schema: Option<String>,
    /// Those views.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preview_views: Vec<String>,
}

/// A shape change a run recorded for one table.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeRecord {
    /// The run.
    pub run_id: i64,
    /// The projection.
    pub projection: String,
    /// The live table.
    pub table: String,
    /// SHA-256 of the DDL that ran.
    pub ddl_hash: String,
    /// The DDL that ran.
    pub ddl: String,
    /// The columns that changed: `[{"before": {name, type}|null, "after": …}]`.
    pub columns: serde_json::Value,
    /// The changes in words.
    pub changes: Vec<String>,
}

impl ShapeRecord {
    fn from(r: crate::state::shapes::Recorded) -> ShapeRecord {
        ShapeRecord {
            run_id: r.run_id,
            projection: r.projection,
            table: r.live.to_string(),
            ddl_hash: r.ddl_hash,
            ddl: r.ddl,
            columns: crate::pipeline::shape::diff::map_to_json(
                &crate::pipeline::shape::diff::changed(&r.map),
            ),
            changes: r.changes,
        }
    }
}

/// The shape changes run `run_id` recorded (of `projection` only, if given).
async fn shape_records(
    client: &Client,
    run_id: i64,
    projection: Option<&str>,
) -> Result<Vec<ShapeRecord>> {
    Ok(crate::state::shapes::of_run(client, run_id)
        .await?
        .into_iter()
        .filter(|r| projection.is_none_or(|p| r.projection == p))
        .map(ShapeRecord::from)
        .collect())
}

/// The stream lanes of a run that has not moved its checkpoint past them yet.
#[derive(Debug, Clone, Serialize)]
pub struct LaneStatus {
    /// The plan's number within the run.
    pub plan: i32,
    /// Lanes of the plan.
    pub lanes: i32,
    /// Lanes done.
    pub done: i32,
    /// The plan's last position.
    pub upto: i64,
    /// Events the plan holds.
    pub events: i64,
}

/// A projection's live runner, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunnerStatus {
    /// A runner holds the projection's runner lock now.
    pub up: bool,
    /// Last event applied to the live tables (None: none yet).
    pub checkpoint: Option<i64>,
    /// Events after the checkpoint, up to the head (those the filter lets through).
    pub lag_events: Option<i64>,
    /// Age of the oldest event not applied yet (0 when caught up; None without a timestamp).
    pub lag_seconds: Option<f64>,
    /// A handler error stopped it.
    pub stopped: bool,
    /// The handler error that stopped it, if any.
    pub last_error: Option<String>,
    /// Position of the event that failed.
    pub last_error_position: Option<i64>,
    /// The event the runner waits on for an operator's decision (`reproject skip` / `retry`),
    /// if one is parked for this projection.
    pub parked: Option<crate::state::parked_events::ParkedEvent>,
    /// How the checkpoint was set last: `run`, `swap`, `rollback`, `start`.
    pub set_by: Option<String>,
    /// The handlers the runner applies when they are not its config's: a swap or rollback
    /// handed it tables built with other ones, and it switched to those.
    pub handlers: Option<String>,
    /// Host of the runner that holds the lock (or held it last).
    pub host: Option<String>,
    /// Its process id.
    pub pid: Option<i32>,
    /// When it started.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What `status` shows: every projection of the config.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Where (`user@host:port/db`, no password).
    pub database: String,
    /// Highest position in the event table.
    pub head: Option<i64>,
    /// Each projection, in config order.
    pub projections: Vec<ProjectionStatus>,
}

/// `reproject status`.
pub async fn status(engine: &Engine<'_>) -> Result<StatusReport> {
    let config = engine.config;
    let client = read_only(engine).await?;
    let resolved = crate::pipeline::validate::validate(&client, config).await?;
    let source = EventSource::new(&config.events, &resolved);
    let head = source.head(&client).await?;
    let has_state = crate::state::exists(&client).await?;
    let helpers = if has_state {
        // Read-only: list without pruning.
        helpers_read_only(&client).await?
    } else {
        Vec::new()
    };
    let names: Vec<String> = config.projections.iter().map(|p| p.name.clone()).collect();
    let live_checkpoints = if has_state && live_checkpoints::exists(&client).await? {
        live_checkpoints::read(&client, &names).await?
    } else {
        Vec::new()
    };
    let mut projections = Vec::new();
    for (i, p) in config.projections.iter().enumerate() {
        let cp = live_checkpoints.iter().find(|c| c.projection == p.name);
        let runner = runner_status(&client, &source, head, &p.name, cp, has_state).await?;
        let run = if has_state {
            runs::latest_for(&client, &p.name).await?
        } else {
            None
        };
        let (state, checkpoint) = match &run {
            None => ("live".to_string(), None),
            Some(r) => {
                let cp = runs::checkpoint(&client, r.id).await?;
                let state = match &r.status {
                    RunStatus::Running
                        if locks::is_locked(&client, locks::LockClass::Projection, &p.name)
                            .await? =>
                    {
                        "rebuilding"
                    }
                    RunStatus::Running => "interrupted",
                    RunStatus::Paused => "paused",
                    RunStatus::AwaitingSwap => "awaiting swap",
                    RunStatus::ChecksFailed => "checks failed",
                    RunStatus::RolledBack => "rolled back",
                    other => other.as_str(),
                };
                (state.to_string(), cp)
            }
        };
        let unfinished = run.as_ref().is_some_and(|r| !r.status.is_final());
        // A run replaying in stream lanes keeps its checkpoint at the plan's start until every
        // lane is done; the lanes' own progress is in `reproject.lanes` (not in a state schema
        // from before migration 012, which `status` does not migrate).
        let plan = match &run {
            Some(r) if unfinished && lanes_table_exists(&client).await? => {
                let at = runs::cursor(&client, r.id).await?;
                crate::state::lanes::at_checkpoint(&client, r.id, &at).await?
            }
            _ => None,
        };
        // Events the per-event lanes (done or not) applied past the checkpoint are not lag.
        let applied_in_lanes = match (&run, &plan) {
            (Some(r), Some(plan)) => crate::state::lanes::counted(&client, r.id, plan.plan).await?,
            _ => 0,
        };
        let lanes = plan.map(|plan| LaneStatus {
            plan: plan.plan,
            lanes: plan.lanes,
            done: plan.lanes - plan.pending.len() as i32,
            upto: plan.upto,
            events: plan.events,
        });
        let lag = match (unfinished, head) {
            (true, Some(h)) => Some((h - checkpoint.unwrap_or(0).min(h) - applied_in_lanes).max(0)),
            _ => None,
        };
        let rebuilding = state == "rebuilding";
        let preview_views = match &run {
            Some(r) if has_state => crate::state::previews::views_of_run(&client, r.id).await?,
            _ => Vec::new(),
        };
        let rate = run.as_ref().filter(|_| rebuilding).and_then(|r| {
            let secs = (chrono::Utc::now() - r.started_at).num_milliseconds() as f64 / 1000.0;
            (secs > 0.0).then(|| r.events_applied as f64 / secs)
        });
        let eta = match (rate, lag) {
            (Some(rate), Some(lag)) if rate > 0.0 => Some(lag as f64 / rate),
            _ => None,
        };
        projections.push(ProjectionStatus {
            name: p.name.clone(),
            events_applied: run
                .as_ref()
                .filter(|_| rebuilding)
                .map(|r| r.events_applied),
            events_per_second: rate,
            eta_seconds: eta,
            state,
            run_id: run.as_ref().map(|r| r.id),
            phase: run.as_ref().filter(|_| unfinished).map(|r| r.phase.clone()),
            checkpoint,
            lag,
            tables: resolved.tables[i].iter().map(|t| t.to_string()).collect(),
            helper_tables: helpers
                .iter()
                .filter(|h| h.projection == p.name)
                .map(|h| format!("{} ({})", h.table, h.kind))
                .collect(),
            error: run
                .as_ref()
                .filter(|_| unfinished)
                .and_then(|r| r.error.clone()),
            initiated_by: run.as_ref().map(|r| r.initiated_by.clone()),
            db_session_user: run.as_ref().and_then(|r| r.db_session_user.clone()),
            db_current_user: run.as_ref().and_then(|r| r.db_current_user.clone()),
            lanes,
            runner,
            shape: match &run {
                Some(r) => shape_records(&client, r.id, Some(&p.name)).await?,
                None => Vec::new(),
            },
            preview_schema: preview_views.first().map(|v| v.schema.clone()),
            preview_views: preview_views
                .iter()
                .map(|v| format!("{}.{}", quote(&v.schema), quote(&v.name)))
                .collect(),
        });
    }
    Ok(StatusReport {
        database: engine.db.describe(),
        head,
        projections,
    })
}

async fn lanes_table_exists(client: &Client) -> Result<bool> {
    let row = client
        .query_one("SELECT to_regclass('reproject.lanes') IS NOT NULL", &[])
        .await
        .context("cannot look for reproject.lanes")?;
    Ok(row.get(0))
}

async fn runner_status(
    client: &Client,
    source: &EventSource,
    head: Option<i64>,
    name: &str,
    cp: Option<&live_checkpoints::LiveCheckpoint>,
    has_state: bool,
) -> Result<Option<RunnerStatus>> {
    let up = has_state && live_checkpoints::runner_up(client, name).await?;
    let Some(cp) = cp else {
        return Ok(up.then_some(RunnerStatus {
            up,
            checkpoint: None,
            lag_events: None,
            lag_seconds: None,
            stopped: false,
            last_error: None,
            last_error_position: None,
            parked: None,
            set_by: None,
            handlers: None,
            host: None,
            pid: None,
            started_at: None,
        }));
    };
    let (mut lag_events, mut lag_seconds) = (Some(0), Some(0.0));
    if let Some(head) = head.filter(|&h| cp.position.is_none_or(|p| p < h)) {
        let (from, upto) = (Cursor::at(cp.position), Bound::UpTo(head));
        lag_events = Some(source.count(client, &from, &upto).await?.events);
        let oldest = source.read_batch(client, &from, &upto, 1).await?;
        lag_seconds = match oldest.first() {
            Some(ev) => match ev.timestamp {
                Some(ts) => {
                    let now: chrono::DateTime<chrono::Utc> = client
                        .query_one("SELECT now()", &[])
                        .await
                        .context("cannot read the server's clock")?
                        .get(0);
                    Some(((now - ts).num_milliseconds() as f64 / 1000.0).max(0.0))
                }
                None => None,
            },
            None => Some(0.0),
        };
    }
    let parked = if parked_events::exists(client).await? {
        parked_events::open_for(client, &[name.to_string()]).await?
    } else {
        None
    };
    Ok(Some(RunnerStatus {
        up,
        parked,
        checkpoint: cp.position,
        lag_events,
        lag_seconds,
        stopped: cp.stopped,
        last_error: cp.last_error.clone(),
        last_error_position: cp.last_error_position,
        set_by: Some(cp.set_by.clone()),
        handlers: cp.handlers.clone(),
        host: cp.runner_host.clone(),
        pid: cp.runner_pid,
        started_at: cp.runner_started_at,
    }))
}

async fn helpers_read_only(client: &Client) -> Result<Vec<helpers::HelperTable>> {
    let rows = client
        .query(
            "SELECT h.table_schema, h.table_name, h.table_oid, h.kind, h.live_name, h.projection, h.run_id, h.created_at \
             FROM reproject.helper_tables h JOIN pg_class c ON c.oid = h.table_oid \
             ORDER BY h.created_at",
            &[],
        )
        .await
        .context("cannot read reproject's helper tables")?;
    Ok(rows
        .iter()
        .map(|r| helpers::HelperTable {
            table: crate::model::ident::TableName::new(
                r.get::<_, String>(0),
                r.get::<_, String>(1),
            ),
            oid: r.get(2),
            kind: r.get(3),
            live_name: r.get(4),
            projection: r.get(5),
            run_id: r.get(6),
            created_at: r.get(7),
            // Read-only: the column may not exist yet (status does not show it).
            retired_by: None,
        })
        .collect())
}

/// Which runs [`history`] shows.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// How many runs, newest first.
    pub limit: i64,
    /// Only runs of these projections (default: the config's).
    pub projections: Vec<String>,
    /// Runs of every projection recorded in the database, not only the config's
    /// (`--all-projections`): named projections may then be any recorded one.
    pub all_projections: bool,
}

/// What [`history`] found.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    /// The runs that touch a projection in scope, newest first.
    pub runs: Vec<Run>,
    /// Runs recorded in the database that touch no projection in scope (other configs'),
    /// not shown; `--all-projections` shows them.
    pub other_runs: i64,
    /// True when projections were named (the scope is those, not the config's).
    pub named: bool,
    /// The shape changes (`reshape`) of the runs shown.
    pub shapes: Vec<ShapeRecord>,
    /// The preview views (`rebuild --preview-schema`) of the runs shown that exist now.
    pub previews: Vec<crate::state::previews::ViewRecord>,
}

/// `reproject history`: the runs of the config's projections (or the named ones, or every
/// run with `all_projections`), newest first. A run that touched a projection in scope is
/// shown whole, other projections included.
pub async fn history(engine: &Engine<'_>, opts: &HistoryOptions) -> Result<HistoryReport> {
    crate::commands::scope::check(engine, &opts.projections, opts.all_projections)?;
    let client = read_only(engine).await?;
    if !crate::state::exists(&client).await? {
        return Ok(HistoryReport {
            runs: Vec::new(),
            other_runs: 0,
            named: !opts.projections.is_empty(),
            shapes: Vec::new(),
            previews: Vec::new(),
        });
    }
    // None: no filter.
    let scope: Option<Vec<String>> = if !opts.projections.is_empty() {
        Some(opts.projections.clone())
    } else if opts.all_projections {
        None
    } else {
        Some(
            engine
                .config
                .projections
                .iter()
                .map(|p| p.name.clone())
                .collect(),
        )
    };
    let runs = runs::list_touching(&client, scope.as_deref(), opts.limit).await?;
    let other_runs = match &scope {
        Some(names) => client
            .query_one(
                "SELECT count(*) FROM reproject.runs WHERE NOT (projections && $1::text[])",
                &[names],
            )
            .await
            .context("cannot read the run history")?
            .get(0),
        None => 0,
    };
    let mut shapes = Vec::new();
    let mut previews = Vec::new();
    for r in &runs {
        shapes.extend(shape_records(&client, r.id, None).await?);
        previews.extend(crate::state::previews::views_of_run(&client, r.id).await?);
    }
    Ok(HistoryReport {
        runs,
        other_runs,
        named: !opts.projections.is_empty(),
        shapes,
        previews,
    })
}
