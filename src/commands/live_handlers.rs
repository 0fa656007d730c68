//! Which handlers `reproject run` applies to each projection it keeps live.
//!
//! A runner starts with the config's handlers. A swap may hand it tables built with other ones
//! (a rolling deploy: the runner still has the old config while the new generation, maybe of a
//! new shape, was built with the new one), and a rollback may hand back tables built with other
//! ones. Applying the runner's handlers to them would mix two versions in one table (an added
//! column left NULL, or errors), so at such a hand-over the runner switches that projection to
//! the handlers that built the tables, as the run that built them recorded them: the same
//! recorded handlers a rollback catches the previous tables up with (pipeline/old_generation.rs).
//! A Rust projection cannot be switched (its code is in the binary): the runner stops it.
//!
//! The switch happens in the batch that first sees the new checkpoint: that batch is rolled
//! back before it applies anything, and the next one starts exactly at the hand-over position
//! with the switched handlers, so no event is lost or applied twice.

use crate::apply::sql::{Projector, Target};
use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::model::handlers::{self, Section};
use crate::model::Resolved;
use crate::state::live_checkpoints::LiveCheckpoint;
use crate::state::runs;
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// The handlers a runner applies to one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Handlers {
    /// The config's.
    Config,
    /// The handler file a run recorded (it built the live tables with it).
    Recorded { run: i64, source: String },
}

impl Handlers {
    /// What `status` shows about them (None: the config's, nothing to say).
    pub(super) fn describe(&self) -> Option<String> {
        match self {
            Handlers::Config => None,
            Handlers::Recorded { run, .. } => Some(format!(
                "the handlers recorded by run {run}, which built the live tables (not this runner's config's: restart it with the config that built them)"
            )),
        }
    }
}

/// What a hand-over asks of one projection of a group.
pub(super) enum Change {
    /// Apply other handlers from the hand-over position on (`member`: index in the group).
    Switch {
        member: usize,
        to: Handlers,
        note: String,
    },
    /// The projection cannot go on with this runner (a Rust projection built by another
    /// version): the group stops with this message.
    Stop(String),
}

/// The run whose handlers built the tables a hand-over gave the runner, and what that run
/// recorded: the checkpoint set by a swap names the run that built the new tables; set by a
/// rollback, it names the rolled-back run, and the restored tables are the generation before it.
async fn built_by(
    conn: &Client,
    cp: &LiveCheckpoint,
) -> Result<Option<(&'static str, Option<(i64, Option<String>, Option<String>)>)>> {
    let Some(run) = cp.set_by_run else {
        return Ok(None);
    };
    let built = match cp.set_by.as_str() {
        "swap" => Some(run),
        "rollback" => runs::previous_swapped_run(conn, run, &cp.projection).await?,
        _ => return Ok(None),
    };
    let what = if cp.set_by == "swap" {
        "swapped in"
    } else {
        "rolled back to"
    };
    Ok(Some((
        what,
        match built {
            Some(b) => {
                let (source, digest) = runs::recorded_handlers(conn, b, &cp.projection).await?;
                Some((b, source, digest))
            }
            None => None,
        },
    )))
}

