//! Partitioned projection tables: cloned partitioned the same way, partition by partition,
//! swapped, rolled back and cleaned up like plain ones, with each partition's own grants,
//! indexes and comment carried over; what cannot be done is refused naming the partition.

use crate::catalog::{differences, fingerprint};
use crate::config::{Config, Projection};
use crate::harness::{Project, TestDb};
use serde_json::Value;

const PARTS: [&str; 4] = [
    "balances_low",
    "balances_mid",
    "balances_high",
    "balances_rest",
];

fn balances() -> Project {
    Config::events("events")
        .projection(Projection::new("balances"))
        .file(
            "balances.sql",
            "-- on credited\n\
             INSERT INTO {{balances}} AS b (account, bucket, balance) \
             VALUES (:stream, (:data->>'bucket')::int, (:data->>'amount')::bigint) \
             ON CONFLICT (account, bucket) DO UPDATE SET balance = b.balance + EXCLUDED.balance;\n",
        )
        .write()
}

async fn append(db: &TestDb, from: i64, to: i64) {
    db.exec(&format!(
        "INSERT INTO events (stream, type, data) \
         SELECT 'acct-' || (i % 40), 'credited', jsonb_build_object('amount', i, 'bucket', i % 35) \
         FROM generate_series({from}, {to}) i"
    ))
    .await;
}

/// Range-partitioned `balances` (three ranges and a default), an index on the parent and one
/// of a partition's own, grants on the parent and on one partition, a view on the parent.
async fn setup_range(db: &TestDb, reader: &str) {
    db.exec(&format!(
        "DO $$ BEGIN CREATE ROLE {reader}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE balances (account text NOT NULL, bucket int NOT NULL, balance bigint NOT NULL,
                                PRIMARY KEY (account, bucket)) PARTITION BY RANGE (bucket);
         CREATE INDEX balances_by_balance ON balances (balance);
         CREATE TABLE balances_low PARTITION OF balances FOR VALUES FROM (0) TO (10);
         CREATE TABLE balances_mid PARTITION OF balances FOR VALUES FROM (10) TO (20);
         CREATE TABLE balances_high PARTITION OF balances FOR VALUES FROM (20) TO (30)
           WITH (fillfactor = 70);
         CREATE TABLE balances_rest PARTITION OF balances DEFAULT;
         CREATE INDEX balances_mid_rich ON balances_mid (account) WHERE balance > 1000;
         COMMENT ON TABLE balances_mid IS 'the middle buckets';
         GRANT SELECT ON balances TO {reader};
         GRANT SELECT ON balances_mid TO {reader};
         CREATE VIEW balances_view AS SELECT account, sum(balance) AS total FROM balances GROUP BY account;
         GRANT SELECT ON balances_view TO {reader};
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NEW; END $f$;
         CREATE TRIGGER balances_touch BEFORE UPDATE ON balances FOR EACH ROW EXECUTE FUNCTION touch();
         CREATE TRIGGER mid_touch BEFORE UPDATE ON balances_mid FOR EACH ROW EXECUTE FUNCTION touch();
         ALTER TABLE balances_high ENABLE ROW LEVEL SECURITY;
         CREATE POLICY high_all ON balances_high FOR SELECT USING (true);"
    ))
    .await;
    append(db, 1, 500).await;
    db.exec(
        "INSERT INTO balances SELECT stream, (data->>'bucket')::int, sum((data->>'amount')::bigint)
         FROM events GROUP BY 1, 2",
    )
    .await;
}

async fn fingerprints(db: &TestDb) -> Vec<(String, Value)> {
    let mut out = vec![("balances".to_string(), fingerprint(db, "balances").await)];
    for p in PARTS {
        out.push((p.to_string(), fingerprint(db, p).await));
    }
    out
}

