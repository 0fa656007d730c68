//! Projections that read other projections see them exactly as they were at each event.

use crate::config::{Config, Projection};
use crate::harness::{Project, TestDb};

/// `customers`, and `receipts` that read them.
fn project() -> Project {
    Config::events("events")
        .projection(Projection::new("customers"))
        .projection(Projection::new("receipts"))
        .file("customers.sql", CUSTOMERS)
        .file("receipts.sql", RECEIPTS)
        .write()
}

const CUSTOMERS: &str = "\
-- on named
INSERT INTO {{customers}} AS c (id, name) VALUES (:stream, :data->>'name')
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;
";

/// A receipt carries the customer's name as it was when the order was placed.
const RECEIPTS: &str = "\
-- on ordered
INSERT INTO {{receipts}} (order_id, customer_name)
SELECT :data->>'order', name FROM {{customers}} WHERE id = :stream;
";

/// If the tool replayed `customers` to the end before `receipts`, every receipt would carry
/// the customer's final name; per-event dependency order gives the name at the time.
#[tokio::test(flavor = "multi_thread")]
async fn readers_see_dependencies_as_of_each_event() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE customers (id text PRIMARY KEY, name text);
         CREATE TABLE receipts (order_id text PRIMARY KEY, customer_name text);
         INSERT INTO events (stream, type, data) VALUES
           ('c1', 'named', '{\"name\": \"Ada\"}'),
           ('c1', 'ordered', '{\"order\": \"o1\"}'),
           ('c1', 'named', '{\"name\": \"Ada Lovelace\"}'),
           ('c1', 'ordered', '{\"order\": \"o2\"}'),
           ('c2', 'named', '{\"name\": \"Grace\"}'),
           ('c2', 'ordered', '{\"order\": \"o3\"}'),
           ('c2', 'named', '{\"name\": \"Grace Hopper\"}');",
    )
    .await;
    let p = project();
    let plan = p.reproject(&db, "plan --json").await.ok().json();
    assert_eq!(
        plan["waves"],
        serde_json::json!([["customers"], ["receipts"]])
    );

    // Batches smaller than the dependency span, to show order holds across batches too.
    p.reproject(&db, "rebuild --yes --batch-size 2").await.ok();
    let rows: Vec<(String, String)> = db
        .client()
        .await
        .query(
            "SELECT order_id, customer_name FROM receipts ORDER BY order_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("o1".to_string(), "Ada".to_string()),
            ("o2".to_string(), "Ada Lovelace".to_string()),
            ("o3".to_string(), "Grace".to_string()),
        ]
    );
    db.assert_text(
        "SELECT name FROM customers WHERE id = 'c2'",
        Some("Grace Hopper"),
    )
    .await;
    db.drop().await;
}

/// Rebuilding only a dependency warns that its readers keep rows derived from the old data;
/// the reader's handlers, not rebuilt, still read the live table by its live name.
#[tokio::test(flavor = "multi_thread")]
async fn partial_rebuild_warns_about_readers() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE customers (id text PRIMARY KEY, name text);
         CREATE TABLE receipts (order_id text PRIMARY KEY, customer_name text);
         INSERT INTO events (stream, type, data) VALUES ('c1', 'named', '{\"name\": \"Ada\"}');",
    )
    .await;
    let p = project();
    let out = p.reproject(&db, "plan customers").await;
    out.ok().stdout_has(
        "warning: projection `receipts` reads `customers` but is not part of this rebuild",
    );
    p.reproject(&db, "rebuild --yes receipts").await.ok();
    let runs = p.reproject(&db, "history --json").await.ok().json()["runs"].clone();
    assert_eq!(runs[0]["projections"], serde_json::json!(["receipts"]));
    assert!(db.exists("receipts_old").await && !db.exists("customers_old").await);
    db.drop().await;
}
