//! Presets on DEFAULT installations of their stores: each store's tables created as its own
//! schema code creates them (transcribed, minimal: the tables the preset reads), events
//! appended the way the store appends them, including rows the store's own readers skip
//! (archived, skipped, other partitions, commands, gap tombstones). A config with only
//! `preset = "…"` under `[events]` must plan and rebuild a projection equal to the truth
//! computed from the store's tables with the store's own reader query. Plus: optional
//! columns are used when present and not needed when absent; a missing required column is an
//! error naming the table, the column and the preset.

use crate::config::{Config, Projection};
use crate::harness::{Project, TestDb};

/// Per stream and type: how many events, the last one's metadata and time.
const LEDGER: &str =
    "CREATE TABLE ledger (stream text NOT NULL, type text NOT NULL, n int NOT NULL, \
    last_meta jsonb, last_at timestamptz, PRIMARY KEY (stream, type))";

/// One section per type, each counting into `ledger`.
fn handlers(types: &[&str]) -> String {
    types
        .iter()
        .map(|t| {
            format!(
                "-- on {t}\n\
                 INSERT INTO {{{{ledger}}}} AS l (stream, type, n, last_meta, last_at) \
                 VALUES (:stream, :type, 1, :metadata, :timestamp) \
                 ON CONFLICT (stream, type) DO UPDATE SET n = l.n + 1, \
                 last_meta = EXCLUDED.last_meta, last_at = EXCLUDED.last_at;\n"
            )
        })
        .collect()
}

/// A project whose `[events]` holds nothing but the preset.
fn project(preset: &str, types: &[&str]) -> Project {
    Config::default()
        .event("preset", preset)
        .projection(Projection::new("ledger").option_toml("row_count_tolerance", "100"))
        .file("ledger.sql", &handlers(types))
        .write()
}

/// A database whose TimeZone is not UTC (a UTC `timestamp` read as local time would show),
/// with the `ledger` table holding stale rows the rebuild must replace (three: the row count
/// stays within the tolerance of the 2 to 4 rows the tests rebuild).
async fn fresh_db() -> TestDb {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET timezone = 'Asia/Tokyo'; {LEDGER};
         INSERT INTO ledger SELECT 'stale', 'x' || i, 1, NULL, NULL FROM generate_series(1, 3) i;",
        db.name
    ))
    .await;
    db
}

/// `ledger` as `stream|type|n|last time in UTC`, sorted.
async fn ledger(db: &TestDb) -> Vec<String> {
    rows(
        db,
        "SELECT format('%s|%s|%s|%s', stream, type, n, \
           to_char(last_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')) FROM ledger ORDER BY 1",
    )
    .await
}

/// The truth: `reader` is the store's own reader query, with columns `stream`, `type`,
/// `pos` and `at` (timestamptz); grouped as `ledger` is.
async fn truth(db: &TestDb, reader: &str) -> Vec<String> {
    rows(
        db,
        &format!(
            "SELECT format('%s|%s|%s|%s', stream, type, count(*), \
               to_char((array_agg(at ORDER BY pos DESC))[1] AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')) \
             FROM ({reader}) r GROUP BY stream, type ORDER BY 1"
        ),
    )
    .await
}