async fn assert_intact(db: &TestDb, reader: &str, original: &[(String, Value)], step: &str) {
    for ((name, before), (_, now)) in original.iter().zip(fingerprints(db).await.iter()) {
        let d = differences(before, now);
        assert!(d.is_empty(), "{step}: `{name}` differs: {d:#?}");
    }
    // The rows are the events' rows, each in the partition its bucket belongs to.
    let wrong = db
        .int(
            "SELECT count(*) FROM (
               (SELECT stream, (data->>'bucket')::int, sum((data->>'amount')::bigint) FROM events GROUP BY 1, 2
                EXCEPT SELECT account, bucket, balance FROM balances)
               UNION ALL
               (SELECT account, bucket, balance FROM balances
                EXCEPT SELECT stream, (data->>'bucket')::int, sum((data->>'amount')::bigint) FROM events GROUP BY 1, 2)) x",
        )
        .await;
    assert_eq!(wrong, 0, "{step}: rows");
    db.assert_int_because(
        "SELECT count(*) FROM balances_rest WHERE bucket < 30",
        0,
        &format!("{step}: the default partition holds only the buckets of no range"),
    )
    .await;
    assert!(
        db.int("SELECT count(*) FROM balances_rest").await > 0,
        "{step}: the default partition has rows"
    );
    // The view reads the new table.
    db.assert_int_because(
        "SELECT count(*) FROM balances_view",
        40,
        &format!("{step}: view"),
    )
    .await;
    let client = db.client().await;
    client
        .batch_execute(&format!("SET ROLE {reader}"))
        .await
        .unwrap();
    for table in ["balances", "balances_mid", "balances_view"] {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("{step}: the reader cannot read {table}: {e:?}"));
    }
    let denied = client
        .query_one("SELECT count(*) FROM balances_low", &[])
        .await
        .expect_err("the reader has no grant on balances_low");
    assert_eq!(denied.code().map(|c| c.code()), Some("42501"), "{step}");
    client.batch_execute("RESET ROLE").await.unwrap();
    // The partition's own index is used under its own name, and nothing is named after a
    // rebuild table.
    db.assert_int_because(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'balances_mid' AND indexname = 'balances_mid_rich'",
        1,
        &format!("{step}: the partition's own index"),
    )
    .await;
    // The parent's trigger is on the parent and (PostgreSQL's clones) on each partition; the
    // partition's own only on it.
    db.assert_int_because(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'balances_touch' \
         AND tgrelid IN ('balances'::regclass, 'balances_low'::regclass, 'balances_mid'::regclass, \
                         'balances_high'::regclass, 'balances_rest'::regclass)",
        5,
        &format!("{step}: the parent's trigger"),
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'mid_touch' AND tgrelid = 'balances_mid'::regclass",
        1,
        &format!("{step}: the partition's own trigger"),
    )
    .await;
    db.assert_int_because(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname LIKE '%rebuild%'",
        0,
        &format!("{step}: no table or index is named after a rebuild table"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_partitioned_table_is_rebuilt_swapped_rolled_back_and_cleaned_up() {
    let db = TestDb::new().await;
    let reader = format!("reader_{}", db.name);
    setup_range(&db, &reader).await;
    let original = fingerprints(&db).await;
    assert_eq!(
        original[0].1["partitions"].as_array().map(Vec::len),
        Some(4),
        "{:#}",
        original[0].1
    );
    let p = balances();
    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("partitioned by RANGE (bucket): 4 partition(s)");

    let mut oids = Vec::new();
    for round in 1..=2 {
        append(&db, round * 1000, round * 1000 + 150).await;
        let before = db.oid("balances_mid").await;
        p.reproject(&db, "rebuild --yes").await.ok();
        assert_ne!(
            db.oid("balances_mid").await,
            before,
            "round {round}: the partition was swapped"
        );
        oids.push(db.oid("balances").await);
        assert_intact(&db, &reader, &original, &format!("after swap {round}")).await;
        // The replaced generation is kept whole, partitions included.
        db.assert_int_because(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'balances_old'::regclass",
            4,
            &format!("round {round}: balances_old keeps its partitions"),
        )
        .await;
        assert!(db.exists("balances_mid_old").await, "round {round}");
    }

    // Back to run 1's generation (caught up with the events since).
    append(&db, 5000, 5040).await;
    p.reproject(&db, "rollback --yes").await.ok();
    assert_eq!(
        db.oid("balances").await,
        oids[0],
        "the rollback restored run 1's table"
    );
    assert_intact(&db, &reader, &original, "after rollback").await;

    p.reproject(&db, "cleanup --yes").await.ok();
    db.assert_int("SELECT count(*) FROM reproject.helper_tables", 0)
        .await;
    db.assert_int_because(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace \
         AND relname ~ '(_old|_rolled_back_|_retired_)' AND relkind IN ('r', 'p')",
        0,
        "cleanup dropped the old generations with their partitions",
    )
    .await;
    assert_intact(&db, &reader, &original, "after cleanup").await;
    db.exec(&format!("DROP OWNED BY {reader}; DROP ROLE {reader}"))
        .await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hash_partitioned_table_is_rebuilt_and_swapped() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE balances (account text NOT NULL, bucket int NOT NULL, balance bigint NOT NULL,
                                PRIMARY KEY (account, bucket)) PARTITION BY HASH (account);
         CREATE TABLE balances_h0 PARTITION OF balances FOR VALUES WITH (MODULUS 3, REMAINDER 0);
         CREATE TABLE balances_h1 PARTITION OF balances FOR VALUES WITH (MODULUS 3, REMAINDER 1);
         CREATE TABLE balances_h2 PARTITION OF balances FOR VALUES WITH (MODULUS 3, REMAINDER 2);",
    )
    .await;
    append(&db, 1, 300).await;
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for t in ["balances", "balances_h0", "balances_h1", "balances_h2"] {
            v.push(fingerprint(&db, t).await);
        }
        v
    };
    let p = balances();
    p.reproject(&db, "rebuild --yes").await.ok();
    for (i, t) in ["balances", "balances_h0", "balances_h1", "balances_h2"]
        .iter()
        .enumerate()
    {
        let d = differences(&before[i], &fingerprint(&db, t).await);
        assert!(d.is_empty(), "`{t}` differs: {d:#?}");
        assert!(
            db.int(&format!("SELECT count(*) FROM {t}")).await > 0,
            "{t}"
        );
    }
    db.assert_int(
        "SELECT count(*) FROM (SELECT stream, (data->>'bucket')::int, sum((data->>'amount')::bigint) FROM events GROUP BY 1, 2
          EXCEPT SELECT account, bucket, balance FROM balances) x",
        0,
    )
    .await;
    // 300 events over 40 streams and 35 buckets: 280 (account, bucket) pairs.
    db.assert_int("SELECT count(*) FROM balances", 280).await;
    db.drop().await;
}

