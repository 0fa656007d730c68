//! `[events] preset = "…"`: for each event store, its table layout built from the facts in
//! the notes on event stores, events appended the way that store appends them (including rows
//! the preset must skip), and a projection rebuilt with nothing but the preset under
//! `[events]`. The rebuilt rows are compared exactly.

use crate::config::{Config, Projection};
use crate::harness::{Project, TestDb};

/// One row per stream: balance, event count, the last event's `user` metadata and time. The
/// database's TimeZone is set away from UTC, so a store's UTC `timestamp` read as local time
/// would show up in `last_at`.
const ACCOUNTS: &str = "CREATE TABLE accounts (stream text PRIMARY KEY, balance bigint NOT NULL, \
    events int NOT NULL, last_user text, last_at timestamptz)";

/// message-db's table, and a write_message that appends as it does: an advisory lock on the
/// stream's category, the stream position from the stream's last one, `time` in UTC without
/// time zone.
pub const MESSAGE_DB_LAYOUT: &str = "CREATE SCHEMA message_store;
         CREATE TABLE message_store.messages (
           id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
           stream_name text NOT NULL, type text NOT NULL, position bigint NOT NULL,
           global_position bigserial NOT NULL UNIQUE, data jsonb, metadata jsonb,
           time timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'utc'));
         CREATE UNIQUE INDEX messages_stream ON message_store.messages (stream_name, position);
         CREATE FUNCTION message_store.write_message(stream_name text, type text, data jsonb, metadata jsonb, at timestamp)
         RETURNS bigint LANGUAGE plpgsql AS $$
         DECLARE next_position bigint;
         BEGIN
           PERFORM pg_advisory_xact_lock(hashtext(split_part(stream_name, '-', 1)));
           SELECT coalesce(max(m.position) + 1, 0) INTO next_position FROM message_store.messages m
             WHERE m.stream_name = write_message.stream_name;
           INSERT INTO message_store.messages (stream_name, type, position, data, metadata, time)
             VALUES (stream_name, type, next_position, data, metadata, at);
           RETURN next_position;
         END $$;";

/// Marten's mt_streams/mt_events, seq_id from mt_events_sequence drawn at insert.
pub const MARTEN_LAYOUT: &str = "CREATE SEQUENCE mt_events_sequence;
         CREATE TABLE mt_streams (id uuid PRIMARY KEY, type varchar NULL, version bigint NULL,
           timestamp timestamptz NOT NULL DEFAULT now(), snapshot jsonb, snapshot_version integer,
           created timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*',
           is_archived bool DEFAULT false);
         CREATE TABLE mt_events (seq_id bigint NOT NULL PRIMARY KEY, id uuid NOT NULL,
           stream_id uuid REFERENCES mt_streams(id) ON DELETE CASCADE, version bigint NOT NULL,
           data jsonb NOT NULL, type varchar(500) NOT NULL,
           timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*',
           mt_dotnet_type varchar NULL, correlation_id varchar, causation_id varchar,
           headers jsonb, is_archived bool DEFAULT false,
           CONSTRAINT pk_mt_events_stream_and_version UNIQUE (stream_id, version));";

fn handlers(deposited: &str, withdrawn: &str) -> String {
    let upsert = |sign: &str| {
        format!(
            "INSERT INTO {{{{accounts}}}} AS a (stream, balance, events, last_user, last_at) \
             VALUES (:stream, {sign}(:data->>'amount')::bigint, 1, :metadata->>'user', :timestamp) \
             ON CONFLICT (stream) DO UPDATE SET balance = a.balance + EXCLUDED.balance, \
             events = a.events + 1, last_user = EXCLUDED.last_user, last_at = EXCLUDED.last_at;\n"
        )
    };
    format!(
        "-- on {deposited}\n{}-- on {withdrawn}\n{}",
        upsert(""),
        upsert("-")
    )
}

/// A project whose `[events]` holds only `preset = "{preset}"`, with one projection `accounts`.
fn preset_project(preset: &str, handlers: &str) -> Project {
    Config::default()
        .event("preset", preset)
        .projection(Projection::new("accounts").option_toml("row_count_tolerance", "100"))
        .file("accounts.sql", handlers)
        .write()
}

