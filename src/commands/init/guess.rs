//! Which column of an event table plays which role (`position`, `stream`, `type`, `data`,
//! `metadata`, `timestamp`), guessed from the columns' names, types and keys. Pure: the catalog
//! facts come in as [`Column`]s, so the rules are unit-tested without a database.
//!
//! Every guess carries the reason, in words, because `init` writes it above the key: a user
//! must be able to tell a sound guess from a lucky one before trusting a rebuild to it.

/// How a column is stored, as far as the roles care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    /// text, varchar, char, name: a stream name or an event type.
    Text,
    /// uuid: a stream id, never an event type.
    Uuid,
    Json,
    Bytea,
    TimestampTz,
    /// timestamp without time zone: reproject reads it as UTC.
    Timestamp,
    Other,
}

impl Kind {
    /// From `pg_type.typname` of the column's (base) type.
    pub fn from_typname(typname: &str) -> Kind {
        match typname {
            "int2" | "int4" | "int8" => Kind::Integer,
            "text" | "varchar" | "bpchar" | "name" | "citext" => Kind::Text,
            "uuid" => Kind::Uuid,
            "json" | "jsonb" => Kind::Json,
            "bytea" => Kind::Bytea,
            "timestamptz" => Kind::TimestampTz,
            "timestamp" => Kind::Timestamp,
            _ => Kind::Other,
        }
    }
}

/// One column of the table, as the catalog describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The name as SQL (quoted when it must be: `"time"`), what the config holds.
    pub sql: String,
    /// `format_type`: what the comment shows (`bigint`, `jsonb`, …).
    pub type_name: String,
    pub kind: Kind,
    /// An identity column, or a default of `nextval(…)` (serial, bigserial, a sequence).
    pub sequence: bool,
    pub primary_key: bool,
    /// The only column of a unique index (the primary key's included).
    pub unique: bool,
}

/// A column chosen for a role, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guess {
    pub column: String,
    pub why: String,
}

/// The roles of one table; `None` where no column fits.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub position: Option<Guess>,
    pub stream: Option<Guess>,
    pub event_type: Option<Guess>,
    pub data: Option<Guess>,
    pub metadata: Option<Guess>,
    pub timestamp: Option<Guess>,
}

impl Roles {
    /// The keys a config cannot do without, that no column was found for.
    pub fn missing_required(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        for (key, guess) in [
            ("position", &self.position),
            ("stream", &self.stream),
            ("type", &self.event_type),
            ("data", &self.data),
        ] {
            if guess.is_none() {
                missing.push(key);
            }
        }
        missing
    }
}

/// How a role is recognised by name: exact names first (earlier wins), then names containing
/// a fragment, never names containing an excluded fragment.
struct Names {
    exact: &'static [&'static str],
    contains: &'static [&'static str],
    exclude: &'static [&'static str],
}

const POSITION_NAMES: &[&str] = &[
    "global_position",
    "position",
    "seq_id",
    "seq",
    "sequence",
    "sequence_number",
    "event_number",
    "global_sequence",
    "event_id",
    "id",
];

const STREAM: Names = Names {
    exact: &[
        "stream_id",
        "stream_name",
        "stream",
        "stream_uuid",
        "aggregate_id",
        "aggregate_uuid",
        "entity_id",
    ],
    contains: &["stream", "aggregate", "entity"],
    exclude: &["type", "version", "position"],
};

const TYPE: Names = Names {
    exact: &[
        "type",
        "event_type",
        "message_type",
        "kind",
        "event_kind",
        "event_class",
        "event_name",
    ],
    contains: &["type", "kind", "class"],
    exclude: &["aggregate", "stream", "dotnet", "entity", "content"],
};

const METADATA: Names = Names {
    exact: &[
        "metadata",
        "meta_data",
        "headers",
        "meta",
        "message_metadata",
        "json_metadata",
        "event_metadata",
    ],
    contains: &["meta", "header"],
    exclude: &[],
};

const DATA: Names = Names {
    exact: &[
        "data",
        "event_data",
        "payload",
        "body",
        "message_data",
        "json_data",
        "event_properties",
        "event_payload",
        "content",
    ],
    contains: &["data", "payload", "body"],
    exclude: &["meta", "header"],
};

const TIMESTAMP: Names = Names {
    exact: &[
        "timestamp",
        "created_at",
        "occurred_at",
        "recorded_at",
        "event_timestamp",
        "time",
        "created",
        "at",
        "inserted_at",
        "stored_at",
    ],
    contains: &["time", "created", "occurred", "recorded", "_at"],
    exclude: &["updated", "deleted", "archived"],
};