/// `p_rebuild` must fit PostgreSQL's 63 bytes: a longer partition name is refused by `plan`,
/// naming it, before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_name_too_long_for_its_helper_is_refused_up_front() {
    let db = TestDb::new().await;
    // 56 bytes: `_rebuild` makes 64.
    let long = "balances_for_the_accounts_of_the_northern_region_in_2026";
    assert_eq!(long.len(), 56);
    db.exec(&format!(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE balances (account text NOT NULL, bucket int NOT NULL, balance bigint NOT NULL,
                                PRIMARY KEY (account, bucket)) PARTITION BY LIST (bucket);
         CREATE TABLE {long} PARTITION OF balances FOR VALUES IN (1);
         CREATE TABLE balances_other PARTITION OF balances DEFAULT;"
    ))
    .await;
    let p = balances();
    p.reproject(&db, "plan")
        .await
        .code(2)
        .stderr_has(&format!("partition `{long}` of `balances`"))
        .stderr_has("63");
    crate::harness::refused(&db, &p, &[long]).await;
    db.drop().await;
}

/// A partition attached to the live table while the rebuild ran would be left behind: the
/// swap refuses (exit 4), naming it, and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_added_during_the_rebuild_refuses_the_swap() {
    let db = TestDb::new().await;
    let reader = format!("reader_{}", db.name);
    setup_range(&db, &reader).await;
    let p = balances();
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    db.exec("CREATE TABLE balances_far PARTITION OF balances FOR VALUES FROM (1000) TO (2000)")
        .await;
    let before = db.oid("balances").await;
    p.reproject(&db, "swap --yes")
        .await
        .code(4)
        .stderr_has("balances_far");
    assert_eq!(db.oid("balances").await, before, "nothing was swapped");
    assert!(db.exists("balances_rebuild").await);
    db.exec(&format!("DROP OWNED BY {reader}; DROP ROLE {reader}"))
        .await;
    db.drop().await;
}

