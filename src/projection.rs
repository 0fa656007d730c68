//! Projections written in Rust: the [`RustProjection`] trait, and how the engine applies them
//! alongside the SQL handlers of the same run.
//!
//! The config still declares such a projection (`name`, `tables`, `depends_on`, `checks`),
//! only without `handlers`; the program registers the code under the projection's name with
//! [`Config::register`]. From there the engine treats it like any other projection: it clones
//! the tables, reads the events in global order and in batches, calls
//! [`RustProjection::apply`] inside each batch's transaction, advances the checkpoint in that
//! same transaction and commits, catches up, runs the checks, applies the final tail under the
//! swap lock and swaps. `rebuild --resume`, `swap` and `reproject run` work the same way.
//!
//! Exactly once holds because the projection's writes and the checkpoint commit together:
//! the implementation must write only through the client it is given, and must neither
//! commit nor roll back (the engine notices a transaction that ended under it and fails the
//! run rather than checkpoint a batch that was not applied atomically).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ident::{parse_table_ref, TableName};
use crate::replay::{Projector, Target};
use crate::source::Event;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_postgres::Client;

/// The future a [`RustProjection`] returns: boxed so the trait stays dyn-compatible (the
/// engine holds the registered projections as `Arc<dyn RustProjection>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A projection whose event handling is Rust code instead of SQL handlers.
///
/// The engine calls [`apply`](RustProjection::apply) once per batch with the batch's events
/// in global order; the implementation writes the projection's tables through
/// [`Batch::client`], naming them with [`Batch::table`] (the `_rebuild` clone during a rebuild,
/// the live table under `reproject run`). It must not commit, roll back or open a transaction
/// of its own: the batch's transaction also advances the checkpoint, which is what makes each
/// event count exactly once across crashes, resumes and retries. A returned error rolls the
/// batch back and fails the run (resumable with `--resume`).
///
/// ```no_run
/// use reproject::projection::{Batch, BoxFuture, RustProjection};
///
/// /// Counts the events of each stream.
/// struct Counts;
///
/// impl RustProjection for Counts {
///     fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, reproject::Result<()>> {
///         Box::pin(async move {
///             let table = batch.table("stream_counts")?.quoted();
///             let sql = format!(
///                 "INSERT INTO {table} (stream, n) VALUES ($1, 1) \
///                  ON CONFLICT (stream) DO UPDATE SET n = {table}.n + 1"
///             );
///             let statement = batch.client.prepare(&sql).await?;
///             for event in batch.events {
///                 batch.client.execute(&statement, &[&event.stream]).await?;
///             }
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait RustProjection: Send + Sync {
    /// Applies `batch.events`, in order, to the tables of this projection, inside the engine's
    /// transaction. Called with every event the config's `[events]` section selects (the
    /// projection filters by type itself); never called with an empty batch.
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<()>>;

    /// Identifies what this code writes; recorded with each run. A run built by another
    /// version is not continued by `rebuild --resume` or `swap` (mixing two versions in one
    /// table), so change it when the output changes. Default: empty (no such protection).
    fn version(&self) -> String {
        String::new()
    }
}

/// One batch for a [`RustProjection`]: the events and where to write them.
pub struct Batch<'a> {
    /// The engine's connection, inside the batch's transaction. Write through this client
    /// only, and do not end the transaction.
    pub client: &'a Client,
    /// The events of the batch in global order (never empty).
    pub events: &'a [Event],
    projection: &'a str,
    tables: &'a Tables,
}

/// Every projection's tables for one generation: (projection, as written in the config, the
/// physical table now).
type Tables = Vec<(String, String, TableName)>;

