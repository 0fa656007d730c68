//! What a run rebuilds: every row of its tables ([`Scope::Full`]), or only some
//! ([`Scope::Partial`]: `--streams`, `--from-position`, …, pipeline/partial.rs), the others
//! seeded from the live tables. The rebuild's steps (commands/rebuild.rs) call each of these
//! hooks for every run, so they read the same for both; a full rebuild's hooks do nothing.

use crate::apply::sql::Projector;
use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::pipeline::partial::{self, Partial, PartialRequest};
use crate::pipeline::plan::Plan;
use crate::pipeline::Engine;
use crate::progress::Reporter;
use crate::read::source::{Cursor, EventSource};
use crate::state::runs::{self, RunTable};
use tokio_postgres::Client;

/// What a run rebuilds.
#[derive(Debug, Clone, Default)]
pub(crate) enum Scope {
    /// Every row, replayed from the first event.
    #[default]
    Full,
    /// Some rows replayed, the others taken from the live tables.
    Partial(Partial),
}

impl Scope {
    /// The scope asked for a new run, checked and resolved against the database (reads only).
    /// A resumed run continues with the one it recorded ([`Scope::continued`]), so none may be
    /// given with `--resume`.
    pub async fn requested(
        engine: &Engine<'_>,
        plan: &Plan,
        request: Option<&PartialRequest>,
        resume: bool,
    ) -> Result<Scope> {
        let Some(request) = request else {
            return Ok(Scope::Full);
        };
        if resume {
            return Err(Error::config(
                "--resume continues a run with the partial-rebuild options it recorded; --streams, --streams-where, --from-position and --from-time cannot be given with it",
            ));
        }
        crate::pipeline::shape::refuse_partial(engine.config, &plan.order)?;
        Ok(Scope::Partial(
            partial::resolve(engine, plan, request).await?,
        ))
    }

    /// The scope a recorded run continues with (`swap`, `--resume`), seeded now if its seeding
    /// did not commit.
    pub async fn continued(
        client: &Client,
        config: &Config,
        run: &runs::Run,
        tables: &[RunTable],
        reporter: &dyn Reporter,
    ) -> Result<Scope> {
        Ok(match Partial::of_run(&run.options)? {
            Some(p) => Scope::Partial(
                partial::ensure_seeded(client, config, run, p, tables, reporter).await?,
            ),
            None => Scope::Full,
        })
    }

    /// `--dry-run`: the steps the scope adds before the plan's own.
    pub async fn dry_run_steps(&self, engine: &Engine<'_>, plan: &Plan) -> Result<Vec<String>> {
        match self {
            Scope::Full => Ok(Vec::new()),
            Scope::Partial(p) => partial::dry_run_steps(engine, plan, p).await,
        }
    }

    /// What the run records in `runs.options.partial`.
    pub fn recorded(&self) -> Option<serde_json::Value> {
        match self {
            Scope::Full => None,
            Scope::Partial(p) => p.to_option().partial,
        }
    }

    /// Where the run's checkpoint starts (None: before the first event).
    pub fn start_position(&self) -> Option<i64> {
        match self {
            Scope::Full => None,
            Scope::Partial(p) => p.start_position(),
        }
    }

    /// Right after the clone: fills the rebuild tables with the rows that are not rebuilt.
    /// Returns the scope as recorded (a stream rebuild may have taken a live position).
    pub async fn seed(
        &self,
        client: &Client,
        config: &Config,
        run_id: i64,
        tables: &[RunTable],
        reporter: &dyn Reporter,
    ) -> Result<Scope> {
        Ok(match self {
            Scope::Full => Scope::Full,
            Scope::Partial(p) => {
                Scope::Partial(partial::seed(client, config, run_id, p, tables, reporter).await?)
            }
        })
    }

    /// The events the run replays.
    pub fn source(&self, base: EventSource) -> EventSource {
        match self {
            Scope::Full => base,
            Scope::Partial(p) => partial::source(base, p),
        }
    }

    /// Before the swap's locks are taken.
    pub async fn before_lock(
        &self,
        client: &Client,
        tables: &[RunTable],
        reporter: &dyn Reporter,
    ) -> Result<()> {
        match self {
            Scope::Full => Ok(()),
            Scope::Partial(p) => partial::before_lock(client, p, tables, reporter).await,
        }
    }

    /// Inside the swap transaction, after the final tail (the run is at `at`): the rows that
    /// are not rebuilt made the live ones.
    #[allow(clippy::too_many_arguments)]
    pub async fn at_swap(
        &self,
        client: &Client,
        config: &Config,
        run_id: i64,
        tables: &[RunTable],
        source: &EventSource,
        projector: &Projector,
        at: &Cursor,
        max_events: i64,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        match self {
            Scope::Full => Ok(()),
            Scope::Partial(p) => {
                partial::at_swap(
                    client, config, run_id, p, tables, source, projector, at, max_events, reporter,
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_full_scope_records_nothing_and_starts_at_the_first_event() {
        assert_eq!(Scope::Full.recorded(), None);
        assert_eq!(Scope::Full.start_position(), None);
    }

    #[test]
    fn a_partial_scope_records_its_selection_and_start() {
        let p = Partial::FromPosition {
            position: 42,
            from_time: None,
            columns: BTreeMap::from([("tally".to_string(), "pos".to_string())]),
        };
        let scope = Scope::Partial(p.clone());
        let recorded = scope.recorded().expect("a partial scope is recorded");
        assert_eq!(recorded["mode"], "from_position");
        assert_eq!(recorded["position"], 42);
        assert_eq!(Some(recorded), p.to_option().partial);
        assert_eq!(scope.start_position(), Some(42));
    }
}