/// The changes the hand-overs since the runner `started` ask of a group whose projections
/// (`order`, `names`) apply `applied`.
pub(super) async fn at_handover(
    config: &Config,
    conn: &Client,
    started: DateTime<Utc>,
    order: &[usize],
    names: &[String],
    applied: &[Handlers],
    cps: &[LiveCheckpoint],
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for (member, (&i, name)) in order.iter().zip(names).enumerate() {
        let Some(cp) = cps.iter().find(|c| &c.projection == name) else {
            continue;
        };
        // Hand-overs before the runner started: it chose its handlers after them.
        if cp.updated_at <= started {
            continue;
        }
        let Some((what, built)) = built_by(conn, cp).await? else {
            continue;
        };
        let p = &config.projections[i];
        let mine = super::handler_digest(config, i);
        match built {
            // Restored tables reproject did not build (the application did): nothing recorded
            // is better than the config's handlers.
            None => {
                if applied[member] != Handlers::Config {
                    changes.push(Change::Switch {
                        member,
                        to: Handlers::Config,
                        note: format!(
                            "the tables of `{name}` were {what} by a rollback, and no run recorded the handlers that built them: applying this runner's configured handlers to them again"
                        ),
                    });
                }
            }
            Some((run, _, Some(digest))) if p.is_rust() && digest != mine => {
                changes.push(Change::Stop(format!(
                    "run {run} built the tables of Rust projection `{name}` that were {what} with another version than this runner's, and a runner cannot switch the code of a Rust projection; restart `reproject run` with the binary and config that built them"
                )));
            }
            Some((_, _, _)) if p.is_rust() => {}
            Some((run, Some(source), _)) => {
                if source.starts_with(crate::model::config::EXTERNAL_SOURCE_PREFIX) {
                    changes.push(Change::Stop(format!(
                        "the tables of `{name}` that were {what} were built by an external projector (run {run}); restart `reproject run` with the config that built them"
                    )));
                    continue;
                }
                let to = if p.recorded_source() == Some(source.as_str()) {
                    Handlers::Config
                } else {
                    Handlers::Recorded { run, source }
                };
                if to != applied[member] {
                    let note = match &to {
                        Handlers::Config => format!(
                            "the tables of `{name}` were {what}, built by run {run} with this runner's configured handlers: applying them again"
                        ),
                        Handlers::Recorded { .. } => format!(
                            "the tables of `{name}` were {what}, built by run {run} with other handlers than this runner's config ({}): applying the handlers run {run} recorded from now on; restart `reproject run` with the config that built them",
                            p.handler_path().display()
                        ),
                    };
                    changes.push(Change::Switch { member, to, note });
                }
            }
            // A run that recorded no handler file (an older version): only the digest tells.
            Some((run, None, Some(digest))) if digest != mine => {
                changes.push(Change::Stop(format!(
                    "run {run} built the tables of `{name}` that were {what} with other handlers than this runner's, and recorded no handler file to switch to; restart `reproject run` with the config that built them"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(changes)
}

/// Prepares the handlers of the projections `subset` (config indexes), each as `applied` says.
pub(super) async fn prepare(
    conn: &Client,
    target: &Target<'_>,
    subset: &[usize],
    applied: &[&Handlers],
) -> Result<Projector> {
    if applied.iter().all(|h| **h == Handlers::Config) {
        return Projector::prepare(conn, target, subset).await;
    }
    let config = target.config;
    let mut owned: Vec<(String, String, Vec<Section>)> = Vec::new();
    // Tables a recorded run added (`create`) that this runner's config does not list yet: the
    // recorded handlers write them, and they are live since that run's swap.
    let mut added: Vec<crate::model::ident::TableName> = Vec::new();
    for h in applied {
        if let Handlers::Recorded { run, .. } = h {
            added.extend(
                runs::tables(conn, *run)
                    .await?
                    .into_iter()
                    .filter(|t| t.added)
                    .map(|t| t.live),
            );
        }
    }
    for (&i, h) in subset.iter().zip(applied) {
        let p = &config.projections[i];
        match h {
            Handlers::Config if p.is_rust() => {
                return Err(Error::config(format!(
                    "Rust projection `{}` cannot be applied together with recorded handlers of the projections it is connected to",
                    p.name
                ))
                .with_hint("restart `reproject run` with the config that built the live tables"))
            }
            Handlers::Config => owned.push((
                p.name.clone(),
                p.handler_path().display().to_string(),
                p.sections().to_vec(),
            )),
            Handlers::Recorded { run, source } => {
                let label = format!("handlers of `{}` recorded by run {run}", p.name);
                let sections = handlers::parse(source).map_err(|(line, why)| {
                    Error::config(format!("{label}, line {line}: {why}"))
                })?;
                owned.push((p.name.clone(), label, sections));
            }
        }
    }
    let borrowed: Vec<(String, String, &[Section])> = owned
        .iter()
        .map(|(n, l, s)| (n.clone(), l.clone(), s.as_slice()))
        .collect();
    let resolved: &Resolved = target.resolved;
    Ok(Projector::prepare_sections(conn, &borrowed, |r| {
        let owner = match config.owner_of(&r.written) {
            Ok(owner) => owner,
            Err(why) => {
                let named = crate::model::ident::parse_table_ref(&r.written).ok();
                if let Some(t) = added.iter().find(|t| {
                    named.as_ref().is_some_and(|n| {
                        n.name == t.name && n.schema.as_ref().is_none_or(|s| *s == t.schema)
                    })
                }) {
                    return Ok(t.quoted());
                }
                return Err(Error::config(format!(
                    "`{{{{{}}}}}` is no longer a table of a projection in the config ({why})",
                    r.written
                )));
            }
        };
        Ok(resolved.live(owner).quoted())
    })
    .await?
    .with_writes(target.writes(subset).with_own(added.iter().cloned())))
}

/// At start: a runner must not apply handlers to live tables of a shape they were not written
/// for. Refuses when the live tables of a projection were reshaped by the run that built them
/// (and whose generation is live), with other handlers than the config's, and the config does
/// not declare that shape: it is the config from before the change.
pub(super) async fn refuse_older_shape(
    config: &Config,
    resolved: &Resolved,
    conn: &Client,
    order: &[usize],
) -> Result<()> {
    for &i in order {
        let p = &config.projections[i];
        let Some(run) = runs::latest_swapped_for(conn, &p.name)
            .await?
            .filter(|r| r.status == runs::RunStatus::Swapped)
        else {
            continue;
        };
        if let Some(Some(crate::pipeline::shape::Planned::AlreadyApplied(r))) =
            resolved.shapes.get(i)
        {
            if *r == run.id {
                continue;
            }
        }
        let reshaped = crate::state::shapes::of_run(conn, run.id)
            .await?
            .iter()
            .any(|s| s.projection == p.name);
        if !reshaped {
            continue;
        }
        let (_, digest) = runs::recorded_handlers(conn, run.id, &p.name).await?;
        if digest.is_some_and(|d| d != super::handler_digest(config, i)) {
            return Err(Error::config(format!(
                "the live tables of projection `{}` were reshaped and built by run {} with other handlers than this config's ({}), which were written for the shape before",
                p.name,
                run.id,
                p.handler_path().display()
            ))
            .with_hint(format!(
                "restart `reproject run` with the config that built them (the one with its `reshape`), or `reproject rollback {}` to go back to the previous shape",
                run.id
            )));
        }
    }
    Ok(())
}
