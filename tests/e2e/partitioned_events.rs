//! Partitioned EVENT tables, created as the stores that partition create them, appended as
//! they append (concurrent writers whose commit order differs from position order):
//!
//! - Marten with archived-stream partitioning: `mt_events` LIST-partitioned on `is_archived`,
//!   and archiving moves a stream's rows to the archived partition. The preset reads what
//!   Marten's daemon reads, `is_archived = false`: a stream archived before a rebuild is left
//!   out; one archived during a rebuild keeps the prefix of its events read before the archive
//!   committed (nothing is taken back, as the daemon takes nothing back) and the next rebuild
//!   leaves it out.
//! - Sequent: `events` RANGE-partitioned by `partition_key`, no global position, the writer's
//!   transaction id in `xact_id bigint`. Read with a column mapping: `xid8` ordering on the
//!   bigint `xact_id`, the position the event's rank in its transaction.
//!
//! Each rebuild (per event, set-based, in stream lanes) must equal the truth computed in SQL.

use crate::config::{Config, Projection};
use crate::harness::{assert_same_rows, wait_for_checkpoint, wait_until, Project, TestDb};
use std::time::Duration;

/// The projection: per stream the balance, the event count and the stream versions in the
/// order they were applied (`trail`), which an event applied out of order, twice or not at
/// all changes.
const ACCOUNTS: &str = "CREATE TABLE accounts (stream text PRIMARY KEY, balance bigint NOT NULL, \
    events int NOT NULL, trail text NOT NULL);";

// The handlers of the Emmett tests (xid_lanes.rs), per event and set-based.
use crate::xid_lanes::{HANDLERS, PER_BATCH};

fn slow(seconds: &str) -> String {
    format!("{HANDLERS}SELECT pg_sleep({seconds});\n")
}

fn project(config: Config, handlers: &str) -> Project {
    config
        .projection(
            Projection::new("accounts")
                .option("stream_key", "stream")
                .option_toml("row_count_tolerance", "100"),
        )
        .file("accounts.sql", handlers)
        .write()
}

async fn assert_truth(db: &TestDb, truth: &str, why: &str) {
    assert_same_rows(db, "accounts", truth, "stream, balance, events, trail", why).await;
}

/// Runs `rebuild --yes ARGS` and checks the table against `truth` (an SQL subquery).
async fn rebuild_equals(db: &TestDb, p: &Project, args: &str, truth: &str) {
    p.reproject(db, &*format!("rebuild --yes {args}"))
        .await
        .ok()
        .stdout_has("swapped");
    assert_truth(db, truth, args).await;
}

/// Two transactions whose commit order differs from the order of what they wrote: `first`
/// writes and stays open, `second` writes and commits, then `first` commits.
async fn crossing(db: &TestDb, first: &str, second: &str) {
    let a = db.client().await;
    let b = db.client().await;
    a.batch_execute(&format!("BEGIN; {first}")).await.unwrap();
    b.batch_execute(&format!("BEGIN; {second}; COMMIT"))
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
}