async fn rows(db: &TestDb, sql: &str) -> Vec<String> {
    db.client()
        .await
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{sql}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Plans and rebuilds with only the preset; returns the plan's output.
async fn plan_and_rebuild(db: &TestDb, p: &Project, checked: &str) -> String {
    let plan = p.reproject(db, "plan").await;
    plan.ok().stdout_has(checked);
    p.reproject(db, "rebuild --yes").await.ok();
    plan.stdout.clone()
}

// ---------------------------------------------------------------------------------------------
// Marten

/// Marten's `mt_streams` and `mt_events` as EventsTable.cs/StreamsTable.cs create them with
/// the defaults (single tenancy, Guid streams, no optional metadata, no event skipping), with
/// `extra` more columns of mt_events (its optional ones) and the archive function.
fn marten_layout(extra: &str) -> String {
    format!(
        "CREATE SEQUENCE mt_events_sequence;
         CREATE TABLE mt_streams (id uuid NOT NULL, type varchar NULL, version bigint NULL,
           timestamp timestamptz NOT NULL DEFAULT (now()), snapshot jsonb NULL,
           snapshot_version integer NULL, created timestamptz NOT NULL DEFAULT (now()),
           tenant_id varchar NULL DEFAULT '*DEFAULT*', is_archived bool NULL DEFAULT FALSE,
           CONSTRAINT pkey_mt_streams_id PRIMARY KEY (id));
         CREATE TABLE mt_events (seq_id bigint NOT NULL, id uuid NOT NULL, stream_id uuid NULL,
           version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
           timestamp timestamptz NOT NULL DEFAULT (now()),
           tenant_id varchar NULL DEFAULT '*DEFAULT*', mt_dotnet_type varchar NULL{extra},
           is_archived bool NULL DEFAULT FALSE,
           CONSTRAINT pkey_mt_events_seq_id PRIMARY KEY (seq_id),
           CONSTRAINT fkey_mt_events_stream_id FOREIGN KEY (stream_id) REFERENCES mt_streams (id)
             ON DELETE CASCADE);
         CREATE UNIQUE INDEX pk_mt_events_stream_and_version ON mt_events (stream_id, version);
         CREATE FUNCTION mt_archive_stream(streamid uuid) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           UPDATE mt_streams SET is_archived = TRUE WHERE id = streamid;
           UPDATE mt_events SET is_archived = TRUE WHERE stream_id = streamid;
         END $$;"
    )
}

/// Appends as Marten's Rich mode does: the positions reserved first (`nextval` over
/// `generate_series`, its own command), then the stream row and the events inserted with
/// them. `cols`/`vals` are extra columns of mt_events.
fn marten_append(stream: &str, version: i64, ty: &str, at: &str, cols: &str, vals: &str) -> String {
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS reserved (seq bigint);
         TRUNCATE reserved;
         INSERT INTO reserved SELECT nextval('mt_events_sequence') FROM generate_series(1, 1);
         INSERT INTO mt_streams (id, type, version) VALUES ('{stream}', 'Account', {version})
           ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version;
         INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, timestamp{cols})
           SELECT seq, gen_random_uuid(), '{stream}', {version}, '{{}}', '{ty}', '{at}'{vals} FROM reserved;\n"
    )
}

const A1: &str = "11111111-1111-1111-1111-111111111111";
const A2: &str = "22222222-2222-2222-2222-222222222222";
const A3: &str = "33333333-3333-3333-3333-333333333333";