impl Batch<'_> {
    /// The physical table for a table of a projection, named as in its config `tables`,
    /// optionally qualified with the schema it resolved to (`"postings"` or
    /// `"public.postings"`), as a `{{table}}` reference in SQL handlers resolves: the
    /// `_rebuild` clone for a projection this run rebuilds, the live table otherwise. The
    /// projection's own tables win over another projection's of the same name. Write only your
    /// own; read another's only if the config says `depends_on` (that orders the two). Quote
    /// it with [`TableName::quoted`] in SQL.
    pub fn table(&self, name: &str) -> Result<&TableName> {
        let wanted = parse_table_ref(name)?;
        let matches = |(_, written, physical): &&(String, String, TableName)| {
            // The schema is the one the table resolved to (the clone lives beside it).
            parse_table_ref(written).is_ok_and(|t| {
                t.name == wanted.name
                    && wanted.schema.as_ref().is_none_or(|s| *s == physical.schema)
            })
        };
        let own = self
            .tables
            .iter()
            .filter(|t| t.0 == self.projection)
            .find(matches);
        let found: Vec<_> = match own {
            Some(t) => vec![t],
            None => self.tables.iter().filter(matches).collect(),
        };
        match found.as_slice() {
            [(_, _, physical)] => Ok(physical),
            [] => Err(Error::config(format!(
                "projection `{}` asked for table `{name}`, which no projection of the config owns",
                self.projection
            ))
            .with_hint(format!(
                "its own tables in the config: {}",
                self.tables
                    .iter()
                    .filter(|t| t.0 == self.projection)
                    .map(|(_, w, _)| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Err(Error::config(format!(
                "projection `{}` asked for table `{name}`, which several projections own",
                self.projection
            ))
            .with_hint("qualify it with its schema")),
        }
    }

    /// The name of the projection being applied.
    pub fn projection(&self) -> &str {
        self.projection
    }
}

/// The Rust projections a program registered, by projection name.
#[derive(Clone, Default)]
pub(crate) struct Registry(BTreeMap<String, Arc<dyn RustProjection>>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Config {
    /// Registers the Rust code of the projection `name`, which the config declares without
    /// `handlers`. Fails (a config error) when the config has no such projection, when it has
    /// SQL handlers, or when code is already registered for it.
    pub fn register(
        &mut self,
        name: &str,
        projection: impl RustProjection + 'static,
    ) -> Result<&mut Self> {
        let file = self.path.display().to_string();
        let Some(i) = self.projection_index(name) else {
            return Err(Error::config(format!(
                "cannot register a Rust projection `{name}`: {file} declares no projection of that name"
            ))
            .with_hint("declare it as a `[[projection]]` with `name`, `tables` and no `handlers`"));
        };
        let p = &self.projections[i];
        if !p.is_rust() {
            return Err(Error::config(format!(
                "{file}:{}: projection `{name}` has SQL handlers (`{}`); cannot also register Rust code for it",
                p.line,
                p.handler_path().display()
            ))
            .with_hint("remove `handlers` from the projection to apply it with the Rust code"));
        }
        if self.registered.0.contains_key(name) {
            return Err(Error::config(format!(
                "a Rust projection is already registered for `{name}`"
            )));
        }
        self.registered
            .0
            .insert(name.to_string(), Arc::new(projection));
        Ok(self)
    }

    /// The Rust code registered for projection `name`, if any.
    pub fn rust_projection(&self, name: &str) -> Option<&Arc<dyn RustProjection>> {
        self.registered.0.get(name)
    }
}

/// Refuses to run projections declared without `handlers` that have no registered code: the
/// `reproject` binary never has any, a program may have forgotten one. Call before anything
/// is written.
pub fn require_registered(config: &Config, order: &[usize]) -> Result<()> {
    for &i in order {
        let p = &config.projections[i];
        if p.is_rust() && config.rust_projection(&p.name).is_none() {
            return Err(Error::config(format!(
                "{}:{}: projection `{}` has neither `handlers` nor `command`, and no Rust projection is registered under that name",
                config.path.display(),
                p.line,
                p.name
            ))
            .with_hint(
                "a projection without `handlers` is a library projection: rebuild it from a Rust program that calls `Config::register` (the `reproject` binary cannot run Rust code), or give it `handlers = \"FILE.sql\"` (or `command = [...]` for an external projector)",
            ));
        }
    }
    Ok(())
}

/// The digest input that stands for a Rust projection's code in a run's handler digests.
pub(crate) fn version_tag(config: &Config, projection: usize) -> String {
    let name = &config.projections[projection].name;
    let version = config
        .rust_projection(name)
        .map(|p| p.version())
        .unwrap_or_default();
    format!("rust projection version {version:?}")
}

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
    require_registered(config, order)?;
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
                crate::ident::rebuild_table(live)
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

    /// Projection names in application order.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for step in &self.steps {
            match step {
                Step::Sql(projector) => names.extend(projector.names()),
                Step::Rust { name, .. } => names.push(name.as_str()),
            }
        }
        names
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
    let batch = Batch {
        client,
        events,
        projection: name,
        tables,
    };
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
            .with_hint("a Rust projection must not COMMIT, ROLLBACK or BEGIN: the engine commits each batch together with its checkpoint; the writes of this batch may have been committed without it, so rebuild from scratch (not `--resume`)")
        })
}