/// Ids that are not what the events are about.
const NOT_STREAM_IDS: &[&str] = &[
    "id",
    "event_id",
    "message_id",
    "correlation_id",
    "causation_id",
    "tenant_id",
    "transaction_id",
];

/// Guesses every role of a table from its columns.
pub fn roles(columns: &[Column]) -> Roles {
    let mut used: Vec<String> = Vec::new();
    let position = noted(&mut used, position(columns));
    let stream = by_name(columns, &used, &STREAM, |k| {
        matches!(k, Kind::Text | Kind::Uuid)
    })
    .or_else(|| stream_by_id_suffix(columns, &used));
    let stream = noted(&mut used, stream);
    let event_type = by_name(columns, &used, &TYPE, |k| k == Kind::Text);
    let event_type = noted(&mut used, event_type);
    // Before data: `metadata` contains "data", and a metadata column must not be taken for it.
    let metadata = by_name(columns, &used, &METADATA, |k| {
        matches!(k, Kind::Json | Kind::Bytea)
    });
    let metadata = noted(&mut used, metadata);
    let data = by_name(columns, &used, &DATA, |k| {
        matches!(k, Kind::Json | Kind::Bytea | Kind::Text)
    })
    .or_else(|| only_one(columns, &used, "json/jsonb", |k| k == Kind::Json));
    let data = noted(&mut used, data);
    let is_time = |k| matches!(k, Kind::TimestampTz | Kind::Timestamp);
    let timestamp = by_name(columns, &used, &TIMESTAMP, is_time)
        .or_else(|| only_one(columns, &used, "timestamp", is_time));
    Roles {
        position,
        stream,
        event_type,
        data,
        metadata,
        timestamp,
    }
}

/// Marks a guessed column as taken, so no other role takes it.
fn noted(used: &mut Vec<String>, guess: Option<Guess>) -> Option<Guess> {
    if let Some(g) = &guess {
        used.push(g.column.clone());
    }
    guess
}

/// The integer column that orders the events: filled by a sequence or identity, preferably the
/// primary key. An integer primary key without a default (Marten draws `nextval` in its
/// insert) is the next best; then a unique integer column with a position's name.
fn position(columns: &[Column]) -> Option<Guess> {
    let score = |c: &Column| {
        let named = POSITION_NAMES.contains(&c.name.as_str());
        (c.sequence as u8) * 4 + (c.primary_key as u8) * 2 + (c.unique as u8) + named as u8
    };
    let best = columns
        .iter()
        .filter(|c| c.kind == Kind::Integer)
        .filter(|c| c.sequence || c.primary_key || (c.unique && named(c)))
        .max_by_key(|c| (score(c), std::cmp::Reverse(position_rank(c))))?;
    let mut facts = Vec::new();
    if best.primary_key {
        facts.push("the primary key".to_string());
    } else if best.unique {
        facts.push("unique".to_string());
    }
    facts.push(format!("an integer ({})", best.type_name));
    if best.sequence {
        facts.push("filled by a sequence or identity".to_string());
    }
    Some(Guess {
        column: best.name.clone(),
        why: format!("{}: events are replayed in its order", facts.join(", ")),
    })
}

fn named(c: &Column) -> bool {
    POSITION_NAMES.contains(&c.name.as_str())
}

/// Earlier in POSITION_NAMES wins a tie; a column not in it comes last.
fn position_rank(c: &Column) -> usize {
    POSITION_NAMES
        .iter()
        .position(|n| *n == c.name)
        .unwrap_or(POSITION_NAMES.len())
}

fn by_name(
    columns: &[Column],
    used: &[String],
    names: &Names,
    accepts: impl Fn(Kind) -> bool,
) -> Option<Guess> {
    let free: Vec<&Column> = columns
        .iter()
        .filter(|c| accepts(c.kind) && !used.contains(&c.name))
        .collect();
    for exact in names.exact {
        if let Some(c) = free.iter().find(|c| c.name.eq_ignore_ascii_case(exact)) {
            return Some(Guess {
                column: c.name.clone(),
                why: format!("named `{}`, {}", c.name, c.type_name),
            });
        }
    }
    for fragment in names.contains {
        if let Some(c) = free.iter().find(|c| {
            let lower = c.name.to_lowercase();
            lower.contains(fragment) && !names.exclude.iter().any(|x| lower.contains(x))
        }) {
            return Some(Guess {
                column: c.name.clone(),
                why: format!("its name contains `{fragment}`, {}", c.type_name),
            });
        }
    }
    None
}