/// The rows of `accounts` as `stream|balance|events|user|time(UTC)`, in stream order.
async fn accounts(db: &TestDb) -> Vec<String> {
    let rows = db
        .client()
        .await
        .query(
            "SELECT format('%s|%s|%s|%s|%s', stream, balance, events, last_user, \
             to_char(last_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')) FROM accounts ORDER BY stream",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Rebuilds `accounts` with only `preset = "{preset}"` under `[events]` and returns its rows.
async fn rebuild_with_preset(db: &TestDb, preset: &str, handlers: &str) -> Vec<String> {
    let p = preset_project(preset, handlers);
    p.reproject(db, "rebuild --yes").await.ok();
    accounts(db).await
}

async fn fresh_db() -> TestDb {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET timezone = 'America/New_York'; {ACCOUNTS};",
        db.name
    ))
    .await;
    // A stale row the rebuild must replace.
    db.exec("INSERT INTO accounts VALUES ('stale', 1, 1, NULL, NULL)")
        .await;
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn execution_events_preset_rebuilds_the_seed_layout() {
    let db = fresh_db().await;
    // The seed layout (examples/postings/schema.sql).
    db.exec(
        "CREATE TABLE execution_events (event_id bigserial PRIMARY KEY, \
           event_timestamp timestamptz NOT NULL DEFAULT now(), aggregate_type text NOT NULL, \
           aggregate_id text NOT NULL, aggregate_version int NOT NULL, event_type text NOT NULL, \
           event_version int NOT NULL DEFAULT 1, event_data jsonb NOT NULL, \
           metadata jsonb NOT NULL DEFAULT '{}', invalidated boolean DEFAULT false, \
           invalidation_reason text);
         INSERT INTO execution_events (event_timestamp, aggregate_type, aggregate_id, aggregate_version, event_type, event_data, metadata, invalidated) VALUES
           ('2024-03-01 09:00:00+00', 'account', 'a1', 1, 'deposited', '{\"amount\": 100}', '{\"user\": \"ann\"}', NULL),
           ('2024-03-01 09:05:00+00', 'account', 'a2', 1, 'deposited', '{\"amount\": 50}', '{\"user\": \"bob\"}', false),
           ('2024-03-01 09:10:00+00', 'account', 'a1', 2, 'withdrawn', '{\"amount\": 30}', '{\"user\": \"cid\"}', false),
           ('2024-03-01 09:15:00+00', 'account', 'a1', 3, 'withdrawn', '{\"amount\": 1000}', '{\"user\": \"eve\"}', true),
           ('2024-03-01 09:20:00+00', 'account', 'a2', 2, 'noted', '{}', '{}', false);",
    )
    .await;
    let rows =
        rebuild_with_preset(&db, "execution-events", &handlers("deposited", "withdrawn")).await;
    assert_eq!(
        rows,
        [
            "a1|70|2|cid|2024-03-01 09:10:00",
            "a2|50|1|bob|2024-03-01 09:05:00"
        ],
        "the invalidated withdrawal is skipped"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn message_db_preset_reads_its_utc_time_and_category_streams() {
    let db = fresh_db().await;
    // message-db's table, and a write_message that appends as it does: an advisory lock on
    // the stream's category, the stream position from the stream's last one, `time` in UTC
    // without time zone.
    db.exec(
&[
            MESSAGE_DB_LAYOUT,
            "
         SELECT message_store.write_message('account-1', 'Deposited', '{\"amount\": 100}', '{\"user\": \"ann\"}', '2024-03-01 09:00:00');
         SELECT message_store.write_message('account-2', 'Deposited', '{\"amount\": 40}', '{\"user\": \"bob\"}', '2024-03-01 09:01:00');
         SELECT message_store.write_message('account-1', 'Withdrawn', '{\"amount\": 25}', '{\"user\": \"cid\"}', '2024-03-01 09:02:00');
         SELECT message_store.write_message('account:command-1', 'Close', '{}', '{}', '2024-03-01 09:03:00');
         SELECT message_store.write_message('account-2', 'Deposited', '{\"amount\": 2}', '{\"user\": \"dan\"}', '2024-03-01 23:30:00');",
        ]
        .concat(),
    )
    .await;
    let rows = rebuild_with_preset(&db, "message-db", &handlers("Deposited", "Withdrawn")).await;
    assert_eq!(
        rows,
        [
            "account-1|75|2|cid|2024-03-01 09:02:00",
            "account-2|42|2|dan|2024-03-01 23:30:00"
        ],
        "`time` is UTC whatever the session's TimeZone; unhandled types are skipped"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn marten_preset_skips_archived_events() {
    let db = fresh_db().await;
    // Marten's mt_streams/mt_events, seq_id from mt_events_sequence drawn at insert.
    db.exec(
&[
            MARTEN_LAYOUT,
            "
         INSERT INTO mt_streams (id, type, version) VALUES
           ('11111111-1111-1111-1111-111111111111', 'Account', 3),
           ('22222222-2222-2222-2222-222222222222', 'Account', 2);
         INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, timestamp, headers, is_archived)
         SELECT nextval('mt_events_sequence'), gen_random_uuid(), s::uuid, v, d::jsonb, t, at::timestamptz, h::jsonb, arch
         FROM (VALUES
           ('11111111-1111-1111-1111-111111111111', 1, '{\"amount\": 10}', 'money_deposited', '2024-03-01 09:00:00+00', '{\"user\": \"ann\"}', false),
           ('22222222-2222-2222-2222-222222222222', 1, '{\"amount\": 7}', 'money_deposited', '2024-03-01 09:01:00+00', '{\"user\": \"bob\"}', false),
           ('11111111-1111-1111-1111-111111111111', 2, '{\"amount\": 4}', 'money_withdrawn', '2024-03-01 09:02:00+00', '{\"user\": \"cid\"}', false),
           ('22222222-2222-2222-2222-222222222222', 2, '{\"amount\": 500}', 'money_deposited', '2024-03-01 09:03:00+00', '{\"user\": \"eve\"}', true),
           ('11111111-1111-1111-1111-111111111111', 3, '{\"amount\": 1}', 'money_deposited', '2024-03-01 09:04:00+00', NULL, false)
         ) AS e(s, v, d, t, at, h, arch) ORDER BY at;",
        ]
        .concat(),
    )
    .await;
    let rows = rebuild_with_preset(
        &db,
        "marten",
        &handlers("money_deposited", "money_withdrawn"),
    )
    .await;
    assert_eq!(
        rows,
        [
            "11111111-1111-1111-1111-111111111111|7|3||2024-03-01 09:04:00",
            "22222222-2222-2222-2222-222222222222|7|1|bob|2024-03-01 09:01:00"
        ],
        "the archived event is skipped"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emmett_preset_reads_the_partitioned_table_in_xid8_order_without_commands() {
    let db = fresh_db().await;
    // Emmett's emt_messages: partitioned by partition and is_archived, a global position from
    // its sequence and the writer's transaction id; commands share the table.
    db.exec(
        "CREATE SEQUENCE emt_global_message_position;
         CREATE TABLE emt_messages (
           stream_id text NOT NULL, stream_position bigint NOT NULL,
           partition text NOT NULL DEFAULT 'emt:default', message_kind char(1) NOT NULL DEFAULT 'E',
           message_data jsonb NOT NULL, message_metadata jsonb NOT NULL,
           message_schema_version text NOT NULL, message_type text NOT NULL,
           message_id text NOT NULL, is_archived boolean NOT NULL DEFAULT false,
           global_position bigint DEFAULT nextval('emt_global_message_position'),
           transaction_id xid8 NOT NULL, created timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (stream_id, stream_position, partition, is_archived)
         ) PARTITION BY LIST (partition);
         CREATE TABLE emt_messages_emt_default PARTITION OF emt_messages FOR VALUES IN ('emt:default')
           PARTITION BY LIST (is_archived);
         CREATE TABLE emt_messages_emt_default_active PARTITION OF emt_messages_emt_default FOR VALUES IN (false);
         CREATE TABLE emt_messages_emt_default_archived PARTITION OF emt_messages_emt_default FOR VALUES IN (true);",
    )
    .await;
    // One append per transaction, as Emmett's appendToStream does.
    for (stream, pos, kind, ty, amount, user, at) in [
        (
            "acc-1",
            1,
            "E",
            "Deposited",
            100,
            "ann",
            "2024-03-01 09:00:00+00",
        ),
        (
            "acc-2",
            1,
            "E",
            "Deposited",
            20,
            "bob",
            "2024-03-01 09:01:00+00",
        ),
        (
            "acc-1",
            2,
            "C",
            "Withdrawn",
            999,
            "mal",
            "2024-03-01 09:02:00+00",
        ),
        (
            "acc-1",
            3,
            "E",
            "Withdrawn",
            60,
            "cid",
            "2024-03-01 09:03:00+00",
        ),
    ] {
        db.exec(&format!(
            "INSERT INTO emt_messages (stream_id, stream_position, message_kind, message_data, \
               message_metadata, message_schema_version, message_type, message_id, transaction_id, created)
             VALUES ('{stream}', {pos}, '{kind}', '{{\"amount\": {amount}}}', '{{\"user\": \"{user}\"}}', \
               '1', '{ty}', gen_random_uuid()::text, pg_current_xact_id(), '{at}')"
        ))
        .await;
    }
    let rows = rebuild_with_preset(&db, "emmett", &handlers("Deposited", "Withdrawn")).await;
    assert_eq!(
        rows,
        [
            "acc-1|40|2|cid|2024-03-01 09:03:00",
            "acc-2|20|1|bob|2024-03-01 09:01:00"
        ],
        "the command row (message_kind 'C') is not an event"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spatie_preset_reads_utc_created_at() {
    let db = fresh_db().await;
    // spatie/laravel-event-sourcing's stored_events migration.
    db.exec(
        "CREATE TABLE stored_events (id bigserial PRIMARY KEY, aggregate_uuid uuid NULL,
           aggregate_version bigint NULL, event_version smallint NOT NULL DEFAULT 1,
           event_class varchar(255) NOT NULL, event_properties jsonb NOT NULL,
           meta_data jsonb NOT NULL, created_at timestamp(0) NOT NULL,
           UNIQUE (aggregate_uuid, aggregate_version));
         CREATE INDEX ON stored_events (event_class);
         CREATE INDEX ON stored_events (aggregate_uuid);
         INSERT INTO stored_events (aggregate_uuid, aggregate_version, event_class, event_properties, meta_data, created_at) VALUES
           ('aaaaaaaa-0000-0000-0000-000000000001', 1, 'App\\Events\\MoneyAdded', '{\"amount\": 30}', '{\"user\": \"ann\"}', '2024-03-01 09:00:00'),
           ('aaaaaaaa-0000-0000-0000-000000000002', 1, 'App\\Events\\MoneyAdded', '{\"amount\": 12}', '{\"user\": \"bob\"}', '2024-03-01 09:01:00'),
           ('aaaaaaaa-0000-0000-0000-000000000001', 2, 'App\\Events\\MoneySubtracted', '{\"amount\": 5}', '{\"user\": \"cid\"}', '2024-03-01 22:02:00'),
           (NULL, NULL, 'App\\Events\\Audited', '{}', '{}', '2024-03-01 09:03:00');",
    )
    .await;
    let rows = rebuild_with_preset(
        &db,
        "spatie",
        &handlers("App\\Events\\MoneyAdded", "App\\Events\\MoneySubtracted"),
    )
    .await;
    assert_eq!(
        rows,
        [
            "aaaaaaaa-0000-0000-0000-000000000001|25|2|cid|2024-03-01 22:02:00",
            "aaaaaaaa-0000-0000-0000-000000000002|12|1|bob|2024-03-01 09:01:00"
        ]
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eventuous_preset_joins_stream_names_and_skips_tombstones() {
    let db = fresh_db().await;
    // Eventuous' schema, and an append that works as its append_events does: the stream row
    // (created on first append, version bumped), then the messages with their positions.
    db.exec(
        "CREATE SCHEMA eventuous;
         CREATE TABLE eventuous.streams (
           stream_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           stream_name varchar(1000) NOT NULL, version integer DEFAULT -1 NOT NULL,
           CONSTRAINT stream_name_unique UNIQUE (stream_name));
         CREATE TABLE eventuous.messages (
           message_id uuid, message_type varchar(128) NOT NULL, stream_id integer NOT NULL,
           stream_position integer NOT NULL,
           global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           json_data jsonb NOT NULL, json_metadata jsonb, created timestamp NOT NULL,
           CONSTRAINT stream_position_unique UNIQUE (stream_id, stream_position),
           FOREIGN KEY (stream_id) REFERENCES eventuous.streams (stream_id));
         CREATE FUNCTION eventuous.append_event(_stream_name text, _type text, _data jsonb, _meta jsonb, _created timestamp)
         RETURNS void LANGUAGE plpgsql AS $$
         DECLARE _stream_id int; _version int;
         BEGIN
           INSERT INTO eventuous.streams (stream_name) VALUES (_stream_name)
             ON CONFLICT (stream_name) DO NOTHING;
           SELECT stream_id, version + 1 INTO _stream_id, _version FROM eventuous.streams
             WHERE stream_name = _stream_name FOR UPDATE;
           INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position, json_data, json_metadata, created)
             VALUES (gen_random_uuid(), _type, _stream_id, _version, _data, _meta, _created);
           UPDATE eventuous.streams SET version = _version WHERE stream_id = _stream_id;
         END $$;
         SELECT eventuous.append_event('Account-1', 'V1.Deposited', '{\"amount\": 80}', '{\"user\": \"ann\"}', '2024-03-01 09:00:00');
         SELECT eventuous.append_event('Account-2', 'V1.Deposited', '{\"amount\": 9}', '{\"user\": \"bob\"}', '2024-03-01 09:01:00');
         SELECT eventuous.append_event('__tombstones__', '$tombstone', '{\"amount\": 1000}', '{}', '2024-03-01 09:02:00');
         SELECT eventuous.append_event('Account-1', 'V1.Withdrawn', '{\"amount\": 30}', '{\"user\": \"cid\"}', '2024-03-01 23:03:00');",
    )
    .await;
    let p = preset_project("eventuous", &handlers("V1.Deposited", "V1.Withdrawn"));
    p.reproject(&db, "rebuild --yes").await.ok();
    assert_eq!(
        accounts(&db).await,
        [
            "Account-1|50|2|cid|2024-03-01 23:03:00",
            "Account-2|9|1|bob|2024-03-01 09:01:00"
        ],
        "streams by name through the join; the gap tombstone is not an event"
    );
    // The live runner reads the same source after the swap, and wakes on the table appends
    // insert into.
    db.exec(
        "SELECT eventuous.append_event('Account-3', 'V1.Deposited', '{\"amount\": 3}', '{\"user\": \"dan\"}', '2024-03-02 08:00:00');
         SELECT eventuous.append_event('Account-1', 'V1.Deposited', '{\"amount\": 5}', '{\"user\": \"eve\"}', '2024-03-02 08:01:00');",
    )
    .await;
    p.reproject(&db, "run --once").await.ok();
    assert_eq!(
        accounts(&db).await,
        [
            "Account-1|55|3|eve|2024-03-02 08:01:00",
            "Account-2|9|1|bob|2024-03-01 09:01:00",
            "Account-3|3|1|dan|2024-03-02 08:00:00"
        ]
    );
    p.reproject(&db, "run --print-notify-sql")
        .await
        .ok()
        .stdout_has("AFTER INSERT ON \"eventuous\".\"messages\"");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_does_not_prepare_is_a_config_error() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "{ACCOUNTS}; CREATE TABLE ev (id bigserial, s text, t text, d jsonb)"
    ))
    .await;
    let p = Project::new(
        "[events]
source = \"SELECT * FROM ev JOIN nowhere USING (id)\"
lock_table = \"ev\"
         position = \"id\"
stream = \"s\"
type = \"t\"
data = \"d\"

         [[projection]]
name = \"accounts\"
tables = [\"accounts\"]
handlers = \"a.sql\"
",
        &[("a.sql", &handlers("a", "b"))],
    );
    p.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("reproject.toml:2: `events.source` does not prepare")
        .stderr_has("relation \"nowhere\" does not exist");
    assert!(!db.exists("reproject.runs").await, "nothing may be written");
    db.drop().await;
}

/// Commanded EventStore's three tables and the all-stream row, and an append that works as
/// its appends do: the all-stream's row updated first (the global lock), then the stream's,
/// the event, and its links in the stream and in the all-stream.
const COMMANDED: &str = "
    CREATE TABLE streams (stream_id bigserial PRIMARY KEY NOT NULL, stream_uuid text NOT NULL,
      stream_version bigint DEFAULT 0 NOT NULL, created_at timestamptz DEFAULT now() NOT NULL,
      deleted_at timestamptz);
    CREATE UNIQUE INDEX ix_streams_stream_uuid ON streams (stream_uuid);
    INSERT INTO streams (stream_id, stream_uuid, stream_version) VALUES (0, '$all', 0);
    CREATE TABLE events (event_id uuid PRIMARY KEY NOT NULL, event_type text NOT NULL,
      causation_id uuid NULL, correlation_id uuid NULL, data bytea NOT NULL, metadata bytea NULL,
      created_at timestamptz DEFAULT now() NOT NULL);
    CREATE TABLE stream_events (event_id uuid NOT NULL REFERENCES events (event_id),
      stream_id bigint NOT NULL REFERENCES streams (stream_id), stream_version bigint NOT NULL,
      original_stream_id bigint REFERENCES streams (stream_id), original_stream_version bigint,
      PRIMARY KEY (event_id, stream_id));
    CREATE FUNCTION append_event(_stream text, _type text, _data bytea, _meta bytea, _at timestamptz)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE _sid bigint; _sv bigint; _gv bigint; _eid uuid := gen_random_uuid();
    BEGIN
      INSERT INTO streams (stream_uuid) VALUES (_stream) ON CONFLICT (stream_uuid) DO NOTHING;
      UPDATE streams SET stream_version = stream_version + 1 WHERE stream_id = 0
        RETURNING stream_version INTO _gv;
      UPDATE streams SET stream_version = stream_version + 1 WHERE stream_uuid = _stream
        RETURNING stream_id, stream_version INTO _sid, _sv;
      INSERT INTO events (event_id, event_type, data, metadata, created_at)
        VALUES (_eid, _type, _data, _meta, _at);
      INSERT INTO stream_events (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
        VALUES (_eid, _sid, _sv, _sid, _sv), (_eid, 0, _gv, _sid, _sv);
    END $$;";

fn commanded_append(stream: &str, ty: &str, data: &str, meta: &str, at: &str) -> String {
    format!(
        "SELECT append_event('{stream}', '{ty}', convert_to('{data}', 'UTF8'), convert_to('{meta}', 'UTF8'), '{at}');\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn commanded_preset_reads_the_all_stream_with_bytea_json() {
    let db = fresh_db().await;
    let mut sql = COMMANDED.to_string();
    for (stream, ty, amount, user, at) in [
        (
            "acc-1",
            "Elixir.Bank.Deposited",
            70,
            "ann",
            "2024-03-01 09:00:00+00",
        ),
        (
            "acc-2",
            "Elixir.Bank.Deposited",
            5,
            "bob",
            "2024-03-01 09:01:00+00",
        ),
        (
            "acc-1",
            "Elixir.Bank.Withdrawn",
            20,
            "cid",
            "2024-03-01 09:02:00+00",
        ),
        (
            "acc-2",
            "Elixir.Bank.Withdrawn",
            1,
            "dan",
            "2024-03-01 09:03:00+00",
        ),
    ] {
        sql += &commanded_append(
            stream,
            ty,
            &format!("{{\"amount\": {amount}}}"),
            &format!("{{\"user\": \"{user}\"}}"),
            at,
        );
    }
    db.exec(&sql).await;
    let rows = rebuild_with_preset(
        &db,
        "commanded",
        &handlers("Elixir.Bank.Deposited", "Elixir.Bank.Withdrawn"),
    )
    .await;
    assert_eq!(
        rows,
        [
            "acc-1|50|2|cid|2024-03-01 09:02:00",
            "acc-2|4|2|dan|2024-03-01 09:03:00"
        ],
        "each event once (from the all-stream), named by its original stream"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bytea_that_is_not_json_fails_naming_the_event_position() {
    let db = fresh_db().await;
    let mut sql = COMMANDED.to_string();
    sql += &commanded_append(
        "acc-1",
        "Deposited",
        "{\"amount\": 1}",
        "{}",
        "2024-03-01 09:00:00+00",
    );
    sql += &commanded_append(
        "acc-1",
        "Deposited",
        "{\"amount\": 2",
        "{}",
        "2024-03-01 09:01:00+00",
    );
    // What Commanded's default Erlang term serializer writes: not UTF-8 at all.
    sql +=
        "SELECT append_event('acc-2', 'Deposited', '\\x836d00000003616263'::bytea, NULL, now());";
    db.exec(&sql).await;
    let config = "[events]\npreset = \"commanded\"\n\n[[projection]]\nname = \"accounts\"\n\
         tables = [\"accounts\"]\nhandlers = \"accounts.sql\"\nrow_count_tolerance = 100\n";
    let p = Project::new(
        config,
        &[("accounts.sql", &handlers("Deposited", "Withdrawn"))],
    );
    p.reproject(&db, "rebuild --yes").await.code(1).stderr_has(
        "the event at position 2 of `stream_events`: `events.data` is bytea but not JSON",
    );
    db.exec("DELETE FROM stream_events WHERE stream_id = 0 AND stream_version = 2")
        .await;
    p.reproject(&db, "rebuild --yes")
        .await
        .code(1)
        .stderr_has(
            "the event at position 3 of `stream_events`: `events.data` is bytea but not UTF-8",
        )
        .stderr_has("Erlang term");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_and_text_payloads_and_text_times_are_read_from_the_column_alone() {
    let db = fresh_db().await;
    db.exec(
        "CREATE TABLE ev (id bigserial PRIMARY KEY, s text, t text, d json, m text, at text);
         INSERT INTO ev (s, t, d, m, at) VALUES
           ('a', 'dep', '{\"amount\": 5}', '{\"user\": \"ann\"}', '2024-03-01T09:00:00Z'),
           ('b', 'dep', '{\"amount\": 6}', '{\"user\": \"bob\"}', '2024-03-01 12:30:00+02:00'),
           ('a', 'wd', '{\"amount\": 1}', '{\"user\": \"cid\"}', '2024-03-01 11:15:00'),
           ('c', 'dep', '{\"amount\": 2}', NULL, '2024-03-02');
         INSERT INTO accounts VALUES ('stale2', 1, 1, NULL, NULL), ('stale3', 1, 1, NULL, NULL);",
    )
    .await;
    let p = Project::new(
        "[events]\ntable = \"ev\"\nposition = \"id\"\nstream = \"s\"\ntype = \"t\"\n\
         data = \"d\"\nmetadata = \"m\"\ntimestamp = \"at\"\n\n[[projection]]\nname = \"accounts\"\n\
         tables = [\"accounts\"]\nhandlers = \"accounts.sql\"\nrow_count_tolerance = 100\n",
        &[("accounts.sql", &handlers("dep", "wd"))],
    );
    p.reproject(&db, "rebuild --yes").await.ok();
    let rows = accounts(&db).await;
    assert_eq!(
        rows,
        [
            "a|4|2|cid|2024-03-01 11:15:00",
            "b|6|1|bob|2024-03-01 10:30:00",
            "c|2|1||2024-03-02 00:00:00"
        ],
        "ISO-8601 text: an offset as written, none as UTC (not the session's TimeZone)"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_preset_is_a_config_error_naming_the_known_ones() {
    let db = TestDb::new().await;
    let p = Project::new(
        "[events]\npreset = \"eventstoredb\"\n\n[[projection]]\nname = \"a\"\ntables = [\"a\"]\nhandlers = \"a.sql\"\n",
        &[("a.sql", "-- on x\nSELECT 1;\n")],
    );
    p.reproject(&db, "rebuild --yes")
        .await
        .code(2)
        .stderr_has("reproject.toml:2: unknown `events.preset = \"eventstoredb\"`")
        .stderr_has(
            "known presets: execution-events, message-db, marten, emmett, spatie, eventuous, commanded",
        );
    db.drop().await;
}
