//! A builder for a test's `reproject.toml` and handler files, written to a temp dir as a
//! `Project`. It writes the same layout the hand-written configs have (a leading blank line,
//! the `[events]` keys in the order given, each projection's `name`, `tables`, `handlers`, then
//! its options in the order given), so error messages that name a line of the config stay put.
//!
//! ```ignore
//! let p = Config::tally_events()
//!     .projection(Projection::new("tally").option("stream_key", "stream"))
//!     .file("tally.sql", tally::HANDLERS)
//!     .write();
//! ```

use crate::harness::Project;

/// A `reproject.toml` being built, with the files that go beside it.
#[derive(Clone, Default)]
pub struct Config {
    events: Vec<(String, String)>,
    projections: Vec<Projection>,
    files: Vec<(String, String)>,
}

/// One `[[projection]]` table.
#[derive(Clone)]
pub struct Projection {
    name: String,
    tables: Vec<String>,
    handlers: Option<String>,
    options: Vec<(String, String)>,
}

/// A TOML basic string.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Config {
    /// An `[events]` section on `table` with the usual columns: position `id`, `stream`, `type`,
    /// `data`.
    pub fn events(table: &str) -> Config {
        Config::default()
            .event("table", table)
            .event("position", "id")
            .event("stream", "stream")
            .event("type", "type")
            .event("data", "data")
    }
    /// The events of the tally fixture (tally.rs): also a `timestamp` and the `NOT bad` filter.
    pub fn tally_events() -> Config {
        Config::events("events")
            .event("timestamp", "at")
            .event("filter", "NOT bad")
    }
    /// `key = "value"` in `[events]`.
    pub fn event(self, key: &str, value: &str) -> Config {
        self.event_toml(key, &quoted(value))
    }
    /// `key = VALUE` in `[events]`, the value written as given (a number, an array, a table).
    pub fn event_toml(mut self, key: &str, value: &str) -> Config {
        self.events.push((key.to_string(), value.to_string()));
        self
    }
    pub fn projection(mut self, projection: Projection) -> Config {
        self.projections.push(projection);
        self
    }
    /// A file beside the config (a handler file, say), by its relative path; it replaces one
    /// of the same name given before.
    pub fn file(mut self, name: &str, text: &str) -> Config {
        self.files.retain(|(n, _)| n != name);
        self.files.push((name.to_string(), text.to_string()));
        self
    }
    /// The text of `reproject.toml`.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        if !self.events.is_empty() {
            out.push_str("\n[events]\n");
            for (k, v) in &self.events {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        for p in &self.projections {
            out.push('\n');
            out.push_str(&p.toml());
        }
        out
    }
    /// Writes the config and its files into a fresh temp dir.
    pub fn write(&self) -> Project {
        let files: Vec<(&str, &str)> = self
            .files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        Project::new(&self.toml(), &files)
    }
}

impl Projection {
    /// Projection `name` with one table of the same name and handlers in `NAME.sql`.
    pub fn new(name: &str) -> Projection {
        Projection {
            name: name.to_string(),
            tables: vec![name.to_string()],
            handlers: Some(format!("{name}.sql")),
            options: Vec::new(),
        }
    }
    pub fn tables(mut self, tables: &[&str]) -> Projection {
        self.tables = tables.iter().map(|t| t.to_string()).collect();
        self
    }
    /// The handlers file, or none (a projection built by another program, say).
    pub fn handlers(mut self, file: Option<&str>) -> Projection {
        self.handlers = file.map(str::to_string);
        self
    }
    /// `key = "value"`.
    pub fn option(self, key: &str, value: &str) -> Projection {
        self.option_toml(key, &quoted(value))
    }
    /// `key = VALUE`, the value written as given (a number, a boolean, an array, a table).
    pub fn option_toml(mut self, key: &str, value: &str) -> Projection {
        self.options.push((key.to_string(), value.to_string()));
        self
    }
    /// A health check: `checks = [{ name = NAME, sql = SQL }]` (one `checks` line per call).
    pub fn check(self, name: &str, sql: &str) -> Projection {
        let value = format!("[{{ name = {}, sql = {} }}]", quoted(name), quoted(sql));
        self.option_toml("checks", &value)
    }
    fn toml(&self) -> String {
        let tables: Vec<String> = self.tables.iter().map(|t| quoted(t)).collect();
        let mut out = format!(
            "[[projection]]\nname = {}\ntables = [{}]\n",
            quoted(&self.name),
            tables.join(", ")
        );
        if let Some(h) = &self.handlers {
            out.push_str(&format!("handlers = {}\n", quoted(h)));
        }
        for (k, v) in &self.options {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}