/// Sub-partitions and foreign keys of a partitioned table are not carried over yet: refused
/// before anything is written, naming them.
#[tokio::test(flavor = "multi_thread")]
async fn sub_partitions_and_foreign_keys_are_refused_naming_them() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE accounts (account text PRIMARY KEY);
         CREATE TABLE balances (account text NOT NULL CONSTRAINT balances_account_fk REFERENCES accounts,
                                bucket int NOT NULL, balance bigint NOT NULL,
                                PRIMARY KEY (account, bucket)) PARTITION BY LIST (bucket);
         CREATE TABLE balances_one PARTITION OF balances FOR VALUES IN (1) PARTITION BY HASH (account);
         CREATE TABLE balances_one_a PARTITION OF balances_one FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE balances_one_b PARTITION OF balances_one FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         CREATE TABLE balances_other PARTITION OF balances DEFAULT;",
    )
    .await;
    crate::harness::refused(
        &db,
        &balances(),
        &[
            "its partition balances_one is partitioned itself",
            "foreign key balances_account_fk",
        ],
    )
    .await;
    db.drop().await;
}

/// A partition that gained a dependent reproject cannot carry (a rule) between the rebuild and
/// the swap refuses the swap under the locks, naming that partition (the partitions are
/// checked together, each with its own problems).
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_that_gained_a_rule_refuses_the_swap_naming_it() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE balances (account text NOT NULL, bucket int NOT NULL, balance bigint NOT NULL,
                                PRIMARY KEY (account, bucket)) PARTITION BY HASH (account);
         CREATE TABLE balances_h0 PARTITION OF balances FOR VALUES WITH (MODULUS 3, REMAINDER 0);
         CREATE TABLE balances_h1 PARTITION OF balances FOR VALUES WITH (MODULUS 3, REMAINDER 1);
         CREATE TABLE balances_h2 PARTITION OF balances FOR VALUES WITH (MODULUS 3, REMAINDER 2);",
    )
    .await;
    append(&db, 1, 300).await;
    let p = balances();
    p.reproject(&db, "rebuild --no-swap").await.ok();
    db.exec(
        "CREATE RULE keep_h1 AS ON DELETE TO balances_h1 DO INSTEAD NOTHING;
         CREATE RULE keep_h2 AS ON DELETE TO balances_h2 DO INSTEAD NOTHING;",
    )
    .await;
    let out = p.reproject(&db, "swap --yes").await;
    out.code(4)
        .stderr_has("refusing to swap `balances_h1`: it gained dependents")
        .stderr_has("it has rule keep_h1");
    assert!(
        !out.stderr.contains("keep_h2") && !out.stderr.contains("`balances_h0`"),
        "each partition's own problems, the first one refused: {}",
        out.stderr
    );
    assert!(!db.exists("balances_old").await, "nothing was swapped");
    assert!(!db.exists("balances_h1_old").await, "nothing was swapped");
    db.drop().await;
}

/// A measurement, not a check (`scripts/test.sh --test e2e -- --ignored --nocapture
/// partitioned::lock_hold`): the swap's lock hold with 4 and 32 hash partitions, over several
/// swaps each (the second and later ones also retire the previous `_old` generation's
/// partitions). Prints every hold, the median and the steps of the last locked section.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn lock_hold_with_4_and_32_partitions() {
    const SWAPS: usize = 7;
    for n in [4, 32] {
        let db = TestDb::new().await;
        let mut sql = "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
             CREATE TABLE balances (account text NOT NULL, bucket int NOT NULL, balance bigint NOT NULL,
                                    PRIMARY KEY (account, bucket)) PARTITION BY HASH (account);"
            .to_string();
        for i in 0..n {
            sql += &format!(
                "CREATE TABLE balances_h{i} PARTITION OF balances FOR VALUES WITH (MODULUS {n}, REMAINDER {i});"
            );
        }
        db.exec(&sql).await;
        append(&db, 1, 300).await;
        let p = balances();
        let mut holds = Vec::new();
        for _ in 0..SWAPS {
            p.reproject(&db, "rebuild --yes").await.ok();
            holds.push(
                db.int("SELECT lock_hold_ms FROM reproject.runs ORDER BY id DESC LIMIT 1")
                    .await,
            );
        }
        let steps = db
            .text(
                "SELECT (lock_attempts -> -1 -> 'steps')::text FROM reproject.runs ORDER BY id DESC LIMIT 1",
            )
            .await;
        let mut sorted = holds.clone();
        sorted.sort();
        eprintln!(
            "partitions {n}: lock hold ms {holds:?}, median {}; last steps {}",
            sorted[SWAPS / 2],
            steps.unwrap_or_default()
        );
        db.drop().await;
    }
}