/// `writers` appenders on their own connections, `appends` transactions each, pausing
/// between statements and before the commit so that transactions overlap; `sql(w, t)` is the
/// transaction's statements.
async fn append_concurrently<F>(db: &TestDb, writers: usize, appends: usize, sql: F)
where
    F: Fn(usize, usize) -> Vec<String> + Send + Sync + Clone + 'static,
{
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = db.client().await;
        let sql = sql.clone();
        tasks.push(tokio::spawn(async move {
            for t in 0..appends {
                client.batch_execute("BEGIN").await.unwrap();
                for (i, s) in sql(w, t).iter().enumerate() {
                    client
                        .batch_execute(s)
                        .await
                        .unwrap_or_else(|e| panic!("{e:?}\n{s}"));
                    tokio::time::sleep(Duration::from_millis(((t + i + w) % 3) as u64)).await;
                }
                client.batch_execute("COMMIT").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Marten, archived-stream partitioning

/// `mt_streams` and `mt_events` as Marten creates them with `UseArchivedStreamPartitioning`
/// (src/Marten/Events/Schema/EventsTable.cs and StreamsTable.cs: `is_archived`
/// `PartitionByListValues().AddPartition("archived", true)`, the foreign key and the unique
/// index with `is_archived`; Weasel's ListPartitioning.cs/ListPartition.cs: `PARTITION BY LIST
/// (is_archived)`, `<table>_archived FOR VALUES IN (true)` and the default partition
/// `<table>_default`; the partition column joins the primary key), and `mt_archive_stream` as
/// src/Marten/Events/Archiving/ArchiveStreamFunction.cs writes it for that layout: the stream
/// and its events copied with `is_archived = TRUE`, the originals deleted: the rows move to
/// the archived partitions.
const MARTEN: &str = "CREATE SEQUENCE mt_events_sequence;
  CREATE TABLE mt_streams (id uuid NOT NULL, type varchar NULL, version bigint NULL,
    timestamp timestamptz NOT NULL DEFAULT (now()), snapshot jsonb NULL, snapshot_version integer NULL,
    created timestamptz NOT NULL DEFAULT (now()), tenant_id varchar NULL DEFAULT '*DEFAULT*',
    is_archived bool NOT NULL DEFAULT FALSE,
    CONSTRAINT pkey_mt_streams_id_is_archived PRIMARY KEY (id, is_archived)) PARTITION BY LIST (is_archived);
  CREATE TABLE mt_streams_archived PARTITION OF mt_streams FOR VALUES IN (true);
  CREATE TABLE mt_streams_default PARTITION OF mt_streams DEFAULT;
  CREATE TABLE mt_events (seq_id bigint NOT NULL, id uuid NOT NULL, stream_id uuid NULL,
    version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT (now()), tenant_id varchar NULL DEFAULT '*DEFAULT*',
    mt_dotnet_type varchar NULL, is_archived bool NOT NULL DEFAULT FALSE,
    CONSTRAINT pkey_mt_events_seq_id_is_archived PRIMARY KEY (seq_id, is_archived),
    CONSTRAINT fkey_mt_events_stream_id_is_archived FOREIGN KEY (stream_id, is_archived)
      REFERENCES mt_streams (id, is_archived) ON DELETE CASCADE) PARTITION BY LIST (is_archived);
  CREATE UNIQUE INDEX pk_mt_events_stream_and_version ON mt_events (stream_id, version, is_archived);
  CREATE TABLE mt_events_archived PARTITION OF mt_events FOR VALUES IN (true);
  CREATE TABLE mt_events_default PARTITION OF mt_events DEFAULT;
  CREATE FUNCTION mt_archive_stream(streamid uuid) RETURNS VOID LANGUAGE plpgsql AS $f$
  BEGIN
    insert into mt_streams select id, type, version, timestamp, snapshot, snapshot_version, created, tenant_id, TRUE
      from mt_streams where id = streamid;
    insert into mt_events select seq_id, id, stream_id, version, data, type, timestamp, tenant_id, mt_dotnet_type, TRUE
      from mt_events where stream_id = streamid;
    delete from mt_events where stream_id = streamid and is_archived = FALSE;
    delete from mt_streams where id = streamid and is_archived = FALSE;
  END;
  $f$;";

/// A Marten stream's id.
fn stream(name: &str) -> String {
    format!("md5('{name}')::uuid")
}

/// One append of `n` events to stream `name` as Marten's Quick append does it: the stream row
/// upserted, each event's `seq_id` drawn from the sequence inside the transaction; the
/// versions follow the stream's current one.
fn marten_append(name: &str, n: usize, amount: usize) -> Vec<String> {
    let s = stream(name);
    let mut out = vec![format!(
        "INSERT INTO mt_streams (id, type, version) VALUES ({s}, 'Account', 0) ON CONFLICT (id, is_archived) DO NOTHING"
    )];
    for e in 0..n {
        out.push(format!(
            "WITH v AS (UPDATE mt_streams SET version = version + 1 WHERE id = {s} AND NOT is_archived RETURNING version)
             INSERT INTO mt_events (seq_id, id, stream_id, version, data, type)
             SELECT nextval('mt_events_sequence'), gen_random_uuid(), {s}, v.version,
                    jsonb_build_object('amount', {a}, 'n', v.version), 'Deposited' FROM v",
            a = amount + e
        ));
    }
    out
}

/// The accounts of the unarchived events (what the preset reads) that satisfy `cut`.
fn marten_truth(cut: &str) -> String {
    format!(
        "(SELECT stream_id::text AS stream, sum((data->>'amount')::bigint) AS balance, count(*)::int AS events, \
                string_agg(version::text, ',' ORDER BY version) AS trail \
           FROM mt_events WHERE is_archived = false AND ({cut}) GROUP BY stream_id) truth"
    )
}

/// Writers 0..writers append to four streams each (`tag-w-k`), 1-3 events per transaction.
async fn marten_writers(db: &TestDb, tag: &str, writers: usize, appends: usize) {
    let tag = tag.to_string();
    append_concurrently(db, writers, appends, move |w, t| {
        marten_append(
            &format!("{tag}-{w}-{}", (t + w) % 4),
            1 + (t * 7 + w) % 3,
            10 * t + w,
        )
    })
    .await;
}

async fn marten_db() -> TestDb {
    let db = TestDb::new().await;
    db.exec(&format!("{MARTEN} {ACCOUNTS}")).await;
    crossing(
        &db,
        &marten_append("cross-a", 1, 1).join(";"),
        &marten_append("cross-b", 1, 2).join(";"),
    )
    .await;
    db.assert_int_because(
        &format!(
            "SELECT count(*) FROM mt_events a, mt_events b WHERE a.stream_id = {} AND b.stream_id = {} \
              AND a.seq_id < b.seq_id AND a.xmin::text::bigint < b.xmin::text::bigint",
            stream("cross-a"),
            stream("cross-b")
        ),
        1,
        "the lower position committed last",
    )
    .await;
    db
}

/// Archived before the rebuild: left out; per event, in two stream lanes, set-based: the
/// truth; `plan` reads only the default (unarchived) partition, in one ordered pass.
#[tokio::test(flavor = "multi_thread")]
async fn marten_archive_partitions_rebuild_equals_the_unarchived_truth() {
    let db = marten_db().await;
    marten_writers(&db, "acc", 4, 25).await;
    db.exec(&format!(
        "SELECT mt_archive_stream({}); SELECT mt_archive_stream({});",
        stream("acc-0-1"),
        stream("acc-2-3")
    ))
    .await;
    db.assert_int_because(
        "SELECT count(DISTINCT stream_id) FROM mt_events_archived",
        2,
        "archiving moved the rows to the archived partition",
    )
    .await;
    db.assert_int(
        &format!(
            "SELECT count(*) FROM mt_events_default WHERE stream_id IN ({}, {})",
            stream("acc-0-1"),
            stream("acc-2-3")
        ),
        0,
    )
    .await;
    let truth = marten_truth("true");
    let p = project(Config::default().event("preset", "marten"), HANDLERS);
    let plan = p.reproject(&db, "plan").await;
    plan.ok();
    let reads: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.starts_with("read for the"))
        .collect();
    assert_eq!(reads.len(), 2, "{}", plan.stdout);
    for r in &reads {
        assert!(r.contains("mt_events_default"), "{r}");
        assert!(
            !r.contains("mt_events_archived"),
            "the filter prunes the archived partition: {r}"
        );
    }
    assert!(
        reads[0].contains("one ordered pass"),
        "the bulk replay: {}",
        reads[0]
    );
    rebuild_equals(&db, &p, "--batch-size 7", &truth).await;
    assert!(db.int("SELECT count(*) FROM accounts").await > 10);
    db.assert_int_because(
        &format!(
            "SELECT count(*) FROM accounts WHERE stream IN ({}::text, {}::text)",
            stream("acc-0-1"),
            stream("acc-2-3")
        ),
        0,
        "archived streams are not replayed",
    )
    .await;
    rebuild_equals(&db, &p, "--jobs 2 --batch-size 7", &truth).await;
    db.assert_int(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 2 AND done_at IS NOT NULL",
        2,
    )
    .await;
    let set = project(Config::default().event("preset", "marten"), PER_BATCH);
    rebuild_equals(&db, &set, "--jobs 2 --set-batch-size 40", &truth).await;
    db.drop().await;
}

/// A stream archived while the rebuild replays it, and events appended meanwhile: the rebuild
/// keeps a prefix of the archived stream (what it read before the archive committed), every
/// other stream equals the truth up to the swap's checkpoint (the catch-up applied the new
/// events), and the next rebuild leaves the archived stream out.
#[tokio::test(flavor = "multi_thread")]
async fn marten_stream_archived_during_the_rebuild() {
    let db = marten_db().await;
    // Writer 0 appends to the stream that is archived later, the others to their own: its
    // events are spread over the positions.
    append_concurrently(&db, 4, 25, |w, t| {
        let name = if w == 0 {
            "gone".to_string()
        } else {
            format!("acc-{w}-{}", t % 3)
        };
        marten_append(&name, 1 + (t + w) % 2, 10 * t + w)
    })
    .await;
    let gone = stream("gone");
    let mid = db
        .int(&format!(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY seq_id) FROM mt_events WHERE stream_id = {gone}"
        ))
        .await;
    let total_gone = db
        .int(&format!(
            "SELECT count(*) FROM mt_events WHERE stream_id = {gone}"
        ))
        .await;
    let p = project(Config::default().event("preset", "marten"), &slow("0.03"));
    let child = p.spawn(&db, "rebuild --yes --batch-size 5");
    wait_for_checkpoint(&db, mid).await;
    db.exec(&format!("SELECT mt_archive_stream({gone})")).await;
    marten_writers(&db, "new", 3, 8).await;
    let out = child.output().await;
    out.code(0).stdout_has("run 1: swapped");
    let cp = db
        .int("SELECT position FROM reproject.checkpoints WHERE run_id = 1")
        .await;
    let cut = format!("seq_id <= {cp} AND stream_id <> {gone}");
    assert_same_rows(
        &db,
        &format!("(SELECT * FROM accounts WHERE stream <> {gone}::text) a"),
        &marten_truth(&cut),
        "stream, balance, events, trail",
        "unarchived streams, caught up to the swap",
    )
    .await;
    db.assert_int_because(
        &format!(
            "SELECT count(*) FROM mt_events WHERE stream_id IN ({}) AND seq_id <= {cp}",
            stream("new-1-1")
        ),
        db.int(&format!(
            "SELECT count(*) FROM mt_events WHERE stream_id = {}",
            stream("new-1-1")
        ))
        .await,
        "the events appended during the rebuild were caught up",
    )
    .await;
    // The archived stream: a prefix of its versions, each once, in order.
    let k = db
        .int(&format!(
            "SELECT coalesce((SELECT events FROM accounts WHERE stream = {gone}::text), 0)::bigint"
        ))
        .await;
    assert!(
        k >= 1 && k <= total_gone,
        "{k} of {total_gone} events of the archived stream"
    );
    db.assert_int_because(
        &format!(
            "SELECT count(*) FROM accounts WHERE stream = {gone}::text \
               AND trail = (SELECT string_agg(v::text, ',' ORDER BY v) FROM generate_series(1, {k}) v) \
               AND balance = (SELECT sum((data->>'amount')::bigint) FROM mt_events WHERE stream_id = {gone} AND version <= {k})"
        ),
        1,
        "the archived stream keeps the prefix read before the archive",
    )
    .await;
    rebuild_equals(&db, &p, "--batch-size 50", &marten_truth("true")).await;
    db.assert_int(
        &format!("SELECT count(*) FROM accounts WHERE stream = {gone}::text"),
        0,
    )
    .await;
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Sequent

/// Sequent's event store tables as its schema code creates them (db/sequent_schema_tables.sql,
/// db/sequent_schema_partitions.sql, db/sequent_schema_indexes.sql): `events` RANGE-partitioned
/// by `partition_key` with a default partition, no global position, `xact_id bigint DEFAULT
/// pg_current_xact_id()::text::bigint`, the foreign key to `aggregates` that moves an
/// aggregate's events when its partition key changes (ON UPDATE CASCADE).
const SEQUENT: &str = "CREATE TABLE command_types (id SMALLINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, type text UNIQUE NOT NULL);
  CREATE TABLE aggregate_types (id SMALLINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, type text UNIQUE NOT NULL);
  CREATE TABLE event_types (id SMALLINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, type text UNIQUE NOT NULL);
  CREATE SEQUENCE IF NOT EXISTS commands_id_seq;
  CREATE TABLE commands (id bigint NOT NULL DEFAULT nextval('commands_id_seq'), created_at timestamp with time zone NOT NULL,
    user_id uuid, aggregate_id uuid, command_type_id SMALLINT NOT NULL, command_json jsonb NOT NULL,
    event_aggregate_id uuid, event_sequence_number integer) PARTITION BY RANGE (id);
  ALTER SEQUENCE commands_id_seq OWNED BY commands.id;
  CREATE TABLE aggregates (aggregate_id uuid NOT NULL, events_partition_key text NOT NULL DEFAULT '',
    aggregate_type_id SMALLINT NOT NULL, snapshot_threshold integer,
    created_at timestamp with time zone NOT NULL DEFAULT NOW()) PARTITION BY RANGE (aggregate_id);
  CREATE TABLE events (aggregate_id uuid NOT NULL, partition_key text NOT NULL DEFAULT '',
    sequence_number integer NOT NULL, created_at timestamp with time zone NOT NULL, command_id bigint NOT NULL,
    event_type_id SMALLINT NOT NULL, event_json jsonb NOT NULL, xact_id bigint) PARTITION BY RANGE (partition_key);
  CREATE TABLE commands_default PARTITION OF commands DEFAULT;
  CREATE TABLE commands_0 PARTITION OF commands FOR VALUES FROM (1) TO (100e6);
  CREATE TABLE aggregates_0 PARTITION OF aggregates FOR VALUES FROM (MINVALUE) TO ('40000000-0000-0000-0000-000000000000');
  CREATE TABLE aggregates_4 PARTITION OF aggregates FOR VALUES FROM ('40000000-0000-0000-0000-000000000000') TO ('80000000-0000-0000-0000-000000000000');
  CREATE TABLE aggregates_8 PARTITION OF aggregates FOR VALUES FROM ('80000000-0000-0000-0000-000000000000') TO ('c0000000-0000-0000-0000-000000000000');
  CREATE TABLE aggregates_c PARTITION OF aggregates FOR VALUES FROM ('c0000000-0000-0000-0000-000000000000') TO (MAXVALUE);
  CREATE TABLE events_default PARTITION OF events DEFAULT;
  CREATE TABLE events_2023_and_earlier PARTITION OF events FOR VALUES FROM ('Y00') TO ('Y24');
  CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('Y24') TO ('Y25');
  CREATE TABLE events_2025_and_later PARTITION OF events FOR VALUES FROM ('Y25') TO ('Y99');
  CREATE TABLE events_aggregate PARTITION OF events FOR VALUES FROM ('A') TO ('Ag');
  ALTER TABLE aggregates ADD PRIMARY KEY (aggregate_id);
  ALTER TABLE aggregates ADD UNIQUE (events_partition_key, aggregate_id);
  ALTER TABLE commands ADD PRIMARY KEY (id);
  ALTER TABLE events ADD PRIMARY KEY (partition_key, aggregate_id, sequence_number);
  CREATE INDEX events_command_id_idx ON events (command_id);
  CREATE INDEX events_event_type_id_idx ON events (event_type_id);
  ALTER TABLE aggregates ADD FOREIGN KEY (aggregate_type_id) REFERENCES aggregate_types (id) ON UPDATE CASCADE;
  ALTER TABLE events ADD FOREIGN KEY (partition_key, aggregate_id) REFERENCES aggregates (events_partition_key, aggregate_id)
    ON UPDATE CASCADE ON DELETE RESTRICT;
  ALTER TABLE events ADD FOREIGN KEY (command_id) REFERENCES commands (id) ON UPDATE RESTRICT ON DELETE RESTRICT;
  ALTER TABLE events ADD FOREIGN KEY (event_type_id) REFERENCES event_types (id) ON UPDATE CASCADE;
  ALTER TABLE events ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id()::text::bigint;
  INSERT INTO command_types (type) VALUES ('Deposit');
  INSERT INTO aggregate_types (type) VALUES ('Account');
  INSERT INTO event_types (type) VALUES ('Deposited');";

/// The mapping: `xid8` ordering on the bigint `xact_id`; the position is the event's rank in
/// its transaction (in the order store_events inserts: command, aggregate, sequence number),
/// which is final once the transaction committed.
fn sequent_config() -> Config {
    Config::default()
        .event(
            "source",
            "SELECT e.xact_id, row_number() OVER (PARTITION BY e.xact_id \
               ORDER BY e.command_id, e.aggregate_id, e.sequence_number) AS position, \
             e.aggregate_id, t.type AS event_type, e.event_json, e.created_at \
             FROM events e JOIN event_types t ON t.id = e.event_type_id",
        )
        .event("lock_table", "events")
        .event("position", "position")
        .event("stream", "aggregate_id")
        .event("type", "event_type")
        .event("data", "event_json")
        .event("timestamp", "created_at")
        .event("ordering", "xid8")
        .event("transaction_id", "xact_id")
}

fn aggregate(name: &str) -> String {
    format!("md5('{name}')::uuid")
}

/// One command as Sequent's store_events stores it (db/migrate/sequent/store_events_v05.sql,
/// store_command, store_aggregates): the command row, each aggregate upserted with its
/// events' partition key, then the events with the next sequence numbers. `aggs`: the
/// aggregates and their partition keys, `n` events each.
fn sequent_append(aggs: &[(String, &str)], n: usize, amount: usize) -> Vec<String> {
    let mut out = vec![
        "CREATE TEMP TABLE IF NOT EXISTS cmd (id bigint); TRUNCATE cmd;
        WITH c AS (INSERT INTO commands (created_at, command_type_id, command_json)
          VALUES (now(), 1, '{}') RETURNING id) INSERT INTO cmd SELECT id FROM c"
            .to_string(),
    ];
    for (name, key) in aggs {
        let a = aggregate(name);
        out.push(format!(
            "INSERT INTO aggregates (aggregate_id, events_partition_key, aggregate_type_id) VALUES ({a}, '{key}', 1) \
             ON CONFLICT (aggregate_id) DO NOTHING"
        ));
        out.push(format!(
            "INSERT INTO events (partition_key, aggregate_id, sequence_number, created_at, command_id, event_type_id, event_json)
             SELECT g.events_partition_key, {a}, s.last + i, now(), (SELECT id FROM cmd), 1,
                    jsonb_build_object('amount', {amount} + i, 'n', s.last + i)
             FROM aggregates g, (SELECT coalesce(max(sequence_number), 0) AS last FROM events WHERE aggregate_id = {a}) s,
                  generate_series(1, {n}) i
             WHERE g.aggregate_id = {a}"
        ));
    }
    out
}

fn sequent_truth() -> String {
    "(SELECT aggregate_id::text AS stream, sum((event_json->>'amount')::bigint) AS balance, count(*)::int AS events, \
            string_agg(sequence_number::text, ',' ORDER BY sequence_number) AS trail \
       FROM events GROUP BY aggregate_id) truth"
        .to_string()
}

const KEYS: [&str; 3] = ["", "Y24", "Y25"];

async fn sequent_writers(db: &TestDb, tag: &str, writers: usize, appends: usize) {
    let tag = tag.to_string();
    append_concurrently(db, writers, appends, move |w, t| {
        // Each command touches two aggregates of the writer, in different partitions.
        let aggs = [
            (format!("{tag}-{w}-{}", t % 3), KEYS[(w + t) % 3]),
            (format!("{tag}-{w}-{}", 3 + t % 2), KEYS[(w + t + 1) % 3]),
        ];
        sequent_append(&aggs, 1 + (t + w) % 2, 10 * t + w)
    })
    .await;
}

async fn sequent_db() -> TestDb {
    let db = TestDb::new().await;
    db.exec(&format!("{SEQUENT} {ACCOUNTS}")).await;
    crossing(
        &db,
        &sequent_append(&[("cross-a".into(), "")], 1, 1).join(";"),
        &sequent_append(&[("cross-b".into(), "Y24")], 1, 2).join(";"),
    )
    .await;
    db.assert_int_because(
        &format!(
            "SELECT count(*) FROM events a, events b WHERE a.aggregate_id = {} AND b.aggregate_id = {} \
              AND a.xact_id < b.xact_id AND a.command_id < b.command_id \
              AND a.xmin::text::bigint < b.xmin::text::bigint",
            aggregate("cross-a"),
            aggregate("cross-b")
        ),
        1,
        "the lower transaction id committed last",
    )
    .await;
    db
}

/// The mapping reads Sequent's partitioned `events` in (xact_id, rank) order: per event, in
/// two stream lanes, set-based, all equal the truth; `plan` reads every partition in one
/// ordered pass.
#[tokio::test(flavor = "multi_thread")]
async fn sequent_partitioned_events_rebuild_in_transaction_order() {
    let db = sequent_db().await;
    sequent_writers(&db, "acc", 4, 20).await;
    db.assert_int_because(
        "SELECT count(DISTINCT tableoid) FROM events",
        3,
        "events in three partitions",
    )
    .await;
    let truth = sequent_truth();
    let p = project(sequent_config(), HANDLERS);
    let plan = p.reproject(&db, "plan").await;
    plan.ok();
    let bulk = plan
        .stdout
        .lines()
        .find(|l| l.starts_with("read for the bulk replay"))
        .unwrap_or_else(|| panic!("{}", plan.stdout))
        .to_string();
    assert!(bulk.contains("one ordered pass"), "{bulk}");
    for part in ["events_default", "events_2024", "events_2025_and_later"] {
        assert!(bulk.contains(part), "{part} in {bulk}");
    }
    rebuild_equals(&db, &p, "--batch-size 7", &truth).await;
    db.assert_int_because(
        "SELECT count(*) FROM reproject.checkpoints WHERE run_id = 1 \
           AND transaction_id = (SELECT max(xact_id)::text::xid8 FROM events)",
        1,
        "the checkpoint is in the newest transaction",
    )
    .await;
    rebuild_equals(&db, &p, "--jobs 2 --batch-size 7", &truth).await;
    db.assert_int(
        "SELECT count(*) FROM reproject.lanes WHERE run_id = 2 AND done_at IS NOT NULL",
        2,
    )
    .await;
    let set = project(sequent_config(), PER_BATCH);
    rebuild_equals(&db, &set, "--jobs 2 --set-batch-size 30", &truth).await;
    db.drop().await;
}

/// Events appended during the rebuild, and an aggregate whose partition key changes (its
/// events move to another partition, keeping their transaction id) while it is replayed:
/// the catch-up applies the new events once, the moved ones are not applied again.
#[tokio::test(flavor = "multi_thread")]
async fn sequent_catch_up_and_partition_key_change_during_the_rebuild() {
    let db = sequent_db().await;
    sequent_writers(&db, "acc", 4, 20).await;
    let before = db.int("SELECT count(*) FROM events").await;
    let p = project(sequent_config(), &slow("0.02"));
    let child = p.spawn(&db, "rebuild --yes --batch-size 5");
    wait_until(
        &db,
        "SELECT (SELECT sum(events) FROM accounts_rebuild) >= 30",
    )
    .await;
    let moved = aggregate("acc-1-0");
    db.exec(&format!(
        "UPDATE aggregates SET events_partition_key = 'A' WHERE aggregate_id = {moved}"
    ))
    .await;
    db.assert_int(
        &format!("SELECT count(*) FROM events_aggregate WHERE aggregate_id = {moved}"),
        db.int(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = {moved}"
        ))
        .await,
    )
    .await;
    sequent_writers(&db, "new", 2, 5).await;
    sequent_writers(&db, "acc", 2, 3).await;
    let out = child.output().await;
    out.code(0).stdout_has("run 1: swapped");
    let all = db.int("SELECT count(*) FROM events").await;
    assert!(all > before);
    assert_truth(&db, &sequent_truth(), "caught up, moved events once").await;
    db.assert_int_because(
        "SELECT events_applied FROM reproject.runs WHERE id = 1",
        all,
        "every event once",
    )
    .await;
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Index hints on a partitioned event table

/// Emmett's `emt_messages` (partitioned by `partition`, then `is_archived`) has no index in
/// reading order: `plan` names one for each leaf partition the reads scan, and none for the
/// archived partition, which the preset's filter prunes.
#[tokio::test(flavor = "multi_thread")]
async fn plan_names_an_index_for_the_partitions_the_reads_scan_only() {
    let db = TestDb::new().await;
    db.exec(crate::xid_lanes::LAYOUT).await;
    // A transaction open (anywhere in the cluster) before the events were written holds the
    // cut below all of them: the plan must still show the reads as they will run.
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    db.exec(
        "INSERT INTO emt_messages (stream_id, stream_position, message_data, message_metadata, \
           message_schema_version, message_type, message_id, transaction_id, is_archived) \
         SELECT 's-' || i % 5, i, jsonb_build_object('amount', i, 'n', i), '{}', '1', 'Deposited', \
           gen_random_uuid()::text, pg_current_xact_id(), i % 7 = 0 FROM generate_series(1, 200) i",
    )
    .await;
    db.assert_int("SELECT count(*) FROM emt_messages_global_archived", 28)
        .await;
    let p = project(Config::default().event("preset", "emmett"), HANDLERS);
    let plan = p.reproject(&db, "plan").await;
    plan.ok();
    let warning = plan
        .stdout
        .lines()
        .find(|l| l.starts_with("warning: no index serves the reading order"))
        .unwrap_or_else(|| panic!("{}", plan.stdout))
        .to_string();
    assert!(
        warning.contains(
            "CREATE INDEX CONCURRENTLY ON emt_messages_global_active (((transaction_id)::xid8), (global_position))"
        ),
        "{warning}"
    );
    assert!(
        !warning.contains("emt_messages_global_archived"),
        "the archived partition is never read: {warning}"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    // Created as named, the catch-up reads in index order.
    let index = warning.split(": CREATE").nth(1).expect("a statement");
    db.exec(&format!("CREATE{index}")).await;
    db.exec("ANALYZE emt_messages").await;
    let plan = p.reproject(&db, "plan").await;
    plan.ok();
    assert!(
        !plan.stdout.contains("warning: no index serves"),
        "{}",
        plan.stdout
    );
    db.drop().await;
}
