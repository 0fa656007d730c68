//! How a batch applies the Rust projections of its run (projection.rs) together with its SQL
//! projections, in dependency order: event by event when they read each other, each under a
//! savepoint that proves the batch's transaction is still open.

use crate::apply::sql::{Projector, Target};
use crate::error::{Error, Result};
use crate::model::{Batch, Event, RustProjection, Tables};
use std::sync::Arc;
use tokio_postgres::Client;

/// One step of a batch: a group of SQL projections, or one Rust projection.
enum Step {
    Sql(Projector),
    Rust {
        name: String,
        code: Arc<dyn RustProjection>,
        tables: Arc<Tables>,
    },
}

/// How a run that includes Rust projections applies a batch.
pub(crate) struct Steps {
    /// In dependency order.
    steps: Vec<Step>,
    /// A Rust projection reads or is read by another projection of the run: apply event by
    /// event, so each sees the others exactly as they were at that event (as SQL handlers
    /// do). Otherwise the projections are independent and each takes the whole batch.
    per_event: bool,
}

/// Prepares `order` (projection indexes, topological order) for `target` when it includes a
/// Rust projection; None when all are SQL (the plain [`Projector`] applies those).
pub(crate) async fn prepare(
    client: &Client,
    target: &Target<'_>,
    order: &[usize],
) -> Result<Option<Steps>> {
    let config = target.config;
    if !order.iter().any(|&i| config.projections[i].is_rust()) {
        return Ok(None);
    }
    crate::model::projection::require_registered(config, order)?;
    let names: Vec<&str> = order
        .iter()
        .map(|&i| config.projections[i].name.as_str())
        .collect();
    let per_event = order.iter().any(|&i| {
        let p = &config.projections[i];
        p.is_rust()
            && order.iter().any(|&j| {
                let q = &config.projections[j];
                i != j && (p.depends_on.contains(&q.name) || q.depends_on.contains(&p.name))
            })
    }) && names.len() > 1;
    // Independent projections: all SQL ones in one group (one server loop), then the Rust
    // ones. Dependent ones: consecutive runs of SQL projections, in order.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut rust = Vec::new();
    for &i in order {
        if config.projections[i].is_rust() {
            if per_event {
                groups.push(vec![i]);
            } else {
                rust.push(vec![i]);
            }
        } else {
            match groups.last_mut() {
                Some(g) if !config.projections[g[0]].is_rust() => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
    }
    groups.extend(rust);
    let mut tables: Tables = Vec::new();
    for (i, p) in config.projections.iter().enumerate() {
        for (k, t) in p.tables.iter().enumerate() {
            let live = &target.resolved.tables[i][k];
            let physical = if target.rebuilding.contains(&i) {
                crate::model::ident::rebuild_table(live)
            } else {
                live.clone()
            };
            tables.push((p.name.clone(), t.table.to_string(), physical));
        }
    }
    let tables = Arc::new(tables);
    let mut steps = Vec::new();
    for group in groups {
        let p = &config.projections[group[0]];
        if p.is_rust() {
            let code = config
                .rust_projection(&p.name)
                .expect("checked by require_registered")
                .clone();
            steps.push(Step::Rust {
                name: p.name.clone(),
                code,
                tables: tables.clone(),
            });
        } else {
            // Boxed: Projector::prepare is what called us.
            steps.push(Step::Sql(
                Box::pin(Projector::prepare(client, target, &group)).await?,
            ));
        }
    }
    Ok(Some(Steps { steps, per_event }))
}

impl Steps {
    /// Applies `events` inside the caller's transaction, as [`Projector::apply`] does.
    pub(crate) async fn apply(&self, client: &Client, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if self.per_event {
            for k in 0..events.len() {
                self.apply_steps(client, &events[k..=k]).await?;
            }
            Ok(())
        } else {
            self.apply_steps(client, events).await
        }
    }

    async fn apply_steps(&self, client: &Client, events: &[Event]) -> Result<()> {
        for step in &self.steps {
            match step {
                Step::Sql(projector) => Box::pin(projector.apply(client, events)).await?,
                Step::Rust { name, code, tables } => {
                    apply_rust(client, name, code.as_ref(), tables, events).await?
                }
            }
        }
        Ok(())
    }
}

/// Runs one Rust projection on a batch under a savepoint: releasing it proves that the
/// transaction the batch began is still the one open, so the checkpoint commits with the
/// projection's writes.
async fn apply_rust(
    client: &Client,
    name: &str,
    code: &dyn RustProjection,
    tables: &Tables,
    events: &[Event],
) -> Result<()> {
    let first = events[0].position;
    let last = events[events.len() - 1].position;
    let failed = |e: Error| {
        let message =
            format!("projection `{name}` (Rust) failed on the events at positions {first}..{last}");
        let hint = e.hint.is_none();
        let e = e.context(message);
        if hint {
            e.with_hint("fix the projection's code (or the event), then run the rebuild again (`--resume` continues from the last checkpoint); nothing of the failed batch was kept")
        } else {
            e
        }
    };
    client
        .batch_execute("SAVEPOINT reproject_rust")
        .await
        .map_err(|e| failed(Error::from(e)))?;
    let batch = Batch::new(client, events, name, tables);
    code.apply(&batch).await.map_err(failed)?;
    client
        .batch_execute("RELEASE SAVEPOINT reproject_rust")
        .await
        .map_err(|e| {
            Error::runtime(format!(
                "projection `{name}` (Rust) ended the engine's transaction while applying the events at positions {first}..{last}"
            ))
            .caused_by(crate::error::describe_pg(&e))
            .with_db_state(&e)
            .with_source(e)
            .with_hint("a Rust projection must not COMMIT, ROLLBACK or BEGIN: the engine commits each batch together with its checkpoint; the writes of this batch may have been committed without it, so rebuild from scratch (not `--resume`)")
        })
}
