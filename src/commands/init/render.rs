//! The text `init` writes: `[events]` with a comment on each guessed key saying why, and a
//! commented `[[projection]]` skeleton, so the file explains itself to whoever opens it next.

use super::guess::{Column, Guess, Kind, Roles};
use crate::model::config::presets::Preset;

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn header(what: &str, database: &str) -> String {
    format!(
        "# reproject.toml, written by `reproject init` {what}\n\
         # in {database}.\n"
    )
}

/// The skeleton every starter ends with: what a projection needs, commented out.
const PROJECTION: &str = "
# A projection: the tables it rebuilds and the handler file that builds them. Uncomment it,
# name your tables, and write the handler file: one `-- on <event type>` section per event
# type, `{{my_projection}}` for the table being rebuilt, and `:data`, `:stream`, `:position`,
# `:timestamp` for the event's values. Then `reproject plan` checks it all against the
# database and writes nothing.
#
# [[projection]]
# name = \"my_projection\"
# tables = [\"my_projection\"]
# handlers = \"my_projection.sql\"
";

/// A config that reads a known store with its preset.
pub fn preset(preset: &Preset, table: &str, database: &str) -> String {
    format!(
        "{}\
         # Found the event table of a known store, `{table}`, with every column the preset\n\
         # reads; `preset` sets all the `[events]` keys, and a key written below it wins.\n\
         \n\
         [events]\n\
         preset = {}\n\
         {PROJECTION}",
        header("for a known event store", database),
        quoted(preset.name)
    )
}

/// A config for `table`, its roles guessed from `columns`.
pub fn table(table: &str, columns: &[Column], roles: &Roles, database: &str) -> String {
    let mut out = header(&format!("from `{table}`"), database);
    out.push_str(
        "# Each key below names a column (an SQL expression over the table); the comment above\n\
         # it says why it was chosen. Check them before a rebuild relies on them.\n\
         \n\
         [events]\n",
    );
    out.push_str(&format!("table = {}\n", quoted(table)));
    let sql = |g: &Guess| {
        columns
            .iter()
            .find(|c| c.name == g.column)
            .map_or(g.column.clone(), |c| c.sql.clone())
    };
    let keys: [(&str, &Option<Guess>, &str); 6] = [
        (
            "position",
            &roles.position,
            "required: no integer column filled by a sequence or identity, and no integer primary key; name the column that orders the events",
        ),
        (
            "stream",
            &roles.stream,
            "required: no text or uuid column named like a stream or aggregate id; name it",
        ),
        (
            "type",
            &roles.event_type,
            "required: no text column named like an event type; name it",
        ),
        (
            "data",
            &roles.data,
            "required: no json/jsonb/bytea/text column named like the event's payload; name it",
        ),
        (
            "metadata",
            &roles.metadata,
            "optional: no json/jsonb/bytea column named like metadata or headers",
        ),
        (
            "timestamp",
            &roles.timestamp,
            "optional: no timestamp column named like the time of the event",
        ),
    ];
    for (key, guess, none) in keys {
        match guess {
            Some(g) => {
                let mut why = g.why.clone();
                let without_zone = columns
                    .iter()
                    .any(|c| c.name == g.column && c.kind == Kind::Timestamp);
                if key == "timestamp" && without_zone {
                    why.push_str(" (without time zone: read as UTC)");
                }
                out.push_str(&format!("# {why}\n{key} = {}\n", quoted(&sql(g))));
            }
            None => out.push_str(&format!("# {none}\n# {key} = \"\"\n")),
        }
    }
    out.push_str(
        "# Events to skip, as an SQL condition over the table, e.g. `NOT invalidated`:\n\
         # filter = \"\"\n",
    );
    out.push_str(PROJECTION);
    out
}