/// The daemon's loader (EventLoader.cs with the shard's filters): events joined to their
/// stream, not archived (and, with event skipping on, not skipped).
fn marten_reader(skipping: bool) -> String {
    format!(
        "SELECT d.stream_id::text AS stream, d.type, d.seq_id AS pos, d.timestamp AS at \
         FROM mt_events AS d INNER JOIN mt_streams AS s ON d.stream_id = s.id \
         WHERE d.is_archived = FALSE{}",
        if skipping {
            " AND d.is_skipped = FALSE"
        } else {
            ""
        }
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn marten_default_installation_rebuilds_without_optional_columns() {
    let db = fresh_db().await;
    let mut sql = marten_layout("");
    for (stream, v, ty, at) in [
        (A1, 1, "money_deposited", "2024-03-01 09:00:00+00"),
        (A2, 1, "money_deposited", "2024-03-01 09:01:00+00"),
        (A1, 2, "money_withdrawn", "2024-03-01 09:02:00+00"),
        (A3, 1, "money_deposited", "2024-03-01 09:03:00+00"),
        (A3, 2, "money_deposited", "2024-03-01 09:04:00+00"),
        (A2, 2, "money_withdrawn", "2024-03-01 23:05:00+00"),
    ] {
        sql += &marten_append(stream, v, ty, at, "", "");
    }
    // Archived as Marten archives: the stream and all its events.
    sql += &format!("SELECT mt_archive_stream('{A3}');");
    db.exec(&sql).await;
    let p = project("marten", &["money_deposited", "money_withdrawn"]);
    let plan = plan_and_rebuild(
        &db,
        &p,
        "preset marten (checked against Marten 7.x, 8.x; rich and quick append)",
    )
    .await;
    assert!(
        !plan.contains("optional columns read"),
        "a default installation has none: {plan}"
    );
    let want = truth(&db, &marten_reader(false)).await;
    assert_eq!(want.len(), 4, "the archived stream is not in the truth");
    assert_eq!(ledger(&db).await, want);
    db.assert_text_because(
        &format!(
            "SELECT last_meta::text FROM ledger WHERE stream = '{A1}' AND type = 'money_deposited'"
        ),
        Some(r#"{"tenant_id": "*DEFAULT*"}"#),
        "without the optional metadata columns the metadata holds what every installation has",
    )
    .await;
    // `init` recognises the default installation too (no optional column needed).
    let fresh = Project::new("", &[]);
    std::fs::remove_file(fresh.config()).unwrap();
    fresh
        .reproject(&db, "init")
        .await
        .ok()
        .stdout_has("preset = \"marten\"");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn marten_optional_metadata_and_skipped_events_are_used_when_present() {
    let db = fresh_db().await;
    // Metadata enabled (correlation, causation, headers, user name) and event skipping on.
    let mut sql = marten_layout(
        ", correlation_id varchar NULL, causation_id varchar NULL, headers jsonb NULL, \
         user_name varchar NULL, is_skipped bool NULL DEFAULT FALSE",
    );
    let cols = ", correlation_id, headers, user_name, is_skipped";
    for (stream, v, ty, at, corr, user, skipped) in [
        (
            A1,
            1,
            "money_deposited",
            "2024-03-01 09:00:00+00",
            "c-1",
            "ann",
            false,
        ),
        (
            A1,
            2,
            "money_deposited",
            "2024-03-01 09:01:00+00",
            "c-2",
            "bob",
            true,
        ),
        (
            A2,
            1,
            "money_withdrawn",
            "2024-03-01 09:02:00+00",
            "c-3",
            "cid",
            false,
        ),
        (
            A1,
            3,
            "money_withdrawn",
            "2024-03-01 09:03:00+00",
            "c-4",
            "dan",
            false,
        ),
    ] {
        let vals = format!(
            ", '{corr}', '{{\"source\": \"api\", \"user_name\": \"spoofed\"}}', '{user}', {skipped}"
        );
        sql += &marten_append(stream, v, ty, at, cols, &vals);
    }
    db.exec(&sql).await;
    let p = project("marten", &["money_deposited", "money_withdrawn"]);
    let plan = plan_and_rebuild(&db, &p, "preset marten").await;
    assert!(
        plan.contains(
            "optional columns read: headers, correlation_id, causation_id, user_name, is_skipped"
        ),
        "{plan}"
    );
    let want = truth(&db, &marten_reader(true)).await;
    assert_eq!(ledger(&db).await, want, "the skipped event is not replayed");
    assert!(want
        .iter()
        .any(|r| r.starts_with(&format!("{A1}|money_deposited|1|"))));
    db.assert_text_because(
        &format!("SELECT last_meta::text FROM ledger WHERE stream = '{A1}' AND type = 'money_withdrawn'"),
        Some(r#"{"source": "api", "tenant_id": "*DEFAULT*", "user_name": "dan", "correlation_id": "c-4"}"#),
        "headers merged, the columns present added (the column wins over a header of its name), NULLs left out",
    )
    .await;
    // The live runner reads with the same completed mapping: a skipped event stays skipped.
    let mut more = marten_append(
        A2,
        2,
        "money_withdrawn",
        "2024-03-02 09:00:00+00",
        cols,
        ", 'c-5', NULL, 'eve', true",
    );
    more += &marten_append(
        A2,
        3,
        "money_deposited",
        "2024-03-02 09:01:00+00",
        cols,
        ", 'c-6', NULL, 'fay', false",
    );
    db.exec(&more).await;
    p.reproject(&db, "run --once").await.ok();
    let want = truth(&db, &marten_reader(true)).await;
    assert!(want.contains(&format!("{A2}|money_withdrawn|1|2024-03-01 09:02:00")));
    assert!(want.contains(&format!("{A2}|money_deposited|1|2024-03-02 09:01:00")));
    assert_eq!(
        ledger(&db).await,
        want,
        "run: the skipped event is not applied"
    );
    db.drop().await;
}

/// Marten's positions begin where `mt_events_sequence` starts: a rebuild from the first event
/// has no hole below it to prove, so it does not wait for the preset's `gap_age` (5 s).
#[tokio::test(flavor = "multi_thread")]
async fn marten_rebuild_from_the_start_does_not_wait_for_the_gap_age() {
    let db = fresh_db().await;
    let mut sql = marten_layout("");
    for (stream, v) in [(A1, 1), (A2, 1), (A1, 2)] {
        sql += &marten_append(
            stream,
            v,
            "money_deposited",
            "2024-03-01 09:00:00+00",
            "",
            "",
        );
    }
    db.exec(&sql).await;
    let p = project("marten", &["money_deposited"]);
    let out = p.reproject(&db, "-v rebuild --yes").await;
    out.ok().stderr_has(
        "positions begin at 1, the start of `mt_events_sequence`: no gap lies below the first position",
    );
    assert!(
        !out.stderr.contains("waited") && !out.stderr.contains("open transactions"),
        "nothing held the start: {}",
        out.stderr
    );
    assert_eq!(ledger(&db).await, truth(&db, &marten_reader(false)).await);
    db.assert_int_because(
        "SELECT count(*) FROM reproject.gaps",
        0,
        "no gap was passed",
    )
    .await;
    db.drop().await;
}

/// The first position reserved (Rich append: `nextval` autocommitted, no lock shows it) and
/// inserted only after later positions committed: the rebuild holds at the start (the hole
/// from the sequence's start is a gap like any other) and applies it exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn marten_a_reserved_first_position_still_holds_the_rebuild_at_the_start() {
    let db = fresh_db().await;
    db.exec(&marten_layout("")).await;
    let first = db.int("SELECT nextval('mt_events_sequence')").await;
    assert_eq!(first, 1);
    let mut sql = String::new();
    for (stream, v) in [(A1, 1), (A2, 1)] {
        sql += &marten_append(
            stream,
            v,
            "money_deposited",
            "2024-03-01 09:00:00+00",
            "",
            "",
        );
    }
    db.exec(&sql).await;
    let p = project("marten", &["money_deposited"]);
    let rebuild = p.spawn(&db, "-v rebuild --yes");
    // The rebuild is at its bulk replay (observing the head right after this phase is set):
    // the reserved event arrives while it holds, well within the 5 s gap age.
    crate::harness::wait_until(
        &db,
        "SELECT EXISTS (SELECT FROM reproject.runs WHERE phase = 'replay')",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    db.exec(&format!(
        "INSERT INTO mt_streams (id, type, version) VALUES ('{A3}', 'Account', 1);
         INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, timestamp)
           VALUES ({first}, gen_random_uuid(), '{A3}', 1, '{{}}', 'money_deposited', '2024-03-01 08:00:00+00');"
    ))
    .await;
    let out = rebuild.finish().await;
    out.ok()
        .stderr_has("`mt_events_sequence` starts at 1, the lowest position is 2: the hole below it is a gap like any other")
        .stderr_has("before replaying past the start");
    let want = truth(&db, &marten_reader(false)).await;
    assert_eq!(want.len(), 3, "{want:?}");
    assert_eq!(
        ledger(&db).await,
        want,
        "the event at the reserved first position is applied, once"
    );
    db.assert_int_because(
        "SELECT count(*) FROM reproject.gaps",
        0,
        "no gap was passed",
    )
    .await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn marten_without_is_archived_fails_naming_the_column_table_and_preset() {
    let db = fresh_db().await;
    // A layout from before Marten 4: no is_archived.
    db.exec(
        "CREATE TABLE mt_events (seq_id bigint PRIMARY KEY, id uuid NOT NULL, stream_id uuid,
           version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
           timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*');",
    )
    .await;
    let p = project("marten", &["money_deposited"]);
    for cmd in ["plan", "rebuild --yes"] {
        p.reproject(&db, cmd)
            .await
            .code(2)
            .stderr_has("reproject.toml:3: the `marten` preset reads column `is_archived` of `mt_events` (for `events.filter`), which that table does not have")
            .stderr_has("Marten 4 or later");
    }
    assert!(!db.exists("reproject.runs").await, "nothing may be written");
    // Writing the key the preset cannot fill is the way out.
    p.write(
        "reproject.toml",
        &std::fs::read_to_string(p.config()).unwrap().replace(
            "preset = \"marten\"",
            "preset = \"marten\"\nfilter = \"true\"",
        ),
    );
    p.reproject(&db, "plan").await.ok();
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Emmett

#[tokio::test(flavor = "multi_thread")]
async fn emmett_reads_the_default_partition_without_archived_messages_or_commands() {
    let db = fresh_db().await;
    // tables.ts: the sequence, the table partitioned by partition then is_archived, and
    // emt_add_partition('emt:default') as the schema setup runs it; plus a second partition
    // (a module of the app), which the default readers do not read.
    let mut sql = String::from(
        "CREATE SEQUENCE IF NOT EXISTS emt_global_message_position;
         CREATE TABLE IF NOT EXISTS emt_messages(
           stream_position BIGINT NOT NULL,
           global_position BIGINT DEFAULT nextval('emt_global_message_position'),
           transaction_id XID8 NOT NULL,
           created TIMESTAMPTZ NOT NULL DEFAULT now(),
           is_archived BOOLEAN NOT NULL DEFAULT FALSE,
           message_kind VARCHAR(1) NOT NULL DEFAULT 'E',
           stream_id TEXT NOT NULL,
           partition TEXT NOT NULL DEFAULT 'emt:default',
           message_schema_version TEXT NOT NULL,
           message_id TEXT NOT NULL,
           message_type TEXT NOT NULL,
           message_data JSONB NOT NULL,
           message_metadata JSONB NOT NULL,
           PRIMARY KEY (stream_id, stream_position, partition, is_archived)
         ) PARTITION BY LIST (partition);
         CREATE FUNCTION emt_add_table_partition(tableName TEXT, partition_name TEXT) RETURNS void AS $f$
         DECLARE main text := regexp_replace(tableName || '_' || partition_name, '[^a-zA-Z0-9_]', '_', 'g');
         BEGIN
           EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES IN (%L) PARTITION BY LIST (is_archived)', main, tableName, partition_name);
           EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES IN (FALSE)', main || '_active', main);
           EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES IN (TRUE)', main || '_archived', main);
         END $f$ LANGUAGE plpgsql;
         SELECT emt_add_table_partition('emt_messages', 'emt:default');
         SELECT emt_add_table_partition('emt_messages', 'billing');\n",
    );
    // One append per transaction, as appendToStream inserts (transaction_id from the writing
    // transaction).
    for (stream, pos, partition, kind, ty, archived, at) in [
        (
            "acc-1",
            1,
            "emt:default",
            "E",
            "Deposited",
            false,
            "2024-03-01 09:00:00+00",
        ),
        (
            "acc-2",
            1,
            "emt:default",
            "E",
            "Deposited",
            false,
            "2024-03-01 09:01:00+00",
        ),
        (
            "acc-1",
            2,
            "emt:default",
            "C",
            "Withdrawn",
            false,
            "2024-03-01 09:02:00+00",
        ),
        (
            "acc-1",
            3,
            "emt:default",
            "E",
            "Withdrawn",
            false,
            "2024-03-01 09:03:00+00",
        ),
        (
            "acc-9",
            1,
            "emt:default",
            "E",
            "Deposited",
            true,
            "2024-03-01 09:04:00+00",
        ),
        (
            "acc-1",
            1,
            "billing",
            "E",
            "Deposited",
            false,
            "2024-03-01 09:05:00+00",
        ),
        (
            "acc-2",
            2,
            "emt:default",
            "E",
            "Withdrawn",
            false,
            "2024-03-01 20:06:00+00",
        ),
    ] {
        sql += &format!(
            "BEGIN; INSERT INTO emt_messages (stream_id, stream_position, partition, message_kind, \
               message_data, message_metadata, message_schema_version, message_type, message_id, \
               transaction_id, is_archived, created)
             VALUES ('{stream}', {pos}, '{partition}', '{kind}', '{{}}', '{{\"user\": \"ann\"}}', '1', \
               '{ty}', gen_random_uuid()::text, pg_current_xact_id(), {archived}, '{at}'); COMMIT;\n"
        );
    }
    db.exec(&sql).await;
    let p = project("emmett", &["Deposited", "Withdrawn"]);
    plan_and_rebuild(
        &db,
        &p,
        "preset emmett (checked against Emmett 0.38.7 to 0.44",
    )
    .await;
    // readMessagesBatch's filter; the table's commands (message_kind 'C') are not events.
    let want = truth(
        &db,
        "SELECT stream_id AS stream, message_type AS type, global_position AS pos, created AS at \
         FROM emt_messages WHERE partition = 'emt:default' AND is_archived = FALSE \
         AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) AND message_kind = 'E'",
    )
    .await;
    assert_eq!(
        want,
        [
            "acc-1|Deposited|1|2024-03-01 09:00:00",
            "acc-1|Withdrawn|1|2024-03-01 09:03:00",
            "acc-2|Deposited|1|2024-03-01 09:01:00",
            "acc-2|Withdrawn|1|2024-03-01 20:06:00"
        ]
    );
    assert_eq!(
        ledger(&db).await,
        want,
        "no archived message, no other partition, no command"
    );
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Message DB

#[tokio::test(flavor = "multi_thread")]
async fn message_db_default_installation_reads_every_message_in_utc() {
    let db = fresh_db().await;
    // tables/messages.sql and functions/write-message.sql (category lock, `time` defaulting
    // to UTC); the stream_version and category helpers inlined.
    db.exec(
        "CREATE SCHEMA message_store;
         CREATE TABLE message_store.messages (
           id UUID NOT NULL DEFAULT gen_random_uuid(),
           stream_name text NOT NULL, type text NOT NULL, position bigint NOT NULL,
           global_position bigserial NOT NULL, data jsonb, metadata jsonb,
           time TIMESTAMP WITHOUT TIME ZONE DEFAULT (now() AT TIME ZONE 'utc') NOT NULL);
         ALTER TABLE message_store.messages ADD PRIMARY KEY (global_position);
         CREATE FUNCTION message_store.write_message(id varchar, stream_name varchar, type varchar,
           data jsonb, metadata jsonb DEFAULT NULL) RETURNS bigint AS $$
         DECLARE v bigint;
         BEGIN
           PERFORM pg_advisory_xact_lock(hashtext(split_part(write_message.stream_name, '-', 1)));
           SELECT max(m.position) INTO v FROM message_store.messages m
             WHERE m.stream_name = write_message.stream_name;
           INSERT INTO message_store.messages (id, stream_name, position, type, data, metadata)
             VALUES (uuid(write_message.id), write_message.stream_name, coalesce(v, -1) + 1,
               write_message.type, write_message.data, write_message.metadata);
           RETURN coalesce(v, -1) + 1;
         END $$ LANGUAGE plpgsql;
         SELECT message_store.write_message(gen_random_uuid()::text, 'account-1', 'Opened', '{}');
         SELECT message_store.write_message(gen_random_uuid()::text, 'account-1', 'Deposited', '{}', '{\"user\": \"ann\"}');
         SELECT message_store.write_message(gen_random_uuid()::text, 'account:command-2', 'Open', '{}');
         SELECT message_store.write_message(gen_random_uuid()::text, 'account-2', 'Opened', '{}');",
    )
    .await;
    let p = project("message-db", &["Opened", "Deposited", "Open"]);
    plan_and_rebuild(
        &db,
        &p,
        "preset message-db (checked against Message DB 1.x)",
    )
    .await;
    // get_category_messages / get_stream_messages read every row; `time` is UTC.
    let want = truth(
        &db,
        "SELECT stream_name AS stream, type, global_position AS pos, \
         (time AT TIME ZONE 'utc') AS at FROM message_store.messages",
    )
    .await;
    assert_eq!(want.len(), 4);
    assert_eq!(ledger(&db).await, want, "written now in UTC, read as UTC");
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// spatie/laravel-event-sourcing

#[tokio::test(flavor = "multi_thread")]
async fn spatie_default_migration_reads_every_stored_event() {
    let db = fresh_db().await;
    // create_stored_events_table.php.stub as Laravel's schema builder emits it on PostgreSQL.
    db.exec(
        "CREATE TABLE stored_events (id bigserial PRIMARY KEY, aggregate_uuid uuid NULL,
           aggregate_version bigint NULL, event_version smallint NOT NULL DEFAULT '1',
           event_class varchar(255) NOT NULL, event_properties jsonb NOT NULL,
           meta_data jsonb NOT NULL, created_at timestamp(0) without time zone NOT NULL);
         CREATE INDEX stored_events_event_class_index ON stored_events (event_class);
         CREATE INDEX stored_events_aggregate_uuid_index ON stored_events (aggregate_uuid);
         ALTER TABLE stored_events ADD CONSTRAINT stored_events_aggregate_uuid_aggregate_version_unique
           UNIQUE (aggregate_uuid, aggregate_version);
         INSERT INTO stored_events (aggregate_uuid, aggregate_version, event_class, event_properties, meta_data, created_at) VALUES
           ('aaaaaaaa-0000-0000-0000-000000000001', 1, 'App\\Events\\MoneyAdded', '{}', '{}', '2024-03-01 09:00:00'),
           ('aaaaaaaa-0000-0000-0000-000000000001', 2, 'App\\Events\\MoneyAdded', '{}', '{}', '2024-03-01 22:30:00'),
           ('aaaaaaaa-0000-0000-0000-000000000002', 1, 'App\\Events\\MoneySubtracted', '{}', '{}', '2024-03-01 09:01:00');",
    )
    .await;
    let p = project(
        "spatie",
        &["App\\Events\\MoneyAdded", "App\\Events\\MoneySubtracted"],
    );
    plan_and_rebuild(
        &db,
        &p,
        "preset spatie (checked against laravel-event-sourcing 7.x",
    )
    .await;
    let want = truth(
        &db,
        "SELECT aggregate_uuid::text AS stream, event_class AS type, id AS pos, \
         (created_at AT TIME ZONE 'UTC') AS at FROM stored_events",
    )
    .await;
    assert_eq!(want.len(), 2);
    assert_eq!(ledger(&db).await, want);
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Eventuous

#[tokio::test(flavor = "multi_thread")]
async fn eventuous_skips_only_the_gap_tombstones_its_subscription_skips() {
    let db = fresh_db().await;
    // 1_Schema.sql, 2_AppendEvents.sql (check_stream inlined) and 9_TryInsertTombstone.sql.
    db.exec(
        "CREATE SCHEMA eventuous;
         CREATE TABLE eventuous.streams (
           stream_name varchar(1000) NOT NULL,
           stream_id integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
           version integer NOT NULL DEFAULT(-1),
           CONSTRAINT uq_streams_name UNIQUE (stream_name),
           CONSTRAINT ck_version_gte_negative_one CHECK (version >= -1));
         CREATE TABLE eventuous.messages (
           message_id uuid NOT NULL, message_type varchar NOT NULL, stream_id integer NOT NULL,
           stream_position integer NOT NULL,
           global_position bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
           json_data jsonb NOT NULL, json_metadata jsonb NULL, created timestamp NOT NULL,
           CONSTRAINT fk_messages_stream FOREIGN KEY (stream_id) REFERENCES eventuous.streams (stream_id),
           CONSTRAINT uq_messages_stream_id_and_stream_position UNIQUE (stream_id, stream_position),
           CONSTRAINT uq_stream_id_and_message_id UNIQUE (stream_id, message_id),
           CONSTRAINT ck_stream_position_gte_zero CHECK (stream_position >= 0));
         CREATE FUNCTION eventuous.append_events(_stream_name varchar(1000), _created timestamptz,
           _type varchar, _data jsonb) RETURNS void AS $$
         DECLARE _stream_id integer; _current_version integer;
         BEGIN
           INSERT INTO eventuous.streams (stream_name) VALUES (_stream_name) ON CONFLICT DO NOTHING;
           SELECT stream_id, version INTO _stream_id, _current_version FROM eventuous.streams
             WHERE stream_name = _stream_name FOR UPDATE;
           INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position,
             json_data, json_metadata, created)
             VALUES (gen_random_uuid(), _type, _stream_id, _current_version + 1, _data, '{}', _created);
           UPDATE eventuous.streams SET version = _current_version + 1 WHERE stream_id = _stream_id;
         END $$ LANGUAGE plpgsql;
         CREATE FUNCTION eventuous.try_insert_tombstone(_gap_position bigint, _stream_name text,
           _message_type text, _message_id uuid) RETURNS void AS $$
         DECLARE sid int; next_pos int;
         BEGIN
           INSERT INTO eventuous.streams(stream_name, version) VALUES (_stream_name, -1)
             ON CONFLICT (stream_name) DO NOTHING;
           SELECT stream_id INTO sid FROM eventuous.streams WHERE stream_name = _stream_name;
           UPDATE eventuous.streams SET version = version + 1 WHERE stream_id = sid
             RETURNING version INTO next_pos;
           INSERT INTO eventuous.messages(message_id, message_type, stream_id, stream_position,
             global_position, json_data, json_metadata, created) OVERRIDING SYSTEM VALUE
             VALUES (_message_id, _message_type, sid, next_pos, _gap_position, '{}'::jsonb,
               '{}'::jsonb, (now() AT TIME ZONE 'utc'))
             ON CONFLICT DO NOTHING;
         END $$ LANGUAGE plpgsql;
         -- The client passes DateTime.UtcNow; the writer's session is UTC here.
         SET TIME ZONE 'UTC';
         SELECT eventuous.append_events('Account-1', '2024-03-01 09:00:00+00', 'V1.Deposited', '{}');
         SELECT eventuous.append_events('Account-2', '2024-03-01 09:01:00+00', 'V1.Deposited', '{}');
         -- An append whose transaction rolled back: its identity value is a gap for good, which
         -- the subscription fills with a tombstone once it gives up waiting.
         DO $$ BEGIN
           PERFORM eventuous.append_events('Account-1', now(), 'V1.Lost', '{}');
           RAISE EXCEPTION 'rolled back';
         EXCEPTION WHEN raise_exception THEN NULL;
         END $$;
         SELECT eventuous.try_insert_tombstone(
           (SELECT max(global_position) + 1 FROM eventuous.messages), '__tombstones__', '$tombstone', gen_random_uuid());
         -- A user event that happens to be named like one, in a stream of its own: an event.
         SELECT eventuous.append_events('Account-1', '2024-03-01 23:02:00+00', '$tombstone', '{}');
         SELECT eventuous.append_events('Account-1', '2024-03-01 09:03:00+00', 'V1.Withdrawn', '{}');",
    )
    .await;
    assert_eq!(
        db.int("SELECT count(*) FROM eventuous.messages WHERE message_type = '$tombstone'")
            .await,
        2
    );
    let p = project("eventuous", &["V1.Deposited", "V1.Withdrawn", "$tombstone"]);
    plan_and_rebuild(&db, &p, "preset eventuous (checked against Eventuous").await;
    // The all-stream subscription's read, minus what ShouldSkipEvent skips.
    let want = truth(
        &db,
        "SELECT s.stream_name AS stream, m.message_type AS type, m.global_position AS pos, \
           (m.created AT TIME ZONE 'UTC') AS at \
         FROM eventuous.messages m JOIN eventuous.streams s ON s.stream_id = m.stream_id \
         WHERE NOT (s.stream_name = '__tombstones__' AND m.message_type = '$tombstone')",
    )
    .await;
    assert_eq!(
        want,
        [
            "Account-1|$tombstone|1|2024-03-01 23:02:00",
            "Account-1|V1.Deposited|1|2024-03-01 09:00:00",
            "Account-1|V1.Withdrawn|1|2024-03-01 09:03:00",
            "Account-2|V1.Deposited|1|2024-03-01 09:01:00"
        ]
    );
    assert_eq!(ledger(&db).await, want);
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Commanded EventStore

#[tokio::test(flavor = "multi_thread")]
async fn commanded_without_a_joined_column_fails_naming_it() {
    let db = fresh_db().await;
    // An old layout, before stream_events carried original_stream_id.
    db.exec(
        "CREATE TABLE streams (stream_id bigserial PRIMARY KEY, stream_uuid text NOT NULL);
         CREATE TABLE events (event_id uuid PRIMARY KEY, event_type text NOT NULL,
           data bytea NOT NULL, metadata bytea, created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE stream_events (event_id uuid NOT NULL, stream_id bigint NOT NULL,
           stream_version bigint NOT NULL);",
    )
    .await;
    let p = project("commanded", &["Deposited"]);
    p.reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has("reproject.toml:3: the `commanded` preset reads column `original_stream_id` of `stream_events` (for `events.source`), which that table does not have")
        .stderr_has("EventStore 1.x");
    db.drop().await;
}
