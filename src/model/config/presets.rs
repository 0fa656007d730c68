//! `[events] preset = "NAME"`: the `[events]` keys of event stores people already run, so a
//! default installation needs no other key. Any key written in the config overrides the
//! preset's, key by key (see `convert_events`).
//!
//! The layouts are the facts in the project's notes on event stores (each taken from the
//! store's own schema code); each entry says which facts it relies on. Payload and time
//! columns are named as they are: validation detects how they are stored (bytea holding JSON,
//! `timestamp` without time zone read as UTC; source.rs `Payload`, `TimeKind`).

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
    pub metadata: Option<&'static str>,
    pub timestamp: Option<&'static str>,
    pub filter: Option<&'static str>,
    pub ordering: Option<&'static str>,
    pub transaction_id: Option<&'static str>,
    /// `gap_age`: how old a proven gap must also be before gap-aware reading passes it.
    pub gap_age: Option<&'static str>,
}

/// The `gap_age` of the Marten preset.
pub const MARTEN_GAP_AGE: &str = "5s";

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
    },
    // Message DB: `message_store.messages`, `global_position bigserial`, `stream_name text`,
    // `type text`, `data`/`metadata` jsonb, `time timestamp` in UTC. Its writers take an
    // advisory lock per category only, so appends to different categories interleave: the
    // default gap-aware ordering (bigserial from nextval in the writing transaction).
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
    },
    // Marten: `mt_events`, `seq_id bigint` from `mt_events_sequence`, `stream_id` uuid or
    // varchar (read as text), `type`, `data jsonb`, `headers jsonb`, `timestamp timestamptz`;
    // archived events are skipped. Multi-tenant stores add `AND tenant_id = '…'` to the
    // filter. Its Rich append mode (the default through Marten 8) draws `seq_id`s with
    // `nextval` on a separate, autocommitted command before the transaction that inserts
    // them: no lock shows such a reservation, so a gap is passed only once it is also
    // `gap_age` old, as Marten's own daemon does for stale sequences (its threshold is 3 s;
    // 5 s leaves a loaded writer more room, and costs only while a gap is open).
    Preset {
        name: "marten",
        table: Some("mt_events"),
        source: None,
        lock_table: None,
        position: "seq_id",
        stream: "stream_id",
        event_type: "type",
        data: "data",
        metadata: Some("headers"),
        timestamp: Some("\"timestamp\""),
        filter: Some("is_archived = false"),
        ordering: None,
        transaction_id: None,
        gap_age: Some(MARTEN_GAP_AGE),
    },
    // Emmett: `emt_messages` (partitioned; reading one is fine), ordered by
    // `(transaction_id xid8, global_position)`: the exact xid8 cut. It also holds commands
    // (`message_kind = 'C'`), which are not events. `stream_id text`, `message_type`,
    // `message_data`/`message_metadata` jsonb, `created timestamptz`.
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
        filter: Some("message_kind <> 'C'"),
        ordering: Some("xid8"),
        transaction_id: Some("transaction_id"),
        gap_age: None,
    },
    // spatie/laravel-event-sourcing: `stored_events`, `id bigserial` (no lock: gap-aware),
    // `aggregate_uuid`, `event_class`, `event_properties`/`meta_data` jsonb,
    // `created_at timestamp(0)` written in UTC.
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
    },
    // Eventuous: `eventuous.messages` holds `stream_id int`, the stream's name is in
    // `eventuous.streams` (a join, so a `source`); `global_position bigint` identity (gap-aware,
    // watching the writers of `eventuous.messages`), `message_type`, `json_data`/
    // `json_metadata` jsonb, `created timestamp` in UTC. Newer versions write `$tombstone`
    // rows into gaps of a stream; they are not events.
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
        filter: Some("message_type <> '$tombstone'"),
        ordering: None,
        transaction_id: None,
        gap_age: None,
    },
    // Commanded EventStore: `events` (`event_type text`, `data`/`metadata` bytea holding JSON
    // with the JSON serializer, or jsonb; `created_at timestamptz`), `streams`
    // (`stream_uuid`), and `stream_events` linking them; the global order is the
    // `stream_version` of each event's link in the all-stream (`stream_id = 0`), its stream
    // the link's `original_stream_id`. Every append updates the all-stream's row in `streams`
    // (a global row lock per append), so writers are serialized; appends insert into
    // `stream_events`.
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
