//! Which projections `cleanup`, `history` and `rollback` act on: the config's (or the ones
//! named), so that configs sharing a database never act on each other's projections; every
//! recorded one only with `--all-projections`.

use crate::commands::Engine;
use crate::error::{Error, Result};

/// Which projections a command acts on: the named ones, else the config's; every recorded
/// one with `all` (named ones then need not be in the config).
pub(crate) fn check(engine: &Engine<'_>, named: &[String], all: bool) -> Result<()> {
    if all {
        return Ok(());
    }
    for name in named {
        if engine.config.projection_index(name).is_none() {
            return Err(Error::config(format!(
                "unknown projection `{name}`: it is not in {}",
                engine.config.path.display()
            ))
            .with_hint(
                "name projections of this config, or add `--all-projections` to name projections that only other configs have",
            ));
        }
    }
    Ok(())
}

/// Whether `projection` is in the scope of a command (see [`check`]).
pub(crate) fn contains(engine: &Engine<'_>, named: &[String], all: bool, projection: &str) -> bool {
    if !named.is_empty() {
        named.iter().any(|n| n == projection)
    } else {
        all || engine.config.projection_index(projection).is_some()
    }
}
