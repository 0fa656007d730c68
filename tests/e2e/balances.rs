//! The fixture of the reshape tests: `balances` per account, summed from `credited` events,
//! with everything a swap must carry (owner, grants and column grants, comments, statistics,
//! RLS policies, a trigger, a view), and the projection `balances` that declares a new shape
//! in `shapes/v2.sql`.

use crate::config::{Config, Projection};
use crate::harness::{Project, TestDb};
use serde_json::Value;

/// The old shape's columns, as most new shapes keep them.
pub const OLD_COLUMNS: &str = "owner, balance, region";
pub const OLD_VALUES: &str = "'owner-' || :stream, (:data->>'amount')::bigint, :data->>'region'";

/// The columns of the live table, and of it in shape `V2`.
pub const COLUMNS: [&str; 5] = ["account", "owner", "balance", "note", "region"];
pub const V2_COLUMNS: [&str; 6] = [
    "account", "owner_id", "balance", "note", "region", "currency",
];

/// A new shape used by several tests: a column added, one renamed, an index added.
pub const V2: &str = "ALTER TABLE {{balances}} ADD COLUMN currency text NOT NULL;\n\
                      ALTER TABLE {{balances}} RENAME COLUMN owner TO owner_id;\n\
                      CREATE INDEX balances_by_currency ON {{balances}} (currency);\n";

/// A database with the fixture and the two roles it grants to; `drop` removes all three.
pub struct Balances {
    pub db: TestDb,
    pub reader: String,
    pub owner: String,
}

impl Balances {
    /// The table with everything a swap carries, filled from 400 events over 40 accounts.
    pub async fn new() -> Balances {
        let db = TestDb::new().await;
        let reader = format!("reader_{}", db.name);
        let owner = format!("owner_{}", db.name);
        db.exec(&format!(
            "CREATE ROLE {reader}; CREATE ROLE {owner};
             CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
             CREATE TABLE audit (account text);
             CREATE FUNCTION audit_balance() RETURNS trigger LANGUAGE plpgsql AS
               $f$ BEGIN INSERT INTO audit VALUES (NEW.account); RETURN NEW; END $f$;
             CREATE TABLE balances (
                 account text CONSTRAINT balances_pkey PRIMARY KEY,
                 owner text NOT NULL,
                 balance bigint NOT NULL CONSTRAINT balance_not_negative CHECK (balance >= 0),
                 note text,
                 region text NOT NULL
             );
             CREATE INDEX balances_by_owner ON balances (owner);
             ALTER TABLE balances OWNER TO {owner};
             ALTER TABLE balances ALTER COLUMN owner SET STATISTICS 300;
             ALTER TABLE balances ALTER COLUMN balance SET STATISTICS 500;
             COMMENT ON TABLE balances IS 'balance per account';
             COMMENT ON COLUMN balances.balance IS 'in cents';
             COMMENT ON COLUMN balances.owner IS 'who owns it';
             GRANT SELECT ON balances TO {reader};
             GRANT UPDATE (owner, note) ON balances TO {reader};
             ALTER TABLE balances ENABLE ROW LEVEL SECURITY;
             CREATE POLICY no_secrets ON balances FOR SELECT TO {reader} USING (region <> 'secret');
             CREATE POLICY writers ON balances FOR UPDATE TO {reader} USING (true);
             CREATE TRIGGER audit_updates AFTER UPDATE ON balances FOR EACH ROW EXECUTE FUNCTION audit_balance();
             CREATE VIEW balances_view AS SELECT account, region FROM balances;
             GRANT SELECT ON balances_view TO {reader};"
        ))
        .await;
        credit(&db, 1, 400).await;
        db.exec(
            "INSERT INTO balances (account, owner, balance, region)
             SELECT stream, 'owner-' || stream, sum((data->>'amount')::bigint), min(data->>'region')
             FROM events GROUP BY stream",
        )
        .await;
        Balances { db, reader, owner }
    }

    /// Drops the roles (with what they own) and the database.
    pub async fn drop(self) {
        let Balances { db, reader, owner } = self;
        db.exec(&format!(
            "DROP OWNED BY {reader}, {owner} CASCADE; DROP ROLE {reader}; DROP ROLE {owner}"
        ))
        .await;
        db.drop().await;
    }
}

/// Appends `credited` events `from..=to` over the 40 accounts (account 7 in region 'secret').
pub async fn credit(db: &TestDb, from: i64, to: i64) {
    db.exec(&format!(
        "INSERT INTO events (stream, type, data)
         SELECT 'acct-' || (i % 40), 'credited', jsonb_build_object('amount', i, 'currency', 'EUR',
                'region', CASE WHEN i % 40 = 7 THEN 'secret' WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END)
         FROM generate_series({from}, {to}) i"
    ))
    .await;
}

/// The projection `balances` on the fixture's events, without a new shape.
pub fn plain() -> Projection {
    Projection::new("balances")
}

/// The projection `balances` rebuilt into the shape `shapes/v2.sql`.
pub fn reshaped() -> Projection {
    plain().option("reshape", "shapes/v2.sql")
}

/// The config with `projection`.
pub fn config(projection: Projection) -> Config {
    Config::events("events").projection(projection)
}

/// The reshaping project with `handlers` in `balances.sql` and `ddl` in `shapes/v2.sql`.
pub fn project(handlers: &str, ddl: &str) -> Project {
    config(reshaped())
        .file("balances.sql", handlers)
        .file("shapes/v2.sql", ddl)
        .write()
}

/// An upsert of every column of the new shape: `columns` (after `account`), `values` (SQL of
/// each, reading `:data`), `conflict` (the key).
pub fn handler(columns: &str, values: &str, conflict: &str) -> String {
    format!(
        "-- on credited\n\
         INSERT INTO {{{{balances}}}} AS b (account, {columns}) VALUES (:stream, {values}) \
         ON CONFLICT ({conflict}) DO UPDATE SET balance = b.balance + EXCLUDED.balance;\n"
    )
}

/// The handlers of the old shape.
pub fn old_handlers() -> String {
    handler(OLD_COLUMNS, OLD_VALUES, "account")
}

/// The handlers of shape `V2`.
pub fn v2_handlers() -> String {
    handler(
        "owner_id, balance, region, currency",
        &format!("{OLD_VALUES}, :data->>'currency'"),
        "account",
    )
}

/// The accounts whose balance is not the sum of their events.
pub async fn wrong_balances(db: &TestDb) -> i64 {
    db.int(
        "SELECT count(*) FROM (SELECT stream, sum((data->>'amount')::bigint) FROM events GROUP BY stream
         EXCEPT SELECT account, balance::bigint FROM balances) x",
    )
    .await
}

/// Fails the test unless the 40 accounts have their `currency` (a column of shape `V2`).
pub async fn assert_currency_filled(db: &TestDb) {
    db.assert_int("SELECT count(*) FROM balances WHERE currency = 'EUR'", 40)
        .await;
}

pub use crate::catalog::fingerprint;

/// The column `name` of a fingerprint.
pub fn column<'a>(fp: &'a Value, name: &str) -> &'a Value {
    fp["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name}: {:#}", fp["columns"]))
}

/// The names of the fingerprint's `key` (columns, indexes, constraints), in its order.
pub fn names(fp: &Value, key: &str) -> Vec<String> {
    fp[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// Fails the test unless the live `balances` has the columns `want`, in order.
pub async fn assert_columns(db: &TestDb, want: &[&str], why: &str) {
    assert_eq!(
        names(&fingerprint(db, "balances").await, "columns"),
        want,
        "{why}"
    );
}