/// A text or uuid column named `…_id` that is not an event's own id: what the events are
/// about (`account_id`), the stream.
fn stream_by_id_suffix(columns: &[Column], used: &[String]) -> Option<Guess> {
    let c = columns.iter().find(|c| {
        matches!(c.kind, Kind::Text | Kind::Uuid)
            && !used.contains(&c.name)
            && c.name.to_lowercase().ends_with("_id")
            && !NOT_STREAM_IDS.contains(&c.name.to_lowercase().as_str())
    })?;
    Some(Guess {
        column: c.name.clone(),
        why: format!(
            "{}, named `…_id`: the id of what the events are about",
            c.type_name
        ),
    })
}

/// The one column left of a kind, when exactly one is.
fn only_one(
    columns: &[Column],
    used: &[String],
    what: &str,
    accepts: impl Fn(Kind) -> bool,
) -> Option<Guess> {
    let mut free = columns
        .iter()
        .filter(|c| accepts(c.kind) && !used.contains(&c.name));
    let c = free.next()?;
    if free.next().is_some() {
        return None;
    }
    Some(Guess {
        column: c.name.clone(),
        why: format!("the only {what} column left ({})", c.type_name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, typname: &str) -> Column {
        Column {
            name: name.into(),
            sql: name.into(),
            type_name: typname.into(),
            kind: Kind::from_typname(typname),
            sequence: false,
            primary_key: false,
            unique: false,
        }
    }

    fn serial_pk(name: &str) -> Column {
        Column {
            sequence: true,
            primary_key: true,
            unique: true,
            ..col(name, "int8")
        }
    }

    fn names(r: &Roles) -> [Option<&str>; 6] {
        fn n(g: &Option<Guess>) -> Option<&str> {
            g.as_ref().map(|g| g.column.as_str())
        }
        [
            n(&r.position),
            n(&r.stream),
            n(&r.event_type),
            n(&r.data),
            n(&r.metadata),
            n(&r.timestamp),
        ]
    }

    #[test]
    fn the_readme_table_maps_every_role() {
        let r = roles(&[
            serial_pk("seq"),
            col("account_id", "text"),
            col("kind", "text"),
            col("body", "jsonb"),
            col("at", "timestamptz"),
        ]);
        assert_eq!(
            names(&r),
            [
                Some("seq"),
                Some("account_id"),
                Some("kind"),
                Some("body"),
                None,
                Some("at")
            ]
        );
        assert!(r.position.as_ref().unwrap().why.contains("primary key"));
        assert!(r.missing_required().is_empty());
    }

    #[test]
    fn metadata_is_not_taken_for_data_and_aggregate_type_not_for_type() {
        let r = roles(&[
            col("aggregate_type", "text"),
            serial_pk("event_id"),
            col("aggregate_id", "text"),
            col("event_type", "varchar"),
            col("metadata", "jsonb"),
            col("event_data", "jsonb"),
            col("event_timestamp", "timestamptz"),
            col("updated_at", "timestamptz"),
        ]);
        assert_eq!(
            names(&r),
            [
                Some("event_id"),
                Some("aggregate_id"),
                Some("event_type"),
                Some("event_data"),
                Some("metadata"),
                Some("event_timestamp")
            ]
        );
    }

    #[test]
    fn a_sequence_filled_column_beats_a_uuid_key_and_an_unnamed_jsonb_is_the_data() {
        let r = roles(&[
            Column {
                primary_key: true,
                unique: true,
                ..col("id", "uuid")
            },
            Column {
                sequence: true,
                unique: true,
                ..col("n", "int8")
            },
            col("stream", "uuid"),
            col("type", "text"),
            col("doc", "jsonb"),
        ]);
        assert_eq!(r.position.unwrap().column, "n");
        assert_eq!(r.stream.unwrap().column, "stream");
        assert_eq!(r.data.unwrap().column, "doc");
    }

    #[test]
    fn missing_roles_are_named() {
        let r = roles(&[col("id", "uuid"), col("payload", "jsonb")]);
        assert_eq!(r.missing_required(), ["position", "stream", "type"]);
        // An integer column with neither key nor sequence is not a position.
        let r = roles(&[col("n", "int8")]);
        assert!(r.position.is_none());
    }
}
