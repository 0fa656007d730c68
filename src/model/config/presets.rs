//! `[events] preset = "NAME"`: the `[events]` keys of event stores people already run, so a
//! default installation needs no other key. Any key written in the config overrides the
//! preset's, key by key (see `convert_events`).
//!
//! Each layout is the one the store's own schema code creates by default (not its docs), and
//! each filter skips exactly what the store's own readers skip; `checked` names the store
//! versions and append modes that code was read from. Columns a store creates only when an
//! option is on (Marten's `headers`, `correlation_id`, `causation_id`, `user_name`,
//! `is_skipped`) are never assumed: `pipeline/preset_columns.rs` looks them up in the catalog
//! when the config is validated and adds what they carry (metadata, a filter) only when
//! present. A column a preset needs and does not find is an error naming the table, the
//! column and the preset. Payload and time columns are named as they are: validation
//! detects how they are stored (bytea holding JSON, `timestamp` without time zone read as
//! UTC; source.rs `Payload`, `TimeKind`).

/// The `[events]` keys a preset fills in. `None`: the key stays unset (its default applies).
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    /// The event table, or None when the preset reads a `source` query.
    pub table: Option<&'static str>,
    /// A query read as `(source) AS events`, with the table its appends insert into.
    pub source: Option<&'static str>,
    pub lock_table: Option<&'static str>,
    pub position: &'static str,
    pub stream: &'static str,
    pub event_type: &'static str,
    pub data: &'static str,
    /// `metadata` as one column; presets that build it from several columns leave this None
    /// and list them in `metadata_object` (see [`Preset::metadata_sql`]).
    pub metadata: Option<&'static str>,
    pub timestamp: Option<&'static str>,
    /// The part of the filter every installation of the store takes.
    pub filter: Option<&'static str>,
    pub ordering: Option<&'static str>,
    pub transaction_id: Option<&'static str>,
    /// `gap_age`: how old a proven gap must also be before gap-aware reading passes it.
    pub gap_age: Option<&'static str>,
    /// `position_sequence`: the sequence the store draws positions from when the position
    /// column has no default naming it (it says where positions begin).
    pub position_sequence: Option<&'static str>,
    /// The store versions and append modes the layout, filter and ordering were checked
    /// against (`plan` prints it).
    pub checked: &'static str,
    /// Columns every installation has, built into the metadata object under their own name.
    pub metadata_object: &'static [&'static str],
    /// Optional columns: each adds to the metadata or the filter when the table has it.
    pub optional: &'static [Optional],
    /// The columns the preset's keys read, each with the key that reads it: a missing one is
    /// an error (only for keys the preset supplied; a key written in the config is the
    /// user's).
    pub needs: &'static [Need],
}

/// A column a preset reads.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// The `[events]` key whose value reads it (`source` for a column of a source's table).
    pub key: &'static str,
    /// The table, when not the event table itself (the tables a `source` joins).
    pub table: Option<&'static str>,
    pub column: &'static str,
    /// Since when the store has it, for the error (e.g. "Marten 4 or later").
    pub since: &'static str,
}

/// A column some installations have, and what the preset does with it when present.
#[derive(Debug, Clone, Copy)]
pub struct Optional {
    pub column: &'static str,
    pub adds: Adds,
}

