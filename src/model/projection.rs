//! Projections written in Rust: the [`RustProjection`] trait, registering its code
//! ([`Config::register`]) and the checks a run of them needs.
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
//!
//! The trait and the registry live in [`crate::model`] (the config holds the registry, and
//! nothing the config imports may import the engine); this module is their public path, the
//! registration and the checks that need the config. How a batch applies them with the SQL
//! projections of its run is `replay::rust`.

use crate::error::{Error, Result};
use crate::model::config::Config;
use std::sync::Arc;

pub use crate::model::{Batch, BoxFuture, RustProjection};

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