/// What an optional column adds.
#[derive(Debug, Clone, Copy)]
pub enum Adds {
    /// A field of the metadata object, under the column's name.
    MetadataField,
    /// A jsonb object whose keys are merged into the metadata (Marten's `headers`).
    MetadataObject,
    /// A predicate ANDed to the filter (Marten's `is_skipped = false`).
    Filter(&'static str),
}

impl Preset {
    /// The metadata expression given which optional columns are present (`present` says
    /// whether a column is). None: the preset maps no metadata.
    pub fn metadata_sql(&self, present: &dyn Fn(&str) -> bool) -> Option<String> {
        if self.metadata_object.is_empty() {
            return self.metadata.map(str::to_string);
        }
        let mut fields: Vec<&str> = self.metadata_object.to_vec();
        let mut merged = Vec::new();
        for o in self.optional.iter().filter(|o| present(o.column)) {
            match o.adds {
                Adds::MetadataField => fields.push(o.column),
                Adds::MetadataObject => merged.push(o.column),
                Adds::Filter(_) => {}
            }
        }
        let object = format!(
            "jsonb_strip_nulls(jsonb_build_object({}))",
            fields
                .iter()
                .map(|c| format!("'{c}', {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The object's own columns win over a header of the same name.
        Some(merged.iter().rev().fold(object, |acc, c| {
            format!("coalesce({c}, '{{}}'::jsonb) || {acc}")
        }))
    }

    /// The filter given which optional columns are present. None: no filter.
    pub fn filter_sql(&self, present: &dyn Fn(&str) -> bool) -> Option<String> {
        let mut parts: Vec<&str> = self.filter.into_iter().collect();
        for o in self.optional.iter().filter(|o| present(o.column)) {
            if let Adds::Filter(f) = o.adds {
                parts.push(f);
            }
        }
        match parts.len() {
            0 => None,
            1 => Some(parts[0].to_string()),
            _ => Some(
                parts
                    .iter()
                    .map(|p| format!("({p})"))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            ),
        }
    }
}

/// The `gap_age` of the Marten preset.
pub const MARTEN_GAP_AGE: &str = "5s";

/// A column of the event table that every version of its store has.
const fn need(key: &'static str, column: &'static str, since: &'static str) -> Need {
    Need {
        key,
        table: None,
        column,
        since,
    }
}

/// A column of a table a preset's `source` joins.
const fn joined(table: &'static str, column: &'static str, since: &'static str) -> Need {
    Need {
        key: "source",
        table: Some(table),
        column,
        since,
    }
}

const MARTEN: &str = "Marten 4 or later";
const EMMETT: &str = "Emmett 0.38.7 or later (`emt_messages`)";

pub const PRESETS: &[Preset] = &[
    // The seed layout of our examples (examples/postings/schema.sql): `execution_events`,
    // `event_id bigserial`, `aggregate_id text`, `event_data`/`metadata` jsonb,
    // `event_timestamp timestamptz`; invalidated events are skipped. Plain bigserial: gap-aware.
    Preset {
        name: "execution-events",
        table: Some("execution_events"),
        source: None,
        lock_table: None,
        position: "event_id",
        stream: "aggregate_id",
        event_type: "event_type",
        data: "event_data",
        metadata: Some("metadata"),
        timestamp: Some("event_timestamp"),
        filter: Some("coalesce(invalidated, false) = false"),
        ordering: None,
        transaction_id: None,
        gap_age: None,
        position_sequence: None,
        checked: "the examples' schema.sql",
        metadata_object: &[],
        optional: &[],
        needs: &[
            need("position", "event_id", "the examples' schema"),
            need("stream", "aggregate_id", "the examples' schema"),
            need("type", "event_type", "the examples' schema"),
            need("data", "event_data", "the examples' schema"),
            need("metadata", "metadata", "the examples' schema"),
            need("timestamp", "event_timestamp", "the examples' schema"),
            need("filter", "invalidated", "the examples' schema"),
        ],
    },
    // Message DB (database/tables/messages.sql, functions/write-message.sql):
    // `message_store.messages`, `global_position bigserial`, `stream_name text`, `type text`,
    // `data`/`metadata` jsonb, `time timestamp` defaulting to `now() AT TIME ZONE 'utc'`
    // (read as UTC). Its readers (get_stream_messages, get_category_messages) skip nothing.
    // Its writers take an advisory lock per category only, so appends to different
    // categories interleave: the default gap-aware ordering (bigserial from nextval in the
    // writing transaction).
    Preset {
        name: "message-db",
        table: Some("message_store.messages"),
        source: None,
        lock_table: None,
        position: "global_position",
        stream: "stream_name",
        event_type: "type",
        data: "data",
        metadata: Some("metadata"),
        timestamp: Some("\"time\""),
        filter: None,
        ordering: None,
        transaction_id: None,
        gap_age: None,
        position_sequence: None,
        checked: "Message DB 1.x",
        metadata_object: &[],
        optional: &[],
        needs: &[
            need("position", "global_position", "Message DB 1.x"),
            need("stream", "stream_name", "Message DB 1.x"),
            need("type", "type", "Message DB 1.x"),
            need("data", "data", "Message DB 1.x"),
            need("metadata", "metadata", "Message DB 1.x"),
            need("timestamp", "time", "Message DB 1.x"),
        ],
    },
    // Marten (Events/Schema/EventsTable.cs): `mt_events`, `seq_id bigint` from
    // `mt_events_sequence`, `stream_id` uuid or varchar (read as text), `type`, `data jsonb`,
    // `timestamp timestamptz`, `tenant_id` (`*DEFAULT*` in a single-tenant store),
    // `is_archived` (nullable, default false). `correlation_id`, `causation_id`, `headers` and
    // `user_name` exist only when the store enables that metadata (off by default), and
    // `is_skipped` only with event skipping on: the metadata object carries `tenant_id` and
    // whichever of them exist, with the headers' own keys merged in. The daemon's loader
    // reads `is_archived = FALSE` rows only and, with skipping on, `is_skipped = FALSE` ones;
    // it reads every tenant (a tenant is a filter the user writes). Its Rich append mode (the default
    // through Marten 8) draws `seq_id`s with `nextval` on a separate, autocommitted command
    // before the transaction that inserts them: no lock shows such a reservation, so a gap is
    // passed only once it is also `gap_age` old, as Marten's own daemon does for stale
    // sequences (its threshold is 3 s; 5 s leaves a loaded writer more room, and costs only
    // while a gap is open). Quick append draws them in the inserting function. `seq_id` has no
    // default: the sequence is named so that a rebuild from the first event knows where
    // positions begin (its start value) and need not age the hole below the first position.
    Preset {
        name: "marten",
        table: Some("mt_events"),
        source: None,
        lock_table: None,
        position: "seq_id",
        stream: "stream_id",
        event_type: "type",
        data: "data",
        metadata: None,
        timestamp: Some("\"timestamp\""),
        filter: Some("is_archived = false"),
        ordering: None,
        transaction_id: None,
        gap_age: Some(MARTEN_GAP_AGE),
        position_sequence: Some("mt_events_sequence"),
        checked: "Marten 7.x, 8.x; rich and quick append",
        metadata_object: &["tenant_id"],
        optional: &[
            Optional {
                column: "headers",
                adds: Adds::MetadataObject,
            },
            Optional {
                column: "correlation_id",
                adds: Adds::MetadataField,
            },
            Optional {
                column: "causation_id",
                adds: Adds::MetadataField,
            },
            Optional {
                column: "user_name",
                adds: Adds::MetadataField,
            },
            Optional {
                column: "is_skipped",
                adds: Adds::Filter("is_skipped = false"),
            },
        ],
        needs: &[
            need("position", "seq_id", MARTEN),
            need("stream", "stream_id", MARTEN),
            need("type", "type", MARTEN),
            need("data", "data", MARTEN),
            need("metadata", "tenant_id", MARTEN),
            need("timestamp", "timestamp", MARTEN),
            need("filter", "is_archived", MARTEN),
        ],
    },
    // Emmett (emmett-postgresql schema/tables.ts, readMessagesBatch.ts): `emt_messages`,
    // partitioned by `partition` then `is_archived`, ordered by
    // `(transaction_id xid8, global_position)`: the exact xid8 cut. Its readers take
    // `partition = 'emt:default' AND is_archived = FALSE`; the table also holds commands
    // (`message_kind = 'C'`, events are 'E'), which are not events. `stream_id text`,
    // `message_type`, `message_data`/`message_metadata` jsonb, `created timestamptz`.
    Preset {
        name: "emmett",
        table: Some("emt_messages"),
        source: None,
        lock_table: None,
        position: "global_position",
        stream: "stream_id",
        event_type: "message_type",
        data: "message_data",
        metadata: Some("message_metadata"),
        timestamp: Some("created"),
        filter: Some("partition = 'emt:default' AND is_archived = false"),
        ordering: Some("xid8"),
        transaction_id: Some("transaction_id"),
        gap_age: None,
        position_sequence: None,
        checked: "Emmett 0.38.7 to 0.44, `emt_messages` in its default partition",
        metadata_object: &[],
        optional: &[Optional {
            column: "message_kind",
            adds: Adds::Filter("message_kind = 'E'"),
        }],
        needs: &[
            need("position", "global_position", EMMETT),
            need("stream", "stream_id", EMMETT),
            need("type", "message_type", EMMETT),
            need("data", "message_data", EMMETT),
            need("metadata", "message_metadata", EMMETT),
            need("timestamp", "created", EMMETT),
            need("filter", "partition", EMMETT),
            need("filter", "is_archived", EMMETT),
            need("transaction_id", "transaction_id", EMMETT),
        ],
    },
    // spatie/laravel-event-sourcing (create_stored_events_table.php.stub): `stored_events`,
    // `id bigserial` (no lock: gap-aware), `aggregate_uuid`, `event_class`,
    // `event_properties`/`meta_data` jsonb, `created_at timestamp(0)` written in the app's
    // timezone, UTC by default. Its repository reads every row.
    Preset {
        name: "spatie",
        table: Some("stored_events"),
        source: None,
        lock_table: None,
        position: "id",
        stream: "aggregate_uuid",
        event_type: "event_class",
        data: "event_properties",
        metadata: Some("meta_data"),
        timestamp: Some("created_at"),
        filter: None,
        ordering: None,
        transaction_id: None,
        gap_age: None,
        position_sequence: None,
        checked: "laravel-event-sourcing 7.x, app timezone UTC",
        metadata_object: &[],
        optional: &[],
        needs: &[
            need("position", "id", "laravel-event-sourcing"),
            need("stream", "aggregate_uuid", "laravel-event-sourcing"),
            need("type", "event_class", "laravel-event-sourcing"),
            need("data", "event_properties", "laravel-event-sourcing"),
            need("metadata", "meta_data", "laravel-event-sourcing"),
            need("timestamp", "created_at", "laravel-event-sourcing"),
        ],
    },
    // Eventuous (Eventuous.Postgresql/Scripts/1_Schema.sql … 9_TryInsertTombstone.sql):
    // `eventuous.messages` holds `stream_id int`, the stream's name is in `eventuous.streams`
    // (a join, so a `source`); `global_position bigint` identity (gap-aware, watching the
    // writers of `eventuous.messages`), `message_type`, `json_data`/`json_metadata` jsonb,
    // `created timestamp`: append_events stores the client's UTC clock (and the tombstones
    // `now() at time zone 'utc'`), read as UTC. Newer versions fill a gap its subscription
    // gave up on with a `$tombstone` row of stream `__tombstones__`; the subscription skips
    // exactly those.
    Preset {
        name: "eventuous",
        table: None,
        source: Some(
            "SELECT m.global_position, s.stream_name, m.message_type, m.json_data, \
             m.json_metadata, m.created \
             FROM eventuous.messages m JOIN eventuous.streams s ON s.stream_id = m.stream_id",
        ),
        lock_table: Some("eventuous.messages"),
        position: "global_position",
        stream: "stream_name",
        event_type: "message_type",
        data: "json_data",
        metadata: Some("json_metadata"),
        timestamp: Some("created"),
        filter: Some("NOT (stream_name = '__tombstones__' AND message_type = '$tombstone')"),
        ordering: None,
        transaction_id: None,
        gap_age: None,
        position_sequence: None,
        checked: "Eventuous' PostgreSQL schema scripts 1-9, with gap tombstones",
        metadata_object: &[],
        optional: &[],
        needs: &[
            joined("eventuous.messages", "global_position", "Eventuous"),
            joined("eventuous.messages", "stream_id", "Eventuous"),
            joined("eventuous.messages", "message_type", "Eventuous"),
            joined("eventuous.messages", "json_data", "Eventuous"),
            joined("eventuous.messages", "json_metadata", "Eventuous"),
            joined("eventuous.messages", "created", "Eventuous"),
            joined("eventuous.streams", "stream_id", "Eventuous"),
            joined("eventuous.streams", "stream_name", "Eventuous"),
        ],
    },
    // Commanded EventStore (lib/event_store/sql/init.ex, statements/*.sql.eex): `events`
    // (`event_type text`, `data`/`metadata` bytea holding JSON with the JSON serializer, or
    // jsonb; `created_at timestamptz`), `streams` (`stream_uuid`), and `stream_events`
    // linking them; the global order is the `stream_version` of each event's link in the
    // all-stream (`stream_id = 0`), its stream the link's `original_stream_id`, as its own
    // `$all` reader joins them; that reader skips nothing (soft-deleted streams included).
    // Every append updates the all-stream's row in `streams` (a global row lock per append),
    // so writers are serialized; appends insert into `stream_events`.
    Preset {
        name: "commanded",
        table: None,
        source: Some(
            "SELECT se.stream_version AS event_number, s.stream_uuid, e.event_type, e.data, \
             e.metadata, e.created_at \
             FROM stream_events se JOIN events e ON e.event_id = se.event_id \
             JOIN streams s ON s.stream_id = se.original_stream_id \
             WHERE se.stream_id = 0",
        ),
        lock_table: Some("stream_events"),
        position: "event_number",
        stream: "stream_uuid",
        event_type: "event_type",
        data: "data",
        metadata: Some("metadata"),
        timestamp: Some("created_at"),
        filter: None,
        ordering: Some("serialized"),
        transaction_id: None,
        gap_age: None,
        position_sequence: None,
        checked: "Commanded EventStore 1.x, schema 1.3; JSON serializer or jsonb columns",
        metadata_object: &[],
        optional: &[],
        needs: &[
            joined("stream_events", "stream_version", "EventStore 1.x"),
            joined("stream_events", "stream_id", "EventStore 1.x"),
            joined("stream_events", "event_id", "EventStore 1.x"),
            joined("stream_events", "original_stream_id", "EventStore 1.x"),
            joined("events", "event_id", "EventStore 1.x"),
            joined("events", "event_type", "EventStore 1.x"),
            joined("events", "data", "EventStore 1.x"),
            joined("events", "metadata", "EventStore 1.x"),
            joined("events", "created_at", "EventStore 1.x"),
            joined("streams", "stream_id", "EventStore 1.x"),
            joined("streams", "stream_uuid", "EventStore 1.x"),
        ],
    },
];

/// The preset of that name.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The known names, for the error on an unknown one.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}
